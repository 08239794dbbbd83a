//! Opening a backend for the command line: which model file, pulled if it is the default one,
//! loaded with the user's options, and Ctrl-C wired to cancellation. Part of the CLI: the
//! library modules never depend on it.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::Context;

use super::{GlobalOpts, UsageError};
use crate::engine::{self, Backend, CancelToken};
use crate::model::{self, ModelStore};

/// Resolves `--model`: an existing path, else a cached model name; without it, the default
/// model, pulled first if it is not cached yet.
///
/// # Errors
/// A path that does not exist and is no cached name, or a failed pull.
pub fn resolve_model(global: &GlobalOpts) -> anyhow::Result<PathBuf> {
    let store = ModelStore::from_env();
    match &global.model {
        Some(path) if path.exists() => Ok(path.clone()),
        Some(path) => {
            let as_name = path.to_string_lossy();
            if let Some(cached) = store.get(&as_name) {
                return Ok(cached.path);
            }
            if let Some(source) = model::known_source(&as_name) {
                eprintln!("{as_name} is not cached yet: pulling it");
                let cached = store
                    .pull(&source, std::io::stderr().is_terminal())
                    .with_context(|| format!("cannot pull {as_name}"))?;
                return Ok(cached.path);
            }
            Err(UsageError::new(format!(
                "model file {} does not exist (and no cached or known model has that name): \
                 check the path, or see `corral model list`; known models: {}",
                path.display(),
                model::known_sources()
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .into())
        }
        None => {
            if let Some(cached) = store.get(model::DEFAULT_MODEL) {
                return Ok(cached.path);
            }
            eprintln!("the default model is not cached yet: pulling it (about 93 MB)");
            let cached = store
                .pull(&model::default_source(), std::io::stderr().is_terminal())
                .context("cannot pull the default model")?;
            Ok(cached.path)
        }
    }
}

/// Loads the model chosen by the flags; the flags are checked before the model is resolved
/// (or pulled).
///
/// # Errors
/// Bad flags (as [`UsageError`]), a bad model file, or llama.cpp failing to load it (an
/// [`engine::EngineError`]: a `--ctx` the model cannot take is a usage mistake, see
/// [`engine::EngineError::is_usage`]).
pub fn open_backend(global: &GlobalOpts) -> anyhow::Result<Box<dyn Backend + Send>> {
    global.engine_options()?;
    let path = resolve_model(global)?;
    open_backend_at(global, &path)
}

/// The llama.cpp engine itself, with `sequences` KV sequences: a handle per thread generates on
/// its own sequence, and the engine decodes them together.
///
/// # Errors
/// As [`open_backend`].
pub fn open_engine(
    global: &GlobalOpts,
    sequences: u32,
) -> anyhow::Result<engine::llama::LlamaEngine> {
    let mut options = global.engine_options()?;
    options.sequences = sequences;
    options.validate()?;
    let path = resolve_model(global)?;
    options.show_progress = std::io::stderr().is_terminal();
    Ok(engine::llama::LlamaEngine::load(&path, &options)?)
}

/// Loads the model file at `path` with the flags' options (a progress bar on a terminal).
///
/// # Errors
/// As [`open_backend`].
pub fn open_backend_at(
    global: &GlobalOpts,
    path: &std::path::Path,
) -> anyhow::Result<Box<dyn Backend + Send>> {
    let mut options = global.engine_options()?;
    options.show_progress = std::io::stderr().is_terminal();
    Ok(engine::llama::load(path, &options)?)
}

/// A cancel token that Ctrl-C sets (the handler is installed once per process).
pub fn cancel_on_ctrl_c() -> CancelToken {
    static TOKEN: OnceLock<CancelToken> = OnceLock::new();
    TOKEN
        .get_or_init(|| {
            let token = CancelToken::new();
            let handler_token = token.clone();
            // Without a handler Ctrl-C simply ends the process, which is an acceptable fallback.
            let _ = ctrlc::set_handler(move || handler_token.cancel());
            token
        })
        .clone()
}
