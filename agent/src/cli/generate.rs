//! `corral generate TEXT`: a raw completion, streamed to stdout.

use std::io::Write;
use std::ops::ControlFlow;

use clap::Args;

use super::escapes::unescape;
use super::session;
use super::stdin::read_stdin;
use super::{GlobalOpts, UsageError};
use crate::engine::{GenerateRequest, Generation, Sampling};

/// Arguments of `corral generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Text to continue (`-` reads it from stdin).
    pub text: String,
    /// Stop after this many tokens.
    #[arg(long = "max-tokens", default_value_t = 256)]
    pub max_tokens: usize,
    /// Stop when the output contains this text (repeatable; not printed). `\n`, `\t` and `\\`
    /// stand for a newline, a tab and a backslash.
    #[arg(long = "stop", value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Print token counts and speeds to stderr when done, as one JSON line.
    #[arg(long)]
    pub stats: bool,
}

/// What `corral generate` was asked for, every flag checked.
struct Checked {
    sampling: Sampling,
    stop_strings: Vec<String>,
}

impl GenerateArgs {
    /// Checks the flags of this command (the global ones are checked by
    /// [`session::open_backend`] before it resolves the model).
    fn check(&self, global: &GlobalOpts) -> Result<Checked, UsageError> {
        if self.max_tokens == 0 {
            return Err(UsageError::new("--max-tokens must be at least 1"));
        }
        let stop_strings = self
            .stop
            .iter()
            .map(|stop| {
                let text =
                    unescape(stop).map_err(|e| UsageError::new(format!("--stop {stop:?}: {e}")))?;
                if text.is_empty() {
                    return Err(UsageError::new("--stop needs a non-empty text"));
                }
                Ok(text)
            })
            .collect::<Result<_, _>>()?;
        global.engine_options()?;
        Ok(Checked {
            sampling: global.sampling()?,
            stop_strings,
        })
    }
}

/// Runs `corral generate`.
///
/// # Errors
/// Bad flags or an empty prompt ([`UsageError`], before anything is read or loaded), model
/// loading or generation failures.
pub fn run(args: &GenerateArgs, global: &GlobalOpts) -> anyhow::Result<()> {
    let checked = args.check(global)?;
    let prompt = if args.text == "-" {
        read_stdin("the prompt")?
    } else {
        args.text.clone()
    };
    if prompt.is_empty() {
        return Err(UsageError::new("the text to continue is empty").into());
    }
    let mut backend = session::open_backend(global)?;
    let request = GenerateRequest {
        prompt: prompt.into(),
        max_tokens: Some(args.max_tokens),
        sampling: checked.sampling,
        stop_strings: checked.stop_strings,
        stop_tokens: Vec::new(),
        cancel: session::cancel_on_ctrl_c(),
        constraint: None,
        ..GenerateRequest::default()
    };
    let mut stdout = std::io::stdout().lock();
    let generation = backend.generate(&request, &mut |text| {
        if stdout
            .write_all(text.as_bytes())
            .and_then(|_| stdout.flush())
            .is_err()
        {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })?;
    writeln!(stdout)?;
    if args.stats {
        eprintln!("{}", stats_json(&generation));
    }
    Ok(())
}

/// Token counts, speeds and the stop reason of `generation`, as printed by `--stats`.
pub(super) fn stats_json(generation: &Generation) -> serde_json::Value {
    let evaluated = generation.prompt_tokens - generation.reused_tokens;
    serde_json::json!({
        "prompt_tokens": generation.prompt_tokens,
        "reused_tokens": generation.reused_tokens,
        "generated_tokens": generation.generated_tokens,
        "prompt_tokens_per_second": rate(evaluated, generation.prompt_seconds),
        "generated_tokens_per_second": rate(generation.generated_tokens, generation.generate_seconds),
        "stop": format!("{:?}", generation.stop),
    })
}

fn rate(tokens: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        tokens as f64 / seconds
    } else {
        0.0
    }
}
