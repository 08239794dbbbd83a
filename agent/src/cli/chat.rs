//! `corral` / `corral chat`: a chat with the agent, tools included.
//!
//! Each line is one agent turn ([`crate::agent`]): the model's text streams to stdout, and each
//! tool call shows on one line on stderr (name, short result or error, duration). Tools from
//! builtin plugins run; other installed tools ask first on a terminal and are refused when the
//! input is not one. Plugins that need a folder are offered once one is granted (`files`). The prompt format is the model's own ([`format_for_model`]). Memory keeps the
//! conversation inside the window ([`crate::memory`]); `--session NAME` saves it after every turn.

use std::io::IsTerminal;

use clap::Args;
use corral_prompts::{Conversation, Message};
use corral_tools::sanitize::strip_control;
use rustyline::error::ReadlineError;

use super::run::{agent_tools, ask, show_event, AgentTools};
use super::sessions::{self, SessionFlags};
use super::{session, GlobalOpts};
use crate::agent::{format_for_model, prompt_tools, Agent, Event, Policy, TurnOptions, TurnStop};
use crate::memory::{Language, Memory, MemorySettings};

/// Arguments of `corral chat`.
#[derive(Debug, Default, Args)]
pub struct ChatArgs {
    /// After each answer, print its token counts (the prompt's, so what the model saw, and the
    /// answer's), speeds and stop reason to stderr as one JSON line, like `generate --stats`.
    #[arg(long)]
    pub stats: bool,
    /// Chat without tools.
    #[arg(long = "no-tools")]
    pub no_tools: bool,
    /// Saved conversations.
    #[command(flatten)]
    pub session: SessionFlags,
}

/// Where the chat's lines come from: the line editor on a terminal; plain lines from a pipe or a
/// file, with no prompt, so a script's output holds only the answers whatever `TERM` says (with
/// `TERM=dumb` the editor printed its prompt into piped output).
enum Input {
    Editor(Box<rustyline::DefaultEditor>),
    Plain(std::io::StdinLock<'static>),
}

impl Input {
    fn new() -> anyhow::Result<Input> {
        use std::io::IsTerminal;
        Ok(if std::io::stdin().is_terminal() {
            Input::Editor(Box::new(rustyline::DefaultEditor::new()?))
        } else {
            Input::Plain(std::io::stdin().lock())
        })
    }

    /// The next line without its newline; `None` at the end of the input.
    fn read_line(&mut self) -> Result<Option<String>, ReadlineError> {
        match self {
            Input::Editor(editor) => editor.readline("you> ").map(Some),
            Input::Plain(stdin) => {
                use std::io::BufRead;
                let mut line = String::new();
                match stdin.read_line(&mut line)? {
                    0 => Ok(None),
                    _ => Ok(Some(line.trim_end_matches(['\n', '\r']).to_owned())),
                }
            }
        }
    }

    fn remember(&mut self, line: &str) {
        if let Input::Editor(editor) = self {
            let _ = editor.add_history_entry(line);
        }
    }
}

/// Runs the chat loop until EOF, `/exit` or Ctrl-D.
///
/// # Errors
/// Bad flags, model loading failures or a broken terminal.
pub fn run(args: &ChatArgs, global: &GlobalOpts) -> anyhow::Result<()> {
    let sampling = global.sampling()?;
    let AgentTools {
        registry,
        policy,
        offered,
    } = if args.no_tools {
        AgentTools {
            registry: corral_tools::Registry::new(),
            policy: Policy::default(),
            offered: Vec::new(),
        }
    } else {
        agent_tools()?
    };
    let loaded = args.session.load()?;
    let mut backend = session::open_backend(global)?;
    let format = format_for_model(backend.info()).map_err(anyhow::Error::msg)?;
    let tools = prompt_tools(&registry, Some(&offered));
    let fresh = || {
        let c = Conversation::new(Vec::new());
        if tools.is_empty() {
            c
        } else {
            c.with_tools(tools.clone())
        }
    };
    let window = backend.info().context_tokens;
    let reply_budget = super::reply_budget(window);
    let mut opened =
        loaded.map(|l| l.open(&backend.info().name, window, reply_budget, tools.clone()));
    let (mut conversation, memory) = match &opened {
        Some(o) => (o.session.conversation.clone(), o.session.memory.clone()),
        None => (
            fresh(),
            Memory::new(MemorySettings::for_window(window, reply_budget)),
        ),
    };
    let options = TurnOptions {
        max_tokens: Some(reply_budget),
        sampling,
        policy,
        cancel: session::cancel_on_ctrl_c(),
        ..TurnOptions::default()
    };
    let mut input = Input::new()?;
    let interactive = std::io::stdin().is_terminal();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    eprintln!(
        "corral chat with {} ({} tokens of context; tools: {}). /reset clears, /lang CODE|auto \
         sets the language, /exit or Ctrl-D quits; Ctrl-C stops an answer.",
        backend.info().name,
        backend.info().context_tokens,
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    );
    // One agent for the whole chat: it keeps the conversation's token ids between turns.
    let mut agent = Agent::new(backend.as_mut(), format.as_ref(), &registry).with_memory(memory);
    if let Some(o) = &opened {
        let saved = o.session.conversation.messages.len();
        if saved > 0 {
            eprintln!("(resumed session {}: {saved} messages)", o.session.name);
        }
        agent = agent.with_transcript(o.session.transcript.clone());
        if args.session.session_kv {
            sessions::restore_kv(o, agent.backend(), 0);
        }
    }
    loop {
        let line = match input.read_line() {
            Ok(Some(line)) => line,
            Ok(None) | Err(ReadlineError::Eof) => break,
            Err(ReadlineError::Interrupted) => continue,
            Err(e) => return Err(e.into()),
        };
        let text = line.trim();
        match text {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                conversation = fresh();
                if let Some(memory) = agent.memory_mut() {
                    memory.reset();
                }
                if let Some(o) = &mut opened {
                    sessions::save(o, &conversation, &mut agent, false)?;
                }
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        if let Some(arg) = text.strip_prefix("/lang") {
            set_language(&mut agent, arg.trim());
            continue;
        }
        input.remember(text);
        let kept = conversation.messages.len();
        conversation.messages.push(Message::user(text));
        options.cancel.reset();
        let mut stdout = std::io::stdout().lock();
        let stats = args.stats;
        let mut on_event = |event: &Event| {
            show_event(&mut stdout, event);
            if stats && matches!(event, Event::TurnFinished { .. }) {
                if let Ok(line) = serde_json::to_string(event) {
                    eprintln!("{line}");
                }
            }
        };
        let mut approve = |call: &corral_prompts::ToolCall| interactive && ask(call);
        let outcome = agent.run_turn(&mut conversation, &options, &mut approve, &mut on_event);
        match outcome.stop {
            TurnStop::Answered | TurnStop::Cancelled => {}
            TurnStop::Error if outcome.steps <= 1 && conversation.messages.len() == kept + 1 => {
                // Nothing was generated: keep the user's message out so the next turn fits.
                conversation.messages.truncate(kept);
                eprintln!("error: {}", outcome.reason.unwrap_or_default());
            }
            _ => eprintln!("({})", strip_control(&outcome.reason.unwrap_or_default())),
        }
        if let Some(o) = &mut opened {
            if let Err(e) = sessions::save(o, &conversation, &mut agent, args.session.session_kv) {
                eprintln!("error: {e:#}");
            }
        }
    }
    Ok(())
}

/// `/lang CODE` fixes the language the model answers in; `/lang auto` goes back to detecting
/// it; `/lang` alone shows it.
fn set_language(agent: &mut Agent<'_>, arg: &str) {
    let Some(memory) = agent.memory_mut() else {
        return;
    };
    match arg {
        "" => eprintln!(
            "(language: {}{})",
            memory
                .language
                .current
                .map_or("not known yet", |l| l.english_name()),
            if memory.language.fixed {
                ", fixed"
            } else {
                ", detected"
            }
        ),
        "auto" => {
            memory.language.unfix();
            eprintln!("(the language is detected from your messages again)");
        }
        other => match Language::parse(other) {
            Some(lang) => {
                memory.set_language(lang);
                eprintln!("(answers in {} from now on)", lang.english_name());
            }
            None => {
                let codes: Vec<&str> = Language::ALL.iter().map(|l| l.code()).collect();
                eprintln!(
                    "error: /lang {other}: not one of Llama 3.1's languages ({}) or auto",
                    codes.join(", ")
                );
            }
        },
    }
}
