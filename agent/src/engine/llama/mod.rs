//! The llama.cpp engine (crate `llama-cpp-2`).
//!
//! llama.cpp's context borrows its model, and both must stay on one thread while they are used,
//! so [`LlamaEngine`] is a handle: a dedicated engine thread owns the model and its context and
//! takes commands over a channel. Generated text streams back over a second channel while the
//! caller's thread runs its callback, and the engine waits for the callback's answer to each
//! piece before it samples again: a callback's `Break` stops generation after exactly the token
//! that carried that piece, however the threads are scheduled. A [`CancelToken`](super::CancelToken)
//! set from any thread is checked before each token. Tokenizing needs only the vocabulary: each
//! handle shares one loaded apart (vocab only) and tokenizes on its caller's thread, so it never
//! waits for the engine thread's current step.

mod constraint;
mod generation;
mod worker;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token_type::LlamaTokenAttr;
use llama_cpp_2::vocab::LlamaVocab;

use super::{Backend, EngineError, EngineOptions, GenerateRequest, Generation, ModelInfo};
use super::{TextSink, Token};
use crate::model::gguf;

/// llama.cpp's process-wide backend, initialised once and never freed.
fn backend(verbose: bool) -> Result<&'static LlamaBackend, EngineError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            if !verbose {
                llama_cpp_2::send_logs_to_tracing(
                    llama_cpp_2::LogOptions::default().with_logs_enabled(false),
                );
            }
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EngineError::Init(e.clone()))
}

/// Checks that `path` is a readable, complete GGUF file before llama.cpp sees it, so a bad
/// file gives a clear error instead of llama.cpp's log noise.
fn check_model_file(path: &Path) -> Result<gguf::GgufSummary, EngineError> {
    gguf::inspect(path).map_err(|e| EngineError::Load {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Loads a model and starts its engine thread.
///
/// # Errors
/// A missing, non-GGUF or truncated file, an unsupported `--ctx`, or llama.cpp failing to load.
pub fn load(path: &Path, options: &EngineOptions) -> Result<Box<dyn Backend + Send>, EngineError> {
    Ok(Box::new(LlamaEngine::load(path, options)?))
}

/// Tokenizes `text` with only the vocabulary of the GGUF file at `path` (a vocab-only GGUF is
/// enough); special tokens written as text are parsed, except between plain marks.
///
/// # Errors
/// A bad model file or llama.cpp failing to load its vocabulary.
pub fn tokenize_with_vocab(path: &Path, text: &str) -> Result<Vec<Token>, EngineError> {
    Ok(Vocab::open(path)?.tokenize(text))
}

/// A GGUF file's vocabulary alone (a vocab-only GGUF is enough): tokenizing without a model.
pub struct Vocab {
    model: LlamaModel,
}

impl Vocab {
    /// Loads the vocabulary of the GGUF file at `path`.
    ///
    /// # Errors
    /// A bad model file or llama.cpp failing to load its vocabulary.
    pub fn open(path: &Path) -> Result<Vocab, EngineError> {
        check_model_file(path)?;
        let backend = backend(false)?;
        let params = LlamaModelParams::default().with_vocab_only(true);
        let model =
            LlamaModel::load_from_file(backend, path, &params).map_err(|e| EngineError::Load {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        Ok(Vocab { model })
    }

    /// Token ids of `text` (no BOS added); special tokens written as text are parsed, except
    /// between plain marks.
    pub fn tokenize(&self, text: &str) -> Vec<Token> {
        prompt_token_ids(&self.model.vocab(), text)
    }

    /// Token ids of `text` as a whole prompt ([`Backend::tokenize`]): BOS first where the model
    /// wants one.
    pub fn tokenize_prompt(&self, text: &str, special: bool) -> Vec<Token> {
        whole_prompt_ids(&self.model.vocab(), text, special)
    }

    /// The spellings of its control tokens ([`super::ModelInfo::control_tokens`]).
    pub fn control_tokens(&self) -> Vec<String> {
        control_texts(&self.model.vocab())
    }
}

/// Spellings of the control tokens of `vocab` (and of its unknown token): the texts that
/// special-token parsing turns into ids no plain text can produce.
fn control_texts(vocab: &LlamaVocab<'_>) -> Vec<String> {
    vocab
        .tokens()
        .filter(|&t| vocab.is_control(t) || vocab.attr(t).contains(LlamaTokenAttr::Unknown))
        .filter_map(|t| vocab.text(t)?.to_str().ok().map(str::to_owned))
        .filter(|s| !s.is_empty())
        .collect()
}

/// Token ids of a prompt in `vocab` (no BOS added): special tokens written as text are parsed,
/// except between plain marks ([`corral_prompts::plain::segments`]).
fn prompt_token_ids(vocab: &LlamaVocab<'_>, prompt: &str) -> Vec<Token> {
    corral_prompts::plain::segments(prompt)
        .iter()
        .flat_map(|seg| token_ids(vocab, seg.text.as_bytes(), seg.special))
        .collect()
}

/// Token ids of `text` as a whole prompt in `vocab`: special tokens written as text are parsed
/// when `special` is true (except between plain marks; plain marks are dropped otherwise), and
/// BOS comes first where the model wants one.
fn whole_prompt_ids(vocab: &LlamaVocab<'_>, text: &str, special: bool) -> Vec<Token> {
    let mut tokens = if special {
        prompt_token_ids(vocab, text)
    } else {
        token_ids(vocab, corral_prompts::plain::unmark(text).as_bytes(), false)
    };
    let bos = vocab.bos().0;
    if vocab.should_add_bos() && bos >= 0 && tokens.first() != Some(&bos) {
        tokens.insert(0, bos);
    }
    tokens
}

/// Token ids of `bytes` in `vocab`, without adding BOS; special tokens written as text are
/// parsed when `parse_special` is true.
fn token_ids(vocab: &LlamaVocab<'_>, bytes: &[u8], parse_special: bool) -> Vec<Token> {
    vocab
        .tokenize(bytes, false, parse_special)
        .into_iter()
        .map(|t| t.0)
        .collect()
}

/// Commands the engine thread understands.
enum Command {
    Generate {
        request: GenerateRequest,
        sink: Sink,
    },
    Truncate {
        sequence: usize,
        keep: usize,
        reply: mpsc::Sender<Result<(), EngineError>>,
    },
    Remove {
        sequence: usize,
        range: Range<usize>,
        reply: mpsc::Sender<Result<(), EngineError>>,
    },
    Save {
        sequence: usize,
        path: PathBuf,
        reply: mpsc::Sender<Result<u64, EngineError>>,
    },
    Restore {
        sequence: usize,
        path: PathBuf,
        reply: mpsc::Sender<Result<usize, EngineError>>,
    },
}

impl Command {
    /// The sequence whose cache the command reads or changes, if any.
    fn sequence(&self) -> Option<usize> {
        match self {
            Command::Generate { request, .. } => Some(request.sequence),
            Command::Truncate { sequence, .. }
            | Command::Remove { sequence, .. }
            | Command::Save { sequence, .. }
            | Command::Restore { sequence, .. } => Some(*sequence),
        }
    }
}

/// Where the engine thread sends a generation's text and result.
enum Sink {
    /// A blocking caller's callback: the engine waits for its answer to each piece (`true` to
    /// go on), so a `Break` stops after exactly the token that carried that piece.
    Lockstep {
        events: mpsc::Sender<Event>,
        proceed: mpsc::Receiver<bool>,
    },
    /// An async caller ([`LlamaEngine::generate_stream`]): pieces go out without waiting;
    /// generation stops before the next token once the receiver is dropped.
    Stream(tokio::sync::mpsc::UnboundedSender<StreamEvent>),
}

impl Sink {
    /// Sends a piece; `false` stops generation.
    fn text(&mut self, piece: &str) -> bool {
        match self {
            Sink::Lockstep { events, proceed } => {
                events.send(Event::Text(piece.to_owned())).is_ok()
                    && proceed.recv().unwrap_or(false)
            }
            Sink::Stream(events) => events.send(StreamEvent::Text(piece.to_owned())).is_ok(),
        }
    }

    fn done(self, result: Result<Generation, EngineError>) {
        match self {
            Sink::Lockstep { events, .. } => {
                let _ = events.send(Event::Done(result));
            }
            Sink::Stream(events) => {
                let _ = events.send(StreamEvent::Done(result));
            }
        }
    }
}

/// What the engine thread sends back to a blocking caller while generating.
enum Event {
    /// A piece of text; the engine waits for an answer on `proceed` before going on.
    Text(String),
    Done(Result<Generation, EngineError>),
}

/// What a streamed generation ([`LlamaEngine::generate_stream`]) sends.
#[derive(Debug)]
pub enum StreamEvent {
    /// Generated text, in whole characters.
    Text(String),
    /// The end: what was generated, or why it failed. Always the last event.
    Done(Result<Generation, EngineError>),
}

/// Handle to a model loaded by llama.cpp, running on its own thread.
///
/// Cheap to clone and `Send`: every clone talks to the same engine thread. Generations on
/// different sequences ([`GenerateRequest::sequence`]) run at once, their tokens decoded together
/// one step at a time (continuous batching); requests for a sequence that is generating wait
/// for it, in order. Conversations that generate through different clones keep their caches
/// apart by using different sequences. Each request
/// has its own cancellation ([`GenerateRequest::cancel`], or the callback's `Break`, or dropping
/// a stream's receiver); none reaches another request.
#[derive(Clone)]
pub struct LlamaEngine {
    commands: mpsc::Sender<Command>,
    info: Arc<ModelInfo>,
    cached: Arc<Vec<AtomicUsize>>,
    /// The model's vocabulary, loaded apart: callers tokenize on their own threads, without
    /// waiting for the engine thread's current step (as llama-server tokenizes on its HTTP
    /// threads).
    vocab: Arc<Vocab>,
}

impl LlamaEngine {
    /// Loads the model at `path` with `options` and starts the engine thread.
    ///
    /// # Errors
    /// As [`load`].
    pub fn load(path: &Path, options: &EngineOptions) -> Result<Self, EngineError> {
        options.validate()?;
        let summary = check_model_file(path)?;
        let backend = backend(options.verbose)?;
        let (commands, inbox) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let cached: Arc<Vec<AtomicUsize>> = Arc::new(
            (0..options.sequences.max(1))
                .map(|_| AtomicUsize::new(0))
                .collect(),
        );
        let worker_cached = Arc::clone(&cached);
        let path_for_vocab = path.to_path_buf();
        let path = path.to_path_buf();
        let options = options.clone();
        std::thread::Builder::new()
            .name("corral-llama".into())
            .spawn(move || {
                worker::run(
                    backend,
                    &path,
                    &summary,
                    &options,
                    ready_tx,
                    inbox,
                    worker_cached,
                );
            })
            .map_err(EngineError::Thread)?;
        let info = ready_rx.recv().map_err(|_| EngineError::EngineGone)??;
        Ok(Self {
            commands,
            info: Arc::new(info),
            cached,
            vocab: Arc::new(Vocab::open(&path_for_vocab)?),
        })
    }

    /// Starts a generation and returns its events at once, for async callers (tokio): text
    /// pieces, then [`StreamEvent::Done`]. Dropping the receiver cancels the generation.
    ///
    /// # Errors
    /// Bad sampling options, or an engine that stopped.
    pub fn generate_stream(
        &self,
        request: GenerateRequest,
    ) -> Result<tokio::sync::mpsc::UnboundedReceiver<StreamEvent>, EngineError> {
        request.sampling.validate()?;
        let (events, stream) = tokio::sync::mpsc::unbounded_channel();
        self.send(Command::Generate {
            request,
            sink: Sink::Stream(events),
        })?;
        Ok(stream)
    }

    fn send(&self, command: Command) -> Result<(), EngineError> {
        self.commands
            .send(command)
            .map_err(|_| EngineError::EngineGone)
    }

    /// Sends a command built around a reply channel and waits for the reply.
    fn ask<T>(&self, command: impl FnOnce(mpsc::Sender<T>) -> Command) -> Result<T, EngineError> {
        let (reply, answer) = mpsc::channel();
        self.send(command(reply))?;
        answer.recv().map_err(|_| EngineError::EngineGone)
    }
}

impl Backend for LlamaEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn share(&self) -> Option<Box<dyn Backend + Send>> {
        Some(Box::new(self.clone()))
    }

    fn tokenize(&mut self, text: &str, special: bool) -> Result<Vec<Token>, EngineError> {
        Ok(self.vocab.tokenize_prompt(text, special))
    }

    fn tokenize_continuation(&mut self, text: &str) -> Result<Vec<Token>, EngineError> {
        Ok(self.vocab.tokenize(text))
    }

    fn generate(
        &mut self,
        request: &GenerateRequest,
        sink: &mut TextSink<'_>,
    ) -> Result<Generation, EngineError> {
        request.sampling.validate()?;
        let (events, stream) = mpsc::channel();
        let (answers, proceed) = mpsc::channel();
        self.send(Command::Generate {
            request: request.clone(),
            sink: Sink::Lockstep { events, proceed },
        })?;
        for event in stream {
            match event {
                Event::Text(text) => {
                    // The engine thread is gone if this fails; the stream then ends below.
                    let _ = answers.send(sink(&text).is_continue());
                }
                Event::Done(result) => return result,
            }
        }
        Err(EngineError::EngineGone)
    }

    fn cached_tokens(&self, sequence: usize) -> usize {
        self.cached
            .get(sequence)
            .map_or(0, |held| held.load(Ordering::SeqCst))
    }

    fn truncate_cache(&mut self, sequence: usize, keep: usize) -> Result<(), EngineError> {
        self.ask(|reply| Command::Truncate {
            sequence,
            keep,
            reply,
        })?
    }

    fn remove_tokens(&mut self, sequence: usize, range: Range<usize>) -> Result<(), EngineError> {
        self.ask(|reply| Command::Remove {
            sequence,
            range,
            reply,
        })?
    }

    fn save_sequence(&mut self, sequence: usize, path: &Path) -> Result<u64, EngineError> {
        self.ask(|reply| Command::Save {
            sequence,
            path: path.to_path_buf(),
            reply,
        })?
    }

    fn restore_sequence(&mut self, sequence: usize, path: &Path) -> Result<usize, EngineError> {
        self.ask(|reply| Command::Restore {
            sequence,
            path: path.to_path_buf(),
            reply,
        })?
    }
}
