//! Llama 3.1 (and 3.2/3.3, which share its tokens): the format the model was trained on.
//!
//! Two rendering styles: [`Style::Template`] is byte-exact with the official chat template embedded
//! in Llama 3.1 GGUF files; [`Style::Meta`] reproduces the prompts of Meta's `prompt_format.md`.
//! Both render an assistant turn from the exact text the model generated when it is known
//! ([`crate::Message::generated`]), which keeps rendering append-only.

mod grammar;
mod meta;
pub(crate) mod parse;
mod render;

pub use render::{py_strip, TEMPLATE_DEFAULT_DATE};

use crate::constraint::{ConstraintError, ToolConstraint};
use crate::date::Date;
use crate::format::{Format, RenderError, StreamParser};
use crate::scan::Scanner;
use crate::types::{Conversation, ToolChoice, ToolSet};

/// `<|begin_of_text|>`.
pub const BOS: &str = "<|begin_of_text|>";
/// `<|eot_id|>`: end of turn.
pub const EOT: &str = "<|eot_id|>";
/// `<|eom_id|>`: end of message, waiting for tool results.
pub const EOM: &str = "<|eom_id|>";
/// `<|python_tag|>`: a tool call (or code) follows.
pub const PYTHON_TAG: &str = "<|python_tag|>";
/// `<|end_of_text|>`: end of the document (base-model style stop).
pub const END_OF_TEXT: &str = "<|end_of_text|>";

/// Which reference to be byte-exact with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Style {
    /// The official chat template (as Hugging Face `transformers` renders it).
    #[default]
    Template,
    /// Meta's reference prompts in `prompt_format.md`.
    Meta,
}

/// How the meta style describes custom tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ToolPrompt {
    /// A JSON list of functions; calls are `{"type": "function", "name": …, "parameters": …}`.
    #[default]
    Json,
    /// One line per function; calls are `<function=NAME>{…}</function>`.
    FunctionTag,
}

/// The Llama 3.1 format and its rendering options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Llama31 {
    /// Which reference to follow.
    pub style: Style,
    /// `Today Date:` text. `None`: the template's own default ([`TEMPLATE_DEFAULT_DATE`]) in the
    /// template style; no date lines at all in the meta style.
    pub date: Option<String>,
    /// Custom tools in the first user message (the template's default) or in the system message.
    pub tools_in_user_message: bool,
    /// How the meta style describes custom tools (the template style always uses JSON).
    pub tool_prompt: ToolPrompt,
}

impl Llama31 {
    /// The format in this style, dated today in the style's spelling (`26 Jul 2024` for the
    /// template, `26 July 2024` for meta), tools in the first user message.
    pub fn new(style: Style) -> Llama31 {
        Llama31 {
            style,
            date: Some(today(style)),
            tools_in_user_message: true,
            tool_prompt: ToolPrompt::Json,
        }
    }

    /// Sets the date text (`None`: see [`Llama31::date`]).
    pub fn with_date(mut self, date: Option<String>) -> Llama31 {
        self.date = date;
        self
    }

    /// Renders without going through the trait object.
    ///
    /// # Errors
    /// See [`Format::render`].
    pub fn render_text(
        &self,
        conversation: &Conversation,
        add_generation_prompt: bool,
    ) -> Result<String, RenderError> {
        let conversation = conversation.with_builtin_code_interpreter();
        match self.style {
            Style::Template => render::render(self, &conversation, add_generation_prompt),
            Style::Meta => meta::render(self, &conversation, add_generation_prompt),
        }
    }
}

/// Today's date in a style's spelling.
pub fn today(style: Style) -> String {
    match style {
        Style::Template => Date::today().short(),
        Style::Meta => Date::today().long(),
    }
}

impl Format for Llama31 {
    fn render(
        &self,
        conversation: &Conversation,
        add_generation_prompt: bool,
    ) -> Result<String, RenderError> {
        self.render_text(conversation, add_generation_prompt)
    }

    fn parser(&self, tools: ToolSet) -> Box<dyn StreamParser + Send> {
        Box::new(Scanner::new(&parse::DIALECT, tools))
    }

    fn stop_tokens(&self) -> &'static [&'static str] {
        &[EOT, EOM, END_OF_TEXT]
    }

    fn constraint(
        &self,
        conversation: &Conversation,
        choice: &ToolChoice,
    ) -> Result<Option<ToolConstraint>, ConstraintError> {
        grammar::constraint(&conversation.with_builtin_code_interpreter(), choice)
    }
}

/// An assistant turn from the exact generated text; `<|eot_id|>` is added when the text does not
/// end with a stop token (generation was cut off).
pub(crate) fn push_generated(out: &mut String, text: &str) {
    render::header(out, "assistant");
    out.push_str(text);
    if ![EOT, EOM, END_OF_TEXT]
        .iter()
        .any(|stop| text.ends_with(stop))
    {
        out.push_str(EOT);
    }
}
