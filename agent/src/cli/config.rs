//! `corral config show|path`: the effective configuration and where each value came from.

use clap::Subcommand;

use super::GlobalOpts;
use crate::config::{decision_word, Source, Sourced, KEYS};

/// Subcommands of `corral config`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print every setting, its value and where it came from (flag, env, file:line, default).
    Show,
    /// Print the config file's path (whether or not it exists).
    Path,
}

/// Runs a `corral config` subcommand; `global` holds the flags as given (before the config
/// filled them in) and the loaded config.
///
/// # Errors
/// None today; the signature matches the other subcommands.
pub fn run(command: ConfigCommand, global: &GlobalOpts) -> anyhow::Result<()> {
    let config = &global.config;
    match command {
        ConfigCommand::Path => println!("{}", config.path.display()),
        ConfigCommand::Show => {
            println!(
                "# {} ({})",
                config.path.display(),
                if config.found { "read" } else { "not present" }
            );
            for line in show_lines(global) {
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// One line per setting: `key = value    # source`, values in TOML syntax.
pub fn show_lines(global: &GlobalOpts) -> Vec<String> {
    let config = &global.config;
    fn pick<T: Clone>(
        flag: Option<T>,
        name: &'static str,
        set: &Option<Sourced<T>>,
    ) -> Option<(T, Source)> {
        match (flag, set) {
            (Some(v), _) => Some((v, Source::Flag(name))),
            (None, Some(s)) => Some((s.value.clone(), s.from.clone())),
            (None, None) => None,
        }
    }
    let quoted = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let defaults = crate::engine::Sampling::default();
    let mut rows: Vec<(&str, String, Source)> = Vec::new();
    let mut row = |key, value: Option<(String, Source)>, default: String| match value {
        Some((v, from)) => rows.push((key, v, from)),
        None => rows.push((key, default, Source::Default)),
    };
    row(
        "model",
        pick(
            global.model.as_ref().map(|p| p.display().to_string()),
            "--model",
            &config.model,
        )
        .map(|(v, s)| (quoted(&v), s)),
        quoted(crate::model::DEFAULT_MODEL),
    );
    row(
        "ctx",
        pick(global.ctx, "--ctx", &config.ctx).map(|(v, s)| (v.to_string(), s)),
        "\"the model's training context, capped to fit memory\"".into(),
    );
    row(
        "threads",
        pick(global.threads, "--threads", &config.threads).map(|(v, s)| (v.to_string(), s)),
        crate::engine::EngineOptions::default().threads.to_string(),
    );
    row(
        "temperature",
        pick(global.temperature, "--temperature", &config.temperature)
            .map(|(v, s)| (v.to_string(), s)),
        format!("{} (corral run: 0)", defaults.temperature),
    );
    row(
        "top_p",
        pick(global.top_p, "--top-p", &config.top_p).map(|(v, s)| (v.to_string(), s)),
        defaults.top_p.to_string(),
    );
    row(
        "top_k",
        pick(global.top_k, "--top-k", &config.top_k).map(|(v, s)| (v.to_string(), s)),
        defaults.top_k.to_string(),
    );
    row(
        "seed",
        pick(global.seed, "--seed", &config.seed).map(|(v, s)| (v.to_string(), s)),
        defaults.seed.to_string(),
    );
    row(
        "repeat_penalty",
        pick(
            global.repeat_penalty,
            "--repeat-penalty",
            &config.repeat_penalty,
        )
        .map(|(v, s)| (v.to_string(), s)),
        defaults.repeat_penalty.to_string(),
    );
    row(
        "system",
        config
            .system
            .as_ref()
            .map(|s| (quoted(&s.value), s.from.clone())),
        "\"\" (none)".into(),
    );
    row(
        "max_steps",
        config
            .max_steps
            .as_ref()
            .map(|s| (s.value.to_string(), s.from.clone())),
        super::run::DEFAULT_MAX_STEPS.to_string(),
    );
    row(
        "max_tokens",
        config
            .max_tokens
            .as_ref()
            .map(|s| (s.value.to_string(), s.from.clone())),
        "\"a quarter of the context, at most 1024\"".into(),
    );
    row(
        "plugin_dir",
        config
            .plugin_dir
            .as_ref()
            .map(|s| (quoted(&s.value.display().to_string()), s.from.clone())),
        "\"the data folder's corral/plugins\"".into(),
    );
    debug_assert_eq!(rows.len(), KEYS.len());
    let mut lines: Vec<String> = rows
        .into_iter()
        .map(|(k, v, from)| format!("{:<32} # {from}", format!("{k} = {v}")))
        .collect();
    lines.push(String::new());
    lines.push("[tools]".into());
    lines.push(match &config.default_policy {
        Some(d) => format!(
            "{:<32} # {}",
            format!("default = \"{}\"", decision_word(d.value)),
            d.from
        ),
        None => format!(
            "{:<32} # default (tools of builtin plugins: allow)",
            "default = \"ask\""
        ),
    });
    for (name, d) in &config.policy {
        lines.push(format!(
            "{:<32} # {}",
            format!("policy.{name} = \"{}\"", decision_word(d.value)),
            d.from
        ));
    }
    for id in config.grants.keys() {
        lines.push(format!("[grants.{id}]  # {}", config.path.display()));
    }
    lines
}
