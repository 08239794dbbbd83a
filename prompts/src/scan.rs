//! The streaming scanner both tool-call dialects share.
//!
//! A turn is text interleaved with calls. The scanner keeps the whole turn so far, emits text as
//! soon as it cannot be the start of a call, and holds back only what might still become one: a
//! `<` that may open a special token, a `{` or `[` whose literal is not closed yet, the body after
//! `<|python_tag|>` (code or calls are only told apart at its end). What a dialect adds is a table
//! of special strings ([`Dialect`]); everything else (JSON and pythonic calls, known-tool checks,
//! errors) is shared.
//!
//! The cost is linear in the turn's length however it is streamed: a call that waits for more
//! input is tried again only when a resumable probe of its literal says the reader would no
//! longer run out of input (`pending`), so a long argument is read in full once.

mod pending;
#[cfg(test)]
mod tests;

use serde_json::{Map, Value};

use pending::{Await, Close, Pending};

use crate::format::{ParseError, ParseErrorKind, ParseEvent, StopKind, StreamParser};
use crate::literal::{self, LiteralError, PyCall};
use crate::types::{ToolCall, ToolSet};

/// What a special string does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Special {
    /// Ends the turn.
    Stop(StopKind),
    /// `<|python_tag|>`: the rest of the turn is calls or code.
    PythonTag,
    /// `<function=NAME>{…}</function>`.
    FunctionTag,
    /// `<tool_call>{…}</tool_call>`.
    ToolCallTag,
}

/// A model family's tool-call dialect.
#[derive(Debug)]
pub(crate) struct Dialect {
    /// Special strings and their meaning; tried in order.
    pub specials: &'static [(&'static str, Special)],
    /// Whether `[f(a=1), g()]` at the start of the turn is a list of calls.
    pub pythonic_lists: bool,
}

const PYTHON_TAG: &str = "<|python_tag|>";
const FUNCTION_CLOSE: Close = Close {
    tag: "</function>",
    after_objects_only: true,
};
const TOOL_CALL_CLOSE: Close = Close {
    tag: "</tool_call>",
    after_objects_only: false,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Text,
    PythonBlock {
        start: usize,
    },
    /// After a malformed call: discard until the turn ends.
    Skip,
    Done,
}

/// What trying to read a call at the current position gave.
enum Attempt {
    /// Need more input: what must arrive before the call is tried again.
    Wait(Await),
    /// Consumed up to the offset, producing these events.
    Consumed(Vec<ParseEvent>, usize),
    /// Not a call: the text up to the offset is plain text.
    Text(usize),
    /// A broken call: report and skip the rest of the turn.
    Malformed(ParseError),
}

/// The streaming parser of one turn.
pub(crate) struct Scanner {
    dialect: &'static Dialect,
    tools: ToolSet,
    buf: String,
    pos: usize,
    mode: Mode,
    held_ws: String,
    /// Text was the last thing emitted (so `{`/`[` here are mid-text, not a call position).
    after_text: bool,
    /// A call was the last thing emitted (separators `;` `,` that follow are not text).
    after_call: bool,
    /// The call at `pos` that waits for more input, if any.
    pending: Option<Pending>,
    /// How many times a call was tried (each try reads its literal from the start).
    #[cfg(test)]
    tries: usize,
}

impl Scanner {
    pub fn new(dialect: &'static Dialect, tools: ToolSet) -> Scanner {
        Scanner {
            dialect,
            tools,
            buf: String::new(),
            pos: 0,
            mode: Mode::Text,
            held_ws: String::new(),
            after_text: false,
            after_call: false,
            pending: None,
            #[cfg(test)]
            tries: 0,
        }
    }

    fn advance(&mut self, last: bool) -> Vec<ParseEvent> {
        let mut events = Vec::new();
        loop {
            match self.mode {
                Mode::Done => {
                    self.pos = self.buf.len();
                    return events;
                }
                Mode::Skip => match self.find_stop(self.pos) {
                    Some((at, len, kind)) => {
                        events.push(ParseEvent::Stop(kind));
                        self.pos = at + len;
                        self.mode = Mode::Done;
                    }
                    None => {
                        self.pos = self.tail_start().max(self.pos);
                        return events;
                    }
                },
                Mode::PythonBlock { start } => {
                    // `pos` marks how far the body was searched for a stop token (less a tail
                    // that may hold a partial one), so long code is not searched again and again.
                    let (end, stop) = match self.find_stop(self.pos.max(start)) {
                        Some((at, len, kind)) => (at, Some((len, kind))),
                        None if last => (self.buf.len(), None),
                        None => {
                            self.pos = self.tail_start().max(start);
                            return events;
                        }
                    };
                    let block = self.buf[start..end].to_string();
                    events.extend(python_block(&block, &self.tools));
                    self.pos = end;
                    self.mode = Mode::Done;
                    if let Some((len, kind)) = stop {
                        self.pos = end + len;
                        events.push(ParseEvent::Stop(kind));
                    }
                }
                Mode::Text => {
                    if !self.step_text(last, &mut events) {
                        return events;
                    }
                }
            }
        }
    }

    /// One step in text mode; `false` when it must wait for more input (or is at the end).
    fn step_text(&mut self, last: bool, events: &mut Vec<ParseEvent>) -> bool {
        let rest = &self.buf[self.pos..];
        let at_call_position = !self.after_text;
        let next = rest.char_indices().find(|(_, c)| {
            *c == '<' || *c == '{' || (*c == '[' && at_call_position && self.dialect.pythonic_lists)
        });
        let Some((offset, c)) = next else {
            let text = rest.to_string();
            self.pos = self.buf.len();
            self.emit_text(&text, events);
            return false;
        };
        if offset > 0 {
            let text = rest[..offset].to_string();
            self.pos += offset;
            self.emit_text(&text, events);
            // The call position may have changed; look again.
            return true;
        }
        let waiting =
            |pending: &mut Pending| pending.at == self.pos && pending.still_waiting(&self.buf);
        if !last && self.pending.as_mut().is_some_and(waiting) {
            return false;
        }
        #[cfg(test)]
        {
            self.tries += 1;
        }
        let attempt = match c {
            '<' => self.special(last),
            '{' => self.json_call(last),
            _ => self.call_list(last),
        };
        if !matches!(attempt, Attempt::Wait(_)) {
            self.pending = None;
        }
        match attempt {
            Attempt::Wait(awaits) if !last => {
                let known = |p: &Pending| p.at == self.pos && p.awaits == awaits;
                if !self.pending.as_ref().is_some_and(known) {
                    let mut pending = Pending::new(self.pos, awaits);
                    pending.still_waiting(&self.buf);
                    self.pending = Some(pending);
                }
                false
            }
            Attempt::Wait(_) => {
                // The turn ended inside something unfinished that was not a call: it is text.
                let text = self.buf[self.pos..].to_string();
                self.pos = self.buf.len();
                self.emit_text(&text, events);
                false
            }
            Attempt::Consumed(produced, end) => {
                self.pos = end;
                if produced
                    .iter()
                    .any(|e| matches!(e, ParseEvent::ToolCall(_) | ParseEvent::Error(_)))
                {
                    self.held_ws.clear();
                    self.after_text = false;
                    self.after_call = true;
                }
                events.extend(produced);
                true
            }
            Attempt::Text(end) => {
                let text = self.buf[self.pos..end].to_string();
                self.pos = end;
                self.emit_text(&text, events);
                true
            }
            Attempt::Malformed(error) => {
                events.push(ParseEvent::Error(error));
                self.held_ws.clear();
                self.mode = Mode::Skip;
                true
            }
        }
    }

    /// Emits text, holding back trailing whitespace (dropped if a call or the end follows).
    fn emit_text(&mut self, text: &str, events: &mut Vec<ParseEvent>) {
        let text = if self.after_call {
            text.trim_start_matches(|c: char| c.is_whitespace() || c == ';' || c == ',')
        } else {
            text
        };
        let body = text.trim_end();
        let trailing = &text[body.len()..];
        if body.is_empty() {
            if self.after_text {
                self.held_ws.push_str(trailing);
            }
            return;
        }
        let mut out = std::mem::take(&mut self.held_ws);
        out.push_str(if self.after_text {
            body
        } else {
            body.trim_start()
        });
        self.held_ws = trailing.to_string();
        self.after_text = true;
        self.after_call = false;
        if !out.is_empty() {
            events.push(ParseEvent::Text(out));
        }
    }

    /// Where a stop token that has only partly arrived could start.
    fn tail_start(&self) -> usize {
        let mut at = self.buf.len().saturating_sub(32);
        while !self.buf.is_char_boundary(at) {
            at -= 1;
        }
        at
    }

    fn find_stop(&self, from: usize) -> Option<(usize, usize, StopKind)> {
        self.dialect
            .specials
            .iter()
            .filter_map(|(text, special)| match special {
                Special::Stop(kind) => self.buf[from..]
                    .find(text)
                    .map(|at| (from + at, text.len(), *kind)),
                _ => None,
            })
            .min_by_key(|(at, _, _)| *at)
    }

    fn special(&mut self, last: bool) -> Attempt {
        let rest = &self.buf[self.pos..];
        for (text, special) in self.dialect.specials {
            if rest.starts_with(text) {
                let after = self.pos + text.len();
                return match special {
                    Special::Stop(kind) => {
                        self.mode = Mode::Done;
                        Attempt::Consumed(vec![ParseEvent::Stop(*kind)], after)
                    }
                    Special::PythonTag => {
                        self.held_ws.clear();
                        self.mode = Mode::PythonBlock { start: after };
                        Attempt::Consumed(Vec::new(), after)
                    }
                    Special::FunctionTag => function_tag(&self.buf, self.pos, &self.tools, last),
                    Special::ToolCallTag => self.tool_call_tag(after, last),
                };
            }
        }
        if !last
            && self
                .dialect
                .specials
                .iter()
                .any(|(text, _)| text.starts_with(rest))
        {
            return Attempt::Wait(Await::Retry);
        }
        Attempt::Text(self.pos + 1)
    }

    fn json_call(&self, last: bool) -> Attempt {
        let at_call_position = !self.after_text;
        match literal::parse_value(&self.buf, self.pos) {
            Err(LiteralError::Incomplete) if !last => Attempt::Wait(Await::Literal {
                start: self.pos,
                list: false,
                close: None,
            }),
            Err(error) => {
                let text = &self.buf[self.pos..];
                if at_call_position && looks_like_call_object(text) {
                    Attempt::Malformed(malformed_at(&error, &self.buf, self.pos))
                } else {
                    Attempt::Text(self.pos + 1)
                }
            }
            Ok((value, end)) => {
                let text = &self.buf[self.pos..end];
                let known = |name: &str| {
                    if at_call_position {
                        self.tools.knows(name)
                    } else {
                        self.tools.knows_exactly(name)
                    }
                };
                match call_from_object(&value) {
                    Some(Ok(call)) if known(&call.name) => {
                        Attempt::Consumed(vec![ParseEvent::ToolCall(call)], end)
                    }
                    Some(Ok(call)) if at_call_position => {
                        Attempt::Consumed(vec![unknown(&call.name, text)], end)
                    }
                    Some(Err(kind)) if at_call_position => {
                        Attempt::Consumed(vec![ParseEvent::Error(ParseError::new(kind, text))], end)
                    }
                    _ => Attempt::Text(end),
                }
            }
        }
    }

    fn call_list(&self, last: bool) -> Attempt {
        match call_list(&self.buf, self.pos, &self.tools, false) {
            Err(LiteralError::Incomplete) if !last => Attempt::Wait(Await::Literal {
                start: self.pos,
                list: true,
                close: None,
            }),
            Err(_) => Attempt::Text(self.pos + 1),
            Ok((events, end)) if events.is_empty() => Attempt::Text(end),
            Ok((events, end)) => Attempt::Consumed(events, end),
        }
    }

    fn tool_call_tag(&self, after: usize, last: bool) -> Attempt {
        let awaits = Await::Literal {
            start: after,
            list: false,
            close: Some(TOOL_CALL_CLOSE),
        };
        match literal::parse_value(&self.buf, after) {
            Err(LiteralError::Incomplete) if !last => Attempt::Wait(awaits),
            Err(error) => Attempt::Malformed(malformed_at(&error, &self.buf, self.pos)),
            Ok((value, end)) => {
                let Some(end) = close_tag(&self.buf, end, TOOL_CALL_CLOSE.tag, last) else {
                    return Attempt::Wait(awaits);
                };
                let text = &self.buf[self.pos..end];
                let event = match call_from_object(&value) {
                    Some(Ok(call)) if self.tools.knows(&call.name) => ParseEvent::ToolCall(call),
                    Some(Ok(call)) => unknown(&call.name, text),
                    Some(Err(kind)) => ParseEvent::Error(ParseError::new(kind, text)),
                    None => ParseEvent::Error(ParseError::new(
                        ParseErrorKind::MalformedCall {
                            reason: "expected {\"name\": …, \"arguments\": {…}}".into(),
                        },
                        text,
                    )),
                };
                Attempt::Consumed(vec![event], end)
            }
        }
    }
}

impl StreamParser for Scanner {
    fn push(&mut self, piece: &str) -> Vec<ParseEvent> {
        if self.mode == Mode::Done {
            return Vec::new();
        }
        self.buf.push_str(piece);
        self.advance(false)
    }

    fn finish(&mut self) -> Vec<ParseEvent> {
        let events = self.advance(true);
        self.mode = Mode::Done;
        self.held_ws.clear();
        events
    }
}

/// Skips whitespace and an optional closing tag after a call; `None` while a partial closing tag
/// may still complete.
fn close_tag(buf: &str, end: usize, tag: &str, last: bool) -> Option<usize> {
    let rest = &buf[end..];
    let trimmed = rest.trim_start();
    let ws = rest.len() - trimmed.len();
    if trimmed.starts_with(tag) {
        return Some(end + ws + tag.len());
    }
    if !last && tag.starts_with(trimmed) {
        return None;
    }
    Some(end)
}

/// `<function=NAME>{…}</function>` at `pos`.
fn function_tag(buf: &str, pos: usize, tools: &ToolSet, last: bool) -> Attempt {
    let name_start = pos + "<function=".len();
    // The name runs to `>`; it is short and has no `<` or line break, decided char by char so
    // the outcome does not depend on how the text was streamed.
    let mut close = None;
    for (i, c) in buf[name_start..].char_indices() {
        if c == '>' {
            close = Some(i);
            break;
        }
        if c == '<' || c == '\n' || i >= 128 {
            return Attempt::Malformed(ParseError::new(
                ParseErrorKind::MalformedCall {
                    reason: "`<function=` must be followed by a name and `>`".into(),
                },
                &buf[pos..name_start + i],
            ));
        }
    }
    let Some(close) = close else {
        if last {
            return Attempt::Malformed(ParseError::new(
                ParseErrorKind::MalformedCall {
                    reason: "`<function=` must be followed by a name and `>`".into(),
                },
                &buf[pos..],
            ));
        }
        return Attempt::Wait(Await::Retry);
    };
    let name = buf[name_start..name_start + close].trim().to_string();
    let awaits = Await::Literal {
        start: name_start + close + 1,
        list: false,
        close: Some(FUNCTION_CLOSE),
    };
    match literal::parse_value(buf, name_start + close + 1) {
        Err(LiteralError::Incomplete) if !last => Attempt::Wait(awaits),
        Err(error) => Attempt::Malformed(malformed_at(&error, buf, pos)),
        Ok((Value::Object(args), end)) => {
            let Some(end) = close_tag(buf, end, FUNCTION_CLOSE.tag, last) else {
                return Attempt::Wait(awaits);
            };
            let event = if tools.knows(&name) {
                ParseEvent::ToolCall(ToolCall::new(name, Value::Object(args)))
            } else {
                unknown(&name, &buf[pos..end])
            };
            Attempt::Consumed(vec![event], end)
        }
        Ok((_, end)) => Attempt::Malformed(ParseError::new(
            ParseErrorKind::MalformedCall {
                reason: format!("the arguments of `{name}` must be a JSON object"),
            },
            &buf[pos..end],
        )),
    }
}

/// A list of calls at `pos`: pythonic `[f(a=1), g()]` or JSON `[{"name": …}, …]`. With `strict`
/// (the body of `<|python_tag|>`), bare pythonic names must be exactly known. Empty events mean
/// "a list, but not of calls".
fn call_list(
    buf: &str,
    pos: usize,
    tools: &ToolSet,
    strict: bool,
) -> Result<(Vec<ParseEvent>, usize), LiteralError> {
    let pythonic = (|| {
        let mut calls = Vec::new();
        let mut at = pos + 1;
        loop {
            let rest = &buf[at..];
            let trimmed = rest.trim_start();
            at += rest.len() - trimmed.len();
            if trimmed.starts_with(']') && !calls.is_empty() {
                return Ok((calls, at + 1));
            }
            let (call, end) = literal::parse_call(buf, at)?;
            calls.push((call, &buf[at..end]));
            let rest = &buf[end..];
            let trimmed = rest.trim_start();
            at = end + rest.len() - trimmed.len();
            match trimmed.chars().next() {
                Some(',') => at += 1,
                Some(']') => {}
                None => return Err(LiteralError::Incomplete),
                Some(_) => {
                    return Err(LiteralError::Invalid {
                        offset: at,
                        reason: "expected `,` or `]`".into(),
                    })
                }
            }
        }
    })();
    match pythonic {
        Ok((calls, end)) => {
            let events = calls
                .into_iter()
                .map(|(call, text)| pythonic_event(call, text, tools, strict))
                .collect();
            Ok((events, end))
        }
        Err(LiteralError::Incomplete) => Err(LiteralError::Incomplete),
        Err(_) => {
            let (value, end) = literal::parse_value(buf, pos)?;
            let items = value.as_array().cloned().unwrap_or_default();
            let calls: Option<Vec<ToolCall>> = items
                .iter()
                .map(|item| call_from_object(item).and_then(Result::ok))
                .collect();
            let events = match calls {
                Some(calls) if !calls.is_empty() => calls
                    .into_iter()
                    .map(|call| {
                        if tools.knows(&call.name) {
                            ParseEvent::ToolCall(call)
                        } else {
                            unknown(&call.name, &buf[pos..end])
                        }
                    })
                    .collect(),
                _ => Vec::new(),
            };
            Ok((events, end))
        }
    }
}

/// A pythonic call as an event. `.call` suffixes name builtin tools; positional arguments are
/// named from the tool's schema order.
fn pythonic_event(call: PyCall, text: &str, tools: &ToolSet, exact: bool) -> ParseEvent {
    let (name, dotted_call) = match call.name.strip_suffix(".call") {
        Some(base) => (base.to_string(), true),
        None => (call.name.clone(), false),
    };
    let known = if exact && !dotted_call {
        tools.knows_exactly(&name)
    } else {
        tools.knows(&name)
    };
    if !known {
        return unknown(&name, text);
    }
    let mut arguments = Map::new();
    if !call.positional.is_empty() {
        match tools.parameter_names(&name) {
            Some(params) if params.len() >= call.positional.len() => {
                for (param, value) in params.into_iter().zip(call.positional) {
                    arguments.insert(param, value);
                }
            }
            _ => {
                return ParseEvent::Error(ParseError::new(
                    ParseErrorKind::PositionalArguments { name },
                    text,
                ))
            }
        }
    }
    arguments.extend(call.keywords);
    ParseEvent::ToolCall(ToolCall::new(name, Value::Object(arguments)))
}

/// The body after `<|python_tag|>`: calls (JSON, builtin `.call(…)`, pythonic, `<function=…>`,
/// separated by `;`, `,` or newlines), or else code for the interpreter.
fn python_block(block: &str, tools: &ToolSet) -> Vec<ParseEvent> {
    let joined = block.replace(PYTHON_TAG, "\n");
    let parsed = block_calls(&joined, tools);
    let code_ok = tools.has_code_interpreter() || tools.is_permissive();
    match parsed {
        Ok(events)
            if !events.is_empty()
                && events.iter().all(|e| matches!(e, ParseEvent::ToolCall(_))) =>
        {
            events
        }
        _ if code_ok && !block.trim().is_empty() => vec![ParseEvent::ToolCall(ToolCall::new(
            "code_interpreter",
            serde_json::json!({ "code": block }),
        ))],
        Ok(events) if !events.is_empty() => events,
        Ok(_) => vec![ParseEvent::Error(ParseError::new(
            ParseErrorKind::MalformedCall {
                reason: "nothing after <|python_tag|>".into(),
            },
            block,
        ))],
        Err(error) if looks_like_call(block.trim_start(), tools) => {
            vec![ParseEvent::Error(error)]
        }
        Err(_) => vec![unknown("code_interpreter", block)],
    }
}

fn block_calls(block: &str, tools: &ToolSet) -> Result<Vec<ParseEvent>, ParseError> {
    let mut events = Vec::new();
    let mut at = 0;
    loop {
        let rest = &block[at..];
        let trimmed = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ';' || c == ',');
        at += rest.len() - trimmed.len();
        if trimmed.is_empty() {
            return Ok(events);
        }
        let fail = |error: &LiteralError| malformed_at(error, block, at);
        let end = if trimmed.starts_with('{') {
            let (value, end) = literal::parse_value(block, at).map_err(|e| fail(&e))?;
            let text = &block[at..end];
            events.push(match call_from_object(&value) {
                Some(Ok(call)) if tools.knows(&call.name) => ParseEvent::ToolCall(call),
                Some(Ok(call)) => unknown(&call.name, text),
                Some(Err(kind)) => ParseEvent::Error(ParseError::new(kind, text)),
                None => return Err(not_a_call(text)),
            });
            end
        } else if trimmed.starts_with('[') {
            let (list, end) = call_list(block, at, tools, true).map_err(|e| fail(&e))?;
            if list.is_empty() {
                return Err(not_a_call(&block[at..end]));
            }
            events.extend(list);
            end
        } else if trimmed.starts_with("<function=") {
            match function_tag(block, at, tools, true) {
                Attempt::Consumed(list, end) => {
                    events.extend(list);
                    end
                }
                Attempt::Malformed(error) => return Err(error),
                _ => return Err(not_a_call(trimmed)),
            }
        } else {
            let (call, end) = literal::parse_call(block, at).map_err(|e| fail(&e))?;
            events.push(pythonic_event(call, &block[at..end], tools, true));
            end
        };
        at = end;
    }
}

/// A JSON object as a call: `{"name", "parameters"|"arguments"}`, optionally with
/// `"type": "function"`, or OpenAI's `{"type": "function", "function": {…}}`. `None` when it is
/// not call-shaped; `Some(Err)` when it is but its arguments are unusable.
pub(crate) fn call_from_object(value: &Value) -> Option<Result<ToolCall, ParseErrorKind>> {
    let object = value.as_object()?;
    if let (Some(inner @ Value::Object(_)), None) = (object.get("function"), object.get("name")) {
        return call_from_object(inner);
    }
    let name = object.get("name")?.as_str()?.to_string();
    let args = object.get("parameters").or_else(|| object.get("arguments"));
    let arguments = match args {
        None if object.keys().all(|k| k == "name" || k == "type") => Value::Object(Map::new()),
        None => return None,
        Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::Object(map)) => Value::Object(map.clone()),
        Some(Value::String(text)) => match literal::parse_value(&format!("{text} "), 0) {
            Ok((Value::Object(map), _)) => Value::Object(map),
            _ => {
                return Some(Err(ParseErrorKind::MalformedCall {
                    reason: format!("the arguments of `{name}` must be a JSON object"),
                }))
            }
        },
        Some(_) => {
            return Some(Err(ParseErrorKind::MalformedCall {
                reason: format!("the arguments of `{name}` must be a JSON object"),
            }))
        }
    };
    Some(Ok(ToolCall::new(name, arguments)))
}

fn looks_like_call_object(text: &str) -> bool {
    let head: String = text
        .chars()
        .take(40)
        .filter(|c| !c.is_whitespace())
        .collect();
    ["{\"name\"", "{'name'", "{\"type\"", "{\"function\""]
        .iter()
        .any(|start| head.starts_with(start))
}

fn looks_like_call(text: &str, tools: &ToolSet) -> bool {
    if text.starts_with('{') || text.starts_with('[') || text.starts_with("<function=") {
        return true;
    }
    literal::parse_dotted_name(text, 0)
        .is_some_and(|(name, _)| name.ends_with(".call") || tools.knows_exactly(&name))
}

fn unknown(name: &str, text: &str) -> ParseEvent {
    ParseEvent::Error(ParseError::new(
        ParseErrorKind::UnknownTool {
            name: name.to_string(),
        },
        text,
    ))
}

fn not_a_call(text: &str) -> ParseError {
    ParseError::new(
        ParseErrorKind::MalformedCall {
            reason: "expected a tool call".into(),
        },
        text,
    )
}

/// A malformed-call error quoting `text` (which starts at byte `start` of the parsed source) up
/// to the point of failure, so the quote does not depend on how much input had arrived.
fn malformed_at(error: &LiteralError, source: &str, start: usize) -> ParseError {
    let (reason, end) = match error {
        LiteralError::Incomplete => (
            "the call ends before it is complete".to_string(),
            source.len(),
        ),
        LiteralError::Invalid { reason, offset } => {
            let next = source[*offset..].chars().next().map_or(0, char::len_utf8);
            (reason.clone(), offset + next)
        }
    };
    ParseError::new(
        ParseErrorKind::MalformedCall { reason },
        &source[start..end.max(start)],
    )
}
