//! Per-call resource limits: documented defaults, and ceilings that no manifest or grant exceeds.

use std::time::Duration;

use serde::Deserialize;

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
/// Wasm stack cap. It is an engine setting (the same for every call), so it is not part of
/// [`Limits`]: deep recursion traps with a stack overflow long before the host stack is at risk.
pub const MAX_WASM_STACK_BYTES: usize = 512 << 10;

/// Limits applied to one call. Build from a manifest's request with [`Limits::requested`], then
/// [`Limits::clamp`] to what the user allows.
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: DEFAULT_DEADLINE,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            result_bytes: DEFAULT_RESULT_BYTES,
            output_bytes: DEFAULT_OUTPUT_BYTES,
        }
    }
}

/// Limits as written in `plugin.toml` (`[limits]`) or in the user's grants; every field optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Deadline in milliseconds.
    pub deadline_ms: Option<u64>,
    /// Memory cap in MiB.
    pub memory_mib: Option<u64>,
    /// Result cap in KiB.
    pub result_kib: Option<u64>,
    /// Stdout/stderr cap in KiB.
    pub output_kib: Option<u64>,
}

impl Limits {
    /// The defaults overridden by what `spec` asks for, then held to the hard ceilings.
    pub fn requested(spec: &LimitsSpec) -> Limits {
        let d = Limits::default();
        Limits {
            deadline: spec.deadline_ms.map_or(d.deadline, Duration::from_millis),
            memory_bytes: spec
                .memory_mib
                .map_or(d.memory_bytes, |m| m.saturating_mul(1 << 20)),
            result_bytes: spec
                .result_kib
                .map_or(d.result_bytes, |k| k.saturating_mul(1 << 10)),
            output_bytes: spec
                .output_kib
                .map_or(d.output_bytes, |k| k.saturating_mul(1 << 10)),
        }
        .clamp(&LimitsSpec::default())
    }

    /// Holds every limit to the user's maxima in `max` (where given) and to the hard ceilings.
    pub fn clamp(self, max: &LimitsSpec) -> Limits {
        let cap = |v: u64, user: Option<u64>, unit: u64, ceiling: u64| {
            let user = user.map_or(u64::MAX, |u| u.saturating_mul(unit));
            v.min(user).min(ceiling)
        };
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Limits {
            deadline: Duration::from_millis(cap(
                ms(self.deadline),
                max.deadline_ms,
                1,
                ms(MAX_DEADLINE),
            )),
            memory_bytes: cap(self.memory_bytes, max.memory_mib, 1 << 20, MAX_MEMORY_BYTES),
            result_bytes: cap(self.result_bytes, max.result_kib, 1 << 10, MAX_RESULT_BYTES),
            output_bytes: cap(self.output_bytes, max.output_kib, 1 << 10, MAX_OUTPUT_BYTES),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_when_nothing_requested() {
        assert_eq!(Limits::requested(&LimitsSpec::default()), Limits::default());
    }

    #[test]
    fn requests_are_held_to_hard_ceilings() {
        let spec = LimitsSpec {
            deadline_ms: Some(u64::MAX),
            memory_mib: Some(1 << 40),
            result_kib: Some(u64::MAX),
            output_kib: Some(0),
        };
        let l = Limits::requested(&spec);
        assert_eq!(l.deadline, MAX_DEADLINE);
        assert_eq!(l.memory_bytes, MAX_MEMORY_BYTES);
        assert_eq!(l.result_bytes, MAX_RESULT_BYTES);
        assert_eq!(l.output_bytes, 0);
    }

    #[test]
    fn user_maxima_lower_requests() {
        let asked = Limits::requested(&LimitsSpec {
            deadline_ms: Some(60_000),
            memory_mib: Some(256),
            ..LimitsSpec::default()
        });
        let max = LimitsSpec {
            deadline_ms: Some(2_000),
            memory_mib: Some(32),
            ..LimitsSpec::default()
        };
        let l = asked.clamp(&max);
        assert_eq!(l.deadline, Duration::from_secs(2));
        assert_eq!(l.memory_bytes, 32 << 20);
        assert_eq!(l.result_bytes, DEFAULT_RESULT_BYTES);
    }
}
