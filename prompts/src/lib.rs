//! Prompt formats for corral: how a conversation with tools becomes the exact text a model was
//! trained on, and how the model's reply becomes text and tool calls again.
//!
//! # Why this crate exists
//! A local model uses tools well only when it is spoken to in its own format, byte for byte, and
//! when everything it writes back is understood. Peers fail in known ways: calls leak into plain
//! text, malformed JSON ends the conversation, re-rendered history breaks the KV cache, non-ASCII
//! turns into `\uXXXX`, and parallel calls are rejected. This crate is the one place where corral
//! gets all of that right, without knowing anything about inference engines or tools' code.
//!
//! # Shape
//! - [`types`]: the conversation ([`Message`], [`ToolSpec`], [`ToolCall`], [`BuiltinTool`]).
//! - [`Format`]: the seam the agent uses — `render`, a streaming `parser`, `stop_tokens` and a
//!   tool-call `constraint`. A format is chosen once per model ([`detect`]), never guessed per
//!   reply.
//! - [`llama31`]: Llama 3.1/3.2/3.3. Rendering is byte-exact with the official chat template
//!   ([`llama31::Style::Template`]) or with Meta's reference prompts ([`llama31::Style::Meta`]),
//!   and append-only: an assistant turn is rendered from the exact text the model generated, so
//!   the prompt of the next turn extends the previous one and the engine's KV cache stays valid.
//! - [`hermes`]: ChatML models with `<tool_call>` calls, rendered through the model's own template.
//! - The parser (shared by both, in `scan`) is fed pieces as they are generated and emits text
//!   deltas, tool calls, structured errors the agent can send back to the model, and the stop
//!   kind (`<|eom_id|>`: wants tool results; `<|eot_id|>`: turn over). Model output is untrusted:
//!   the parser never panics, bounds nesting, and is fuzzed.
//! - [`constraint`]: a backend-neutral [`ToolConstraint`] (an llguidance Lark grammar with the
//!   tools' JSON Schemas, plus lazy triggers) that keeps calls valid without forcing the model to
//!   call at all.
//!
//! # Example
//! ```
//! use corral_prompts::{parse_all, Conversation, Format, Message, ToolSpec};
//! use corral_prompts::llama31::{Llama31, Style};
//! use serde_json::json;
//!
//! let weather = ToolSpec::new("get_weather", "Current weather",
//!     json!({"type": "object", "properties": {"city": {"type": "string"}}}));
//! let conversation = Conversation::new(vec![Message::user("Weather in Zürich?")])
//!     .with_tools(vec![weather]);
//! let format = Llama31::new(Style::Template).with_date(Some("21 Sep 2024".into()));
//! let prompt = format.render(&conversation, true).unwrap();
//! assert!(prompt.ends_with("Weather in Zürich?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"));
//!
//! let reply = r#"{"name": "get_weather", "parameters": {"city": "Zürich"}}<|eom_id|>"#;
//! let parsed = parse_all(format.parser(conversation.tool_set()), reply);
//! assert_eq!(parsed.tool_calls[0].arguments, json!({"city": "Zürich"}));
//! ```

pub mod constraint;
mod date;
mod format;
pub mod hermes;
pub mod jinja;
pub mod literal;
pub mod llama31;
pub mod plain;
pub mod pyjson;
pub mod request;
mod scan;
pub mod types;

pub use constraint::{ConstraintError, ToolConstraint, Trigger, TriggerKind};
pub use date::Date;
pub use format::{
    parse_all, Format, ParseError, ParseErrorKind, ParseEvent, ParsedMessage, RenderError,
    StopKind, StreamParser,
};
pub use plain::{ControlTexts, Segment};
pub use types::{
    BuiltinTool, Conversation, Message, Role, ToolCall, ToolChoice, ToolOutput, ToolSet, ToolSpec,
};

/// Which format family a model's embedded chat template belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatKind {
    /// Llama 3.x headers (`<|start_header_id|>`, `<|eot_id|>`): [`llama31::Llama31`].
    Llama3,
    /// ChatML (`<|im_start|>`): [`hermes::Hermes`] with `<tool_call>` calls.
    ChatMl,
}

/// Chooses the format from a GGUF's `tokenizer.chat_template`; `None` when it is neither.
pub fn detect(chat_template: &str) -> Option<FormatKind> {
    if chat_template.contains("<|start_header_id|>") && chat_template.contains("<|eot_id|>") {
        Some(FormatKind::Llama3)
    } else if chat_template.contains("<|im_start|>") {
        Some(FormatKind::ChatMl)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_chatml_and_rejects_unknown_templates() {
        let chatml = "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}{% endfor %}";
        assert_eq!(detect(chatml), Some(FormatKind::ChatMl));
        assert_eq!(detect("{{ messages }}"), None);
    }
}
