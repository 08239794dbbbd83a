//! Section 6: aggregate generation speed with several conversations generating at once on one
//! loaded model, vs `llama-server -np N` on the same workload.
//!
//! Each conversation asks its own question (a chat prompt of about 40 tokens) and generates up
//! to `stream_tokens` tokens greedily. corral is measured twice: its engine with a sequence per
//! conversation, asked from one thread per conversation at once through its own handle, and
//! `corral serve --parallel N` asked over HTTP exactly as llama-server is (N streamed requests
//! at once to a server started with `-np N`). Both decode the conversations' tokens together,
//! one batch per step. Aggregate speed = all tokens generated / wall time from the first
//! request to the last token; the three sides take turns (each round another goes first),
//! `reps` rounds, medians reported.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use corral_prompts::{Conversation, Message};
use serde_json::json;

use super::reference::{LlamaTools, Server, ServerSettings};
use super::report::{Report, Row, Target};
use super::{flash_flag, median, Plan};
use crate::agent::format_for_model;
use crate::engine::llama::LlamaEngine;
use crate::engine::{Backend, EngineOptions, GenerateRequest, Prompt, Sampling};

fn question(i: usize) -> String {
    const TOPICS: [&str; 8] = [
        "rivers",
        "bridges",
        "volcanoes",
        "libraries",
        "trains",
        "gardens",
        "deserts",
        "harbours",
    ];
    format!(
        "Write a long, detailed story about {} for a child, with many events.",
        TOPICS[i % TOPICS.len()]
    )
}

/// Section 6.
///
/// # Errors
/// A failed load, generation or llama-server request.
pub fn run(
    model: &Path,
    options: &EngineOptions,
    plan: &Plan,
    tools: &LlamaTools,
    report: &mut Report,
) -> anyhow::Result<()> {
    let server_bin = tools.server()?;
    let context = 512u32;
    let name = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut single = None;
    for &streams in &plan.streams {
        // Three sides loaded at once and measured in turn, `plan.reps` times: corral's engine
        // (a sequence per conversation, each asked through its own handle), llama-server with
        // as many slots, and corral serve asked over HTTP exactly as llama-server is.
        let engine = LlamaEngine::load(
            model,
            &EngineOptions {
                context_tokens: Some(context),
                sequences: streams as u32,
                show_progress: false,
                ..options.clone()
            },
        )
        .with_context(|| format!("cannot load {}", model.display()))?;
        let format = format_for_model(engine.info()).map_err(anyhow::Error::msg)?;
        let prompts: Vec<String> = (0..streams)
            .map(|i| format.render(&Conversation::new(vec![Message::user(question(i))]), true))
            .collect::<Result<_, _>>()?;
        let settings = ServerSettings {
            context: context as usize * streams,
            slots: streams,
            threads: plan.threads,
            flash: flash_flag(options),
        };
        let llama_server = Server::start(&server_bin, model, &settings, &[])?;
        let corral_server = Server::start_corral(model, &settings)?;
        // Rates of corral's engine, llama-server and corral serve; each round another goes
        // first (who goes first runs just after another side's last token).
        let mut rates: [Vec<f64>; 3] = Default::default();
        for round in 0..plan.reps {
            for side in (0..3).map(|k| (round + k) % 3) {
                rates[side].push(match side {
                    0 => engine_rate(&engine, &prompts, plan.stream_tokens)?,
                    1 => served_rate(&llama_server, &name, streams, plan.stream_tokens)?,
                    _ => served_rate(&corral_server, &name, streams, plan.stream_tokens)?,
                });
            }
        }
        let [ours, theirs, served] = rates;
        drop((engine, llama_server, corral_server));
        let (ours, theirs, served) = (median(&ours), median(&theirs), median(&served));
        for (test, corral) in [
            (format!("{streams} at once"), ours),
            (format!("{streams} at once, served"), served),
        ] {
            report.row(Row {
                section: "concurrency",
                test,
                unit: "t/s",
                corral,
                reference: Some((format!("llama-server -np {streams}"), theirs)),
                target: Some(Target::AtLeast(1.0)),
            });
        }
        report.point("concurrency", "corral engine", streams as f64, ours);
        report.point("concurrency", "corral serve", streams as f64, served);
        report.point("concurrency", "llama-server", streams as f64, theirs);
        if streams == 1 {
            single = Some(ours);
        } else if let Some(one) = single {
            report.row(Row {
                section: "concurrency",
                test: format!("{streams} at once / one"),
                unit: "t/s",
                corral: ours,
                reference: Some(("corral, one".into(), one)),
                target: (streams == 4).then_some(Target::AtLeast(2.5)),
            });
        }
    }
    report.note(
        "concurrency",
        format!(
            "each conversation generates up to {} tokens greedily after its own ~40-token \
             question; both sides decode the conversations' tokens together, one batch per \
             step. \"at once\": corral's engine asked through a handle per conversation; \
             \"served\": corral serve --parallel N asked over HTTP exactly as llama-server is. \
             Medians of {} rounds, the three sides in turn, each round starting with another",
            plan.stream_tokens, plan.reps
        ),
    );
    Ok(())
}

/// Aggregate tokens/s of `conversations` jobs run at once, a thread each: all tokens they
/// generated (`job(i)` returns conversation `i`'s count) over the wall time from the start to
/// the last one's end.
fn aggregate_rate(
    conversations: usize,
    job: impl Fn(usize) -> anyhow::Result<u64> + Sync,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let generated: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..conversations)
            .map(|i| {
                let job = &job;
                scope.spawn(move || job(i))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a conversation's thread panicked"))?
            })
            .sum::<anyhow::Result<u64>>()
    })?;
    Ok(generated as f64 / started.elapsed().as_secs_f64())
}

/// Aggregate tokens/s of `engine` generating `prompts` at once, each on its own sequence
/// through its own handle and [`Backend::generate`]'s callback, as `corral run --parallel` and
/// the server ask it.
fn engine_rate(engine: &LlamaEngine, prompts: &[String], tokens: usize) -> anyhow::Result<f64> {
    aggregate_rate(prompts.len(), |sequence| {
        let request = GenerateRequest {
            prompt: Prompt::Text(prompts[sequence].clone()),
            sequence,
            max_tokens: Some(tokens),
            sampling: Sampling::greedy(),
            ..GenerateRequest::default()
        };
        let generation = engine
            .clone()
            .generate(&request, &mut |_| ControlFlow::Continue(()))?;
        Ok(generation.generated_tokens as u64)
    })
}

/// Aggregate tokens/s of `streams` streamed chat requests sent at once to `server`.
/// `name` is the model's file stem, a name both servers accept.
fn served_rate(server: &Server, name: &str, streams: usize, tokens: usize) -> anyhow::Result<f64> {
    aggregate_rate(streams, |i| {
        let body = json!({"model": name,
            "messages": [{"role": "user", "content": question(i)}],
            "max_tokens": tokens, "temperature": 0,
            "stream_options": {"include_usage": true}});
        server
            .chat(&body)?
            .generated
            .context("the server reported no token count")
    })
}
