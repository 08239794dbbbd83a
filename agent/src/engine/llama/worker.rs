//! The engine thread: owns the llama.cpp model and context and serves [`Command`]s.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use llama_cpp_2::context::kv_cache::KvCacheConversionError;
use llama_cpp_2::context::params::{KvCacheType, LlamaContextParams};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

use super::constraint::GrammarFactory;
use super::generation::{attention_scale, busy, Active};
use super::{whole_prompt_ids, Command};
use crate::engine::options::{available_memory_bytes, choose_context};
use crate::engine::{EngineError, EngineOptions, KvType, ModelInfo, Sampling, Token};
use crate::model::gguf::GgufSummary;

/// Entry point of the engine thread: load, report readiness, then serve commands until every
/// handle is dropped.
pub(super) fn run(
    backend: &'static LlamaBackend,
    path: &Path,
    summary: &GgufSummary,
    options: &EngineOptions,
    ready: mpsc::Sender<Result<ModelInfo, EngineError>>,
    inbox: mpsc::Receiver<Command>,
    cached: Arc<Vec<AtomicUsize>>,
) {
    let model = match load_model(backend, path, options) {
        Ok(model) => model,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let (ctx, info) = match new_context(backend, &model, summary, options) {
        Ok(pair) => pair,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    if ready.send(Ok(info)).is_err() {
        return;
    }
    let sequences = options.sequences.max(1) as usize;
    let mut session = Session {
        model: &model,
        window: ctx.n_ctx() as usize / sequences,
        ctx,
        caches: vec![Vec::new(); sequences],
        batch_size: options.batch.max(1) as usize,
        cached,
        batch: LlamaBatch::new(options.batch.max(1) as usize, 1),
        grammar_factory: None,
        // On the CPU, flash attention is on unless turned off (llama.cpp's `auto` picks it).
        tiled_attention_scale: (options.gpu_layers == 0
            && options.flash_attention.resolve() != Some(false))
        .then(|| {
            attention_scale(
                model.n_layer(),
                model.n_embd().unsigned_abs(),
                model.n_params(),
            )
        }),
    };
    let mut actives: Vec<Active> = Vec::new();
    // Commands for a sequence a generation is using wait until it is done, in order.
    let mut deferred: VecDeque<Command> = VecDeque::new();
    let mut open = true;
    loop {
        // Idle: wait for work. Generating: take what has arrived, then step.
        let next = if actives.is_empty() && deferred.is_empty() {
            match inbox.recv() {
                Ok(command) => Some(command),
                Err(_) => break,
            }
        } else if open {
            match inbox.try_recv() {
                Ok(command) => Some(command),
                Err(mpsc::TryRecvError::Empty) => None,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    None
                }
            }
        } else {
            None
        };
        if let Some(command) = next {
            if must_wait(&command, &actives, &deferred) {
                deferred.push_back(command);
            } else {
                session.serve(command, &mut actives);
            }
            continue;
        }
        if actives.is_empty() && deferred.is_empty() {
            break;
        }
        session.step(&mut actives);
        // What waited for a sequence that is free now, oldest first.
        let waiting = std::mem::take(&mut deferred);
        for command in waiting {
            if must_wait(&command, &actives, &deferred) {
                deferred.push_back(command);
            } else {
                session.serve(command, &mut actives);
            }
        }
    }
}

/// Whether `command` must wait: its sequence is generating, or an earlier command for it is
/// waiting already (commands for one sequence keep their order).
fn must_wait(command: &Command, actives: &[Active], deferred: &VecDeque<Command>) -> bool {
    command.sequence().is_some_and(|sequence| {
        busy(actives, sequence) || deferred.iter().any(|c| c.sequence() == Some(sequence))
    })
}

fn load_model(
    backend: &LlamaBackend,
    path: &Path,
    options: &EngineOptions,
) -> Result<LlamaModel, EngineError> {
    let mut params = LlamaModelParams::default().with_n_gpu_layers(options.gpu_layers);
    if options.show_progress {
        let bar = indicatif::ProgressBar::new(100).with_style(
            indicatif::ProgressStyle::with_template("loading model {bar:30} {percent:>3}%")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        params = params.with_progress_callback(move |progress| {
            bar.set_position((progress * 100.0) as u64);
            if progress >= 1.0 {
                bar.finish_and_clear();
            }
            true
        });
    }
    LlamaModel::load_from_file(backend, path, &params).map_err(|e| EngineError::Load {
        path: path.display().to_string(),
        reason: format!("llama.cpp could not load it ({e}); run with --verbose for its log"),
    })
}

/// Bytes of KV cache one token takes in this model with `kv_type`.
fn kv_bytes_per_token(model: &LlamaModel, kv_type: KvType) -> f64 {
    let head_count = f64::from(model.n_head().max(1));
    let kv_width = f64::from(model.n_embd()) * f64::from(model.n_head_kv()) / head_count;
    2.0 * f64::from(model.n_layer()) * kv_width * kv_type.bytes_per_element()
}

fn new_context<'m>(
    backend: &LlamaBackend,
    model: &'m LlamaModel,
    summary: &GgufSummary,
    options: &EngineOptions,
) -> Result<(LlamaContext<'m>, ModelInfo), EngineError> {
    let trained = model.n_ctx_train();
    let sequences = options.sequences.max(1);
    // Each sequence gets a window of the chosen size; the memory check covers all of them.
    let per_token = kv_bytes_per_token(model, options.kv_type) * f64::from(sequences);
    let limit = if options.allow_untrained_context {
        crate::engine::MAX_CONTEXT_TOKENS
    } else {
        trained
    };
    let window = choose_context(
        options.context_tokens,
        limit,
        per_token,
        available_memory_bytes(),
    )?;
    let n_ctx = window.saturating_mul(sequences);
    let kv = match options.kv_type {
        KvType::F16 => KvCacheType::F16,
        KvType::Q8_0 => KvCacheType::Q8_0,
    };
    let flash = match options.flash_attention.resolve() {
        None => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_AUTO,
        Some(true) => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED,
        Some(false) => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED,
    };
    let threads = i32::try_from(options.threads.max(1)).unwrap_or(i32::MAX);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_seq_max(sequences)
        .with_n_batch(options.batch.max(1))
        .with_n_ubatch(options.batch.max(1))
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
        .with_type_k(kv)
        .with_type_v(kv)
        .with_flash_attention_policy(flash);
    let ctx = model
        .new_context(backend, params)
        .map_err(|e| EngineError::Context {
            tokens: n_ctx,
            reason: e.to_string(),
        })?;
    let info = ModelInfo {
        name: summary.name.clone(),
        context_tokens: ctx.n_ctx() as usize / sequences as usize,
        sequences: sequences as usize,
        trained_context_tokens: trained as usize,
        chat_template: model
            .chat_template(None)
            .ok()
            .and_then(|t| t.to_string().ok()),
        control_tokens: super::control_texts(&model.vocab()),
        kv_cache_bytes: (kv_bytes_per_token(model, options.kv_type) * f64::from(ctx.n_ctx()))
            as u64,
    };
    Ok((ctx, info))
}

/// The model, its context and the tokens each sequence's KV cache holds.
pub(super) struct Session<'m> {
    pub(super) model: &'m LlamaModel,
    pub(super) ctx: LlamaContext<'m>,
    /// Per sequence: the tokens its cache holds, at positions 0, 1, ...
    pub(super) caches: Vec<Vec<Token>>,
    /// Tokens one sequence can hold.
    pub(super) window: usize,
    /// Most tokens in one decode.
    pub(super) batch_size: usize,
    cached: Arc<Vec<AtomicUsize>>,
    /// Reused for every evaluation: one decode per step for every generation in progress.
    pub(super) batch: LlamaBatch<'static>,
    /// Built on the first constrained request (it walks the whole vocabulary).
    pub(super) grammar_factory: Option<GrammarFactory>,
    /// Where llama.cpp's CPU flash attention runs: the model's attention cost next to its
    /// weights, by which a short continuation may be evaluated with cached tokens before it
    /// ([`super::generation`]'s `FLASH_TILE_ROWS`). `None`: never.
    pub(super) tiled_attention_scale: Option<f64>,
}

/// A sequence number as llama.cpp takes it.
pub(super) fn seq_id(sequence: usize) -> i32 {
    i32::try_from(sequence).unwrap_or(i32::MAX)
}

/// A position as llama.cpp takes it.
pub(super) fn pos(index: usize) -> u32 {
    u32::try_from(index).unwrap_or(u32::MAX)
}

impl Session<'_> {
    /// Token ids of `text` with BOS in front when the model wants one. With `special`, the
    /// format's framing becomes special tokens, and text between plain marks stays plain.
    pub(super) fn tokenize(&self, text: &str, special: bool) -> Vec<Token> {
        whole_prompt_ids(&self.model.vocab(), text, special)
    }

    pub(super) fn check_sequence(&self, sequence: usize) -> Result<(), EngineError> {
        if sequence < self.caches.len() {
            Ok(())
        } else {
            Err(EngineError::NoSuchSequence {
                sequence,
                sequences: self.caches.len(),
            })
        }
    }

    pub(super) fn publish(&self, sequence: usize) {
        self.cached[sequence].store(self.caches[sequence].len(), Ordering::SeqCst);
    }

    /// Carries out one command; a generation joins `actives`.
    fn serve(&mut self, command: Command, actives: &mut Vec<Active>) {
        match command {
            Command::Generate { request, sink } => {
                actives.extend(self.admit(request, sink));
            }
            Command::Truncate {
                sequence,
                keep,
                reply,
            } => {
                let _ = reply.send(self.truncate(sequence, keep));
            }
            Command::Remove {
                sequence,
                range,
                reply,
            } => {
                let _ = reply.send(self.remove(sequence, range));
            }
            Command::Save {
                sequence,
                path,
                reply,
            } => {
                let _ = reply.send(self.save(sequence, &path));
            }
            Command::Restore {
                sequence,
                path,
                reply,
            } => {
                let _ = reply.send(self.restore(sequence, &path));
            }
        }
    }

    pub(super) fn truncate(&mut self, sequence: usize, keep: usize) -> Result<(), EngineError> {
        self.check_sequence(sequence)?;
        if keep < self.caches[sequence].len() {
            self.ctx
                .kv_cache_seq_rm(seq_id(sequence), Some(pos(keep)), None)
                .map_err(|e| EngineError::Cache(e.to_string()))?;
            self.caches[sequence].truncate(keep);
        }
        self.publish(sequence);
        Ok(())
    }

    /// Drops `range` from the sequence and moves what follows down by its length.
    fn remove(&mut self, sequence: usize, range: Range<usize>) -> Result<(), EngineError> {
        self.check_sequence(sequence)?;
        let len = self.caches[sequence].len();
        if range.start > range.end || range.end > len {
            return Err(EngineError::BadRange {
                start: range.start,
                end: range.end,
                len,
            });
        }
        if range.is_empty() {
            return Ok(());
        }
        let cache_error = |e: KvCacheConversionError| EngineError::Cache(e.to_string());
        let seq = seq_id(sequence);
        self.ctx
            .kv_cache_seq_rm(seq, Some(pos(range.start)), Some(pos(range.end)))
            .map_err(cache_error)?;
        let shift = i32::try_from(range.len()).unwrap_or(i32::MAX);
        self.ctx
            .kv_cache_seq_add(seq, Some(pos(range.end)), None, -shift)
            .map_err(cache_error)?;
        self.caches[sequence].drain(range);
        self.publish(sequence);
        Ok(())
    }

    fn save(&mut self, sequence: usize, path: &Path) -> Result<u64, EngineError> {
        self.check_sequence(sequence)?;
        let failed = |reason: String| EngineError::State {
            action: "save",
            path: path.display().to_string(),
            reason,
        };
        let tokens: Vec<LlamaToken> = self.caches[sequence]
            .iter()
            .map(|&t| LlamaToken(t))
            .collect();
        let bytes = self
            .ctx
            .state_seq_save_file(path, seq_id(sequence), &tokens)
            .map_err(|e| failed(e.to_string()))?;
        Ok(bytes as u64)
    }

    fn restore(&mut self, sequence: usize, path: &Path) -> Result<usize, EngineError> {
        self.check_sequence(sequence)?;
        let failed = |reason: String| EngineError::State {
            action: "restore",
            path: path.display().to_string(),
            reason,
        };
        let meta = std::fs::symlink_metadata(path).map_err(|e| failed(e.to_string()))?;
        if !meta.file_type().is_file() {
            return Err(failed("not a regular file".into()));
        }
        // Whatever happens, the sequence holds either the saved state or nothing.
        self.truncate(sequence, 0)?;
        let loaded = self
            .ctx
            .state_seq_load_file(path, seq_id(sequence), self.window)
            .map_err(|e| {
                failed(format!(
                    "{e} (was it saved by this model, with this corral?)"
                ))
            });
        let tokens = match loaded {
            Ok((tokens, _bytes)) => tokens,
            Err(e) => {
                let _ = self.ctx.kv_cache_seq_rm(seq_id(sequence), None, None);
                return Err(e);
            }
        };
        let n_vocab = self.model.n_vocab();
        if tokens.iter().any(|t| t.0 < 0 || t.0 >= n_vocab) {
            let _ = self.ctx.kv_cache_seq_rm(seq_id(sequence), None, None);
            return Err(failed("it names tokens this model does not have".into()));
        }
        self.caches[sequence] = tokens.into_iter().map(|t| t.0).collect();
        self.publish(sequence);
        Ok(self.caches[sequence].len())
    }

    pub(super) fn sampler(&self, sampling: &Sampling) -> LlamaSampler {
        if sampling.is_greedy() {
            return LlamaSampler::greedy();
        }
        let mut chain = Vec::new();
        if sampling.repeat_penalty != 1.0 {
            let n_vocab = self.model.n_vocab();
            chain.push(LlamaSampler::penalties(
                n_vocab,
                64,
                sampling.repeat_penalty,
                0.0,
                0.0,
            ));
        }
        if sampling.top_k > 0 {
            chain.push(LlamaSampler::top_k(sampling.top_k));
        }
        if sampling.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(sampling.top_p, 1));
        }
        chain.push(LlamaSampler::temp(sampling.temperature));
        chain.push(LlamaSampler::dist(sampling.seed));
        LlamaSampler::chain_simple(chain)
    }
}
