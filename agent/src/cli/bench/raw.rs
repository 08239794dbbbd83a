//! Sections 1 and 2: the raw engine against `llama-bench`, and the constraint's cost per
//! sampled token.

use std::path::Path;

use anyhow::{bail, Context};
use corral_prompts::{Conversation, Message, ToolChoice, ToolSpec};

use super::reference::{llama_bench, LlamaTools};
use super::report::{Report, Row, Target};
use super::{flash_flag, load, median, text_of_tokens, Plan};
use crate::agent::format_for_model;
use crate::engine::{
    generate_to_string, Backend, EngineOptions, GenerateRequest, Generation, Sampling,
};

/// One greedy generation on sequence 0 from an empty cache.
fn fresh(backend: &mut dyn Backend, request: GenerateRequest) -> anyhow::Result<Generation> {
    backend.truncate_cache(0, 0)?;
    Ok(generate_to_string(backend, &request)?)
}

/// corral's prompt rate (`prompt` evaluated from an empty cache) and generation rate
/// (`gen` greedy tokens after a near-empty context), in tokens per second.
fn corral_rates(backend: &mut dyn Backend, prompt: &str, gen: usize) -> anyhow::Result<(f64, f64)> {
    let g = fresh(
        backend,
        GenerateRequest {
            prompt: prompt.to_owned().into(),
            max_tokens: Some(1),
            sampling: Sampling::greedy(),
            ..GenerateRequest::default()
        },
    )?;
    let pp = g.prompt_tokens as f64 / g.prompt_seconds;
    let g = fresh(
        backend,
        GenerateRequest {
            prompt: "Once upon a time".into(),
            max_tokens: Some(gen),
            sampling: Sampling::greedy(),
            ..GenerateRequest::default()
        },
    )?;
    if g.generated_tokens != gen {
        bail!(
            "generation ended after {} of {gen} tokens ({:?}): the rate would not compare",
            g.generated_tokens,
            g.stop
        );
    }
    Ok((pp, g.generated_tokens as f64 / g.generate_seconds))
}

/// Section 1: prompt processing and generation vs llama-bench, interleaved repetitions.
///
/// # Errors
/// A failed load, generation or llama-bench run.
pub fn raw(
    model: &Path,
    options: &EngineOptions,
    plan: &Plan,
    tools: &LlamaTools,
    report: &mut Report,
) -> anyhow::Result<()> {
    let bench = tools.bench()?;
    let context = ((plan.prompt_tokens + plan.gen_tokens + 64) as u32).max(1024);
    let mut backend = load(model, options, context, 1)?;
    let prompt = text_of_tokens(backend.as_mut(), plan.prompt_tokens)?;
    // Warm-up, as llama-bench does one before it times.
    corral_rates(backend.as_mut(), &prompt, plan.gen_tokens)?;
    let flash = flash_flag(options);
    let (mut ours_pp, mut ours_tg, mut theirs_pp, mut theirs_tg) = (vec![], vec![], vec![], vec![]);
    let mut commit = String::new();
    for _ in 0..plan.reps {
        let (pp, tg) = corral_rates(backend.as_mut(), &prompt, plan.gen_tokens)?;
        ours_pp.push(pp);
        ours_tg.push(tg);
        let run = llama_bench(
            &bench,
            model,
            plan.threads,
            plan.prompt_tokens,
            plan.gen_tokens,
            1,
            flash,
        )?;
        theirs_pp.push(run.pp);
        theirs_tg.push(run.tg);
        commit = run.commit;
    }
    for (test, ours, theirs) in [
        (format!("pp{}", plan.prompt_tokens), &ours_pp, &theirs_pp),
        (format!("tg{}", plan.gen_tokens), &ours_tg, &theirs_tg),
    ] {
        report.row(Row {
            section: "raw",
            test,
            unit: "t/s",
            corral: median(ours),
            reference: Some(("llama-bench".into(), median(theirs))),
            target: Some(Target::AtLeast(0.97)),
        });
    }
    report.bar("modes", "empty context", "corral", median(&ours_tg));
    report.bar("modes", "empty context", "llama-bench", median(&theirs_tg));
    report.note(
        "raw",
        format!(
            "medians of {} interleaved runs; both sides: the same GGUF, {} threads, batch 512, \
             f16 KV, flash attention {flash}, weights repacked for this CPU (AMX where it has \
             it); llama-bench build {commit}, built from the llama.cpp source corral's engine \
             is built from, with its build type and flags (scripts/bench.sh). Without \
             repacking there is no corral figure: llama-cpp-2 0.1.160 cannot turn it off",
            plan.reps, plan.threads
        ),
    );
    Ok(())
}

/// A tool whose call has a long free-text argument, so a constrained reply samples many tokens
/// inside the grammar rather than having them forced.
fn message_tool() -> ToolSpec {
    ToolSpec::new(
        "send_message",
        "Sends a message to a colleague",
        serde_json::json!({"type": "object", "properties": {
            "to": {"type": "string"},
            "text": {"type": "string", "description": "the whole message"}},
            "required": ["to", "text"]}),
    )
}

/// Section 2: a reply constrained to a tool call (`tool_choice=required`) vs free generation of
/// as many tokens at the same depth, per sampled token. Pairs alternate; the first pair carries
/// the one-off costs (walking the vocabulary, compiling the grammar) and is reported apart.
///
/// # Errors
/// A failed load or generation, or a model without a chat template.
pub fn constrained(
    model: &Path,
    options: &EngineOptions,
    plan: &Plan,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut backend = load(model, options, 2048, 1)?;
    let format = format_for_model(backend.info()).map_err(anyhow::Error::msg)?;
    let conversation = Conversation::new(vec![Message::user(
        "Send Alice a message of four sentences about moving Friday's design review to Monday \
         morning, and why.",
    )])
    .with_tools(vec![message_tool()]);
    let prompt = format.render(&conversation, true)?;
    let constraint = format
        .constraint(&conversation, &ToolChoice::Required)?
        .context("the format gave no constraint for a required call")?;
    let depth = backend.tokenize(&prompt, true)?.len();
    let padded = text_of_tokens(backend.as_mut(), depth)?;
    let request = |prompt: &str, max: usize, constrained: bool| GenerateRequest {
        prompt: prompt.to_owned().into(),
        max_tokens: Some(max),
        sampling: Sampling::greedy(),
        constraint: constrained.then(|| constraint.clone()),
        ..GenerateRequest::default()
    };
    // The engine warmed up, so the first pair differs from the others only by one-off costs.
    fresh(
        backend.as_mut(),
        request(&padded, plan.constrained_tokens, false),
    )?;
    let (mut sampled_ms, mut free_ms, mut ratios, mut extra) = (vec![], vec![], vec![], vec![]);
    let (mut first_extra, mut forced, mut sampled, mut forced_ms) = (0.0, 0, 0, vec![]);
    for rep in 0..=plan.reps {
        let c = fresh(
            backend.as_mut(),
            request(&prompt, plan.constrained_tokens, true),
        )?;
        if !c.constrained {
            bail!("the constraint did not engage: nothing to measure");
        }
        let f = fresh(
            backend.as_mut(),
            request(&padded, c.generated_tokens, false),
        )?;
        if f.generated_tokens != c.generated_tokens {
            bail!(
                "free generation ended after {} of {} tokens ({:?})",
                f.generated_tokens,
                c.generated_tokens,
                f.stop
            );
        }
        let excess = (c.generate_seconds - f.generate_seconds) * 1e3;
        if rep == 0 {
            first_extra = excess;
            continue;
        }
        extra.push(excess);
        forced = c.forced_tokens;
        sampled = c.generated_tokens - c.forced_tokens;
        if sampled == 0 {
            bail!("the constrained reply sampled no token: every token was forced");
        }
        let per_sampled = (c.generate_seconds - c.forced_seconds) * 1e3 / sampled as f64;
        let per_free = f.generate_seconds * 1e3 / f.generated_tokens as f64;
        sampled_ms.push(per_sampled);
        free_ms.push(per_free);
        ratios.push(per_sampled / per_free);
        forced_ms.push(c.forced_seconds * 1e3);
    }
    report.row(Row {
        section: "constrained",
        test: format!("sampled token @ depth {depth}"),
        unit: "ms",
        corral: median(&sampled_ms),
        reference: Some(("free generation".into(), median(&free_ms))),
        target: Some(Target::AtMost(1.10)),
    });
    // Deeper in a context generation is slower than after an empty one: the free partner at
    // the same depth is the constrained bar's yardstick.
    let at = format!("depth {depth}");
    report.bar("modes", &at, "free", 1e3 / median(&free_ms));
    report.bar(
        "modes",
        &at,
        "constrained, sampled",
        1e3 / median(&sampled_ms),
    );
    report.note(
        "constrained",
        format!(
            "a send_message call (tool_choice=required, greedy): {sampled} sampled and {forced} \
             forced tokens; the forced ones were fast-forwarded in {:.1} ms (median), left out \
             of the ratio; the free partner generates as many tokens after a prompt of the same \
             length. Median of the per-pair ratios: {:.3}. One-off cost of the first \
             constrained turn (vocabulary trie, grammar): {:.0} ms",
            median(&forced_ms),
            median(&ratios),
            first_extra - median(&extra)
        ),
    );
    Ok(())
}
