//! The `template` style: byte-exact with the official Llama 3.1 Instruct chat template as Hugging
//! Face `transformers` renders it, extended where the template refuses (several calls in a turn,
//! generated text kept verbatim).

use serde_json::Value;

use super::{Llama31, BOS, EOM, EOT, PYTHON_TAG};
use crate::format::RenderError;
use crate::pyjson;
use crate::types::{BuiltinTool, Conversation, Message, ToolCall, ToolOutput, ToolSpec};

/// The template's date when none is given.
pub const TEMPLATE_DEFAULT_DATE: &str = "26 Jul 2024";

const RESPOND_FORMAT: &str = "Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.";

pub(super) fn render(
    format: &Llama31,
    conversation: &Conversation,
    add_generation_prompt: bool,
) -> Result<String, RenderError> {
    let mut out = String::from(BOS);
    let mut messages = conversation.messages.as_slice();
    let system_message = match messages.first() {
        Some(Message::System { content }) => {
            messages = &messages[1..];
            py_strip(content)
        }
        _ => "",
    };
    let tools = conversation.tools.as_deref();
    let builtins = conversation.builtin_tools.as_deref();

    header(&mut out, "system");
    if builtins.is_some() || tools.is_some() {
        out.push_str("Environment: ipython\n");
    }
    if let Some(builtins) = builtins {
        out.push_str("Tools: ");
        out.push_str(&named_builtins(builtins).join(", "));
        out.push_str("\n\n");
    }
    out.push_str("Cutting Knowledge Date: December 2023\n");
    out.push_str("Today Date: ");
    out.push_str(format.date.as_deref().unwrap_or(TEMPLATE_DEFAULT_DATE));
    out.push_str("\n\n");
    if let (Some(tools), false) = (tools, format.tools_in_user_message) {
        out.push_str("You have access to the following functions. To call a function, please respond with JSON for a function call.");
        out.push_str(RESPOND_FORMAT);
        out.push_str("Do not use variables.\n\n");
        push_tool_list(&mut out, tools);
    }
    out.push_str(system_message);
    out.push_str(EOT);

    let index = conversation.messages.len() - messages.len();
    if let (Some(tools), true) = (tools, format.tools_in_user_message) {
        let first = match messages.first() {
            None => return Err(RenderError::NoFirstUserMessage),
            Some(Message::User { content }) => py_strip(content),
            Some(other) => {
                return Err(RenderError::Misplaced {
                    index,
                    role: role_name(other),
                    reason: "tools go in the first user message, so a user message must come first"
                        .into(),
                })
            }
        };
        messages = &messages[1..];
        header(&mut out, "user");
        out.push_str(
            "Given the following functions, please respond with a JSON for a function call ",
        );
        out.push_str("with its proper arguments that best answers the given prompt.\n\n");
        out.push_str(RESPOND_FORMAT);
        out.push_str("Do not use variables.\n\n");
        push_tool_list(&mut out, tools);
        out.push_str(first);
        out.push_str(EOT);
    }

    for message in messages {
        render_message(&mut out, message, builtins);
    }
    if add_generation_prompt {
        header(&mut out, "assistant");
    }
    Ok(out)
}

fn render_message(out: &mut String, message: &Message, builtins: Option<&[BuiltinTool]>) {
    match message {
        Message::System { content } => plain(out, "system", content),
        Message::User { content } => plain(out, "user", content),
        Message::Assistant {
            generated: Some(text),
            ..
        } => super::push_generated(out, text),
        Message::Assistant {
            content,
            tool_calls,
            ..
        } if tool_calls.is_empty() => plain(out, "assistant", content),
        Message::Assistant { tool_calls, .. } => {
            header(out, "assistant");
            let rendered: Vec<String> = tool_calls
                .iter()
                .map(|call| render_call(call, builtins))
                .collect();
            out.push_str(&rendered.join("\n"));
            out.push_str(if builtins.is_some() { EOM } else { EOT });
        }
        Message::Tool { content, .. } => {
            header(out, "ipython");
            match content {
                // The template writes mappings and iterables (strings included) with `tojson`.
                ToolOutput::Text(text) => {
                    out.push_str(&pyjson::dumps(&Value::String(text.clone())))
                }
                ToolOutput::Json(
                    value @ (Value::Object(_) | Value::Array(_) | Value::String(_)),
                ) => out.push_str(&pyjson::dumps(value)),
                ToolOutput::Json(scalar) => out.push_str(&pyjson::python_str(scalar)),
            }
            out.push_str(EOT);
        }
    }
}

/// One call as the template writes it: builtin tools as `<|python_tag|>name.call(k="v", …)`,
/// others as `{"name": …, "parameters": …}`.
fn render_call(call: &ToolCall, builtins: Option<&[BuiltinTool]>) -> String {
    let is_builtin = builtins.is_some_and(|list| list.iter().any(|b| b.name() == call.name));
    if is_builtin {
        let mut text = format!("{PYTHON_TAG}{}.call(", call.name);
        let args: Vec<String> = match &call.arguments {
            Value::Object(map) => map
                .iter()
                .map(|(key, value)| format!("{key}={}", builtin_arg(value)))
                .collect(),
            _ => Vec::new(),
        };
        text.push_str(&args.join(", "));
        text.push(')');
        text
    } else {
        format!(
            "{{\"name\": \"{}\", \"parameters\": {}}}",
            call.name,
            pyjson::dumps(&call.arguments)
        )
    }
}

/// A builtin call's argument: strings in double quotes exactly as the template writes them
/// (unescaped, like Meta's reference code); other values as JSON literals.
pub(super) fn builtin_arg(value: &Value) -> String {
    match value {
        Value::String(text) => format!("\"{text}\""),
        other => pyjson::dumps(other),
    }
}

fn push_tool_list(out: &mut String, tools: &[ToolSpec]) {
    for tool in tools {
        out.push_str(&pyjson::dumps_indent(&tool.to_openai_json(), 4));
        out.push_str("\n\n");
    }
}

fn named_builtins(builtins: &[BuiltinTool]) -> Vec<&'static str> {
    builtins
        .iter()
        .filter(|tool| **tool != BuiltinTool::CodeInterpreter)
        .map(|tool| tool.name())
        .collect()
}

fn plain(out: &mut String, role: &str, content: &str) {
    header(out, role);
    out.push_str(py_strip(content));
    out.push_str(EOT);
}

pub(super) fn header(out: &mut String, role: &str) {
    out.push_str("<|start_header_id|>");
    out.push_str(role);
    out.push_str("<|end_header_id|>\n\n");
}

fn role_name(message: &Message) -> &'static str {
    match message {
        Message::System { .. } => "system",
        Message::User { .. } => "user",
        Message::Assistant { .. } => "assistant",
        Message::Tool { .. } => "tool",
    }
}

/// Python's `str.strip()` (Jinja's `trim`): Unicode whitespace plus the ASCII separators
/// U+001C–U+001F that Python counts as whitespace and Rust does not.
pub fn py_strip(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llama31::Style;
    use serde_json::json;

    fn weather() -> ToolSpec {
        ToolSpec::new(
            "get_weather",
            "Weather in a city",
            json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        )
    }

    #[test]
    fn plain_chat() {
        let conversation =
            Conversation::new(vec![Message::system(" Be brief. "), Message::user("Hi\n")]);
        let format = Llama31::new(Style::Template).with_date(Some("21 Sep 2024".into()));
        assert_eq!(
            format.render_text(&conversation, true).unwrap(),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 21 Sep 2024\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }

    #[test]
    fn several_calls_are_joined_by_newlines_and_non_ascii_stays_utf8() {
        let conversation = Conversation::new(vec![
            Message::user("Weather?"),
            Message::tool_calls(vec![
                ToolCall::new("get_weather", json!({"city": "Zürich"})),
                ToolCall::new("brave_search", json!({"query": "météo"})),
            ]),
        ])
        .with_tools(vec![weather()])
        .with_builtin_tools(vec![BuiltinTool::BraveSearch]);
        let text = Llama31::new(Style::Template)
            .render_text(&conversation, false)
            .unwrap();
        assert!(text.ends_with(
            "<|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Zürich\"}}\n<|python_tag|>brave_search.call(query=\"météo\")<|eom_id|>"
        ), "{text}");
    }

    #[test]
    fn a_custom_code_interpreter_is_offered_as_the_builtin() {
        use crate::format::{parse_all, Format};
        let interpreter = ToolSpec::new(
            "code_interpreter",
            "Runs Python",
            json!({"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}),
        );
        let format = Llama31::new(Style::Template).with_date(Some("21 Sep 2024".into()));
        let only =
            Conversation::new(vec![Message::user("2**100?")]).with_tools(vec![interpreter.clone()]);
        let builtin = Conversation::new(vec![Message::user("2**100?")])
            .with_builtin_tools(vec![BuiltinTool::CodeInterpreter]);
        assert_eq!(
            format.render_text(&only, true).unwrap(),
            format.render_text(&builtin, true).unwrap(),
            "rendered as the template renders builtin_tools=[code_interpreter]"
        );
        assert!(format
            .render_text(&only, true)
            .unwrap()
            .contains("Environment: ipython\n"));
        // With other tools, those stay custom.
        let both =
            Conversation::new(vec![Message::user("q")]).with_tools(vec![interpreter, weather()]);
        let text = format.render_text(&both, true).unwrap();
        assert!(
            text.contains("\"get_weather\"") && !text.contains("\"code_interpreter\""),
            "{text}"
        );
        // Raw code after the tag is a call of it.
        let parsed = parse_all(
            format.parser(only.tool_set()),
            "<|python_tag|>print(2**100)<|eom_id|>",
        );
        assert_eq!(
            parsed.tool_calls,
            vec![ToolCall::new(
                "code_interpreter",
                json!({"code": "print(2**100)"})
            )]
        );
    }

    #[test]
    fn tools_need_a_first_user_message() {
        let conversation =
            Conversation::new(vec![Message::system("x")]).with_tools(vec![weather()]);
        assert_eq!(
            Llama31::new(Style::Template).render_text(&conversation, true),
            Err(RenderError::NoFirstUserMessage)
        );
    }
}
