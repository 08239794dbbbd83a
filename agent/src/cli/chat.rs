//! `corral` / `corral chat`: a minimal chat through the model's own chat template.
//!
//! This is the first runnable product; the full REPL with tools arrives with the agent loop.

use std::io::Write;
use std::ops::ControlFlow;

use clap::Args;
use corral_prompts::ControlTexts;
use rustyline::error::ReadlineError;

use super::generate::stats_json;
use super::session;
use super::GlobalOpts;
use crate::chat_template::{ChatMessage, ChatTemplate};
use crate::engine::{Backend, GenerateRequest, StopReason};

/// Arguments of `corral chat`.
#[derive(Debug, Default, Args)]
pub struct ChatArgs {
    /// After each answer, print its token counts (the prompt's, so what the model saw, and the
    /// answer's), speeds and stop reason to stderr as one JSON line, like `generate --stats`.
    #[arg(long)]
    pub stats: bool,
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
    let mut backend = session::open_backend(global)?;
    let template = ChatTemplate::for_model(backend.info())?;
    let cancel = session::cancel_on_ctrl_c();
    let mut input = Input::new()?;
    let mut history: Vec<ChatMessage> = Vec::new();
    // What the user types stays plain text: typing `<|im_start|>` opens no turn.
    let controls = ControlTexts::new(backend.info().control_tokens.iter().cloned());
    // One answer may take at most a quarter of the window (and 1024 tokens), so a rambling
    // reply cannot crowd out the conversation.
    let reply_budget = (backend.info().context_tokens / 4).clamp(16, 1024);
    eprintln!(
        "corral chat with {} ({} tokens of context). /reset clears, /exit or Ctrl-D quits; \
         Ctrl-C stops an answer.",
        backend.info().name,
        backend.info().context_tokens
    );
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
                history.clear();
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        input.remember(text);
        history.push(ChatMessage::new("user", &controls.mark(text)));
        let prompt = match fit_prompt(&template, &mut history, backend.as_mut(), reply_budget) {
            Ok(prompt) => prompt,
            Err(e) => {
                history.pop();
                eprintln!("error: {e}");
                continue;
            }
        };
        cancel.reset();
        let request = GenerateRequest {
            prompt,
            max_tokens: Some(reply_budget),
            sampling: sampling.clone(),
            stop_strings: template.stop_strings(),
            stop_tokens: Vec::new(),
            cancel: cancel.clone(),
            constraint: None,
        };
        let mut stdout = std::io::stdout().lock();
        let result = backend.generate(&request, &mut |piece| {
            let _ = stdout.write_all(piece.as_bytes());
            let _ = stdout.flush();
            ControlFlow::Continue(())
        });
        writeln!(stdout)?;
        match result {
            Ok(generation) => {
                if generation.stop == StopReason::MaxTokens {
                    eprintln!("(answer cut at {reply_budget} tokens)");
                }
                if args.stats {
                    eprintln!("{}", stats_json(&generation));
                }
                let answer = controls.mark(generation.text.trim()).into_owned();
                history.push(ChatMessage::new("assistant", &answer));
            }
            Err(e) => {
                // Keep the user's message out of the history so the next turn still fits.
                history.pop();
                eprintln!("error: {e}");
            }
        }
    }
    Ok(())
}

/// Renders the conversation, dropping the oldest exchanges until the prompt plus a reply of
/// `reply_budget` tokens fits in the context window. The newest user message is always kept.
///
/// # Errors
/// The template fails, or the newest message alone does not fit.
fn fit_prompt(
    template: &ChatTemplate,
    history: &mut Vec<ChatMessage>,
    backend: &mut dyn Backend,
    reply_budget: usize,
) -> anyhow::Result<String> {
    let window = backend.info().context_tokens;
    loop {
        let prompt = template.render(history, true)?;
        let tokens = backend.tokenize(&prompt, true)?.len();
        if tokens + reply_budget <= window {
            return Ok(prompt);
        }
        if history.len() <= 1 {
            anyhow::bail!(
                "the message is {tokens} tokens; with room for the answer it does not fit in the \
                 {window}-token context: shorten it or raise --ctx"
            );
        }
        // Drop the oldest message (whole turns go first: user, then its answer).
        history.remove(0);
    }
}
