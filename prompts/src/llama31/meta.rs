//! The `meta` style: the prompts of Meta's `prompt_format.md` for Llama 3.1 (builtin tools with
//! `Environment: ipython`, custom tools described in a user message as JSON or `<function=…>`).
//!
//! Text is kept verbatim (no trimming), except for one rule on how the system message ends, where
//! Meta's own examples disagree: the system message is right-trimmed, then ends with a newline if
//! it spans several lines and with nothing if it is a single line. This reproduces every one of
//! Meta's examples (`You are a helpful assistant<|eot_id|>`, `Environment: ipython<|eot_id|>`, and
//! the multi-line ones that end in `\n<|eot_id|>`).

use serde_json::{json, Map, Value};

use super::render::{builtin_arg, header};
use super::{Llama31, ToolPrompt, BOS, EOM, EOT, PYTHON_TAG};
use crate::format::RenderError;
use crate::pyjson;
use crate::types::{BuiltinTool, Conversation, Message, ToolCall, ToolOutput, ToolSpec};

pub(super) fn render(
    format: &Llama31,
    conversation: &Conversation,
    add_generation_prompt: bool,
) -> Result<String, RenderError> {
    let mut out = String::from(BOS);
    let mut messages = conversation.messages.as_slice();
    let system_text = match messages.first() {
        Some(Message::System { content }) => {
            messages = &messages[1..];
            content.as_str()
        }
        _ => "",
    };
    let tools = conversation.tools.as_deref().unwrap_or_default();
    let tool_prompt = (!tools.is_empty()).then(|| custom_tool_prompt(tools, format.tool_prompt));

    let mut system = environment_block(conversation);
    if let Some(date) = &format.date {
        system.push_str("Cutting Knowledge Date: December 2023\nToday Date: ");
        system.push_str(date);
        system.push('\n');
    }
    for part in [
        Some(system_text),
        tool_prompt
            .as_deref()
            .filter(|_| !format.tools_in_user_message),
    ]
    .into_iter()
    .flatten()
    .filter(|part| !part.is_empty())
    {
        while !system.is_empty() && !system.ends_with("\n\n") {
            system.push('\n');
        }
        system.push_str(part);
    }
    let system = end_system_message(&system);
    if !system.is_empty() {
        header(&mut out, "system");
        out.push_str(&system);
        out.push_str(EOT);
    }
    if let (Some(prompt), true) = (&tool_prompt, format.tools_in_user_message) {
        header(&mut out, "user");
        out.push_str(prompt);
        out.push_str(EOT);
    }
    let builtins = conversation.builtin_tools.as_deref().unwrap_or_default();
    for message in messages {
        render_message(&mut out, message, builtins, format.tool_prompt);
    }
    if add_generation_prompt {
        header(&mut out, "assistant");
    }
    Ok(out)
}

/// The one whitespace rule: right-trim; a multi-line message ends with `\n`, a one-liner with
/// nothing.
fn end_system_message(text: &str) -> String {
    let trimmed = text.trim_end();
    if trimmed.contains('\n') {
        format!("{trimmed}\n")
    } else {
        trimmed.to_string()
    }
}

/// `Environment: ipython` and the `Tools:` line of searches (the interpreter is implied).
fn environment_block(conversation: &Conversation) -> String {
    if conversation.tools.is_none() && conversation.builtin_tools.is_none() {
        return String::new();
    }
    let named: Vec<&str> = conversation
        .builtin_tools
        .iter()
        .flatten()
        .filter(|tool| **tool != BuiltinTool::CodeInterpreter)
        .map(|tool| tool.name())
        .collect();
    if named.is_empty() {
        "Environment: ipython\n\n".into()
    } else {
        format!("Environment: ipython\nTools: {}\n", named.join(", "))
    }
}

fn render_message(
    out: &mut String,
    message: &Message,
    builtins: &[BuiltinTool],
    prompt: ToolPrompt,
) {
    match message {
        Message::System { content } => verbatim(out, "system", content),
        Message::User { content } => verbatim(out, "user", content),
        Message::Assistant {
            generated: Some(text),
            ..
        } => super::push_generated(out, text),
        Message::Assistant {
            content,
            tool_calls,
            ..
        } if tool_calls.is_empty() => verbatim(out, "assistant", content),
        Message::Assistant { tool_calls, .. } => {
            header(out, "assistant");
            let tagged = tool_calls
                .iter()
                .any(|call| prompt == ToolPrompt::Json || is_builtin(call, builtins));
            if tagged {
                out.push_str(PYTHON_TAG);
            }
            let rendered: Vec<String> = tool_calls
                .iter()
                .map(|call| render_call(call, builtins, prompt))
                .collect();
            out.push_str(&rendered.join("\n"));
            out.push_str(if tagged { EOM } else { EOT });
        }
        Message::Tool { content, .. } => {
            header(out, "ipython");
            match content {
                ToolOutput::Text(text) => out.push_str(text),
                ToolOutput::Json(Value::String(text)) => out.push_str(text),
                ToolOutput::Json(value) => out.push_str(&pyjson::dumps(value)),
            }
            out.push_str(EOT);
        }
    }
}

fn is_builtin(call: &ToolCall, builtins: &[BuiltinTool]) -> bool {
    builtins.iter().any(|tool| tool.name() == call.name)
}

/// Meta's encoding of one call: `name.call(query="…")` for searches, the bare code for the
/// interpreter, `{"type": "function", "name": …, "parameters": …}` or `<function=…>{…}</function>`
/// for custom tools.
fn render_call(call: &ToolCall, builtins: &[BuiltinTool], prompt: ToolPrompt) -> String {
    let args = call.arguments.as_object().cloned().unwrap_or_default();
    if is_builtin(call, builtins) {
        if call.name == BuiltinTool::CodeInterpreter.name() {
            if let Some(Value::String(code)) = args.get("code") {
                return code.clone();
            }
        }
        let args: Vec<String> = args
            .iter()
            .map(|(key, value)| format!("{key}={}", builtin_arg(value)))
            .collect();
        return format!("{}.call({})", call.name, args.join(", "));
    }
    match prompt {
        ToolPrompt::Json => pyjson::dumps(&json!({
            "type": "function",
            "name": call.name,
            "parameters": Value::Object(args),
        })),
        ToolPrompt::FunctionTag => format!(
            "<function={}>{}</function>",
            call.name,
            pyjson::dumps(&Value::Object(args))
        ),
    }
}

fn verbatim(out: &mut String, role: &str, content: &str) {
    header(out, role);
    out.push_str(content);
    out.push_str(EOT);
}

/// The user message that describes custom tools, in Meta's JSON or `<function=…>` wording.
fn custom_tool_prompt(tools: &[ToolSpec], prompt: ToolPrompt) -> String {
    match prompt {
        ToolPrompt::Json => {
            let mut text = String::from(
                "Answer the user's question by making use of the following functions if needed.\n\
                 If none of the function can be used, please say so.\n\
                 Here is a list of functions in JSON format:\n",
            );
            for tool in tools {
                text.push_str(&json_tool_description(tool));
                text.push('\n');
            }
            text.push_str("\nReturn function calls in JSON format.");
            text
        }
        ToolPrompt::FunctionTag => {
            let mut text = String::from("You have access to the following functions:\n\n");
            for tool in tools {
                let description = tool.description.as_deref().unwrap_or_default();
                text.push_str(&format!(
                    "Use the function '{}' to '{description}':\n",
                    tool.name
                ));
                let mut line = Map::new();
                line.insert("name".into(), Value::String(tool.name.clone()));
                line.insert("description".into(), Value::String(description.into()));
                line.insert("parameters".into(), sorted(&param_table(tool)));
                text.push_str(&pyjson::dumps(&Value::Object(line)));
                text.push_str("\n\n");
            }
            text.push_str(
                "Think very carefully before calling functions.\n\
                 If you choose to call a function ONLY reply in the following format with no prefix or suffix:\n\n\
                 <function=example_function_name>{\"example_name\": \"example_value\"}</function>\n\n\
                 Reminder:\n\
                 - If looking for real time information use relevant functions before falling back to brave_search\n\
                 - Function calls MUST follow the specified format, start with <function= and end with </function>\n\
                 - Required parameters MUST be specified\n\
                 - Only call one function at a time\n\
                 - Put the entire function call reply on one line",
            );
            text
        }
    }
}

/// Meta's hand-built JSON description: parameters as a list of one-key objects (typed `object`,
/// as Meta's generator writes them), `required` on one line.
fn json_tool_description(tool: &ToolSpec) -> String {
    const MARK: &str = "\u{0}required\u{0}";
    let properties: Vec<Value> = properties(tool)
        .map(|(name, schema)| {
            let mut param = Map::new();
            param.insert("type".into(), json!("object"));
            param.insert("description".into(), json!(description_of(schema)));
            json!({ name.as_str(): Value::Object(param) })
        })
        .collect();
    let mut function = Map::new();
    function.insert("name".into(), json!(tool.name));
    function.insert(
        "description".into(),
        json!(tool.description.as_deref().unwrap_or_default()),
    );
    function.insert(
        "parameters".into(),
        json!({"type": "object", "properties": properties, "required": MARK}),
    );
    let text = pyjson::dumps_indent(&json!({"type": "function", "function": function}), 4);
    text.replace(
        &pyjson::dumps(&json!(MARK)),
        &pyjson::dumps(&Value::Array(required(tool))),
    )
}

/// `{name: {"description", "param_type", "required"}}`, Meta's `ToolParamDefinition` table.
fn param_table(tool: &ToolSpec) -> Value {
    let required = required(tool);
    let mut table = Map::new();
    for (name, schema) in properties(tool) {
        let mut param = Map::new();
        param.insert("description".into(), json!(description_of(schema)));
        param.insert("param_type".into(), json!(python_type(schema)));
        param.insert("required".into(), json!(required.contains(&json!(name))));
        table.insert(name.clone(), Value::Object(param));
    }
    Value::Object(table)
}

fn properties(tool: &ToolSpec) -> impl Iterator<Item = (&String, &Value)> {
    tool.parameters
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
}

fn required(tool: &ToolSpec) -> Vec<Value> {
    tool.parameters
        .get("required")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn description_of(schema: &Value) -> &str {
    schema
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The Python type name Meta's tables use for a JSON Schema type.
fn python_type(schema: &Value) -> &'static str {
    match schema.get("type").and_then(Value::as_str) {
        Some("integer") => "int",
        Some("number") => "float",
        Some("boolean") => "bool",
        Some("array") => "list",
        Some("object") => "dict",
        _ => "str",
    }
}

/// Keys sorted at every level, as Jinja's `tojson` writes them.
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}
