//! The context an official chat template is rendered with for a generated case.

use corral_prompts::{BuiltinTool, Message, ToolOutput};
use serde_json::{json, Map, Value};

use super::gen::Case;

/// The template's context, built the way `transformers.apply_chat_template` builds it from
/// OpenAI-shaped messages (independently of the renderer under test).
pub fn context(case: &Case) -> Value {
    let messages: Vec<Value> = case
        .conversation
        .messages
        .iter()
        .map(|message| match message {
            Message::System { content } => json!({"role": "system", "content": content}),
            Message::User { content } => json!({"role": "user", "content": content}),
            Message::Assistant {
                content,
                tool_calls,
                ..
            } if tool_calls.is_empty() => {
                json!({"role": "assistant", "content": content})
            }
            Message::Assistant { tool_calls, .. } => json!({
                "role": "assistant",
                "tool_calls": tool_calls.iter().map(|c| json!({
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                })).collect::<Vec<_>>(),
            }),
            Message::Tool {
                content: ToolOutput::Text(text),
                ..
            } => json!({"role": "tool", "content": text}),
            Message::Tool {
                content: ToolOutput::Json(value),
                ..
            } => json!({"role": "ipython", "content": value}),
        })
        .collect();
    let mut context = json!({
        "messages": messages,
        "bos_token": "<|begin_of_text|>",
        "add_generation_prompt": case.add_generation_prompt,
        "tools_in_user_message": case.format.tools_in_user_message,
    });
    if let Some(tools) = &case.conversation.tools {
        context["tools"] = tools
            .iter()
            .map(|tool| {
                let mut function = Map::new();
                function.insert("name".into(), json!(tool.name));
                if let Some(description) = &tool.description {
                    function.insert("description".into(), json!(description));
                }
                function.insert("parameters".into(), tool.parameters.clone());
                json!({"type": "function", "function": function})
            })
            .collect();
    }
    if let Some(builtins) = &case.conversation.builtin_tools {
        context["builtin_tools"] = builtins.iter().map(|b| b.name()).collect();
    }
    if let Some(date) = &case.format.date {
        context["date_string"] = json!(date);
    }
    context
}

/// Llama 3.2's template drops builtin tools and reads the date from `strftime_now`: the case
/// without builtin tools and their calls, and with a date.
pub fn for_llama_3_2(case: &mut Case) {
    case.conversation.builtin_tools = None;
    case.conversation.messages.retain(|m| match m {
        Message::Assistant { tool_calls, .. } => tool_calls
            .iter()
            .all(|c| BuiltinTool::from_name(&c.name).is_none()),
        _ => true,
    });
    if case.format.date.is_none() {
        case.format.date = Some("26 Jul 2024".into());
    }
}
