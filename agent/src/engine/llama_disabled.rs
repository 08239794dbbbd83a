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

/// What a streamed generation sends (the same type as the real engine's).
#[derive(Debug)]
pub enum StreamEvent {
    /// Generated text.
    Text(String),
    /// The end: what was generated, or why it failed.
    Done(Result<super::Generation, EngineError>),
}

/// Handle to a loaded model: none can exist in this build ([`LlamaEngine::load`] always
/// fails), so its methods are never reached.
#[derive(Clone)]
pub struct LlamaEngine(std::convert::Infallible);

impl LlamaEngine {
    /// Loads a model: always fails in this build.
    ///
    /// # Errors
    /// Always [`EngineError::Unavailable`].
    pub fn load(_path: &Path, _options: &EngineOptions) -> Result<LlamaEngine, EngineError> {
        Err(EngineError::Unavailable)
    }

    /// Never reached: no `LlamaEngine` exists in this build.
    ///
    /// # Errors
    /// None.
    pub fn generate_stream(
        &self,
        _request: super::GenerateRequest,
    ) -> Result<tokio::sync::mpsc::UnboundedReceiver<StreamEvent>, EngineError> {
        match self.0 {}
    }
}

impl Backend for LlamaEngine {
    fn info(&self) -> &super::ModelInfo {
        match self.0 {}
    }
    fn tokenize(&mut self, _text: &str, _special: bool) -> Result<Vec<super::Token>, EngineError> {
        match self.0 {}
    }
    fn generate(
        &mut self,
        _request: &super::GenerateRequest,
        _sink: &mut super::TextSink<'_>,
    ) -> Result<super::Generation, EngineError> {
        match self.0 {}
    }
    fn tokenize_continuation(&mut self, _text: &str) -> Result<Vec<super::Token>, EngineError> {
        match self.0 {}
    }
    fn cached_tokens(&self, _sequence: usize) -> usize {
        match self.0 {}
    }
    fn truncate_cache(&mut self, _sequence: usize, _keep: usize) -> Result<(), EngineError> {
        match self.0 {}
    }
    fn remove_tokens(
        &mut self,
        _sequence: usize,
        _range: std::ops::Range<usize>,
    ) -> Result<(), EngineError> {
        match self.0 {}
    }
    fn save_sequence(&mut self, _sequence: usize, _path: &Path) -> Result<u64, EngineError> {
        match self.0 {}
    }
    fn restore_sequence(&mut self, _sequence: usize, _path: &Path) -> Result<usize, EngineError> {
        match self.0 {}
    }
}
