//! The Llama 3.1 tool-call constraint: `{"name": …, "parameters": …}` for custom tools (arguments
//! checked against their JSON Schema) and `name.call(query="…")` for the builtin searches, in the
//! exact spelling the template style renders, several calls separated by newlines.

use super::PYTHON_TAG;
use crate::constraint::{chosen, json_rule, lark_string, ConstraintError, ToolConstraint, Trigger};
use crate::types::{BuiltinTool, Conversation, ToolChoice};

pub(super) fn constraint(
    conversation: &Conversation,
    choice: &ToolChoice,
) -> Result<Option<ToolConstraint>, ConstraintError> {
    if *choice == ToolChoice::None {
        return Ok(None);
    }
    let tools = conversation.tools.as_deref().unwrap_or_default();
    let builtins = conversation.builtin_tools.as_deref().unwrap_or_default();
    let builtin_names: Vec<&str> = builtins.iter().map(|tool| tool.name()).collect();
    let (custom, builtin) = chosen(tools, &builtin_names, choice)?;
    if custom.is_empty() && builtin.is_empty() {
        return match choice {
            ToolChoice::Required => Err(ConstraintError::NoTools),
            _ => Ok(None),
        };
    }
    let code = builtin
        .iter()
        .any(|name| name == BuiltinTool::CodeInterpreter.name());
    let searches: Vec<&String> = builtin
        .iter()
        .filter(|name| *name != BuiltinTool::CodeInterpreter.name())
        .collect();

    let mut rules = vec!["%llguidance {}".to_string(), String::new()];
    let mut alternatives = Vec::new();
    for (i, tool) in custom.iter().enumerate() {
        let head = format!("{{\"name\": \"{}\", \"parameters\": ", tool.name);
        rules.push(format!("json_{i}: {} args_{i} \"}}\"", lark_string(&head)));
        rules.push(format!("args_{i}: {}", json_rule(tool)));
        alternatives.push(format!("json_{i}"));
    }
    let json_alternatives = alternatives.clone();
    for (i, name) in searches.iter().enumerate() {
        let head = format!("{name}.call(query=\"");
        rules.push(format!(
            "search_{i}: {} QUERY \"\\\")\"",
            lark_string(&head)
        ));
        alternatives.push(format!("search_{i}"));
    }
    if !searches.is_empty() {
        rules.push("QUERY: /[^\"\\\\\\n]*/".into());
    }
    if !alternatives.is_empty() {
        rules.push(format!("call: {}", alternatives.join(" | ")));
        rules.push("calls: call (\"\\n\" call)*".into());
    }
    if !json_alternatives.is_empty() {
        rules.push(format!("json_call: {}", json_alternatives.join(" | ")));
        rules.push("json_calls: json_call (\"\\n\" json_call)*".into());
    }

    let (start, triggers) = match choice {
        ToolChoice::Auto => {
            let mut triggers = Vec::new();
            if !json_alternatives.is_empty() {
                triggers.push(Trigger::at_start("{\""));
            }
            // Raw code may follow the tag when the interpreter is offered: leave it free.
            if !code {
                triggers.push(Trigger::token(PYTHON_TAG));
            }
            if triggers.is_empty() {
                return Ok(None);
            }
            ("calls".to_string(), triggers)
        }
        _ => {
            let mut tagged = Vec::new();
            if !alternatives.is_empty() {
                tagged.push("calls".to_string());
            }
            if code {
                rules.push("CODE: /(?s:.+)/".into());
                tagged.push("CODE".to_string());
            }
            let mut start = vec![format!("{PYTHON_TAG} ({})", tagged.join(" | "))];
            if !json_alternatives.is_empty() {
                start.insert(0, "json_calls".to_string());
            }
            (start.join(" | "), Vec::new())
        }
    };
    rules.insert(2, format!("start: {start}"));
    Ok(Some(ToolConstraint {
        lark: rules.join("\n") + "\n",
        triggers,
        choice: choice.clone(),
    }))
}
