//! A resumable check of a literal that is still arriving.
//!
//! While a call's literal is incomplete the streaming scanner waits for more input. Reading it
//! again from its first byte on every piece would cost time quadratic in the call's length, so
//! the scanner keeps a [`Probe`] instead: fed each new byte once, it tells whether the reader
//! ([`parse_value`](super::parse_value), or the scanner's list of pythonic calls) would still run
//! out of input. Only when it would not is the literal read for real, once.
//!
//! The probe builds no values and decides nothing on its own: it follows the reader's grammar
//! state by state, shares its rules for numbers, words and names, and a property test checks on
//! every prefix of fuzzed input that both give the same outcome at the same offset.

use super::MAX_DEPTH;
use super::{continues_number, is_ident_char, is_ident_start, keyword_value, number_value};

/// What reading the literal would give on the input fed so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// The reader would run out of input: more may complete the literal.
    Incomplete,
    /// The literal ends just before byte `end`; `object` when it is `{…}`.
    Complete {
        /// Offset just after the literal.
        end: usize,
        /// Whether it is an object.
        object: bool,
    },
    /// The reader would fail, whatever follows.
    Invalid,
}

/// A resumable probe of one literal in a buffer that only grows.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    /// A list of pythonic calls, which a call list tries before reading a JSON value.
    calls: Option<Machine>,
    value: Machine,
    /// How much of the buffer has been fed.
    fed: usize,
}

impl Probe {
    /// Probes the value that starts at byte `start` (leading whitespace allowed).
    pub fn value(start: usize) -> Probe {
        Probe {
            calls: None,
            value: Machine::new(Expect::Value),
            fed: start,
        }
    }

    /// Probes the list of calls that opens with the `[` at byte `start`: pythonic calls
    /// (`[f(a=1), g()]`), or else a JSON value (`[{"name": …}]`).
    pub fn call_list(start: usize) -> Probe {
        Probe {
            calls: Some(Machine::new(Expect::ListOpen)),
            value: Machine::new(Expect::Value),
            fed: start,
        }
    }

    /// Feeds what `src` holds beyond what was fed before; `src` extends the earlier buffer.
    pub fn feed(&mut self, src: &str) {
        if let Some(calls) = &mut self.calls {
            calls.feed(src, self.fed);
        }
        self.value.feed(src, self.fed);
        self.fed = src.len();
    }

    /// The reader's outcome on everything fed so far.
    pub fn status(&self) -> Status {
        match self.calls.as_ref().map(|calls| calls.outcome) {
            Some(Some(Status::Invalid)) | None => self.value.status(),
            Some(outcome) => outcome.unwrap_or(Status::Incomplete),
        }
    }
}

/// An open container or call.
#[derive(Debug, Clone, Copy)]
enum Frame {
    Object,
    Sequence { close: char },
    Call { keywords: bool },
    List { calls: bool },
}

/// What the reader expects next. `start`/`end` are byte offsets of the token being read.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The `[` of a call list.
    ListOpen,
    /// A call or, after a call, `]`.
    ListItem,
    Value,
    /// An object key or `}`.
    Key,
    KeyIdent,
    Colon,
    /// A sequence item or its closing bracket.
    Item,
    /// After a value or call: `,` or the closing bracket of the innermost frame.
    After,
    Str {
        quote: char,
        key: bool,
        escape: Escape,
    },
    Number {
        start: usize,
    },
    Word {
        start: usize,
    },
    /// A call's dotted name; `dot` just after a `.`.
    CallName {
        dot: bool,
    },
    /// A call's argument or `)`.
    Arg,
    ArgIdent {
        start: usize,
    },
    /// After an argument's leading name: `=` makes it a keyword argument.
    ArgAfterIdent {
        start: usize,
        end: usize,
    },
    ArgEquals,
}

#[derive(Debug, Clone, Copy)]
enum Escape {
    None,
    Backslash,
    /// This many hex digits still to come.
    Hex(u8),
}

#[derive(Debug, Clone)]
struct Machine {
    frames: Vec<Frame>,
    /// Open objects and sequences (the reader's nesting depth).
    depth: usize,
    expect: Expect,
    /// Whether the outermost value is an object.
    object: bool,
    /// Set once decided: complete or invalid.
    outcome: Option<Status>,
}

impl Machine {
    fn new(expect: Expect) -> Machine {
        Machine {
            frames: Vec::new(),
            depth: 0,
            expect,
            object: false,
            outcome: None,
        }
    }

    fn status(&self) -> Status {
        self.outcome.unwrap_or(Status::Incomplete)
    }

    fn feed(&mut self, src: &str, from: usize) {
        for (i, c) in src[from..].char_indices() {
            if self.outcome.is_some() {
                return;
            }
            // A step that ends a token hands the same character to the next state.
            while !self.step(src, from + i, c) && self.outcome.is_none() {}
        }
    }

    /// One character at byte `at`; `false` when it is not consumed and must be stepped again.
    fn step(&mut self, src: &str, at: usize, c: char) -> bool {
        let next = at + c.len_utf8();
        match self.expect {
            Expect::ListOpen if c == '[' => {
                self.frames.push(Frame::List { calls: false });
                self.expect = Expect::ListItem;
            }
            Expect::ListOpen => self.fail(),
            Expect::ListItem if c.is_whitespace() => {}
            Expect::ListItem => match self.frames.last() {
                Some(Frame::List { calls: true }) if c == ']' => self.complete(next),
                _ if is_ident_start(c) => self.expect = Expect::CallName { dot: false },
                _ => self.fail(),
            },
            Expect::Value if c.is_whitespace() => {}
            Expect::Value => self.start_value(at, c),
            Expect::Key if c.is_whitespace() => {}
            Expect::Key => match c {
                '}' => self.close(next),
                '"' | '\'' => self.expect = string(c, true),
                c if is_ident_start(c) => self.expect = Expect::KeyIdent,
                _ => self.fail(),
            },
            Expect::KeyIdent if is_ident_char(c) => {}
            Expect::KeyIdent => {
                self.expect = Expect::Colon;
                return false;
            }
            Expect::Colon if c.is_whitespace() => {}
            Expect::Colon if c == ':' => self.expect = Expect::Value,
            Expect::Colon => self.fail(),
            Expect::Item if c.is_whitespace() => {}
            Expect::Item => match self.frames.last() {
                Some(Frame::Sequence { close }) if *close == c => self.close(next),
                _ => {
                    self.expect = Expect::Value;
                    return false;
                }
            },
            Expect::After if c.is_whitespace() => {}
            Expect::After => self.after(c, next),
            Expect::Str { quote, key, escape } => self.string(quote, key, escape, c, next),
            Expect::Number { start } => {
                if continues_number(&src[..at], c) {
                    return true;
                }
                match number_value(&src[start..at]) {
                    Ok(_) => self.value_done(at),
                    Err(_) => self.fail(),
                }
                return false;
            }
            Expect::Word { .. } | Expect::ArgIdent { .. } if is_ident_char(c) => {}
            Expect::Word { start } => {
                match keyword_value(&src[start..at]) {
                    Some(_) => self.value_done(at),
                    None => self.fail(),
                }
                return false;
            }
            Expect::CallName { dot: false } => match c {
                c if is_ident_char(c) => {}
                '.' => self.expect = Expect::CallName { dot: true },
                '(' => {
                    self.frames.push(Frame::Call { keywords: false });
                    self.expect = Expect::Arg;
                }
                _ => self.fail(),
            },
            Expect::CallName { dot: true } if is_ident_start(c) => {
                self.expect = Expect::CallName { dot: false };
            }
            Expect::CallName { dot: true } => self.fail(),
            Expect::Arg if c.is_whitespace() => {}
            Expect::Arg if c == ')' => self.call_done(),
            Expect::Arg if is_ident_start(c) => self.expect = Expect::ArgIdent { start: at },
            Expect::Arg if self.keywords() => self.fail(),
            Expect::Arg => {
                self.expect = Expect::Value;
                return false;
            }
            Expect::ArgIdent { start } => {
                self.expect = Expect::ArgAfterIdent { start, end: at };
                return false;
            }
            Expect::ArgAfterIdent { .. } if c.is_whitespace() => {}
            Expect::ArgAfterIdent { .. } if c == '=' => self.expect = Expect::ArgEquals,
            Expect::ArgAfterIdent { start, end } => {
                // Not `name=`: the name is read again as a positional value.
                match keyword_value(&src[start..end]) {
                    Some(_) if !self.keywords() => self.value_done(end),
                    _ => self.fail(),
                }
                return false;
            }
            // `name ==` is neither a keyword argument nor a value followed by `,` or `)`.
            Expect::ArgEquals if c == '=' => self.fail(),
            Expect::ArgEquals => {
                if let Some(Frame::Call { keywords }) = self.frames.last_mut() {
                    *keywords = true;
                }
                self.expect = Expect::Value;
                return false;
            }
        }
        true
    }

    fn start_value(&mut self, at: usize, c: char) {
        if self.frames.is_empty() {
            self.object = c == '{';
        }
        let (frame, expect) = match c {
            '{' => (Frame::Object, Expect::Key),
            '[' => (Frame::Sequence { close: ']' }, Expect::Item),
            '(' => (Frame::Sequence { close: ')' }, Expect::Item),
            '"' | '\'' => return self.expect = string(c, false),
            c if c == '-' || c == '+' || c.is_ascii_digit() => {
                return self.expect = Expect::Number { start: at }
            }
            c if is_ident_start(c) => return self.expect = Expect::Word { start: at },
            _ => return self.fail(),
        };
        if self.depth >= MAX_DEPTH {
            return self.fail();
        }
        self.depth += 1;
        self.frames.push(frame);
        self.expect = expect;
    }

    /// A character `c` inside a string; the string ends before `next` when it is the quote.
    fn string(&mut self, quote: char, key: bool, escape: Escape, c: char, next: usize) {
        let escape = match (escape, c) {
            (Escape::None, c) if c == quote => {
                if key {
                    self.expect = Expect::Colon;
                } else {
                    self.value_done(next);
                }
                return;
            }
            (Escape::None, '\\') => Escape::Backslash,
            (Escape::None, _) => Escape::None,
            (Escape::Backslash, 'u') => Escape::Hex(4),
            (Escape::Backslash, 'x') => Escape::Hex(2),
            (Escape::Backslash, _) => Escape::None,
            (Escape::Hex(n), c) if c.is_ascii_hexdigit() => match n {
                1 => Escape::None,
                n => Escape::Hex(n - 1),
            },
            (Escape::Hex(_), _) => return self.fail(),
        };
        self.expect = Expect::Str { quote, key, escape };
    }

    fn after(&mut self, c: char, next: usize) {
        match (self.frames.last(), c) {
            (Some(Frame::Object), ',') => self.expect = Expect::Key,
            (Some(Frame::Object), '}') => self.close(next),
            (Some(Frame::Sequence { .. }), ',') => self.expect = Expect::Item,
            (Some(Frame::Sequence { close }), c) if *close == c => self.close(next),
            (Some(Frame::Call { .. }), ',') => self.expect = Expect::Arg,
            (Some(Frame::Call { .. }), ')') => self.call_done(),
            (Some(Frame::List { .. }), ',') => self.expect = Expect::ListItem,
            (Some(Frame::List { .. }), ']') => self.complete(next),
            _ => self.fail(),
        }
    }

    fn keywords(&self) -> bool {
        matches!(self.frames.last(), Some(Frame::Call { keywords: true }))
    }

    /// Closes the innermost object or sequence, which ends just before `end`.
    fn close(&mut self, end: usize) {
        self.frames.pop();
        self.depth -= 1;
        self.value_done(end);
    }

    /// A value ended just before `end`.
    fn value_done(&mut self, end: usize) {
        match self.frames.last() {
            None => self.complete(end),
            Some(_) => self.expect = Expect::After,
        }
    }

    fn call_done(&mut self) {
        self.frames.pop();
        if let Some(Frame::List { calls }) = self.frames.last_mut() {
            *calls = true;
        }
        self.expect = Expect::After;
    }

    fn complete(&mut self, end: usize) {
        self.outcome = Some(Status::Complete {
            end,
            object: self.object,
        });
    }

    fn fail(&mut self) {
        self.outcome = Some(Status::Invalid);
    }
}

fn string(quote: char, key: bool) -> Expect {
    Expect::Str {
        quote,
        key,
        escape: Escape::None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    use super::{Probe, Status};
    use crate::literal::{parse_value, LiteralError};

    /// The pieces literals and calls are made of, including the ones the reader treats specially.
    const PIECES: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        "(",
        ")",
        "\"",
        "'",
        ":",
        ",",
        "=",
        "==",
        ".",
        "\\",
        "\\u",
        "\\x",
        "\\ud83d",
        "\\ude00",
        "d8",
        "00e9",
        "4",
        "\\n",
        "\\\"",
        "name",
        "_x",
        "get_weather",
        "brave_search.call",
        "f(",
        "a=",
        "True",
        "None",
        "null",
        "false",
        "tr",
        "1",
        "-",
        "+",
        "2.5e",
        "e",
        "E",
        "-3",
        "1e999",
        "0x",
        "18446744073709551616",
        " ",
        "\n",
        "é",
        "日",
        "😀",
        "\u{0}",
    ];

    /// Fuzzed literal-ish text: mostly the pieces above, sometimes arbitrary.
    pub(crate) fn literal_text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            10 => prop::sample::select(PIECES).prop_map(str::to_string),
            1 => any::<String>(),
        ];
        prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
    }

    /// What the probe should say about an outcome of the reader.
    pub(crate) fn expected(outcome: Result<(bool, usize), LiteralError>) -> Status {
        match outcome {
            Ok((object, end)) => Status::Complete { end, object },
            Err(LiteralError::Incomplete) => Status::Incomplete,
            Err(LiteralError::Invalid { .. }) => Status::Invalid,
        }
    }

    /// Feeds `src[start..]` to `probe` one char at a time, comparing at every prefix with
    /// `reader` run on that prefix.
    pub(crate) fn agrees_on_every_prefix(
        mut probe: Probe,
        src: &str,
        start: usize,
        reader: impl Fn(&str) -> Status,
    ) -> Result<(), TestCaseError> {
        let ends = src[start..]
            .char_indices()
            .map(|(i, _)| start + i)
            .skip(1)
            .chain([src.len()]);
        for end in ends {
            probe.feed(&src[..end]);
            let prefix = &src[..end];
            prop_assert_eq!(probe.status(), reader(prefix), "prefix {:?}", prefix);
        }
        Ok(())
    }

    pub(crate) fn runner() -> TestRunner {
        TestRunner::new(Config {
            cases: std::env::var("CORRAL_FUZZ_CASES")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(20_000),
            failure_persistence: None,
            ..Config::default()
        })
    }

    #[test]
    fn the_probe_says_what_the_reader_says_on_every_prefix() {
        let strategy = (literal_text(), "[ ab]{0,3}");
        runner()
            .run(&strategy, |(text, lead)| {
                let src = format!("{lead}{text}");
                let reader = |prefix: &str| {
                    let outcome = parse_value(prefix, lead.len());
                    expected(outcome.map(|(value, end)| (value.is_object(), end)))
                };
                agrees_on_every_prefix(Probe::value(lead.len()), &src, lead.len(), reader)
            })
            .unwrap();
    }

    #[test]
    fn known_outcomes() {
        let status = |src: &str| {
            let mut probe = Probe::value(0);
            probe.feed(src);
            probe.status()
        };
        let complete = |end, object| Status::Complete { end, object };
        assert_eq!(status(r#" {"a": [1, 'x', True]}  "#), complete(22, true));
        assert_eq!(status(r#""a\u00e9\ud83d\ude00""#), complete(21, false));
        assert_eq!(status("12 "), complete(2, false));
        assert_eq!(status("{'k': (1, 2,),}"), complete(15, true));
        for incomplete in [
            "",
            " {",
            "{\"a\": \"xyz",
            "[1, 2",
            "True",
            "-",
            "\"\\u00",
            "{a",
        ] {
            assert_eq!(status(incomplete), Status::Incomplete, "{incomplete:?}");
        }
        for invalid in [
            "{1", "[1 2", "\"\\u00g", "Tru ", "1e999 ", "- ", ".5", "{\"a\" 1",
        ] {
            assert_eq!(status(invalid), Status::Invalid, "{invalid:?}");
        }
        let deep = "[".repeat(1000);
        assert_eq!(status(&deep), Status::Invalid);
    }
}
