//! How turns look to a person: streamed text on stdout, one compact line per tool call and the
//! memory's notes on stderr, colours only on a terminal and never with `NO_COLOR`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};

use corral_tools::sanitize::strip_control;
use serde_json::Value;

use crate::agent::Event;
use crate::memory::SummaryBy;

/// Whether to colour a stream: a terminal, `NO_COLOR` unset or empty, `TERM` not `dumb`.
pub fn colour_for(is_terminal: bool) -> bool {
    is_terminal
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

/// ANSI styling that is a no-op when off.
#[derive(Debug, Clone, Copy)]
pub struct Paint {
    on: bool,
}

impl Paint {
    /// Colours for stderr, as [`colour_for`] decides.
    pub fn stderr() -> Paint {
        Paint {
            on: colour_for(std::io::stderr().is_terminal()),
        }
    }

    fn wrap(self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// Dim (tool activity).
    pub fn dim(self, text: &str) -> String {
        self.wrap("2", text)
    }

    /// Red (errors).
    pub fn red(self, text: &str) -> String {
        self.wrap("31", text)
    }
}

/// Shows a turn's events: the model's text streams to `out`; each tool call becomes one line
/// on stderr (name, arguments, short result or error, duration); memory notes too.
pub struct Shower {
    paint: Paint,
    arguments: HashMap<String, Value>,
    /// The last tool result in full (`/last`): tool name and what the model read.
    pub last_result: Option<(String, String)>,
    /// Whether text was written since the last newline.
    mid_line: bool,
}

impl Shower {
    /// A shower painting stderr with `paint`.
    pub fn new(paint: Paint) -> Shower {
        Shower {
            paint,
            arguments: HashMap::new(),
            last_result: None,
            mid_line: false,
        }
    }

    /// Shows `event`.
    pub fn show(&mut self, out: &mut impl Write, event: &Event) {
        match event {
            Event::Text { delta } => {
                let text = strip_control(delta);
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
                if !text.is_empty() {
                    self.mid_line = !text.ends_with('\n');
                }
            }
            Event::ToolCall { id, arguments, .. } => {
                self.arguments.insert(id.clone(), arguments.clone());
            }
            Event::ToolResult {
                id,
                name,
                ok,
                content,
                seconds,
            } => {
                self.end_line(out);
                let arguments = self.arguments.remove(id);
                let line = tool_line(name, arguments.as_ref(), *ok, content, *seconds);
                let line = if *ok {
                    self.paint.dim(&line)
                } else {
                    self.paint.red(&line)
                };
                eprintln!("{line}");
                self.last_result = Some((name.clone(), content.clone()));
            }
            Event::Memory { report, tokens, .. } => {
                self.end_line(out);
                let summary = match report.summary_by {
                    SummaryBy::None => String::new(),
                    SummaryBy::Model => "; summarised by the model".to_owned(),
                    SummaryBy::Fallback => format!(
                        "; summarised by first sentences ({})",
                        report
                            .summary_error
                            .as_deref()
                            .unwrap_or("the model failed")
                    ),
                };
                let line = format!(
                    "[memory] {:?}: {}{summary} (tokens: pinned {}, summary {}, recent {}, free {})",
                    report.action,
                    report.dropped,
                    tokens.pinned,
                    tokens.summary,
                    tokens.recent,
                    tokens.free
                );
                eprintln!("{}", self.paint.dim(&line));
            }
            Event::TurnFinished { .. } => {
                let _ = writeln!(out);
                let _ = out.flush();
                self.mid_line = false;
            }
        }
    }

    /// Ends a line of streamed text before a line of its own goes to stderr.
    fn end_line(&mut self, out: &mut impl Write) {
        if self.mid_line {
            let _ = writeln!(out);
            let _ = out.flush();
            self.mid_line = false;
        }
    }
}

/// One line per call for people: `[tool] name {args} → short result (12 ms)`, `✗` on error.
pub fn tool_line(
    name: &str,
    arguments: Option<&Value>,
    ok: bool,
    content: &str,
    seconds: f64,
) -> String {
    let one_line = |s: &str| {
        strip_control(s)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let short = crate::agent::output::cap(&one_line(content), 120).0;
    let args = arguments
        .map(|a| {
            format!(
                " {}",
                crate::agent::output::cap(&one_line(&a.to_string()), 80).0
            )
        })
        .unwrap_or_default();
    let mark = if ok { "→" } else { "✗" };
    let name = if name.is_empty() { "(bad call)" } else { name };
    format!(
        "[tool] {}{args} {mark} {short} ({:.0} ms)",
        strip_control(name),
        seconds * 1000.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_line_is_one_clean_line_with_arguments_and_duration() {
        let args = serde_json::json!({"expression": "2+3"});
        let line = tool_line("calculator", Some(&args), true, "5\n\x1b[31mred", 0.0123);
        assert_eq!(
            line,
            r#"[tool] calculator {"expression":"2+3"} → 5 red (12 ms)"#
        );
        let bad = tool_line("", None, false, "error: no such tool", 0.0);
        assert_eq!(bad, "[tool] (bad call) ✗ error: no such tool (0 ms)");
    }

    #[test]
    fn paint_off_adds_nothing() {
        assert_eq!(Paint { on: false }.red("x"), "x");
        assert_eq!(Paint { on: true }.red("x"), "\x1b[31mx\x1b[0m");
        assert!(!colour_for(false));
    }
}
