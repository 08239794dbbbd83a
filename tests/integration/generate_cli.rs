//! `corral generate` on the real default model: what it prints is what the engine generates,
//! and `--stop` escapes mean what the README says.

use corral::engine::{self, generate_to_string, EngineOptions, GenerateRequest, Sampling};
use corral_tests::{default_model, run_corral};
use serde_json::Value;

use crate::engine::ONE_AT_A_TIME;

/// A prompt the default model continues with a short line and then a newline.
const LIST_PROMPT: &str = "Shopping list:\n1. Apples\n2. Bread\n3.";

/// `corral generate PROMPT` greedy on one thread with a 2048-token context, plus `extra` flags;
/// returns (stdout, the `--stats` line).
fn generate(prompt: &str, extra: &[&str]) -> (String, Value) {
    let model = default_model();
    let mut args = vec![
        "generate",
        prompt,
        "--temperature",
        "0",
        "--threads",
        "1",
        "--ctx",
        "2048",
        "--stats",
        "--model",
        model.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = run_corral(&args, &[]);
    assert_eq!(code, 0, "{stderr}");
    let stats = stderr
        .lines()
        .find_map(|line| serde_json::from_str::<Value>(line).ok())
        .unwrap_or_else(|| panic!("no --stats line in {stderr}"));
    (stdout, stats)
}

#[test]
fn generate_prints_what_the_engine_generates() {
    // The same model, options and request through the library: the CLI adds one newline.
    let expected = {
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let options = EngineOptions {
            context_tokens: Some(2048),
            threads: 1,
            ..EngineOptions::default()
        };
        let mut backend = engine::llama::load(&default_model(), &options).unwrap();
        let request = GenerateRequest {
            prompt: "Once upon a time".into(),
            max_tokens: Some(8),
            sampling: Sampling::greedy(),
            ..GenerateRequest::default()
        };
        generate_to_string(backend.as_mut(), &request).unwrap()
    };
    let (stdout, stats) = generate("Once upon a time", &["--max-tokens", "8"]);
    assert_eq!(stdout, format!("{}\n", expected.text));
    assert_eq!(stats["generated_tokens"], 8);
    assert_eq!(stats["prompt_tokens"], expected.prompt_tokens);
    assert_eq!(stats["reused_tokens"], 0);
    assert_eq!(stats["stop"], "MaxTokens");
}

#[test]
fn stop_with_an_escaped_newline_ends_generation_at_the_first_newline() {
    let (free, free_stats) = generate(LIST_PROMPT, &["--max-tokens", "24"]);
    let free = free
        .strip_suffix('\n')
        .expect("generate ends with a newline");
    let line_end = free
        .find('\n')
        .unwrap_or_else(|| panic!("the model writes no newline in 24 tokens: {free:?}"));
    assert_eq!(free_stats["stop"], "MaxTokens", "{free:?}");

    // `\n` as a shell passes it from "\n": a backslash and an `n`.
    let (stopped, stats) = generate(LIST_PROMPT, &["--max-tokens", "24", "--stop", r"\n"]);
    assert_eq!(stopped, format!("{}\n", &free[..line_end]));
    assert_eq!(stats["stop"], r#"StopString("\n")"#);

    // `\\n` is a backslash and an `n`, which this output never contains.
    let (literal, stats) = generate(LIST_PROMPT, &["--max-tokens", "24", "--stop", r"\\n"]);
    assert_eq!(literal, format!("{free}\n"));
    assert_eq!(stats["stop"], "MaxTokens");
}
