//! The engine thread: owns the llama.cpp model and context and serves [`Command`]s.

use std::num::NonZeroU32;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use llama_cpp_2::context::kv_cache::KvCacheConversionError;
use llama_cpp_2::context::params::{KvCacheType, LlamaContextParams};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

use super::constraint::{ConstraintTracker, Engage, GrammarFactory};
use super::{prompt_token_ids, token_ids, Command, Sink};
use crate::engine::options::{available_memory_bytes, choose_context};
use crate::engine::{
    common_prefix, EngineError, EngineOptions, FlashAttention, GenerateRequest, Generation, KvType,
    ModelInfo, PieceDecoder, Prompt, Sampling, StopMatcher, StopReason, StopScan, Token,
};
use crate::model::gguf::GgufSummary;

/// The largest prompt batch when a request can be cancelled: Ctrl-C or a deadline waits at
/// most for this many tokens' evaluation (about 1.5 s at 85 tokens/s on one slow core).
const CANCEL_CHUNK: usize = 128;

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
    };
    for command in inbox {
        match command {
            Command::Tokenize {
                text,
                special,
                continuation,
                reply,
            } => {
                let tokens = if continuation {
                    prompt_token_ids(&session.model.vocab(), &text)
                } else {
                    session.tokenize(&text, special)
                };
                let _ = reply.send(tokens);
            }
            Command::Generate { request, mut sink } => {
                let result = session.generate(&request, &mut sink);
                sink.done(result);
            }
            Command::Truncate {
                sequence,
                keep,
                reply,
            } => {
                let _ = reply.send(session.truncate(sequence, keep));
            }
            Command::Remove {
                sequence,
                range,
                reply,
            } => {
                let _ = reply.send(session.remove(sequence, range));
            }
            Command::Save {
                sequence,
                path,
                reply,
            } => {
                let _ = reply.send(session.save(sequence, &path));
            }
            Command::Restore {
                sequence,
                path,
                reply,
            } => {
                let _ = reply.send(session.restore(sequence, &path));
            }
        }
    }
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
    let window = choose_context(
        options.context_tokens,
        trained,
        per_token,
        available_memory_bytes(),
    )?;
    let n_ctx = window.saturating_mul(sequences);
    let kv = match options.kv_type {
        KvType::F16 => KvCacheType::F16,
        KvType::Q8_0 => KvCacheType::Q8_0,
    };
    let flash = match options.flash_attention {
        FlashAttention::Auto => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_AUTO,
        FlashAttention::On => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED,
        FlashAttention::Off => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED,
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
    };
    Ok((ctx, info))
}

/// The model, its context and the tokens each sequence's KV cache holds.
struct Session<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    /// Per sequence: the tokens its cache holds, at positions 0, 1, ...
    caches: Vec<Vec<Token>>,
    /// Tokens one sequence can hold.
    window: usize,
    batch_size: usize,
    cached: Arc<Vec<AtomicUsize>>,
    /// Reused for every evaluation.
    batch: LlamaBatch<'static>,
    /// Built on the first constrained request (it walks the whole vocabulary).
    grammar_factory: Option<GrammarFactory>,
}

/// A sequence number as llama.cpp takes it.
fn seq_id(sequence: usize) -> i32 {
    i32::try_from(sequence).unwrap_or(i32::MAX)
}

/// A position as llama.cpp takes it.
fn pos(index: usize) -> u32 {
    u32::try_from(index).unwrap_or(u32::MAX)
}

impl Session<'_> {
    /// Token ids of `text` with BOS in front when the model wants one. With `special`, the
    /// format's framing becomes special tokens, and text between plain marks stays plain.
    fn tokenize(&self, text: &str, special: bool) -> Vec<Token> {
        let vocab = self.model.vocab();
        let mut tokens = if special {
            prompt_token_ids(&vocab, text)
        } else {
            token_ids(
                &vocab,
                corral_prompts::plain::unmark(text).as_bytes(),
                false,
            )
        };
        let bos = vocab.bos().0;
        if vocab.should_add_bos() && bos >= 0 && tokens.first() != Some(&bos) {
            tokens.insert(0, bos);
        }
        tokens
    }

    fn check_sequence(&self, sequence: usize) -> Result<(), EngineError> {
        if sequence < self.caches.len() {
            Ok(())
        } else {
            Err(EngineError::NoSuchSequence {
                sequence,
                sequences: self.caches.len(),
            })
        }
    }

    fn publish(&self, sequence: usize) {
        self.cached[sequence].store(self.caches[sequence].len(), Ordering::SeqCst);
    }

    fn truncate(&mut self, sequence: usize, keep: usize) -> Result<(), EngineError> {
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

    /// Evaluates `tokens` after what `sequence`'s cache holds, in batches; logits only for the
    /// last one. With `cancel`, batches are at most [`CANCEL_CHUNK`] tokens and a cancelled
    /// token stops between them (the cache then holds what was evaluated; the caller sees the
    /// token set and samples nothing).
    fn evaluate(
        &mut self,
        sequence: usize,
        tokens: &[Token],
        cancel: Option<&crate::engine::CancelToken>,
    ) -> Result<(), EngineError> {
        // One batch for the session: allocating one (a buffer per slot) for every generated
        // token would cost more than the bookkeeping it serves.
        let batch = &mut self.batch;
        let size = match cancel {
            Some(_) => self.batch_size.min(CANCEL_CHUNK),
            None => self.batch_size,
        };
        let chunks = tokens.len().div_ceil(size);
        let seq = seq_id(sequence);
        for (index, chunk) in tokens.chunks(size).enumerate() {
            if cancel.is_some_and(|c| c.is_cancelled()) {
                break;
            }
            batch.clear();
            let last_chunk = index + 1 == chunks;
            let start = self.caches[sequence].len();
            for (i, &token) in chunk.iter().enumerate() {
                let position = i32::try_from(start + i).unwrap_or(i32::MAX);
                let wants_logits = last_chunk && i + 1 == chunk.len();
                batch
                    .add(LlamaToken(token), position, &[seq], wants_logits)
                    .map_err(|e| EngineError::Decode(e.to_string()))?;
            }
            self.ctx
                .decode(batch)
                .map_err(|e| EngineError::Decode(e.to_string()))?;
            self.caches[sequence].extend_from_slice(chunk);
        }
        self.publish(sequence);
        Ok(())
    }

    fn sampler(&self, sampling: &Sampling) -> LlamaSampler {
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

    fn generate(
        &mut self,
        request: &GenerateRequest,
        sink: &mut Sink,
    ) -> Result<Generation, EngineError> {
        let sequence = request.sequence;
        self.check_sequence(sequence)?;
        let prompt = match &request.prompt {
            Prompt::Text(text) => self.tokenize(text, true),
            Prompt::Tokens(tokens) => tokens.clone(),
        };
        let n_vocab = self.model.n_vocab();
        if let Some(&bad) = prompt.iter().find(|&&t| t < 0 || t >= n_vocab) {
            return Err(EngineError::BadToken {
                token: bad,
                vocab: n_vocab,
            });
        }
        let n_ctx = self.window;
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if prompt.len() >= n_ctx {
            return Err(EngineError::PromptTooLong {
                prompt: prompt.len(),
                context: n_ctx,
            });
        }
        // Reuse the cached prefix, but always evaluate at least the last prompt token so there
        // are fresh logits to sample from.
        let reused = common_prefix(&self.caches[sequence], &prompt).min(prompt.len() - 1);
        self.truncate(sequence, reused)?;
        let started = Instant::now();
        self.evaluate(sequence, &prompt[reused..], Some(&request.cancel))?;
        let prompt_seconds = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let mut sampler = self.sampler(&request.sampling);
        let mut tracker = request.constraint.as_ref().map(ConstraintTracker::new);
        let mut guide = None;
        if let Some(tracker) = tracker.as_mut() {
            if self.grammar_factory.is_none() {
                self.grammar_factory = Some(GrammarFactory::new(self.model)?);
            }
            let factory = self.grammar_factory.as_mut().expect("built above");
            guide = tracker.immediate(factory)?;
        }
        let mut raw_text = String::new();
        let mut decoder = PieceDecoder::new();
        let mut matcher = StopMatcher::new(&request.stop_strings);
        let mut text = String::new();
        let mut generated = 0usize;
        let mut produced: Vec<Token> = Vec::new();
        let vocab = self.model.vocab();
        // Sends a piece to the caller; `false` (the caller said stop, or is gone) stops
        // generation before the next token.
        let mut emit = |chunk: &str, text: &mut String| -> bool {
            if chunk.is_empty() {
                return true;
            }
            text.push_str(chunk);
            sink.text(chunk)
        };
        let tokenize = |bytes: &[u8]| token_ids(&vocab, bytes, false);
        let stop = loop {
            if request.cancel.is_cancelled() {
                break StopReason::Cancelled;
            }
            let room = request
                .max_tokens
                .map_or(usize::MAX, |max| max.saturating_sub(generated));
            if room == 0 {
                break StopReason::MaxTokens;
            }
            let held = self.caches[sequence].len();
            if held >= n_ctx {
                break StopReason::ContextFull;
            }
            // This step's tokens: those the grammar forces (evaluated in one batch), else one
            // sampled token.
            let mut step = guide
                .as_mut()
                .map(|guide| guide.forced(tokenize))
                .unwrap_or_default();
            step.truncate(room.min(n_ctx - held));
            if step.is_empty() {
                step.push(match guide.as_mut() {
                    Some(guide) => guide.sample(&self.ctx, &mut sampler),
                    None => sampler.sample(&self.ctx, -1).0,
                });
            } else {
                for &token in &step {
                    sampler.accept(LlamaToken(token));
                }
            }
            // Tokens are evaluated once their text is through; one that ends the turn is not.
            let mut ended = None;
            let mut done = 0;
            for &token in &step {
                generated += 1;
                if let Some(guide) = guide.as_mut() {
                    guide.accept(token);
                }
                let token = LlamaToken(token);
                if vocab.is_eog(token) {
                    let piece = vocab.token_to_piece(token, true, None);
                    let piece = String::from_utf8_lossy(&piece).into_owned();
                    produced.push(token.0);
                    ended = Some(StopReason::EndOfGeneration(piece));
                    break;
                }
                if request.stop_tokens.contains(&token.0) {
                    ended = Some(StopReason::StopToken(token.0));
                    break;
                }
                let piece = vocab.token_to_piece(token, true, None);
                let chunk = decoder.push(&piece);
                raw_text.push_str(&chunk);
                if let (Some(tracker), Some(factory)) =
                    (tracker.as_mut(), self.grammar_factory.as_mut())
                {
                    let piece_text = String::from_utf8_lossy(&piece);
                    let retokenize = |s: &str| token_ids(&vocab, s.as_bytes(), true);
                    if let Engage::With(engaged) =
                        tracker.after_token(factory, &piece_text, &raw_text, retokenize)
                    {
                        guide = Some(*engaged);
                    }
                }
                match matcher.push(&chunk) {
                    StopScan::Continue(chunk) => {
                        if !emit(&chunk, &mut text) {
                            // The callback has this token's text: it is evaluated, and the
                            // cache holds exactly what was emitted.
                            done += 1;
                            ended = Some(StopReason::Cancelled);
                            break;
                        }
                    }
                    StopScan::Stopped { emit: chunk, stop } => {
                        emit(&chunk, &mut text);
                        ended = Some(StopReason::StopString(stop));
                        break;
                    }
                }
                done += 1;
            }
            self.evaluate(sequence, &step[..done], None)?;
            produced.extend_from_slice(&step[..done]);
            if let Some(stop) = ended {
                break stop;
            }
        };
        // Text held back (a partial stop string, an incomplete character) goes out at the end,
        // unless a stop string matched or the generation was cancelled.
        if !matches!(stop, StopReason::StopString(_) | StopReason::Cancelled) {
            let tail = format!("{}{}", matcher.finish(), decoder.finish());
            emit(&tail, &mut text);
        }
        Ok(Generation {
            text,
            tokens: produced,
            stop,
            prompt_tokens: prompt.len(),
            reused_tokens: reused,
            generated_tokens: generated,
            prompt_seconds,
            generate_seconds: started.elapsed().as_secs_f64(),
            constrained: tracker.is_some_and(|t| t.engaged()),
        })
    }
}
