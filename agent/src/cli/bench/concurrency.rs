//! Section 6: aggregate generation speed with several conversations generating at once on one
//! loaded model, vs `llama-server -np N` on the same workload.
//!
//! Each conversation asks its own question (a chat prompt of about 40 tokens) and generates up
//! to `stream_tokens` tokens greedily. corral's side is one engine with a sequence per
//! conversation, asked from one thread per conversation at once through its own handle; the
//! engine decodes the conversations' tokens together, one batch per step. llama-server's side is N streamed requests at once to a server started with `-np N`.
//! Aggregate speed = all tokens generated / wall time from the first request to the last token.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use corral_prompts::{Conversation, Message};
use serde_json::json;

use super::reference::{LlamaTools, Server, ServerSettings};
use super::report::{Report, Row, Target};
use super::{flash_flag, Plan};
use crate::agent::format_for_model;
use crate::engine::llama::{LlamaEngine, StreamEvent};
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
    let mut single = None;
    for &streams in &plan.streams {
        // corral: one engine, a sequence per conversation, all asked at once through their
        // own handles.
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
        let started = Instant::now();
        let generated: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = prompts
                .iter()
                .enumerate()
                .map(|(sequence, prompt)| {
                    let engine = engine.clone();
                    scope.spawn(move || -> anyhow::Result<usize> {
                        let request = GenerateRequest {
                            prompt: Prompt::Text(prompt.clone()),
                            sequence,
                            max_tokens: Some(plan.stream_tokens),
                            sampling: Sampling::greedy(),
                            ..GenerateRequest::default()
                        };
                        // Streamed, as the server takes it: pieces go out without waiting for
                        // this thread.
                        let mut events = engine.generate_stream(request)?;
                        while let Some(event) = events.blocking_recv() {
                            if let StreamEvent::Done(result) = event {
                                return Ok(result?.generated_tokens);
                            }
                        }
                        anyhow::bail!("the engine stopped without finishing the generation")
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("a generation thread panicked"))?
                })
                .sum::<anyhow::Result<usize>>()
        })?;
        let ours = generated as f64 / started.elapsed().as_secs_f64();
        drop(engine);

        // llama-server with as many slots, the same questions at once.
        let settings = ServerSettings {
            context: context as usize * streams,
            slots: streams,
            threads: plan.threads,
            flash: flash_flag(options),
        };
        let server = Server::start(&server_bin, model, &settings, &[])?;
        let started = Instant::now();
        let theirs_generated: u64 = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..streams)
                .map(|i| {
                    let server = &server;
                    scope.spawn(move || -> anyhow::Result<u64> {
                        let body = json!({"model": "bench",
                            "messages": [{"role": "user", "content": question(i)}],
                            "max_tokens": plan.stream_tokens, "temperature": 0});
                        let s = server.chat(&body)?;
                        s.generated.context("llama-server reported no token count")
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("a request thread panicked"))?
                })
                .sum::<anyhow::Result<u64>>()
        })?;
        let theirs = theirs_generated as f64 / started.elapsed().as_secs_f64();
        drop(server);

        report.row(Row {
            section: "concurrency",
            test: format!("{streams} at once"),
            unit: "t/s",
            corral: ours,
            reference: Some((format!("llama-server -np {streams}"), theirs)),
            target: Some(Target::AtLeast(1.0)),
        });
        report.point("concurrency", "corral", streams as f64, ours);
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
             step",
            plan.stream_tokens
        ),
    );
    Ok(())
}
