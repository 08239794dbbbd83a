//! `corral` / `corral chat`: the REPL, one agent turn per message.
//!
//! On a terminal: a line editor ([`editor`]) with history, `\` continuations, bracketed paste
//! and Tab completion; a spinner until the first token; the model's text streaming to stdout
//! and one compact line per tool call on stderr ([`super::display`]); slash commands
//! ([`commands`]). Ctrl-C stops the answer or tool call under way and returns to the prompt with
//! the conversation consistent (a reply cut short keeps its text; a call that did not finish
//! leaves no half result); Ctrl-C twice at the prompt, Ctrl-D or `/quit` leave.
//!
//! From a pipe or a file the chat reads plain lines with no prompt or colours, so a script's
//! output holds only the answers, and an `ask` tool is refused (nobody can answer).
//! `--session NAME` (or `/save NAME`) saves the conversation after every turn.

mod commands;
mod editor;
mod report;

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal};

use clap::Args;
use corral_prompts::{Conversation, Message, ToolSpec};
use corral_sandbox::Grant;
use corral_tools::sanitize::strip_control;
use rustyline::error::ReadlineError;

use super::display::{colour_for, Paint, Shower};
use super::sessions::{self, Opened, SessionFlags};
use super::toolset::{agent_tools, parse_grant, AgentTools, Asker};
use super::{session, GlobalOpts};
use crate::agent::{format_for_model, prompt_tools, Agent, Event, TurnOptions, TurnStop};
use crate::memory::{Language, Memory, MemorySettings};
use commands::Command;
use editor::{ChatEditor, Names};

/// Arguments of `corral chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// After each answer, print its token counts (the prompt's, so what the model saw, and the
    /// answer's), speeds and stop reason to stderr as one JSON line, like `generate --stats`.
    #[arg(long)]
    pub stats: bool,
    /// Chat without tools.
    #[arg(long = "no-tools")]
    pub no_tools: bool,
    /// Offer only these tools (comma-separated names; default: every installed tool). Name
    /// `code_interpreter` here to offer it.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "A,B",
        conflicts_with = "no_tools"
    )]
    pub tools: Option<Vec<String>>,
    /// On the first step of each turn: auto (the model decides), none, required (some call),
    /// or a tool's name.
    #[arg(
        long = "tool-choice",
        default_value = "auto",
        value_name = "auto|none|required|NAME"
    )]
    pub tool_choice: String,
    /// The system prompt (default: none, or the config's).
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Grant a plugin something for this chat: PLUGIN=DIR, PLUGIN=DIR:ro, PLUGIN=env:NAME or
    /// PLUGIN=net:IP:PORT (repeatable; `/grant` does it from the chat).
    #[arg(long, value_name = "PLUGIN=WHAT")]
    pub grant: Vec<String>,
    /// Saved conversations.
    #[command(flatten)]
    pub session: SessionFlags,
}

impl Default for ChatArgs {
    /// What plain `corral` runs: the chat as `corral chat` with no flags.
    fn default() -> Self {
        ChatArgs {
            stats: false,
            no_tools: false,
            tools: None,
            tool_choice: "auto".into(),
            system: None,
            grant: Vec::new(),
            session: SessionFlags::default(),
        }
    }
}

/// Where lines come from: the editor on a terminal, plain lines otherwise.
enum Input {
    Editor(Box<ChatEditor>),
    Plain(std::io::StdinLock<'static>),
}

impl Input {
    /// The next line; `None` at the end of the input.
    fn read_line(&mut self) -> Result<Option<String>, ReadlineError> {
        match self {
            Input::Editor(editor) => editor.readline("you> ").map(|l| Some(editor::joined(&l))),
            Input::Plain(stdin) => {
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
            editor::remember(editor, line);
        }
    }

    fn names(&mut self) -> Option<&mut Names> {
        match self {
            Input::Editor(editor) => editor.helper_mut().map(|h| &mut h.names),
            Input::Plain(_) => None,
        }
    }
}

/// The last turn, for `/stats`.
#[derive(Debug, Clone, Copy, Default)]
struct LastTurn {
    steps: usize,
    prompt_tokens: usize,
    reused_tokens: usize,
    generated_tokens: usize,
    seconds: f64,
}

/// What the chat holds besides the agent.
struct Chat<'g> {
    global: &'g GlobalOpts,
    args: &'g ChatArgs,
    grants: BTreeMap<String, Grant>,
    tools: AgentTools,
    specs: Vec<ToolSpec>,
    asker: Asker,
    conversation: Conversation,
    opened: Option<Opened>,
    last: Option<LastTurn>,
    shower: Shower,
    paint: Paint,
    model_path: std::path::PathBuf,
}

/// What a command asks of the loop beyond itself.
enum Next {
    /// Read the next line.
    Continue,
    /// Build the agent again (tools or state changed), then read on.
    Rebuild(Rebuild),
    /// Leave.
    Quit,
}

enum Rebuild {
    /// The registry changed: keep transcript and memory.
    Tools,
    /// Another conversation: its transcript and memory.
    Session(Box<(crate::agent::Transcript, Memory)>),
}

/// Runs the chat until the input ends, `/quit`, Ctrl-D or Ctrl-C twice.
///
/// # Errors
/// Bad flags, model loading failures or a broken terminal.
pub fn run(args: &ChatArgs, global: &GlobalOpts) -> anyhow::Result<()> {
    global.sampling()?;
    global.engine_options()?;
    let mut grants = BTreeMap::new();
    for g in &args.grant {
        parse_grant(g, &mut grants)?;
    }
    let tools = if args.no_tools {
        AgentTools::none()
    } else {
        agent_tools(global, &grants)?.offering(args.tools.as_deref())?
    };
    let loaded = args.session.load()?;
    let model_path = session::resolve_model(global)?;
    let mut backend = session::open_backend_at(global, &model_path)?;
    let format = format_for_model(backend.info()).map_err(anyhow::Error::msg)?;
    let window = backend.info().context_tokens;
    let reply_budget = super::reply_budget(window);
    let specs = prompt_tools(&tools.registry, Some(&tools.offered));
    let tool_choice = super::run::parse_tool_choice(&args.tool_choice, &specs)?;
    let opened = loaded.map(|l| l.open(&backend.info().name, window, reply_budget, specs.clone()));
    if let Some(o) = &opened {
        sessions::restore_code(o, &tools);
    }
    let system = args
        .system
        .clone()
        .or(global.config.system.as_ref().map(|s| s.value.clone()));
    let (conversation, memory, transcript) = match &opened {
        Some(o) => (
            o.session.conversation.clone(),
            o.session.memory.clone(),
            o.session.transcript.clone(),
        ),
        None => (
            new_conversation(system.as_deref(), &specs),
            Memory::new(MemorySettings::for_window(window, reply_budget)),
            Default::default(),
        ),
    };
    let interactive = std::io::stdin().is_terminal();
    let colour = interactive && colour_for(std::io::stdout().is_terminal());
    let mut input = if interactive {
        let names = Names {
            tools: tools
                .registry
                .specs()
                .map(|(s, _)| s.name.clone())
                .collect(),
            sessions: session_names(),
            plugins: tools.reach.values().map(|r| r.plugin.clone()).collect(),
        };
        Input::Editor(Box::new(editor::new_editor(names, colour)?))
    } else {
        Input::Plain(std::io::stdin().lock())
    };
    let paint = Paint::stderr();
    let mut chat = Chat {
        global,
        args,
        grants,
        asker: Asker::new(tools.reach.clone()),
        tools,
        specs,
        conversation,
        opened,
        last: None,
        shower: Shower::new(paint),
        paint,
        model_path,
    };
    let names: Vec<&str> = chat.specs.iter().map(|t| t.name.as_str()).collect();
    eprintln!(
        "corral chat with {} ({} tokens of context; tools: {}). /help lists commands; Ctrl-C \
         stops an answer; Ctrl-D quits.",
        backend.info().name,
        window,
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    );
    if let Some(o) = &chat.opened {
        let saved = o.session.conversation.messages.len();
        if saved > 0 {
            eprintln!("(resumed session {}: {saved} messages)", o.session.name);
        }
    }
    let options = TurnOptions {
        max_tokens: Some(
            global
                .config
                .max_tokens
                .as_ref()
                .map_or(reply_budget, |s| s.value),
        ),
        max_steps: global.config.max_steps.as_ref().map_or(8, |s| s.value),
        sampling: global.sampling()?,
        tool_choice,
        cancel: session::cancel_on_ctrl_c(),
        ..TurnOptions::default()
    };
    let mut state = (transcript, memory);
    let mut restore_kv = args.session.session_kv;
    loop {
        let registry = std::sync::Arc::clone(&chat.tools.registry);
        let mut agent = Agent::new(backend.as_mut(), format.as_ref(), &registry)
            .with_memory(state.1)
            .with_transcript(state.0);
        if std::mem::take(&mut restore_kv) {
            if let Some(o) = &chat.opened {
                sessions::restore_kv(o, agent.backend(), 0);
            }
        }
        let mut options = options.clone();
        options.policy = chat.tools.policy.clone();
        let next = chat.read_and_run(&mut input, &mut agent, &options, interactive);
        let (transcript, memory) = agent.into_state();
        let memory =
            memory.unwrap_or_else(|| Memory::new(MemorySettings::for_window(window, reply_budget)));
        state = match next {
            Next::Quit => return Ok(()),
            Next::Continue | Next::Rebuild(Rebuild::Tools) => (transcript, memory),
            Next::Rebuild(Rebuild::Session(state)) => *state,
        };
        if let Some(names) = input.names() {
            names.tools = chat
                .tools
                .registry
                .specs()
                .map(|(s, _)| s.name.clone())
                .collect();
            names.sessions = session_names();
        }
    }
}

fn new_conversation(system: Option<&str>, specs: &[ToolSpec]) -> Conversation {
    let mut c = Conversation::new(Vec::new());
    if let Some(system) = system.filter(|s| !s.trim().is_empty()) {
        c.messages.push(Message::system(system));
    }
    if specs.is_empty() {
        c
    } else {
        c.with_tools(specs.to_vec())
    }
}

fn session_names() -> Vec<String> {
    crate::sessions::SessionStore::from_env()
        .ok()
        .and_then(|s| s.list().ok())
        .map(|list| list.into_iter().flatten().map(|i| i.name).collect())
        .unwrap_or_default()
}

impl Chat<'_> {
    /// Reads lines and runs them until one needs the agent rebuilt or the chat is over.
    fn read_and_run(
        &mut self,
        input: &mut Input,
        agent: &mut Agent<'_>,
        options: &TurnOptions,
        interactive: bool,
    ) -> Next {
        let mut interrupted = false;
        loop {
            let line = match input.read_line() {
                Ok(Some(line)) => line,
                Ok(None) | Err(ReadlineError::Eof) => return Next::Quit,
                Err(ReadlineError::Interrupted) => {
                    if interrupted {
                        return Next::Quit;
                    }
                    interrupted = true;
                    eprintln!("(Ctrl-C again, Ctrl-D or /quit to leave)");
                    continue;
                }
                Err(e) => {
                    eprintln!("error: the terminal failed: {e}");
                    return Next::Quit;
                }
            };
            interrupted = false;
            if line.trim().is_empty() {
                continue;
            }
            input.remember(line.trim());
            match commands::parse(&line) {
                Command::Say(text) => self.turn(agent, options, &text, interactive),
                Command::Quit => return Next::Quit,
                command => {
                    let next = self.command(agent, command);
                    if !matches!(next, Next::Continue) {
                        return next;
                    }
                }
            }
        }
    }

    /// One agent turn for the user's `text`.
    fn turn(
        &mut self,
        agent: &mut Agent<'_>,
        options: &TurnOptions,
        text: &str,
        interactive: bool,
    ) {
        let kept = self.conversation.messages.len();
        self.conversation.messages.push(Message::user(text));
        options.cancel.reset();
        let spinner = Spinner::new(interactive && std::io::stderr().is_terminal());
        spinner.start();
        let mut last = None;
        let mut stdout = std::io::stdout().lock();
        let shower = &mut self.shower;
        let stats = self.args.stats;
        let mut on_event = |event: &Event| {
            spinner.stop();
            shower.show(&mut stdout, event);
            match event {
                Event::ToolResult { .. } => spinner.start(),
                Event::TurnFinished {
                    steps,
                    prompt_tokens,
                    reused_tokens,
                    generated_tokens,
                    seconds,
                    ..
                } => {
                    last = Some(LastTurn {
                        steps: *steps,
                        prompt_tokens: *prompt_tokens,
                        reused_tokens: *reused_tokens,
                        generated_tokens: *generated_tokens,
                        seconds: *seconds,
                    });
                    if stats {
                        if let Ok(line) = serde_json::to_string(event) {
                            eprintln!("{line}");
                        }
                    }
                }
                _ => {}
            }
        };
        let asker = &mut self.asker;
        let mut approve = |call: &corral_prompts::ToolCall| interactive && asker.ask(call);
        let outcome = agent.run_turn(&mut self.conversation, options, &mut approve, &mut on_event);
        spinner.stop();
        drop(stdout);
        self.last = last.or(self.last);
        match outcome.stop {
            TurnStop::Answered => {}
            TurnStop::Cancelled => eprintln!("{}", self.paint.dim("(stopped)")),
            TurnStop::Error
                if outcome.steps <= 1 && self.conversation.messages.len() == kept + 1 =>
            {
                // Nothing was generated: keep the user's message out so the next turn fits.
                self.conversation.messages.truncate(kept);
                eprintln!(
                    "{}",
                    self.paint
                        .red(&format!("error: {}", outcome.reason.unwrap_or_default()))
                );
            }
            _ => eprintln!(
                "{}",
                self.paint.red(&format!(
                    "({})",
                    strip_control(&outcome.reason.unwrap_or_default())
                ))
            ),
        }
        self.save(agent);
    }

    /// Saves to the current session, if there is one.
    fn save(&mut self, agent: &mut Agent<'_>) {
        if let Some(o) = &mut self.opened {
            let kv = self.args.session.session_kv;
            if let Err(e) = sessions::save(o, &self.conversation, agent, kv, &self.tools) {
                eprintln!("{}", self.paint.red(&format!("error: {e:#}")));
            }
        }
    }

    fn note(&self, text: &str) {
        eprintln!("{}", self.paint.dim(text));
    }

    fn error(&self, text: &str) {
        eprintln!("{}", self.paint.red(&format!("error: {text}")));
    }

    /// Runs a slash command.
    fn command(&mut self, agent: &mut Agent<'_>, command: Command) -> Next {
        match command {
            Command::Say(_) | Command::Quit => {}
            Command::Bad(message) => self.error(&message),
            Command::Help => eprint!("{}", commands::help()),
            Command::Tools => eprint!("{}", self.tools_text()),
            Command::Model => {
                let info = agent.backend().info().clone();
                eprintln!(
                    "model {} ({})\n  context {} tokens (trained on {}), {} sequence(s)\n  \
                     format {}",
                    info.name,
                    self.model_path.display(),
                    info.context_tokens,
                    info.trained_context_tokens,
                    info.sequences,
                    match corral_prompts::detect(info.chat_template.as_deref().unwrap_or("")) {
                        Some(corral_prompts::FormatKind::Llama3) =>
                            "Llama 3.x (ipython tool calls)",
                        Some(corral_prompts::FormatKind::ChatMl) => "ChatML (Hermes <tool_call>)",
                        None => "unknown",
                    }
                );
            }
            Command::System(None) => match self.conversation.messages.first() {
                Some(Message::System { content }) => eprintln!("system: {content}"),
                _ => self.note("(no system prompt: /system TEXT sets one)"),
            },
            Command::System(Some(text)) => {
                let had = matches!(
                    self.conversation.messages.first(),
                    Some(Message::System { .. })
                );
                let messages = &mut self.conversation.messages;
                match (had, text.is_empty()) {
                    (true, true) => {
                        messages.remove(0);
                    }
                    (true, false) => messages[0] = Message::system(text),
                    (false, true) => {}
                    (false, false) => messages.insert(0, Message::system(text)),
                }
                let has = matches!(messages.first(), Some(Message::System { .. }));
                if let Some(memory) = agent.memory_mut() {
                    // Memory counts messages by index: they moved by one.
                    memory.system_changed(isize::from(has) - isize::from(had));
                }
                self.note("(system prompt set; the whole conversation is evaluated again)");
                self.save(agent);
            }
            Command::Reset => {
                let system = match self.conversation.messages.first() {
                    Some(Message::System { content }) => Some(content.clone()),
                    _ => None,
                };
                self.conversation = new_conversation(system.as_deref(), &self.specs);
                if let Some(memory) = agent.memory_mut() {
                    memory.reset();
                }
                if let Some(interpreter) = &self.tools.interpreter {
                    interpreter.reset();
                }
                self.save(agent);
                self.note("(conversation cleared)");
            }
            Command::Save(name) => return self.save_as(agent, &name),
            Command::Load(name) => return self.load(agent, &name),
            Command::Sessions => self.list_sessions(),
            Command::Lang(arg) => set_language(agent, &arg),
            Command::Stats => eprint!("{}", self.stats_text(agent)),
            Command::Compact => match agent.compact(&self.conversation) {
                Ok(Some(report)) => {
                    self.note(&format!(
                        "(folded {} into the summary: prompt {} → {} tokens)",
                        report.dropped, report.before, report.after
                    ));
                    self.save(agent);
                }
                Ok(None) => self.note("(nothing to fold yet)"),
                Err(e) => self.error(&e),
            },
            Command::Grant(spec) => return self.grant(&spec),
            Command::Last => match &self.shower.last_result {
                Some((name, content)) => eprintln!("[{name}]\n{}", strip_control(content)),
                None => self.note("(no tool has run yet)"),
            },
        }
        Next::Continue
    }

    fn save_as(&mut self, agent: &mut Agent<'_>, name: &str) -> Next {
        let info = agent.backend().info().clone();
        let reserve = super::reply_budget(info.context_tokens);
        match sessions::load(name) {
            Ok(loaded) => {
                let mut o =
                    loaded.open(&info.name, info.context_tokens, reserve, self.specs.clone());
                let kv = self.args.session.session_kv;
                match sessions::save(&mut o, &self.conversation, agent, kv, &self.tools) {
                    Ok(()) => {
                        self.note(&format!(
                            "(saved as {name}; later turns are saved there too)"
                        ));
                        self.opened = Some(o);
                    }
                    Err(e) => self.error(&format!("{e:#}")),
                }
            }
            Err(e) => self.error(&format!("{e:#}")),
        }
        Next::Continue
    }

    fn load(&mut self, agent: &mut Agent<'_>, name: &str) -> Next {
        let info = agent.backend().info().clone();
        let reserve = super::reply_budget(info.context_tokens);
        let loaded = match sessions::load(name) {
            Ok(l) => l,
            Err(e) => {
                self.error(&format!("{e:#}"));
                return Next::Continue;
            }
        };
        let o = loaded.open(&info.name, info.context_tokens, reserve, self.specs.clone());
        let messages = o.session.conversation.messages.len();
        if messages == 0 {
            self.error(&format!("no session named {name}: /sessions lists them"));
            return Next::Continue;
        }
        self.conversation = o.session.conversation.clone();
        sessions::restore_code(&o, &self.tools);
        let state = (o.session.transcript.clone(), o.session.memory.clone());
        self.opened = Some(o);
        self.note(&format!("(loaded session {name}: {messages} messages)"));
        Next::Rebuild(Rebuild::Session(Box::new(state)))
    }

    fn list_sessions(&self) {
        let Ok(store) = crate::sessions::SessionStore::from_env() else {
            self.error("no folder for sessions (set HOME or CORRAL_HOME)");
            return;
        };
        match store.list() {
            Ok(list) if list.is_empty() => {
                self.note("(no saved sessions: /save NAME saves this one)")
            }
            Ok(list) => {
                for s in list.into_iter().flatten() {
                    eprintln!(
                        "{:<20} {:>4} messages  {:<3} {}",
                        s.name,
                        s.messages,
                        s.language.as_deref().unwrap_or("-"),
                        s.model
                    );
                }
            }
            Err(e) => self.error(&e.to_string()),
        }
    }

    fn grant(&mut self, spec: &str) -> Next {
        let mut grants = self.grants.clone();
        if let Err(e) = parse_grant(spec, &mut grants) {
            self.error(&e.to_string().replacen("--grant", "/grant", 1));
            return Next::Continue;
        }
        match agent_tools(self.global, &grants)
            .and_then(|t| Ok(t.offering(self.args.tools.as_deref())?))
        {
            Ok(tools) => {
                self.grants = grants;
                self.specs = prompt_tools(&tools.registry, Some(&tools.offered));
                self.conversation.tools = (!self.specs.is_empty()).then(|| self.specs.clone());
                self.asker = Asker::new(tools.reach.clone());
                // The interpreter's state carries over to the new one.
                if let (Some(old), Some(new)) = (&self.tools.interpreter, &tools.interpreter) {
                    new.restore(old.cells());
                }
                self.tools = tools;
                self.note("(granted for this chat)");
                eprint!("{}", self.tools_text());
                Next::Rebuild(Rebuild::Tools)
            }
            Err(e) => {
                self.error(&format!("{e:#}"));
                Next::Continue
            }
        }
    }
}

/// A spinner on stderr while the model thinks (nothing when stderr is not a terminal).
struct Spinner {
    bar: Option<indicatif::ProgressBar>,
}

impl Spinner {
    fn new(on: bool) -> Spinner {
        Spinner {
            bar: on.then(|| {
                let bar = indicatif::ProgressBar::hidden();
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                bar.set_message("thinking");
                if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg}") {
                    bar.set_style(style);
                }
                bar
            }),
        }
    }

    fn start(&self) {
        if let Some(bar) = &self.bar {
            bar.reset();
            bar.enable_steady_tick(std::time::Duration::from_millis(100));
        }
    }

    fn stop(&self) {
        if let Some(bar) = &self.bar {
            if !bar.is_hidden() {
                bar.disable_steady_tick();
                bar.finish_and_clear();
            }
        }
    }
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
