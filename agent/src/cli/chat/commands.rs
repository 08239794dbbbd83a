//! The chat's slash commands: what each is called, what it takes, and the help text.

/// One command, for `/help` and Tab completion.
pub struct CommandInfo {
    /// As typed, with its slash.
    pub name: &'static str,
    /// Its arguments, for the help.
    pub args: &'static str,
    /// What it does.
    pub help: &'static str,
}

/// Every slash command.
pub const COMMANDS: &[CommandInfo] = &[
    CommandInfo {
        name: "/help",
        args: "",
        help: "this list",
    },
    CommandInfo {
        name: "/tools",
        args: "",
        help: "the tools: policy, grants, what they can touch",
    },
    CommandInfo {
        name: "/model",
        args: "",
        help: "the loaded model, its context and format",
    },
    CommandInfo {
        name: "/system",
        args: "[TEXT]",
        help: "show or set the system prompt (`/system -` clears it)",
    },
    CommandInfo {
        name: "/reset",
        args: "",
        help: "start the conversation over",
    },
    CommandInfo {
        name: "/save",
        args: "NAME",
        help: "save the conversation as NAME (and keep saving there)",
    },
    CommandInfo {
        name: "/load",
        args: "NAME",
        help: "continue the saved conversation NAME",
    },
    CommandInfo {
        name: "/sessions",
        args: "",
        help: "list saved conversations",
    },
    CommandInfo {
        name: "/lang",
        args: "[CODE|auto]",
        help: "show, fix or detect the answer language",
    },
    CommandInfo {
        name: "/stats",
        args: "",
        help: "context use by region, last turn's speed, evictions, reuse",
    },
    CommandInfo {
        name: "/compact",
        args: "",
        help: "fold the history into the summary now",
    },
    CommandInfo {
        name: "/grant",
        args: "PLUGIN=WHAT",
        help: "grant DIR, DIR:ro, env:NAME or net:IP:PORT for this chat",
    },
    CommandInfo {
        name: "/last",
        args: "",
        help: "the last tool result in full",
    },
    CommandInfo {
        name: "/quit",
        args: "",
        help: "leave (also /exit, Ctrl-D, or Ctrl-C twice)",
    },
];

/// A line the user typed, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A message for the model.
    Say(String),
    /// `/help`.
    Help,
    /// `/tools`.
    Tools,
    /// `/model`.
    Model,
    /// `/system` (show) or `/system TEXT` (set); `Some("")` clears.
    System(Option<String>),
    /// `/reset`.
    Reset,
    /// `/save NAME`.
    Save(String),
    /// `/load NAME`.
    Load(String),
    /// `/sessions`.
    Sessions,
    /// `/lang [ARG]`.
    Lang(String),
    /// `/stats`.
    Stats,
    /// `/compact`.
    Compact,
    /// `/grant SPEC`.
    Grant(String),
    /// `/last`.
    Last,
    /// `/quit`, `/exit`.
    Quit,
    /// Something that is not a command; the text says what to do.
    Bad(String),
}

/// Parses one line (already joined from `\` continuations). A line starting with `//` says
/// the rest to the model, slash included.
pub fn parse(line: &str) -> Command {
    let text = line.trim();
    if let Some(rest) = text.strip_prefix("//") {
        return Command::Say(format!("/{rest}"));
    }
    let Some(body) = text.strip_prefix('/') else {
        return Command::Say(text.to_owned());
    };
    let (name, arg) = match body.split_once(char::is_whitespace) {
        Some((name, arg)) => (name, arg.trim()),
        None => (body, ""),
    };
    let needs = |what: &str, make: fn(String) -> Command| {
        if arg.is_empty() {
            Command::Bad(format!("/{name} needs {what}: /{name} {what}"))
        } else {
            make(arg.to_owned())
        }
    };
    match name {
        "help" | "?" => Command::Help,
        "tools" => Command::Tools,
        "model" => Command::Model,
        "system" if arg.is_empty() => Command::System(None),
        "system" if arg == "-" => Command::System(Some(String::new())),
        "system" => Command::System(Some(arg.to_owned())),
        "reset" | "clear" => Command::Reset,
        "save" => needs("NAME", Command::Save),
        "load" => needs("NAME", Command::Load),
        "sessions" => Command::Sessions,
        "lang" => Command::Lang(arg.to_owned()),
        "stats" => Command::Stats,
        "compact" => Command::Compact,
        "grant" => needs("PLUGIN=WHAT", |a| Command::Grant(a.replacen(' ', "=", 1))),
        "last" => Command::Last,
        "quit" | "exit" | "bye" => Command::Quit,
        other => Command::Bad(format!(
            "/{other} is not a command: /help lists them (start a message with // to send a \
             leading slash)"
        )),
    }
}

/// The help text.
pub fn help() -> String {
    let mut out = String::from("commands:\n");
    for c in COMMANDS {
        let usage = if c.args.is_empty() {
            c.name.to_owned()
        } else {
            format!("{} {}", c.name, c.args)
        };
        out.push_str(&format!("  {usage:<24} {}\n", c.help));
    }
    out.push_str(
        "keys: Enter sends; end a line with \\ to go on (pastes keep their lines); Tab \
         completes; Up/Down and Ctrl-R search the history; Ctrl-C stops an answer or a tool \
         call\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_into_commands_or_messages() {
        assert_eq!(parse("hello"), Command::Say("hello".into()));
        assert_eq!(parse("//etc/passwd?"), Command::Say("/etc/passwd?".into()));
        assert_eq!(
            parse("/system Be brief. "),
            Command::System(Some("Be brief.".into()))
        );
        assert_eq!(parse("/system -"), Command::System(Some(String::new())));
        assert_eq!(parse("/system"), Command::System(None));
        assert_eq!(parse("/save work"), Command::Save("work".into()));
        assert_eq!(
            parse("/grant files /tmp/x"),
            Command::Grant("files=/tmp/x".into())
        );
        assert_eq!(
            parse("/grant files=/tmp/x"),
            Command::Grant("files=/tmp/x".into())
        );
        assert_eq!(parse("/exit"), Command::Quit);
        assert!(matches!(parse("/load"), Command::Bad(m) if m.contains("/load NAME")));
        assert!(matches!(parse("/frobnicate"), Command::Bad(m) if m.contains("/help")));
    }

    #[test]
    fn every_command_is_in_the_help() {
        let help = help();
        for c in COMMANDS {
            assert!(help.contains(c.name), "{}", c.name);
            assert!(
                !matches!(parse(c.name), Command::Bad(m) if !m.contains("needs")),
                "{}",
                c.name
            );
        }
    }
}
