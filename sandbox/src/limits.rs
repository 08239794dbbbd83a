//! Per-call resource limits: documented defaults, and ceilings that no manifest or grant exceeds.
//!
//! A manifest may ask for less than a default on its own, but never for more: a limit above
//! its default must be granted by the user like any capability ([`Limits::resolve`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default wall-clock deadline of one call.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);
/// Ceiling for the deadline, whatever a manifest asks or a user grants.
pub const MAX_DEADLINE: Duration = Duration::from_secs(300);
/// Default cap on a call's linear memory (all memories of the instance together).
pub const DEFAULT_MEMORY_BYTES: u64 = 64 << 20;
/// Ceiling for the memory cap. It also sizes the pooling allocator's slots, so raising it
/// raises the virtual address space the host reserves (see [`crate::PoolConfig`]).
pub const MAX_MEMORY_BYTES: u64 = 512 << 20;
/// Default cap on the text and JSON a call returns; longer results are truncated with a marker.
pub const DEFAULT_RESULT_BYTES: u64 = 64 << 10;
/// Ceiling for the result cap.
pub const MAX_RESULT_BYTES: u64 = 4 << 20;
/// Default cap on what a call may write to stdout and to stderr (each); the rest is dropped.
pub const DEFAULT_OUTPUT_BYTES: u64 = 16 << 10;
/// Ceiling for the stdout/stderr cap.
pub const MAX_OUTPUT_BYTES: u64 = 1 << 20;
/// Default cap on the bytes one call may write to files (all granted folders together; writes
/// that overwrite count too). Past it, writes fail inside the guest with a quota error.
pub const DEFAULT_WRITE_BYTES: u64 = 16 << 20;
/// Ceiling for the write cap.
pub const MAX_WRITE_BYTES: u64 = 1 << 30;
/// Most WASI resources (open files and folders, directory streams, byte streams, pollables,
/// sockets) one call may hold at once. Every open file or folder holds at most one host file
/// descriptor, so this also bounds the descriptors a call can pin (one call once held 19,986,
/// the whole process limit); past it, opening one more fails inside the guest.
pub const MAX_HANDLES: usize = 1024;
/// Wasm stack cap. It is an engine setting (the same for every call), so it is not part of
/// [`Limits`]: deep recursion traps with a stack overflow long before the host stack is at risk.
pub const MAX_WASM_STACK_BYTES: usize = 512 << 10;

/// Limits applied to one call, made by [`Limits::resolve`] from what the manifest asks and what
/// the user granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock deadline; the call traps when it passes, even inside a blocking host call.
    pub deadline: Duration,
    /// Cap on linear memory; `memory.grow` past it fails and the call is reported as out of memory.
    pub memory_bytes: u64,
    /// Cap on the returned content (bytes of UTF-8), truncated at a character boundary.
    pub result_bytes: u64,
    /// Cap on stdout and on stderr (each).
    pub output_bytes: u64,
    /// Cap on the bytes written to files during the call.
    pub write_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: DEFAULT_DEADLINE,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            result_bytes: DEFAULT_RESULT_BYTES,
            output_bytes: DEFAULT_OUTPUT_BYTES,
            write_bytes: DEFAULT_WRITE_BYTES,
        }
    }
}

/// Limits as written in `plugin.toml` (`[limits]`) or in the user's grants; every field optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Deadline in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Memory cap in MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Result cap in KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_kib: Option<u64>,
    /// Stdout/stderr cap in KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_kib: Option<u64>,
    /// Cap on bytes written to files, in MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_mib: Option<u64>,
}

impl Limits {
    /// The limits a plugin's calls run with: what its manifest asks (`asked`, defaults where
    /// silent), held to what the user granted (`granted`; where silent, the default: a manifest
    /// alone cannot raise a limit), and to the hard ceilings.
    pub fn resolve(asked: &LimitsSpec, granted: &LimitsSpec) -> Limits {
        let d = Limits::default();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let pick =
            |asked: Option<u64>, granted: Option<u64>, unit: u64, default: u64, ceiling: u64| {
                let bytes = |v: Option<u64>| v.map_or(default, |v| v.saturating_mul(unit));
                bytes(asked).min(bytes(granted)).min(ceiling)
            };
        Limits {
            deadline: Duration::from_millis(pick(
                asked.deadline_ms,
                granted.deadline_ms,
                1,
                ms(d.deadline),
                ms(MAX_DEADLINE),
            )),
            memory_bytes: pick(
                asked.memory_mib,
                granted.memory_mib,
                1 << 20,
                d.memory_bytes,
                MAX_MEMORY_BYTES,
            ),
            result_bytes: pick(
                asked.result_kib,
                granted.result_kib,
                1 << 10,
                d.result_bytes,
                MAX_RESULT_BYTES,
            ),
            output_bytes: pick(
                asked.output_kib,
                granted.output_kib,
                1 << 10,
                d.output_bytes,
                MAX_OUTPUT_BYTES,
            ),
            write_bytes: pick(
                asked.write_mib,
                granted.write_mib,
                1 << 20,
                d.write_bytes,
                MAX_WRITE_BYTES,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> LimitsSpec {
        LimitsSpec::default()
    }

    #[test]
    fn defaults_when_nothing_asked_or_granted() {
        assert_eq!(Limits::resolve(&none(), &none()), Limits::default());
    }

    /// Regression (sandbox escapes, item 7): `memory_mib = 512` in a manifest with no grant got
    /// 400 MiB; it gets the 64 MiB default, and likewise deadline and result size.
    #[test]
    fn a_manifest_alone_cannot_raise_a_limit() {
        let asked = LimitsSpec {
            deadline_ms: Some(120_000),
            memory_mib: Some(512),
            result_kib: Some(4096),
            output_kib: Some(1024),
            write_mib: Some(1024),
        };
        assert_eq!(Limits::resolve(&asked, &none()), Limits::default());
    }

    #[test]
    fn a_manifest_may_ask_for_less_on_its_own() {
        let asked = LimitsSpec {
            deadline_ms: Some(500),
            memory_mib: Some(8),
            result_kib: Some(1),
            output_kib: Some(0),
            write_mib: Some(0),
        };
        let l = Limits::resolve(&asked, &none());
        assert_eq!(l.deadline, Duration::from_millis(500));
        assert_eq!(l.memory_bytes, 8 << 20);
        assert_eq!(l.result_bytes, 1 << 10);
        assert_eq!(l.output_bytes, 0);
        assert_eq!(l.write_bytes, 0);
    }

    #[test]
    fn a_grant_raises_up_to_what_was_asked_and_the_ceilings() {
        let asked = LimitsSpec {
            deadline_ms: Some(60_000),
            memory_mib: Some(256),
            ..none()
        };
        let granted = LimitsSpec {
            deadline_ms: Some(30_000),
            memory_mib: Some(1 << 40),
            result_kib: Some(u64::MAX),
            ..none()
        };
        let l = Limits::resolve(&asked, &granted);
        assert_eq!(l.deadline, Duration::from_secs(30));
        assert_eq!(l.memory_bytes, 256 << 20, "no more than the manifest asked");
        assert_eq!(
            l.result_bytes, DEFAULT_RESULT_BYTES,
            "the manifest did not ask"
        );
        let huge = LimitsSpec {
            deadline_ms: Some(u64::MAX),
            memory_mib: Some(u64::MAX),
            result_kib: Some(u64::MAX),
            output_kib: Some(u64::MAX),
            write_mib: Some(u64::MAX),
        };
        let l = Limits::resolve(&huge, &huge);
        assert_eq!(l.deadline, MAX_DEADLINE);
        assert_eq!(l.memory_bytes, MAX_MEMORY_BYTES);
        assert_eq!(l.result_bytes, MAX_RESULT_BYTES);
        assert_eq!(l.output_bytes, MAX_OUTPUT_BYTES);
        assert_eq!(l.write_bytes, MAX_WRITE_BYTES);
    }

    #[test]
    fn a_grant_below_the_default_lowers_it() {
        let granted = LimitsSpec {
            deadline_ms: Some(2_000),
            memory_mib: Some(32),
            ..none()
        };
        let l = Limits::resolve(&none(), &granted);
        assert_eq!(l.deadline, Duration::from_secs(2));
        assert_eq!(l.memory_bytes, 32 << 20);
        assert_eq!(l.result_bytes, DEFAULT_RESULT_BYTES);
    }
}
