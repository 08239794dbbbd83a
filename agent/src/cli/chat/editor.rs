//! The chat's line editor: history kept in the user's state folder, a trailing `\` (or a
//! bracketed paste) for multi-line input, and Tab completion of slash commands, tool names,
//! session names and plugin ids.

use std::borrow::Cow;
use std::path::PathBuf;

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Editor, Helper};

use super::commands::COMMANDS;

/// What Tab completes besides the commands.
#[derive(Debug, Default, Clone)]
pub struct Names {
    /// Tools in the registry.
    pub tools: Vec<String>,
    /// Saved sessions.
    pub sessions: Vec<String>,
    /// Plugin ids (for `/grant`).
    pub plugins: Vec<String>,
}

/// The rustyline helper.
pub struct ChatHelper {
    /// Completion candidates.
    pub names: Names,
    /// Whether the prompt is coloured.
    pub colour: bool,
}

/// Completions of `line` up to `pos`: where the completed word starts and the candidates.
pub fn complete(names: &Names, line: &str, pos: usize) -> (usize, Vec<String>) {
    let before = &line[..pos];
    let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
    let word = &before[start..];
    let first = before.split_whitespace().next().unwrap_or("");
    let pool: Vec<&str> = if start == 0 && word.starts_with('/') {
        COMMANDS.iter().map(|c| c.name).collect()
    } else {
        match first {
            "/load" | "/save" => names.sessions.iter().map(String::as_str).collect(),
            "/grant" => names.plugins.iter().map(String::as_str).collect(),
            "/lang" => crate::memory::Language::ALL
                .iter()
                .map(|l| l.code())
                .chain(["auto"])
                .collect(),
            _ => names.tools.iter().map(String::as_str).collect(),
        }
    };
    let mut found: Vec<String> = pool
        .into_iter()
        .filter(|c| {
            if word.is_empty() {
                first.starts_with('/')
            } else {
                c.starts_with(word)
            }
        })
        .map(str::to_owned)
        .collect();
    found.sort();
    found.dedup();
    (start, found)
}

impl Completer for ChatHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, found) = complete(&self.names, line, pos);
        let pairs = found
            .into_iter()
            .map(|c| Pair {
                display: c.clone(),
                replacement: c,
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for ChatHelper {
    type Hint = String;
}

impl Highlighter for ChatHelper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        _default: bool,
    ) -> Cow<'b, str> {
        if self.colour {
            Cow::Owned(format!("\x1b[1;32m{prompt}\x1b[0m"))
        } else {
            Cow::Borrowed(prompt)
        }
    }
}

impl Validator for ChatHelper {
    fn validate(&self, ctx: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        Ok(if continues(ctx.input()) {
            ValidationResult::Incomplete
        } else {
            ValidationResult::Valid(None)
        })
    }
}

impl Helper for ChatHelper {}

/// Whether a line asks for another (it ends with an unescaped `\`).
pub fn continues(input: &str) -> bool {
    let trailing = input.chars().rev().take_while(|&c| c == '\\').count();
    trailing % 2 == 1
}

/// The message typed with `\` continuations: each `\` + newline becomes a newline.
pub fn joined(input: &str) -> String {
    input.replace("\\\n", "\n")
}

/// The chat's editor.
pub type ChatEditor = Editor<ChatHelper, FileHistory>;

/// An editor with the history file loaded (created on the first save).
///
/// # Errors
/// The terminal cannot be set up.
pub fn new_editor(names: Names, colour: bool) -> rustyline::Result<ChatEditor> {
    let config = rustyline::Config::builder()
        .auto_add_history(false)
        .history_ignore_dups(true)?
        .history_ignore_space(true)
        .max_history_size(5000)?
        .bracketed_paste(true)
        .completion_type(rustyline::CompletionType::List)
        .build();
    let mut editor = ChatEditor::with_config(config)?;
    editor.set_helper(Some(ChatHelper { names, colour }));
    if let Some(path) = history_path() {
        // No history yet, or an unreadable one: start empty (it is rewritten on save).
        let _ = editor.load_history(&path);
    }
    Ok(editor)
}

/// Where the history lives: `$CORRAL_HOME/history`, else the state folder's
/// `corral/history` (`~/.local/state/corral/history` on Linux).
pub fn history_path() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CORRAL_HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(home).join("history"));
    }
    dirs::state_dir()
        .or_else(dirs::data_local_dir)
        .map(|d| d.join("corral").join("history"))
}

/// Adds `line` to the history and saves it (private to the user: it holds what they typed).
pub fn remember(editor: &mut ChatEditor, line: &str) {
    let _ = editor.add_history_entry(line);
    let Some(path) = history_path() else {
        return;
    };
    if let Some(dir) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir);
    }
    if editor.save_history(&path).is_ok() {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names {
            tools: vec!["calculator".into(), "clock".into()],
            sessions: vec!["work".into(), "weekend".into()],
            plugins: vec!["files".into()],
        }
    }

    #[test]
    fn tab_completes_commands_tools_sessions_and_plugins() {
        let n = names();
        assert_eq!(complete(&n, "/st", 3), (0, vec!["/stats".to_owned()]));
        assert_eq!(
            complete(&n, "/load w", 7),
            (6, vec!["weekend".to_owned(), "work".to_owned()])
        );
        assert_eq!(complete(&n, "/grant f", 8), (7, vec!["files".to_owned()]));
        assert_eq!(
            complete(&n, "use the cl", 10),
            (8, vec!["clock".to_owned()])
        );
        assert_eq!(complete(&n, "/lang d", 7), (6, vec!["de".to_owned()]));
        assert!(complete(&n, "hello ", 6).1.is_empty());
    }

    #[test]
    fn a_trailing_backslash_continues_and_joins_with_a_newline() {
        assert!(continues("first line\\"));
        assert!(!continues("a literal \\\\"));
        assert!(!continues("done"));
        assert_eq!(joined("one\\\ntwo\\\nthree"), "one\ntwo\nthree");
    }
}
