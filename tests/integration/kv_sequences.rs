//! The KV cache on the real default model: token-exact reuse across agent steps, several
//! conversations on one model, removing a range with its positions shifted, and a sequence's
//! state saved to a file and restored.
//!
//! Every count here is exact. Nothing measures time.

use std::sync::Arc;

use corral::agent::{Agent, Decision, Policy, TurnOptions, TurnStop};
use corral::engine::{
    self, common_prefix, generate_to_string, Backend, EngineError, EngineOptions, GenerateRequest,
    Generation, Prompt, Sampling, SequencePool, StopReason, Token, Watched, Watcher,
};
use corral_prompts::{Conversation, Message, ToolChoice};
use corral_tests::{default_model, evaluated_only_the_new_tokens};
use corral_tools::{FnTool, Registry, ToolSpec};
use serde_json::json;

use crate::engine::ONE_AT_A_TIME;

fn load(sequences: u32) -> Box<dyn Backend + Send> {
    let options = EngineOptions {
        context_tokens: Some(1024),
        threads: 1,
        sequences,
        ..EngineOptions::default()
    };
    engine::llama::load(&default_model(), &options).expect("load the default model")
}

fn chat_prompt(user: &str) -> String {
    format!("<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
}

fn greedy(prompt: impl Into<Prompt>, sequence: usize, max_tokens: usize) -> GenerateRequest {
    GenerateRequest {
        prompt: prompt.into(),
        sequence,
        max_tokens: Some(max_tokens),
        sampling: Sampling::greedy(),
        ..GenerateRequest::default()
    }
}

/// One generation as a step of the agent saw it.
#[derive(Debug, Clone)]
struct Seen {
    prompt: Vec<Token>,
    cached_before: usize,
    generation: Generation,
    cached_after: usize,
}

/// Records each generation the agent asks of the real engine, with the cache around it.
#[derive(Default)]
struct Recording {
    seen: Vec<Seen>,
    cached_before: usize,
}

impl Watcher for Recording {
    fn before(&mut self, request: &GenerateRequest, backend: &dyn Backend) {
        self.cached_before = backend.cached_tokens(request.sequence);
    }
    fn after(&mut self, request: &GenerateRequest, generation: &Generation, backend: &dyn Backend) {
        let Prompt::Tokens(prompt) = &request.prompt else {
            panic!("the agent sends token ids, not text");
        };
        self.seen.push(Seen {
            prompt: prompt.clone(),
            cached_before: self.cached_before,
            generation: generation.clone(),
            cached_after: backend.cached_tokens(request.sequence),
        });
    }
}

fn multiply_registry() -> Registry {
    let spec = ToolSpec {
        name: "multiply".into(),
        description: Some("Multiplies two integers".into()),
        parameters: json!({
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"]
        }),
    };
    let mut registry = Registry::new();
    registry
        .register(
            Arc::new(FnTool::new(spec, |args| {
                let a = args["a"].as_i64().unwrap_or(0);
                let b = args["b"].as_i64().unwrap_or(0);
                Ok(a.saturating_mul(b).to_string())
            })),
            "test",
        )
        .unwrap();
    registry
}

#[test]
fn each_agent_step_evaluates_only_the_new_tokens() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut engine = load(1);
    let mut backend = Watched::new(&mut *engine, Recording::default());
    let format = corral::agent::format_for_model(backend.info()).unwrap();
    let registry = multiply_registry();
    let mut conversation =
        Conversation::new(Vec::new()).with_tools(corral::agent::prompt_tools(&registry, None));
    let options = TurnOptions {
        tool_choice: ToolChoice::Required,
        max_steps: 2,
        max_tokens: Some(48),
        sampling: Sampling::greedy(),
        policy: Policy {
            default: Decision::Allow,
            ..Policy::default()
        },
        ..TurnOptions::default()
    };
    let mut agent = Agent::new(&mut backend, format.as_ref(), &registry);
    // Two turns of one conversation, each a forced call and a step after its result: at least
    // three steps that continue what came before.
    for question in ["What is 12 times 34?", "And 56 times 78?"] {
        conversation.messages.push(Message::user(question));
        let outcome = agent.run_turn(&mut conversation, &options, &mut |_| false, &mut |_| {});
        assert!(
            matches!(outcome.stop, TurnStop::Answered | TurnStop::StepLimit),
            "{outcome:?}"
        );
    }
    // For the report at the end: the transcript's text tokenized again.
    let text = agent.transcript().text().to_owned();
    let retokenized = agent.backend().tokenize(&text, true).unwrap();
    drop(agent);
    let seen = backend.watcher.seen;
    assert!(seen.len() >= 3, "{} steps", seen.len());
    for pair in seen.windows(2) {
        let (before, step) = (&pair[0], &pair[1]);
        // The step's prompt starts with exactly the ids of the step before: its prompt, then
        // what the model sampled (its end token included).
        let mut fed_before = before.prompt.clone();
        fed_before.extend_from_slice(&before.generation.tokens);
        assert_eq!(step.prompt[..fed_before.len()], fed_before[..]);
        // The cache held everything evaluated before (all of it but a final end token, which
        // is sampled and not evaluated)...
        let ended = matches!(before.generation.stop, StopReason::EndOfGeneration(_));
        let previous_total = before.generation.prompt_tokens + before.generation.generated_tokens
            - usize::from(ended);
        assert_eq!(before.cached_after, previous_total);
        assert_eq!(step.cached_before, previous_total);
        // ...and the step evaluated exactly the tokens that were not in it (padded to the
        // tiled rows where that is cheaper): no other slack.
        let g = &step.generation;
        let evaluated = g.prompt_tokens - g.reused_tokens;
        assert!(
            evaluated_only_the_new_tokens(g.prompt_tokens, previous_total, evaluated),
            "{} prompt tokens, {previous_total} cached, {evaluated} evaluated",
            g.prompt_tokens
        );
        assert_eq!(step.generation.prompt_tokens, step.prompt.len());
    }
    for (i, step) in seen.iter().enumerate() {
        let g = &step.generation;
        eprintln!(
            "step {}: prompt {} tokens, evaluated {}, generated {}, prompt evaluation {:.1} ms",
            i + 1,
            g.prompt_tokens,
            g.prompt_tokens - g.reused_tokens,
            g.generated_tokens,
            g.prompt_seconds * 1e3
        );
    }
    // What re-tokenizing the text would have given instead (reported, not asserted: it depends
    // on what the model wrote).
    let last = seen.last().unwrap();
    eprintln!(
        "steps: {}; last prompt {} tokens, reused {}; re-tokenizing its text agrees on the first {}",
        seen.len(),
        last.generation.prompt_tokens,
        last.generation.reused_tokens,
        common_prefix(&retokenized, &last.prompt)
    );
}

#[test]
fn four_conversations_on_one_model_keep_their_own_prefix() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut backend = load(4);
    assert_eq!(backend.info().sequences, 4);
    assert_eq!(backend.info().context_tokens, 1024);
    let questions = [
        "Name a colour.",
        "Name a fruit.",
        "Name a river.",
        "Name an animal.",
    ];
    let mut fed: Vec<Vec<Token>> = Vec::new();
    for (seq, q) in questions.iter().enumerate() {
        let mut tokens = backend.tokenize(&chat_prompt(q), true).unwrap();
        let g = generate_to_string(backend.as_mut(), &greedy(tokens.clone(), seq, 6)).unwrap();
        assert_eq!(g.reused_tokens, 0, "sequence {seq} started empty");
        tokens.extend_from_slice(&g.tokens);
        assert_eq!(backend.cached_tokens(seq), tokens.len());
        fed.push(tokens);
    }
    // Interleaved, in another order: each conversation finds all of its own prefix.
    let mut texts = Vec::new();
    for seq in [2, 0, 3, 1] {
        let more = backend.tokenize_continuation(" and").unwrap();
        let mut tokens = fed[seq].clone();
        tokens.extend_from_slice(&more);
        let g = generate_to_string(backend.as_mut(), &greedy(tokens.clone(), seq, 6)).unwrap();
        assert_eq!(g.reused_tokens, fed[seq].len(), "sequence {seq}");
        texts.push((seq, tokens, g.text));
    }
    // And each continues exactly as it would alone on a fresh model.
    drop(backend);
    let mut alone = load(1);
    for (seq, tokens, text) in texts {
        alone.truncate_cache(0, 0).unwrap();
        let g = generate_to_string(alone.as_mut(), &greedy(tokens, 0, 6)).unwrap();
        assert_eq!(g.text, text, "sequence {seq}");
    }
}

#[test]
fn a_fifth_conversation_takes_the_least_recently_used_sequence() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut backend = load(4);
    let mut pool = SequencePool::new(backend.info().sequences);
    let prompts: Vec<Vec<Token>> = ["one", "two", "three", "four", "five"]
        .iter()
        .map(|w| {
            backend
                .tokenize(&chat_prompt(&format!("Say {w}.")), true)
                .unwrap()
        })
        .collect();
    for (key, tokens) in prompts.iter().enumerate().take(4) {
        let seq = pool.acquire(&key).sequence;
        generate_to_string(backend.as_mut(), &greedy(tokens.clone(), seq, 2)).unwrap();
    }
    for key in [1, 2, 3] {
        let seq = pool.acquire(&key).sequence;
        let g =
            generate_to_string(backend.as_mut(), &greedy(prompts[key].clone(), seq, 2)).unwrap();
        assert_eq!(
            g.reused_tokens,
            prompts[key].len() - 1,
            "conversation {key}"
        );
    }
    // Conversation 4 arrives: 0 is the least recently used and loses its cache.
    let got = pool.acquire(&4);
    assert_eq!((got.sequence, got.evicted), (0, Some(0)));
    let g = generate_to_string(backend.as_mut(), &greedy(prompts[4].clone(), 0, 2)).unwrap();
    let shared = common_prefix(&prompts[0], &prompts[4]);
    assert_eq!(g.reused_tokens, shared);
    // Conversation 0 comes back and is evaluated again from the shared prefix on.
    let back = pool.acquire(&0);
    assert_eq!(back.evicted, Some(1));
    let g = generate_to_string(
        backend.as_mut(),
        &greedy(prompts[0].clone(), back.sequence, 2),
    )
    .unwrap();
    assert_eq!(
        g.reused_tokens,
        common_prefix(&prompts[1], &prompts[0]),
        "its own cache is gone"
    );
}

#[test]
fn removing_a_range_shifts_what_follows_and_keeps_it_cached() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut backend = load(1);
    let head = backend
        .tokenize("<|im_start|>system\nYou are brief.<|im_end|>\n", true)
        .unwrap();
    let middle = backend
        .tokenize_continuation("<|im_start|>user\nWhat is the capital of Peru?<|im_end|>\n")
        .unwrap();
    let tail = backend
        .tokenize_continuation(&chat_prompt("What is the capital of France?"))
        .unwrap();
    let full = [head.clone(), middle.clone(), tail.clone()].concat();
    generate_to_string(backend.as_mut(), &greedy(full.clone(), 0, 1)).unwrap();
    let held = backend.cached_tokens(0);
    assert_eq!(held, full.len() + 1);

    backend
        .remove_tokens(0, head.len()..head.len() + middle.len())
        .unwrap();
    assert_eq!(backend.cached_tokens(0), held - middle.len());
    let shortened = [head, tail].concat();
    let shifted = generate_to_string(backend.as_mut(), &greedy(shortened.clone(), 0, 8)).unwrap();
    // Everything after the removed range was kept (only the last prompt token is evaluated
    // again, for fresh logits). llama.cpp only accepts the new token at the position after the
    // last cached one, so this also shows the positions moved down.
    assert_eq!(shifted.reused_tokens, shortened.len() - 1);
    assert_eq!(backend.cached_tokens(0), shortened.len() + 8);
    // The model now reads the France question alone. (A fresh evaluation need not give the same
    // words: the kept tokens' cache entries were computed while the removed ones were there,
    // which is what llama.cpp's own context shift accepts too.)
    assert!(
        shifted.text.contains("Paris") && !shifted.text.contains("Lima"),
        "{:?}",
        shifted.text
    );

    let err = backend.remove_tokens(0, 5..10_000).unwrap_err();
    assert!(
        err.is_usage() && err.to_string().contains("5..10000"),
        "{err}"
    );
}

#[test]
fn a_sequence_saved_to_a_file_is_restored_with_its_tokens() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut backend = load(2);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("conversation.state");
    let prompt = backend
        .tokenize(&chat_prompt("Tell me about the sea."), true)
        .unwrap();
    let first = generate_to_string(backend.as_mut(), &greedy(prompt.clone(), 0, 6)).unwrap();
    let held = backend.cached_tokens(0);
    let bytes = backend.save_sequence(0, &file).unwrap();
    assert_eq!(std::fs::metadata(&file).unwrap().len(), bytes);

    // Restored into the other sequence, it goes on as the original does.
    assert_eq!(backend.restore_sequence(1, &file).unwrap(), held);
    let mut next = prompt.clone();
    next.extend_from_slice(&first.tokens);
    assert_eq!(next.len(), held);
    // All but the last token is reused (it is evaluated again for fresh logits).
    let restored = generate_to_string(backend.as_mut(), &greedy(next.clone(), 1, 6)).unwrap();
    assert_eq!(restored.reused_tokens, held - 1);
    let original = generate_to_string(backend.as_mut(), &greedy(next, 0, 6)).unwrap();
    assert_eq!(original.reused_tokens, held - 1);
    assert_eq!(restored.text, original.text);

    // A damaged file is refused and leaves the sequence empty, not half loaded.
    let mut damaged = std::fs::read(&file).unwrap();
    damaged.truncate(damaged.len() / 2);
    std::fs::write(&file, damaged).unwrap();
    let err = backend.restore_sequence(1, &file).unwrap_err();
    assert!(err.to_string().contains("cannot restore"), "{err}");
    assert_eq!(backend.cached_tokens(1), 0);
    let missing = backend
        .restore_sequence(1, &dir.path().join("none"))
        .unwrap_err();
    assert!(missing.to_string().contains("none"), "{missing}");
    let err = backend.save_sequence(7, &file).unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::NoSuchSequence {
                sequence: 7,
                sequences: 2
            }
        ),
        "{err}"
    );
}

#[test]
fn a_streamed_generation_runs_from_async_code_and_is_cancelled_alone() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let options = EngineOptions {
        context_tokens: Some(1024),
        threads: 1,
        ..EngineOptions::default()
    };
    let engine = engine::llama::LlamaEngine::load(&default_model(), &options).unwrap();
    let handle = engine.clone();
    let prompt = chat_prompt("Count from one to ten.");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (text, generation) = runtime.block_on(async {
        let mut events = handle
            .generate_stream(greedy(prompt.as_str(), 0, 12))
            .unwrap();
        let mut text = String::new();
        while let Some(event) = events.recv().await {
            match event {
                engine::llama::StreamEvent::Text(piece) => text.push_str(&piece),
                engine::llama::StreamEvent::Done(result) => return (text, result.unwrap()),
            }
        }
        panic!("the stream ended without Done");
    });
    assert_eq!(text, generation.text);
    assert_eq!(generation.generated_tokens, 12);
    // The same request through the blocking API of another clone gives the same text.
    let mut blocking = engine.clone();
    blocking.truncate_cache(0, 0).unwrap();
    let same = generate_to_string(&mut blocking, &greedy(prompt.as_str(), 0, 12)).unwrap();
    assert_eq!(same.text, text);

    // Cancelling one request stops it alone: the next request, on another clone, runs.
    blocking.truncate_cache(0, 0).unwrap();
    let mut request = greedy(prompt.as_str(), 0, 200);
    let cancel = request.cancel.clone();
    request.cancel = cancel.clone();
    let mut events = engine.generate_stream(request).unwrap();
    assert!(matches!(
        events.blocking_recv(),
        Some(engine::llama::StreamEvent::Text(_))
    ));
    cancel.cancel();
    let stopped = loop {
        match events.blocking_recv() {
            Some(engine::llama::StreamEvent::Done(result)) => break result.unwrap(),
            Some(engine::llama::StreamEvent::Text(_)) => {}
            None => panic!("the stream ended without Done"),
        }
    };
    assert_eq!(stopped.stop, StopReason::Cancelled);
    assert!(stopped.generated_tokens < 200);
    let after = generate_to_string(&mut blocking, &greedy(prompt.as_str(), 0, 3)).unwrap();
    assert_eq!(
        (after.generated_tokens, after.stop),
        (3, StopReason::MaxTokens)
    );
}

#[test]
fn generations_on_different_sequences_run_together_and_keep_their_caches_apart() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let options = EngineOptions {
        context_tokens: Some(1024),
        threads: 1,
        sequences: 3,
        ..EngineOptions::default()
    };
    let engine = engine::llama::LlamaEngine::load(&default_model(), &options).unwrap();
    let prompts = [
        chat_prompt("Tell me a story about a river."),
        chat_prompt("List the planets of the solar system."),
        chat_prompt("Explain how bread is made."),
    ];
    let mut streams: Vec<_> = prompts
        .iter()
        .enumerate()
        .map(|(sequence, prompt)| {
            engine
                .generate_stream(greedy(prompt.as_str(), sequence, 24))
                .unwrap()
        })
        .collect();
    // Decoded together, the second conversation speaks while the first is still going; one at a
    // time, the first would have finished before the second began.
    let first_of_second = match streams[1].blocking_recv() {
        Some(engine::llama::StreamEvent::Text(piece)) => piece,
        Some(engine::llama::StreamEvent::Done(result)) => {
            panic!("the second generation ended before any text: {result:?}")
        }
        None => panic!("the second stream ended without Done"),
    };
    assert!(!first_of_second.is_empty());
    let mut first_done_already = false;
    while let Ok(event) = streams[0].try_recv() {
        first_done_already |= matches!(event, engine::llama::StreamEvent::Done(_));
    }
    assert!(
        !first_done_already,
        "the first generation was over before the second produced text: not decoded together"
    );
    let mut generations = Vec::new();
    for stream in &mut streams {
        let generation = loop {
            match stream.blocking_recv() {
                Some(engine::llama::StreamEvent::Done(result)) => break result.unwrap(),
                Some(engine::llama::StreamEvent::Text(_)) => {}
                None => panic!("a stream ended without Done"),
            }
        };
        generations.push(generation);
    }
    // Each sequence holds exactly its own prompt and reply: a follow-up that extends it reuses
    // all of it and evaluates only the new text.
    let mut handle = engine.clone();
    for (sequence, generation) in generations.iter().enumerate() {
        assert!(generation.generated_tokens > 0, "{generation:?}");
        let held = handle.cached_tokens(sequence);
        let reply_in_cache = generation
            .tokens
            .len()
            .saturating_sub(matches!(generation.stop, StopReason::EndOfGeneration(_)) as usize);
        assert_eq!(
            held,
            generation.prompt_tokens + reply_in_cache,
            "sequence {sequence}"
        );
        let mut tokens = handle.tokenize(&prompts[sequence], true).unwrap();
        tokens.extend_from_slice(&generation.tokens[..reply_in_cache]);
        tokens.extend(handle.tokenize_continuation(" And then?").unwrap());
        let follow = generate_to_string(&mut handle, &greedy(tokens, sequence, 2)).unwrap();
        assert_eq!(follow.reused_tokens, held, "sequence {sequence}");
    }
}

#[test]
fn a_continuation_deep_in_the_cache_is_evaluated_as_64_rows_where_that_is_cheaper() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let options = EngineOptions {
        context_tokens: Some(2048),
        threads: 1,
        ..EngineOptions::default()
    };
    let mut backend = engine::llama::load(&default_model(), &options).unwrap();
    let letter = backend
        .tokenize(
            &chat_prompt(&"A long letter about rivers. ".repeat(200)),
            true,
        )
        .unwrap();
    assert!(letter.len() > 1100, "{}", letter.len());
    let first = generate_to_string(backend.as_mut(), &greedy(letter.clone(), 0, 1)).unwrap();
    let mut deep = letter.clone();
    deep.extend_from_slice(&first.tokens);
    // Deep in the cache (over 1100 tokens), a turn's worth of new tokens goes with cached
    // ones before them, so llama.cpp's flash attention takes its tiled path (64 rows).
    let turn = backend
        .tokenize_continuation(
            " Now tell me, in a few plain words, where the river starts and where it ends.",
        )
        .unwrap();
    assert!((16..40).contains(&turn.len()), "{}", turn.len());
    let mut tokens = deep.clone();
    tokens.extend_from_slice(&turn);
    let next = generate_to_string(backend.as_mut(), &greedy(tokens, 0, 1)).unwrap();
    assert_eq!(next.prompt_tokens - next.reused_tokens, 64, "{next:?}");
    // A few new tokens cost less row by row even there: only they are evaluated.
    let few = backend.tokenize_continuation(" Go on.").unwrap();
    assert!(few.len() < 6, "{}", few.len());
    let mut tokens = deep.clone();
    tokens.extend_from_slice(&few);
    backend.truncate_cache(0, deep.len()).unwrap();
    let next = generate_to_string(backend.as_mut(), &greedy(tokens, 0, 1)).unwrap();
    assert_eq!(next.reused_tokens, deep.len(), "{next:?}");
    // Shallow in the cache nothing is padded either: only the new tokens are evaluated.
    backend.truncate_cache(0, 0).unwrap();
    let short = backend
        .tokenize(&chat_prompt("Hello there."), true)
        .unwrap();
    let g = generate_to_string(backend.as_mut(), &greedy(short.clone(), 0, 1)).unwrap();
    let mut longer = short;
    longer.extend_from_slice(&g.tokens);
    longer.extend_from_slice(&few);
    let held = backend.cached_tokens(0);
    let g = generate_to_string(backend.as_mut(), &greedy(longer.clone(), 0, 1)).unwrap();
    assert_eq!(g.reused_tokens, held, "{g:?}");
    assert!(g.prompt_tokens - g.reused_tokens < 64, "{g:?}");
}

#[test]
fn a_handle_tokenizes_while_the_engine_thread_waits_for_another_callers_piece() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let options = EngineOptions {
        context_tokens: Some(512),
        threads: 1,
        sequences: 2,
        ..EngineOptions::default()
    };
    let engine = engine::llama::LlamaEngine::load(&default_model(), &options).unwrap();
    let expected = engine
        .clone()
        .tokenize("Hello there, river.", false)
        .unwrap();
    let mut generating = engine.clone();
    let mut tokenized = None;
    let request = greedy(chat_prompt("Tell me a story about a river.").as_str(), 0, 3);
    generating
        .generate(&request, &mut |_piece| {
            if tokenized.is_none() {
                // The engine thread is waiting for this callback's answer: a tokenizer that
                // needed it would wait forever.
                let (sent, answer) = std::sync::mpsc::channel();
                let mut other = engine.clone();
                std::thread::spawn(move || {
                    let _ = sent.send(other.tokenize("Hello there, river.", false));
                });
                tokenized = Some(
                    answer
                        .recv_timeout(std::time::Duration::from_secs(30))
                        .expect("tokenizing waited for the engine thread's step"),
                );
            }
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(tokenized.expect("a piece came").unwrap(), expected);
}
