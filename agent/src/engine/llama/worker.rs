//! The engine thread: owns the llama.cpp model and context and serves [`Command`]s.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use llama_cpp_2::context::params::{KvCacheType, LlamaContextParams};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

use super::constraint::{ConstraintTracker, Engage, GrammarFactory};
use super::{prompt_token_ids, token_ids, Command, Event};
use crate::engine::options::{available_memory_bytes, choose_context};
use crate::engine::{
    common_prefix, EngineError, EngineOptions, FlashAttention, GenerateRequest, Generation, KvType,
    ModelInfo, PieceDecoder, Sampling, StopMatcher, StopReason, StopScan, Token,
};
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
    cached: Arc<AtomicUsize>,
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
    let mut session = Session {
        model: &model,
        ctx,
        cache: Vec::new(),
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
                reply,
            } => {
                let _ = reply.send(session.tokenize(&text, special));
            }
            Command::Generate {
                request,
                events,
                proceed,
            } => {
                let result = session.generate(&request, &events, &proceed);
                let _ = events.send(Event::Done(result));
            }
            Command::Truncate { keep, reply } => {
                let _ = reply.send(session.truncate(keep));
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
    let per_token = kv_bytes_per_token(model, options.kv_type);
    let n_ctx = choose_context(
        options.context_tokens,
        trained,
        per_token,
        available_memory_bytes(),
    )?;
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
        context_tokens: ctx.n_ctx() as usize,
        trained_context_tokens: trained as usize,
        chat_template: model
            .chat_template(None)
            .ok()
            .and_then(|t| t.to_string().ok()),
        control_tokens: super::control_texts(&model.vocab()),
    };
    Ok((ctx, info))
}

/// The model, its context and the tokens the KV cache holds (sequence 0).
struct Session<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    cache: Vec<Token>,
    batch_size: usize,
    cached: Arc<AtomicUsize>,
    /// Reused for every evaluation.
    batch: LlamaBatch<'static>,
    /// Built on the first constrained request (it walks the whole vocabulary).
    grammar_factory: Option<GrammarFactory>,
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

    fn truncate(&mut self, keep: usize) -> Result<(), EngineError> {
        if keep < self.cache.len() {
            let from = u32::try_from(keep).unwrap_or(u32::MAX);
            self.ctx
                .kv_cache_seq_rm(0, Some(from), None)
                .map_err(|e| EngineError::Cache(e.to_string()))?;
            self.cache.truncate(keep);
        }
        self.cached.store(self.cache.len(), Ordering::SeqCst);
        Ok(())
    }

    /// Evaluates `tokens` after what the cache holds, in batches; logits only for the last one.
    fn evaluate(&mut self, tokens: &[Token]) -> Result<(), EngineError> {
        // One batch for the session: allocating one (a buffer per slot) for every generated
        // token would cost more than the bookkeeping it serves.
        let batch = &mut self.batch;
        let chunks = tokens.len().div_ceil(self.batch_size);
        for (index, chunk) in tokens.chunks(self.batch_size).enumerate() {
            batch.clear();
            let last_chunk = index + 1 == chunks;
            for (i, &token) in chunk.iter().enumerate() {
                let pos = i32::try_from(self.cache.len() + i).unwrap_or(i32::MAX);
                let wants_logits = last_chunk && i + 1 == chunk.len();
                batch
                    .add(LlamaToken(token), pos, &[0], wants_logits)
                    .map_err(|e| EngineError::Decode(e.to_string()))?;
            }
            self.ctx
                .decode(batch)
                .map_err(|e| EngineError::Decode(e.to_string()))?;
            self.cache.extend_from_slice(chunk);
        }
        self.cached.store(self.cache.len(), Ordering::SeqCst);
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
        events: &mpsc::Sender<Event>,
        proceed: &mpsc::Receiver<bool>,
    ) -> Result<Generation, EngineError> {
        let prompt = self.tokenize(&request.prompt, true);
        let n_ctx = self.ctx.n_ctx() as usize;
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
        let reused = common_prefix(&self.cache, &prompt).min(prompt.len() - 1);
        self.truncate(reused)?;
        let started = Instant::now();
        self.evaluate(&prompt[reused..])?;
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
        let vocab = self.model.vocab();
        // Sends a piece to the caller's callback and waits for its answer: `false` (or a caller
        // that is gone) stops generation before the next token.
        let emit = |chunk: &str, text: &mut String| -> bool {
            if chunk.is_empty() {
                return true;
            }
            text.push_str(chunk);
            events.send(Event::Text(chunk.to_string())).is_ok() && proceed.recv().unwrap_or(false)
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
            if self.cache.len() >= n_ctx {
                break StopReason::ContextFull;
            }
            // This step's tokens: those the grammar forces (evaluated in one batch), else one
            // sampled token.
            let mut step = guide
                .as_mut()
                .map(|guide| guide.forced(tokenize))
                .unwrap_or_default();
            step.truncate(room.min(n_ctx - self.cache.len()));
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
            self.evaluate(&step[..done])?;
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
