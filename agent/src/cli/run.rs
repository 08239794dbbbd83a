//! `corral run "TASK"`: one task, non-interactively, with tools; the answer on stdout.
//!
//! With `--json`, stdout carries the turn's events as JSON Lines instead (one object per line,
//! field `type`: `text`, `tool_call`, `tool_result`, `turn_finished`). Exit codes: 0 answered,
//! 1 runtime error, 2 usage error, 3 step limit, 4 a tool was denied, 130 cancelled (Ctrl-C).
//! Without `--tools`, every installed tool is offered except those of plugins that need a folder
//! and were granted none (`files` until a workspace is granted). Tools from builtin plugins are
//! allowed; any other tool asks, on the terminal when stdin is
//! one, else it is denied unless `--yes` approves it: piped input never blocks on a question.
//! Decoding is greedy unless `--temperature` is given, so a scripted run is reproducible.

use std::io::{IsTerminal, Write};

use clap::Args;
use corral_prompts::{Conversation, Message, ToolCall, ToolChoice};
use corral_tools::sanitize::strip_control;
use corral_tools::{plugins, Registry};

use super::sessions::{self, SessionFlags};
use super::tools::{home, sandbox, tools_error, warn_all};
use super::{session, GlobalOpts, UsageError};
use crate::agent::{
    format_for_model, prompt_tools, Agent, Decision, Event, Policy, TurnOptions, TurnStop,
};
use crate::memory::{Memory, MemorySettings, SummaryBy};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The task, as you would type it in the chat.
    pub task: String,
    /// Print the events as JSON Lines instead of the answer.
    #[arg(long)]
    pub json: bool,
    /// Offer only these tools (comma-separated names; default: every installed tool).
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    pub tools: Option<Vec<String>>,
    /// auto (the model decides), none, required (some call first), or a tool's name.
    #[arg(
        long = "tool-choice",
        default_value = "auto",
        value_name = "auto|none|required|NAME"
    )]
    pub tool_choice: String,
    /// Generations at most before the turn ends with exit code 3.
    #[arg(long = "max-steps", default_value_t = 8, value_name = "N")]
    pub max_steps: usize,
    /// Approve tools whose policy is to ask.
    #[arg(long)]
    pub yes: bool,
    /// Stop any one tool call after this many seconds (default: each tool's own limit); the
    /// model reads that it timed out.
    #[arg(long = "call-timeout", value_name = "SECONDS")]
    pub call_timeout: Option<f64>,
    /// Saved conversations.
    #[command(flatten)]
    pub session: SessionFlags,
}

pub fn run(args: &RunArgs, global: &GlobalOpts) -> anyhow::Result<u8> {
    if args.max_steps == 0 {
        return Err(UsageError::new("--max-steps must be at least 1").into());
    }
    let call_timeout = match args.call_timeout {
        None => None,
        Some(secs) => Some(
            std::time::Duration::try_from_secs_f64(secs)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    UsageError::new(format!(
                        "--call-timeout must be a positive number of seconds, got {secs}"
                    ))
                })?,
        ),
    };
    if args.task.trim().is_empty() {
        return Err(UsageError::new("the task is empty: corral run \"what to do\"").into());
    }
    let mut sampling = global.sampling()?;
    if global.temperature.is_none() {
        // Scripted runs are reproducible unless asked otherwise (and small models call tools
        // far more reliably greedily).
        sampling.temperature = 0.0;
    }
    let AgentTools {
        registry,
        policy,
        offered,
    } = agent_tools()?;
    if let Some(names) = &args.tools {
        if let Some(missing) = names.iter().find(|n| !registry.contains(n)) {
            let have: Vec<&str> = registry.specs().map(|(s, _)| s.name.as_str()).collect();
            return Err(UsageError::new(format!(
                "--tools: no tool named `{missing}` is installed (installed: {})",
                if have.is_empty() {
                    "none".to_owned()
                } else {
                    have.join(", ")
                }
            ))
            .into());
        }
    }
    let offered = args.tools.clone().unwrap_or(offered);
    let tools = prompt_tools(&registry, Some(&offered));
    let tool_choice = match args.tool_choice.as_str() {
        "auto" => ToolChoice::Auto,
        "none" => ToolChoice::None,
        "required" => ToolChoice::Required,
        name if tools.iter().any(|t| t.name == name) => ToolChoice::Named(name.to_owned()),
        other => {
            return Err(UsageError::new(format!(
            "--tool-choice {other}: expected auto, none, required or the name of an offered tool"
        ))
            .into())
        }
    };
    if tools.is_empty() && matches!(tool_choice, ToolChoice::Required | ToolChoice::Named(_)) {
        return Err(UsageError::new(
            "--tool-choice asks for a call, but no tool is offered (see `corral tools list`)",
        )
        .into());
    }

    let loaded = args.session.load()?;
    let mut backend = session::open_backend(global)?;
    let format = format_for_model(backend.info()).map_err(anyhow::Error::msg)?;
    let cancel = session::cancel_on_ctrl_c();
    let window = backend.info().context_tokens;
    let reserve = super::reply_budget(window);
    let mut opened = loaded.map(|l| l.open(&backend.info().name, window, reserve, tools.clone()));
    let options = TurnOptions {
        max_tokens: Some(reserve),
        max_steps: args.max_steps,
        tool_choice,
        sampling,
        policy,
        cancel,
        call_timeout,
        ..TurnOptions::default()
    };
    let (mut conversation, memory) = match &opened {
        Some(o) => (o.session.conversation.clone(), o.session.memory.clone()),
        None => {
            let c = Conversation::new(Vec::new());
            let c = if tools.is_empty() {
                c
            } else {
                c.with_tools(tools)
            };
            (c, Memory::new(MemorySettings::for_window(window, reserve)))
        }
    };
    conversation.push(Message::user(args.task.clone()));
    let interactive = std::io::stdin().is_terminal();
    let yes = args.yes;
    let mut approve = |call: &ToolCall| yes || (interactive && ask(call));
    let json = args.json;
    let mut stdout = std::io::stdout().lock();
    let mut on_event = |event: &Event| {
        if json {
            if let Ok(line) = serde_json::to_string(event) {
                let _ = writeln!(stdout, "{line}");
                let _ = stdout.flush();
            }
            return;
        }
        show_event(&mut stdout, event);
    };
    let mut agent = Agent::new(backend.as_mut(), format.as_ref(), &registry).with_memory(memory);
    if let Some(o) = &opened {
        agent = agent.with_transcript(o.session.transcript.clone());
        if args.session.session_kv {
            sessions::restore_kv(o, agent.backend(), 0);
        }
    }
    let outcome = agent.run_turn(&mut conversation, &options, &mut approve, &mut on_event);
    if let Some(o) = &mut opened {
        sessions::save(o, &conversation, &mut agent, args.session.session_kv)?;
    }
    if !json {
        if let Some(reason) = &outcome.reason {
            eprintln!("error: {}", strip_control(reason));
        }
    }
    Ok(match outcome.stop {
        TurnStop::Answered => 0,
        TurnStop::Error => 1,
        TurnStop::StepLimit => 3,
        TurnStop::Denied => 4,
        TurnStop::Cancelled => 130,
    })
}

/// The installed tools as the chat and `corral run` use them.
pub(super) struct AgentTools {
    /// Every loadable plugin's tools.
    pub registry: Registry,
    /// Tools from builtin plugins are allowed; any other tool asks.
    pub policy: Policy,
    /// The tools offered when none are named: all, except those of plugins that need a folder
    /// and were granted none (`files` before a workspace is granted).
    pub offered: Vec<String>,
}

/// Loads the installed plugins (showing what could not be loaded) into [`AgentTools`].
///
/// # Errors
/// No corral home, a sandbox that cannot start, or an invalid grants file.
pub(super) fn agent_tools() -> anyhow::Result<AgentTools> {
    let home = home()?;
    let sandbox = sandbox(&home)?;
    let loaded = plugins::load_registry(&home, &sandbox, &|name| std::env::var(name).ok())
        .map_err(tools_error)?;
    warn_all(&loaded.problems);
    let mut policy = Policy::default();
    for name in &loaded.builtin_tools {
        policy.tools.insert(name.clone(), Decision::Allow);
    }
    let offered = loaded
        .registry
        .specs()
        .map(|(s, _)| s.name.clone())
        .filter(|n| !loaded.idle_tools.contains(n))
        .collect();
    Ok(AgentTools {
        registry: loaded.registry,
        policy,
        offered,
    })
}

/// Shows a turn's event to a person: the model's text streams to `out`, each tool result is one
/// line on stderr, and the turn ends its line.
pub(super) fn show_event(out: &mut impl Write, event: &Event) {
    match event {
        Event::Text { delta } => {
            let _ = out.write_all(strip_control(delta).as_bytes());
            let _ = out.flush();
        }
        Event::ToolCall { .. } => {}
        Event::ToolResult {
            name,
            ok,
            content,
            seconds,
            ..
        } => eprintln!("{}", tool_line(name, *ok, content, *seconds)),
        Event::Memory { report, tokens, .. } => {
            let summary = match report.summary_by {
                SummaryBy::None => String::new(),
                SummaryBy::Model => "; summarised by the model".to_owned(),
                SummaryBy::Fallback => format!(
                    "; summarised by first sentences ({})",
                    report
                        .summary_error
                        .as_deref()
                        .unwrap_or("the model failed")
                ),
            };
            eprintln!(
                "[memory] {:?}: {}{summary} (tokens: pinned {}, summary {}, recent {}, free {})",
                report.action,
                report.dropped,
                tokens.pinned,
                tokens.summary,
                tokens.recent,
                tokens.free
            );
        }
        Event::TurnFinished { .. } => {
            let _ = writeln!(out);
        }
    }
}

/// One line per call for people: name, short result or error, duration.
fn tool_line(name: &str, ok: bool, content: &str, seconds: f64) -> String {
    let shown: String = strip_control(content)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let short = crate::agent::output::cap(&shown, 120).0;
    let mark = if ok { "→" } else { "✗" };
    let name = if name.is_empty() { "(bad call)" } else { name };
    format!("[tool] {name} {mark} {short} ({:.0} ms)", seconds * 1000.0)
}

/// Asks on the terminal whether `call` may run, showing its exact arguments.
pub(super) fn ask(call: &ToolCall) -> bool {
    eprint!(
        "allow {} {}? [y/N] ",
        strip_control(&call.name),
        strip_control(&call.arguments.to_string())
    );
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).is_ok() && matches!(answer.trim(), "y" | "Y" | "yes")
}
