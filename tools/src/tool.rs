//! The [`Tool`] seam: anything the model can call.

use std::sync::Arc;

use corral_sandbox::{CallContext, CallError, CallOutput, Content, Plugin};
use serde_json::Value;

/// What the model is told about a tool (name, description, JSON Schema of the arguments).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// Name the model calls it by.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of the arguments object.
    pub input_schema: Value,
}

/// A tool the model may call: a sandboxed plugin ([`WasmTool`]), or anything else behind the
/// same seam (a native closure in tests, later MCP servers and the code interpreter).
///
/// The [`Registry`](crate::Registry) validates arguments against `spec().input_schema` before
/// `call` runs, so implementations receive a schema-valid object.
pub trait Tool: Send + Sync {
    /// Name, description and input schema.
    fn spec(&self) -> &ToolSpec;

    /// Runs the tool.
    ///
    /// # Errors
    /// [`CallError::Tool`] for an error the model should read; [`CallError::Runtime`] when the
    /// tool failed in a way the model cannot fix.
    fn call(&self, args: &Value) -> Result<CallOutput, CallError>;
}

/// A tool provided by a sandboxed plugin. Each call gets a fresh instance.
pub struct WasmTool {
    spec: ToolSpec,
    plugin: Plugin,
    context: Arc<CallContext>,
}

impl WasmTool {
    /// A tool named `spec.name` of `plugin`, called with `context`'s limits and rights.
    pub fn new(spec: ToolSpec, plugin: Plugin, context: Arc<CallContext>) -> Self {
        WasmTool {
            spec,
            plugin,
            context,
        }
    }
}

impl Tool for WasmTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn call(&self, args: &Value) -> Result<CallOutput, CallError> {
        self.plugin
            .call(&self.spec.name, &args.to_string(), &self.context)
    }
}

/// A tool backed by a Rust closure (tests, and host-side tools that need no sandbox).
pub struct FnTool<F> {
    spec: ToolSpec,
    f: F,
}

impl<F> FnTool<F>
where
    F: Fn(&Value) -> Result<String, String> + Send + Sync,
{
    /// A tool answering with the closure's text, or its error as a tool error.
    pub fn new(spec: ToolSpec, f: F) -> Self {
        FnTool { spec, f }
    }
}

impl<F> Tool for FnTool<F>
where
    F: Fn(&Value) -> Result<String, String> + Send + Sync,
{
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn call(&self, args: &Value) -> Result<CallOutput, CallError> {
        let text = (self.f)(args).map_err(CallError::Tool)?;
        Ok(CallOutput {
            content: vec![Content::Text(text)],
            truncated: false,
            stdout: String::new(),
            stderr: String::new(),
        })
    }
}
