//! The [`Registry`]: every tool by name, with compiled schemas, and the one path every call
//! takes (size and depth caps, parse, validate, dispatch).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::call::{CallError, CallOutput};
use serde_json::Value;

use crate::args::{parse_arguments, ArgLimits};
use crate::call::CallControl;
use crate::schema::InputSchema;
use crate::tool::Tool;
use crate::ToolSpec;

/// Llama 3.1's built-in tool names. The model may call them without their being offered; they
/// work only when an installed plugin provides a tool of that name.
pub const LLAMA_BUILTIN_TOOLS: &[&str] = &["brave_search", "wolfram_alpha"];

struct Entry {
    tool: Arc<dyn Tool>,
    schema: InputSchema,
    source: String,
}

/// Why a tool could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The name breaks the naming rule.
    #[error("tool name `{0}` must match [a-zA-Z0-9_-]{{1,64}}")]
    BadName(String),
    /// Another tool already has the name.
    #[error("tool name `{name}` collides with the tool of the same name from `{existing}`")]
    Collision {
        /// The name.
        name: String,
        /// Where the existing tool comes from.
        existing: String,
    },
    /// The input schema is not usable.
    #[error("tool `{name}` has an unusable input schema: {reason}")]
    BadSchema {
        /// The tool.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// Tools by name.
#[derive(Default)]
pub struct Registry {
    tools: BTreeMap<String, Entry>,
    arg_limits: ArgLimits,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("tools", &self.tools.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Whether `name` is a valid tool name.
pub fn is_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Registry {
    /// An empty registry with default argument caps.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Replaces the argument caps.
    pub fn set_arg_limits(&mut self, limits: ArgLimits) {
        self.arg_limits = limits;
    }

    /// Adds a tool, compiling its schema; `source` names where it comes from (a plugin id).
    ///
    /// # Errors
    /// A bad name, a name collision, or an unusable schema.
    pub fn register(&mut self, tool: Arc<dyn Tool>, source: &str) -> Result<(), RegisterError> {
        let spec = tool.spec();
        let name = spec.name.clone();
        let schema = Self::check(spec, |n| self.source_of(n))?;
        self.tools.insert(
            name,
            Entry {
                tool,
                schema,
                source: source.to_owned(),
            },
        );
        Ok(())
    }

    /// Checks that `spec` could be registered, where `existing` says which source (if any)
    /// already provides a name; returns the compiled schema.
    ///
    /// # Errors
    /// As for [`Registry::register`].
    pub fn check<'a>(
        spec: &ToolSpec,
        existing: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<InputSchema, RegisterError> {
        if !is_tool_name(&spec.name) {
            return Err(RegisterError::BadName(spec.name.clone()));
        }
        if let Some(existing) = existing(&spec.name) {
            return Err(RegisterError::Collision {
                name: spec.name.clone(),
                existing: existing.to_owned(),
            });
        }
        InputSchema::compile(&spec.parameters).map_err(|reason| RegisterError::BadSchema {
            name: spec.name.clone(),
            reason: reason.to_string(),
        })
    }

    /// The tool named `name`, if registered.
    pub fn tool(&self, name: &str) -> Option<Arc<dyn Tool>> {
        self.tools.get(name).map(|e| Arc::clone(&e.tool))
    }

    /// Where the tool `name` comes from (a plugin id, or `mcp:SERVER`).
    pub fn source_of(&self, name: &str) -> Option<&str> {
        self.tools.get(name).map(|e| e.source.as_str())
    }

    /// The specs of all tools, sorted by name, with their sources.
    pub fn specs(&self) -> impl Iterator<Item = (&ToolSpec, &str)> {
        self.tools
            .values()
            .map(|e| (e.tool.spec(), e.source.as_str()))
    }

    /// Whether a tool of this name is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.tools.contains_key(name)
    }

    /// Calls tool `name` with raw argument text from the model: the one path every call takes.
    ///
    /// Unknown tools (including Llama's `brave_search` and `wolfram_alpha` when no plugin
    /// provides them), oversized, too deep, malformed and schema-violating arguments all come
    /// back as [`CallError::Tool`] with a message the model can act on; nothing is dispatched.
    ///
    /// # Errors
    /// As above, plus whatever the tool itself returns.
    pub fn call(&self, name: &str, raw_args: &str) -> Result<CallOutput, CallError> {
        if !self.contains(name) {
            return Err(CallError::Tool(self.not_available(name)));
        }
        let args = parse_arguments(raw_args, self.arg_limits)
            .map_err(|e| CallError::Tool(e.to_string()))?;
        self.call_value(name, &args, &CallControl::none())
    }

    /// Calls tool `name` with arguments a parser already read (the agent's path: the parser
    /// bounds what it reads), within `control`'s deadline and cancellation. Unknown tools and
    /// schema violations come back as [`CallError::Tool`], as with [`Registry::call`].
    ///
    /// # Errors
    /// As [`Registry::call`].
    pub fn call_value(
        &self,
        name: &str,
        args: &Value,
        control: &CallControl,
    ) -> Result<CallOutput, CallError> {
        let Some(entry) = self.tools.get(name) else {
            return Err(CallError::Tool(self.not_available(name)));
        };
        entry
            .schema
            .validate(args)
            .map_err(|e| CallError::Tool(e.to_string()))?;
        entry.tool.call(args, control)
    }

    fn not_available(&self, name: &str) -> String {
        let shown: String = name.chars().take(64).collect();
        let names: Vec<&str> = self.tools.keys().map(String::as_str).collect();
        let list = if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        };
        if LLAMA_BUILTIN_TOOLS.contains(&name) {
            format!("tool not available: `{shown}` is not installed (no plugin provides it); available tools: {list}")
        } else {
            format!("tool not available: there is no tool named `{shown}`; available tools: {list}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tool::FnTool;
    use crate::Content;
    use serde_json::json;

    fn echo(name: &str) -> Arc<dyn Tool> {
        let spec = ToolSpec {
            name: name.into(),
            description: Some("echoes".into()),
            parameters: json!({
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"],
                "additionalProperties": false
            }),
        };
        Arc::new(FnTool::new(spec, |args| {
            let text = args["text"].as_str().unwrap_or_default();
            if text == "fail" {
                Err("asked to fail".into())
            } else {
                Ok(text.to_owned())
            }
        }))
    }

    fn tool_err(r: Result<CallOutput, CallError>) -> String {
        match r {
            Err(CallError::Tool(msg)) => msg,
            other => panic!("expected a tool error, got {other:?}"),
        }
    }

    #[test]
    fn calls_are_validated_then_dispatched() {
        let mut reg = Registry::new();
        reg.register(echo("echo"), "test").unwrap();
        let out = reg.call("echo", r#"{"text":"hi"}"#).unwrap();
        assert_eq!(out.content, vec![Content::Text("hi".into())]);
        assert_eq!(
            tool_err(reg.call("echo", r#"{"text":"fail"}"#)),
            "asked to fail"
        );
        assert!(tool_err(reg.call("echo", r#"{"text":1}"#)).contains("at /text"));
        assert!(tool_err(reg.call("echo", r#"{}"#)).contains("text"));
        assert!(tool_err(reg.call("echo", r#"{"text":"a","x":1}"#)).contains("x"));
        assert!(tool_err(reg.call("echo", r#"{"text":"#)).contains("not valid JSON"));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(tool_err(reg.call("echo", &deep)).contains("levels deep"));
    }

    #[test]
    fn unknown_and_llama_builtin_names_are_not_available() {
        let mut reg = Registry::new();
        reg.register(echo("echo"), "test").unwrap();
        let err = tool_err(reg.call("brave_search", r#"{"query":"x"}"#));
        assert!(
            err.starts_with("tool not available") && err.contains("echo"),
            "{err}"
        );
        assert!(tool_err(reg.call("nope", "{}")).starts_with("tool not available"));
        reg.register(echo("brave_search"), "search-plugin").unwrap();
        assert!(reg.call("brave_search", r#"{"text":"ok"}"#).is_ok());
    }

    #[test]
    fn collisions_and_bad_names_are_refused() {
        let mut reg = Registry::new();
        reg.register(echo("echo"), "first").unwrap();
        assert_eq!(
            reg.register(echo("echo"), "second"),
            Err(RegisterError::Collision {
                name: "echo".into(),
                existing: "first".into()
            })
        );
        assert!(matches!(
            reg.register(echo("bad name"), "x"),
            Err(RegisterError::BadName(_))
        ));
    }
}
