//! Reading a chat-completion request: OpenAI's JSON shapes into a conversation, tools, a tool
//! choice, sampling and limits — or an [`ApiError`] naming the field at fault.
//!
//! Unknown fields are ignored (clients send `user`, `metadata`, `store` …); fields corral cannot
//! honour (`n` above 1, `logprobs`, legacy `functions`) are refused rather than silently dropped.

use corral_prompts::{Message, ToolChoice, ToolSpec};
use serde_json::{Map, Value};

use super::error::ApiError;
use super::Limits;
use crate::engine::Sampling;

/// What the reply must look like.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    /// Free text (or tool calls).
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON valid against this schema.
    JsonSchema(Value),
}

/// A chat-completion request, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The model asked for.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Tools the model may call.
    pub tools: Vec<ToolSpec>,
    /// Whether it may, must or must not call them.
    pub tool_choice: ToolChoice,
    /// Whether one reply may hold several calls (default true).
    pub parallel_tool_calls: bool,
    /// Server-sent events instead of one JSON answer.
    pub stream: bool,
    /// With `stream`: a last chunk with `usage`.
    pub include_usage: bool,
    /// Cap on generated tokens (`None`: what the window leaves, up to the server's cap).
    pub max_tokens: Option<usize>,
    /// How tokens are picked.
    pub sampling: Sampling,
    /// Stop strings (at most 4).
    pub stop: Vec<String>,
    /// JSON mode, if asked for.
    pub response_format: ResponseFormat,
}

/// Reads a request body. `defaults` is the server owner's sampling (the request's
/// `temperature`, `top_p` and `seed` override it).
///
/// # Errors
/// An [`ApiError`] (400) naming the field and what it must be.
pub fn parse(body: &[u8], limits: &Limits, defaults: &Sampling) -> Result<ChatRequest, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(
            None,
            format!("the request body is not valid JSON ({e}): send a JSON object"),
        )
    })?;
    let Value::Object(object) = value else {
        return Err(ApiError::invalid(
            None,
            "the request body must be a JSON object with `model` and `messages`",
        ));
    };
    let model = match object.get("model") {
        Some(Value::String(model)) => model.clone(),
        None => return Err(ApiError::invalid(p("model"), "missing `model`")),
        Some(other) => return Err(type_error("model", "a string", other)),
    };
    refuse_unsupported(&object)?;
    let messages = messages(&object, limits)?;
    let tools = tools(&object)?;
    // Agent mode's tools are the server's: its choice is checked against them later.
    let tool_choice = tool_choice(&object, &tools, model != super::AGENT_MODEL)?;
    let parallel_tool_calls = flag(&object, "parallel_tool_calls", true)?;
    let stream = flag(&object, "stream", false)?;
    let include_usage = match object.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(options)) => flag(options, "include_usage", false)
            .map_err(|e| ApiError::invalid(p("stream_options.include_usage"), e.message))?,
        Some(other) => return Err(type_error("stream_options", "an object", other)),
    };
    let max_tokens = max_tokens(&object, limits)?;
    let sampling = sampling(&object, defaults)?;
    let stop = stop(&object)?;
    let response_format = response_format(&object)?;
    if response_format != ResponseFormat::Text
        && !tools.is_empty()
        && tool_choice != ToolChoice::None
    {
        return Err(ApiError::invalid(
            p("response_format"),
            "`response_format` with tools is not supported: one reply is either constrained \
             JSON or tool calls; send `tool_choice: \"none\"` or leave the tools out",
        ));
    }
    Ok(ChatRequest {
        model,
        messages,
        tools,
        tool_choice,
        parallel_tool_calls,
        stream,
        include_usage,
        max_tokens,
        sampling,
        stop,
        response_format,
    })
}

fn p(name: &str) -> Option<String> {
    Some(name.to_string())
}

fn type_error(name: &str, expected: &str, got: &Value) -> ApiError {
    let shown: String = got.to_string().chars().take(60).collect();
    ApiError::invalid(p(name), format!("`{name}` must be {expected}, not {shown}"))
}

fn flag(object: &Map<String, Value>, name: &str, default: bool) -> Result<bool, ApiError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(value)) => Ok(*value),
        Some(other) => Err(type_error(name, "true or false", other)),
    }
}

fn refuse_unsupported(object: &Map<String, Value>) -> Result<(), ApiError> {
    match object.get("n") {
        None | Some(Value::Null) => {}
        Some(n) if n.as_u64() == Some(1) => {}
        Some(other) => {
            return Err(ApiError::invalid(
                p("n"),
                format!("`n` must be 1 (corral generates one choice), not {other}"),
            ))
        }
    }
    if object.get("logprobs") == Some(&Value::Bool(true)) {
        return Err(ApiError::invalid(
            p("logprobs"),
            "`logprobs` is not supported by this server: leave it out or false",
        ));
    }
    for legacy in ["functions", "function_call"] {
        if object.contains_key(legacy) {
            return Err(ApiError::invalid(
                p(legacy),
                format!("`{legacy}` is the deprecated API: send `tools` and `tool_choice`"),
            ));
        }
    }
    Ok(())
}

/// The roles a request may use; `developer` is OpenAI's newer name for `system`.
fn messages(object: &Map<String, Value>, limits: &Limits) -> Result<Vec<Message>, ApiError> {
    let items = match object.get("messages") {
        Some(Value::Array(items)) => items,
        None => return Err(ApiError::invalid(p("messages"), "missing `messages` array")),
        Some(other) => return Err(type_error("messages", "an array of messages", other)),
    };
    if items.is_empty() {
        return Err(ApiError::invalid(
            p("messages"),
            "`messages` is empty: send at least one message",
        ));
    }
    if items.len() > limits.messages {
        return Err(ApiError::invalid(
            p("messages"),
            format!(
                "{} messages is over this server's limit of {} (corral serve --max-messages)",
                items.len(),
                limits.messages
            ),
        ));
    }
    let mut messages = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("messages[{i}]");
        let Value::Object(message) = item else {
            return Err(type_error(&at, "an object", item));
        };
        let role = message.get("role").and_then(Value::as_str);
        let normalised = match role {
            Some("system" | "user" | "assistant" | "tool" | "ipython") => None,
            Some("developer") => Some("system"),
            Some("function") => {
                return Err(ApiError::invalid(
                    Some(format!("{at}.role")),
                    format!("{at}: role `function` is the deprecated API: send `tool` messages"),
                ))
            }
            _ => {
                let shown = message
                    .get("role")
                    .map_or("(missing)".to_string(), Value::to_string);
                return Err(ApiError::invalid(
                    Some(format!("{at}.role")),
                    format!(
                        "{at}: unknown role {shown}: use system, developer, user, assistant \
                         or tool"
                    ),
                ));
            }
        };
        let parsed = match normalised {
            Some(role) => {
                let mut copy = message.clone();
                copy.insert("role".into(), Value::String(role.into()));
                corral_prompts::request::message_from_json(i, &Value::Object(copy))
            }
            None => corral_prompts::request::message_from_json(i, item),
        };
        let mut parsed = parsed.map_err(|e| {
            // The prompts crate names the field first: `messages[2].tool_calls[0]…: …`.
            let param = e.0.split([' ', ':']).next().map(str::to_string);
            ApiError::invalid(param, e.0)
        })?;
        // `generated` (text rendered verbatim, special tokens and all) is corral's own field for
        // replies it wrote; from a client it would open a door past the plain marks.
        if let Message::Assistant { generated, .. } = &mut parsed {
            *generated = None;
        }
        messages.push(parsed);
    }
    Ok(messages)
}

fn tools(object: &Map<String, Value>) -> Result<Vec<ToolSpec>, ApiError> {
    let items = match object.get("tools") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(type_error("tools", "an array of tools", other)),
    };
    let mut tools: Vec<ToolSpec> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("tools[{i}]");
        match item.get("type").and_then(Value::as_str) {
            Some("function") => {}
            _ => {
                return Err(ApiError::invalid(
                    Some(format!("{at}.type")),
                    format!("{at}: only tools of type \"function\" are supported"),
                ))
            }
        }
        let Some(Value::Object(function)) = item.get("function") else {
            return Err(ApiError::invalid(
                Some(format!("{at}.function")),
                format!("{at} has no `function` object"),
            ));
        };
        let name = match function.get("name") {
            Some(Value::String(name)) if valid_tool_name(name) => name.clone(),
            other => {
                return Err(ApiError::invalid(
                    Some(format!("{at}.function.name")),
                    format!(
                        "{at}.function.name must be 1 to 64 letters, digits, `_`, `-` or `.`, \
                         not {}",
                        other.map_or("(missing)".into(), Value::to_string)
                    ),
                ))
            }
        };
        if tools.iter().any(|t| t.name == name) {
            return Err(ApiError::invalid(
                Some(format!("{at}.function.name")),
                format!("{at}: a tool named `{name}` is already offered"),
            ));
        }
        let description = match function.get("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(other) => {
                return Err(type_error(
                    &format!("{at}.function.description"),
                    "a string",
                    other,
                ))
            }
        };
        let parameters = match function.get("parameters") {
            None | Some(Value::Null) => serde_json::json!({"type": "object", "properties": {}}),
            Some(schema @ Value::Object(_)) => {
                if let Err(e) = jsonschema::validator_for(schema) {
                    return Err(ApiError::invalid(
                        Some(format!("{at}.function.parameters")),
                        format!("{at}.function.parameters is not a valid JSON Schema: {e}"),
                    ));
                }
                schema.clone()
            }
            Some(other) => {
                return Err(type_error(
                    &format!("{at}.function.parameters"),
                    "a JSON Schema object",
                    other,
                ))
            }
        };
        tools.push(ToolSpec {
            name,
            description,
            parameters,
        });
    }
    Ok(tools)
}

fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn tool_choice(
    object: &Map<String, Value>,
    tools: &[ToolSpec],
    check: bool,
) -> Result<ToolChoice, ApiError> {
    let choice = match object.get("tool_choice") {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) if s == "auto" => ToolChoice::Auto,
        Some(Value::String(s)) if s == "none" => ToolChoice::None,
        Some(Value::String(s)) if s == "required" => ToolChoice::Required,
        Some(Value::Object(named)) => {
            let name = named
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str);
            match (named.get("type").and_then(Value::as_str), name) {
                (Some("function"), Some(name)) => ToolChoice::Named(name.to_string()),
                _ => {
                    return Err(ApiError::invalid(
                        p("tool_choice"),
                        "a named `tool_choice` is {\"type\": \"function\", \"function\": \
                         {\"name\": …}}",
                    ))
                }
            }
        }
        Some(other) => {
            return Err(type_error(
                "tool_choice",
                "\"auto\", \"none\", \"required\" or a named function",
                other,
            ))
        }
    };
    if !check {
        return Ok(choice);
    }
    check_choice(&choice, tools.iter().map(|t| t.name.as_str()))?;
    Ok(choice)
}

/// Whether `choice` can be honoured with the tools named `offered`.
///
/// # Errors
/// A 400 naming `tool_choice`: a call required without tools, or a tool not offered.
pub fn check_choice<'a>(
    choice: &ToolChoice,
    offered: impl Iterator<Item = &'a str>,
) -> Result<(), ApiError> {
    let offered: Vec<&str> = offered.collect();
    match choice {
        ToolChoice::Required if offered.is_empty() => Err(ApiError::invalid(
            p("tool_choice"),
            "`tool_choice` is \"required\" but no `tools` are offered",
        )),
        ToolChoice::Named(name) if !offered.contains(&name.as_str()) => Err(ApiError::invalid(
            p("tool_choice"),
            format!("`tool_choice` names `{name}`, which is not among the offered `tools`"),
        )),
        _ => Ok(()),
    }
}

fn max_tokens(object: &Map<String, Value>, limits: &Limits) -> Result<Option<usize>, ApiError> {
    // The newer name wins when both are sent.
    for name in ["max_completion_tokens", "max_tokens"] {
        match object.get(name) {
            None | Some(Value::Null) => continue,
            Some(value) => {
                let Some(n) = value.as_u64().filter(|&n| n >= 1) else {
                    return Err(type_error(name, "a positive integer", value));
                };
                if n > limits.max_tokens as u64 {
                    return Err(ApiError::invalid(
                        p(name),
                        format!(
                            "`{name}` is {n}, over this server's cap of {} \
                             (corral serve --max-tokens-cap)",
                            limits.max_tokens
                        ),
                    ));
                }
                return Ok(Some(n as usize));
            }
        }
    }
    Ok(None)
}

fn number(
    object: &Map<String, Value>,
    name: &str,
    range: std::ops::RangeInclusive<f64>,
) -> Result<Option<f32>, ApiError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_f64() {
            Some(x) if range.contains(&x) => Ok(Some(x as f32)),
            _ => Err(type_error(
                name,
                &format!("a number from {} to {}", range.start(), range.end()),
                value,
            )),
        },
    }
}

fn sampling(object: &Map<String, Value>, defaults: &Sampling) -> Result<Sampling, ApiError> {
    let mut sampling = defaults.clone();
    if let Some(t) = number(object, "temperature", 0.0..=2.0)? {
        sampling.temperature = t;
    }
    if let Some(top_p) = number(object, "top_p", 0.0..=1.0)? {
        if top_p <= 0.0 {
            return Err(ApiError::invalid(p("top_p"), "`top_p` must be above 0"));
        }
        sampling.top_p = top_p;
    }
    match object.get("seed") {
        None | Some(Value::Null) => {}
        Some(value) => match value.as_i64() {
            // OpenAI seeds are 64-bit; llama.cpp's sampler takes 32 bits.
            Some(seed) => sampling.seed = (seed as u64 % (1 << 32)) as u32,
            None => return Err(type_error("seed", "an integer", value)),
        },
    }
    for ignored in ["frequency_penalty", "presence_penalty"] {
        if let Some(value) = object.get(ignored) {
            if !value.is_null() && value.as_f64().is_none_or(|x| !(-2.0..=2.0).contains(&x)) {
                return Err(type_error(ignored, "a number from -2 to 2", value));
            }
        }
    }
    sampling
        .validate()
        .map_err(|e| ApiError::invalid(None, e.to_string()))?;
    Ok(sampling)
}

fn stop(object: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let stops = match object.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(type_error("stop", "a string or an array of strings", other)),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(type_error("stop", "a string or an array of strings", other)),
    };
    if stops.len() > 4 || stops.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            p("stop"),
            "`stop` takes at most 4 non-empty strings",
        ));
    }
    Ok(stops)
}

fn response_format(object: &Map<String, Value>) -> Result<ResponseFormat, ApiError> {
    let Some(format) = object.get("response_format").filter(|v| !v.is_null()) else {
        return Ok(ResponseFormat::Text);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => {
            let schema = format
                .get("json_schema")
                .and_then(|s| s.get("schema"))
                .filter(|s| s.is_object());
            let Some(schema) = schema else {
                return Err(ApiError::invalid(
                    p("response_format.json_schema.schema"),
                    "`response_format` of type json_schema needs `json_schema.schema`, a JSON \
                     Schema object",
                ));
            };
            if let Err(e) = jsonschema::validator_for(schema) {
                return Err(ApiError::invalid(
                    p("response_format.json_schema.schema"),
                    format!("`response_format.json_schema.schema` is not a valid JSON Schema: {e}"),
                ));
            }
            Ok(ResponseFormat::JsonSchema(schema.clone()))
        }
        _ => Err(ApiError::invalid(
            p("response_format.type"),
            "`response_format.type` must be \"text\", \"json_object\" or \"json_schema\"",
        )),
    }
}
