//! Rendering a plain chat (no tools) through the model's own embedded chat template, with the
//! Hugging Face-compatible Jinja environment of `corral-prompts`.

use serde::Serialize;

use corral_prompts::jinja;
use corral_prompts::RenderError;

use crate::engine::ModelInfo;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// Message text.
    pub content: String,
}

impl ChatMessage {
    /// A message.
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// A model's chat template, ready to render.
#[derive(Debug)]
pub struct ChatTemplate {
    template: jinja::ChatTemplate,
    stops: Vec<String>,
}

/// Why a template cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The model has no template.
    #[error("the model has no chat template: use `corral generate` for raw completion")]
    Missing,
    /// The template failed to compile or render.
    #[error("the model's chat template failed: {0}")]
    Render(#[from] RenderError),
}

impl ChatTemplate {
    /// The template embedded in the model.
    ///
    /// # Errors
    /// [`TemplateError::Missing`] when the GGUF has none; a template that does not compile.
    pub fn for_model(info: &ModelInfo) -> Result<Self, TemplateError> {
        let source = info
            .chat_template
            .as_deref()
            .ok_or(TemplateError::Missing)?;
        let stops = ["<|im_end|>", "<|eot_id|>", "<|end|>"]
            .iter()
            .filter(|s| source.contains(*s))
            .map(|s| s.to_string())
            .collect();
        let template = Self {
            template: jinja::ChatTemplate::new(source, "", "")?,
            stops,
        };
        template.render(&[ChatMessage::new("user", "check")], true)?;
        Ok(template)
    }

    /// Renders `messages`, optionally ending with the assistant's generation prompt.
    ///
    /// # Errors
    /// When the template fails to render (e.g. it raises on the message order).
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        let context = serde_json::json!({
            "messages": messages,
            "add_generation_prompt": add_generation_prompt,
        });
        Ok(self.template.render(&context)?)
    }

    /// Text that ends an assistant turn in this template, besides the model's end tokens.
    pub fn stop_strings(&self) -> Vec<String> {
        self.stops.clone()
    }
}
