//! The Hermes tool-call constraint: `<tool_call>\n{"name": …, "arguments": …}\n</tool_call>`, the
//! arguments checked against the tool's JSON Schema.

use crate::constraint::{chosen, json_rule, lark_string, ConstraintError, ToolConstraint, Trigger};
use crate::types::{ToolChoice, ToolSpec};

pub(super) fn constraint(
    tools: &[ToolSpec],
    choice: &ToolChoice,
) -> Result<Option<ToolConstraint>, ConstraintError> {
    if *choice == ToolChoice::None {
        return Ok(None);
    }
    let (custom, _) = chosen(tools, &[], choice)?;
    if custom.is_empty() {
        return match choice {
            ToolChoice::Required => Err(ConstraintError::NoTools),
            _ => Ok(None),
        };
    }
    let mut rules = vec![
        "%llguidance {}".to_string(),
        String::new(),
        "start: tool_call (\"\\n\" tool_call)*".to_string(),
        format!(
            "tool_call: {} call {}",
            lark_string("<tool_call>\n"),
            lark_string("\n</tool_call>")
        ),
    ];
    let mut alternatives = Vec::new();
    for (i, tool) in custom.iter().enumerate() {
        let head = format!("{{\"name\": \"{}\", \"arguments\": ", tool.name);
        rules.push(format!("call_{i}: {} args_{i} \"}}\"", lark_string(&head)));
        rules.push(format!("args_{i}: {}", json_rule(tool)));
        alternatives.push(format!("call_{i}"));
    }
    rules.push(format!("call: {}", alternatives.join(" | ")));
    let triggers = match choice {
        ToolChoice::Auto => vec![Trigger::anywhere("<tool_call>")],
        _ => Vec::new(),
    };
    Ok(Some(ToolConstraint {
        lark: rules.join("\n") + "\n",
        triggers,
        choice: choice.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use llguidance::api::TopLevelGrammar;
    use llguidance::{Matcher, ParserFactory};
    use serde_json::json;
    use toktrie::ApproximateTokEnv;

    use super::*;

    fn accepts(lark: &str, text: &str) -> bool {
        let env = ApproximateTokEnv::single_byte_env();
        let factory = ParserFactory::new_simple(&env).unwrap();
        let mut matcher =
            Matcher::new(factory.create_parser(TopLevelGrammar::from_lark(lark.to_string())));
        let tokens: Vec<u32> = text.bytes().map(u32::from).collect();
        matcher.consume_tokens(&tokens).is_ok() && matcher.is_accepting().unwrap_or(false)
    }

    #[test]
    fn arguments_are_spelled_one_way_so_their_keys_are_forced() {
        let weather = ToolSpec::new(
            "get_weather",
            "",
            json!({"type": "object", "properties": {"city": {"type": "string"},
                "unit": {"type": "string"}}, "required": ["city", "unit"]}),
        );
        let lark = constraint(&[weather], &ToolChoice::Required)
            .unwrap()
            .unwrap()
            .lark;
        let call = |args: &str| {
            format!(
                "<tool_call>\n{{\"name\": \"get_weather\", \"arguments\": {args}}}\n</tool_call>"
            )
        };
        assert!(accepts(&lark, &call(r#"{"city": "Oslo", "unit": "C"}"#)));
        for other in [
            r#"{"city":"Oslo","unit":"C"}"#,
            r#"{ "city": "Oslo", "unit": "C" }"#,
            "{\"city\": \"Oslo\",\n\"unit\": \"C\"}",
        ] {
            assert!(!accepts(&lark, &call(other)), "{other}");
        }
    }
}
