//! A call that stopped for lack of input, and what must arrive before it is tried again.
//!
//! Trying a call again means reading its literal from the first byte. Doing that on every piece
//! while a long argument streams in is quadratic, so a waiting call keeps a [`Probe`] of its
//! literal, fed only the bytes that arrived since, and is tried again only once the probe says
//! the reader would no longer run out of input (and, for calls with a closing tag, once the tag
//! can no longer be partial). Reading then happens once, and the whole turn stays linear.

use crate::literal::{Probe, Status};

/// What a waiting call waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Await {
    /// Something short (a special token's prefix, a function's name): try on every piece.
    Retry,
    /// The literal that starts at byte `start`: a value, or with `list` a list of calls; then
    /// optionally a closing tag.
    Literal {
        start: usize,
        list: bool,
        close: Option<Close>,
    },
}

/// A closing tag that may follow a call's literal, after optional whitespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Close {
    pub tag: &'static str,
    /// Whether the tag is only awaited after an object (other values are refused at once).
    pub after_objects_only: bool,
}

/// A call at byte `at` of the turn that is waiting for more input.
#[derive(Debug)]
pub(super) struct Pending {
    pub at: usize,
    pub awaits: Await,
    probe: Option<Probe>,
    /// The whitespace after a complete literal has been skipped up to here.
    blank_to: usize,
}

impl Pending {
    pub fn new(at: usize, awaits: Await) -> Pending {
        let probe = match awaits {
            Await::Retry => None,
            Await::Literal { start, list, .. } if list => Some(Probe::call_list(start)),
            Await::Literal { start, .. } => Some(Probe::value(start)),
        };
        Pending {
            at,
            awaits,
            probe,
            blank_to: 0,
        }
    }

    /// Whether trying the call again on `buf` (the turn so far) would still wait for input;
    /// reads only what arrived since the last question.
    pub fn still_waiting(&mut self, buf: &str) -> bool {
        let (Await::Literal { close, .. }, Some(probe)) = (self.awaits, &mut self.probe) else {
            return false;
        };
        probe.feed(buf);
        match probe.status() {
            Status::Incomplete => true,
            Status::Invalid => false,
            Status::Complete { end, object } => match close {
                Some(close) if object || !close.after_objects_only => {
                    let from = self.blank_to.max(end);
                    let rest = &buf[from..];
                    let trimmed = rest.trim_start();
                    self.blank_to = from + rest.len() - trimmed.len();
                    !trimmed.starts_with(close.tag) && close.tag.starts_with(trimmed)
                }
                _ => false,
            },
        }
    }
}
