//! Replayable runs: `corral run --record run.jsonl` and `corral replay run.jsonl`.
//!
//! A record is JSON Lines. The first line (`"type": "record"`, `format` `corral-record`,
//! `version` 1) holds what the run started from: the model's file name and SHA-256, the
//! context, the sampling settings and seed, the step and token limits, the tool choice, and the
//! conversation as the model first saw it, the
//! thread count (system prompt, tool specs, the task). Every later
//! line is one event of the run, exactly as `--json` prints it; `tool_result` events carry each
//! tool's result.
//!
//! `corral replay` runs the recorded conversation again on the same settings, with stand-in
//! tools that answer each call with the recorded result for the same tool and arguments, and
//! compares the model's moves (each tool call, the final answer, how the turn ended) with the
//! record. It exits 0 when they are identical and 5 at the first divergence, which it prints.
//! `--system` and `--model` change what is replayed, to see whether a new prompt or model still
//! does the same.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::Args;
use corral_prompts::{Conversation, Message, ToolChoice, ToolSpec};
use corral_tools::{CallControl, CallError, CallOutput, Content, Registry, Tool};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::run::exit_code;
use super::{session, GlobalOpts, UsageError};
use crate::agent::output::TRUNCATED_MARKER;
use crate::agent::{format_for_model, Agent, Decision, Event, Policy, TurnOptions};
use crate::engine::{ModelInfo, Sampling};
use crate::memory::{Memory, MemorySettings};

/// The record format's name and version.
const FORMAT: &str = "corral-record";
const VERSION: u64 = 1;
/// `corral replay`'s exit code when the replay differs from the record.
pub const DIVERGED: u8 = 5;

/// Writes a record as the run goes.
pub struct Recorder {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    failed: Option<std::io::Error>,
}

impl Recorder {
    /// Creates `path` and writes the header.
    ///
    /// # Errors
    /// The file cannot be created or the model file read.
    pub fn create(
        path: &Path,
        model_path: &Path,
        info: &ModelInfo,
        threads: u32,
        options: &TurnOptions,
        conversation: &Conversation,
    ) -> anyhow::Result<Recorder> {
        let sha256 = file_sha256(model_path)?;
        let s = &options.sampling;
        let header = json!({
            "type": "record",
            "format": FORMAT,
            "version": VERSION,
            "corral": env!("CARGO_PKG_VERSION"),
            "model": {
                "name": info.name,
                "file": model_path.file_name().map(|n| n.to_string_lossy().into_owned()),
                "sha256": sha256,
            },
            "ctx": info.context_tokens,
            "threads": threads,
            "sampling": {
                "temperature": s.temperature,
                "top_p": s.top_p,
                "top_k": s.top_k,
                "seed": s.seed,
                "repeat_penalty": s.repeat_penalty,
            },
            "max_steps": options.max_steps,
            "max_tokens": options.max_tokens,
            "tool_choice": choice_word(&options.tool_choice),
            "conversation": conversation,
        });
        let file = std::fs::File::create(path)
            .with_context(|| format!("--record {}: cannot create it", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        writeln!(out, "{header}")?;
        Ok(Recorder {
            path: path.to_owned(),
            out,
            failed: None,
        })
    }

    /// Appends one event.
    pub fn event(&mut self, event: &Event) {
        if self.failed.is_some() {
            return;
        }
        let written = serde_json::to_string(event)
            .map_err(std::io::Error::other)
            .and_then(|line| writeln!(self.out, "{line}"));
        if let Err(e) = written {
            self.failed = Some(e);
        }
    }

    /// Flushes the file to disk.
    ///
    /// # Errors
    /// A write that failed on the way.
    pub fn finish(mut self) -> anyhow::Result<()> {
        if let Some(e) = self.failed.take() {
            return Err(e).with_context(|| format!("--record {}", self.path.display()));
        }
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        Ok(())
    }
}

fn choice_word(choice: &ToolChoice) -> String {
    match choice {
        ToolChoice::Auto => "auto".into(),
        ToolChoice::None => "none".into(),
        ToolChoice::Required => "required".into(),
        ToolChoice::Named(name) => name.clone(),
    }
}

fn choice_from(word: &str) -> ToolChoice {
    match word {
        "auto" => ToolChoice::Auto,
        "none" => ToolChoice::None,
        "required" => ToolChoice::Required,
        name => ToolChoice::Named(name.to_owned()),
    }
}

/// The SHA-256 of a file, in hex.
fn file_sha256(path: &Path) -> anyhow::Result<String> {
    let mut file = std::fs::File::open(path)
        .with_context(|| format!("cannot read the model file {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Arguments of `corral replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The record (`corral run --record FILE`).
    pub record: PathBuf,
    /// Replay with this system prompt instead of the recorded one.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Print the replay's events as JSON Lines too.
    #[arg(long)]
    pub json: bool,
}

/// A record read back.
struct Record {
    header: Value,
    conversation: Conversation,
    events: Vec<Value>,
}

impl Record {
    fn read(path: &Path) -> Result<Record, UsageError> {
        let bad = |why: String| UsageError::new(format!("{}: {why}", path.display()));
        let file = std::fs::File::open(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let mut lines = std::io::BufReader::new(file).lines().enumerate();
        let header: Value = match lines.next() {
            Some((_, Ok(line))) => {
                serde_json::from_str(&line).map_err(|e| bad(format!("line 1 is not JSON: {e}")))?
            }
            _ => return Err(bad("it is empty, not a `corral run --record` file".into())),
        };
        if header["format"] != FORMAT {
            return Err(bad(
                "it is not a `corral run --record` file (no corral-record header)".into(),
            ));
        }
        match header["version"].as_u64() {
            Some(VERSION) => {}
            other => {
                return Err(bad(format!(
                    "record version {other:?} is not {VERSION}, the one this corral reads"
                )))
            }
        }
        let conversation: Conversation = serde_json::from_value(header["conversation"].clone())
            .map_err(|e| bad(format!("line 1: its conversation does not parse: {e}")))?;
        let mut events = Vec::new();
        for (i, line) in lines {
            let line = line.map_err(|e| bad(e.to_string()))?;
            if line.trim().is_empty() {
                continue;
            }
            events.push(
                serde_json::from_str(&line)
                    .map_err(|e| bad(format!("line {} is not JSON: {e}", i + 1)))?,
            );
        }
        Ok(Record {
            header,
            conversation,
            events,
        })
    }

    fn sampling(&self) -> Sampling {
        let s = &self.header["sampling"];
        let d = Sampling::default();
        let f = |k: &str, d: f32| s[k].as_f64().map_or(d, |v| v as f32);
        Sampling {
            temperature: f("temperature", d.temperature),
            top_p: f("top_p", d.top_p),
            top_k: s["top_k"].as_i64().map_or(d.top_k, |v| v as i32),
            seed: s["seed"].as_u64().map_or(d.seed, |v| v as u32),
            repeat_penalty: f("repeat_penalty", d.repeat_penalty),
        }
    }
}

/// What the model did, step by step, as the comparison sees it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Move {
    /// It called a tool.
    Call { name: String, arguments: Value },
    /// It answered with this text.
    Answer(String),
    /// The turn ended so.
    End(String),
}

impl std::fmt::Display for Move {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Move::Call { name, arguments } => write!(f, "a call to {name} {arguments}"),
            Move::Answer(text) => write!(f, "the answer {text:?}"),
            Move::End(stop) => write!(f, "the turn ending as {stop}"),
        }
    }
}

/// The moves of a stream of events (as JSON values).
pub(super) fn moves(events: &[Value]) -> Vec<Move> {
    let mut out = Vec::new();
    let mut text = String::new();
    for e in events {
        match e["type"].as_str() {
            Some("text") => text.push_str(e["delta"].as_str().unwrap_or_default()),
            Some("tool_call") => {
                text.clear();
                out.push(Move::Call {
                    name: e["name"].as_str().unwrap_or_default().to_owned(),
                    arguments: e["arguments"].clone(),
                });
            }
            Some("tool_result") => text.clear(),
            Some("turn_finished") => {
                let answer = text.trim();
                if !answer.is_empty() {
                    out.push(Move::Answer(answer.to_owned()));
                }
                out.push(Move::End(e["stop"].as_str().unwrap_or_default().to_owned()));
                text.clear();
            }
            _ => {}
        }
    }
    out
}

/// The first place two runs differ: (index, recorded, replayed).
pub(super) fn first_divergence(
    recorded: &[Move],
    replayed: &[Move],
) -> Option<(usize, Option<Move>, Option<Move>)> {
    let n = recorded.len().max(replayed.len());
    (0..n).find_map(|i| {
        let (a, b) = (recorded.get(i), replayed.get(i));
        (a != b).then(|| (i, a.cloned(), b.cloned()))
    })
}

/// Results of recorded calls, by tool name and arguments, in the order they were recorded.
type Results = Arc<Mutex<Vec<(String, Value, bool, String)>>>;

/// A tool that answers with recorded results.
struct Recorded {
    spec: ToolSpec,
    results: Results,
}

impl Tool for Recorded {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn call(&self, args: &Value, _control: &CallControl) -> Result<CallOutput, CallError> {
        let mut results = self.results.lock().unwrap_or_else(|p| p.into_inner());
        let Some(at) = results
            .iter()
            .position(|(name, a, _, _)| *name == self.spec.name && a == args)
        else {
            return Err(CallError::Tool(format!(
                "replay: the record has no result for this call of {} (the run diverged)",
                self.spec.name
            )));
        };
        let (_, _, ok, content) = results.remove(at);
        if !ok {
            let msg = content
                .strip_prefix("error: ")
                .unwrap_or(&content)
                .to_owned();
            return Err(CallError::Tool(msg));
        }
        let (text, truncated) = match content.strip_suffix(TRUNCATED_MARKER) {
            Some(text) => (text.to_owned(), true),
            None => (content, false),
        };
        Ok(CallOutput {
            content: vec![Content::Text(text)],
            truncated,
            stdout: String::new(),
            stderr: String::new(),
        })
    }
}

/// Runs `corral replay`.
///
/// # Errors
/// An unreadable record (a usage error), a model that does not load.
pub fn run(args: &ReplayArgs, global: &GlobalOpts) -> anyhow::Result<u8> {
    let record = Record::read(&args.record)?;
    let mut conversation = record.conversation.clone();
    if let Some(system) = &args.system {
        match conversation.messages.first_mut() {
            Some(Message::System { .. }) => conversation.messages[0] = Message::system(system),
            _ => conversation.messages.insert(0, Message::system(system)),
        }
    }
    // The recorded calls' results, answered by stand-ins with the recorded specs.
    let mut calls: std::collections::HashMap<String, (String, Value)> = Default::default();
    let mut results = Vec::new();
    for e in &record.events {
        match e["type"].as_str() {
            Some("tool_call") => {
                let id = e["id"].as_str().unwrap_or_default().to_owned();
                let name = e["name"].as_str().unwrap_or_default().to_owned();
                calls.insert(id, (name, e["arguments"].clone()));
            }
            Some("tool_result") => {
                if let Some((name, arguments)) = calls.remove(e["id"].as_str().unwrap_or_default())
                {
                    let ok = e["ok"].as_bool().unwrap_or(false);
                    let content = e["content"].as_str().unwrap_or_default().to_owned();
                    results.push((name, arguments, ok, content));
                }
            }
            _ => {}
        }
    }
    let results: Results = Arc::new(Mutex::new(results));
    let mut registry = Registry::new();
    let mut policy = Policy {
        default: Decision::Deny,
        tools: Default::default(),
    };
    for spec in conversation.tools.clone().unwrap_or_default() {
        policy.tools.insert(spec.name.clone(), Decision::Allow);
        let tool = Recorded {
            spec,
            results: results.clone(),
        };
        registry
            .register(Arc::new(tool), "replay")
            .map_err(|e| UsageError::new(format!("{}: {e}", args.record.display())))?;
    }

    let mut global = global.clone();
    let recorded_model = record.header["model"]["sha256"]
        .as_str()
        .unwrap_or_default();
    // Like for like unless told otherwise: the recorded context and threads (greedy decoding
    // can differ in the last float bits with another thread count).
    if global.ctx.is_none() {
        global.ctx = record.header["ctx"].as_u64().map(|c| c as u32);
    }
    if global.threads.is_none() {
        global.threads = record.header["threads"].as_u64().map(|t| t as u32);
    }
    let model_path = match &global.model {
        Some(_) => session::resolve_model(&global)?,
        None => find_model(&record, &global)?,
    };
    let replayed_model = file_sha256(&model_path)?;
    if replayed_model != recorded_model {
        eprintln!(
            "note: replaying on {} (sha256 {replayed_model}), not the recorded model (sha256 \
             {recorded_model})",
            model_path.display()
        );
    }
    let mut backend = session::open_backend_at(&global, &model_path)?;
    let format = format_for_model(backend.info()).map_err(anyhow::Error::msg)?;
    let window = backend.info().context_tokens;
    let options = TurnOptions {
        max_steps: record.header["max_steps"].as_u64().unwrap_or(8) as usize,
        max_tokens: record.header["max_tokens"].as_u64().map(|n| n as usize),
        tool_choice: choice_from(record.header["tool_choice"].as_str().unwrap_or("auto")),
        sampling: record.sampling(),
        policy,
        cancel: session::cancel_on_ctrl_c(),
        ..TurnOptions::default()
    };
    let reserve = options.max_tokens.unwrap_or(super::reply_budget(window));
    let memory = Memory::new(MemorySettings::for_window(window, reserve));
    let mut agent = Agent::new(backend.as_mut(), format.as_ref(), &registry).with_memory(memory);
    let mut events = Vec::new();
    let json = args.json;
    let mut on_event = |e: &Event| {
        if let Ok(v) = serde_json::to_value(e) {
            if json {
                println!("{v}");
            }
            events.push(v);
        }
    };
    let outcome = agent.run_turn(&mut conversation, &options, &mut |_| false, &mut on_event);
    if outcome.stop == crate::agent::TurnStop::Cancelled {
        return Ok(exit_code(outcome.stop));
    }
    let recorded = moves(&record.events);
    let replayed = moves(&events);
    match first_divergence(&recorded, &replayed) {
        None => {
            eprintln!(
                "replay identical: {} moves ({} tool calls)",
                recorded.len(),
                recorded
                    .iter()
                    .filter(|m| matches!(m, Move::Call { .. }))
                    .count()
            );
            Ok(0)
        }
        Some((i, was, now)) => {
            let show = |m: Option<Move>| m.map_or("nothing".to_owned(), |m| m.to_string());
            eprintln!(
                "replay diverged at move {}: the record has {}, the replay has {}",
                i + 1,
                show(was),
                show(now)
            );
            Ok(DIVERGED)
        }
    }
}

/// The recorded model: a cached model with the recorded file name, if its hash matches, else
/// the default model resolution.
fn find_model(record: &Record, global: &GlobalOpts) -> anyhow::Result<PathBuf> {
    let file = record.header["model"]["file"].as_str().unwrap_or_default();
    let store = crate::model::ModelStore::from_env();
    if let Some(cached) = store
        .list()
        .into_iter()
        .find(|m| m.path.file_name().is_some_and(|n| n == file))
    {
        return Ok(cached.path);
    }
    session::resolve_model(global)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> Vec<Value> {
        vec![
            json!({"type": "text", "delta": ""}),
            json!({"type": "tool_call", "id": "call_1", "name": "clock", "arguments": {}}),
            json!({"type": "tool_result", "id": "call_1", "name": "clock", "ok": true, "content": "12:00", "seconds": 0.0}),
            json!({"type": "text", "delta": "It is "}),
            json!({"type": "text", "delta": "noon."}),
            json!({"type": "turn_finished", "stop": "answered"}),
        ]
    }

    #[test]
    fn moves_are_calls_then_the_answer_then_the_end() {
        assert_eq!(
            moves(&events()),
            [
                Move::Call {
                    name: "clock".into(),
                    arguments: json!({})
                },
                Move::Answer("It is noon.".into()),
                Move::End("answered".into()),
            ]
        );
    }

    #[test]
    fn the_first_divergence_is_found_and_identical_runs_have_none() {
        let a = moves(&events());
        assert_eq!(first_divergence(&a, &a), None);
        let mut b = a.clone();
        b[1] = Move::Answer("It is midnight.".into());
        let (i, was, now) = first_divergence(&a, &b).unwrap();
        assert_eq!(i, 1);
        assert_eq!(was, Some(Move::Answer("It is noon.".into())));
        assert_eq!(now, Some(Move::Answer("It is midnight.".into())));
        let (i, _, now) = first_divergence(&a, &a[..1]).unwrap();
        assert_eq!((i, now), (1, None));
    }

    #[test]
    fn stand_ins_answer_with_the_recorded_result_for_the_same_call() {
        let results: Results = Arc::new(Mutex::new(vec![
            ("clock".into(), json!({"tz": "UTC"}), true, "12:00".into()),
            (
                "clock".into(),
                json!({"tz": "CET"}),
                false,
                "error: no such zone".into(),
            ),
        ]));
        let tool = Recorded {
            spec: ToolSpec {
                name: "clock".into(),
                description: None,
                parameters: json!({"type": "object"}),
            },
            results,
        };
        let control = CallControl::default();
        match tool.call(&json!({"tz": "CET"}), &control) {
            Err(CallError::Tool(msg)) => assert_eq!(msg, "no such zone"),
            other => panic!("{other:?}"),
        }
        let out = tool.call(&json!({"tz": "UTC"}), &control).unwrap();
        assert_eq!(out.content, [Content::Text("12:00".into())]);
        assert!(matches!(
            tool.call(&json!({"tz": "UTC"}), &control),
            Err(CallError::Tool(msg)) if msg.contains("no result")
        ));
    }
}
