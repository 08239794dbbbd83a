//! The error of managing plugins: what went wrong, and whether it was the caller's mistake.
//!
//! Errors a *model* reads (bad arguments, schema violations, a tool's own error) are not these:
//! they are [`crate::CallError::Tool`] messages. These are for the person running corral, and
//! [`Error::kind`] lets a front end tell a usage mistake (exit 2) from a failure (exit 1).

use std::fmt;

/// Why a plugin operation failed.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

/// The kind of an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller asked for something that cannot be: an unknown plugin id, a path that is not a
    /// plugin folder, a builtin to remove.
    Usage,
    /// A `plugin.toml` is missing a field, has a bad value or does not parse.
    Manifest,
    /// A component or a recorded tool list does not match its recorded hash.
    Integrity,
    /// A file or folder could not be read or written.
    Io,
    /// corral refused on purpose: a name collision, a tool list that changed, an unsafe grant,
    /// a plugin declaring too much.
    Refused,
    /// The sandbox could not load the component (it does not compile, imports what corral does
    /// not provide, traps while listing its tools).
    Load,
    /// The user's grants file is invalid or unsafe.
    Grants,
    /// No folder for corral's state could be found.
    Home,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn io(what: impl fmt::Display, err: &std::io::Error) -> Self {
        Error::new(ErrorKind::Io, format!("{what}: {err}"))
    }

    /// What went wrong, broadly.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the caller can fix it by asking differently (a front end's usage error).
    pub fn is_usage(&self) -> bool {
        self.kind == ErrorKind::Usage
    }

    /// The same error with `context` (such as the plugin folder) in front of its message.
    pub(crate) fn context(self, context: impl fmt::Display) -> Self {
        Error {
            kind: self.kind,
            message: format!("{context}: {}", self.message),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
