//! `corral bench`: corral against llama.cpp's own tools, in one run, as ratios.
//!
//! Six sections, each a comparison run here and now on the same model, threads and settings:
//!
//! 1. **raw** — prompt processing and generation vs `llama-bench`, runs interleaved;
//! 2. **constrained** — generation with the tool-call constraint engaged vs free generation, per
//!    *sampled* token (forced tokens are reported apart);
//! 3. **turns** — an agent turn's time to first token and turn time over a growing tool-calling
//!    history: corral's token-exact prefix reuse vs evaluating everything again vs `llama-server`
//!    (`cache_prompt` on) driven over its OpenAI API;
//! 4. **dispatch** — a trivial sandboxed tool call vs a native one, and a plugin's cold start;
//! 5. **memory** — peak RSS of a process that loaded the model at 8K, 32K and 128K context with
//!    f16 and q8_0 KV, against the model file plus the KV cache;
//! 6. **concurrency** — aggregate generation speed of 1, 4 and 8 conversations at once vs
//!    `llama-server -np N`.
//!
//! llama.cpp's tools are not built here: `scripts/bench.sh` builds them once from the llama.cpp
//! source corral's engine is built from, with the same build type and flags, and caches them
//! (`make bench` does both). `--quick` runs every section at toy sizes, for CI to see that
//! nothing is broken; its figures mean nothing. Timings are never asserted.

mod concurrency;
mod dispatch;
mod memory;
mod plot;
mod raw;
mod reference;
mod report;
mod turns;

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::{session, GlobalOpts, UsageError};
use crate::engine::{self, Backend, EngineOptions};
use report::Report;

/// Arguments of `corral bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Tiny sizes and one repetition: checks that every section runs (CI), figures meaningless.
    #[arg(long)]
    pub quick: bool,
    /// Print the results as one JSON document on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Only these sections (comma-separated; default: all).
    #[arg(long, value_delimiter = ',', value_name = "SECTION")]
    pub only: Vec<Section>,
    /// Folder for the PNG plots (TTFT vs history, tokens/s by mode, memory by context).
    #[arg(long, value_name = "DIR", default_value = "corral-bench")]
    pub plots: PathBuf,
    /// Write no plots.
    #[arg(long = "no-plots")]
    pub no_plots: bool,
    /// Folder holding llama.cpp's `llama-bench` and `llama-server` (built by scripts/bench.sh).
    #[arg(long = "llama-bin", value_name = "DIR", env = "CORRAL_LLAMA_BIN")]
    pub llama_bin: Option<PathBuf>,
    /// Repetitions of each timed run (default: 5, or 1 with --quick).
    #[arg(long)]
    pub reps: Option<usize>,
    /// History lengths of the turns section, in tokens (default: 0,2048,8192,32768).
    #[arg(long, value_delimiter = ',', value_name = "TOKENS")]
    pub histories: Vec<usize>,
    /// Internal: load the model at CTX,KV, report peak RSS as JSON and exit (the memory section
    /// runs itself as a child so each figure is one fresh process).
    #[arg(long = "probe-memory", hide = true, value_name = "CTX,KV")]
    pub probe_memory: Option<String>,
}

/// The sections of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Section {
    /// Prompt processing and generation vs llama-bench.
    Raw,
    /// Constrained vs free generation, per sampled token.
    Constrained,
    /// Agent turns over a growing history vs re-evaluation and llama-server.
    Turns,
    /// Sandboxed tool calls vs native ones, plugin cold start.
    Dispatch,
    /// Peak RSS by context size and KV type.
    Memory,
    /// Aggregate generation with several conversations at once vs llama-server.
    Concurrency,
}

impl Section {
    fn all() -> Vec<Section> {
        Section::value_variants().to_vec()
    }

    /// Its name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Section::Raw => "raw",
            Section::Constrained => "constrained",
            Section::Turns => "turns",
            Section::Dispatch => "dispatch",
            Section::Memory => "memory",
            Section::Concurrency => "concurrency",
        }
    }

    fn needs_llama_bench(self) -> bool {
        self == Section::Raw
    }

    fn needs_llama_server(self) -> bool {
        matches!(self, Section::Turns | Section::Concurrency)
    }
}

/// Sizes of one run: the full benchmark or `--quick`.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Repetitions of each timed run.
    pub reps: usize,
    /// Prompt tokens and generated tokens of the raw test.
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    /// Most tokens of a constrained (and its free partner's) generation.
    pub constrained_tokens: usize,
    /// History lengths of the turns section, and tokens generated per turn.
    pub histories: Vec<usize>,
    pub turn_tokens: usize,
    /// Warm calls of the dispatch section.
    pub calls: usize,
    /// Context sizes of the memory section.
    pub contexts: Vec<u32>,
    /// Conversations at once, and tokens each generates, in the concurrency section.
    pub streams: Vec<usize>,
    pub stream_tokens: usize,
    /// CPU threads on both sides.
    pub threads: u32,
}

impl Plan {
    fn new(quick: bool, reps: Option<usize>, threads: u32) -> Plan {
        if quick {
            return Plan {
                reps: reps.unwrap_or(1),
                prompt_tokens: 64,
                gen_tokens: 16,
                constrained_tokens: 32,
                histories: vec![0, 512],
                turn_tokens: 8,
                calls: 50,
                contexts: vec![1024],
                streams: vec![1, 2],
                stream_tokens: 8,
                threads,
            };
        }
        Plan {
            reps: reps.unwrap_or(5),
            prompt_tokens: 512,
            gen_tokens: 128,
            constrained_tokens: 96,
            histories: vec![0, 2048, 8192, 32768],
            turn_tokens: 32,
            calls: 2000,
            contexts: vec![8192, 32768, 131_072],
            streams: vec![1, 4, 8],
            stream_tokens: 64,
            threads,
        }
    }
}

/// Runs `corral bench`.
///
/// # Errors
/// Bad flags (usage), a missing llama.cpp tool a chosen section needs, or a failed run.
pub fn run(args: &BenchArgs, global: &GlobalOpts) -> anyhow::Result<()> {
    if let Some(spec) = &args.probe_memory {
        return memory::probe(spec, global);
    }
    if args.reps == Some(0) {
        return Err(UsageError::new("--reps must be at least 1").into());
    }
    let options = global.engine_options()?;
    let sections = if args.only.is_empty() {
        Section::all()
    } else {
        args.only.clone()
    };
    let mut plan = Plan::new(args.quick, args.reps, options.threads);
    if !args.histories.is_empty() {
        plan.histories = args.histories.clone();
    }
    // Everything that can be missing is looked for before anything is measured.
    let tools = reference::LlamaTools::find(args.llama_bin.as_deref())?;
    if sections.iter().any(|s| s.needs_llama_bench()) {
        tools.bench()?;
    }
    if sections.iter().any(|s| s.needs_llama_server()) {
        tools.server()?;
    }
    let font = if args.no_plots {
        None
    } else {
        Some(plot::find_font()?)
    };
    let model = session::resolve_model(global)?;
    let mut report = Report::new(&model, &plan, args.quick, tools.build_info());
    let progress = !args.json || std::io::stderr().is_terminal();
    for section in sections {
        if progress {
            eprintln!("bench: {} ...", section.name());
        }
        match section {
            Section::Raw => raw::raw(&model, &options, &plan, &tools, &mut report)?,
            Section::Constrained => raw::constrained(&model, &options, &plan, &mut report)?,
            Section::Turns => turns::run(&model, &options, &plan, &tools, &mut report)?,
            Section::Dispatch => dispatch::run(global, &plan, &mut report)?,
            Section::Memory => memory::run(&model, global, &plan, &mut report)?,
            Section::Concurrency => {
                concurrency::run(&model, &options, &plan, &tools, &mut report)?;
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.table());
    }
    if let Some(font) = font {
        let written = plot::write_all(&report, &args.plots, &font)
            .with_context(|| format!("cannot write the plots into {}", args.plots.display()))?;
        for path in written {
            eprintln!("bench: wrote {}", path.display());
        }
    }
    Ok(())
}

/// Loads the model for a section: the user's options, with `context` tokens per sequence.
fn load(
    model: &std::path::Path,
    options: &EngineOptions,
    context: u32,
    sequences: u32,
) -> anyhow::Result<Box<dyn Backend + Send>> {
    let options = EngineOptions {
        context_tokens: Some(context),
        sequences,
        show_progress: false,
        allow_untrained_context: true,
        ..options.clone()
    };
    engine::llama::load(model, &options)
        .with_context(|| format!("cannot load {} for the benchmark", model.display()))
}

/// llama.cpp's `-fa` value for corral's flash-attention option, so the references run with the
/// same attention kernel.
fn flash_flag(options: &EngineOptions) -> &'static str {
    match options.flash_attention.resolve() {
        Some(true) => "on",
        Some(false) => "off",
        None => "auto",
    }
}

/// The median of `values` (the upper one of an even count); 0 for none.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// A text of exactly `tokens` tokens for this model (a list it goes on with), without BOS.
fn text_of_tokens(backend: &mut dyn Backend, tokens: usize) -> anyhow::Result<String> {
    let count = |backend: &mut dyn Backend, text: &str| -> anyhow::Result<usize> {
        Ok(backend.tokenize(text, true)?.len())
    };
    let mut text = String::new();
    let mut n = 0;
    // Whole items first (about 4 tokens each), then characters off the end.
    while count(backend, &text)? < tokens {
        n += 1;
        text.push_str(&format!(" item {n},"));
    }
    while count(backend, &text)? > tokens {
        text.pop();
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_takes_the_middle_whatever_the_order() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 3.0);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn the_full_plan_has_the_sizes_the_issue_names() {
        let plan = Plan::new(false, None, 2);
        assert_eq!((plan.prompt_tokens, plan.gen_tokens), (512, 128));
        assert_eq!(plan.histories, [0, 2048, 8192, 32768]);
        assert_eq!(plan.contexts, [8192, 32768, 131_072]);
        assert_eq!(plan.streams, [1, 4, 8]);
        let quick = Plan::new(true, None, 2);
        assert_eq!(quick.reps, 1);
        assert!(quick.histories.iter().all(|&h| h <= 512));
    }
}
