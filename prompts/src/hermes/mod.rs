//! ChatML models with Hermes-style tool calls (`<tool_call>{"name": …, "arguments": …}</tool_call>`),
//! rendered through the model's own embedded chat template.
//!
//! The template comes from the GGUF metadata (`tokenizer.chat_template`) and is run the way
//! Hugging Face `transformers` runs it (see [`crate::jinja`]). Templates that know about `tools`
//! receive them; for those that do not (SmolLM2's plain ChatML) the tool instructions are added
//! to the system message, so the model still learns the call syntax the parser expects.

mod grammar;

use serde_json::{json, Map, Value};

use crate::constraint::{ConstraintError, ToolConstraint};
use crate::format::{Format, RenderError, StopKind, StreamParser};
use crate::jinja::ChatTemplate;
use crate::pyjson;
use crate::scan::{Dialect, Scanner, Special};
use crate::types::{Conversation, Message, ToolChoice, ToolOutput, ToolSet, ToolSpec};

/// `<|im_end|>`: end of a ChatML turn.
pub const IM_END: &str = "<|im_end|>";

pub(crate) static DIALECT: Dialect = Dialect {
    specials: &[
        ("<|im_end|>", Special::Stop(StopKind::Eot)),
        ("<|endoftext|>", Special::Stop(StopKind::Eot)),
        ("<|im_start|>", Special::Stop(StopKind::Eot)),
        ("<tool_call>", Special::ToolCallTag),
    ],
    pythonic_lists: false,
};

/// A ChatML/Hermes model's format, around its own chat template.
#[derive(Debug)]
pub struct Hermes {
    template: ChatTemplate,
    knows_tools: bool,
}

impl Hermes {
    /// The format for a model whose embedded template is `source`, with its BOS/EOS token texts.
    ///
    /// # Errors
    /// [`RenderError::Template`] when the template does not compile.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Hermes, RenderError> {
        Ok(Hermes {
            template: ChatTemplate::new(source, bos_token, eos_token)?,
            knows_tools: source.contains("tools"),
        })
    }
}

impl Format for Hermes {
    fn render(
        &self,
        conversation: &Conversation,
        add_generation_prompt: bool,
    ) -> Result<String, RenderError> {
        let tools = conversation.tools.as_deref().unwrap_or_default();
        let mut messages: Vec<Value> = conversation.messages.iter().map(message_json).collect();
        if !tools.is_empty() && !self.knows_tools {
            let instructions = tool_instructions(tools);
            match messages.first_mut() {
                Some(first) if first["role"] == "system" => {
                    let text = first["content"].as_str().unwrap_or_default().to_string();
                    first["content"] = Value::String(format!("{text}\n\n{instructions}"));
                }
                _ => messages.insert(0, json!({"role": "system", "content": instructions})),
            }
        }
        let mut context = Map::new();
        context.insert("messages".into(), Value::Array(messages));
        context.insert(
            "add_generation_prompt".into(),
            Value::Bool(add_generation_prompt),
        );
        if !tools.is_empty() && self.knows_tools {
            let tools = tools.iter().map(ToolSpec::to_openai_json).collect();
            context.insert("tools".into(), Value::Array(tools));
        }
        self.template.render(&Value::Object(context))
    }

    fn parser(&self, tools: ToolSet) -> Box<dyn StreamParser + Send> {
        Box::new(Scanner::new(&DIALECT, tools))
    }

    fn stop_tokens(&self) -> &'static [&'static str] {
        &[IM_END, "<|endoftext|>"]
    }

    fn constraint(
        &self,
        conversation: &Conversation,
        choice: &ToolChoice,
    ) -> Result<Option<ToolConstraint>, ConstraintError> {
        grammar::constraint(conversation.tools.as_deref().unwrap_or_default(), choice)
    }
}

/// A message as chat templates expect it (OpenAI shape).
fn message_json(message: &Message) -> Value {
    match message {
        Message::System { content } => json!({"role": "system", "content": content}),
        Message::User { content } => json!({"role": "user", "content": content}),
        Message::Assistant {
            generated: Some(text),
            ..
        } => {
            let text = text.strip_suffix(IM_END).unwrap_or(text);
            json!({"role": "assistant", "content": text})
        }
        Message::Assistant {
            content,
            tool_calls,
            ..
        } if tool_calls.is_empty() => json!({"role": "assistant", "content": content}),
        Message::Assistant {
            content,
            tool_calls,
            ..
        } => {
            // Plain ChatML templates only print `content`: write the calls into it as well.
            let mut text = content.clone();
            for call in tool_calls {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str("<tool_call>\n");
                text.push_str(&pyjson::dumps(
                    &json!({"name": call.name, "arguments": call.arguments}),
                ));
                text.push_str("\n</tool_call>");
            }
            let calls: Vec<Value> = tool_calls
                .iter()
                .map(|call| json!({"type": "function", "function": {"name": call.name, "arguments": call.arguments}}))
                .collect();
            json!({"role": "assistant", "content": text, "tool_calls": calls})
        }
        Message::Tool { content, .. } => {
            let text = match content {
                ToolOutput::Text(text) => text.clone(),
                ToolOutput::Json(Value::String(text)) => text.clone(),
                ToolOutput::Json(value) => pyjson::dumps(value),
            };
            json!({"role": "tool", "content": text})
        }
    }
}

/// Instructions for templates that do not render tools themselves.
fn tool_instructions(tools: &[ToolSpec]) -> String {
    let mut text = String::from(
        "You can call functions. Their signatures are listed between <tools> and </tools>:\n<tools>\n",
    );
    for tool in tools {
        text.push_str(&pyjson::dumps(&tool.to_openai_json()));
        text.push('\n');
    }
    text.push_str(
        "</tools>\nTo call a function, answer with one JSON object per call, each between \
         <tool_call> and </tool_call>:\n<tool_call>\n{\"name\": \"function name\", \"arguments\": \
         {\"argument name\": \"value\"}}\n</tool_call>",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{parse_all, ParseErrorKind};
    use crate::types::ToolCall;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn weather() -> ToolSpec {
        ToolSpec::new(
            "get_weather",
            "Weather",
            json!({"type": "object", "properties": {"city": {"type": "string"}}}),
        )
    }

    #[test]
    fn renders_through_the_models_template_and_adds_tool_instructions() {
        let hermes = Hermes::new(CHATML, "", "<|im_end|>").unwrap();
        let conversation =
            Conversation::new(vec![Message::user("Hi"), Message::assistant("Hello!")]);
        assert_eq!(
            hermes.render(&conversation, true).unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>assistant\n"
        );
        let conversation = Conversation::new(vec![
            Message::user("Weather in Oslo?"),
            Message::tool_calls(vec![ToolCall::new("get_weather", json!({"city": "Oslo"}))]),
            Message::tool_json(json!({"temp": 3})),
        ])
        .with_tools(vec![weather()]);
        let text = hermes.render(&conversation, true).unwrap();
        assert!(
            text.starts_with("<|im_start|>system\nYou can call functions."),
            "{text}"
        );
        assert!(text.contains("<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call><|im_end|>\n<|im_start|>tool\n{\"temp\": 3}<|im_end|>\n"), "{text}");
    }

    #[test]
    fn parses_tool_call_tags() {
        let hermes = Hermes::new(CHATML, "", "<|im_end|>").unwrap();
        let tools = ToolSet::new(&[weather()], &[]);
        let m = parse_all(
            hermes.parser(tools.clone()),
            "Checking.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>\n<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}<|im_end|>",
        );
        assert_eq!(m.content, "Checking.");
        assert_eq!(
            m.tool_calls,
            vec![
                ToolCall::new("get_weather", json!({"city": "Oslo"})),
                ToolCall::new("get_weather", json!({"city": "Rome"}))
            ]
        );
        assert_eq!(m.stop, Some(StopKind::Eot));
        let m = parse_all(
            hermes.parser(tools),
            "<tool_call>{\"name\": \"x\", \"arguments\": {}}</tool_call>",
        );
        assert_eq!(
            m.errors[0].kind,
            ParseErrorKind::UnknownTool { name: "x".into() }
        );
    }
}
