//! What the host adds to WASI's file writes: a per-call cap on the bytes written to files.
//!
//! A guest writes to a file in two ways: `descriptor.write` (a positioned write) and the output
//! streams `descriptor.write-via-stream` / `append-via-stream` hand out, which every stream
//! method (`write`, `blocking-write-and-flush`, `write-zeroes`, `splice`, …) ends in. The host
//! shadows the first and wraps each file stream in [`QuotaStream`], so both draw on one
//! [`WriteBudget`] per call. A write past the budget writes what still fits and fails inside the
//! guest (`insufficient-space` for a positioned write, a stream error for a stream); the guest
//! can report that, and if it traps instead, the call is reported as stopped by its write limit,
//! which the report names.
//! Overwriting counts like writing: the cap bounds the work and the disk a call can use, whatever
//! the file ends up holding. Stdout and stderr have their own caps (`output.rs`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::async_trait;
use wasmtime_wasi::filesystem::WasiFilesystemView;
use wasmtime_wasi::p2::bindings::filesystem::types::{Descriptor, ErrorCode, HostDescriptor};
use wasmtime_wasi::p2::{
    DynOutputStream, FsResult, OutputStream, Pollable, StreamError, StreamResult,
};

use crate::fs_guard::{guest_error, FILESYSTEM_TYPES};
use crate::host::HostState;

/// `ENOSPC` on every Unix corral builds for (Linux, macOS, the BSDs).
const ENOSPC: i32 = 28;

/// The bytes one call may still write to files, shared by all its writers.
#[derive(Debug)]
pub(crate) struct WriteBudget {
    limit: u64,
    left: AtomicU64,
    exhausted: AtomicBool,
}

impl WriteBudget {
    pub(crate) fn new(limit: u64) -> Arc<WriteBudget> {
        Arc::new(WriteBudget {
            limit,
            left: AtomicU64::new(limit),
            exhausted: AtomicBool::new(false),
        })
    }

    /// Takes up to `want` bytes; returns how many were granted. Granting fewer than asked
    /// marks the budget exhausted.
    fn take(&self, want: u64) -> u64 {
        let mut left = self.left.load(Ordering::Relaxed);
        loop {
            let got = want.min(left);
            match self.left.compare_exchange_weak(
                left,
                left - got,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    if got < want {
                        self.exhausted.store(true, Ordering::Relaxed);
                    }
                    return got;
                }
                Err(now) => left = now,
            }
        }
    }

    fn left(&self) -> u64 {
        self.left.load(Ordering::Relaxed)
    }

    /// Whether a write was refused for want of budget during this call.
    pub(crate) fn exhausted(&self) -> bool {
        self.exhausted.load(Ordering::Relaxed)
    }

    /// The message a refused write carries, for the guest and for the host's report.
    pub(crate) fn message(&self) -> String {
        format!(
            "write limit reached: a call may write {} bytes to files \
             (grant a higher `write_mib` limit to allow more)",
            self.limit
        )
    }

    /// A refused stream write. A guest learns what a stream error was only by asking WASI for
    /// its error code (`filesystem-error-code`), so it carries `ENOSPC`; wasi-libc does not ask
    /// and reports a plain I/O error. The host reports the limit itself.
    fn refused(&self) -> StreamError {
        StreamError::LastOperationFailed(std::io::Error::from_raw_os_error(ENOSPC).into())
    }
}

/// A file's output stream that draws every byte from the call's [`WriteBudget`].
struct QuotaStream {
    inner: DynOutputStream,
    budget: Arc<WriteBudget>,
}

#[async_trait]
impl Pollable for QuotaStream {
    async fn ready(&mut self) {
        self.inner.ready().await;
    }
}

#[async_trait]
impl OutputStream for QuotaStream {
    fn write(&mut self, mut bytes: Bytes) -> StreamResult<()> {
        let want = bytes.len() as u64;
        let got = self.budget.take(want);
        if got < want {
            bytes.truncate(usize::try_from(got).unwrap_or(usize::MAX));
            if !bytes.is_empty() {
                self.inner.write(bytes)?;
            }
            return Err(self.budget.refused());
        }
        self.inner.write(bytes)
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }

    /// What the file accepts, held to what is left of the budget. A spent budget does not
    /// shrink the permit to zero (a blocking writer would poll until its deadline, and a flush
    /// that ends exactly at the limit would fail): the next `write` is refused instead.
    fn check_write(&mut self) -> StreamResult<usize> {
        let permit = self.inner.check_write()?;
        match self.budget.left() {
            0 => Ok(permit),
            left => Ok(permit.min(usize::try_from(left).unwrap_or(usize::MAX))),
        }
    }

    fn write_zeroes(&mut self, len: usize) -> StreamResult<()> {
        let want = len as u64;
        let got = self.budget.take(want);
        if got > 0 {
            self.inner
                .write_zeroes(usize::try_from(got).unwrap_or(usize::MAX))?;
        }
        if got < want {
            return Err(self.budget.refused());
        }
        Ok(())
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await;
    }
}

/// Replaces `descriptor.write`, `write-via-stream` and `append-via-stream` in `linker` (already
/// holding WASI) by versions that charge the call's write budget.
///
/// # Errors
/// When the linker does not hold WASI's filesystem interface under the expected name.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(FILESYSTEM_TYPES)?;
    types.func_wrap_async(
        "[method]descriptor.write",
        |mut store, (fd, buf, offset): (Resource<Descriptor>, Vec<u8>, u64)| {
            Box::new(async move {
                let budget = store.data().write_budget.clone();
                let want = buf.len() as u64;
                let got = budget.take(want);
                if want > 0 && got == 0 {
                    return Ok((Err(ErrorCode::InsufficientSpace),));
                }
                let mut buf = buf;
                buf.truncate(usize::try_from(got).unwrap_or(usize::MAX));
                match store.data_mut().filesystem().write(fd, buf, offset).await {
                    Ok(n) => Ok((Ok(n),)),
                    Err(e) => Ok((Err(guest_error(e)?),)),
                }
            })
        },
    )?;
    types.func_wrap(
        "[method]descriptor.write-via-stream",
        |mut store, (fd, offset): (Resource<Descriptor>, u64)| {
            let state = store.data_mut();
            let opened = state.filesystem().write_via_stream(fd, offset);
            Ok((charge_stream(state, opened)?,))
        },
    )?;
    types.func_wrap(
        "[method]descriptor.append-via-stream",
        |mut store, (fd,): (Resource<Descriptor>,)| {
            let state = store.data_mut();
            let opened = state.filesystem().append_via_stream(fd);
            Ok((charge_stream(state, opened)?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The guest's answer for a file stream WASI opened: the stream wrapped to charge the budget,
/// or the error code; a trap when the table is broken.
fn charge_stream(
    state: &mut HostState,
    opened: FsResult<Resource<DynOutputStream>>,
) -> wasmtime::Result<Result<Resource<DynOutputStream>, ErrorCode>> {
    let stream = match opened {
        Ok(stream) => stream,
        Err(e) => return Ok(Err(guest_error(e)?)),
    };
    // WASI pushed the file's stream with no parent; swap it for the wrapped one.
    let inner = state.table.delete(stream)?;
    let wrapped: DynOutputStream = Box::new(QuotaStream {
        inner,
        budget: state.write_budget.clone(),
    });
    Ok(Ok(state.table.push(wrapped)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_grants_what_is_left_and_remembers_a_refusal() {
        let b = WriteBudget::new(10);
        assert_eq!(b.take(4), 4);
        assert!(!b.exhausted());
        assert_eq!(b.take(4), 4);
        assert_eq!(b.take(4), 2, "only what is left");
        assert!(b.exhausted());
        assert_eq!(b.take(1), 0);
        assert_eq!(b.left(), 0);
        assert!(b.message().contains("10 bytes"));
    }

    #[test]
    fn an_empty_write_never_exhausts() {
        let b = WriteBudget::new(0);
        assert_eq!(b.take(0), 0);
        assert!(!b.exhausted());
    }
}
