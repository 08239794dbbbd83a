//! The llama.cpp engine on the real default model.
//!
//! Tests share the two cores, so each engine runs one thread and they take turns (a lock):
//! llama.cpp's threads spin while waiting and slow to a crawl when oversubscribed. Nothing here
//! measures time: speed is the benchmark's business (`make bench`).

use std::ops::ControlFlow;
use std::sync::Mutex;

use corral::engine::{
    self, generate_to_string, Backend, EngineError, EngineOptions, GenerateRequest, OptionError,
    Sampling, StopReason,
};
use corral_tests::default_model;

pub(crate) static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn load() -> Box<dyn Backend + Send> {
    let options = EngineOptions {
        context_tokens: Some(2048),
        threads: 1,
        ..EngineOptions::default()
    };
    engine::llama::load(&default_model(), &options).expect("load the default model")
}

/// SmolLM2's ChatML prompt for one user message.
fn chat_prompt(user: &str) -> String {
    format!("<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
}

fn greedy(prompt: &str, max_tokens: usize) -> GenerateRequest {
    GenerateRequest {
        prompt: prompt.into(),
        max_tokens: Some(max_tokens),
        sampling: Sampling::greedy(),
        ..GenerateRequest::default()
    }
}

#[test]
fn greedy_generation_is_deterministic_across_runs() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let request = greedy("The three primary colors are", 40);
    let first = generate_to_string(load().as_mut(), &request).unwrap();
    let second = generate_to_string(load().as_mut(), &request).unwrap();
    assert_eq!(first.generated_tokens, 40);
    assert!(!first.text.trim().is_empty());
    assert_eq!(first.text, second.text);
}

#[test]
fn chat_reply_stops_on_the_models_end_of_generation_token() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut backend = load();
    let request = greedy(&chat_prompt("Say hello in one short sentence."), 300);
    let generation = generate_to_string(backend.as_mut(), &request).unwrap();
    assert_eq!(
        generation.stop,
        StopReason::EndOfGeneration("<|im_end|>".into()),
        "text: {:?}",
        generation.text
    );
    assert!(!generation.text.contains("<|im_end|>"));
}

#[test]
fn streamed_multilingual_output_is_whole_characters() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut backend = load();
    let request = greedy(
        &chat_prompt("Écris une phrase en français avec des accents: é, è, à, ç. Puis 🙂 et नमस्ते."),
        60,
    );
    let mut streamed = String::new();
    let generation = backend
        .generate(&request, &mut |chunk| {
            streamed.push_str(chunk);
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(streamed, generation.text);
    assert!(
        !streamed.contains('\u{FFFD}'),
        "broken character in {streamed:?}"
    );
    assert!(
        !streamed.is_ascii(),
        "expected non-ASCII output, got {streamed:?}"
    );
}

#[test]
fn cancellation_from_the_callback_stops_after_exactly_that_token() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut backend = load();
    let request = greedy("Count from one to one hundred: one, two, three,", 200);
    // The engine waits for the callback's answer to each piece, so where it stops does not
    // depend on how the threads are scheduled: after the piece that said stop, never later.
    for stop_at in [1, 5] {
        let mut pieces = Vec::new();
        let generation = backend
            .generate(&request, &mut |piece| {
                pieces.push(piece.to_string());
                if pieces.len() == stop_at {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap();
        assert_eq!(generation.stop, StopReason::Cancelled);
        assert_eq!(
            pieces.len(),
            stop_at,
            "the callback ran after it asked to stop"
        );
        assert_eq!(generation.text, pieces.concat());
        // This ASCII continuation gives one piece per token; each emitted token is evaluated.
        assert_eq!(generation.generated_tokens, stop_at, "{generation:?}");
        assert_eq!(backend.cached_tokens(0), generation.prompt_tokens + stop_at);
    }

    // A cancel token set from another thread before the start stops before the first token.
    let cancelled = greedy("Hello", 50);
    cancelled.cancel.cancel();
    let generation = generate_to_string(backend.as_mut(), &cancelled).unwrap();
    assert_eq!(
        (generation.stop, generation.generated_tokens),
        (StopReason::Cancelled, 0)
    );
}

#[test]
fn kv_cache_prefix_is_reused_and_can_be_truncated() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut backend = load();
    let first_prompt = chat_prompt("Name a fruit.");
    let first = generate_to_string(backend.as_mut(), &greedy(&first_prompt, 12)).unwrap();
    assert_eq!(first.reused_tokens, 0);
    let cached = backend.cached_tokens(0);
    // Every sampled token is evaluated, except a final end-of-generation token.
    let evaluated = match first.stop {
        StopReason::EndOfGeneration(_) => first.generated_tokens - 1,
        _ => first.generated_tokens,
    };
    assert_eq!(cached, first.prompt_tokens + evaluated);

    // The next turn extends the conversation: everything cached is reused.
    let second_prompt = format!("{first_prompt}{}<|im_end|>\n<|im_start|>user\nAnother one.<|im_end|>\n<|im_start|>assistant\n", first.text);
    let second = generate_to_string(backend.as_mut(), &greedy(&second_prompt, 8)).unwrap();
    assert_eq!(second.reused_tokens, cached, "{first:?}\n{second:?}");

    // Keep only the first 5 tokens: the next generation re-evaluates the rest, same result.
    backend.truncate_cache(0, 5).unwrap();
    assert_eq!(backend.cached_tokens(0), 5);
    let again = generate_to_string(backend.as_mut(), &greedy(&second_prompt, 8)).unwrap();
    assert_eq!(again.reused_tokens, 5);
    assert_eq!(again.text, second.text);
}

#[test]
fn stop_strings_end_generation_and_are_not_emitted() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut backend = load();
    let mut request = greedy("1, 2, 3, 4, 5, 6,", 40);
    request.stop_strings = vec![" 9".into()];
    let generation = generate_to_string(backend.as_mut(), &request).unwrap();
    assert_eq!(
        generation.stop,
        StopReason::StopString(" 9".into()),
        "{:?}",
        generation.text
    );
    assert!(
        generation.text.contains('8') && !generation.text.contains('9'),
        "{:?}",
        generation.text
    );
}

#[test]
fn prompt_longer_than_the_context_is_a_usage_error() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut backend = load();
    let long = "word ".repeat(3000);
    let tokens = backend.tokenize(&long, true).unwrap().len();
    let err = generate_to_string(backend.as_mut(), &greedy(&long, 4)).unwrap_err();
    assert!(
        matches!(err, EngineError::PromptTooLong { prompt, context: 2048 } if prompt == tokens),
        "{err:?}"
    );
    assert!(err.is_usage());
    assert_eq!(backend.cached_tokens(0), 0, "nothing was evaluated");
}

#[test]
fn bad_options_are_usage_errors_found_before_any_work() {
    // Checked before the file is even opened: a path that does not exist is never looked at.
    let options = EngineOptions {
        batch: 0,
        ..EngineOptions::default()
    };
    let err = engine::llama::load(std::path::Path::new("/no/such/model.gguf"), &options)
        .err()
        .expect("refused");
    assert!(
        matches!(err, EngineError::Option(OptionError::ZeroBatch)),
        "{err:?}"
    );
    assert!(err.is_usage());

    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut backend = load();
    let mut request = greedy("Hello", 4);
    request.sampling.top_p = 0.0;
    let err = generate_to_string(backend.as_mut(), &request).unwrap_err();
    assert!(
        matches!(err, EngineError::Option(OptionError::TopP(p)) if p == 0.0),
        "{err:?}"
    );
    assert!(err.is_usage());
    assert_eq!(backend.cached_tokens(0), 0, "nothing was evaluated");

    let missing = engine::llama::load(
        std::path::Path::new("/no/such/model.gguf"),
        &EngineOptions::default(),
    )
    .err()
    .expect("refused");
    assert!(matches!(missing, EngineError::Load { .. }), "{missing:?}");
    assert!(!missing.is_usage());
}
