//! `corral run --batch tasks.jsonl`: many tasks on one loaded model.
//!
//! Each input line is one task object: `id` (string or number), `task`, and optionally `tools`
//! (names), `system` and `max_steps`. The tasks run one after another on sequence 0, each in a
//! fresh conversation; the shared prompt prefix (system prompt and tool list) stays in the KV
//! cache from one task to the next. One result line per task goes to stdout in input order:
//! `id`, `answer`, `stop_reason`, `steps`, `tool_calls`, `prompt_tokens`, `reused_tokens`,
//! `generated_tokens`, `seconds`, `error`. A bad line or a failing task is reported in its
//! result line and the batch goes on; the exit code is 0 when every task answered, else 1.
//!
//! With `--parallel N`, N tasks run at once, each on its own KV sequence through its own engine
//! handle, and the engine decodes their tokens together (continuous batching); result lines
//! still come out in input order. The code interpreter, one per process, cannot be shared by
//! tasks at once, so `--parallel` refuses it.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Instant;

use corral_prompts::{Conversation, Format, ToolCall};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::display::Paint;
use super::run::{check_names, Plan, RunArgs};
use super::toolset::Asker;
use super::{session, GlobalOpts, UsageError};
use crate::agent::{format_for_model, prompt_tools, Agent, Event, TurnOptions, TurnStop};
use crate::engine::llama::LlamaEngine;
use crate::engine::Backend;
use crate::memory::{Memory, MemorySettings};

/// One input line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Task {
    id: Value,
    task: String,
    #[serde(default)]
    tools: Option<Vec<String>>,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    max_steps: Option<usize>,
}

/// One output line.
#[derive(Debug, Serialize, PartialEq)]
pub(super) struct TaskResult {
    pub id: Value,
    pub answer: String,
    pub stop_reason: String,
    pub steps: usize,
    pub tool_calls: usize,
    pub prompt_tokens: usize,
    pub reused_tokens: usize,
    pub generated_tokens: usize,
    pub seconds: f64,
    pub error: Option<String>,
}

impl TaskResult {
    fn boxed(id: Value, error: String) -> Box<TaskResult> {
        Box::new(TaskResult::failed(id, error))
    }

    fn failed(id: Value, error: String) -> TaskResult {
        TaskResult {
            id,
            answer: String::new(),
            stop_reason: "error".into(),
            steps: 0,
            tool_calls: 0,
            prompt_tokens: 0,
            reused_tokens: 0,
            generated_tokens: 0,
            seconds: 0.0,
            error: Some(error),
        }
    }
}

/// Parses line `number` (1-based) of the batch file: the task, or the result line saying why
/// it cannot run.
fn parse_line(number: usize, line: &str) -> Result<Task, Box<TaskResult>> {
    let value: Value = serde_json::from_str(line)
        .map_err(|e| TaskResult::failed(Value::Null, format!("line {number}: not JSON: {e}")))?;
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    let task: Task = serde_json::from_value(value).map_err(|e| {
        TaskResult::boxed(
            id.clone(),
            format!(
                "line {number}: {e} (a task is {{\"id\": …, \"task\": \"…\"}} with optional \
                 tools, system, max_steps)"
            ),
        )
    })?;
    if !(task.id.is_string() || task.id.is_number()) {
        return Err(TaskResult::boxed(
            task.id,
            format!("line {number}: `id` must be a string or a number"),
        ));
    }
    if task.task.trim().is_empty() {
        return Err(TaskResult::boxed(
            task.id,
            format!("line {number}: `task` is empty"),
        ));
    }
    Ok(task)
}

/// One line of the batch, ready to run: its conversation and step limit, or the result line
/// saying why it cannot run.
type Job = Result<(Value, Conversation, Option<usize>), Box<TaskResult>>;

/// What every task of a batch runs with.
struct Shared<'a> {
    format: &'a (dyn Format + Sync),
    registry: &'a corral_tools::Registry,
    /// Turn options, less the step limit and deadline, which are each task's.
    options: TurnOptions,
    max_steps: usize,
    timeout: Option<std::time::Duration>,
    window: usize,
}

/// Runs the batch at `path`.
///
/// # Errors
/// Bad flags or an unreadable file (before the model loads), or a model that does not load.
pub fn run(path: &Path, args: &RunArgs, global: &GlobalOpts) -> anyhow::Result<u8> {
    let plan = Plan::new(args, global)?;
    let parallel = args.parallel.unwrap_or(1);
    if !(1..=crate::engine::MAX_SEQUENCES as usize).contains(&parallel) {
        return Err(UsageError::new(format!(
            "--parallel must be between 1 and {}, got {parallel}",
            crate::engine::MAX_SEQUENCES
        ))
        .into());
    }
    let interpreter = corral_tools::code_interpreter::NAME;
    if parallel > 1 && plan.tools.offered.iter().any(|n| n == interpreter) {
        return Err(UsageError::new(
            "--parallel runs tasks at once, but the code interpreter is one per process: \
             leave code_interpreter out of --tools, or run the batch without --parallel",
        )
        .into());
    }
    let file = std::fs::File::open(path)
        .map_err(|e| UsageError::new(format!("--batch {}: cannot read it: {e}", path.display())))?;
    let lines: Vec<(usize, String)> = std::io::BufReader::new(file)
        .lines()
        .enumerate()
        .map(|(i, l)| l.map(|l| (i + 1, l)))
        .collect::<Result<_, _>>()
        .map_err(|e| UsageError::new(format!("--batch {}: {e}", path.display())))?;
    let lines: Vec<(usize, String)> = lines
        .into_iter()
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    let jobs: Vec<Job> = lines
        .iter()
        .map(|(number, line)| job(&plan, *number, line, parallel))
        .collect();
    let engine = session::open_engine(global, parallel as u32)?;
    let format = format_for_model(engine.info()).map_err(anyhow::Error::msg)?;
    let window = engine.info().context_tokens;
    let mut options = plan.options(global, window, None)?;
    options.deadline = None;
    let shared = Shared {
        format: format.as_ref(),
        registry: &plan.tools.registry,
        max_steps: options.max_steps,
        options,
        timeout: plan.timeout,
        window,
    };
    let progress = progress_bar(jobs.len());
    let asker = Mutex::new(Asker::new(plan.tools.reach.clone()));
    let interactive = std::io::stdin().is_terminal();
    let approve = |call: &ToolCall| {
        args.yes || (interactive && asker.lock().is_ok_and(|mut asker| asker.ask(call)))
    };
    let mut stdout = std::io::stdout().lock();
    let mut all_answered = true;
    let started = Instant::now();
    let mut cancelled = false;
    if parallel == 1 {
        let mut engine = engine;
        for job in jobs {
            // Each task is its own conversation: no interpreter state carries over.
            if let Some(interpreter) = &plan.tools.interpreter {
                interpreter.reset();
            }
            let (result, stopped) = run_job(&mut engine, 0, job, &shared, &approve);
            finish(&mut stdout, &progress, &result, &mut all_answered)?;
            if stopped {
                // Ctrl-C stops the batch, not just this task.
                cancelled = true;
                break;
            }
        }
    } else {
        cancelled = run_parallel(&engine, jobs, parallel, &shared, &approve, &mut |result| {
            finish(&mut stdout, &progress, result, &mut all_answered)
        })?;
    }
    if cancelled {
        return Ok(130);
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    if std::io::stderr().is_terminal() && minutes > 0.0 {
        eprintln!(
            "{}",
            Paint::stderr().dim(&format!(
                "{} tasks in {:.1} s ({:.1} tasks/min)",
                lines.len(),
                minutes * 60.0,
                lines.len() as f64 / minutes
            ))
        );
    }
    Ok(if all_answered { 0 } else { 1 })
}

/// Line `number` of the batch as a job: parsed, its tools checked, its conversation built.
fn job(plan: &Plan, number: usize, line: &str, parallel: usize) -> Job {
    let task = parse_line(number, line)?;
    let interpreter = corral_tools::code_interpreter::NAME;
    let names_interpreter = task.tools.iter().flatten().any(|n| n == interpreter);
    if parallel > 1 && names_interpreter {
        return Err(TaskResult::boxed(
            task.id,
            format!(
                "line {number}: {interpreter} is one per process and cannot serve tasks running \
                 at once: run this batch without --parallel"
            ),
        ));
    }
    let tools = match &task.tools {
        Some(names) => match check_names(&plan.tools, names) {
            Ok(()) => Some(prompt_tools(&plan.tools.registry, Some(names))),
            Err(e) => return Err(TaskResult::boxed(task.id, format!("line {number}: {e}"))),
        },
        None => None,
    };
    let mut conversation = plan.conversation(task.system.as_deref(), tools);
    conversation.push(corral_prompts::Message::user(task.task.clone()));
    Ok((task.id, conversation, task.max_steps.filter(|&n| n > 0)))
}

/// Runs one job on `sequence`; returns its result line and whether Ctrl-C stopped it.
fn run_job(
    backend: &mut dyn Backend,
    sequence: usize,
    job: Job,
    shared: &Shared<'_>,
    approve: &(dyn Fn(&ToolCall) -> bool + Sync),
) -> (TaskResult, bool) {
    let (id, mut conversation, max_steps) = match job {
        Ok(job) => job,
        Err(bad) => return (*bad, false),
    };
    let mut options = shared.options.clone();
    options.max_steps = max_steps.unwrap_or(shared.max_steps);
    options.deadline = shared.timeout.and_then(|t| Instant::now().checked_add(t));
    let reserve = options
        .max_tokens
        .unwrap_or(super::reply_budget(shared.window));
    let memory = Memory::new(MemorySettings::for_window(shared.window, reserve));
    let mut agent = Agent::new(backend, shared.format, shared.registry)
        .on_sequence(sequence)
        .with_memory(memory);
    let mut calls = 0;
    let mut on_event = |e: &Event| {
        if matches!(e, Event::ToolCall { .. }) {
            calls += 1;
        }
    };
    let task_started = Instant::now();
    let outcome = agent.run_turn(
        &mut conversation,
        &options,
        &mut |call| approve(call),
        &mut on_event,
    );
    let stopped = outcome.stop == TurnStop::Cancelled;
    (outcome_result(id, outcome, calls, task_started), stopped)
}

/// Runs `jobs` on `parallel` sequences at once, a thread and an engine handle each, and hands
/// the result lines to `out` in input order. Returns whether Ctrl-C stopped the batch (the
/// tasks running then end as cancelled; the others do not start).
fn run_parallel(
    engine: &LlamaEngine,
    jobs: Vec<Job>,
    parallel: usize,
    shared: &Shared<'_>,
    approve: &(dyn Fn(&ToolCall) -> bool + Sync),
    out: &mut dyn FnMut(&TaskResult) -> anyhow::Result<()>,
) -> anyhow::Result<bool> {
    let queue = Mutex::new(jobs.into_iter().enumerate());
    let stop = AtomicBool::new(false);
    let (results, finished) = mpsc::channel::<(usize, TaskResult)>();
    std::thread::scope(|scope| {
        for sequence in 0..parallel {
            let results = results.clone();
            let mut engine = engine.clone();
            let (queue, stop) = (&queue, &stop);
            scope.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let next = queue.lock().ok().and_then(|mut q| q.next());
                    let Some((index, job)) = next else { break };
                    let (result, stopped) = run_job(&mut engine, sequence, job, shared, approve);
                    if stopped {
                        stop.store(true, Ordering::SeqCst);
                    }
                    if results.send((index, result)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(results);
        let mut waiting = BTreeMap::new();
        let mut next = 0;
        for (index, result) in finished {
            waiting.insert(index, result);
            while let Some(result) = waiting.remove(&next) {
                out(&result)?;
                next += 1;
            }
        }
        // After a stop, what finished beyond a task that never started.
        for result in waiting.into_values() {
            out(&result)?;
        }
        Ok(stop.load(Ordering::SeqCst))
    })
}

fn outcome_result(
    id: Value,
    outcome: crate::agent::TurnOutcome,
    tool_calls: usize,
    started: Instant,
) -> TaskResult {
    TaskResult {
        id,
        answer: outcome.answer,
        stop_reason: serde_json::to_value(outcome.stop)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        steps: outcome.steps,
        tool_calls,
        prompt_tokens: outcome.prompt_tokens,
        reused_tokens: outcome.reused_tokens,
        generated_tokens: outcome.generated_tokens,
        seconds: started.elapsed().as_secs_f64(),
        error: outcome.reason,
    }
}

fn finish(
    out: &mut impl Write,
    progress: &Option<indicatif::ProgressBar>,
    result: &TaskResult,
    all_answered: &mut bool,
) -> anyhow::Result<()> {
    if result.stop_reason != "answered" {
        *all_answered = false;
    }
    writeln!(out, "{}", serde_json::to_string(result)?)?;
    out.flush()?;
    if let Some(bar) = progress {
        bar.inc(1);
    }
    Ok(())
}

/// A progress bar on stderr when it is a terminal.
fn progress_bar(tasks: usize) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(tasks as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:30} {pos}/{len} tasks, {elapsed} ({eta} left)",
    ) {
        bar.set_style(style);
    }
    Some(bar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_become_result_lines_that_say_why() {
        let ok = parse_line(1, r#"{"id": "a", "task": "2+2?", "max_steps": 3}"#).unwrap();
        assert_eq!(ok.id, "a");
        assert_eq!(ok.max_steps, Some(3));
        let e = parse_line(2, "{not json").unwrap_err();
        assert!(e.error.unwrap().starts_with("line 2: not JSON"));
        let e = parse_line(3, r#"{"id": 7, "task": "x", "tool": ["clock"]}"#).unwrap_err();
        assert_eq!(e.id, 7);
        assert!(
            e.error.as_deref().unwrap().contains("unknown field `tool`"),
            "{e:?}"
        );
        let e = parse_line(4, r#"{"id": [1], "task": "x"}"#).unwrap_err();
        assert!(e.error.unwrap().contains("string or a number"));
        let e = parse_line(5, r#"{"id": 1, "task": " "}"#).unwrap_err();
        assert!(e.error.unwrap().contains("empty"));
        assert_eq!(e.stop_reason, "error");
    }
}
