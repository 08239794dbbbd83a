//! Fuzzing the streaming parsers with proptest: adversarial model output built from the pieces
//! that matter (special tokens, brackets, quotes, escapes, names, numbers, non-ASCII) plus raw
//! arbitrary text, cut into arbitrary stream pieces. Properties: no panic, and feeding the text in
//! pieces gives exactly what parsing it whole gives.
//!
//! Executions per dialect: `CORRAL_FUZZ_CASES` (default 20000).

use std::sync::atomic::{AtomicUsize, Ordering};

use corral_prompts::hermes::Hermes;
use corral_prompts::llama31::{Llama31, Style};
use corral_prompts::{parse_all, BuiltinTool, Format, ParsedMessage, ToolSet, ToolSpec};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

fn cases() -> u32 {
    std::env::var("CORRAL_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000)
}

const PIECES: &[&str] = &[
    "<|python_tag|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|",
    "<function=",
    "</function>",
    ">",
    "<tool_call>",
    "</tool_call>",
    "<|im_end|>",
    "<",
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
    ";",
    "=",
    ".",
    "\\",
    "\\u",
    "\\ud83d",
    "\\x4",
    "d83d",
    "\"name\"",
    "\"parameters\"",
    "\"arguments\"",
    "\"type\": \"function\"",
    "\"function\"",
    "get_weather",
    "math.factorial",
    "brave_search",
    ".call",
    "code_interpreter",
    "unknown_tool",
    "query=",
    "True",
    "None",
    "null",
    "false",
    "1",
    "-",
    "2.5e",
    "1e999",
    "0x",
    " ",
    "\n",
    "\t",
    "é",
    "日本",
    "😀",
    "\u{0}",
    "\u{1c}",
    "ß",
];

fn model_output() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        8 => prop::sample::select(PIECES).prop_map(str::to_string),
        1 => any::<String>(),
        1 => "[a-z{}\\[\\]\"':,() ]{0,12}",
    ];
    prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

/// Cut points as fractions of the text, mapped to char boundaries.
fn split(text: &str, cuts: &[usize]) -> Vec<String> {
    let boundaries: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect();
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| boundaries[c % boundaries.len()])
        .collect();
    points.push(0);
    points.push(text.len());
    points.sort_unstable();
    points.dedup();
    points
        .windows(2)
        .map(|w| text[w[0]..w[1]].to_string())
        .collect()
}

fn fuzz(format: &dyn Format, label: &str) {
    let tools = ToolSet::new(
        &[
            ToolSpec::new(
                "get_weather",
                "",
                json!({"type": "object", "properties": {"city": {}}}),
            ),
            ToolSpec::new(
                "math.factorial",
                "",
                json!({"type": "object", "properties": {"n": {}}}),
            ),
        ],
        &BuiltinTool::ALL,
    );
    let executions = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        model_output(),
        prop::collection::vec(any::<usize>(), 0..12),
        any::<bool>(),
    );
    runner
        .run(&strategy, |(text, cuts, permissive)| {
            let tools = if permissive {
                ToolSet::permissive()
            } else {
                tools.clone()
            };
            let whole = parse_all(format.parser(tools.clone()), &text);
            let mut parser = format.parser(tools);
            let mut streamed = ParsedMessage::default();
            for piece in split(&text, &cuts) {
                parser
                    .push(&piece)
                    .into_iter()
                    .for_each(|e| streamed.apply(e));
            }
            parser.finish().into_iter().for_each(|e| streamed.apply(e));
            prop_assert_eq!(&streamed, &whole, "streamed parse differs for {:?}", text);
            executions.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    let n = executions.into_inner();
    eprintln!("{label}: {n} fuzz executions, zero panics, streamed == whole");
    assert!(n >= cases() as usize);
}

#[test]
fn llama31_parser_never_panics_and_streams_consistently() {
    fuzz(&Llama31::new(Style::Template), "llama31");
}

#[test]
fn hermes_parser_never_panics_and_streams_consistently() {
    let hermes = Hermes::new("{{ messages }}", "", "<|im_end|>").unwrap();
    fuzz(&hermes, "hermes");
}
