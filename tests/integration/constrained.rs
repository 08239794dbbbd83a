//! Constrained tool calls on the real default model (SmolLM2: ChatML with `<tool_call>`).
//!
//! The grammar comes from the prompts crate; the engine engages it from the first token
//! (`required`, a named tool) or lazily on a trigger (`auto`). A 135M model rarely writes a valid
//! call on its own, so these tests prove the constraint, not the model.
//!
//! Decoding is greedy, so each case has one outcome, asserted whole: the calls parsed (name and
//! arguments), the text around them, whether the constraint engaged. They are what this model
//! file produces; a new default model means new expected values here.
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

/// `user` asks, with a weather tool and a time tool on offer.
fn conversation(user: &str) -> Conversation {
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
        json!({
            "type": "object",
            "properties": {"zone": {"type": "string"}},
            "required": ["zone"],
            "additionalProperties": false
        }),
    );
    Conversation::new(vec![Message::user(user)]).with_tools(vec![weather, time])
}

/// The question most tests ask.
const WEATHER_QUESTION: &str = "What is the weather in Paris right now, in celsius?";

/// The default model loaded for one thread, its Hermes format, and a greedy request for the
/// weather question under `choice`.
fn setup(choice: ToolChoice) -> (Box<dyn Backend + Send>, Hermes, GenerateRequest) {
    setup_for(WEATHER_QUESTION, choice)
}

/// As [`setup`], for the question `user`.
fn setup_for(user: &str, choice: ToolChoice) -> (Box<dyn Backend + Send>, Hermes, GenerateRequest) {
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
    let conversation = conversation(user);
    let request = GenerateRequest {
        prompt: format.render(&conversation, true).unwrap().into(),
        max_tokens: Some(120),
        sampling: Sampling::greedy(),
        constraint: format.constraint(&conversation, &choice).unwrap(),
        ..GenerateRequest::default()
    };
    (backend, format, request)
}

/// What one greedy turn produced: whether the constraint engaged, the text outside calls, the
/// calls as (name, arguments), and parse errors.
#[derive(Debug, PartialEq)]
struct Outcome {
    constrained: bool,
    content: String,
    calls: Vec<(String, serde_json::Value)>,
    errors: usize,
}

impl Outcome {
    /// Plain text, no call, the constraint never engaged.
    fn text(content: &str) -> Self {
        Self {
            constrained: false,
            content: content.into(),
            calls: Vec::new(),
            errors: 0,
        }
    }

    /// The constraint engaged and every call parsed.
    fn calls(content: &str, calls: &[(&str, serde_json::Value)]) -> Self {
        Self {
            constrained: true,
            content: content.into(),
            calls: calls
                .iter()
                .map(|(name, args)| (name.to_string(), args.clone()))
                .collect(),
            errors: 0,
        }
    }
}

/// One whole turn for `user` under `choice`; it must end the turn itself (not at `max_tokens`).
fn run(user: &str, choice: ToolChoice) -> Outcome {
    let (mut backend, format, request) = setup_for(user, choice);
    let generation = engine::generate_to_string(backend.as_mut(), &request).unwrap();
    assert_eq!(
        generation.stop,
        StopReason::EndOfGeneration("<|im_end|>".into()),
        "{:?}",
        generation.text
    );
    let parsed = parse_all(
        format.parser(conversation(user).tool_set()),
        &generation.text,
    );
    Outcome {
        constrained: generation.constrained,
        content: parsed.content,
        calls: parsed
            .tool_calls
            .into_iter()
            .map(|call| (call.name, call.arguments))
            .collect(),
        errors: parsed.errors.len(),
    }
}

#[test]
fn required_choice_yields_schema_valid_calls() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // The grammar allows parallel calls, and this small model repeats its call once.
    let paris = json!({"city": "Paris", "unit": "celsius"});
    assert_eq!(
        run(WEATHER_QUESTION, ToolChoice::Required),
        Outcome::calls(
            "",
            &[("get_weather", paris.clone()), ("get_weather", paris)]
        )
    );
}

#[test]
fn named_choice_calls_that_tool() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let zone = json!({"zone": "Europe/Paris"});
    assert_eq!(
        run(WEATHER_QUESTION, ToolChoice::Named("get_time".into())),
        Outcome::calls("", &[("get_time", zone.clone()), ("get_time", zone)])
    );
}

#[test]
fn auto_choice_leaves_text_free_and_constrains_a_call_once_it_starts() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // The model answers in prose: the grammar never engages. (Its wording past the first words
    // differs between CPUs, AVX2 here and AMX there: a made-up temperature of 25.5 or 25.6.)
    let prose = run(WEATHER_QUESTION, ToolChoice::Auto);
    assert!(
        prose
            .content
            .starts_with("The weather in Paris right now is"),
        "{prose:?}"
    );
    assert_eq!(prose, Outcome::text(&prose.content));
    // The model writes `<tool_call>` after some text: from there the grammar holds the call to
    // the schema (no extra properties), and the text before it stays free. (Greedy output pinned
    // for this build: a prompt is evaluated in batches of up to 512 tokens.)
    let zone = json!({"zone": "Europe/Paris"});
    assert_eq!(
        run(
            "What time is it in Europe/Paris? Use a tool.",
            ToolChoice::Auto
        ),
        Outcome::calls(
            "To use a tool, answer with one JSON object per call, each between",
            &[("get_time", zone.clone()), ("get_time", zone)]
        )
    );
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
    assert_eq!(backend.cached_tokens(0), generation.prompt_tokens + 4);
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
        backend.cached_tokens(0),
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
        backend.cached_tokens(0),
        first.prompt_tokens + first.generated_tokens
    );
    // The next request goes on from the call. Its text tokenizes to exactly what the cache
    // holds, so all of it is reused but the last token, which is evaluated again for fresh
    // logits to sample from.
    let next_text = format!("{}{}", request.prompt.as_text().unwrap(), first.text);
    let next = GenerateRequest {
        prompt: next_text.clone().into(),
        max_tokens: Some(4),
        sampling: Sampling::greedy(),
        ..GenerateRequest::default()
    };
    let next_tokens = backend.tokenize(&next_text, true).unwrap().len();
    assert_eq!(next_tokens, backend.cached_tokens(0));
    let second = engine::generate_to_string(backend.as_mut(), &next).unwrap();
    assert_eq!(second.reused_tokens, next_tokens - 1);
}
