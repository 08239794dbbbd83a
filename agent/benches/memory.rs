//! Memory figures, each side of a comparison in the same run on the same engine and settings:
//!
//! 1. language detection on short messages: 20-grapheme windows of the Universal Declaration in
//!    each of the eight languages (accuracy, and how many it declined to call);
//! 2. the step after an eviction, with the kept turns shifted in place (`seq_rm` + `seq_add`) vs
//!    evaluated again, and with a model-written summary, on a conversation near a 4096 window;
//! 3. resuming a 7000-token conversation (in an 8192 window) with its saved KV state vs evaluating it again.
//!
//! Parts 2 and 3 need `BENCH_MODEL` (a GGUF; `BENCH_THREADS`, default 2). Run with
//! `BENCH_MODEL=... cargo bench -p corral --bench memory`.

use std::path::PathBuf;
use std::time::Instant;

use corral::agent::{format_for_model, Agent, Decision, Event, Policy, TurnOptions};
use corral::engine::{self, Backend, EngineOptions, Sampling};
use corral::memory::language::detect;
use corral::memory::samples::UDHR;
use corral::memory::{Memory, MemorySettings};
use corral_prompts::{Conversation, Format, Message};
use corral_tools::Registry;
use unicode_segmentation::UnicodeSegmentation;

fn language_accuracy() {
    let mut all = (0, 0, 0);
    for (lang, text) in UDHR {
        let graphemes: Vec<&str> = text.graphemes(true).collect();
        let (mut right, mut none, mut total) = (0, 0, 0);
        for start in (0..graphemes.len().saturating_sub(20)).step_by(7) {
            let window: String = graphemes[start..start + 20].concat();
            total += 1;
            match detect(&window) {
                Some(l) if l == *lang => right += 1,
                None => none += 1,
                Some(_) => {}
            }
        }
        println!(
            "language {lang}: {right}/{total} right, {none} undecided, {} wrong (20 graphemes)",
            total - right - none
        );
        all = (all.0 + right, all.1 + none, all.2 + total);
    }
    println!(
        "language, all eight: {:.1}% right, {:.1}% undecided, {:.1}% wrong over {} messages",
        100.0 * all.0 as f64 / all.2 as f64,
        100.0 * all.1 as f64 / all.2 as f64,
        100.0 * (all.2 - all.0 - all.1) as f64 / all.2 as f64,
        all.2
    );
}

fn options(max_tokens: usize) -> TurnOptions {
    TurnOptions {
        max_tokens: Some(max_tokens),
        sampling: Sampling::greedy(),
        policy: Policy {
            default: Decision::Allow,
            tools: Default::default(),
        },
        ..TurnOptions::default()
    }
}

/// A conversation of user/assistant pairs of Declaration text, grown until it renders to
/// `tokens` tokens.
fn conversation_of(backend: &mut dyn Backend, format: &dyn Format, tokens: usize) -> Conversation {
    let text = UDHR[0].1;
    let mut conversation = Conversation::new(Vec::new());
    let mut i = 0;
    loop {
        conversation.push(Message::user(format!("Turn {i}. {text}")));
        conversation.push(Message::assistant(format!("Noted, turn {i}. {text}")));
        let rendered = format.render(&conversation, false).unwrap();
        if backend.tokenize(&rendered, true).unwrap().len() >= tokens {
            conversation
                .messages
                .truncate(conversation.messages.len() - 2);
            return conversation;
        }
        i += 1;
    }
}

/// Seconds of the turn that evicts, tokens it evaluated, tokens shifted.
fn eviction_step(
    backend: &mut dyn Backend,
    summarise: bool,
    shift: bool,
) -> (f64, usize, usize, f64) {
    let format = format_for_model(backend.info()).unwrap();
    let window = backend.info().context_tokens;
    let settings = MemorySettings {
        summarise,
        shift_in_place: shift,
        ..MemorySettings::for_window(window, 256)
    };
    let high = settings.high_mark();
    backend.truncate_cache(0, 0).unwrap();
    let mut conversation = conversation_of(backend, format.as_ref(), high - 200);
    let registry = Registry::new();
    let mut agent =
        Agent::new(backend, format.as_ref(), &registry).with_memory(Memory::new(settings));
    conversation.push(Message::user("Fill the cache."));
    agent.run_turn(&mut conversation, &options(1), &mut |_| true, &mut |_| {});
    // About 400 tokens: over the high mark.
    let over = UDHR[0].1.repeat(4);
    conversation.push(Message::user(format!("Now this pushes it over. {over}")));
    let mut shifted = 0;
    let mut memory_seconds = 0.0;
    let started = Instant::now();
    let outcome = agent.run_turn(&mut conversation, &options(1), &mut |_| true, &mut |e| {
        if let Event::Memory {
            shifted: s,
            seconds,
            ..
        } = e
        {
            shifted = *s;
            memory_seconds = *seconds;
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(
        outcome.stop,
        corral::agent::TurnStop::Answered,
        "{:?}",
        outcome.reason
    );
    (
        seconds,
        outcome.prompt_tokens - outcome.reused_tokens,
        shifted,
        memory_seconds,
    )
}

fn resume(backend: &mut dyn Backend) {
    let format = format_for_model(backend.info()).unwrap();
    let window = backend.info().context_tokens;
    backend.truncate_cache(0, 0).unwrap();
    let mut conversation = conversation_of(backend, format.as_ref(), 7000);
    let registry = Registry::new();
    let settings = MemorySettings::for_window(window, 256);
    let (transcript, state) = {
        let mut agent = Agent::new(backend, format.as_ref(), &registry)
            .with_memory(Memory::new(settings.clone()));
        agent.run_turn(&mut conversation, &options(1), &mut |_| true, &mut |_| {});
        let state = tempfile::NamedTempFile::new().unwrap();
        let bytes = agent.backend().save_sequence(0, state.path()).unwrap();
        println!(
            "resume: a {}-token conversation, KV state {:.1} MB",
            agent.transcript().tokens().len(),
            bytes as f64 / 1e6
        );
        (agent.transcript().clone(), state)
    };
    conversation.push(Message::user("One more question."));
    let mut times = Vec::new();
    for with_kv in [false, true] {
        backend.truncate_cache(0, 0).unwrap();
        let mut c = conversation.clone();
        let started = Instant::now();
        if with_kv {
            backend.restore_sequence(0, state.path()).unwrap();
        }
        let mut agent = Agent::new(backend, format.as_ref(), &registry)
            .with_memory(Memory::new(settings.clone()))
            .with_transcript(transcript.clone());
        let outcome = agent.run_turn(&mut c, &options(1), &mut |_| true, &mut |_| {});
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "resume {} KV state: {:.3} s to the first token, {} of {} prompt tokens evaluated",
            if with_kv { "with" } else { "without" },
            seconds,
            outcome.prompt_tokens - outcome.reused_tokens,
            outcome.prompt_tokens
        );
        times.push(seconds);
    }
    println!(
        "resume: with the KV state {:.1}x faster",
        times[0] / times[1]
    );
}

fn main() {
    language_accuracy();
    let Some(model) = std::env::var_os("BENCH_MODEL").map(PathBuf::from) else {
        println!("(BENCH_MODEL not set: the KV figures need a model)");
        return;
    };
    let threads = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    let load = |ctx: u32| {
        let options = EngineOptions {
            context_tokens: Some(ctx),
            threads,
            ..EngineOptions::default()
        };
        engine::llama::load(&model, &options).expect("load model")
    };
    let mut backend = load(4096);
    let rows = [
        ("shifted in place", false, true),
        ("evaluated again", false, false),
        ("with a model summary", true, true),
    ];
    let mut base = None;
    for (name, summarise, shift) in rows {
        let (seconds, evaluated, shifted, memory) =
            eviction_step(backend.as_mut(), summarise, shift);
        let base = *base.get_or_insert(seconds);
        println!(
            "eviction at 4096, kept turns {name}: {seconds:.3} s for the step ({:.2}x the shift), \
             {evaluated} tokens evaluated, {shifted} shifted, memory's own work {memory:.3} s",
            seconds / base
        );
    }
    drop(backend);
    // The default model's training context is 8192: the conversation takes 7000 of it.
    let mut backend = load(8192);
    resume(backend.as_mut());
}
