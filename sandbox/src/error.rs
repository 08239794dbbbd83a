//! Errors of loading a plugin and of calling one.

use std::fmt;

/// Why a component could not be loaded (compiled, checked or prepared for instantiation).
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

/// The kind of an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The engine could not be set up.
    Engine,
    /// The bytes are not a valid WebAssembly component.
    Compile,
    /// The component imports an interface corral does not provide.
    UnsupportedImport,
    /// The component does not export the `corral:tool/tool` interface of a supported version.
    MissingExport,
    /// The plugin misbehaved while being inspected (trapped in `list-tools`, bad spec).
    Inspect,
    /// An instance could not be made (a folder it is given cannot be opened).
    Start,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// What went wrong, broadly.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Why a call produced no result.
///
/// `Tool` errors come from the plugin itself and are meant for the model (it may fix its
/// arguments and retry); `Runtime` errors are the host stopping a misbehaving guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The tool answered with an error message for the model.
    Tool(String),
    /// The host stopped the call.
    Runtime(RuntimeError),
}

/// The host stopped a call: a limit was hit or the guest trapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeError {
    /// What happened.
    pub kind: RuntimeErrorKind,
    /// Details for logs (trap message, the guest's stderr tail).
    pub message: String,
}

/// The kind of a [`RuntimeError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RuntimeErrorKind {
    /// The wall-clock deadline passed.
    Deadline,
    /// The guest tried to grow memory past its cap.
    Memory,
    /// The guest exhausted its wasm stack.
    StackOverflow,
    /// The guest trapped after its writes to files reached the call's cap.
    WriteLimit,
    /// Any other trap, including a guest panic.
    Trap,
    /// The guest returned something malformed (such as invalid JSON content).
    InvalidResult,
    /// The host could not instantiate the component.
    Instantiate,
    /// The caller cancelled the call ([`crate::CallContext::with_cancel`]).
    Cancelled,
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
            RuntimeErrorKind::Memory => "the tool hit its memory limit and was stopped",
            RuntimeErrorKind::StackOverflow => "the tool overflowed its stack and was stopped",
            RuntimeErrorKind::WriteLimit => "the tool hit its write limit and was stopped",
            RuntimeErrorKind::Trap => "the tool crashed",
            RuntimeErrorKind::InvalidResult => "the tool returned a malformed result",
            RuntimeErrorKind::Instantiate => "the tool could not be started",
            RuntimeErrorKind::Cancelled => "the call was cancelled and the tool stopped",
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
