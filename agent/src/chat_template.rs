//! Rendering a plain chat through the model's own embedded chat template (Jinja), for models
//! and conversations without tools.

use minijinja::{context, Environment};
use serde::Serialize;

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
    source: String,
}

/// Why a template cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The model has no template.
    #[error("the model has no chat template: use `corral generate` for raw completion")]
    Missing,
    /// The template failed to parse or render.
    #[error("the model's chat template failed: {0}")]
    Render(#[from] minijinja::Error),
}

impl ChatTemplate {
    /// The template embedded in the model.
    ///
    /// # Errors
    /// [`TemplateError::Missing`] when the GGUF has none.
    pub fn for_model(info: &ModelInfo) -> Result<Self, TemplateError> {
        let source = info.chat_template.clone().ok_or(TemplateError::Missing)?;
        let template = Self { source };
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
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        let template = env.template_from_str(&self.source)?;
        Ok(template.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => "",
            eos_token => "",
        })?)
    }

    /// Text that ends an assistant turn in this template, besides the model's end tokens.
    pub fn stop_strings(&self) -> Vec<String> {
        ["<|im_end|>", "<|eot_id|>", "<|end|>"]
            .iter()
            .filter(|s| self.source.contains(*s))
            .map(|s| s.to_string())
            .collect()
    }
}
