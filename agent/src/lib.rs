//! corral: a runtime that lets a local Llama model use tools safely.
//!
//! This crate is the application: the inference [`engine`] (the `Backend` seam, llama.cpp
//! behind the `llama` feature, a scripted test double), the [`agent`] loop that connects the
//! model's calls to tools, [`model`] pulling and caching, the OpenAI-compatible [`server`], and
//! the `corral` command line ([`cli`]). The Llama 3.1 prompt format lives in `corral-prompts`, the tool registry in
//! `corral-tools`, the wasmtime host in `corral-sandbox`, and conversation [`memory`] lives here too.
//!
//! Dependencies point one way: `corral` → `corral-tools` → `corral-sandbox`, and `corral` →
//! `corral-prompts`. Only this crate builds llama.cpp, and only with the `llama` feature.

pub mod agent;
pub mod cli;
pub mod config;
pub mod engine;
pub mod memory;
pub mod model;
pub mod server;
pub mod sessions;
