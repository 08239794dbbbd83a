//! Stand-in for the llama.cpp engine in builds without the `llama` feature: every entry point
//! returns [`EngineError::Unavailable`], which tells the user how to get the real one.

use std::path::Path;

use super::{Backend, EngineError, EngineOptions};

/// Loads a model: always fails in this build.
///
/// # Errors
/// Always [`EngineError::Unavailable`].
pub fn load(
    _path: &Path,
    _options: &EngineOptions,
) -> Result<Box<dyn Backend + Send>, EngineError> {
    Err(EngineError::Unavailable)
}

/// Tokenizes with a GGUF's vocabulary: always fails in this build.
///
/// # Errors
/// Always [`EngineError::Unavailable`].
pub fn tokenize_with_vocab(_path: &Path, _text: &str) -> Result<Vec<super::Token>, EngineError> {
    Err(EngineError::Unavailable)
}

/// A GGUF file's vocabulary: cannot be loaded in this build.
pub struct Vocab(());

impl Vocab {
    /// Loads a vocabulary: always fails in this build.
    ///
    /// # Errors
    /// Always [`EngineError::Unavailable`].
    pub fn open(_path: &Path) -> Result<Vocab, EngineError> {
        Err(EngineError::Unavailable)
    }

    /// Never reached: no `Vocab` exists in this build.
    pub fn tokenize(&self, _text: &str) -> Vec<super::Token> {
        Vec::new()
    }

    /// Never reached: no `Vocab` exists in this build.
    pub fn control_tokens(&self) -> Vec<String> {
        Vec::new()
    }
}
