//! An example corral plugin, the one the README's "Write your first tool" walks through.
//! Build: `cargo build --release --target wasm32-wasip2`; install: `corral tools install .`

use corral_sdk::{json, Output, Plugin, Tool, Value};

struct WordCount;

impl Plugin for WordCount {
    fn tools() -> Vec<Tool> {
        vec![Tool::new(
            "word_count",
            "Counts the words, lines and characters of a text",
            json!({
                "type": "object",
                "properties": {"text": {"type": "string", "description": "The text to count"}},
                "required": ["text"],
                "additionalProperties": false
            }),
        )]
    }

    fn call(_tool: &str, args: Value) -> Result<Output, String> {
        let text = args["text"].as_str().ok_or("`text` must be a string")?;
        Ok(Output::json(json!({
            "words": text.split_whitespace().count(),
            "lines": text.lines().count(),
            "chars": text.chars().count(),
        })))
    }
}

corral_sdk::export_plugin!(WordCount);
