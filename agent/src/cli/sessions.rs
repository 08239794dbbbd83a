//! `corral session list | show NAME | rm NAME`, and `--session NAME` for the chat and `corral
//! run`: resuming a saved conversation with its memory and exact tokens (and, with
//! `--session-kv`, its KV state), and saving it after every turn.

use std::io::Write;

use anyhow::Context;
use clap::{Args, Subcommand};
use corral_prompts::{Conversation, Message, ToolSpec};
use serde_json::{json, Value};

use super::toolset::AgentTools;
use super::UsageError;
use crate::agent::Agent;
use crate::engine::Backend;
use crate::memory::{Memory, MemorySettings};
use crate::sessions::{KvState, Session, SessionError, SessionStore};

/// `--session` flags, shared by the chat and `corral run`.
#[derive(Debug, Default, Clone, Args)]
pub struct SessionFlags {
    /// Resume the saved conversation NAME (or start it), and save it after every turn.
    #[arg(long, value_name = "NAME")]
    pub session: Option<String>,
    /// Also save the KV cache beside the session, so resuming evaluates nothing again (a
    /// file about as big as the model's KV cache for the conversation).
    #[arg(long = "session-kv", requires = "session")]
    pub session_kv: bool,
}

impl SessionFlags {
    /// The `--session` asked for, read from disk (before the model loads).
    ///
    /// # Errors
    /// As [`load`].
    pub fn load(&self) -> anyhow::Result<Option<Loaded>> {
        self.session.as_deref().map(load).transpose()
    }
}

/// `corral session …`.
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// List saved sessions.
    List,
    /// Print a session: language, summary, token use per region, messages.
    Show {
        /// The session.
        name: String,
        /// As one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Remove a session (and its KV state).
    Rm {
        /// The session.
        name: String,
    },
}

fn store() -> anyhow::Result<SessionStore> {
    Ok(SessionStore::from_env()?)
}

fn usage_if_bad_name(e: SessionError) -> anyhow::Error {
    match e {
        SessionError::BadName(_) => UsageError::new(e.to_string()).into(),
        other => other.into(),
    }
}

/// Runs `corral session …`.
///
/// # Errors
/// A bad name, a missing session, or a file that cannot be read.
pub fn run(command: SessionCommand) -> anyhow::Result<()> {
    let store = store()?;
    let mut out = std::io::stdout().lock();
    match command {
        SessionCommand::List => {
            let sessions = store.list()?;
            if sessions.is_empty() {
                eprintln!("no saved sessions (in {})", store.dir().display());
            }
            for session in sessions {
                match session {
                    Ok(s) => writeln!(
                        out,
                        "{}\t{} messages\t{}\t{}",
                        s.name,
                        s.messages,
                        s.language.as_deref().unwrap_or("-"),
                        s.model
                    )?,
                    Err(e) => eprintln!("warning: {e}"),
                }
            }
        }
        SessionCommand::Show { name, json } => {
            let session = store
                .load(&name)
                .map_err(usage_if_bad_name)?
                .ok_or_else(|| missing(&store, &name))?;
            let shown = show_json(&session);
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&shown)?)?;
            } else {
                show_text(&mut out, &session)?;
            }
        }
        SessionCommand::Rm { name } => {
            if !store.remove(&name).map_err(usage_if_bad_name)? {
                return Err(missing(&store, &name));
            }
            eprintln!("removed session {name}");
        }
    }
    Ok(())
}

fn missing(store: &SessionStore, name: &str) -> anyhow::Error {
    UsageError::new(format!(
        "no session named {name} (in {}): see `corral session list`",
        store.dir().display()
    ))
    .into()
}

fn content_of(message: &Message) -> String {
    match message {
        Message::System { content } | Message::User { content } => content.clone(),
        Message::Assistant { content, .. } => content.clone(),
        Message::Tool { content, .. } => crate::memory::tool_text(content),
    }
}

/// The session as `show --json` prints it.
fn show_json(session: &Session) -> Value {
    let messages: Vec<Value> = session
        .conversation
        .messages
        .iter()
        .map(|m| {
            let mut v = json!({"role": m.role(), "content": content_of(m)});
            match m {
                Message::Assistant { tool_calls, .. } if !tool_calls.is_empty() => {
                    v["tool_calls"] = json!(tool_calls);
                }
                Message::Tool {
                    call_id: Some(id), ..
                } => v["tool_call_id"] = json!(id),
                _ => {}
            }
            v
        })
        .collect();
    let memory = &session.memory;
    json!({
        "version": session.version,
        "name": session.name,
        "model": session.model,
        "saved_at": session.saved_at,
        "language": memory.language.current.map(|l| l.code()),
        "language_fixed": memory.language.fixed,
        "messages": messages,
        "summary": memory.summary,
        "tokens": memory.regions,
        "evicted_turns": memory.evicted_turns,
        "first_kept_message": memory.first_kept,
        "kv_saved": session.kv.is_some(),
        "settings": memory.settings,
    })
}

fn show_text(out: &mut impl Write, session: &Session) -> anyhow::Result<()> {
    let m = &session.memory;
    let t = m.regions;
    writeln!(
        out,
        "session {} (model {}): {} messages, {} turns evicted, language {}",
        session.name,
        session.model,
        session.conversation.messages.len(),
        m.evicted_turns,
        m.language.current.map_or("unknown", |l| l.code())
    )?;
    writeln!(
        out,
        "tokens: pinned {}, summary {}, recent {}, reserve {}, free {} (window {})",
        t.pinned, t.summary, t.recent, t.reserve, t.free, m.settings.window
    )?;
    if !m.summary.is_empty() {
        writeln!(out, "summary:\n{}", m.summary)?;
    }
    for (i, message) in session.conversation.messages.iter().enumerate() {
        let seen = if i < m.first_kept { " (evicted)" } else { "" };
        let text = crate::agent::output::cap(&content_of(message), 200).0;
        let text = corral_tools::sanitize::strip_control(&text);
        writeln!(
            out,
            "[{:?}{seen}] {}",
            message.role(),
            text.replace('\n', " ")
        )?;
    }
    Ok(())
}

/// A conversation resumed from `--session`, or new.
pub struct Opened {
    /// Where it is saved.
    pub store: SessionStore,
    /// The session (its conversation and memory are what the agent continues).
    pub session: Session,
}

/// A `--session` read from disk before the model is loaded, so a bad name or a corrupt file
/// fails before any slow work.
pub struct Loaded {
    store: SessionStore,
    name: String,
    saved: Option<Session>,
}

/// Reads `--session NAME` (a new session when there is none yet).
///
/// # Errors
/// A bad name, or a file that is corrupt or newer (left as it is).
pub fn load(name: &str) -> anyhow::Result<Loaded> {
    let store = store()?;
    let saved = store.load(name).map_err(usage_if_bad_name)?;
    Ok(Loaded {
        store,
        name: name.to_owned(),
        saved,
    })
}

impl Loaded {
    /// The session for a model called `model` with a `window`-token context and replies of up
    /// to `reserve` tokens, offering `tools`: the saved conversation and memory (settings
    /// brought to this window), or a new one. Token ids saved for another model are dropped.
    pub fn open(self, model: &str, window: usize, reserve: usize, tools: Vec<ToolSpec>) -> Opened {
        let name = &self.name;
        let mut session = match self.saved {
            Some(mut session) => {
                if session.model != model {
                    eprintln!(
                        "note: session {name} was run with {}; its token ids and KV state are \
                         for that model and are rebuilt for {model}",
                        session.model
                    );
                    session.transcript = Default::default();
                    session.kv = None;
                    session.model = model.to_owned();
                }
                session
            }
            None => Session::new(
                name,
                model,
                Conversation::new(Vec::new()),
                Memory::new(MemorySettings::for_window(window, reserve)),
            ),
        };
        let settings = &mut session.memory.settings;
        if settings.window != window || settings.reserve != reserve {
            let fresh = MemorySettings::for_window(window, reserve);
            settings.window = fresh.window;
            settings.reserve = fresh.reserve;
            settings.summary_tokens = fresh.summary_tokens;
        }
        session.conversation.tools = (!tools.is_empty()).then_some(tools);
        Opened {
            store: self.store,
            session,
        }
    }
}

/// Gives the code interpreter the state the session saved (its cells are re-run before its
/// next call).
pub fn restore_code(opened: &Opened, tools: &AgentTools) {
    if let Some(interpreter) = &tools.interpreter {
        interpreter.restore(opened.session.code_cells.clone());
    }
}

/// Restores the saved KV state into `backend`'s `sequence` when there is one for this
/// session; returns the tokens restored (0 when none or when it did not match).
pub fn restore_kv(opened: &Opened, backend: &mut dyn Backend, sequence: usize) -> usize {
    let Some(kv) = &opened.session.kv else {
        return 0;
    };
    let Ok(path) = opened.store.kv_path(&opened.session.name) else {
        return 0;
    };
    match backend.restore_sequence(sequence, &path) {
        Ok(tokens) if tokens == kv.tokens => tokens,
        Ok(tokens) => {
            eprintln!(
                "note: the KV state of session {} holds {tokens} tokens, not the {} saved with \
                 it; it is evaluated again instead",
                opened.session.name, kv.tokens
            );
            let _ = backend.truncate_cache(sequence, 0);
            0
        }
        Err(e) => {
            eprintln!("note: cannot restore the KV state ({e}); it is evaluated again instead");
            0
        }
    }
}

/// Saves the conversation and the agent's memory and tokens (and the KV state when `kv`).
///
/// # Errors
/// The session file cannot be written (the previous version is intact).
pub fn save(
    opened: &mut Opened,
    conversation: &Conversation,
    agent: &mut Agent<'_>,
    kv: bool,
    tools: &AgentTools,
) -> anyhow::Result<()> {
    let session = &mut opened.session;
    session.conversation = conversation.clone();
    session.code_cells = tools
        .interpreter
        .as_ref()
        .map(|i| i.cells())
        .unwrap_or_default();
    if let Some(memory) = agent.memory() {
        session.memory = memory.clone();
    }
    session.transcript = agent.transcript().clone();
    session.kv = None;
    if !kv {
        // A state saved by an earlier run no longer matches the conversation.
        if let Ok(path) = opened.store.kv_path(&session.name) {
            let _ = std::fs::remove_file(path);
        }
    } else {
        let sequence = agent.sequence();
        let temp = opened.store.kv_temp(&session.name)?;
        let tokens = agent.backend().cached_tokens(sequence);
        match agent.backend().save_sequence(sequence, &temp) {
            Ok(bytes) => {
                opened.store.commit_kv(&session.name, &temp)?;
                session.kv = Some(KvState { tokens, bytes });
            }
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                eprintln!("warning: the KV state was not saved: {e}");
            }
        }
    }
    opened
        .store
        .save(session)
        .with_context(|| format!("session {} was not saved", session.name))
}
