//! The wasmtime host that runs corral's tools as sandboxed WebAssembly components.
//!
//! Every tool corral runs, builtin or written by a user, is a WASI 0.2 component targeting the
//! `corral:tool@0.1.0` world in `wit/tool.wit`. The host gives it no ambient authority: it sees
//! only the directories, environment variables and network peers that both its manifest asked
//! for and the user granted ([`grants`]), and every call runs under [`Limits`]: a wall-clock
//! deadline (epoch interruption plus a timer, so a guest blocked in a host call stops too), a
//! memory cap, a fixed wasm stack, and caps on result and stdout/stderr size that truncate with a
//! visible marker instead of failing.
//!
//! Shape, and why:
//! - One [`Sandbox`] per process: engine, linker, epoch ticker thread, and a small tokio runtime
//!   for WASI's async host calls. The engine uses the pooling allocator with explicit sizes
//!   ([`PoolConfig`]) so instantiation is cheap and the reserved address space is bounded.
//! - [`Sandbox::load`] compiles a component once (or deserializes it from the on-disk cache,
//!   keyed by the component's SHA-256, the wasmtime version and the engine's settings, and only
//!   after checking the artifact's keyed MAC and that the cache is private: [`CacheOutcome`]),
//!   refuses imports corral does not provide, and pre-links it.
//! - Granted folders are opened once, never through a symlink, and calls use that handle
//!   ([`PinnedDir`]); WASI's `open-at` refuses FIFOs, sockets and devices, which would block.
//! - [`Plugin::call`] builds a fresh `Store` for every call, so nothing leaks between calls and a
//!   trap poisons nothing; calls may run concurrently from many threads.
//! - [`CallError`] keeps the plugin's own errors (for the model) apart from the host stopping a
//!   guest (for the agent to decide), as wasmtime separates guest-visible errors from traps.
//!
//! ```no_run
//! use corral_sandbox::{CallContext, Sandbox, SandboxConfig};
//!
//! let sandbox = Sandbox::new(SandboxConfig::with_cache("/home/me/.cache/corral/components"))?;
//! let plugin = sandbox.load(&std::fs::read("calculator.wasm")?)?;
//! for tool in plugin.list_tools()? {
//!     println!("{}: {}", tool.name, tool.description);
//! }
//! let out = plugin.call("calculator", r#"{"expression":"2+3"}"#, &CallContext::default());
//! println!("{out:?}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cache;
mod error;
mod fs_guard;
pub mod grants;
mod host;
pub mod limits;
mod output;
mod pinned;
mod plugin;
pub mod private;
pub mod python;
mod runtime;
mod write_quota;

pub use cache::CacheOutcome;
pub use error::{CallError, Error, ErrorKind, RuntimeError, RuntimeErrorKind};
pub use grants::{Capabilities, Effective, Grant};
pub use limits::{Limits, LimitsSpec};
pub use output::truncate_with_marker;
pub use pinned::{PinError, PinnedDir};
pub use plugin::{CallContext, CallOutput, Content, ExportedTool, Plugin};
pub use runtime::{PoolConfig, Sandbox, SandboxConfig, WallClock};

/// The plugin API version this host implements (the WIT package version).
pub const API_VERSION: &str = "0.1.0";
