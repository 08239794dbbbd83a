//! The scanner's cost: a call is read once however it is streamed, and the probe that decides
//! when to read a list of calls agrees with the reader.

use serde_json::json;

use super::{call_list, Scanner};
use crate::format::{ParsedMessage, StreamParser};
use crate::literal::probe::tests::{agrees_on_every_prefix, expected, literal_text, runner};
use crate::literal::Probe;
use crate::types::{ToolCall, ToolSet, ToolSpec};
use crate::{hermes, llama31};

fn tools() -> ToolSet {
    let spec = ToolSpec::new("write", "", json!({"type": "object", "properties": {}}));
    ToolSet::new(&[spec], &[])
}

/// Streams `text` in pieces of `size` bytes; returns the message and how often a call was tried.
fn stream(scanner: &mut Scanner, text: &str, size: usize) -> (ParsedMessage, usize) {
    let mut message = ParsedMessage::default();
    for piece in text.as_bytes().chunks(size) {
        let piece = std::str::from_utf8(piece).expect("ASCII test input");
        scanner
            .push(piece)
            .into_iter()
            .for_each(|e| message.apply(e));
    }
    scanner.finish().into_iter().for_each(|e| message.apply(e));
    (message, scanner.tries)
}

/// A call of `write` with an argument of `len` bytes, in each syntax that waits for a literal.
fn calls(len: usize) -> Vec<(&'static str, &'static super::Dialect, String)> {
    let arg = format!(
        r#"{{"content": "{}", "list": [1, 2.5, true]}}"#,
        "x".repeat(len)
    );
    vec![
        (
            "json",
            &llama31::parse::DIALECT,
            format!(r#"{{"name": "write", "parameters": {arg}}}<|eom_id|>"#),
        ),
        (
            "function tag",
            &llama31::parse::DIALECT,
            format!("<function=write>{arg}  </function><|eom_id|>"),
        ),
        (
            "pythonic list",
            &llama31::parse::DIALECT,
            format!(r#"[write(content="{}")]<|eom_id|>"#, "x".repeat(len)),
        ),
        (
            "hermes",
            &hermes::DIALECT,
            format!("<tool_call>\n{{\"name\": \"write\", \"arguments\": {arg}}}\n</tool_call><|im_end|>"),
        ),
    ]
}

/// The number of tries does not grow with the argument: each byte of the literal is looked at
/// by the probe once, and the literal is read in full once more when it is complete. (The two
/// lengths differ by a multiple of the piece size, so the pieces end at the same places.)
#[test]
fn a_call_is_tried_as_often_whatever_its_length() {
    for size in [1, 16] {
        let short = calls(10);
        let long = calls(10 + 64 * 1024);
        for ((label, dialect, short), (_, _, long)) in short.iter().zip(&long) {
            let mut scanner = Scanner::new(dialect, tools());
            let (message, short_tries) = stream(&mut scanner, short, size);
            assert_eq!(message.tool_calls.len(), 1, "{label}: {message:?}");
            let mut scanner = Scanner::new(dialect, tools());
            let (message, long_tries) = stream(&mut scanner, long, size);
            assert_eq!(message.tool_calls.len(), 1, "{label}");
            assert!(message.errors.is_empty() && message.content.is_empty());
            assert_eq!(long_tries, short_tries, "{label} in {size}-byte pieces");
        }
    }
}

/// In 1-byte pieces a bare JSON call is tried exactly twice: when `{` arrives and when the
/// last `}` completes it; then each byte of `<|eom_id|>` once.
#[test]
fn a_json_call_is_read_twice() {
    let text = format!(
        r#"{{"name": "write", "parameters": {{"c": "{}"}}}}<|eom_id|>"#,
        "y".repeat(4096)
    );
    let mut scanner = Scanner::new(&llama31::parse::DIALECT, tools());
    let (message, tries) = stream(&mut scanner, &text, 1);
    assert_eq!(
        message.tool_calls,
        vec![ToolCall::new("write", json!({"c": "y".repeat(4096)}))]
    );
    assert_eq!(tries, 2 + "<|eom_id|>".len());
}

#[test]
fn the_list_probe_says_what_call_list_says_on_every_prefix() {
    let strategy = (literal_text(), "[ ab]{0,3}");
    let tools = ToolSet::permissive();
    runner()
        .run(&strategy, |(text, lead)| {
            let src = format!("{lead}[{text}");
            let reader = |prefix: &str| {
                let outcome = call_list(prefix, lead.len(), &tools, false);
                expected(outcome.map(|(_, end)| (false, end)))
            };
            agrees_on_every_prefix(Probe::call_list(lead.len()), &src, lead.len(), reader)
        })
        .unwrap();
}
