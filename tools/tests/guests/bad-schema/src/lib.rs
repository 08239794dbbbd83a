//! A plugin whose second tool has an invalid input schema; `corral tools install` must refuse it.

use corral_sdk::{json, Output, Plugin, Tool, Value};

struct BadSchema;

impl Plugin for BadSchema {
    fn tools() -> Vec<Tool> {
        vec![
            Tool::new("fine_tool", "valid", json!({"type": "object"})),
            Tool::new(
                "broken_tool",
                "its schema uses a type that does not exist",
                json!({"type": "object", "properties": {"a": {"type": "no-such-type"}}}),
            ),
        ]
    }

    fn call(_tool: &str, _args: Value) -> Result<Output, String> {
        Ok(Output::text("unreachable: never installed"))
    }
}

corral_sdk::export_plugin!(BadSchema);
