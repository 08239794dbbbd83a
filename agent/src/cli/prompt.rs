//! `corral prompt …`: render, parse and tokenize Llama 3.1 prompts, for scripts and for checking
//! what the model really sees. The formats themselves live in `corral-prompts`; this is I/O only.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use corral_prompts::llama31::{Llama31, Style};
use corral_prompts::request::{tools_from_json, RenderRequest};
use corral_prompts::{parse_all, Format, ToolSet};

use super::stdin::read_stdin;
use super::{GlobalOpts, UsageError};
use crate::agent::format_for_template;
use crate::model::gguf;

/// Subcommands of `corral prompt`.
#[derive(Debug, Subcommand)]
pub enum PromptCommand {
    /// Render a conversation (one JSON object on stdin) to the exact prompt text on stdout.
    ///
    /// Input: {"messages": [...], "tools": [...], "builtin_tools": [...], "date": "...",
    /// "tools_in_user_message": true, "style": "template"|"meta", "tool_prompt":
    /// "json"|"function_tag", "add_generation_prompt": true}. No model needed.
    Render,
    /// Parse raw model output on stdin into content, tool calls, stop kind and errors (JSON),
    /// in Llama 3.1's format, or with `--model GGUF` in that model's format (Llama 3.x or
    /// ChatML/Hermes, from its chat template).
    Parse {
        /// JSON array of the tools offered (OpenAI tool objects, or builtin tool names); without
        /// it any tool name is accepted where a call is unambiguous.
        #[arg(long, value_name = "FILE")]
        tools: Option<PathBuf>,
    },
    /// Print the token ids of stdin's text as a JSON array (special tokens parsed); needs
    /// `--model GGUF` (a vocab-only GGUF is enough).
    Tokens,
}

/// Runs a `corral prompt` subcommand.
///
/// # Errors
/// Bad input on stdin ([`UsageError`], exit code 2) or I/O failures.
pub fn run(command: PromptCommand, global: &GlobalOpts) -> anyhow::Result<()> {
    match command {
        PromptCommand::Render => render(),
        PromptCommand::Parse { tools } => parse(tools.as_deref(), global.model.as_deref()),
        PromptCommand::Tokens => tokens(global.model.as_deref()),
    }
}

fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn render() -> anyhow::Result<()> {
    let request = RenderRequest::from_json(&read_stdin("the conversation")?)
        .map_err(|e| UsageError::new(e.0))?;
    let text = request
        .format
        .render(&request.conversation, request.add_generation_prompt)
        .map_err(|e| UsageError::new(e.to_string()))?;
    write_stdout(&text)
}

fn parse(tools: Option<&Path>, model: Option<&Path>) -> anyhow::Result<()> {
    let format: Box<dyn Format> = match model {
        None => Box::new(Llama31::new(Style::Template)),
        Some(path) => {
            if !path.is_file() {
                let shown = path.display();
                return Err(UsageError::new(format!("--model {shown}: no such file")).into());
            }
            let summary =
                gguf::inspect(path).with_context(|| format!("cannot read {}", path.display()))?;
            format_for_template(&summary.name, summary.chat_template.as_deref())
                .map_err(UsageError::new)?
        }
    };
    let tool_set = match tools {
        None => ToolSet::permissive(),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                UsageError::new(format!("cannot read tools file {}: {e}", path.display()))
            })?;
            let (specs, builtins) = tools_from_json(&text).map_err(|e| UsageError::new(e.0))?;
            ToolSet::new(&specs, &builtins)
        }
    };
    let output = read_stdin("the model output")?;
    let parsed = parse_all(format.parser(tool_set), &output);
    let errors: Vec<serde_json::Value> = parsed
        .errors
        .iter()
        .map(|error| {
            let mut value = serde_json::to_value(&error.kind).unwrap_or_default();
            value["message"] = error.to_string().into();
            value["text"] = error.text.clone().into();
            value
        })
        .collect();
    let json = serde_json::json!({
        "content": parsed.content,
        "tool_calls": parsed.tool_calls,
        "stop": parsed.stop,
        "errors": errors,
    });
    write_stdout(&format!("{json}\n"))
}

fn tokens(model: Option<&Path>) -> anyhow::Result<()> {
    let Some(model) = model else {
        return Err(UsageError::new(
            "`corral prompt tokens` needs --model GGUF (a vocab-only GGUF is enough)",
        )
        .into());
    };
    if !model.is_file() {
        return Err(UsageError::new(format!("--model {}: no such file", model.display())).into());
    }
    let text = read_stdin("the text")?;
    let ids = tokenize(model, &text)?;
    write_stdout(&format!("{}\n", serde_json::to_string(&ids)?))
}

fn tokenize(model: &Path, text: &str) -> anyhow::Result<Vec<i32>> {
    crate::engine::llama::tokenize_with_vocab(model, text)
        .with_context(|| format!("cannot tokenize with {}", model.display()))
}
