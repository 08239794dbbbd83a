//! What a call gives a tool and what it gets back: the same for every kind of tool (a sandboxed
//! plugin, a closure, later an MCP server or the code interpreter), and free of wasmtime.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Cancels work from any thread (Ctrl-C, a UI, a deadline): a generation, a turn, a call.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the work to stop at its next check.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether cancellation was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// The flag itself, for code that watches it from elsewhere (the sandbox's epoch check).
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }

    /// Clears a previous cancellation so the token can be reused.
    pub fn reset(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// How long a call may run and how it is stopped early.
#[derive(Debug, Clone, Default)]
pub struct CallControl {
    /// The caller's deadline; a tool stops by then (a plugin's own limit may be shorter).
    pub deadline: Option<Instant>,
    /// Set when the caller gives up on the call.
    pub cancel: CancelToken,
}

impl CallControl {
    /// No deadline of the caller's, never cancelled.
    pub fn none() -> CallControl {
        CallControl::default()
    }

    /// A control whose deadline is `timeout` from now.
    pub fn within(timeout: Duration, cancel: CancelToken) -> CallControl {
        CallControl {
            deadline: Instant::now().checked_add(timeout),
            cancel,
        }
    }

    /// Time left before the deadline (`None`: no deadline).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// The error for a call that must not start or go on: cancelled, or out of time.
    pub fn stopped(&self) -> Option<CallError> {
        if self.cancel.is_cancelled() {
            return Some(CallError::Runtime(RuntimeError::new(
                RuntimeErrorKind::Cancelled,
                "",
            )));
        }
        if self.remaining() == Some(Duration::ZERO) {
            return Some(CallError::Runtime(RuntimeError::new(
                RuntimeErrorKind::Deadline,
                "",
            )));
        }
        None
    }
}

/// One piece of a result.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// Text.
    Text(String),
    /// A JSON document.
    Json(serde_json::Value),
}

/// A successful call.
#[derive(Debug, Clone, PartialEq)]
pub struct CallOutput {
    /// The result.
    pub content: Vec<Content>,
    /// Whether the tool cut its result short.
    pub truncated: bool,
    /// What the tool printed to stdout; for logs, not the model.
    pub stdout: String,
    /// What the tool printed to stderr or logged; for logs, not the model.
    pub stderr: String,
}

impl CallOutput {
    /// A result of one text.
    pub fn text(text: impl Into<String>) -> CallOutput {
        CallOutput {
            content: vec![Content::Text(text.into())],
            truncated: false,
            stdout: String::new(),
            stderr: String::new(),
        }
    }
}

/// Why a call produced no result.
///
/// `Tool` errors come from the tool (or the registry's checks) and are meant for the model,
/// which may fix its arguments and retry; `Runtime` errors are the host stopping the call, and
/// end the turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// An error message for the model.
    Tool(String),
    /// The call was stopped.
    Runtime(RuntimeError),
}

/// The host stopped a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeError {
    /// What happened.
    pub kind: RuntimeErrorKind,
    /// Details for logs (a trap message, the tool's stderr tail).
    pub message: String,
}

impl RuntimeError {
    /// An error of `kind` with details.
    pub fn new(kind: RuntimeErrorKind, message: impl Into<String>) -> RuntimeError {
        RuntimeError {
            kind,
            message: message.into(),
        }
    }
}

/// The kind of a [`RuntimeError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RuntimeErrorKind {
    /// The deadline (the tool's own, or the caller's) passed.
    Deadline,
    /// The caller cancelled the call.
    Cancelled,
    /// The tool tried to use more memory than its cap.
    Memory,
    /// The tool exhausted its stack.
    StackOverflow,
    /// The tool was stopped after its writes to files reached the call's cap.
    WriteLimit,
    /// Any other crash, including a guest panic.
    Trap,
    /// The tool returned something malformed (such as invalid JSON content).
    InvalidResult,
    /// The tool could not be started.
    Instantiate,
    /// What provides the tool cannot be reached (a server that is gone).
    Unavailable,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Tool(msg) => write!(f, "tool error: {msg}"),
            CallError::Runtime(err) => err.fmt(f),
        }
    }
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            RuntimeErrorKind::Deadline => "the tool ran past its deadline and was stopped",
            RuntimeErrorKind::Cancelled => "the call was cancelled",
            RuntimeErrorKind::Memory => "the tool hit its memory limit and was stopped",
            RuntimeErrorKind::StackOverflow => "the tool overflowed its stack and was stopped",
            RuntimeErrorKind::WriteLimit => "the tool hit its write limit and was stopped",
            RuntimeErrorKind::Trap => "the tool crashed",
            RuntimeErrorKind::InvalidResult => "the tool returned a malformed result",
            RuntimeErrorKind::Instantiate => "the tool could not be started",
            RuntimeErrorKind::Unavailable => "the tool is not available",
        };
        if self.message.is_empty() {
            f.write_str(what)
        } else {
            write!(f, "{what}: {}", self.message)
        }
    }
}

impl std::error::Error for CallError {}
impl std::error::Error for RuntimeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_says_why_a_call_must_stop() {
        assert_eq!(CallControl::none().stopped(), None);
        let cancel = CancelToken::new();
        let control = CallControl::within(Duration::from_secs(60), cancel.clone());
        assert_eq!(control.stopped(), None);
        cancel.cancel();
        let Some(CallError::Runtime(e)) = control.stopped() else {
            panic!("not stopped")
        };
        assert_eq!(e.kind, RuntimeErrorKind::Cancelled);
        let late = CallControl::within(Duration::ZERO, CancelToken::new());
        let Some(CallError::Runtime(e)) = late.stopped() else {
            panic!("not stopped")
        };
        assert_eq!(e.kind, RuntimeErrorKind::Deadline);
    }
}
