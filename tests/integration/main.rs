//! One integration-test binary for corral, a module per area.

mod chat;
mod cli_errors;
mod constrained;
mod engine;
mod model_pull;
mod prompt_cli;
mod setup_script;
mod tools_cli;
