//! `corral run TASK`: one task (or a batch of them), non-interactively, with tools.
//!
//! The task comes from the argument, `--file task.md`, or stdin (`-`, or no argument with
//! stdin not a terminal). The answer goes to stdout and tool activity to stderr; with `--json`,
//! stdout carries the turn's events as JSON Lines instead (see the README for every field).
//! Exit codes: 0 answered, 1 runtime error, 2 usage error, 3 step limit or `--timeout`, 4 a tool
//! was denied, 130 cancelled (Ctrl-C).
//!
//! Without `--tools`, every installed tool is offered except those of plugins that need a
//! folder and were granted none (`files` until one is granted, say with `--grant`). An `ask`
//! tool asks on the terminal when stdin is one; otherwise it is denied unless `--yes`: piped
//! input never blocks on a question. Decoding is greedy unless a temperature is set (flag,
//! env or config), so a scripted run is reproducible. `--record FILE` writes what
//! `corral replay` needs ([`super::replay`]); `--batch FILE` runs many tasks on one loaded
//! model ([`super::batch`]).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use corral_prompts::{Conversation, Message, ToolCall, ToolChoice, ToolSpec};
use corral_tools::sanitize::strip_control;

use super::display::{Paint, Shower};
use super::sessions::{self, SessionFlags};
use super::toolset::{tools_with_grants, AgentTools, Asker};
use super::{session, GlobalOpts, UsageError};
use crate::agent::{format_for_model, prompt_tools, Agent, Event, TurnOptions, TurnStop};
use crate::memory::{Memory, MemorySettings};

/// Steps per turn when neither a flag nor the config says.
pub const DEFAULT_MAX_STEPS: usize = 8;

/// `--max-steps`, else the config's, else [`DEFAULT_MAX_STEPS`].
///
/// # Errors
/// Zero steps, as a usage error.
pub(super) fn max_steps(flag: Option<usize>, global: &GlobalOpts) -> Result<usize, UsageError> {
    let steps = flag
        .or(global.config.max_steps.as_ref().map(|s| s.value))
        .unwrap_or(DEFAULT_MAX_STEPS);
    if steps == 0 {
        return Err(UsageError::new("--max-steps must be at least 1"));
    }
    Ok(steps)
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The task, as you would type it in the chat; `-` reads it from stdin.
    #[arg(conflicts_with_all = ["file", "batch"])]
    pub task: Option<String>,
    /// Read the task from this file (`-`: stdin).
    #[arg(long, value_name = "PATH", conflicts_with = "batch")]
    pub file: Option<PathBuf>,
    /// Run every task of this JSON Lines file (`id`, `task`, optional `tools`, `system`,
    /// `max_steps`) on one loaded model; one result line per task on stdout, in input order.
    #[arg(long, value_name = "TASKS.jsonl")]
    pub batch: Option<PathBuf>,
    /// With --batch: tasks that run at once, each on its own KV sequence, their tokens decoded
    /// together (default 1: one after another).
    #[arg(long, value_name = "N", requires = "batch")]
    pub parallel: Option<usize>,
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
    /// Generations at most before the turn ends with exit code 3 (default 8, or the config's).
    #[arg(long = "max-steps", value_name = "N")]
    pub max_steps: Option<usize>,
    /// Tokens per reply at most (default: a quarter of the context, at most 1024).
    #[arg(long = "max-tokens", value_name = "N")]
    pub max_tokens: Option<usize>,
    /// Stop the whole task after this many seconds (exit code 3).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
    /// The system prompt (default: none, or the config's).
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Approve tools whose policy is to ask.
    #[arg(long)]
    pub yes: bool,
    /// Grant a plugin something for this run: PLUGIN=DIR, PLUGIN=DIR:ro, PLUGIN=env:NAME or
    /// PLUGIN=net:IP:PORT (repeatable).
    #[arg(long, value_name = "PLUGIN=WHAT")]
    pub grant: Vec<String>,
    /// Stop any one tool call after this many seconds (default: each tool's own limit); the
    /// model reads that it timed out.
    #[arg(long = "call-timeout", value_name = "SECONDS")]
    pub call_timeout: Option<f64>,
    /// Write what `corral replay` needs to re-run this task to FILE (JSON Lines).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["batch", "session"])]
    pub record: Option<PathBuf>,
    /// Saved conversations.
    #[command(flatten)]
    pub session: SessionFlags,
}

/// A positive number of seconds, or a usage error naming the flag.
pub(super) fn seconds(flag: &str, value: Option<f64>) -> Result<Option<Duration>, UsageError> {
    value
        .map(|secs| {
            Duration::try_from_secs_f64(secs)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    UsageError::new(format!(
                        "{flag} must be a positive number of seconds, got {secs}"
                    ))
                })
        })
        .transpose()
}

/// The exit code for how a turn ended.
pub(super) fn exit_code(stop: TurnStop) -> u8 {
    match stop {
        TurnStop::Answered => 0,
        TurnStop::Error => 1,
        TurnStop::StepLimit | TurnStop::Timeout => 3,
        TurnStop::Denied => 4,
        TurnStop::Cancelled => 130,
    }
}

/// What every task of a run shares, checked before the model loads.
pub(super) struct Plan {
    pub tools: AgentTools,
    /// The tools offered (specs as the prompt shows them).
    pub offered: Vec<ToolSpec>,
    pub tool_choice: ToolChoice,
    pub max_steps: usize,
    pub max_tokens: Option<usize>,
    pub timeout: Option<Duration>,
    pub call_timeout: Option<Duration>,
    pub system: Option<String>,
}

impl Plan {
    /// Checks the flags and loads the tools.
    pub fn new(args: &RunArgs, global: &GlobalOpts) -> anyhow::Result<Plan> {
        // Every flag is checked before anything loads or is pulled.
        global.engine_options()?;
        scripted_sampling(global)?;
        let max_steps = max_steps(args.max_steps, global)?;
        let max_tokens = args
            .max_tokens
            .or(global.config.max_tokens.as_ref().map(|s| s.value));
        if max_tokens == Some(0) {
            return Err(UsageError::new("--max-tokens must be at least 1").into());
        }
        let call_timeout = seconds("--call-timeout", args.call_timeout)?;
        let timeout = seconds("--timeout", args.timeout)?;
        let (tools, offered_names) = tools_with_grants(global, &args.grant, args.tools.as_deref())?;
        let offered = prompt_tools(&tools.registry, Some(&offered_names));
        let tool_choice = parse_tool_choice(&args.tool_choice, &offered)?;
        let system = args
            .system
            .clone()
            .or(global.config.system.as_ref().map(|s| s.value.clone()))
            .filter(|s| !s.trim().is_empty());
        Ok(Plan {
            tools,
            offered,
            tool_choice,
            max_steps,
            max_tokens,
            timeout,
            call_timeout,
            system,
        })
    }

    /// A new conversation offering `tools` (the plan's when `None`), with the system prompt.
    pub fn conversation(&self, system: Option<&str>, tools: Option<Vec<ToolSpec>>) -> Conversation {
        let mut c = Conversation::new(Vec::new());
        if let Some(system) = system.or(self.system.as_deref()) {
            c.messages.push(Message::system(system));
        }
        let tools = tools.unwrap_or_else(|| self.offered.clone());
        if tools.is_empty() {
            c
        } else {
            c.with_tools(tools)
        }
    }

    /// Turn options for a window of `window` tokens, with `max_steps` when given.
    pub fn options(
        &self,
        global: &GlobalOpts,
        window: usize,
        max_steps: Option<usize>,
    ) -> anyhow::Result<TurnOptions> {
        Ok(TurnOptions {
            max_tokens: Some(self.max_tokens.unwrap_or(super::reply_budget(window))),
            max_steps: max_steps.unwrap_or(self.max_steps),
            tool_choice: self.tool_choice.clone(),
            sampling: scripted_sampling(global)?,
            policy: self.tools.policy.clone(),
            cancel: session::cancel_on_ctrl_c(),
            call_timeout: self.call_timeout,
            deadline: self.timeout.and_then(|t| Instant::now().checked_add(t)),
            ..TurnOptions::default()
        })
    }
}

/// `--tool-choice`: auto, none, required or an offered tool's name.
///
/// # Errors
/// Anything else, or a call asked for with no tool offered.
pub(super) fn parse_tool_choice(
    text: &str,
    offered: &[ToolSpec],
) -> Result<ToolChoice, UsageError> {
    let choice = match text {
        "auto" => ToolChoice::Auto,
        "none" => ToolChoice::None,
        "required" => ToolChoice::Required,
        name if offered.iter().any(|t| t.name == name) => ToolChoice::Named(name.to_owned()),
        other => {
            return Err(UsageError::new(format!(
                "--tool-choice {other}: expected auto, none, required or the name of an offered \
                 tool"
            )))
        }
    };
    if offered.is_empty() && matches!(choice, ToolChoice::Required | ToolChoice::Named(_)) {
        return Err(UsageError::new(
            "--tool-choice asks for a call, but no tool is offered (see `corral tools list`)",
        ));
    }
    Ok(choice)
}

/// Sampling for scripted runs: greedy unless a temperature was set (reproducible, and small
/// models call tools far more reliably greedily).
pub(super) fn scripted_sampling(global: &GlobalOpts) -> anyhow::Result<crate::engine::Sampling> {
    let mut sampling = global.sampling()?;
    if global.temperature.is_none() {
        sampling.temperature = 0.0;
    }
    Ok(sampling)
}

/// Every name in `names` is a loaded tool, or a usage error listing what is.
pub(super) fn check_names(tools: &AgentTools, names: &[String]) -> Result<(), UsageError> {
    match names.iter().find(|n| !tools.registry.contains(n)) {
        None => Ok(()),
        Some(missing) => {
            let have: Vec<&str> = tools
                .registry
                .specs()
                .map(|(s, _)| s.name.as_str())
                .collect();
            Err(UsageError::new(format!(
                "--tools: no tool named `{missing}` is installed (installed: {})",
                if have.is_empty() {
                    "none".to_owned()
                } else {
                    have.join(", ")
                }
            )))
        }
    }
}

/// The task text from the argument, `--file` or stdin.
fn read_task(args: &RunArgs) -> Result<String, UsageError> {
    let from_stdin = || super::stdin::read_stdin("the task");
    let task = match (&args.task, &args.file) {
        (Some(task), _) if task == "-" => from_stdin()?,
        (Some(task), _) => task.clone(),
        (None, Some(path)) if path.as_os_str() == "-" => from_stdin()?,
        (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| {
            UsageError::new(format!("--file {}: cannot read it: {e}", path.display()))
        })?,
        (None, None) if !std::io::stdin().is_terminal() => from_stdin()?,
        (None, None) => {
            return Err(UsageError::new(
                "no task: give it as an argument (corral run \"what to do\"), with --file \
                 task.md, or on stdin",
            ))
        }
    };
    if task.trim().is_empty() {
        return Err(UsageError::new(
            "the task is empty: corral run \"what to do\"",
        ));
    }
    Ok(task)
}

/// Who approves `ask` calls in a script: `--yes`, else a person when stdin is a terminal,
/// else no one.
pub(super) fn approver(yes: bool, asker: &mut Asker) -> impl FnMut(&ToolCall) -> bool + '_ {
    let interactive = std::io::stdin().is_terminal();
    move |call: &ToolCall| yes || (interactive && asker.ask(call))
}

pub fn run(args: &RunArgs, global: &GlobalOpts) -> anyhow::Result<u8> {
    if args.parallel.is_some() && args.batch.is_none() {
        return Err(UsageError::new(
            "--parallel runs the tasks of a --batch file at once: give --batch FILE",
        )
        .into());
    }
    if let Some(path) = &args.batch {
        return super::batch::run(path, args, global);
    }
    let plan = Plan::new(args, global)?;
    let task = read_task(args)?;
    let loaded = args.session.load()?;
    let model_path = session::resolve_model(global)?;
    let mut backend = session::open_backend_at(global, &model_path)?;
    let format = format_for_model(backend.info()).map_err(anyhow::Error::msg)?;
    let window = backend.info().context_tokens;
    let options = plan.options(global, window, None)?;
    let reserve = options.max_tokens.unwrap_or(super::reply_budget(window));
    let mut opened =
        loaded.map(|l| l.open(&backend.info().name, window, reserve, plan.offered.clone()));
    if let Some(o) = &opened {
        sessions::restore_code(o, &plan.tools);
    }
    let (mut conversation, memory) = match &opened {
        Some(o) => (o.session.conversation.clone(), o.session.memory.clone()),
        None => (
            plan.conversation(None, None),
            Memory::new(MemorySettings::for_window(window, reserve)),
        ),
    };
    conversation.push(Message::user(task.clone()));
    let mut recorder = match &args.record {
        Some(path) => Some(super::replay::Recorder::create(
            path,
            &model_path,
            backend.info(),
            global.engine_options()?.threads,
            &options,
            &conversation,
        )?),
        None => None,
    };
    let mut asker = Asker::new(plan.tools.reach.clone());
    let mut approve = approver(args.yes, &mut asker);
    let json = args.json;
    let mut stdout = std::io::stdout().lock();
    let mut shower = Shower::new(Paint::stderr());
    let mut on_event = |event: &Event| {
        if let Some(r) = &mut recorder {
            r.event(event);
        }
        if json {
            if let Ok(line) = serde_json::to_string(event) {
                let _ = writeln!(stdout, "{line}");
                let _ = stdout.flush();
            }
            return;
        }
        shower.show(&mut stdout, event);
    };
    let registry = &plan.tools.registry;
    let mut agent = Agent::new(backend.as_mut(), format.as_ref(), registry).with_memory(memory);
    if let Some(o) = &opened {
        agent = agent.with_transcript(o.session.transcript.clone());
        if args.session.session_kv {
            sessions::restore_kv(o, agent.backend(), 0);
        }
    }
    let outcome = agent.run_turn(&mut conversation, &options, &mut approve, &mut on_event);
    if let Some(r) = recorder {
        r.finish()?;
    }
    if let Some(o) = &mut opened {
        sessions::save(
            o,
            &conversation,
            &mut agent,
            args.session.session_kv,
            &plan.tools,
        )?;
    }
    if !json {
        if let Some(reason) = &outcome.reason {
            eprintln!("error: {}", strip_control(reason));
        }
    }
    Ok(exit_code(outcome.stop))
}
