//! `corral prompt render|parse|tokens`: the stable, scriptable CLI over the prompt formats.

use std::io::Write;
use std::process::{Command, Stdio};

use corral_tests::{corral_bin, fixture};
use serde_json::{json, Value};

/// Runs corral with `input` on stdin; returns (exit code, stdout, stderr).
fn corral(args: &[&str], input: &str) -> (i32, String, String) {
    let mut child = Command::new(corral_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn corral");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .expect("write stdin");
    let output = child.wait_with_output().expect("corral runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn assert_usage_error((code, stdout, stderr): (i32, String, String), needle: &str) {
    assert_eq!(code, 2, "stderr: {stderr}");
    assert!(stdout.is_empty(), "stdout: {stdout}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "one error line expected: {stderr}");
    assert!(errors[0].contains(needle), "expected {needle:?} in {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn render_writes_the_exact_prompt_without_a_trailing_newline() {
    let input = json!({
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Météo à Zürich ?"}
        ],
        "date": "21 Sep 2024"
    });
    let (code, stdout, stderr) = corral(&["prompt", "render"], &input.to_string());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 21 Sep 2024\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nMétéo à Zürich ?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    );
}

#[test]
fn render_accepts_openai_tool_calls_and_results() {
    let input = json!({
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
            {"role": "tool", "content": {"temp_c": 3}}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "date": "21 Sep 2024",
        "add_generation_prompt": false
    });
    let (code, stdout, stderr) = corral(&["prompt", "render"], &input.to_string());
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.ends_with("<|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}<|eot_id|><|start_header_id|>ipython<|end_header_id|>\n\n{\"temp_c\": 3}<|eot_id|>"), "{stdout}");
    assert!(stdout.contains("\"name\": \"get_weather\",\n        \"description\": \"Weather\""), "{stdout}");
}

#[test]
fn render_meta_style_with_function_tags() {
    let input = json!({
        "style": "meta", "tool_prompt": "function_tag", "date": null,
        "messages": [{"role": "user", "content": "Songs?"}],
        "tools": [{"name": "trending_songs", "description": "Trending songs", "parameters": {"type": "object", "properties": {"n": {"type": "integer", "description": "How many"}}, "required": ["n"]}}]
    });
    let (code, stdout, stderr) = corral(&["prompt", "render"], &input.to_string());
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nYou have access to the following functions:\n\nUse the function 'trending_songs' to 'Trending songs':\n{\"name\": \"trending_songs\", \"description\": \"Trending songs\", \"parameters\": {\"n\": {\"description\": \"How many\", \"param_type\": \"int\", \"required\": true}}}"), "{stdout}");
}

#[test]
fn render_rejects_bad_input_with_exit_code_2() {
    assert_usage_error(corral(&["prompt", "render"], "{not json"), "not valid JSON");
    assert_usage_error(
        corral(&["prompt", "render"], r#"{"messages": [{"role": "wizard", "content": "x"}]}"#),
        "unknown role",
    );
    assert_usage_error(
        corral(
            &["prompt", "render"],
            r#"{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [{"type": "function", "function": {"arguments": {}}}]}]}"#,
        ),
        "names no function",
    );
    assert_usage_error(
        corral(&["prompt", "render"], r#"{"messages": [], "tools": []}"#),
        "first user message",
    );
}

#[test]
fn parse_reports_content_calls_stop_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let tools = dir.path().join("tools.json");
    std::fs::write(
        &tools,
        json!([
            {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
            "brave_search"
        ])
        .to_string(),
    )
    .unwrap();
    let tools = tools.to_str().unwrap();
    let (code, stdout, stderr) = corral(
        &["prompt", "parse", "--tools", tools],
        "Let me look.\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Zürich\"}}<|eom_id|>",
    );
    assert_eq!(code, 0, "{stderr}");
    let parsed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        parsed,
        json!({"content": "Let me look.", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Zürich"}}], "stop": "eom", "errors": []})
    );
    let (code, stdout, _) = corral(
        &["prompt", "parse", "--tools", tools],
        "<|python_tag|>[get_weather(city=\"Oslo\"), launch(x=1)]<|eom_id|>",
    );
    assert_eq!(code, 0);
    let parsed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(parsed["tool_calls"], json!([{"name": "get_weather", "arguments": {"city": "Oslo"}}]));
    assert_eq!(parsed["errors"][0]["kind"], "unknown_tool");
    assert_eq!(parsed["errors"][0]["name"], "launch");
    assert!(parsed["errors"][0]["message"].as_str().unwrap().contains("unknown tool `launch`"));
    let (_, stdout, _) = corral(&["prompt", "parse"], "Just text.<|eot_id|>");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap(),
        json!({"content": "Just text.", "tool_calls": [], "stop": "eot", "errors": []})
    );
    assert_usage_error(corral(&["prompt", "parse", "--tools", "/no/such/tools.json"], ""), "cannot read tools file");
}

#[test]
fn tokens_parses_special_tokens_with_a_vocab_only_gguf() {
    let vocab = fixture("ggml-vocab-llama-bpe.gguf");
    let (code, stdout, stderr) = corral(
        &["prompt", "tokens", "--model", vocab.to_str().unwrap()],
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    );
    assert_eq!(code, 0, "{stderr}");
    let ids: Vec<i64> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(&ids[..2], &[128000, 128006], "{ids:?}");
    assert_eq!(ids.last(), Some(&128009), "{ids:?}");
    assert!(ids.contains(&128007), "{ids:?}");
    assert_usage_error(corral(&["prompt", "tokens"], "x"), "needs --model");
}
