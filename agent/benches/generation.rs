//! Generation speed: corral's engine vs llama.cpp's own `llama-bench`, in one run, as ratios;
//! then the cost of constrained tool calls.
//!
//! Run with `make bench` (builds llama-bench, then this). Both use the same model file, thread
//! count, llama.cpp source and compiler flags (`scripts/bench.sh` builds llama-bench with the
//! build type and flags of corral's own llama.cpp build), and both repack weights for this CPU
//! (AMX on the development machine); llama-bench also runs without repacking, to show what it
//! is worth (corral cannot turn it off: see `main`). Measured like llama-bench: pp = prompt tokens per second for a
//! 128-token prompt evaluated in one batch; tg = tokens per second generating 64 tokens after a
//! near-empty context. corral's figures include its sampling (greedy), UTF-8 decoding and stop
//! checks, which llama-bench does not do. Each side runs `REPS` times; medians are compared.
//!
//! # Constrained tool calls
//! The last line compares a ChatML turn constrained to a call (`tool_choice=required`, one
//! tool, greedy, at most `GEN_TOKENS` tokens) with free generation of *the same number of
//! tokens at the same depth*: the free run's prompt is padded text with exactly as many tokens
//! as the tool prompt, and it is asked for exactly as many tokens as the constrained turn
//! produced (free generation on the tool prompt itself would stop after a few tokens of prose,
//! and a decode step costs the same whatever the token is, so only the count and the depth must
//! match). Both times are the engine's `generate_seconds`: everything after the prompt is
//! evaluated. On the constrained side that includes cloning the cached grammar, finding the
//! tokens the grammar forces and computing a token mask for each sampled one. Forced tokens are
//! fast-forwarded (evaluated in one batch), so a constrained turn can take *less* time than a
//! free one. The runs alternate, so a change in machine load hits both; the figure is the median
//! over `REPS` of each pair's ratio. One-off costs (walking the vocabulary to build llguidance's
//! token trie, compiling the grammar) fall on the first constrained turn: they are reported
//! separately (its excess over its free partner, less the usual excess) and left out of the
//! medians.
//!
//! Environment: `LLAMA_BENCH` (path of llama-bench; without it only the constrained comparison
//! runs), `BENCH_MODEL` (GGUF), `BENCH_THREADS`.

use std::path::PathBuf;
use std::process::Command;

use corral::engine::{self, generate_to_string, EngineOptions, GenerateRequest, Sampling};
use corral_prompts::hermes::Hermes;
use corral_prompts::{Conversation, Format, Message, ToolChoice, ToolSpec};

const REPS: usize = 5;
const PROMPT_TOKENS: usize = 128;
const GEN_TOKENS: usize = 64;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// Runs llama-bench, repacking weights or not, and returns (pp t/s, tg t/s).
fn llama_bench(bin: &str, model: &str, threads: u32, repack: bool) -> (f64, f64) {
    let output = Command::new(bin)
        .args(["-m", model, "-t", &threads.to_string()])
        .args([
            "-p",
            &PROMPT_TOKENS.to_string(),
            "-n",
            &GEN_TOKENS.to_string(),
        ])
        .args(["-r", &REPS.to_string(), "-o", "json"])
        .args(["--repack", if repack { "1" } else { "0" }])
        .output()
        .expect("run llama-bench");
    assert!(
        output.status.success(),
        "llama-bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&output.stdout).expect("llama-bench JSON");
    let rate = |prompt: u64, gen: u64| {
        rows.as_array()
            .and_then(|rows| {
                rows.iter()
                    .find(|r| r["n_prompt"] == prompt && r["n_gen"] == gen)
            })
            .and_then(|r| r["avg_ts"].as_f64())
            .expect("llama-bench row")
    };
    (rate(PROMPT_TOKENS as u64, 0), rate(0, GEN_TOKENS as u64))
}

/// A prompt of exactly `tokens` tokens for this model (a list the model goes on with).
fn prompt_of_tokens(backend: &mut dyn engine::Backend, tokens: usize) -> String {
    let mut text = String::new();
    let mut n = 0;
    while backend.tokenize(&text, true).unwrap().len() < tokens {
        n += 1;
        text.push_str(&format!(" item {n},"));
    }
    while backend.tokenize(&text, true).unwrap().len() > tokens {
        text.pop();
    }
    text
}

fn main() {
    let bench_bin = std::env::var("LLAMA_BENCH").ok();
    let model = PathBuf::from(std::env::var("BENCH_MODEL").expect("BENCH_MODEL"));
    let threads: u32 = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    let options = EngineOptions {
        context_tokens: Some(2048),
        threads,
        ..EngineOptions::default()
    };
    let mut backend = engine::llama::load(&model, &options).expect("load model");
    let Some(bench_bin) = bench_bin else {
        eprintln!("LLAMA_BENCH is not set: only the constrained comparison runs");
        print_constrained(&constrained_cost(backend.as_mut()));
        return;
    };

    let prompt = prompt_of_tokens(backend.as_mut(), PROMPT_TOKENS);
    let prompt_tokens = backend.tokenize(&prompt, true).unwrap().len();
    // Like for like: both sides repack weights for this CPU (AMX on the development machine).
    let (corral_pp, corral_tg) = corral_rates(backend.as_mut(), &prompt);
    let constrained = constrained_cost(backend.as_mut());
    // Nothing of corral's is left running while the reference runs.
    drop(backend);
    println!(
        "model: {}  threads: {threads}  prompt: {prompt_tokens} tokens  reps: {REPS}",
        model.display()
    );
    println!(
        "{:<8} {:>14} {:>14} {:>8}",
        "test", "corral t/s", "llama-bench", "ratio"
    );
    let (ref_pp, ref_tg) = llama_bench(&bench_bin, model.to_str().unwrap(), threads, true);
    for (test, ours, theirs) in [
        (format!("pp{PROMPT_TOKENS}"), corral_pp, ref_pp),
        (format!("tg{GEN_TOKENS}"), corral_tg, ref_tg),
    ] {
        println!(
            "{test:<8} {ours:>14.1} {theirs:>14.1} {:>8.3}",
            ours / theirs
        );
    }
    // What repacking is worth, on the reference alone: llama-cpp-2 0.1.160 has no way to clear
    // `use_extra_bufts` (a buffer override to the CPU type still picks the repacked types), so
    // corral cannot run the other half of the comparison.
    let (plain_pp, plain_tg) = llama_bench(&bench_bin, model.to_str().unwrap(), threads, false);
    println!(
        "llama-bench without repacking (--repack 0): pp{PROMPT_TOKENS} {plain_pp:.1} t/s, \
         tg{GEN_TOKENS} {plain_tg:.1} t/s: repacking makes it {:.2}x / {:.2}x faster",
        ref_pp / plain_pp,
        ref_tg / plain_tg
    );
    print_constrained(&constrained);
}

/// corral's prompt processing and generation rates (t/s, medians over `REPS` after one warm-up
/// repetition, as llama-bench warms up): `prompt` evaluated in one batch, and `GEN_TOKENS`
/// greedy tokens after a near-empty context.
fn corral_rates(backend: &mut dyn engine::Backend, prompt: &str) -> (f64, f64) {
    let mut pp = Vec::new();
    let mut tg = Vec::new();
    for _ in 0..=REPS {
        backend.truncate_cache(0, 0).unwrap();
        let g = generate_to_string(
            backend,
            &GenerateRequest {
                prompt: prompt.to_owned().into(),
                max_tokens: Some(1),
                sampling: Sampling::greedy(),
                ..GenerateRequest::default()
            },
        )
        .unwrap();
        pp.push(g.prompt_tokens as f64 / g.prompt_seconds);
        backend.truncate_cache(0, 0).unwrap();
        let g = generate_to_string(
            backend,
            &GenerateRequest {
                prompt: "Once upon a time".into(),
                max_tokens: Some(GEN_TOKENS),
                sampling: Sampling::greedy(),
                ..GenerateRequest::default()
            },
        )
        .unwrap();
        assert_eq!(
            g.generated_tokens, GEN_TOKENS,
            "generation ended early: {:?}",
            g.stop
        );
        tg.push(g.generated_tokens as f64 / g.generate_seconds);
    }
    (median(pp[1..].to_vec()), median(tg[1..].to_vec()))
}

/// Constrained vs free generation over the same token count and depth (see the crate docs).
struct ConstrainedCost {
    /// Tokens each run generated (the constrained turn's count; the free run matches it).
    tokens: usize,
    /// Prompt tokens before them.
    depth: usize,
    /// Median milliseconds per generated token.
    constrained_ms: f64,
    free_ms: f64,
    /// Median over pairs of constrained time / free time.
    ratio: f64,
    /// Milliseconds the first constrained turn took beyond what later ones take over their free
    /// partner (walking the vocabulary for the token trie, compiling the grammar).
    one_off_ms: f64,
    /// The constrained turn's text.
    text: String,
}

fn print_constrained(cost: &ConstrainedCost) {
    println!(
        "tool-call turn (ChatML, tool_choice=required): {} tokens at depth {}: constrained \
         {:.2} ms/token ({:.1} t/s) vs free {:.2} ms/token ({:.1} t/s): constrained time {:+.1}% \
         (median of {REPS} alternating pairs); one-off on the first turn {:.0} ms",
        cost.tokens,
        cost.depth,
        cost.constrained_ms,
        1e3 / cost.constrained_ms,
        cost.free_ms,
        1e3 / cost.free_ms,
        (cost.ratio - 1.0) * 100.0,
        cost.one_off_ms,
    );
    println!("constrained text: {:?}", cost.text);
}

/// Runs a constrained turn and a free one of the same length at the same depth, alternately,
/// `REPS` times after a first pair that carries the one-off costs.
fn constrained_cost(backend: &mut dyn engine::Backend) -> ConstrainedCost {
    let template = backend
        .info()
        .chat_template
        .clone()
        .expect("model has a chat template");
    let format = Hermes::new(&template, "", "<|im_end|>").expect("ChatML template");
    let weather = ToolSpec::new(
        "get_weather",
        "Current weather in a city",
        serde_json::json!({"type": "object", "properties": {"city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"]}),
    );
    let conversation = Conversation::new(vec![Message::user("Weather in Paris, in celsius?")])
        .with_tools(vec![weather]);
    let prompt = format.render(&conversation, true).expect("render");
    let constraint = format
        .constraint(&conversation, &ToolChoice::Required)
        .expect("constraint");
    let depth = backend.tokenize(&prompt, true).unwrap().len();
    let padded = prompt_of_tokens(backend, depth);
    let mut run = |prompt: &str, max_tokens: usize, constraint: Option<_>| {
        backend.truncate_cache(0, 0).unwrap();
        let request = GenerateRequest {
            prompt: prompt.into(),
            max_tokens: Some(max_tokens),
            sampling: Sampling::greedy(),
            constraint,
            ..GenerateRequest::default()
        };
        generate_to_string(backend, &request).unwrap()
    };
    // Warm the engine up, so the first pair differs from the others only by one-off costs.
    run(&padded, GEN_TOKENS, None);
    let (mut constrained_ms, mut free_ms, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut first_extra_ms, mut extra_ms) = (0.0, Vec::new());
    let mut text = String::new();
    let mut tokens = 0;
    for rep in 0..=REPS {
        let c = run(&prompt, GEN_TOKENS, constraint.clone());
        assert!(c.constrained);
        let f = run(&padded, c.generated_tokens, None);
        assert_eq!(
            f.generated_tokens, c.generated_tokens,
            "free generation ended early: {:?}",
            f.stop
        );
        let per_token =
            |g: &engine::Generation| g.generate_seconds * 1e3 / g.generated_tokens as f64;
        let extra = (c.generate_seconds - f.generate_seconds) * 1e3;
        if rep == 0 {
            first_extra_ms = extra;
            continue;
        }
        extra_ms.push(extra);
        constrained_ms.push(per_token(&c));
        free_ms.push(per_token(&f));
        ratios.push(c.generate_seconds / f.generate_seconds);
        tokens = c.generated_tokens;
        text = c.text;
    }
    ConstrainedCost {
        tokens,
        depth,
        constrained_ms: median(constrained_ms),
        free_ms: median(free_ms),
        ratio: median(ratios),
        one_off_ms: first_extra_ms - median(extra_ms),
        text,
    }
}
