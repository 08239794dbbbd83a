//! `corral prompt render|parse|tokens`: the stable, scriptable CLI over the prompt formats.

use corral::model::gguf;
use corral_tests::{assert_one_error_line, fixture, run_corral_input};
use serde_json::{json, Value};

/// Runs corral with `input` on stdin; returns (exit code, stdout, stderr).
fn corral(args: &[&str], input: &str) -> (i32, String, String) {
    run_corral_input(args, input)
}

fn assert_usage_error(result: (i32, String, String), needle: &str) {
    assert_one_error_line(&result, 2, needle);
    assert!(result.1.is_empty(), "stdout: {}", result.1);
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
    assert!(
        stdout.contains("\"name\": \"get_weather\",\n        \"description\": \"Weather\""),
        "{stdout}"
    );
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
        corral(
            &["prompt", "render"],
            r#"{"messages": [{"role": "wizard", "content": "x"}]}"#,
        ),
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
    assert_eq!(
        parsed["tool_calls"],
        json!([{"name": "get_weather", "arguments": {"city": "Oslo"}}])
    );
    assert_eq!(parsed["errors"][0]["kind"], "unknown_tool");
    assert_eq!(parsed["errors"][0]["name"], "launch");
    assert!(parsed["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("unknown tool `launch`"));
    let (_, stdout, _) = corral(&["prompt", "parse"], "Just text.<|eot_id|>");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap(),
        json!({"content": "Just text.", "tool_calls": [], "stop": "eot", "errors": []})
    );
    assert_usage_error(
        corral(&["prompt", "parse", "--tools", "/no/such/tools.json"], ""),
        "cannot read tools file",
    );
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

/// The Llama 3.0 vocab with ids 128008 and 128010 renamed `<|eom_id|>` and `<|python_tag|>`, as
/// Llama 3.1 names them (both are control tokens already): written next to the test. The token
/// list is read, and spliced back, with corral's own GGUF reader.
fn llama31_vocab(dir: &std::path::Path) -> std::path::PathBuf {
    let source = fixture("ggml-vocab-llama-bpe.gguf");
    assert_eq!(
        gguf::inspect(&source).unwrap().tensor_count,
        0,
        "a vocab-only GGUF: no tensor data to realign after the splice"
    );
    let mut tokens = gguf::string_array(&source, "tokenizer.ggml.tokens")
        .unwrap()
        .expect("the vocab has a token list");
    for (id, name) in [(128_008, "<|eom_id|>"), (128_010, "<|python_tag|>")] {
        tokens.values[id] = name.as_bytes().to_vec();
    }
    let bytes = std::fs::read(&source).unwrap();
    let (start, end) = (tokens.span.start as usize, tokens.span.end as usize);
    let mut renamed = bytes[..start].to_vec();
    renamed.extend(tokens.encode());
    renamed.extend(&bytes[end..]);
    let path = dir.join("llama-3.1-vocab.gguf");
    std::fs::write(&path, renamed).unwrap();
    path
}

#[test]
fn rendered_llama31_prompts_tokenize_to_single_special_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let vocab = llama31_vocab(dir.path());
    let input = json!({
        "messages": [
            {"role": "user", "content": "Search"},
            {"role": "assistant", "tool_calls": [{"function": {"name": "brave_search", "arguments": {"query": "x"}}}]},
            {"role": "ipython", "content": "ok"}
        ],
        "builtin_tools": ["brave_search"], "date": "21 Sep 2024"
    });
    let (code, prompt, stderr) = corral(&["prompt", "render"], &input.to_string());
    assert_eq!(code, 0, "{stderr}");
    assert!(
        prompt.contains("<|python_tag|>brave_search.call(query=\"x\")<|eom_id|>"),
        "{prompt}"
    );
    let (code, stdout, stderr) = corral(
        &["prompt", "tokens", "--model", vocab.to_str().unwrap()],
        &prompt,
    );
    assert_eq!(code, 0, "{stderr}");
    let ids: Vec<i64> = serde_json::from_str(&stdout).unwrap();
    let count = |id| ids.iter().filter(|&&t| t == id).count();
    assert_eq!(count(128_010), 1, "one <|python_tag|>: {ids:?}");
    assert_eq!(count(128_008), 1, "one <|eom_id|>: {ids:?}");
    assert_eq!(count(128_000), 1, "one <|begin_of_text|>: {ids:?}");
    assert_eq!(ids[0], 128_000);
}

#[test]
fn parse_with_a_model_uses_that_models_format() {
    let model = corral_tests::default_model();
    let reply = "<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"2+2\"}}\n</tool_call><|im_end|>";
    let (code, stdout, stderr) = corral(
        &["prompt", "parse", "--model", model.to_str().unwrap()],
        reply,
    );
    assert_eq!(code, 0, "{stderr}");
    let parsed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(parsed["tool_calls"][0]["name"], "calculator", "{parsed}");
    assert_eq!(parsed["stop"], "eot");
    // Control: Llama 3.1's parser (no --model) reads the same text as plain content.
    let (_, stdout, _) = corral(&["prompt", "parse"], reply);
    let plain: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(plain["tool_calls"], json!([]), "{plain}");
}
