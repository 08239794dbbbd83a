//! The inference engine seam.
//!
//! Everything that produces tokens sits behind [`Backend`]: the llama.cpp implementation
//! ([`llama`], behind the `llama` cargo feature) and [`ScriptedBackend`], a test double that
//! replays canned replies and records the prompts it was given. The agent loop only ever talks to
//! the trait, so it tests without the C++ build.
//!
//! Prompts are text with special tokens written out (`<|eot_id|>`); a backend tokenizes them with
//! special-token parsing, except inside the plain marks of [`corral_prompts::plain`], which keep
//! untrusted text (tool results, user text, tool descriptions) from becoming control tokens. Generation streams text through a callback in whole characters
//! ([`PieceDecoder`]), stops on every end-of-generation token the model declares, on caller-given
//! stop strings and token ids, on a token budget, on a full context or on cancellation, and says
//! which in [`StopReason`].
//!
//! KV-cache prefix reuse: a backend remembers which tokens each sequence's cache holds. A new
//! prompt that starts with those tokens only evaluates what is new ([`Generation::reused_tokens`]
//! tells how many were reused; on the CPU a short continuation may take a few cached tokens
//! before it along, to 64 rows, where flash attention's tiled path makes that cheaper). A conversation keeps its exact ids ([`Prompt::Tokens`]: what it
//! was fed plus [`Generation::tokens`]), so what the model wrote is never re-tokenized into other
//! ids that would end the reuse early.
//!
//! Several conversations share one loaded model through sequences ([`ModelInfo::sequences`],
//! [`GenerateRequest::sequence`]); each has its own window of [`ModelInfo::context_tokens`].
//! [`SequencePool`] hands them out, least recently used first, when there are more conversations
//! than sequences. [`Backend::remove_tokens`] drops a range and shifts what follows (memory's
//! eviction), and [`Backend::save_sequence`] / [`Backend::restore_sequence`] keep a
//! conversation's state in a file.

#[cfg(feature = "llama")]
pub mod llama;
#[cfg(not(feature = "llama"))]
#[path = "llama_disabled.rs"]
pub mod llama;
mod options;
mod scripted;
mod sequences;
mod stop;
mod utf8;
mod watched;

use std::ops::ControlFlow;

use corral_prompts::ToolConstraint;

pub use options::{
    available_memory_bytes, choose_context, EngineOptions, FlashAttention, KvType, OptionError,
    MAX_CONTEXT_TOKENS, MAX_SEQUENCES,
};
pub use scripted::{ScriptedBackend, ScriptedReply};
pub use sequences::SequencePool;
pub use stop::{StopMatcher, StopScan};
pub use utf8::PieceDecoder;
pub use watched::{Watched, Watcher};

/// A token id in the model's vocabulary.
pub type Token = i32;

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// Softmax temperature; `0.0` means greedy (always the most likely token).
    pub temperature: f32,
    /// Nucleus sampling mass (1.0 disables it).
    pub top_p: f32,
    /// Keep only the k most likely tokens (0 disables it).
    pub top_k: i32,
    /// Seed of the random sampler, for reproducible runs.
    pub seed: u32,
    /// Penalty on tokens seen in the last 64 (1.0 disables it). Small models loop without it.
    pub repeat_penalty: f32,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 0.7,
            top_p: 0.9,
            top_k: 40,
            seed: 0x00c0_88a1,
            repeat_penalty: 1.1,
        }
    }
}

impl Sampling {
    /// Greedy decoding: deterministic for a given model, prompt and build.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Whether this samples greedily.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }
}

/// Cancels a running generation (or a turn, or a tool call) from any thread: one type for the
/// whole workspace, from the tool seam.
pub use corral_tools::CancelToken;

/// What a generation continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// Text with special tokens written out; stretches between plain marks are tokenized as
    /// plain text ([`corral_prompts::plain`]). The backend adds BOS when the model wants one.
    Text(String),
    /// Exact token ids (BOS included if wanted), fed as they are: what a conversation was fed
    /// and sampled before, plus the tokens of what was rendered since. Never re-tokenized.
    Tokens(Vec<Token>),
}

impl Prompt {
    /// The text of a [`Prompt::Text`].
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Prompt::Text(text) => Some(text),
            Prompt::Tokens(_) => None,
        }
    }
}

impl Default for Prompt {
    fn default() -> Self {
        Prompt::Text(String::new())
    }
}

impl From<String> for Prompt {
    fn from(text: String) -> Self {
        Prompt::Text(text)
    }
}

impl From<&str> for Prompt {
    fn from(text: &str) -> Self {
        Prompt::Text(text.to_owned())
    }
}

impl From<Vec<Token>> for Prompt {
    fn from(tokens: Vec<Token>) -> Self {
        Prompt::Tokens(tokens)
    }
}

/// One generation request.
#[derive(Debug, Clone, Default)]
pub struct GenerateRequest {
    /// The full prompt (text or exact ids).
    pub prompt: Prompt,
    /// Which conversation's KV cache to use, below [`ModelInfo::sequences`] (default 0).
    pub sequence: usize,
    /// Upper bound on generated tokens (`None`: until the context is full).
    pub max_tokens: Option<usize>,
    /// How to pick tokens.
    pub sampling: Sampling,
    /// Stop when the output contains one of these (the stop string is not emitted).
    pub stop_strings: Vec<String>,
    /// Stop when one of these token ids is sampled, besides the model's own end-of-generation
    /// tokens.
    pub stop_tokens: Vec<Token>,
    /// Stops generation when cancelled.
    pub cancel: CancelToken,
    /// Keeps tool calls valid (a grammar that engages on a trigger, or from the first token).
    pub constraint: Option<ToolConstraint>,
}

/// Why generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced one of its end-of-generation tokens (text of the token, e.g.
    /// `<|eot_id|>` or `<|eom_id|>`).
    EndOfGeneration(String),
    /// A caller-given stop string matched.
    StopString(String),
    /// A caller-given stop token was sampled.
    StopToken(Token),
    /// `max_tokens` were generated.
    MaxTokens,
    /// The context window is full.
    ContextFull,
    /// The caller cancelled (token or callback).
    Cancelled,
}

/// What a finished generation produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// All text emitted through the callback, concatenated.
    pub text: String,
    /// The ids the model produced, in order: those whose text is in `text`, then the
    /// end-of-generation token when it stopped on one. With the prompt's ids, this is exactly
    /// what a following prompt of the same conversation starts with.
    pub tokens: Vec<Token>,
    /// Why it stopped.
    pub stop: StopReason,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens that were already in the KV cache and not evaluated again (cached tokens
    /// a short continuation took along to 64 rows are not counted).
    pub reused_tokens: usize,
    /// Tokens generated (sampled), including a final end-of-generation token.
    pub generated_tokens: usize,
    /// Seconds spent evaluating the prompt.
    pub prompt_seconds: f64,
    /// Seconds spent generating.
    pub generate_seconds: f64,
    /// Of `generated_tokens`, those a constraint forced (fast-forwarded in one batch per run,
    /// not sampled).
    pub forced_tokens: usize,
    /// Of `generate_seconds`, the time spent finding and evaluating forced tokens.
    pub forced_seconds: f64,
    /// Whether the request's constraint engaged (it stays off while a lazy one sees no trigger).
    pub constrained: bool,
}

/// Static facts about the loaded model and context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// Human-readable name (GGUF `general.name`, else the file name).
    pub name: String,
    /// Context window of each conversation (sequence) in tokens.
    pub context_tokens: usize,
    /// Conversations that keep their own KV cache at once ([`GenerateRequest::sequence`]).
    pub sequences: usize,
    /// Context length the model was trained with.
    pub trained_context_tokens: usize,
    /// The chat template embedded in the GGUF file, if any.
    pub chat_template: Option<String>,
    /// Spellings of the model's control tokens (what special-token parsing turns into control
    /// ids). Untrusted text is marked against them so it stays plain ([`corral_prompts::plain`]).
    pub control_tokens: Vec<String>,
    /// Bytes the KV cache takes, all sequences, keys and values (0 when there is none).
    pub kv_cache_bytes: u64,
}

/// Errors from an inference backend.
///
/// Two families, told apart by [`EngineError::is_usage`]: mistakes in what the caller asked for
/// (a bad option, a prompt that is empty or does not fit), which the caller can fix and the CLI
/// reports with exit code 2; and failures of the model file, llama.cpp or the machine, which it
/// reports with exit code 1.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// An option is out of range, conflicts with another or does not fit this model.
    #[error(transparent)]
    Option(#[from] OptionError),
    /// The prompt does not fit into the context window.
    #[error(
        "prompt is {prompt} tokens but the context holds {context}: shorten it or raise --ctx"
    )]
    PromptTooLong {
        /// Prompt tokens.
        prompt: usize,
        /// Context size.
        context: usize,
    },
    /// The prompt has no tokens.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// The model file could not be loaded.
    #[error("cannot load model {path}: {reason}")]
    Load {
        /// The model file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// llama.cpp's backend could not be initialised.
    #[error("cannot initialise llama.cpp: {0}")]
    Init(String),
    /// The engine thread could not be started.
    #[error("cannot start the engine thread: {0}")]
    Thread(#[source] std::io::Error),
    /// llama.cpp could not create a context of this size (usually: not enough memory).
    #[error("cannot create a {tokens}-token context: {reason}")]
    Context {
        /// Context size asked for.
        tokens: u32,
        /// llama.cpp's reason.
        reason: String,
    },
    /// Evaluating tokens (`llama_decode`, or filling its batch) failed.
    #[error("llama_decode failed: {0}")]
    Decode(String),
    /// The KV cache could not be trimmed.
    #[error("cannot trim the KV cache: {0}")]
    Cache(String),
    /// A token-id prompt holds an id outside the vocabulary.
    #[error("the prompt holds token id {token}, outside this model's vocabulary of {vocab}")]
    BadToken {
        /// The id.
        token: Token,
        /// Vocabulary size.
        vocab: i32,
    },
    /// A request named a sequence the engine does not have.
    #[error("sequence {sequence} does not exist: this engine keeps {sequences}")]
    NoSuchSequence {
        /// Asked for.
        sequence: usize,
        /// Sequences it has.
        sequences: usize,
    },
    /// A token range to remove is out of bounds.
    #[error("cannot remove tokens {start}..{end} of a sequence that holds {len}")]
    BadRange {
        /// Range start.
        start: usize,
        /// Range end.
        end: usize,
        /// Tokens held.
        len: usize,
    },
    /// A sequence's state could not be saved or restored.
    #[error("cannot {action} sequence state {path}: {reason}")]
    State {
        /// `save` or `restore`.
        action: &'static str,
        /// The state file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A tool-call constraint could not be prepared or followed.
    #[error("tool-call constraint failed: {0}")]
    Constraint(String),
    /// A [`ScriptedBackend`] was asked for more replies than it was given.
    #[error("scripted backend has no replies left")]
    ScriptExhausted,
    /// This build has no llama.cpp engine.
    #[error("this corral was built without the llama.cpp engine: rebuild with `--features llama`")]
    Unavailable,
    /// The engine thread is gone (it panicked or was shut down).
    #[error("the inference engine stopped unexpectedly")]
    EngineGone,
}

impl EngineError {
    /// Whether this is a mistake in what the caller asked for (an option, the prompt) rather
    /// than a failure of the model file, llama.cpp or the machine.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            EngineError::Option(_)
                | EngineError::PromptTooLong { .. }
                | EngineError::EmptyPrompt
                | EngineError::BadToken { .. }
                | EngineError::NoSuchSequence { .. }
                | EngineError::BadRange { .. }
        )
    }
}

/// Receives generated text as it is produced; `Break` cancels the generation.
pub type TextSink<'a> = dyn FnMut(&str) -> ControlFlow<()> + 'a;

/// An inference backend: tokenization, streaming generation and a reusable KV cache.
pub trait Backend {
    /// Facts about the loaded model.
    fn info(&self) -> &ModelInfo;

    /// Token ids of `text`; special tokens written as text are parsed when `special` is true,
    /// except between plain marks ([`corral_prompts::plain::segments`]).
    ///
    /// # Errors
    /// When the backend cannot tokenize (e.g. the engine stopped).
    fn tokenize(&mut self, text: &str, special: bool) -> Result<Vec<Token>, EngineError>;

    /// Generates a continuation of `request.prompt`, streaming text into `sink`.
    ///
    /// Reuses the longest prefix of the prompt already in the KV cache. When `sink` returns
    /// `Break`, generation stops before the next token is sampled ([`StopReason::Cancelled`]);
    /// the text `sink` was given is part of [`Generation::text`] and of the cache.
    ///
    /// # Errors
    /// Bad sampling options, a prompt that is empty or does not fit ([`EngineError::is_usage`]),
    /// or a failed evaluation.
    fn generate(
        &mut self,
        request: &GenerateRequest,
        sink: &mut TextSink<'_>,
    ) -> Result<Generation, EngineError>;

    /// Token ids of `text` that follows other tokens of a prompt: special tokens written as
    /// text are parsed except between plain marks, and no BOS is added.
    ///
    /// # Errors
    /// As [`Backend::tokenize`].
    fn tokenize_continuation(&mut self, text: &str) -> Result<Vec<Token>, EngineError>;

    /// Tokens currently held in the KV cache of `sequence` (0 for one it does not have).
    fn cached_tokens(&self, sequence: usize) -> usize;

    /// Keeps the first `keep` tokens of `sequence`'s KV cache and drops the rest.
    ///
    /// # Errors
    /// An unknown sequence, or a cache that cannot be trimmed.
    fn truncate_cache(&mut self, sequence: usize, keep: usize) -> Result<(), EngineError>;

    /// Removes tokens `range` from `sequence`'s KV cache and shifts the positions of those after
    /// it down, so they stay cached (llama.cpp's `seq_rm` + `seq_add`, as its context shift does).
    /// A prompt that equals the old one without `range` then reuses everything.
    ///
    /// # Errors
    /// An unknown sequence, a range outside the cache, or llama.cpp refusing.
    fn remove_tokens(
        &mut self,
        sequence: usize,
        range: std::ops::Range<usize>,
    ) -> Result<(), EngineError>;

    /// Writes `sequence`'s KV state and tokens to `path`; returns the bytes written.
    ///
    /// # Errors
    /// An unknown sequence or a failed write.
    fn save_sequence(
        &mut self,
        sequence: usize,
        path: &std::path::Path,
    ) -> Result<u64, EngineError>;

    /// Replaces `sequence`'s KV cache with the state saved at `path` (by this model); returns
    /// the tokens it holds.
    ///
    /// # Errors
    /// An unknown sequence, or a file that is missing, corrupt or from another model (the
    /// sequence is then empty).
    fn restore_sequence(
        &mut self,
        sequence: usize,
        path: &std::path::Path,
    ) -> Result<usize, EngineError>;

    /// Another handle to this same loaded model that may generate at the same time as this one,
    /// on another sequence (the server gives one to each request in flight); `None` when the
    /// backend serves one caller at a time.
    fn share(&self) -> Option<Box<dyn Backend + Send>> {
        None
    }
}

/// Length of the common prefix of two token sequences.
pub fn common_prefix(a: &[Token], b: &[Token]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Runs `generate` and collects the text, for callers that do not stream.
///
/// # Errors
/// As [`Backend::generate`].
pub fn generate_to_string(
    backend: &mut dyn Backend,
    request: &GenerateRequest,
) -> Result<Generation, EngineError> {
    backend.generate(request, &mut |_| ControlFlow::Continue(()))
}
