//! Tool input schemas: compiled once with `jsonschema`, never fetching anything, checked on
//! every call.

use jsonschema::{Retrieve, Uri, Validator};
use serde_json::Value;

/// Most validation errors reported back to the model for one call.
const MAX_REPORTED: usize = 8;

/// Refuses every external `$ref`: a tool's schema must be self-contained.
struct NoRemoteRefs;

impl Retrieve for NoRemoteRefs {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!(
            "external schema references are not allowed (`{}`): inline the definition",
            uri.as_str()
        )
        .into())
    }
}

/// Why a schema cannot be used as a tool's input schema (for the plugin author).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(String);

/// Arguments that break the schema: one line per violation with its JSON path (for the model).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("arguments do not match the tool's input schema:\n{}", .lines.join("\n"))]
pub struct SchemaViolation {
    lines: Vec<String>,
}

/// A compiled input schema.
#[derive(Debug, Clone)]
pub struct InputSchema {
    validator: Validator,
}

impl InputSchema {
    /// Compiles `schema`, which must describe a JSON object (MCP `inputSchema`).
    ///
    /// # Errors
    /// A message naming what is wrong: not an object schema, invalid against its meta-schema,
    /// or referring to an external document.
    pub fn compile(schema: &Value) -> Result<InputSchema, SchemaError> {
        let Some(obj) = schema.as_object() else {
            return Err(SchemaError("the input schema must be a JSON object".into()));
        };
        match obj.get("type") {
            Some(Value::String(t)) if t == "object" => {}
            _ => {
                return Err(SchemaError(
                    r#"the input schema must have "type": "object""#.into(),
                ))
            }
        }
        let validator = jsonschema::options()
            .with_retriever(NoRemoteRefs)
            .build(schema)
            .map_err(|e| {
                SchemaError(format!(
                    "not a valid JSON Schema: {e} (at {})",
                    pointer(e.schema_path().as_str())
                ))
            })?;
        Ok(InputSchema { validator })
    }

    /// Checks arguments against the schema.
    ///
    /// # Errors
    /// One line per violation (at most eight) with the JSON path of the offending value, for
    /// the model to fix its call.
    pub fn validate(&self, args: &Value) -> Result<(), SchemaViolation> {
        let mut lines: Vec<String> = Vec::new();
        let mut extra = 0usize;
        for err in self.validator.iter_errors(args) {
            if lines.len() == MAX_REPORTED {
                extra += 1;
                continue;
            }
            lines.push(format!(
                "- at {}: {}",
                pointer(err.instance_path().as_str()),
                err
            ));
        }
        if lines.is_empty() {
            return Ok(());
        }
        if extra > 0 {
            lines.push(format!("- and {extra} more"));
        }
        Err(SchemaViolation { lines })
    }
}

fn pointer(p: &str) -> &str {
    if p.is_empty() {
        "/ (the arguments object)"
    } else {
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> InputSchema {
        InputSchema::compile(&json!({
            "type": "object",
            "properties": {
                "expression": {"type": "string"},
                "items": {"type": "array", "items": {"type": "integer"}}
            },
            "required": ["expression"],
            "additionalProperties": false
        }))
        .unwrap()
    }

    #[test]
    fn valid_arguments_pass() {
        schema()
            .validate(&json!({"expression": "1+1", "items": [1, 2]}))
            .unwrap();
    }

    #[test]
    fn violations_name_their_json_path() {
        let s = schema();
        let missing = s.validate(&json!({})).unwrap_err().to_string();
        assert!(
            missing.contains("at / (the arguments object)") && missing.contains("expression"),
            "{missing}"
        );
        let wrong = s
            .validate(&json!({"expression": 5}))
            .unwrap_err()
            .to_string();
        assert!(
            wrong.contains("at /expression") && wrong.contains("string"),
            "{wrong}"
        );
        let nested = s
            .validate(&json!({"expression": "x", "items": [1, "two"]}))
            .unwrap_err()
            .to_string();
        assert!(nested.contains("at /items/1"), "{nested}");
        let extra = s
            .validate(&json!({"expression": "x", "evil": true}))
            .unwrap_err()
            .to_string();
        assert!(extra.contains("evil"), "{extra}");
    }

    #[test]
    fn bad_schemas_are_refused() {
        for (schema, needle) in [
            (json!([1]), "JSON object"),
            (json!({"type": "string"}), "\"type\": \"object\""),
            (
                json!({"type": "object", "properties": {"a": {"type": "no-such-type"}}}),
                "not a valid JSON Schema",
            ),
            (
                json!({"type": "object", "minProperties": -1}),
                "not a valid JSON Schema",
            ),
        ] {
            let err = InputSchema::compile(&schema).unwrap_err().to_string();
            assert!(err.contains(needle), "{schema}: {err}");
        }
    }

    #[test]
    fn remote_references_are_never_fetched() {
        let err = InputSchema::compile(&json!({
            "type": "object",
            "properties": {"a": {"$ref": "https://example.com/schema.json"}}
        }))
        .unwrap_err()
        .to_string();
        assert!(err.contains("not a valid JSON Schema"), "{err}");
    }
}
