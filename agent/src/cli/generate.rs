//! `corral generate TEXT`: a raw completion, streamed to stdout.

use std::io::{Read, Write};
use std::ops::ControlFlow;

use clap::Args;

use super::{GlobalOpts, UsageError};
use crate::engine::GenerateRequest;
use crate::session;

/// Arguments of `corral generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Text to continue (`-` reads it from stdin).
    pub text: String,
    /// Stop after this many tokens.
    #[arg(long = "max-tokens", default_value_t = 256)]
    pub max_tokens: usize,
    /// Stop when the output contains this text (repeatable; not printed).
    #[arg(long = "stop", value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Print token counts and speeds to stderr when done, as one JSON line.
    #[arg(long)]
    pub stats: bool,
}

/// Runs `corral generate`.
///
/// # Errors
/// Model loading or generation failures.
pub fn run(args: &GenerateArgs, global: &GlobalOpts) -> anyhow::Result<()> {
    let prompt = if args.text == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| UsageError::new(format!("cannot read the prompt from stdin: {e}")))?;
        text
    } else {
        args.text.clone()
    };
    if prompt.is_empty() {
        return Err(UsageError::new("the text to continue is empty").into());
    }
    let mut backend = session::open_backend(global)?;
    let cancel = session::cancel_on_ctrl_c();
    let request = GenerateRequest {
        prompt,
        max_tokens: Some(args.max_tokens),
        sampling: global.sampling()?,
        stop_strings: args.stop.clone(),
        stop_tokens: Vec::new(),
        cancel,
        constraint: None,
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
        let stats = serde_json::json!({
            "prompt_tokens": generation.prompt_tokens,
            "generated_tokens": generation.generated_tokens,
            "prompt_tokens_per_second": rate(generation.prompt_tokens - generation.reused_tokens, generation.prompt_seconds),
            "generated_tokens_per_second": rate(generation.generated_tokens, generation.generate_seconds),
            "stop": format!("{:?}", generation.stop),
        });
        eprintln!("{stats}");
    }
    Ok(())
}

fn rate(tokens: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        tokens as f64 / seconds
    } else {
        0.0
    }
}
