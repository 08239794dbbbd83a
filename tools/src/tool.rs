//! The [`Tool`] seam: anything the model can call.
//!
//! A tool takes the schema-valid arguments and a [`CallControl`] (the caller's deadline and
//! cancellation) and answers with this crate's [`CallOutput`] or [`CallError`]. Nothing here
//! knows wasmtime: [`WasmTool`] converts what the sandbox returns.

use std::sync::Arc;

use corral_sandbox::{CallContext, Plugin};
use serde_json::Value;

use crate::call::{CallControl, CallError, CallOutput, Content, RuntimeError, RuntimeErrorKind};
use crate::ToolSpec;

/// A tool the model may call: a sandboxed plugin ([`WasmTool`]), or anything else behind the
/// same seam (a native closure in tests, later MCP servers and the code interpreter).
///
/// The [`Registry`](crate::Registry) validates arguments against `spec().parameters` before
/// `call` runs, so implementations receive a schema-valid object.
pub trait Tool: Send + Sync {
    /// Name, description and JSON Schema of the arguments.
    fn spec(&self) -> &ToolSpec;

    /// Runs the tool. It should stop by `control.deadline` and soon after `control.cancel` is
    /// set, answering [`RuntimeErrorKind::Deadline`] or [`RuntimeErrorKind::Cancelled`].
    ///
    /// # Errors
    /// [`CallError::Tool`] for an error the model should read; [`CallError::Runtime`] when the
    /// tool failed in a way the model cannot fix.
    fn call(&self, args: &Value, control: &CallControl) -> Result<CallOutput, CallError>;
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

    /// A cancelled call does not start; a running guest stops when the call is cancelled
    /// (within an epoch tick) or at the sooner of its own deadline and the caller's (the
    /// sandbox's epoch deadline interrupts it anywhere).
    fn call(&self, args: &Value, control: &CallControl) -> Result<CallOutput, CallError> {
        if let Some(stopped) = control.stopped() {
            return Err(stopped);
        }
        let args = args.to_string();
        let mut context = (*self.context).clone().with_cancel(control.cancel.flag());
        let callers = control
            .remaining()
            .filter(|left| *left < context.limits.deadline);
        if let Some(left) = callers {
            context.limits.deadline = left;
        }
        let result = self.plugin.call(&self.spec.name, &args, &context);
        result.map(from_sandbox_output).map_err(|e| {
            let mut e = from_sandbox_error(e);
            if let (CallError::Runtime(r), Some(left)) = (&mut e, callers) {
                if r.kind == RuntimeErrorKind::Deadline {
                    r.message = format!("the caller's deadline of {left:?}; {}", r.message);
                }
            }
            e
        })
    }
}

fn from_sandbox_output(out: corral_sandbox::CallOutput) -> CallOutput {
    CallOutput {
        content: out
            .content
            .into_iter()
            .map(|c| match c {
                corral_sandbox::Content::Text(t) => Content::Text(t),
                corral_sandbox::Content::Json(v) => Content::Json(v),
            })
            .collect(),
        truncated: out.truncated,
        stdout: out.stdout,
        stderr: out.stderr,
    }
}

fn from_sandbox_error(error: corral_sandbox::CallError) -> CallError {
    use corral_sandbox::RuntimeErrorKind as Sandbox;
    match error {
        corral_sandbox::CallError::Tool(message) => CallError::Tool(message),
        corral_sandbox::CallError::Runtime(e) => {
            let kind = match e.kind {
                Sandbox::Deadline => RuntimeErrorKind::Deadline,
                Sandbox::Memory => RuntimeErrorKind::Memory,
                Sandbox::StackOverflow => RuntimeErrorKind::StackOverflow,
                Sandbox::WriteLimit => RuntimeErrorKind::WriteLimit,
                Sandbox::InvalidResult => RuntimeErrorKind::InvalidResult,
                Sandbox::Instantiate => RuntimeErrorKind::Instantiate,
                Sandbox::Cancelled => RuntimeErrorKind::Cancelled,
                _ => RuntimeErrorKind::Trap,
            };
            CallError::Runtime(RuntimeError::new(kind, e.message))
        }
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

    /// A closure runs to its end: the control is checked before it starts.
    fn call(&self, args: &Value, control: &CallControl) -> Result<CallOutput, CallError> {
        if let Some(stopped) = control.stopped() {
            return Err(stopped);
        }
        let text = (self.f)(args).map_err(CallError::Tool)?;
        Ok(CallOutput::text(text))
    }
}
