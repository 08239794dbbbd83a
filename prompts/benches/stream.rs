//! Streaming-parser figures: the time to feed one large tool call to the parser piece by piece,
//! the way the engine feeds it, in 1-byte and 16-byte pieces. A plain `harness = false` bench
//! that prints a table:
//!
//! ```text
//! cargo bench -p corral-prompts --bench stream
//! ```
//!
//! Each call carries one argument of `CORRAL_BENCH_KIB` KiB (default 256, the agent's cap on a
//! call's arguments) in several shapes: a plain string, a string dense with escapes, and a nested
//! array, written as a bare JSON call, a `<function=…>` call and a Hermes `<tool_call>`. Every
//! run checks that the parser returned exactly the call that was fed. Arguments after `--` keep
//! only the rows whose label (`json string 1`) contains one of them.

use std::time::{Duration, Instant};

use corral_prompts::hermes::Hermes;
use corral_prompts::llama31::{Llama31, Style};
use corral_prompts::{Format, ParsedMessage, ToolCall, ToolSet, ToolSpec};
use serde_json::{json, Value};

const PIECE_SIZES: [usize; 2] = [1, 16];

fn kib() -> usize {
    std::env::var("CORRAL_BENCH_KIB")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256)
}

/// An argument value whose JSON text is about `bytes` long.
fn argument(shape: &str, bytes: usize) -> Value {
    match shape {
        "string" => json!("lorem ipsum dolor sit amet ".repeat(bytes / 27 + 1)[..bytes]),
        "escaped string" => {
            // Quotes, backslashes, line breaks and a control character (written `\u0001`).
            let unit = "line \"quoted\" \\ é\u{1}\n";
            let unit_len = serde_json::to_string(unit).unwrap().len() - 2;
            json!(unit.repeat(bytes / unit_len + 1))
        }
        "nested array" => json!((0..bytes / 30)
            .map(|i| json!({"n": i, "x": [1.5, true, null]}))
            .collect::<Vec<_>>()),
        _ => unreachable!("unknown shape {shape}"),
    }
}

/// The text of a call of `write` with `arguments`, in one of the call syntaxes.
fn call_text(syntax: &str, arguments: &Value) -> String {
    let arguments = serde_json::to_string(arguments).unwrap();
    match syntax {
        "json" => format!(r#"{{"name": "write", "parameters": {arguments}}}<|eom_id|>"#),
        "function tag" => format!("<function=write>{arguments}</function><|eom_id|>"),
        "hermes" => format!(
            "<tool_call>\n{{\"name\": \"write\", \"arguments\": {arguments}}}\n</tool_call><|im_end|>"
        ),
        _ => unreachable!("unknown syntax {syntax}"),
    }
}

/// Splits `text` into pieces of at most `size` bytes, on char boundaries.
fn pieces(text: &str, size: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + size).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        out.push(&text[start..end]);
        start = end;
    }
    out
}

fn feed(format: &dyn Format, tools: &ToolSet, pieces: &[&str]) -> (ParsedMessage, Duration) {
    let started = Instant::now();
    let mut parser = format.parser(tools.clone());
    let mut message = ParsedMessage::default();
    for piece in pieces {
        parser
            .push(piece)
            .into_iter()
            .for_each(|e| message.apply(e));
    }
    parser.finish().into_iter().for_each(|e| message.apply(e));
    (message, started.elapsed())
}

fn main() {
    let bytes = kib() * 1024;
    let tools = ToolSet::new(
        &[ToolSpec::new(
            "write",
            "",
            json!({"type": "object", "properties": {"content": {}}}),
        )],
        &[],
    );
    let llama = Llama31::new(Style::Template);
    let hermes = Hermes::new("{{ messages }}", "", "<|im_end|>").unwrap();
    println!(
        "{:<16} {:<16} {:>9} {:>7} {:>12}",
        "syntax", "argument", "bytes", "piece", "time"
    );
    let rows = [
        ("json", "string"),
        ("json", "escaped string"),
        ("json", "nested array"),
        ("function tag", "string"),
        ("hermes", "string"),
    ];
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    for (syntax, shape) in rows {
        let arguments = json!({"content": argument(shape, bytes)});
        let text = call_text(syntax, &arguments);
        let format: &dyn Format = if syntax == "hermes" { &hermes } else { &llama };
        for size in PIECE_SIZES {
            let label = format!("{syntax} {shape} {size}");
            if !filters.is_empty() && !filters.iter().any(|f| label.contains(f.as_str())) {
                continue;
            }
            let (message, took) = feed(format, &tools, &pieces(&text, size));
            assert_eq!(
                message.tool_calls,
                vec![ToolCall::new("write", arguments.clone())],
                "{syntax} / {shape}: the call did not come back intact"
            );
            assert!(message.errors.is_empty() && message.content.is_empty());
            println!(
                "{syntax:<16} {shape:<16} {:>9} {size:>7} {:>9.1} ms",
                text.len(),
                took.as_secs_f64() * 1e3
            );
        }
    }
}
