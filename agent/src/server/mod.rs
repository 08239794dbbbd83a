//! An OpenAI-compatible HTTP server (`corral serve`): `POST /v1/chat/completions`,
//! `GET /v1/models`, `GET /health`.
//!
//! Requests are rendered in the model's own format ([`crate::agent::format_for_model`]'s
//! families, Llama 3.1 byte-exact with its template), generated with the same constraints as
//! the agent (tool calls per `tool_choice`, JSON per `response_format`) and parsed into
//! `tool_calls` with ids; a call never shows in `content`, which is `null` for a reply that is
//! only calls.
//!
//! Nobody gets in uninvited: the server binds loopback unless told otherwise, and a
//! non-loopback address needs an API key ([`ServerConfig::api_key`]); CORS is off unless
//! origins are named; bodies, message counts, `max_tokens` and the queue are capped
//! ([`Limits`]). Errors are OpenAI error objects with a 4xx for every client mistake.
//!
//! **Concurrency.** The llama.cpp context keeps one KV cache per sequence (`--parallel N`), and
//! up to N requests run at once, each on its own sequence, their tokens decoded together one
//! batch per step (continuous batching, as llama-server's slots). More wait in arrival order (at
//! most [`Limits::queue`], then 503). Each request goes to the free sequence sharing its longest
//! prefix ([`model`]), so that many conversations keep their cache between requests.
//! `GET /health` tells how many run and wait.
//!
//! **Agent mode** (model [`AGENT_MODEL`], `corral serve --agent`): corral runs its own
//! sandboxed tools with the server owner's grants and policy — never anything a request asks
//! for — and answers with the final text; the steps are in the message's `corral` field (and
//! `corral_step` chunks when streaming).

mod books;
pub mod error;
mod http;
pub mod model;
pub mod request;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

pub use error::ApiError;
pub use http::{router, AppState};
pub use model::{AgentSetup, Completion, Finish, Piece, ServedModel, Usage};
pub use request::{ChatRequest, ResponseFormat};

use crate::engine::Sampling;

/// The model name that selects agent mode.
pub const AGENT_MODEL: &str = "corral-agent";

/// Caps on what one request may ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Request body bytes (default 4 MiB).
    pub body_bytes: usize,
    /// Messages in one request (default 1024).
    pub messages: usize,
    /// `max_tokens` at most (default 4096).
    pub max_tokens: usize,
    /// Requests waiting for the model at most (default 64); more get 503.
    pub queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes: 4 << 20,
            messages: 1024,
            max_tokens: 4096,
            queue: 64,
        }
    }
}

/// Agent mode's tools and how they run.
pub struct AgentServe {
    /// corral's tools, with the owner's grants.
    pub registry: Arc<corral_tools::Registry>,
    /// Policy, step limit, call timeout.
    pub setup: AgentSetup,
}

/// How the server runs.
pub struct ServerConfig {
    /// The id clients send as `model` (and `/v1/models` lists).
    pub model_id: String,
    /// Other names accepted for the model (its GGUF name).
    pub aliases: Vec<String>,
    /// Bearer token every `/v1/…` request must carry, if set.
    pub api_key: Option<String>,
    /// Origins allowed to call from a browser (`*` for any); empty: no CORS headers at all.
    pub cors: Vec<String>,
    /// Request caps.
    pub limits: Limits,
    /// The owner's sampling; requests override temperature, top_p and seed.
    pub sampling: Sampling,
    /// Agent mode, when on.
    pub agent: Option<AgentServe>,
}

impl ServerConfig {
    /// The names `model` may take.
    pub fn model_names(&self) -> Vec<String> {
        let mut names = vec![self.model_id.clone()];
        names.extend(
            self.aliases
                .iter()
                .filter(|a| **a != self.model_id)
                .cloned(),
        );
        if self.agent.is_some() {
            names.push(AGENT_MODEL.to_string());
        }
        names
    }
}

/// Why the server would not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A non-loopback address without an API key.
    #[error(
        "refusing to listen on {0} without an API key: anyone who can reach it could use the \
         model and its tools; pass --api-key KEY (or set CORRAL_API_KEY), or bind 127.0.0.1"
    )]
    Unprotected(SocketAddr),
    /// The address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("the server stopped: {0}")]
    Io(#[from] std::io::Error),
}

/// Checks that `address` may be served with this config and binds it.
///
/// # Errors
/// [`ServeError::Unprotected`] for a non-loopback address without a key; a failed bind.
pub async fn bind(
    address: SocketAddr,
    config: &ServerConfig,
) -> Result<tokio::net::TcpListener, ServeError> {
    if !address.ip().is_loopback() && config.api_key.as_deref().is_none_or(str::is_empty) {
        return Err(ServeError::Unprotected(address));
    }
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Bind { address, source })
}

/// Serves `state` on `listener` until `shutdown` completes.
///
/// # Errors
/// When accepting connections fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
