//! One integration-test binary for corral, a module per area.

mod automation;
mod bench_cli;
mod chat;
mod cli_errors;
mod code_interpreter;
mod constrained;
mod engine;
mod generate_cli;
mod kv_sequences;
mod mcp;
mod model_pull;
mod plain_text;
mod prompt_cli;
mod readme;
mod repl;
mod run_cli;
mod server;
mod sessions;
mod setup_script;
mod tools_cli;
