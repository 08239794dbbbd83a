//! Write a corral tool plugin in a few lines.
//!
//! A plugin is a WebAssembly component (target `wasm32-wasip2`) exporting the `corral:tool`
//! world. This crate hides the bindings: implement [`Plugin`] (list your tools, handle a call)
//! and call [`export_plugin!`]. The host validates arguments against each tool's JSON Schema
//! before `call` runs, so `args` is already well-formed; return `Err(message)` for errors the
//! model should read ("division by zero"). Panics and limits hit are reported by the host.
//!
//! ```ignore
//! use corral_sdk::{json, Output, Plugin, Tool, Value};
//!
//! struct Hello;
//!
//! impl Plugin for Hello {
//!     fn tools() -> Vec<Tool> {
//!         vec![Tool::new("hello", "Greets someone", json!({
//!             "type": "object",
//!             "properties": {"name": {"type": "string"}},
//!             "required": ["name"]
//!         }))]
//!     }
//!
//!     fn call(_tool: &str, args: Value) -> Result<Output, String> {
//!         Ok(Output::text(format!("Hello, {}!", args["name"].as_str().unwrap_or("you"))))
//!     }
//! }
//!
//! corral_sdk::export_plugin!(Hello);
//! ```

// Lets the generated bindings name this crate the same way from inside and outside it.
extern crate self as corral_sdk;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../sandbox/wit",
        world: "plugin",
        pub_export_macro: true,
        default_bindings_module: "corral_sdk::bindings",
        runtime_path: "corral_sdk::__wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

pub use serde_json::{self, json, Value};

use bindings::exports::corral::tool::tool::{Content, ToolSpec};

/// One tool a plugin provides.
#[derive(Debug, Clone)]
pub struct Tool {
    /// Name the model calls it by: `[a-zA-Z0-9_-]{1,64}`.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of the arguments; must have `"type": "object"`.
    pub input_schema: Value,
}

impl Tool {
    /// A tool spec.
    pub fn new(name: &str, description: &str, input_schema: Value) -> Tool {
        Tool {
            name: name.into(),
            description: description.into(),
            input_schema,
        }
    }
}

/// A successful result: one or more pieces of text or JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Output(Vec<Piece>);

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Json(Value),
}

impl Output {
    /// A text result.
    pub fn text(text: impl Into<String>) -> Output {
        Output(vec![Piece::Text(text.into())])
    }

    /// A JSON result.
    pub fn json(value: Value) -> Output {
        Output(vec![Piece::Json(value)])
    }

    /// Appends text.
    pub fn and_text(mut self, text: impl Into<String>) -> Output {
        self.0.push(Piece::Text(text.into()));
        self
    }
}

/// What a plugin implements.
pub trait Plugin {
    /// The tools this plugin provides (asked once when the plugin loads).
    fn tools() -> Vec<Tool>;

    /// Runs tool `tool` with schema-valid `args`.
    ///
    /// # Errors
    /// A message for the model.
    fn call(tool: &str, args: Value) -> Result<Output, String>;
}

/// Deserializes arguments into your own type (`#[derive(serde::Deserialize)]`).
///
/// # Errors
/// A message naming the problem, for the model.
pub fn args<T: serde::de::DeserializeOwned>(args: Value) -> Result<T, String> {
    serde_json::from_value(args).map_err(|e| format!("bad arguments: {e}"))
}

/// Writes to the host's log for this call (never shown to the model).
pub mod log {
    use crate::bindings::corral::tool::host::{log, Level};

    /// Debug line.
    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }
    /// Info line.
    pub fn info(message: &str) {
        log(Level::Info, message);
    }
    /// Warning line.
    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }
    /// Error line.
    pub fn error(message: &str) {
        log(Level::Error, message);
    }
}

#[doc(hidden)]
pub fn __list<P: Plugin>() -> Vec<ToolSpec> {
    P::tools()
        .into_iter()
        .map(|t| ToolSpec {
            name: t.name,
            description: t.description,
            input_schema: t.input_schema.to_string(),
        })
        .collect()
}

#[doc(hidden)]
pub fn __call<P: Plugin>(name: String, arguments: String) -> Result<Vec<Content>, String> {
    let args: Value =
        serde_json::from_str(&arguments).map_err(|e| format!("arguments are not JSON: {e}"))?;
    let out = P::call(&name, args)?;
    Ok(out
        .0
        .into_iter()
        .map(|p| match p {
            Piece::Text(t) => Content::Text(t),
            Piece::Json(v) => Content::Json(v.to_string()),
        })
        .collect())
}

/// Exports a [`Plugin`] implementation as the component's `corral:tool/tool` interface.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        struct __CorralExport;

        impl $crate::bindings::exports::corral::tool::tool::Guest for __CorralExport {
            fn list_tools() -> ::std::vec::Vec<$crate::bindings::exports::corral::tool::tool::ToolSpec> {
                $crate::__list::<$plugin>()
            }

            fn call(
                name: ::std::string::String,
                arguments: ::std::string::String,
            ) -> ::std::result::Result<
                ::std::vec::Vec<$crate::bindings::exports::corral::tool::tool::Content>,
                ::std::string::String,
            > {
                $crate::__call::<$plugin>(name, arguments)
            }
        }

        $crate::bindings::export!(__CorralExport with_types_in $crate::bindings);
    };
}
