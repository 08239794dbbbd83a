//! Generations in progress on the engine thread, decoded together (continuous batching).
//!
//! Each [`Session::step`] first lets every generation whose logits are ready pick its next
//! tokens (sampled, or forced by its constraint) and hand their text to its caller; then it
//! evaluates what every generation has pending — those new tokens, and chunks of the prompts of
//! generations just admitted — in **one** `llama_decode`, with each generation's sequence and
//! positions, logits only where one will sample next. A model step costs little more for eight
//! sequences than for one on a CPU (the weights are read once per step either way), which is
//! where the aggregate speed of concurrent conversations comes from; llama-server's slots work
//! the same way.
//!
//! A prompt is evaluated in chunks of at most the batch size (`--batch-size`, 512), so Ctrl-C or
//! a deadline waits at most for one chunk (about 0.5 s for 512 tokens of the default model on
//! two cores here), and a long prompt holds up the other generations' next tokens that long.
//! Smaller chunks cost prompt speed: 128-token chunks made a 512-token prompt 14% slower than
//! llama-bench's one batch with flash attention on. A callback's `Break` stops a generation
//! after exactly the token that carried the piece.

use std::time::Instant;

use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

use super::constraint::{ConstraintTracker, Engage, Guide};
use super::worker::{pos, seq_id, Session};
use super::{token_ids, Sink};
use crate::engine::{
    common_prefix, EngineError, GenerateRequest, Generation, PieceDecoder, Prompt, StopMatcher,
    StopReason, StopScan, Token,
};

/// New tokens from which llama.cpp's CPU flash attention takes its tiled path. Fewer (but more
/// than one) go row by row, and each row then reads every cached key and value on its own: deep
/// in a context that costs several times more per row than the tiled path (an agent turn's 28
/// new tokens after 8K of history took 5.5 s, 1.5 s as 64 rows). So a short continuation whose
/// rows would cost more than 64 tiled ones ([`padding_pays`]) is evaluated together with the
/// cached tokens just before it, this many rows in all; they are computed again, and
/// `reused_tokens` says so.
const FLASH_TILE_ROWS: usize = 64;

/// What one decode costs on the CPU, in units of one token's pass through the weights in a
/// 64-row batch, as measured with llama-bench (2 threads, flash attention on, SmolLM2-135M q4_1,
/// AMX): 64 rows at depth 0 took 45 ms (the unit is 0.70 ms); 4, 8, 12 and 16 rows at depths 0,
/// 256, 1024 and 4096 took 8 to 1571 ms, 64 rows at those depths 45 to 741 ms. Fitted:
///
/// - `fresh` rows by the row path: `ROW_FIXED + fresh * (ROW_WEIGHTS + ROW_ATTENTION * depth)`;
/// - 64 tiled rows: `64 + TILED_ATTENTION * depth`.
///
/// The attention terms are per cached token for the calibration model; another model's are
/// scaled by its attention work per cached token relative to its weights ([`attention_scale`]).
const ROW_FIXED: f64 = 10.0;
const ROW_WEIGHTS: f64 = 0.7;
const ROW_ATTENTION: f64 = 0.033;
const TILED_ATTENTION: f64 = 0.24;

/// The calibration model's attention work per cached token over its weights per token: layers
/// times embedding width over parameters (SmolLM2-135M: 30 * 576 / 134,515,008).
const CALIBRATION_ATTENTION_SHARE: f64 = 30.0 * 576.0 / 134_515_008.0;

/// How much more (or less) a model's attention costs next to its weights than the calibration
/// model's: a model eight times smaller in that share (Llama 3.1 8B) pays for padding sooner
/// with its weights and gains later from the tiled attention.
pub(super) fn attention_scale(layers: u32, embedding: u32, parameters: u64) -> f64 {
    if parameters == 0 {
        return 1.0;
    }
    f64::from(layers) * f64::from(embedding) / parameters as f64 / CALIBRATION_ATTENTION_SHARE
}

/// Whether `fresh` new tokens after `depth` cached ones cost less evaluated as
/// [`FLASH_TILE_ROWS`] tiled rows (the cached tokens just before them computed again) than
/// row by row. One token never is (a single row has its own split path), nor a continuation
/// without enough cached tokens before it.
fn padding_pays(fresh: usize, depth: usize, attention_scale: f64) -> bool {
    if !(2..FLASH_TILE_ROWS).contains(&fresh) || depth + fresh < FLASH_TILE_ROWS {
        return false;
    }
    let depth = depth as f64 * attention_scale;
    let rows = ROW_FIXED + fresh as f64 * (ROW_WEIGHTS + ROW_ATTENTION * depth);
    let tiled = FLASH_TILE_ROWS as f64 + TILED_ATTENTION * depth;
    rows > tiled
}

/// One generation in progress.
pub(super) struct Active {
    request: GenerateRequest,
    sink: Sink,
    prompt_tokens: usize,
    reused: usize,
    /// Tokens to evaluate before it samples again: its prompt's rest, then each step's tokens.
    pending: Vec<Token>,
    /// Whether `pending` is (the rest of) the prompt.
    in_prompt: bool,
    /// Where its logits are among the last decode's outputs, when it is its turn to sample.
    logits: Option<i32>,
    /// Why it ends, once known; it finishes when `pending` is evaluated.
    stop: Option<StopReason>,
    error: Option<EngineError>,
    sampler: LlamaSampler,
    tracker: Option<ConstraintTracker>,
    guide: Option<Guide>,
    /// Everything generated, special tokens included (what triggers match against).
    raw_text: String,
    decoder: PieceDecoder,
    matcher: StopMatcher,
    /// What the caller was given.
    text: String,
    generated: usize,
    produced: Vec<Token>,
    forced_tokens: usize,
    forced_seconds: f64,
    /// The current step's forced tokens and when the step began, until they are evaluated.
    forced_step: Option<(usize, Instant)>,
    admitted: Instant,
    prompt_seconds: f64,
    generating_since: Option<Instant>,
}

impl Active {
    /// The sequence it generates on.
    pub(super) fn sequence(&self) -> usize {
        self.request.sequence
    }

    fn fail(&mut self, error: EngineError) {
        self.error = Some(error);
        self.pending.clear();
    }

    fn finished(&self) -> bool {
        (self.stop.is_some() || self.error.is_some()) && self.pending.is_empty()
    }

    /// Sends the result to the caller.
    fn finish(mut self) {
        if let Some(error) = self.error.take() {
            self.sink.done(Err(error));
            return;
        }
        let stop = self.stop.take().unwrap_or(StopReason::Cancelled);
        // Text held back (a partial stop string, an incomplete character) goes out at the end,
        // unless a stop string matched or the generation was cancelled.
        if !matches!(stop, StopReason::StopString(_) | StopReason::Cancelled) {
            let tail = format!("{}{}", self.matcher.finish(), self.decoder.finish());
            emit(&mut self.sink, &mut self.text, &tail);
        }
        let generation = Generation {
            text: self.text,
            tokens: self.produced,
            stop,
            prompt_tokens: self.prompt_tokens,
            reused_tokens: self.reused,
            generated_tokens: self.generated,
            prompt_seconds: self.prompt_seconds,
            generate_seconds: self
                .generating_since
                .map_or(0.0, |since| since.elapsed().as_secs_f64()),
            forced_tokens: self.forced_tokens,
            forced_seconds: self.forced_seconds,
            constrained: self.tracker.is_some_and(|t| t.engaged()),
        };
        self.sink.done(Ok(generation));
    }
}

/// Sends a piece to the caller; `false` (the caller said stop, or is gone) stops generation
/// before the next token.
fn emit(sink: &mut Sink, text: &mut String, chunk: &str) -> bool {
    if chunk.is_empty() {
        return true;
    }
    text.push_str(chunk);
    sink.text(chunk)
}

impl Session<'_> {
    /// Starts a generation: checks the request, keeps the cached prefix of its prompt and
    /// queues the rest for evaluation. A request that cannot start gets its error at once.
    pub(super) fn admit(&mut self, request: GenerateRequest, sink: Sink) -> Option<Active> {
        match self.prepare(&request) {
            Ok((prompt, reused)) => {
                let tracker = request.constraint.clone().map(ConstraintTracker::new);
                let matcher = StopMatcher::new(&request.stop_strings);
                Some(Active {
                    sampler: self.sampler(&request.sampling),
                    prompt_tokens: prompt.len(),
                    reused,
                    pending: prompt[reused..].to_vec(),
                    in_prompt: true,
                    logits: None,
                    stop: None,
                    error: None,
                    tracker,
                    guide: None,
                    raw_text: String::new(),
                    decoder: PieceDecoder::new(),
                    matcher,
                    text: String::new(),
                    generated: 0,
                    produced: Vec::new(),
                    forced_tokens: 0,
                    forced_seconds: 0.0,
                    forced_step: None,
                    admitted: Instant::now(),
                    prompt_seconds: 0.0,
                    generating_since: None,
                    request,
                    sink,
                })
            }
            Err(error) => {
                sink.done(Err(error));
                None
            }
        }
    }

    /// The request's prompt ids and how many of them its sequence's cache already holds (at
    /// most all but the last, so there are fresh logits to sample from); the cache is trimmed
    /// to those.
    fn prepare(&mut self, request: &GenerateRequest) -> Result<(Vec<Token>, usize), EngineError> {
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
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if prompt.len() >= self.window {
            return Err(EngineError::PromptTooLong {
                prompt: prompt.len(),
                context: self.window,
            });
        }
        let mut reused = common_prefix(&self.caches[sequence], &prompt).min(prompt.len() - 1);
        let fresh = prompt.len() - reused;
        if let Some(scale) = self.tiled_attention_scale {
            if padding_pays(fresh, reused, scale) {
                reused -= FLASH_TILE_ROWS - fresh;
            }
        }
        self.truncate(sequence, reused)?;
        Ok((prompt, reused))
    }

    /// One step of every generation in `actives`: pick tokens where logits are ready, evaluate
    /// everything pending in one decode, and finish (and remove) the generations that ended.
    pub(super) fn step(&mut self, actives: &mut Vec<Active>) {
        for active in actives.iter_mut() {
            if active.stop.is_some() || active.error.is_some() {
                continue;
            }
            if active.in_prompt {
                // A prompt stops between chunks; nothing is sampled.
                if active.request.cancel.is_cancelled() {
                    active.stop = Some(StopReason::Cancelled);
                    active.pending.clear();
                }
                continue;
            }
            if let Some(index) = active.logits.take() {
                if let Err(error) = self.advance(active, index) {
                    active.fail(error);
                }
            }
        }
        finish_ended(actives);
        self.decode_pending(actives);
        finish_ended(actives);
    }

    /// Picks `active`'s next tokens from the logits at `index` (or those its grammar forces)
    /// and hands their text to its caller; they become its pending tokens.
    fn advance(&mut self, active: &mut Active, index: i32) -> Result<(), EngineError> {
        if active.request.cancel.is_cancelled() {
            active.stop = Some(StopReason::Cancelled);
            return Ok(());
        }
        let room = active
            .request
            .max_tokens
            .map_or(usize::MAX, |max| max.saturating_sub(active.generated));
        if room == 0 {
            active.stop = Some(StopReason::MaxTokens);
            return Ok(());
        }
        let held = self.caches[active.sequence()].len();
        if held >= self.window {
            active.stop = Some(StopReason::ContextFull);
            return Ok(());
        }
        let step_started = Instant::now();
        let model = self.model;
        let vocab = model.vocab();
        let tokenize = |bytes: &[u8]| token_ids(&vocab, bytes, false);
        // This step's tokens: those the grammar forces (evaluated in one batch), else one
        // sampled token.
        let mut step = active
            .guide
            .as_mut()
            .map(|guide| guide.forced(tokenize))
            .unwrap_or_default();
        step.truncate(room.min(self.window - held));
        let forced = !step.is_empty();
        if forced {
            for &token in &step {
                active.sampler.accept(LlamaToken(token));
            }
        } else {
            step.push(match active.guide.as_mut() {
                Some(guide) => guide.sample(&self.ctx, &mut active.sampler, index),
                // Greedy needs no candidate array: the most likely token of the logits.
                None if active.request.sampling.is_greedy() => {
                    argmax(self.ctx.get_logits_ith(index))
                }
                None => active.sampler.sample(&self.ctx, index).0,
            });
        }
        // Tokens are evaluated once their text is through; one that ends the turn is not.
        let mut done = 0;
        let mut end_token = None;
        for &token in &step {
            active.generated += 1;
            if let Some(guide) = active.guide.as_mut() {
                guide.accept(token);
            }
            let token = LlamaToken(token);
            if vocab.is_eog(token) {
                let piece = vocab.token_to_piece(token, true, None);
                end_token = Some(token.0);
                active.stop = Some(StopReason::EndOfGeneration(
                    String::from_utf8_lossy(&piece).into_owned(),
                ));
                break;
            }
            if active.request.stop_tokens.contains(&token.0) {
                active.stop = Some(StopReason::StopToken(token.0));
                break;
            }
            let piece = vocab.token_to_piece(token, true, None);
            let chunk = active.decoder.push(&piece);
            active.raw_text.push_str(&chunk);
            if let (Some(tracker), Some(factory)) =
                (active.tracker.as_mut(), self.grammar_factory.as_mut())
            {
                let piece_text = String::from_utf8_lossy(&piece);
                let retokenize = |s: &str| token_ids(&vocab, s.as_bytes(), true);
                if let Engage::With(engaged) =
                    tracker.after_token(factory, &piece_text, &active.raw_text, retokenize)
                {
                    active.guide = Some(*engaged);
                }
            }
            match active.matcher.push(&chunk) {
                StopScan::Continue(chunk) => {
                    if !emit(&mut active.sink, &mut active.text, &chunk) {
                        // The callback has this token's text: it is evaluated, and the cache
                        // holds exactly what was emitted.
                        done += 1;
                        active.stop = Some(StopReason::Cancelled);
                        break;
                    }
                }
                StopScan::Stopped { emit: chunk, stop } => {
                    emit(&mut active.sink, &mut active.text, &chunk);
                    active.stop = Some(StopReason::StopString(stop));
                    break;
                }
            }
            done += 1;
        }
        step.truncate(done);
        active.produced.extend_from_slice(&step);
        active.produced.extend(end_token);
        active.forced_step = forced.then_some((step.len(), step_started));
        active.pending = step;
        Ok(())
    }

    /// Evaluates what the generations have pending in one decode: generation steps first, then
    /// prompts, up to the batch size in all, placed in the batch by ascending sequence.
    fn decode_pending(&mut self, actives: &mut [Active]) {
        let wants: Vec<Pending> = actives
            .iter()
            .map(|active| Pending {
                sequence: active.sequence(),
                tokens: active.pending.len(),
                in_prompt: active.in_prompt,
            })
            .collect();
        // Per included generation: its index, the tokens taken, and its logits' index.
        let mut taken: Vec<(usize, usize, Option<i32>)> = Vec::new();
        let mut used = 0;
        self.batch.clear();
        for (i, count) in batch_plan(&wants, self.batch_size) {
            let active = &actives[i];
            let wants_logits = count == active.pending.len() && active.stop.is_none();
            let start = self.caches[active.sequence()].len();
            let seq = seq_id(active.sequence());
            let mut added = Ok(());
            for (k, &token) in active.pending[..count].iter().enumerate() {
                let logits = wants_logits && k + 1 == count;
                added = self
                    .batch
                    .add(LlamaToken(token), pos(start + k) as i32, &[seq], logits)
                    .map_err(|e| EngineError::Decode(e.to_string()));
                if added.is_err() {
                    break;
                }
            }
            if let Err(error) = added {
                // The batch is unusable: the generations taken so far fail with this one.
                for (j, _, _) in taken.drain(..) {
                    actives[j].fail(EngineError::Decode(error.to_string()));
                }
                actives[i].fail(error);
                self.batch.clear();
                return;
            }
            let logits = wants_logits.then(|| i32::try_from(used + count - 1).unwrap_or(i32::MAX));
            taken.push((i, count, logits));
            used += count;
        }
        if taken.is_empty() {
            return;
        }
        if let Err(error) = self.ctx.decode(&mut self.batch) {
            let reason = error.to_string();
            for (i, _, _) in taken {
                actives[i].fail(EngineError::Decode(reason.clone()));
            }
            return;
        }
        for (i, count, logits) in taken {
            let active = &mut actives[i];
            let sequence = active.sequence();
            self.caches[sequence].extend(active.pending.drain(..count));
            self.publish(sequence);
            if !active.pending.is_empty() {
                continue;
            }
            if active.in_prompt {
                active.in_prompt = false;
                active.prompt_seconds = active.admitted.elapsed().as_secs_f64();
                active.generating_since = Some(Instant::now());
                if let Err(error) = self.engage_from_start(active) {
                    active.fail(error);
                    continue;
                }
            }
            if let Some((forced, since)) = active.forced_step.take() {
                active.forced_tokens += forced;
                active.forced_seconds += since.elapsed().as_secs_f64();
            }
            active.logits = logits;
        }
    }

    /// Engages a constraint that applies from the first token (building the grammar factory on
    /// the first constrained request: it walks the whole vocabulary).
    fn engage_from_start(&mut self, active: &mut Active) -> Result<(), EngineError> {
        let Some(tracker) = active.tracker.as_mut() else {
            return Ok(());
        };
        if self.grammar_factory.is_none() {
            self.grammar_factory = Some(super::constraint::GrammarFactory::new(self.model)?);
        }
        let factory = self.grammar_factory.as_mut().expect("built above");
        active.guide = tracker.immediate(factory)?;
        Ok(())
    }
}

/// The id of the largest logit (the first of equals, as llama.cpp's greedy sampler picks).
fn argmax(logits: &[f32]) -> Token {
    let mut best = 0;
    for (i, &logit) in logits.iter().enumerate() {
        if logit > logits[best] {
            best = i;
        }
    }
    Token::try_from(best).unwrap_or(0)
}

/// Finishes and removes the generations that ended and have nothing left to evaluate.
fn finish_ended(actives: &mut Vec<Active>) {
    let mut i = 0;
    while i < actives.len() {
        if actives[i].finished() {
            actives.remove(i).finish();
        } else {
            i += 1;
        }
    }
}

/// Whether a generation in `actives` uses `sequence`.
pub(super) fn busy(actives: &[Active], sequence: usize) -> bool {
    actives.iter().any(|a| a.sequence() == sequence)
}

/// What one generation has waiting to be evaluated, as [`batch_plan`] sees it.
#[derive(Debug, Clone, Copy)]
struct Pending {
    sequence: usize,
    tokens: usize,
    in_prompt: bool,
}

/// Which generations one decode takes (their indices in `wants`) and how many of their tokens,
/// in the order they go into the batch.
///
/// Room goes to generation steps first, then to prompts, each in the generations' order, up to
/// `batch_size` tokens in all. They are then placed by ascending sequence: with a KV stream per
/// sequence, llama.cpp splits a batch into passes over the model that each take sequences whose
/// ids follow one another in the batch, so four one-token steps of sequences 3, 2, 1, 0 in that
/// order cost four passes where 0, 1, 2, 3 cost one.
fn batch_plan(wants: &[Pending], batch_size: usize) -> Vec<(usize, usize)> {
    let by_priority = (0..wants.len())
        .filter(|&i| !wants[i].in_prompt)
        .chain((0..wants.len()).filter(|&i| wants[i].in_prompt));
    let mut plan = Vec::new();
    let mut used = 0;
    for i in by_priority {
        let room = batch_size - used;
        if wants[i].tokens == 0 || room == 0 {
            continue;
        }
        let count = wants[i].tokens.min(room);
        plan.push((i, count));
        used += count;
    }
    plan.sort_by_key(|&(i, _)| wants[i].sequence);
    plan
}

#[cfg(test)]
mod tests {
    use super::{attention_scale, batch_plan, padding_pays, Pending};

    fn step(sequence: usize) -> Pending {
        Pending {
            sequence,
            tokens: 1,
            in_prompt: false,
        }
    }

    #[test]
    fn a_decode_places_its_generations_by_ascending_sequence_whatever_their_arrival() {
        let wants = [step(3), step(1), step(0), step(2)];
        let plan = batch_plan(&wants, 512);
        let sequences: Vec<usize> = plan.iter().map(|&(i, _)| wants[i].sequence).collect();
        assert_eq!(sequences, [0, 1, 2, 3]);
        assert!(plan.iter().all(|&(_, count)| count == 1));
    }

    #[test]
    fn generation_steps_get_room_before_prompts_and_a_prompt_takes_what_is_left() {
        let prompt = |sequence, tokens| Pending {
            sequence,
            tokens,
            in_prompt: true,
        };
        // Sequence 0's prompt arrived first, but the steps of 2 and 3 go in before it; it
        // takes the 6 tokens left of 8, and sequence 1's prompt waits for the next decode.
        let wants = [prompt(0, 100), step(3), prompt(1, 5), step(2)];
        let plan = batch_plan(&wants, 8);
        assert_eq!(plan, [(0, 6), (3, 1), (1, 1)]);
        let idle = Pending {
            sequence: 4,
            tokens: 0,
            in_prompt: false,
        };
        assert_eq!(batch_plan(&[idle, step(5)], 8), [(1, 1)]);
    }

    #[test]
    fn a_continuation_is_padded_to_tiled_rows_only_where_its_rows_would_cost_more() {
        let smollm = attention_scale(30, 576, 134_515_008);
        assert!((smollm - 1.0).abs() < 1e-9);
        // As measured for the calibration model (ms, row path vs 64 tiled rows).
        assert!(padding_pays(28, 243, smollm)); // an agent turn: 186 vs 77
        assert!(padding_pays(16, 1024, smollm)); // 385 vs 235
        assert!(padding_pays(8, 4096, smollm)); // 784 vs 741
        assert!(!padding_pays(4, 4096, smollm)); // 440 vs 741
        assert!(!padding_pays(4, 1024, smollm)); // 114 vs 235
        assert!(!padding_pays(12, 0, smollm)); // nothing cached to pad with
        assert!(!padding_pays(1, 8192, smollm));
        assert!(!padding_pays(64, 8192, smollm));
        assert!(!padding_pays(30, 20, smollm));
        // Llama 3.1 8B: its weights dominate a shallow turn, its attention a deep one.
        let llama = attention_scale(32, 4096, 8_030_261_248);
        assert!(llama < 0.2, "{llama}");
        assert!(!padding_pays(28, 243, llama));
        assert!(padding_pays(28, 8192, llama));
        assert_eq!(attention_scale(30, 576, 0), 1.0);
    }
}
