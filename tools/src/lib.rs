//! corral's tools: the [`Tool`] seam, the [`Registry`] every call goes through, and the plugin
//! folders that provide sandboxed tools.
//!
//! A call from the model takes one path ([`Registry::call`]): look the tool up (Llama 3.1's
//! `brave_search` / `wolfram_alpha` included: they work only when a plugin provides them), cap
//! the argument text's size and nesting depth *before* parsing, parse, validate against the
//! tool's JSON Schema (compiled once, never fetching remote references), then dispatch. Every
//! refusal on that path is a [`CallError::Tool`] whose message the model can act on; the host
//! stopping a guest is a [`CallError::Runtime`].
//!
//! Plugins are folders (`plugin.toml` + a WebAssembly component, see [`manifest`]) installed
//! under the corral home ([`plugins::Home`]); their tools, recorded once at install
//! ([`plugins::record`]), become [`WasmTool`]s that run in the [`corral_sandbox`] host with the
//! rights the manifest asked for and the user granted to that exact component. Managing plugins
//! fails with a typed [`Error`] whose kind tells a usage mistake from a failure.
//!
//! ```no_run
//! use corral_tools::plugins::{self, Home};
//! use corral_sandbox::{Sandbox, SandboxConfig};
//!
//! let home = Home::from_env()?;
//! let sandbox = Sandbox::new(SandboxConfig::with_cache(&home.cache))?;
//! let (registry, problems) = plugins::registry(&home, &sandbox)?;
//! let out = registry.call("calculator", r#"{"expression":"2+3"}"#);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod args;
mod call;
pub mod code_interpreter;
mod error;
pub mod manifest;
pub mod mcp;
pub mod plugins;
mod registry;
pub mod sanitize;
mod schema;
mod tool;

pub use args::{ArgLimits, ArgumentError};
pub use call::{
    CallControl, CallError, CallOutput, CancelToken, Content, RuntimeError, RuntimeErrorKind,
};
/// What the model is told about a tool: one type for the whole workspace, from the prompt
/// formats that render it.
pub use corral_prompts::ToolSpec;
pub use error::{Error, ErrorKind};
pub use registry::{is_tool_name, RegisterError, Registry, LLAMA_BUILTIN_TOOLS};
pub use schema::{InputSchema, SchemaError, SchemaViolation};
pub use tool::{FnTool, Tool, WasmTool};
