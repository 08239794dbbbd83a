//! Constrained tool calls on the real default model (SmolLM2: ChatML with `<tool_call>`).
//!
//! The grammar comes from the prompts crate; the engine engages it from the first token
//! (`required`, a named tool) or lazily on a trigger (`auto`). A 135M model rarely writes a valid
//! call on its own, so these tests prove the constraint, not the model.
//!
//! Text the grammar forces (`<tool_call>\n{"name": "get_weather", "arguments": {"city": "`) is
//! fast-forwarded: appended without sampling and evaluated in one batch. The tests below check
//! that it still counts against `max_tokens`, still meets stop strings, and leaves the KV cache
//! holding exactly what was generated.

use corral::engine::{self, Backend, EngineOptions, GenerateRequest, Sampling, StopReason};
use corral_prompts::hermes::Hermes;
use corral_prompts::{parse_all, Conversation, Format, Message, ToolChoice, ToolSpec};
use corral_tests::default_model;
use serde_json::json;

use crate::engine::ONE_AT_A_TIME;

fn weather_conversation() -> Conversation {
    let weather = ToolSpec::new(
        "get_weather",
        "Current weather in a city",
        json!({
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
            },
            "required": ["city", "unit"],
            "additionalProperties": false
        }),
    );
    let time = ToolSpec::new(
        "get_time",
        "Current time in an IANA zone",
        json!({"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}),
    );
    Conversation::new(vec![Message::user(
        "What is the weather in Paris right now, in celsius?",
    )])
    .with_tools(vec![weather, time])
}

/// The default model loaded for one thread, its Hermes format, and a greedy request for the
/// weather conversation under `choice`.
fn setup(choice: ToolChoice) -> (Box<dyn Backend + Send>, Hermes, GenerateRequest) {
    let options = EngineOptions {
        context_tokens: Some(2048),
        threads: 1,
        ..EngineOptions::default()
    };
    let backend = engine::llama::load(&default_model(), &options).unwrap();
    let template = backend
        .info()
        .chat_template
        .clone()
        .expect("SmolLM2 has a template");
    let format = Hermes::new(&template, "", "<|im_end|>").unwrap();
    let conversation = weather_conversation();
    let request = GenerateRequest {
        prompt: format.render(&conversation, true).unwrap(),
        max_tokens: Some(120),
        sampling: Sampling::greedy(),
        constraint: format.constraint(&conversation, &choice).unwrap(),
        ..GenerateRequest::default()
    };
    (backend, format, request)
}

fn run(choice: ToolChoice) -> (corral::engine::Generation, corral_prompts::ParsedMessage) {
    let (mut backend, format, request) = setup(choice);
    let generation = engine::generate_to_string(backend.as_mut(), &request).unwrap();
    let parsed = parse_all(
        format.parser(weather_conversation().tool_set()),
        &generation.text,
    );
    (generation, parsed)
}

fn assert_valid_weather_call(parsed: &corral_prompts::ParsedMessage, text: &str) {
    assert!(parsed.errors.is_empty(), "{:?} in {text:?}", parsed.errors);
    // The grammar allows parallel calls; a small model may repeat itself. Every call is valid.
    assert!(!parsed.tool_calls.is_empty(), "{text:?}");
    for call in &parsed.tool_calls {
        assert_eq!(call.name, "get_weather", "{text:?}");
        assert!(call.arguments["city"].is_string(), "{text:?}");
        let unit = call.arguments["unit"].as_str().unwrap_or_default();
        assert!(["celsius", "fahrenheit"].contains(&unit), "{text:?}");
        let keys: Vec<&String> = call.arguments.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 2, "extra properties in {text:?}");
    }
}

#[test]
fn required_choice_yields_a_schema_valid_call() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (generation, parsed) = run(ToolChoice::Required);
    assert!(generation.constrained);
    assert_valid_weather_call(&parsed, &generation.text);
}

#[test]
fn named_choice_calls_that_tool() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (generation, parsed) = run(ToolChoice::Named("get_time".into()));
    assert!(generation.constrained);
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    assert!(!parsed.tool_calls.is_empty(), "{:?}", generation.text);
    for call in &parsed.tool_calls {
        assert_eq!(call.name, "get_time");
        assert!(call.arguments["zone"].is_string());
    }
}

#[test]
fn auto_choice_leaves_text_free_and_any_call_valid() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (generation, parsed) = run(ToolChoice::Auto);
    if generation.text.contains("<tool_call>") {
        assert!(generation.constrained, "{:?}", generation.text);
        assert!(
            parsed.errors.is_empty(),
            "{:?} in {:?}",
            parsed.errors,
            generation.text
        );
    } else {
        assert!(!generation.constrained);
        assert!(!parsed.content.trim().is_empty());
    }
}

/// The start of every constrained weather call: forced by the grammar except the tool's name.
const CALL_START: &str = "<tool_call>\n{\"name\": \"get_";

#[test]
fn forced_tokens_count_against_max_tokens() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (mut backend, _, mut request) = setup(ToolChoice::Required);
    request.max_tokens = Some(4);
    let generation = engine::generate_to_string(backend.as_mut(), &request).unwrap();
    assert_eq!(generation.stop, StopReason::MaxTokens);
    assert_eq!(generation.generated_tokens, 4);
    assert!(
        CALL_START.starts_with(&generation.text),
        "{:?}",
        generation.text
    );
    // Every generated token was evaluated: the cache holds the prompt and all four.
    assert_eq!(backend.cached_tokens(), generation.prompt_tokens + 4);
}

#[test]
fn forced_tokens_meet_stop_strings() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (mut backend, _, mut request) = setup(ToolChoice::Named("get_weather".into()));
    // Inside the text the grammar forces for this tool.
    request.stop_strings = vec!["\"arguments\"".into()];
    let generation = engine::generate_to_string(backend.as_mut(), &request).unwrap();
    assert_eq!(
        generation.stop,
        StopReason::StopString("\"arguments\"".into())
    );
    assert_eq!(generation.text, "<tool_call>\n{\"name\": \"get_weather\", ");
    // The tokens before the one that completed the stop string were evaluated; that one was not.
    assert_eq!(
        backend.cached_tokens(),
        generation.prompt_tokens + generation.generated_tokens - 1
    );
}

#[test]
fn cache_after_a_fast_forwarded_call_is_reused_by_the_next_turn() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (mut backend, _, mut request) = setup(ToolChoice::Named("get_weather".into()));
    request.max_tokens = Some(30);
    let first = engine::generate_to_string(backend.as_mut(), &request).unwrap();
    assert!(first.text.starts_with(CALL_START), "{:?}", first.text);
    assert_eq!(
        backend.cached_tokens(),
        first.prompt_tokens + first.generated_tokens
    );
    // The next request goes on from the call: the prompt and the call's tokens are reused (the
    // retokenised text may split one token differently at the end).
    let next = GenerateRequest {
        prompt: format!("{}{}", request.prompt, first.text),
        max_tokens: Some(4),
        sampling: Sampling::greedy(),
        ..GenerateRequest::default()
    };
    let second = engine::generate_to_string(backend.as_mut(), &next).unwrap();
    assert!(
        second.reused_tokens + 2 >= first.prompt_tokens + first.generated_tokens,
        "reused {} of {} + {}",
        second.reused_tokens,
        first.prompt_tokens,
        first.generated_tokens
    );
}
