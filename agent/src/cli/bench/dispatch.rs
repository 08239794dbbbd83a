//! Section 4: a trivial sandboxed tool call vs a native one, through the same registry (argument
//! validation included), and how long a plugin takes to become callable.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use corral_sandbox::{Sandbox, SandboxConfig};
use corral_tools::{plugins, FnTool, Registry, ToolSpec};
use serde_json::json;

use super::report::{Report, Row};
use super::{GlobalOpts, Plan};
use crate::cli::tools::home;

const TOOL: &str = "calculator";
const ARGS: &str = r#"{"expression": "1+2"}"#;

/// The `p`-quantile of `samples` (sorted here), in microseconds.
fn quantile_us(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort_unstable();
    let i = ((samples.len().saturating_sub(1)) as f64 * p).round() as usize;
    samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

/// `calls` timed calls of `name` after a few untimed ones.
fn timed_calls(
    registry: &Registry,
    name: &str,
    args: &str,
    calls: usize,
) -> anyhow::Result<Vec<Duration>> {
    for _ in 0..10 {
        registry
            .call(name, args)
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    }
    (0..calls)
        .map(|_| {
            let started = Instant::now();
            registry
                .call(name, args)
                .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            Ok(started.elapsed())
        })
        .collect()
}

/// A registry of the builtin plugins on `sandbox`, and the seconds from nothing to the first
/// answer of [`TOOL`].
fn cold_start(home: &plugins::Home, config: SandboxConfig) -> anyhow::Result<(Registry, f64)> {
    let started = Instant::now();
    let sandbox = Sandbox::new(config).context("cannot start the tool sandbox")?;
    let (registry, _problems) = plugins::registry(home, &sandbox)?;
    if !registry.contains(TOOL) {
        bail!(
            "the builtin plugin {TOOL} is not next to this corral: build the plugins \
             (scripts/build-plugins.sh, or make plugins)"
        );
    }
    registry
        .call(TOOL, ARGS)
        .map_err(|e| anyhow::anyhow!("{TOOL}: {e}"))?;
    Ok((registry, started.elapsed().as_secs_f64()))
}

/// Section 4.
///
/// # Errors
/// No builtin calculator plugin, or a failed call.
pub fn run(global: &GlobalOpts, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let home = home(global)?;
    // Compiling from scratch: an empty cache of its own, inside a scratch folder so that its MAC
    // key (a file beside the cache folder) goes when the folder does.
    let scratch = tempfile::tempdir()?;
    let cache = scratch.path().join("components");
    let (_, compile) = cold_start(&home, SandboxConfig::with_cache(&cache))?;
    // From the compiled cache (what every later start of corral does).
    let (registry, cached) = cold_start(&home, SandboxConfig::with_cache(&home.cache))?;

    let mut native = Registry::new();
    let spec = ToolSpec {
        name: "add".into(),
        description: Some("adds two integers".into()),
        parameters: json!({"type": "object", "properties": {
            "a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}),
    };
    native.register(
        Arc::new(FnTool::new(spec, |args| {
            Ok((args["a"].as_i64().unwrap_or(0) + args["b"].as_i64().unwrap_or(0)).to_string())
        })),
        "bench",
    )?;
    let mut wasm = timed_calls(&registry, TOOL, ARGS, plan.calls)?;
    let mut fast = timed_calls(&native, "add", r#"{"a": 1, "b": 2}"#, plan.calls)?;
    for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
        report.row(Row {
            section: "dispatch",
            test: format!("call {name}"),
            unit: "us",
            corral: quantile_us(&mut wasm, p),
            reference: Some(("native fn".into(), quantile_us(&mut fast, p))),
            target: None,
        });
    }
    report.row(Row {
        section: "dispatch",
        test: "cold start, compiled cache".into(),
        unit: "ms",
        corral: cached * 1e3,
        reference: Some(("compiling".into(), compile * 1e3)),
        target: None,
    });
    report.note(
        "dispatch",
        format!(
            "{} warm calls each through the same registry (schema check, then the call): the \
             builtin wasm plugin `{TOOL}` on {ARGS} vs a native closure adding two integers. \
             Cold start: a new sandbox, every builtin plugin loaded, and the first {TOOL} \
             answer; from corral's MAC-checked compiled cache vs compiling from nothing",
            plan.calls
        ),
    );
    Ok(())
}
