//! Conversations written as JSON in OpenAI chat-completion shapes (the `corral prompt` CLI and,
//! later, the HTTP server read them).
//!
//! ```json
//! {"messages": [{"role": "user", "content": "Hi"},
//!               {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]},
//!               {"role": "tool", "content": {"ok": true}}],
//!  "tools": [{"type": "function", "function": {"name": "f", "parameters": {…}}}],
//!  "builtin_tools": ["brave_search"], "date": "21 September 2024", "style": "meta",
//!  "tools_in_user_message": true, "tool_prompt": "json", "add_generation_prompt": true}
//! ```
//! Tool results may be `tool` or `ipython` messages, with text or any JSON value as content.
//! Call arguments may be an object or a JSON string. An assistant message may carry `generated`,
//! the exact text the model produced, which is rendered verbatim. A missing `date` is today's
//! date; `null` means the template's default date (template style) or no date lines (meta).

use serde_json::{Map, Value};

use crate::llama31::{self, Llama31, Style, ToolPrompt};
use crate::types::{BuiltinTool, Conversation, Message, Role, ToolCall, ToolOutput, ToolSpec};

/// Input that does not describe a conversation; the message says where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

fn fail<T>(message: impl Into<String>) -> Result<T, RequestError> {
    Err(RequestError(message.into()))
}

/// A parsed `corral prompt render` request.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderRequest {
    /// The conversation with its tools.
    pub conversation: Conversation,
    /// The Llama 3.1 format with the request's options.
    pub format: Llama31,
    /// Whether to end with the assistant header.
    pub add_generation_prompt: bool,
}

impl RenderRequest {
    /// Reads a request from JSON text.
    ///
    /// # Errors
    /// [`RequestError`] for bad JSON, unknown roles or builtin tools, calls without a function
    /// name, and wrongly typed fields.
    pub fn from_json(text: &str) -> Result<RenderRequest, RequestError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| RequestError(format!("input is not valid JSON: {e}")))?;
        let Value::Object(object) = value else {
            return fail("input must be a JSON object with a `messages` array");
        };
        let style = match object.get("style") {
            None => Style::Template,
            Some(Value::String(s)) if s == "template" => Style::Template,
            Some(Value::String(s)) if s == "meta" => Style::Meta,
            Some(other) => {
                return fail(format!(
                    "`style` must be \"template\" or \"meta\", not {other}"
                ))
            }
        };
        let tool_prompt = match object.get("tool_prompt") {
            None => ToolPrompt::Json,
            Some(Value::String(s)) if s == "json" => ToolPrompt::Json,
            Some(Value::String(s)) if s == "function_tag" => ToolPrompt::FunctionTag,
            Some(other) => {
                return fail(format!(
                    "`tool_prompt` must be \"json\" or \"function_tag\", not {other}"
                ))
            }
        };
        let date = match object.get("date") {
            None => Some(llama31::today(style)),
            Some(Value::Null) => None,
            Some(Value::String(date)) => Some(date.clone()),
            Some(other) => return fail(format!("`date` must be a string or null, not {other}")),
        };
        let tools_in_user_message = bool_field(&object, "tools_in_user_message", true)?;
        let add_generation_prompt = bool_field(&object, "add_generation_prompt", true)?;
        let messages = match object.get("messages") {
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| message_from_json(i, item))
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return fail("`messages` must be an array"),
            None => return fail("missing `messages` array"),
        };
        let tools = match object.get("tools") {
            None | Some(Value::Null) => None,
            Some(value) => Some(tools(value)?.0),
        };
        let builtin_tools = match object.get("builtin_tools") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => {
                Some(items.iter().map(builtin).collect::<Result<Vec<_>, _>>()?)
            }
            Some(_) => return fail("`builtin_tools` must be an array of names"),
        };
        Ok(RenderRequest {
            conversation: Conversation {
                messages,
                tools,
                builtin_tools,
            },
            format: Llama31 {
                style,
                date,
                tools_in_user_message,
                tool_prompt,
            },
            add_generation_prompt,
        })
    }
}

/// Reads a tools array (`--tools FILE`): OpenAI tool objects, flat `{name, description,
/// parameters}` objects, or builtin tool names as strings.
///
/// # Errors
/// [`RequestError`] when the JSON or an entry is malformed.
pub fn tools_from_json(text: &str) -> Result<(Vec<ToolSpec>, Vec<BuiltinTool>), RequestError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| RequestError(format!("tools file is not valid JSON: {e}")))?;
    tools(&value)
}

fn tools(value: &Value) -> Result<(Vec<ToolSpec>, Vec<BuiltinTool>), RequestError> {
    let Value::Array(items) = value else {
        return fail("`tools` must be an array");
    };
    let mut specs = Vec::new();
    let mut builtins = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::String(_) => builtins.push(builtin(item)?),
            Value::Object(object) => {
                let function = match object.get("function") {
                    Some(Value::Object(function)) => function,
                    _ => object,
                };
                let Some(Value::String(name)) = function.get("name") else {
                    return fail(format!("tools[{i}] has no function `name`"));
                };
                let description = match function.get("description") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(text)) => Some(text.clone()),
                    Some(_) => return fail(format!("tools[{i}].description must be a string")),
                };
                let parameters = function
                    .get("parameters")
                    .cloned()
                    .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}}));
                specs.push(ToolSpec {
                    name: name.clone(),
                    description,
                    parameters,
                });
            }
            _ => return fail(format!("tools[{i}] must be an object")),
        }
    }
    Ok((specs, builtins))
}

fn builtin(value: &Value) -> Result<BuiltinTool, RequestError> {
    let name = value.as_str().unwrap_or_default();
    BuiltinTool::from_name(name).ok_or_else(|| {
        RequestError(format!(
            "unknown builtin tool {value} (expected brave_search, wolfram_alpha or code_interpreter)"
        ))
    })
}

fn bool_field(object: &Map<String, Value>, key: &str, default: bool) -> Result<bool, RequestError> {
    match object.get(key) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => fail(format!("`{key}` must be true or false, not {other}")),
    }
}

/// Reads `messages[index]` of a request: an OpenAI message object.
///
/// # Errors
/// [`RequestError`] naming the field first (`messages[2].tool_calls[0]…`): unknown roles, calls
/// without a function name, arguments that are not a JSON object, wrongly typed fields.
pub fn message_from_json(index: usize, value: &Value) -> Result<Message, RequestError> {
    let Value::Object(object) = value else {
        return fail(format!("messages[{index}] must be an object"));
    };
    let role_name = object
        .get("role")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(role) = Role::parse(role_name) else {
        return fail(format!(
            "messages[{index}]: unknown role {} (expected system, user, assistant, tool or ipython)",
            object.get("role").map_or("(missing)".into(), Value::to_string)
        ));
    };
    let content = object.get("content").unwrap_or(&Value::Null);
    Ok(match role {
        Role::System => Message::system(text(index, content)?),
        Role::User => Message::user(text(index, content)?),
        Role::Tool => Message::Tool {
            content: match content {
                Value::String(text) => ToolOutput::Text(text.clone()),
                other => ToolOutput::Json(other.clone()),
            },
            call_id: object
                .get("tool_call_id")
                .and_then(Value::as_str)
                .map(str::to_owned),
        },
        Role::Assistant => {
            let tool_calls = match object.get("tool_calls") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(calls)) => calls
                    .iter()
                    .enumerate()
                    .map(|(j, call)| tool_call(index, j, call))
                    .collect::<Result<Vec<_>, _>>()?,
                Some(_) => return fail(format!("messages[{index}].tool_calls must be an array")),
            };
            let generated = match object.get("generated") {
                None | Some(Value::Null) => None,
                Some(Value::String(text)) => Some(text.clone()),
                Some(_) => return fail(format!("messages[{index}].generated must be a string")),
            };
            Message::Assistant {
                content: text(index, content)?,
                tool_calls,
                generated,
            }
        }
    })
}

/// Text content: a string, null (empty), or OpenAI content parts (texts joined).
fn text(index: usize, content: &Value) -> Result<String, RequestError> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(text) => Ok(text.clone()),
        Value::Array(parts) => parts
            .iter()
            .map(|part| match part.get("text") {
                Some(Value::String(text)) => Ok(text.as_str()),
                _ => fail(format!(
                    "messages[{index}].content parts must be {{\"type\": \"text\", \"text\": …}}"
                )),
            })
            .collect(),
        other => fail(format!(
            "messages[{index}].content must be text, not {other}"
        )),
    }
}

fn tool_call(index: usize, j: usize, value: &Value) -> Result<ToolCall, RequestError> {
    let function = match value.get("function") {
        Some(function @ Value::Object(_)) => function,
        _ => value,
    };
    let Some(Value::String(name)) = function.get("name") else {
        return fail(format!(
            "messages[{index}].tool_calls[{j}] names no function"
        ));
    };
    let arguments = match function.get("arguments").or_else(|| function.get("parameters")) {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(object @ Value::Object(_)) => object.clone(),
        Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
            Ok(object @ Value::Object(_)) => object,
            _ => {
                return fail(format!(
                    "messages[{index}].tool_calls[{j}].function.arguments is a string but not a JSON object"
                ))
            }
        },
        Some(_) => {
            return fail(format!(
                "messages[{index}].tool_calls[{j}].function.arguments must be an object or a JSON string"
            ))
        }
    };
    Ok(ToolCall::new(name.clone(), arguments))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_openai_shapes() {
        let request = RenderRequest::from_json(
            r#"{"messages": [{"role": "user", "content": "Hi"},
                {"role": "assistant", "content": null, "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]},
                {"role": "ipython", "content": {"ok": true}}, {"role": "tool", "content": "done"}],
               "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
               "date": null, "style": "meta", "add_generation_prompt": false}"#,
        )
        .unwrap();
        assert_eq!(
            request.conversation.messages[1],
            Message::tool_calls(vec![ToolCall::new("f", json!({"a": 1}))])
        );
        assert_eq!(
            request.conversation.messages[2],
            Message::tool_json(json!({"ok": true}))
        );
        assert_eq!(request.conversation.messages[3], Message::tool_text("done"));
        assert_eq!(
            (request.format.style, request.format.date.clone()),
            (Style::Meta, None)
        );
        assert!(!request.add_generation_prompt);
    }

    #[test]
    fn clear_errors() {
        for (input, needle) in [
            ("{", "not valid JSON"),
            (
                r#"{"messages": [{"role": "robot", "content": "x"}]}"#,
                "unknown role \"robot\"",
            ),
            (
                r#"{"messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": {}}}]}]}"#,
                "names no function",
            ),
            (
                r#"{"messages": [], "builtin_tools": ["search"]}"#,
                "unknown builtin tool",
            ),
        ] {
            let error = RenderRequest::from_json(input).unwrap_err();
            assert!(error.0.contains(needle), "{input}: {error}");
        }
    }
}
