//! `corral` / `corral chat`: a chat with the agent, tools included.
//!
//! Each line is one agent turn ([`crate::agent`]): the model's text streams to stdout, and each
//! tool call shows on one line on stderr (name, short result or error, duration). Tools from
//! builtin plugins run; other installed tools ask first on a terminal and are refused when the
//! input is not one. Plugins that need a folder are offered once one is granted (`files`). The prompt format is the model's own ([`format_for_model`]). The full REPL
//! (sessions, commands, memory) builds on this.

use std::io::IsTerminal;

use clap::Args;
use corral_prompts::{Conversation, Format, Message, Role};
use corral_tools::sanitize::strip_control;
use rustyline::error::ReadlineError;

use super::run::{agent_tools, ask, show_event, AgentTools};
use super::{session, GlobalOpts};
use crate::agent::{format_for_model, prompt_tools, Agent, Event, Policy, TurnOptions, TurnStop};
use crate::engine::Backend;

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
    let mut conversation = fresh();
    // One answer may take at most a quarter of the window (and 1024 tokens), so a rambling
    // reply cannot crowd out the conversation.
    let reply_budget = (backend.info().context_tokens / 4).clamp(16, 1024);
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
        "corral chat with {} ({} tokens of context; tools: {}). /reset clears, /exit or Ctrl-D \
         quits; Ctrl-C stops an answer.",
        backend.info().name,
        backend.info().context_tokens,
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    );
    // One agent for the whole chat: it keeps the conversation's token ids between turns.
    let mut agent = Agent::new(backend.as_mut(), format.as_ref(), &registry);
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
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        input.remember(text);
        let kept = conversation.messages.len();
        conversation.messages.push(Message::user(text));
        if let Err(e) = fit(
            format.as_ref(),
            &mut conversation,
            agent.backend(),
            reply_budget,
        ) {
            conversation.messages.truncate(kept);
            eprintln!("error: {e}");
            continue;
        }
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
    }
    Ok(())
}

/// Drops the oldest exchanges (a user message and all that answered it) until the prompt plus
/// a reply of `reply_budget` tokens fits the context window. The newest user message stays.
///
/// # Errors
/// The conversation cannot be rendered, or the newest message alone does not fit.
fn fit(
    format: &dyn Format,
    conversation: &mut Conversation,
    backend: &mut dyn Backend,
    reply_budget: usize,
) -> anyhow::Result<()> {
    let window = backend.info().context_tokens;
    loop {
        let prompt = format.render(conversation, true)?;
        let tokens = backend.tokenize(&prompt, true)?.len();
        if tokens + reply_budget <= window {
            return Ok(());
        }
        let users: Vec<usize> = conversation
            .messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m.role() == Role::User)
            .map(|(i, _)| i)
            .collect();
        let [first, second, ..] = users[..] else {
            anyhow::bail!(
                "the message is {tokens} tokens; with room for the answer it does not fit in the \
                 {window}-token context: shorten it or raise --ctx"
            );
        };
        conversation.messages.drain(first..second);
    }
}
