//! Section 3: agent turns over a growing tool-calling history.
//!
//! The same conversation (weather questions, `get_weather` calls, their results and answers,
//! grown to each history length) is continued on three sides:
//!
//! - **corral**: [`Agent::run_turn`], whose transcript keeps the exact tokens of the cache, so a
//!   new turn evaluates only its new messages;
//! - **re-evaluated**: the same turn from an empty cache, as a loop that renders and evaluates
//!   the whole prompt every turn does;
//! - **llama-server**: each turn's prompt — the very text corral renders for it, the server's
//!   own replies included — sent to its OpenAI completions endpoint (`/v1/completions`,
//!   `cache_prompt` on), so both engines evaluate the same tokens at the same depths and the
//!   server reuses its cached prefix as it can. (Sent as chat messages, llama-server renders
//!   tool calls and results in its own, shorter way, and the depths would differ.)
//!
//! Each history is first sent once (the cold turn fills the caches), then the conversation goes
//! on with a new user message per measured turn. Time to first token is from the turn's start
//! (corral) or the request's sending (llama-server) to the first generated text; turn time ends
//! with the last token. Every turn generates at most `turn_tokens` tokens, greedily.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use corral_prompts::{Conversation, Format, Message, ToolCall};
use corral_tools::{FnTool, Registry, ToolSpec};
use serde_json::json;

use super::reference::{LlamaTools, Server, ServerSettings};
use super::report::{Report, Row, Target};
use super::{flash_flag, load, median, Plan};
use crate::agent::{format_for_model, prompt_tools, Agent, Decision, Policy, TurnOptions};
use crate::engine::{Backend, EngineOptions, Sampling, Watched, Watcher};

const CITIES: [&str; 8] = [
    "Paris", "Lyon", "Berlin", "Madrid", "Rome", "Lisbon", "Delhi", "Bangkok",
];

fn weather_tool() -> ToolSpec {
    ToolSpec::new(
        "get_weather",
        "Current weather in a city",
        json!({"type": "object", "properties": {"city": {"type": "string"}},
               "required": ["city"]}),
    )
}

/// Appends past exchange `i`: a question, a `get_weather` call, its result and an answer.
fn exchange(conversation: &mut Conversation, i: usize) {
    let city = CITIES[i % CITIES.len()];
    let temperature = 8 + i % 17;
    conversation.push(Message::user(format!(
        "Trip {i}: what is the weather in {city} right now? I am packing tonight."
    )));
    let mut call = ToolCall::new("get_weather", json!({"city": city}));
    call.id = Some(format!("call_{i}"));
    conversation.push(Message::tool_calls(vec![call]));
    conversation.push(Message::Tool {
        content: corral_prompts::ToolOutput::Json(
            json!({"city": city, "temperature_c": temperature, "sky": "cloudy"}),
        ),
        call_id: Some(format!("call_{i}")),
    });
    conversation.push(Message::assistant(format!(
        "In {city} it is {temperature} °C and cloudy: pack a light jacket for trip {i}."
    )));
}

/// The system message and tools, then as many past exchanges as fit in `tokens` tokens.
fn history_of(
    backend: &mut dyn Backend,
    format: &dyn Format,
    tools: Vec<corral_prompts::ToolSpec>,
    tokens: usize,
) -> anyhow::Result<Conversation> {
    let count = |backend: &mut dyn Backend, c: &Conversation| -> anyhow::Result<usize> {
        Ok(backend.tokenize(&format.render(c, false)?, true)?.len())
    };
    let system = "You are a travel assistant. Use get_weather for weather questions.";
    let dialogue = Conversation::new(vec![Message::system(system)]).with_tools(tools);
    if tokens == 0 {
        return Ok(dialogue);
    }
    let base = count(backend, &dialogue)?;
    let mut probe = dialogue.clone();
    for i in 0..8 {
        exchange(&mut probe, i);
    }
    let per_exchange = (count(backend, &probe)?.saturating_sub(base) / 8).max(1);
    let with = |n: usize| {
        let mut d = dialogue.clone();
        for i in 0..n {
            exchange(&mut d, i);
        }
        d
    };
    // The most exchanges that stay within `tokens`: from the estimate, down or up one at a time.
    let mut n = tokens.saturating_sub(base) / per_exchange;
    while n > 0 && count(backend, &with(n))? > tokens {
        n -= 1;
    }
    while count(backend, &with(n + 1))? <= tokens {
        n += 1;
    }
    Ok(with(n))
}

/// Watches a measured turn: when its first generated text arrives.
#[derive(Default)]
struct FirstToken(Option<Instant>);

impl Watcher for FirstToken {
    fn piece(&mut self, _piece: &str) {
        self.0.get_or_insert_with(Instant::now);
    }
}

/// What one measured turn took.
#[derive(Debug, Clone, Copy, Default)]
struct Timing {
    first_token: f64,
    turn: f64,
    /// Prompt tokens, and of those evaluated (not taken from a cache).
    prompt: usize,
    evaluated: usize,
    generated: usize,
}

/// Runs one turn of `conversation` (whose last message is the user's) through the agent, which
/// appends the reply.
fn corral_turn(
    backend: &mut dyn Backend,
    format: &dyn Format,
    registry: &Registry,
    agent_state: &mut Option<crate::agent::Transcript>,
    conversation: &mut Conversation,
    max_tokens: usize,
) -> anyhow::Result<Timing> {
    let mut timed = Watched::new(backend, FirstToken::default());
    let options = TurnOptions {
        max_tokens: Some(max_tokens),
        max_steps: 1,
        sampling: Sampling::greedy(),
        policy: Policy {
            default: Decision::Allow,
            tools: Default::default(),
        },
        ..TurnOptions::default()
    };
    let started = Instant::now();
    let mut agent = Agent::new(&mut timed, format, registry)
        .with_transcript(agent_state.take().unwrap_or_default());
    let outcome = agent.run_turn(conversation, &options, &mut |_| true, &mut |_| {});
    let turn = started.elapsed().as_secs_f64();
    *agent_state = Some(agent.transcript().clone());
    drop(agent);
    if let Some(reason) = &outcome.reason {
        if outcome.stop == crate::agent::TurnStop::Error {
            anyhow::bail!("the agent's turn failed: {reason}");
        }
    }
    Ok(Timing {
        first_token: timed
            .watcher
            .0
            .map_or(turn, |t| t.duration_since(started).as_secs_f64()),
        turn,
        prompt: outcome.prompt_tokens,
        evaluated: outcome.prompt_tokens - outcome.reused_tokens,
        generated: outcome.generated_tokens,
    })
}

/// The medians of `timings`.
fn medians(timings: &[Timing]) -> Timing {
    let pick = |f: fn(&Timing) -> f64| median(&timings.iter().map(f).collect::<Vec<_>>());
    Timing {
        first_token: pick(|t| t.first_token),
        turn: pick(|t| t.turn),
        prompt: pick(|t| t.prompt as f64) as usize,
        evaluated: pick(|t| t.evaluated as f64) as usize,
        generated: pick(|t| t.generated as f64) as usize,
    }
}

fn question(rep: usize) -> String {
    let city = CITIES[(rep * 3 + 1) % CITIES.len()];
    format!("New plan {rep}: should I take an umbrella to {city} tomorrow? Answer briefly.")
}

/// Section 3.
///
/// # Errors
/// A failed load, turn or llama-server request.
pub fn run(
    model: &Path,
    options: &EngineOptions,
    plan: &Plan,
    tools: &LlamaTools,
    report: &mut Report,
) -> anyhow::Result<()> {
    let longest = plan.histories.iter().copied().max().unwrap_or(0);
    // Room after the longest history for the cold turn and the measured ones.
    let context = (longest + 256 + (plan.reps + 1) * (plan.turn_tokens + 64)).div_ceil(256) * 256;
    let mut backend = load(model, options, context as u32, 1)?;
    let trained = backend.info().trained_context_tokens;
    let format = format_for_model(backend.info()).map_err(anyhow::Error::msg)?;
    let mut registry = Registry::new();
    registry.register(
        Arc::new(FnTool::new(weather_tool(), |args| {
            Ok(json!({"city": args["city"], "temperature_c": 14, "sky": "cloudy"}).to_string())
        })),
        "bench",
    )?;
    let specs = prompt_tools(&registry, None);
    let body = |prompt: &str| {
        json!({"model": "bench", "prompt": prompt, "max_tokens": plan.turn_tokens,
               "temperature": 0})
    };
    // corral first, alone; then llama-server, alone, on the same dialogues.
    let mut measured = Vec::new();
    for &history in &plan.histories {
        let base = history_of(backend.as_mut(), format.as_ref(), specs.clone(), history)?;
        let history_tokens = backend.tokenize(&format.render(&base, false)?, true)?.len();

        // corral: a cold turn, then the measured ones.
        backend.truncate_cache(0, 0)?;
        let mut state = None;
        let mut dialogue = base.clone();
        dialogue.push(Message::user(question(0)));
        corral_turn(
            backend.as_mut(),
            format.as_ref(),
            &registry,
            &mut state,
            &mut dialogue,
            plan.turn_tokens,
        )?;
        let mut ours = Vec::new();
        let mut snapshots = Vec::new();
        for rep in 1..=plan.reps {
            dialogue.push(Message::user(question(rep)));
            snapshots.push(dialogue.clone());
            ours.push(corral_turn(
                backend.as_mut(),
                format.as_ref(),
                &registry,
                &mut state,
                &mut dialogue,
                plan.turn_tokens,
            )?);
        }
        // Evaluated again: the same turns from an empty cache and a fresh agent (fewer past
        // 8K tokens: each one is a whole prompt's evaluation).
        let mut again = Vec::new();
        let count = if history >= 8192 { 1 } else { plan.reps.min(3) };
        for mut snapshot in snapshots.iter().take(count).cloned() {
            backend.truncate_cache(0, 0)?;
            again.push(corral_turn(
                backend.as_mut(),
                format.as_ref(),
                &registry,
                &mut None,
                &mut snapshot,
                plan.turn_tokens,
            )?);
        }
        measured.push((
            history,
            history_tokens,
            base,
            snapshots,
            medians(&ours),
            medians(&again),
        ));
    }
    drop(backend);

    // Past the model's training context llama-server caps each slot's window at it, unless
    // the model's metadata says otherwise: told the same window corral was given.
    let mut extra = Vec::new();
    if context > trained {
        let architecture = crate::model::gguf::inspect(model)?.architecture;
        extra.push("--override-kv".to_string());
        extra.push(format!("{architecture}.context_length=int:{context}"));
    }
    let settings = ServerSettings {
        context,
        slots: 1,
        threads: plan.threads,
        flash: flash_flag(options),
    };
    let server = Server::start(&tools.server()?, model, &settings, &extra)?;
    let mut at_zero = None;
    for (history, history_tokens, base, snapshots, ours, again) in measured {
        // llama-server: the same history, a cold request, then measured ones.
        // Each measured prompt is the one corral's agent had for that turn (its replies and
        // tool results included), so both sides evaluate the same new text at the same depth.
        let mut conversation = base;
        conversation.push(Message::user(question(0)));
        server.complete(&body(&format.render(&conversation, true)?))?;
        let mut theirs = Vec::new();
        for snapshot in &snapshots {
            let s = server.complete(&body(&format.render(snapshot, true)?))?;
            theirs.push(Timing {
                first_token: s.first_token,
                turn: s.total,
                prompt: (s.evaluated.unwrap_or(0) + s.cached.unwrap_or(0)) as usize,
                evaluated: s.evaluated.unwrap_or(0) as usize,
                generated: s.generated.unwrap_or(0) as usize,
            });
        }
        let theirs = medians(&theirs);
        let at = format!("@ {history_tokens}");
        report.row(Row {
            section: "turns",
            test: format!("TTFT {at} vs re-eval"),
            unit: "s",
            corral: ours.first_token,
            reference: Some(("re-evaluated".into(), again.first_token)),
            target: None,
        });
        report.row(Row {
            section: "turns",
            test: format!("TTFT {at}"),
            unit: "s",
            corral: ours.first_token,
            reference: Some(("llama-server".into(), theirs.first_token)),
            target: None,
        });
        report.row(Row {
            section: "turns",
            test: format!("turn {at}"),
            unit: "s",
            corral: ours.turn,
            reference: Some(("llama-server".into(), theirs.turn)),
            target: Some(Target::AtMost(1.0)),
        });
        report.note(
            "turns",
            format!(
                "history {history_tokens} tokens: per turn (medians) corral evaluated {} of {} \
                 prompt tokens and generated {}; re-evaluated {} of {} and {}; llama-server {} \
                 of {} and {}",
                ours.evaluated,
                ours.prompt,
                ours.generated,
                again.evaluated,
                again.prompt,
                again.generated,
                theirs.evaluated,
                theirs.prompt,
                theirs.generated
            ),
        );
        let x = history_tokens as f64;
        report.point("ttft", "corral", x, ours.first_token);
        report.point("ttft", "re-evaluated", x, again.first_token);
        report.point("ttft", "llama-server", x, theirs.first_token);
        if history == 0 {
            at_zero = Some(ours.first_token);
        }
        if history == 8192 {
            if let Some(zero) = at_zero {
                report.row(Row {
                    section: "turns",
                    test: format!("TTFT {at} / TTFT @ 0"),
                    unit: "s",
                    corral: ours.first_token,
                    reference: Some(("corral @ 0".into(), zero)),
                    target: Some(Target::AtMost(1.2)),
                });
            }
        }
    }
    if longest > trained {
        report.note(
            "turns",
            format!(
                "histories past the model's {trained}-token training context run on both sides \
                 (timing only: the model's replies there are not meaningful)"
            ),
        );
    }
    Ok(())
}
