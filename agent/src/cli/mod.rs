//! The `corral` command line: argument parsing only; each subcommand lives in its own module.
//!
//! Flags that shape the engine (`--model`, `--ctx`, sampling, …) are global: they are accepted
//! before or after the subcommand. Every flag is checked before any work starts (reading stdin,
//! pulling or loading a model), and [`exit_code`] tells a usage mistake (2) from a failure (1).

mod batch;
mod bench;
mod chat;
mod config;
mod display;
pub mod escapes;
mod generate;
mod mcp;
mod model;
pub mod prompt;
mod replay;
mod run;
mod serve;
mod session;
mod sessions;
pub mod stdin;
pub mod tools;
mod toolset;

use std::fmt;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::engine::{EngineError, EngineOptions, FlashAttention, KvType, OptionError, Sampling};

/// corral: a local Llama that uses sandboxed tools.
#[derive(Debug, Parser)]
#[command(name = "corral", version, about, long_about = None)]
pub struct Cli {
    /// Flags accepted anywhere on the command line.
    #[command(flatten)]
    pub global: GlobalOpts,
    /// What to do (default: chat with the default model).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Global flags: model, context and sampling.
#[derive(Debug, Clone, Args)]
pub struct GlobalOpts {
    /// GGUF model file, or the name of a cached model (default: the default model).
    #[arg(long, global = true, value_name = "PATH|NAME")]
    pub model: Option<PathBuf>,
    /// Context window in tokens, up to 131072 (default: the model's training context, capped so
    /// the KV cache fits in memory).
    #[arg(long, global = true, value_name = "TOKENS")]
    pub ctx: Option<u32>,
    /// CPU threads (default: all available cores).
    #[arg(long, global = true)]
    pub threads: Option<u32>,
    /// Prompt-evaluation batch size (llama.cpp's `--batch-size`).
    #[arg(
        id = "batch_size",
        long = "batch-size",
        global = true,
        default_value_t = 512,
        value_name = "N"
    )]
    pub batch: u32,
    /// KV cache type: f16 or q8_0.
    #[arg(long = "kv-type", global = true, default_value = "f16")]
    pub kv_type: KvType,
    /// Flash attention: on, off or auto (a bare `--flash-attn` means on).
    #[arg(long = "flash-attn", global = true, num_args = 0..=1, default_value = "auto",
          default_missing_value = "on", value_name = "on|off|auto")]
    pub flash_attn: FlashAttention,
    /// Layers to offload to the GPU (needs a build with `--features cuda`).
    #[arg(
        long = "gpu-layers",
        global = true,
        default_value_t = 0,
        value_name = "N"
    )]
    pub gpu_layers: u32,
    /// Sampling temperature; 0 means greedy.
    #[arg(long, global = true, value_name = "T")]
    pub temperature: Option<f32>,
    /// Nucleus sampling probability mass.
    #[arg(long = "top-p", global = true, value_name = "P")]
    pub top_p: Option<f32>,
    /// Keep only the K most likely tokens (0 disables).
    #[arg(long = "top-k", global = true, value_name = "K")]
    pub top_k: Option<i32>,
    /// Random seed for sampling.
    #[arg(long, global = true)]
    pub seed: Option<u32>,
    /// Penalty on recently seen tokens (1.0 disables; not applied when greedy).
    #[arg(long = "repeat-penalty", global = true, value_name = "P")]
    pub repeat_penalty: Option<f32>,
    /// Show llama.cpp's own log.
    #[arg(long, global = true)]
    pub verbose: bool,
    /// Also take tools from the MCP servers in this JSON file (`{"mcpServers": {NAME:
    /// {"command", "args", "env"}}}`), on top of the config file's `[mcpServers]`.
    #[arg(long = "mcp-config", global = true, value_name = "FILE")]
    pub mcp_config: Option<PathBuf>,
    /// The config file and `CORRAL_*` variables ([`Config`]); flags override them.
    #[arg(skip)]
    pub config: Config,
}

impl GlobalOpts {
    /// Fills every flag that was not given from the config (file, then environment).
    pub fn fill_from_config(&mut self) {
        let c = &self.config;
        if self.model.is_none() {
            self.model = c.model.as_ref().map(|s| PathBuf::from(&s.value));
        }
        self.ctx = self.ctx.or(c.ctx.as_ref().map(|s| s.value));
        self.threads = self.threads.or(c.threads.as_ref().map(|s| s.value));
        self.temperature = self.temperature.or(c.temperature.as_ref().map(|s| s.value));
        self.top_p = self.top_p.or(c.top_p.as_ref().map(|s| s.value));
        self.top_k = self.top_k.or(c.top_k.as_ref().map(|s| s.value));
        self.seed = self.seed.or(c.seed.as_ref().map(|s| s.value));
        self.repeat_penalty = self
            .repeat_penalty
            .or(c.repeat_penalty.as_ref().map(|s| s.value));
    }

    /// Engine options from the flags.
    ///
    /// # Errors
    /// Conflicting or out-of-range options, as a [`UsageError`].
    pub fn engine_options(&self) -> Result<EngineOptions, UsageError> {
        let defaults = EngineOptions::default();
        let options = EngineOptions {
            context_tokens: self.ctx,
            threads: self.threads.unwrap_or(defaults.threads),
            batch: self.batch,
            kv_type: self.kv_type,
            flash_attention: self.flash_attn,
            gpu_layers: self.gpu_layers,
            verbose: self.verbose,
            show_progress: true,
            ..defaults
        };
        options.validate()?;
        Ok(options)
    }

    /// Sampling settings from the flags.
    ///
    /// # Errors
    /// Out-of-range values, as a [`UsageError`].
    pub fn sampling(&self) -> Result<Sampling, UsageError> {
        let defaults = Sampling::default();
        let sampling = Sampling {
            temperature: self.temperature.unwrap_or(defaults.temperature),
            top_p: self.top_p.unwrap_or(defaults.top_p),
            top_k: self.top_k.unwrap_or(defaults.top_k),
            seed: self.seed.unwrap_or(defaults.seed),
            repeat_penalty: self.repeat_penalty.unwrap_or(defaults.repeat_penalty),
        };
        sampling.validate()?;
        Ok(sampling)
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Chat with the model (the default when no subcommand is given).
    Chat(chat::ChatArgs),
    /// Print a raw completion of TEXT.
    Generate(generate::GenerateArgs),
    /// Pull, list and locate models.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Render, parse and tokenize Llama 3.1 prompts (no model needed except for `tokens`).
    #[command(subcommand)]
    Prompt(prompt::PromptCommand),
    /// Install, list, remove and call sandboxed tool plugins.
    #[command(subcommand)]
    Tools(tools::ToolsCommand),
    /// Run one task with tools, non-interactively, and print the answer.
    Run(run::RunArgs),
    /// List, show and remove saved conversations (`--session NAME`).
    #[command(subcommand)]
    Session(sessions::SessionCommand),
    /// Re-run a `corral run --record` file with its recorded tool results and report where the
    /// model's calls or answer diverge (exit 0 when identical, 5 when not).
    Replay(replay::ReplayArgs),
    /// Show the effective configuration, or the config file's path.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Serve the model over an OpenAI-compatible HTTP API (loopback by default).
    Serve(serve::ServeArgs),
    /// Model Context Protocol: offer corral's sandboxed tools to MCP clients.
    #[command(subcommand)]
    Mcp(mcp::McpCommand),
    /// Measure corral against llama.cpp's own llama-bench and llama-server, as ratios (build
    /// them once with scripts/bench.sh)
    Bench(bench::BenchArgs),
}

impl Default for Command {
    fn default() -> Self {
        Command::Chat(chat::ChatArgs::default())
    }
}

/// Tokens one answer may take (and memory keeps free for it): a quarter of the window, at most
/// 1024, so a rambling reply cannot crowd out the conversation.
pub(crate) fn reply_budget(window: usize) -> usize {
    (window / 4).clamp(16, 1024)
}

/// A mistake in what the user asked for (bad flag value, bad input): exit code 2.
#[derive(Debug)]
pub struct UsageError(String);

impl UsageError {
    /// A usage error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

impl From<OptionError> for UsageError {
    fn from(err: OptionError) -> Self {
        Self(err.to_string())
    }
}

/// The exit code for an error that ended a command: 2 when it is a usage mistake anywhere in its
/// chain (a [`UsageError`], a bad option, a prompt that does not fit: see
/// [`EngineError::is_usage`]), 1 for everything else.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    let usage = err.chain().any(|cause| {
        cause.is::<UsageError>()
            || cause.is::<OptionError>()
            || cause
                .downcast_ref::<EngineError>()
                .is_some_and(EngineError::is_usage)
    });
    if usage {
        2
    } else {
        1
    }
}

/// Runs the parsed command line.
///
/// # Errors
/// Whatever the subcommand reports; [`UsageError`]s mean exit code 2. On success, the exit
/// code the command chose (`corral run` tells how its turn ended).
pub fn run(mut cli: Cli) -> anyhow::Result<u8> {
    cli.global.config = Config::load(&|name| std::env::var(name).ok())
        .map_err(|e| UsageError::new(format!("config: {e}")))?;
    let command = cli.command.unwrap_or_default();
    // `corral config show` reports the flags as given, so it sees them before the config fills
    // the rest in.
    if !matches!(command, Command::Config(_)) {
        cli.global.fill_from_config();
    }
    let done = match command {
        Command::Chat(args) => chat::run(&args, &cli.global),
        Command::Generate(args) => generate::run(&args, &cli.global),
        Command::Model(command) => model::run(command),
        Command::Prompt(command) => prompt::run(command, &cli.global),
        Command::Tools(command) => tools::run(command, &cli.global),
        Command::Run(args) => return run::run(&args, &cli.global),
        Command::Session(command) => sessions::run(command),
        Command::Replay(args) => return replay::run(&args, &cli.global),
        Command::Config(command) => config::run(command, &cli.global),
        Command::Serve(args) => return serve::run(&args, &cli.global),
        Command::Mcp(command) => mcp::run(command, &cli.global),
        Command::Bench(args) => bench::run(&args, &cli.global),
    };
    done.map(|()| 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        // Catches two flags sharing an id (a global `--batch` and `run --batch` once did).
        use clap::CommandFactory;
        Cli::command().debug_assert();
        for args in [
            &["corral", "run", "--batch", "t.jsonl", "--batch-size", "64"][..],
            &[
                "corral",
                "run",
                "--file",
                "task.md",
                "--timeout",
                "5",
                "--grant",
                "files=/tmp",
            ],
            &[
                "corral",
                "chat",
                "--tool-choice",
                "required",
                "--system",
                "hi",
            ],
            &["corral", "replay", "r.jsonl", "--system", "x"],
            &["corral", "config", "show"],
        ] {
            Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
    }
}
