//! A tolerant reader of the literals models write: JSON, Python literals, and pythonic calls.
//!
//! One reader serves JSON objects (`{"name": …}`), Python dicts (`{'a': True}`), and the call
//! syntax of builtin tools and Llama 3.2 (`brave_search.call(query="x")`, `[f(a=1), g()]`), so a
//! model that mixes the two (single quotes, `True`, trailing commas) is still understood. It works
//! on text that may still be growing: running out of input is [`LiteralError::Incomplete`], which
//! the streaming parser answers by waiting for more, while anything else is
//! [`LiteralError::Invalid`]. Nesting is bounded, so hostile input cannot overflow the stack.

use serde_json::{Map, Number, Value};

pub(crate) mod probe;

pub(crate) use probe::{Probe, Status};

/// How deep objects and arrays may nest.
pub const MAX_DEPTH: usize = 128;

/// Why a literal could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiteralError {
    /// The input ended before the literal did (more input may complete it).
    Incomplete,
    /// The input is not a literal; `offset` is where reading failed.
    Invalid {
        /// Byte offset of the failure in the input.
        offset: usize,
        /// What was expected.
        reason: String,
    },
}

/// A pythonic call `name(positional…, key=value…)`.
#[derive(Debug, Clone, PartialEq)]
pub struct PyCall {
    /// Dotted name as written, e.g. `brave_search.call` or `math.factorial`.
    pub name: String,
    /// Positional arguments in order.
    pub positional: Vec<Value>,
    /// Keyword arguments in order.
    pub keywords: Map<String, Value>,
}

/// Reads one value starting at byte `pos` of `src` (leading whitespace skipped); returns it and
/// the offset just after it.
///
/// # Errors
/// [`LiteralError`] when the text there is not (yet) a literal.
pub fn parse_value(src: &str, pos: usize) -> Result<(Value, usize), LiteralError> {
    let mut reader = Reader { src, pos, depth: 0 };
    let value = reader.value()?;
    Ok((value, reader.pos))
}

/// Reads a pythonic call starting at byte `pos` of `src`.
///
/// # Errors
/// [`LiteralError`] when the text there is not (yet) a call.
pub fn parse_call(src: &str, pos: usize) -> Result<(PyCall, usize), LiteralError> {
    let mut reader = Reader { src, pos, depth: 0 };
    let call = reader.call()?;
    Ok((call, reader.pos))
}

/// Reads a dotted name (`a.b_c`) at `pos`; `None` when no name starts there.
pub fn parse_dotted_name(src: &str, pos: usize) -> Option<(String, usize)> {
    let mut reader = Reader { src, pos, depth: 0 };
    reader.dotted_name().map(|name| (name, reader.pos))
}

struct Reader<'a> {
    src: &'a str,
    pos: usize,
    depth: usize,
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// The literal words: JSON's and Python's spellings of booleans and null.
fn keyword_value(word: &str) -> Option<Value> {
    match word {
        "true" | "True" => Some(Value::Bool(true)),
        "false" | "False" => Some(Value::Bool(false)),
        "null" | "None" => Some(Value::Null),
        _ => None,
    }
}

/// Whether `c` continues a number whose text so far ends `before` (a sign opens the number, or
/// follows an exponent's `e`).
fn continues_number(before: &str, c: char) -> bool {
    match c {
        '0'..='9' | '.' | 'e' | 'E' => true,
        '+' | '-' => matches!(before.chars().next_back(), Some('e' | 'E')),
        _ => false,
    }
}

/// Why a finished number's text is not a number.
enum NumberError {
    NoDigits,
    NotANumber,
}

/// The value of a finished number's text (sign included): an integer when it fits `i64` or
/// `u64` and has no fraction or exponent, else a finite float.
fn number_value(text: &str) -> Result<Value, NumberError> {
    let text = text.trim_start_matches('+');
    if !text.bytes().any(|b| b.is_ascii_digit()) {
        return Err(NumberError::NoDigits);
    }
    if !text.contains(['.', 'e', 'E']) {
        if let Ok(n) = text.parse::<i64>() {
            return Ok(Value::Number(n.into()));
        }
        if let Ok(n) = text.parse::<u64>() {
            return Ok(Value::Number(n.into()));
        }
    }
    text.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map(Value::Number)
        .ok_or(NumberError::NotANumber)
}

impl Reader<'_> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if !c.is_whitespace() {
                break;
            }
            self.pos += c.len_utf8();
        }
    }

    fn invalid<T>(&self, reason: impl Into<String>) -> Result<T, LiteralError> {
        Err(LiteralError::Invalid {
            offset: self.pos,
            reason: reason.into(),
        })
    }

    /// The next non-blank character, or `Incomplete` at the end of input.
    fn next_char(&mut self) -> Result<char, LiteralError> {
        self.skip_ws();
        self.peek().ok_or(LiteralError::Incomplete)
    }

    fn value(&mut self) -> Result<Value, LiteralError> {
        match self.next_char()? {
            '{' => self.nested(Self::object),
            '[' => self.nested(|r| r.sequence('[', ']').map(Value::Array)),
            '(' => self.nested(|r| r.sequence('(', ')').map(Value::Array)),
            '"' | '\'' => self.string().map(Value::String),
            c if c == '-' || c == '+' || c.is_ascii_digit() => self.number(),
            c if is_ident_start(c) => self.keyword(),
            c => self.invalid(format!("expected a value, found `{c}`")),
        }
    }

    fn nested(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<Value, LiteralError>,
    ) -> Result<Value, LiteralError> {
        if self.depth >= MAX_DEPTH {
            return self.invalid("nested too deeply");
        }
        self.depth += 1;
        let value = read(self);
        self.depth -= 1;
        value
    }

    fn object(&mut self) -> Result<Value, LiteralError> {
        self.bump(); // `{`
        let mut map = Map::new();
        loop {
            match self.next_char()? {
                '}' => {
                    self.bump();
                    return Ok(Value::Object(map));
                }
                '"' | '\'' => {
                    let key = self.string()?;
                    self.expect(':')?;
                    let value = self.value()?;
                    map.insert(key, value);
                }
                c if is_ident_start(c) => {
                    let key = self.ident();
                    self.expect(':')?;
                    let value = self.value()?;
                    map.insert(key, value);
                }
                c => return self.invalid(format!("expected a key or `}}`, found `{c}`")),
            }
            match self.next_char()? {
                ',' => {
                    self.bump();
                }
                '}' => {}
                c => return self.invalid(format!("expected `,` or `}}`, found `{c}`")),
            }
        }
    }

    fn sequence(&mut self, open: char, close: char) -> Result<Vec<Value>, LiteralError> {
        debug_assert_eq!(self.peek(), Some(open));
        self.bump();
        let mut items = Vec::new();
        loop {
            if self.next_char()? == close {
                self.bump();
                return Ok(items);
            }
            items.push(self.value()?);
            match self.next_char()? {
                ',' => {
                    self.bump();
                }
                c if c == close => {}
                c => return self.invalid(format!("expected `,` or `{close}`, found `{c}`")),
            }
        }
    }

    fn expect(&mut self, want: char) -> Result<(), LiteralError> {
        let c = self.next_char()?;
        if c != want {
            return self.invalid(format!("expected `{want}`, found `{c}`"));
        }
        self.bump();
        Ok(())
    }

    fn ident(&mut self) -> String {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if !is_ident_char(c) {
                break;
            }
            self.pos += c.len_utf8();
        }
        self.src[start..self.pos].to_string()
    }

    fn dotted_name(&mut self) -> Option<String> {
        if !self.peek().is_some_and(is_ident_start) {
            return None;
        }
        let start = self.pos;
        self.ident();
        while self.peek() == Some('.') {
            let dot = self.pos;
            self.bump();
            if !self.peek().is_some_and(is_ident_start) {
                self.pos = dot;
                break;
            }
            self.ident();
        }
        Some(self.src[start..self.pos].to_string())
    }

    fn keyword(&mut self) -> Result<Value, LiteralError> {
        let start = self.pos;
        let word = self.ident();
        if self.pos == self.src.len() {
            // The word may still grow (`True` → `True1`): decide when it ends.
            return Err(LiteralError::Incomplete);
        }
        match keyword_value(&word) {
            Some(value) => Ok(value),
            None => {
                // Quote only the first character: the rest of the word may not have arrived yet.
                self.pos = start;
                let first = word.chars().next().unwrap_or(' ');
                self.invalid(format!("expected a value, found `{first}`"))
            }
        }
    }

    fn number(&mut self) -> Result<Value, LiteralError> {
        let start = self.pos;
        if matches!(self.peek(), Some('-' | '+')) {
            self.bump();
        }
        while let Some(c) = self.peek() {
            if !continues_number(&self.src[..self.pos], c) {
                break;
            }
            self.bump();
        }
        if self.pos == self.src.len() {
            // A number at the very end may still grow.
            return Err(LiteralError::Incomplete);
        }
        match number_value(&self.src[start..self.pos]) {
            Ok(value) => Ok(value),
            Err(NumberError::NoDigits) => self.invalid("expected digits"),
            Err(NumberError::NotANumber) => {
                let text = self.src[start..self.pos].trim_start_matches('+');
                let reason = format!("`{text}` is not a number");
                self.pos = start;
                self.invalid(reason)
            }
        }
    }

    fn string(&mut self) -> Result<String, LiteralError> {
        let quote = self.bump().expect("caller saw a quote");
        let mut out = String::new();
        loop {
            let c = self.bump().ok_or(LiteralError::Incomplete)?;
            match c {
                c if c == quote => return Ok(out),
                '\\' => {
                    let escaped = self.bump().ok_or(LiteralError::Incomplete)?;
                    match escaped {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{c}'),
                        '0' => out.push('\0'),
                        'u' => out.push(self.unicode_escape()?),
                        'x' => {
                            let code = self.hex(2)?;
                            out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                        }
                        '\n' => {}
                        other => {
                            // `\"`, `\\`, `\/`, `\'`, and unknown escapes kept as Python does.
                            if !matches!(other, '"' | '\\' | '/' | '\'') {
                                out.push('\\');
                            }
                            out.push(other);
                        }
                    }
                }
                c => out.push(c),
            }
        }
    }

    fn hex(&mut self, len: usize) -> Result<u32, LiteralError> {
        let rest = &self.src[self.pos..];
        if rest.len() < len && rest.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(LiteralError::Incomplete);
        }
        match rest
            .get(..len)
            .and_then(|h| u32::from_str_radix(h, 16).ok())
        {
            Some(code) if rest[..len].chars().all(|c| c.is_ascii_hexdigit()) => {
                self.pos += len;
                Ok(code)
            }
            _ => self.invalid("bad hex escape"),
        }
    }

    fn unicode_escape(&mut self) -> Result<char, LiteralError> {
        let high = self.hex(4)?;
        if !(0xD800..0xDC00).contains(&high) {
            return Ok(char::from_u32(high).unwrap_or('\u{fffd}'));
        }
        let rest = &self.src[self.pos..];
        if rest.len() < 2 && "\\u".starts_with(rest) {
            return Err(LiteralError::Incomplete);
        }
        if !rest.starts_with("\\u") {
            return Ok('\u{fffd}');
        }
        self.pos += 2;
        let low = self.hex(4)?;
        if !(0xDC00..0xE000).contains(&low) {
            return Ok('\u{fffd}');
        }
        let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
        Ok(char::from_u32(code).unwrap_or('\u{fffd}'))
    }

    fn call(&mut self) -> Result<PyCall, LiteralError> {
        self.skip_ws();
        let Some(name) = self.dotted_name() else {
            return match self.peek() {
                None => Err(LiteralError::Incomplete),
                Some(c) => self.invalid(format!("expected a function name, found `{c}`")),
            };
        };
        if self.pos == self.src.len() || &self.src[self.pos..] == "." {
            return Err(LiteralError::Incomplete);
        }
        if self.peek() != Some('(') {
            return self.invalid(format!("expected `(` after `{name}`"));
        }
        self.bump();
        let mut call = PyCall {
            name,
            positional: Vec::new(),
            keywords: Map::new(),
        };
        loop {
            if self.next_char()? == ')' {
                self.bump();
                return Ok(call);
            }
            self.argument(&mut call)?;
            match self.next_char()? {
                ',' => {
                    self.bump();
                }
                ')' => {}
                c => return self.invalid(format!("expected `,` or `)`, found `{c}`")),
            }
        }
    }

    fn argument(&mut self, call: &mut PyCall) -> Result<(), LiteralError> {
        let start = self.pos;
        if self.peek().is_some_and(is_ident_start) {
            let key = self.ident();
            self.skip_ws();
            let rest = &self.src[self.pos..];
            if rest.starts_with('=') && !rest.starts_with("==") {
                self.bump();
                let value = self.value()?;
                call.keywords.insert(key, value);
                return Ok(());
            }
            if rest.is_empty() {
                return Err(LiteralError::Incomplete);
            }
            self.pos = start;
        }
        if !call.keywords.is_empty() {
            return self.invalid("positional argument after keyword arguments");
        }
        let value = self.value()?;
        call.positional.push(value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn value(src: &str) -> Value {
        parse_value(src, 0).unwrap().0
    }

    #[test]
    fn reads_json_and_python_literals() {
        assert_eq!(
            value(r#"{"a": [1, -2.5, true, null]} "#),
            json!({"a": [1, -2.5, true, null]})
        );
        assert_eq!(
            value("{'a': True, 'b': None,} "),
            json!({"a": true, "b": null})
        );
        assert_eq!(value("(1, 'x') "), json!([1, "x"]));
        assert_eq!(
            value(r#""caf\u00e9 \ud83d\ude00 \"q\"" "#),
            json!("café 😀 \"q\"")
        );
        assert_eq!(value("{key: 'v'} "), json!({"key": "v"}));
        assert_eq!(value("\"日本語\" "), json!("日本語"));
    }

    #[test]
    fn incomplete_versus_invalid() {
        for partial in [
            "{\"a\": [1, 2",
            "{\"a\"",
            "\"abc",
            "tr",
            "True",
            "{\"x\": 12",
            "\"\\u00",
        ] {
            assert_eq!(
                parse_value(partial, 0),
                Err(LiteralError::Incomplete),
                "{partial}"
            );
        }
        for bad in [
            "{\"a\" 1}",
            "{1: 2}",
            "[1 2]",
            "hello ",
            "True1 ",
            "{\"a\": nope}",
        ] {
            assert!(
                matches!(parse_value(bad, 0), Err(LiteralError::Invalid { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = "[".repeat(100_000);
        assert!(matches!(
            parse_value(&deep, 0),
            Err(LiteralError::Invalid { .. })
        ));
    }

    #[test]
    fn reads_pythonic_calls() {
        let (call, end) = parse_call(r#"brave_search.call(query="x", n=3)"#, 0).unwrap();
        assert_eq!(call.name, "brave_search.call");
        assert_eq!(Value::Object(call.keywords), json!({"query": "x", "n": 3}));
        assert_eq!(end, 33);
        let (call, _) = parse_call("f(1, 'a', k=[1, {'x': 2}])", 0).unwrap();
        assert_eq!(call.positional, vec![json!(1), json!("a")]);
        assert_eq!(Value::Object(call.keywords), json!({"k": [1, {"x": 2}]}));
        assert_eq!(parse_call("get_x(a=1", 0), Err(LiteralError::Incomplete));
        assert!(matches!(
            parse_call("get_x(a=1 b)", 0),
            Err(LiteralError::Invalid { .. })
        ));
    }
}
