//! Section 5: peak resident memory of a process that loaded the model with a given context and
//! KV type, against what it must hold: the model file and the KV cache.
//!
//! Each figure is a fresh child process (`corral bench --probe-memory CTX,KV`) that loads the
//! model, evaluates a short prompt, generates one token, and reports its peak RSS (`VmHWM`).
//! llama.cpp clears the whole KV buffer when it creates the context, so the cache is resident
//! whatever the prompt's length; the model's weights are mapped from the file and count once
//! read. The overhead is peak RSS less both.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::report::{Report, Row};
use super::{session, GlobalOpts, Plan, UsageError};
use crate::engine::{
    self, generate_to_string, EngineOptions, FlashAttention, GenerateRequest, KvType, Sampling,
};

/// `VmHWM` of this process, in bytes.
fn peak_rss() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .context("no VmHWM in /proc/self/status")
}

fn parse_spec(spec: &str) -> Result<(u32, KvType), UsageError> {
    let bad = || {
        UsageError::new(format!(
            "--probe-memory {spec:?}: expected CTX,KV (e.g. 8192,f16)"
        ))
    };
    let (ctx, kv) = spec.split_once(',').ok_or_else(bad)?;
    let ctx = ctx.parse().map_err(|_| bad())?;
    let kv = kv.parse().map_err(|_| bad())?;
    Ok((ctx, kv))
}

/// The child's side: load, evaluate, generate one token, print `{"peak_rss", "kv_cache"}`.
///
/// # Errors
/// A bad spec, or a failed load or generation.
pub fn probe(spec: &str, global: &GlobalOpts) -> anyhow::Result<()> {
    let (context, kv_type) = parse_spec(spec)?;
    let model = session::resolve_model(global)?;
    let options = EngineOptions {
        context_tokens: Some(context),
        kv_type,
        // q8_0 values need flash attention; f16 gets it too, so the two differ only by type.
        flash_attention: FlashAttention::On,
        allow_untrained_context: true,
        show_progress: false,
        ..global.engine_options()?
    };
    let mut backend = engine::llama::load(&model, &options)?;
    let request = GenerateRequest {
        prompt: "The quick brown fox jumps over the lazy dog.".into(),
        max_tokens: Some(1),
        sampling: Sampling::greedy(),
        ..GenerateRequest::default()
    };
    generate_to_string(backend.as_mut(), &request)?;
    let kv = backend.info().kv_cache_bytes;
    println!("{}", json!({"peak_rss": peak_rss()?, "kv_cache": kv}));
    Ok(())
}

/// Section 5.
///
/// # Errors
/// A probe that fails or prints something else than its figures.
pub fn run(
    model: &Path,
    global: &GlobalOpts,
    plan: &Plan,
    report: &mut Report,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find corral's own executable")?;
    let model_bytes = std::fs::metadata(model)?.len();
    let mb = |b: f64| b / 1e6;
    for &context in &plan.contexts {
        for kv in ["f16", "q8_0"] {
            let mut command = Command::new(&exe);
            command
                .arg("--model")
                .arg(model)
                .args(["--threads", &plan.threads.to_string()])
                .args(["bench", "--probe-memory", &format!("{context},{kv}")]);
            if global.verbose {
                command.arg("--verbose");
            }
            let output = command.output().context("cannot run the memory probe")?;
            if !output.status.success() {
                bail!(
                    "the memory probe at {context} tokens, {kv} KV failed: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
            }
            let figures: Value = serde_json::from_slice(&output.stdout)
                .context("the memory probe printed no JSON")?;
            let (Some(peak), Some(cache)) =
                (figures["peak_rss"].as_u64(), figures["kv_cache"].as_u64())
            else {
                bail!("the memory probe printed {figures}");
            };
            let needed = model_bytes + cache;
            let overhead = peak as f64 - needed as f64;
            report.row(Row {
                section: "memory",
                test: format!("peak RSS @ {context} {kv}"),
                unit: "MB",
                corral: mb(peak as f64),
                reference: Some(("model + KV".into(), mb(needed as f64))),
                target: None,
            });
            report.row(Row {
                section: "memory",
                test: format!("overhead @ {context} {kv}"),
                unit: "MB",
                corral: mb(overhead),
                reference: None,
                target: None,
            });
            report.point(
                "memory",
                &format!("peak RSS, {kv} KV"),
                f64::from(context),
                mb(peak as f64),
            );
            report.point(
                "memory",
                &format!("model + KV, {kv} KV"),
                f64::from(context),
                mb(needed as f64),
            );
        }
    }
    report.note(
        "memory",
        format!(
            "one fresh process per figure, flash attention on (q8_0 V needs it), one sequence; \
             model file {:.1} MB; KV cache computed from the model's layers and heads; overhead = \
             peak RSS - model - KV (llama.cpp's compute buffers, corral, the C and Rust runtimes)",
            mb(model_bytes as f64)
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_specs_are_checked() {
        assert_eq!(parse_spec("8192,q8_0").unwrap(), (8192, KvType::Q8_0));
        let err = parse_spec("8192").unwrap_err().to_string();
        assert!(err.contains("expected CTX,KV"), "{err}");
        assert!(parse_spec("x,f16").is_err());
        assert!(parse_spec("8192,f32").is_err());
    }

    #[test]
    fn peak_rss_is_read_from_proc() {
        assert!(peak_rss().unwrap() > 1 << 20);
    }
}
