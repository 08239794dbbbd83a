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
//! Why not concurrently on separate sequences: the engine decodes one request at a time on one
//! thread pool, so interleaving tasks only adds switching; see the README's batch figures.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::display::Paint;
use super::run::{approver, check_names, Plan, RunArgs};
use super::toolset::Asker;
use super::{session, GlobalOpts, UsageError};
use crate::agent::{format_for_model, prompt_tools, Agent, Event, TurnStop};
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

/// Runs the batch at `path`.
///
/// # Errors
/// Bad flags or an unreadable file (before the model loads), or a model that does not load.
pub fn run(path: &Path, args: &RunArgs, global: &GlobalOpts) -> anyhow::Result<u8> {
    let plan = Plan::new(args, global)?;
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
    let mut backend = session::open_backend(global)?;
    let format = format_for_model(backend.info()).map_err(anyhow::Error::msg)?;
    let window = backend.info().context_tokens;
    let progress = progress_bar(lines.len());
    let mut asker = Asker::new(plan.tools.reach.clone());
    let mut approve = approver(args.yes, &mut asker);
    let mut stdout = std::io::stdout().lock();
    let mut all_answered = true;
    let started = Instant::now();
    for (number, line) in &lines {
        let result = match parse_line(*number, line) {
            Err(bad) => *bad,
            Ok(task) => {
                let tools = match &task.tools {
                    Some(names) => match check_names(&plan.tools, names) {
                        Ok(()) => Some(prompt_tools(&plan.tools.registry, Some(names))),
                        Err(e) => {
                            let result = TaskResult::failed(task.id, format!("line {number}: {e}"));
                            finish(&mut stdout, &progress, &result, &mut all_answered)?;
                            continue;
                        }
                    },
                    None => None,
                };
                let mut conversation = plan.conversation(task.system.as_deref(), tools);
                conversation.push(corral_prompts::Message::user(task.task.clone()));
                // Each task is its own conversation: no interpreter state carries over.
                if let Some(interpreter) = &plan.tools.interpreter {
                    interpreter.reset();
                }
                let options = plan.options(global, window, task.max_steps.filter(|&n| n > 0))?;
                let reserve = options.max_tokens.unwrap_or(super::reply_budget(window));
                let memory = Memory::new(MemorySettings::for_window(window, reserve));
                let mut agent = Agent::new(backend.as_mut(), format.as_ref(), &plan.tools.registry)
                    .with_memory(memory);
                let mut calls = 0;
                let mut on_event = |e: &Event| {
                    if matches!(e, Event::ToolCall { .. }) {
                        calls += 1;
                    }
                };
                let task_started = Instant::now();
                let outcome =
                    agent.run_turn(&mut conversation, &options, &mut approve, &mut on_event);
                if outcome.stop == TurnStop::Cancelled {
                    // Ctrl-C stops the batch, not just this task.
                    let result = outcome_result(task.id, outcome, calls, task_started);
                    finish(&mut stdout, &progress, &result, &mut all_answered)?;
                    return Ok(130);
                }
                outcome_result(task.id, outcome, calls, task_started)
            }
        };
        finish(&mut stdout, &progress, &result, &mut all_answered)?;
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
