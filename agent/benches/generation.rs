//! Generation speed: corral's engine vs llama.cpp's own `llama-bench`, in one run, as ratios.
//!
//! Run with `make bench` (builds llama-bench, then this). Both use the same model file, thread
//! count and llama.cpp source. Measured like llama-bench: pp = prompt tokens per second for a
//! 128-token prompt evaluated in one batch; tg = tokens per second generating 64 tokens after a
//! near-empty context. corral's figures include its sampling (greedy), UTF-8 decoding and stop
//! checks, which llama-bench does not do. Each side runs `REPS` times; medians are compared.
//!
//! Environment: `LLAMA_BENCH` (path of llama-bench), `BENCH_MODEL` (GGUF), `BENCH_THREADS`.

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

/// Runs llama-bench and returns (pp t/s, tg t/s).
fn llama_bench(bin: &str, model: &str, threads: u32) -> (f64, f64) {
    let output = Command::new(bin)
        .args(["-m", model, "-t", &threads.to_string()])
        .args([
            "-p",
            &PROMPT_TOKENS.to_string(),
            "-n",
            &GEN_TOKENS.to_string(),
        ])
        .args(["-r", &REPS.to_string(), "-o", "json"])
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

/// A prompt of exactly `PROMPT_TOKENS` tokens for this model.
fn prompt_of_128_tokens(backend: &mut dyn engine::Backend) -> String {
    let mut text = String::new();
    let mut n = 0;
    while backend.tokenize(&text, true).unwrap().len() < PROMPT_TOKENS {
        n += 1;
        text.push_str(&format!(" item {n},"));
    }
    while backend.tokenize(&text, true).unwrap().len() > PROMPT_TOKENS {
        text.pop();
    }
    text
}

fn main() {
    let Ok(bench_bin) = std::env::var("LLAMA_BENCH") else {
        eprintln!("set LLAMA_BENCH (run `make bench`, which builds llama-bench)");
        return;
    };
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

    let prompt = prompt_of_128_tokens(backend.as_mut());
    let prompt_tokens = backend.tokenize(&prompt, true).unwrap().len();
    let mut pp = Vec::new();
    let mut tg = Vec::new();
    for _ in 0..=REPS {
        backend.truncate_cache(0).unwrap();
        let g = generate_to_string(
            backend.as_mut(),
            &GenerateRequest {
                prompt: prompt.clone(),
                max_tokens: Some(1),
                sampling: Sampling::greedy(),
                ..GenerateRequest::default()
            },
        )
        .unwrap();
        pp.push(g.prompt_tokens as f64 / g.prompt_seconds);
        backend.truncate_cache(0).unwrap();
        let g = generate_to_string(
            backend.as_mut(),
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
    // The first repetition warms caches, as llama-bench's warm-up run does.
    let (corral_pp, corral_tg) = (median(pp[1..].to_vec()), median(tg[1..].to_vec()));
    let (free_tg, constrained_tg) = constrained_rates(backend.as_mut());
    let (ref_pp, ref_tg) = llama_bench(&bench_bin, model.to_str().unwrap(), threads);
    println!(
        "model: {}  threads: {threads}  prompt: {prompt_tokens} tokens  reps: {REPS}",
        model.display()
    );
    println!(
        "{:<8} {:>14} {:>14} {:>8}",
        "test", "corral t/s", "llama-bench", "ratio"
    );
    println!(
        "{:<8} {:>14.1} {:>14.1} {:>8.3}",
        format!("pp{PROMPT_TOKENS}"),
        corral_pp,
        ref_pp,
        corral_pp / ref_pp
    );
    println!(
        "{:<8} {:>14.1} {:>14.1} {:>8.3}",
        format!("tg{GEN_TOKENS}"),
        corral_tg,
        ref_tg,
        corral_tg / ref_tg
    );
    println!(
        "tool-call generation (ChatML, tool_choice=required): {constrained_tg:.1} t/s constrained vs \
         {free_tg:.1} t/s free on the same prompt: slowdown {:.1}%",
        (1.0 - constrained_tg / free_tg) * 100.0
    );
}

/// Tokens per second generating a turn for a one-tool conversation, free vs constrained to a
/// call (the grammar engaged from the first token). Medians over `REPS`.
fn constrained_rates(backend: &mut dyn engine::Backend) -> (f64, f64) {
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
    let mut rates = |constraint: Option<corral_prompts::ToolConstraint>| {
        let mut values = Vec::new();
        for _ in 0..=REPS {
            backend.truncate_cache(0).unwrap();
            let request = GenerateRequest {
                prompt: prompt.clone(),
                max_tokens: Some(GEN_TOKENS),
                sampling: Sampling::greedy(),
                constraint: constraint.clone(),
                ..GenerateRequest::default()
            };
            let g = generate_to_string(backend, &request).unwrap();
            values.push(g.generated_tokens as f64 / g.generate_seconds);
        }
        median(values[1..].to_vec())
    };
    let free = rates(None);
    let constrained = rates(constraint);
    (free, constrained)
}
