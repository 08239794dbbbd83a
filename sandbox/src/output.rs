//! Capped capture of stdout, stderr and results: keep the first bytes, count the rest, never trap.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Appends `text` to `out`, truncated at a character boundary so that `out` holds at most
/// `cap` bytes of the original plus a visible marker saying how much was dropped.
pub fn truncate_with_marker(text: &str, cap: usize) -> (String, bool) {
    if text.len() <= cap {
        return (text.to_owned(), false);
    }
    let mut end = cap;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + 64);
    out.push_str(&text[..end]);
    out.push_str(&marker(text.len() - end));
    (out, true)
}

/// The marker appended where output was cut.
pub fn marker(dropped: usize) -> String {
    format!("\n[corral: output truncated, {dropped} more bytes dropped]")
}

#[derive(Debug, Default)]
struct Captured {
    bytes: Vec<u8>,
    dropped: u64,
}

/// A stdout/stderr sink that keeps the first `cap` bytes and silently counts the rest, so a
/// guest writing a gigabyte neither grows host memory nor sees an error that makes it panic.
#[derive(Debug, Clone)]
pub struct CappedPipe {
    cap: usize,
    inner: Arc<Mutex<Captured>>,
}

impl CappedPipe {
    /// A sink keeping at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        CappedPipe {
            cap,
            inner: Arc::default(),
        }
    }

    /// Appends text (used for the host's own log lines).
    pub fn push_str(&self, text: &str) {
        self.push(text.as_bytes());
    }

    fn push(&self, data: &[u8]) {
        let mut c = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let room = self.cap.saturating_sub(c.bytes.len());
        let keep = room.min(data.len());
        c.bytes.extend_from_slice(&data[..keep]);
        c.dropped += (data.len() - keep) as u64;
    }

    /// What was captured, as text (invalid UTF-8 replaced, cut at a character boundary), with
    /// the truncation marker when bytes were dropped.
    pub fn text(&self) -> String {
        let c = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut bytes: &[u8] = &c.bytes;
        let mut dropped = c.dropped;
        if dropped > 0 {
            // A multi-byte character cut at the cap: drop its first bytes too.
            if let Err(e) = std::str::from_utf8(bytes) {
                if e.error_len().is_none() {
                    dropped += (bytes.len() - e.valid_up_to()) as u64;
                    bytes = &bytes[..e.valid_up_to()];
                }
            }
        }
        let mut text = String::from_utf8_lossy(bytes).into_owned();
        if dropped > 0 {
            text.push_str(&marker(usize::try_from(dropped).unwrap_or(usize::MAX)));
        }
        text
    }
}

impl IsTerminal for CappedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// Largest write permit handed to the guest: big enough that dumping output is cheap.
const PERMIT: usize = 1 << 20;

#[wasmtime_wasi::async_trait]
impl OutputStream for CappedPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedPipe {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CappedPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_char_boundaries() {
        let text = "aé€😀"; // 1 + 2 + 3 + 4 bytes
        for cap in 0..text.len() {
            let (out, cut) = truncate_with_marker(text, cap);
            assert!(cut);
            let kept = out.split("\n[corral:").next().unwrap();
            assert!(
                kept.len() <= cap && text.starts_with(kept),
                "cap {cap}: {out:?}"
            );
            assert!(out.contains("more bytes dropped"));
        }
        assert_eq!(truncate_with_marker(text, 10), (text.to_owned(), false));
    }

    #[test]
    fn pipe_keeps_prefix_and_counts_the_rest() {
        let pipe = CappedPipe::new(4);
        pipe.push(b"ab");
        pipe.push("cé".as_bytes()); // é straddles the cap
        pipe.push(&[b'x'; 1000]);
        let text = pipe.text();
        assert!(
            text.starts_with("abc\n[corral: output truncated, 1002 more"),
            "{text}"
        );
        assert_eq!(CappedPipe::new(8).text(), "");
    }
}
