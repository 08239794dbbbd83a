//! The seam between the agent and a model family's prompt format.

use serde::Serialize;

use crate::constraint::{ConstraintError, ToolConstraint};
use crate::types::{Conversation, ToolCall, ToolChoice, ToolSet};

/// A model family's prompt format: how a conversation becomes prompt text, how generated text
/// becomes text and tool calls, which tokens end a turn, and how tool calls are constrained.
///
/// The agent picks a format once per model (from its GGUF metadata) and never guesses per reply.
pub trait Format {
    /// Renders a conversation to prompt text, special tokens written as text (tokenize with
    /// special-token parsing on). With `add_generation_prompt` the text ends with the header that
    /// opens the assistant's turn.
    ///
    /// # Errors
    /// [`RenderError`] when the conversation cannot be expressed in this format.
    fn render(
        &self,
        conversation: &Conversation,
        add_generation_prompt: bool,
    ) -> Result<String, RenderError>;

    /// A streaming parser of one assistant turn that knows `tools`.
    fn parser(&self, tools: ToolSet) -> Box<dyn StreamParser + Send>;

    /// Texts of the special tokens that end a turn (the engine stops on them and feeds them to
    /// the parser, which reports which one it was).
    fn stop_tokens(&self) -> &'static [&'static str];

    /// The constraint that keeps tool calls valid for this conversation's tools, or `None` when
    /// `choice` is [`ToolChoice::None`] or no tool is offered.
    ///
    /// # Errors
    /// [`ConstraintError`] when a named tool is unknown or a schema cannot be embedded.
    fn constraint(
        &self,
        conversation: &Conversation,
        choice: &ToolChoice,
    ) -> Result<Option<ToolConstraint>, ConstraintError>;
}

/// Parses an assistant turn piece by piece as the engine generates it.
pub trait StreamParser {
    /// Feeds the next generated piece (special tokens as text); returns what it completes.
    fn push(&mut self, piece: &str) -> Vec<ParseEvent>;

    /// Ends the turn (generation stopped); flushes what was held back.
    fn finish(&mut self) -> Vec<ParseEvent>;
}

/// Parses a whole turn at once with `parser` and gathers the result.
pub fn parse_all(mut parser: Box<dyn StreamParser + Send>, text: &str) -> ParsedMessage {
    let mut message = ParsedMessage::default();
    for event in parser.push(text).into_iter().chain(parser.finish()) {
        message.apply(event);
    }
    message
}

/// Which special token ended the assistant's turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StopKind {
    /// `<|eom_id|>`: end of message, the model waits for tool results.
    Eom,
    /// `<|eot_id|>` (or the format's end-of-turn token): the turn is over.
    Eot,
}

/// Something the parser recognised in the generated text.
#[derive(Debug, Clone, PartialEq)]
pub enum ParseEvent {
    /// Visible text (a delta: append it to what came before).
    Text(String),
    /// A complete tool call.
    ToolCall(ToolCall),
    /// A call the model got wrong; send [`ParseError`]'s text back to the model.
    Error(ParseError),
    /// The turn ended with this token; nothing after it is parsed.
    Stop(StopKind),
}

/// A whole parsed turn.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ParsedMessage {
    /// Visible text.
    pub content: String,
    /// Calls in order.
    pub tool_calls: Vec<ToolCall>,
    /// How the turn ended (`None` when generation stopped without a stop token).
    pub stop: Option<StopKind>,
    /// Calls that could not be understood.
    pub errors: Vec<ParseError>,
}

impl ParsedMessage {
    /// Folds one event into the message.
    pub fn apply(&mut self, event: ParseEvent) {
        match event {
            ParseEvent::Text(text) => self.content.push_str(&text),
            ParseEvent::ToolCall(call) => self.tool_calls.push(call),
            ParseEvent::Error(error) => self.errors.push(error),
            ParseEvent::Stop(stop) => self.stop = Some(stop),
        }
    }
}

/// A tool call the model wrote but got wrong. Its `Display` is meant for the model.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize)]
#[error("{kind}")]
pub struct ParseError {
    /// What went wrong.
    pub kind: ParseErrorKind,
    /// The offending text as generated (truncated to a few hundred bytes).
    pub text: String,
}

impl ParseError {
    pub(crate) fn new(kind: ParseErrorKind, text: &str) -> ParseError {
        const LIMIT: usize = 400;
        let mut end = text.len().min(LIMIT);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        ParseError {
            kind,
            text: text[..end].to_string(),
        }
    }
}

/// The kinds of [`ParseError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The call names a tool that was not offered.
    #[error("unknown tool `{name}`: call one of the tools you were given")]
    UnknownTool {
        /// The name the model used.
        name: String,
    },
    /// The call is syntactically broken (unbalanced JSON, bad literal, truncated).
    #[error("malformed tool call: {reason}")]
    MalformedCall {
        /// What is wrong with it.
        reason: String,
    },
    /// Positional arguments for a tool whose parameter names are unknown or too few.
    #[error("tool `{name}` takes keyword arguments only: write name=value")]
    PositionalArguments {
        /// The tool.
        name: String,
    },
}

/// Why a conversation could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// Tools go in the first user message, but there is none.
    #[error("tools go in the first user message, but the conversation has no user message after the system message")]
    NoFirstUserMessage,
    /// A message is out of place for this format (e.g. a system message after the first turn).
    #[error("message {index} ({role}) cannot appear there: {reason}")]
    Misplaced {
        /// Index in the conversation.
        index: usize,
        /// Its role.
        role: &'static str,
        /// Why.
        reason: String,
    },
    /// The model's own chat template failed.
    #[error("chat template error: {0}")]
    Template(String),
}
