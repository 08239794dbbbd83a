//! A scripted backend: replays canned replies and records every prompt it was given.
//!
//! Tests of the agent loop, the REPL and the prompt format use it to be deterministic and fast.
//! It honours the same contract as the real engine: stop strings, `max_tokens` (one "token" is
//! one character here, plain marks included, so tests can see them in [`Prompt::Tokens`]),
//! cancellation, sequences, and KV-prefix bookkeeping by characters. As in the real engine, an
//! end-of-generation token is produced ([`Generation::tokens`], its characters here) but not
//! evaluated into the cache.

use std::collections::VecDeque;
use std::ops::ControlFlow;

use std::ops::Range;
use std::path::Path;

use super::{
    common_prefix, Backend, EngineError, GenerateRequest, Generation, ModelInfo, Prompt,
    StopMatcher, StopReason, StopScan, TextSink, Token,
};

/// One canned reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptedReply {
    /// Text the "model" produces.
    pub text: String,
    /// How the reply ends (e.g. `EndOfGeneration("<|eot_id|>")`).
    pub stop: StopReason,
}

impl ScriptedReply {
    /// A reply that ends its turn with `end_token`.
    pub fn ending_with(text: &str, end_token: &str) -> Self {
        Self {
            text: text.to_string(),
            stop: StopReason::EndOfGeneration(end_token.to_string()),
        }
    }
}

/// Answers a prompt (plain marks removed) once the canned replies are used up.
pub type Responder = Box<dyn FnMut(&str) -> ScriptedReply + Send>;

/// Test double for [`Backend`].
pub struct ScriptedBackend {
    info: ModelInfo,
    replies: VecDeque<ScriptedReply>,
    responder: Option<Responder>,
    prompts: Vec<String>,
    raw_prompts: Vec<String>,
    caches: Vec<Vec<Token>>,
}

impl std::fmt::Debug for ScriptedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedBackend")
            .field("info", &self.info)
            .field("replies", &self.replies.len())
            .field("responder", &self.responder.is_some())
            .field("prompts", &self.prompts.len())
            .finish()
    }
}

impl ScriptedBackend {
    /// A backend that will answer with `replies`, in order.
    pub fn new(replies: impl IntoIterator<Item = ScriptedReply>) -> Self {
        Self {
            info: ModelInfo {
                name: "scripted".into(),
                context_tokens: 8192,
                trained_context_tokens: 8192,
                chat_template: None,
                control_tokens: Vec::new(),
                kv_cache_bytes: 0,
                sequences: 1,
            },
            replies: replies.into_iter().collect(),
            responder: None,
            prompts: Vec::new(),
            raw_prompts: Vec::new(),
            caches: vec![Vec::new()],
        }
    }

    /// This backend keeping `sequences` caches.
    #[must_use]
    pub fn with_sequences(mut self, sequences: usize) -> Self {
        self.info.sequences = sequences.max(1);
        self.caches = vec![Vec::new(); self.info.sequences];
        self
    }

    fn cache_mut(&mut self, sequence: usize) -> Result<&mut Vec<Token>, EngineError> {
        let sequences = self.caches.len();
        self.caches
            .get_mut(sequence)
            .ok_or(EngineError::NoSuchSequence {
                sequence,
                sequences,
            })
    }

    /// This backend answering with `responder` once the canned replies are used up.
    #[must_use]
    pub fn with_responder(
        mut self,
        responder: impl FnMut(&str) -> ScriptedReply + Send + 'static,
    ) -> Self {
        self.responder = Some(Box::new(responder));
        self
    }

    /// This backend with a `tokens`-token window: a prompt that does not fit, or a reply that
    /// would run past it, fails as the real engine does.
    #[must_use]
    pub fn with_context_tokens(mut self, tokens: usize) -> Self {
        self.info.context_tokens = tokens;
        self.info.trained_context_tokens = tokens;
        self
    }

    /// This backend claiming a vocabulary with these control tokens.
    #[must_use]
    pub fn with_control_tokens(mut self, texts: &[&str]) -> Self {
        self.info.control_tokens = texts.iter().map(|t| (*t).to_owned()).collect();
        self
    }

    /// Every prompt received so far (plain marks removed), in order.
    pub fn prompts(&self) -> &[String] {
        &self.prompts
    }

    /// Every prompt received so far exactly as given (plain marks kept), in order.
    pub fn raw_prompts(&self) -> &[String] {
        &self.raw_prompts
    }

    /// Replies not yet used.
    pub fn remaining(&self) -> usize {
        self.replies.len()
    }

    fn char_tokens(text: &str) -> Vec<Token> {
        text.chars().map(|c| c as Token).collect()
    }

    fn text_of(tokens: &[Token]) -> Result<String, EngineError> {
        tokens
            .iter()
            .map(|&t| {
                u32::try_from(t)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or(EngineError::BadToken {
                        token: t,
                        vocab: 0x11_0000,
                    })
            })
            .collect()
    }
}

impl Backend for ScriptedBackend {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn tokenize(&mut self, text: &str, special: bool) -> Result<Vec<Token>, EngineError> {
        if special {
            Ok(Self::char_tokens(text))
        } else {
            Ok(Self::char_tokens(&corral_prompts::plain::unmark(text)))
        }
    }

    fn tokenize_continuation(&mut self, text: &str) -> Result<Vec<Token>, EngineError> {
        Ok(Self::char_tokens(text))
    }

    fn generate(
        &mut self,
        request: &GenerateRequest,
        sink: &mut TextSink<'_>,
    ) -> Result<Generation, EngineError> {
        request.sampling.validate()?;
        let prompt = match &request.prompt {
            Prompt::Text(text) => Self::char_tokens(text),
            Prompt::Tokens(tokens) => tokens.clone(),
        };
        let raw = Self::text_of(&prompt)?;
        let context = self.info.context_tokens;
        if prompt.len() >= context {
            return Err(EngineError::PromptTooLong {
                prompt: prompt.len(),
                context,
            });
        }
        self.prompts
            .push(corral_prompts::plain::unmark(&raw).into_owned());
        self.raw_prompts.push(raw);
        let reused = common_prefix(self.cache_mut(request.sequence)?, &prompt);
        let reply = match (self.replies.pop_front(), self.responder.as_mut()) {
            (Some(reply), _) => reply,
            (None, Some(responder)) => responder(self.prompts.last().map_or("", String::as_str)),
            (None, None) => return Err(EngineError::ScriptExhausted),
        };
        let room = context - prompt.len();
        let mut matcher = StopMatcher::new(&request.stop_strings);
        let mut text = String::new();
        let mut generated = 0;
        let mut stop = reply.stop.clone();
        for ch in reply.text.chars() {
            if request.cancel.is_cancelled() {
                stop = StopReason::Cancelled;
                break;
            }
            if request.max_tokens.is_some_and(|max| generated >= max) || generated >= room {
                stop = StopReason::MaxTokens;
                break;
            }
            generated += 1;
            let (emit, stopped) = match matcher.push(ch.encode_utf8(&mut [0; 4])) {
                StopScan::Continue(emit) => (emit, None),
                StopScan::Stopped { emit, stop } => (emit, Some(stop)),
            };
            text.push_str(&emit);
            if !emit.is_empty() && sink(&emit) == ControlFlow::Break(()) {
                stop = StopReason::Cancelled;
                break;
            }
            if let Some(s) = stopped {
                stop = StopReason::StopString(s);
                break;
            }
        }
        if !matches!(stop, StopReason::StopString(_) | StopReason::Cancelled) {
            let rest = matcher.finish();
            if !rest.is_empty() {
                let _ = sink(&rest);
                text.push_str(&rest);
            }
        }
        let mut tokens = Self::char_tokens(&text);
        let cache = self.cache_mut(request.sequence)?;
        *cache = prompt.clone();
        cache.extend_from_slice(&tokens);
        if let StopReason::EndOfGeneration(end) = &stop {
            tokens.extend(Self::char_tokens(end));
        }
        Ok(Generation {
            text,
            tokens,
            stop,
            prompt_tokens: prompt.len(),
            reused_tokens: reused,
            generated_tokens: generated,
            prompt_seconds: 0.0,
            generate_seconds: 0.0,
            forced_tokens: 0,
            forced_seconds: 0.0,
            constrained: false,
        })
    }

    fn cached_tokens(&self, sequence: usize) -> usize {
        self.caches.get(sequence).map_or(0, Vec::len)
    }

    fn truncate_cache(&mut self, sequence: usize, keep: usize) -> Result<(), EngineError> {
        self.cache_mut(sequence)?.truncate(keep);
        Ok(())
    }

    fn remove_tokens(&mut self, sequence: usize, range: Range<usize>) -> Result<(), EngineError> {
        let cache = self.cache_mut(sequence)?;
        if range.start > range.end || range.end > cache.len() {
            return Err(EngineError::BadRange {
                start: range.start,
                end: range.end,
                len: cache.len(),
            });
        }
        cache.drain(range);
        Ok(())
    }

    fn save_sequence(&mut self, sequence: usize, path: &Path) -> Result<u64, EngineError> {
        let json = serde_json::to_vec(self.cache_mut(sequence)?).unwrap_or_default();
        std::fs::write(path, &json).map_err(|e| EngineError::State {
            action: "save",
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(json.len() as u64)
    }

    fn restore_sequence(&mut self, sequence: usize, path: &Path) -> Result<usize, EngineError> {
        let failed = |reason: String| EngineError::State {
            action: "restore",
            path: path.display().to_string(),
            reason,
        };
        self.cache_mut(sequence)?.clear();
        let bytes = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
        let tokens: Vec<Token> =
            serde_json::from_slice(&bytes).map_err(|e| failed(e.to_string()))?;
        let cache = self.cache_mut(sequence)?;
        *cache = tokens;
        Ok(cache.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::generate_to_string;

    fn request(prompt: &str) -> GenerateRequest {
        GenerateRequest {
            prompt: prompt.into(),
            ..GenerateRequest::default()
        }
    }

    #[test]
    fn replays_replies_and_records_prompts() {
        let mut backend = ScriptedBackend::new([
            ScriptedReply::ending_with("first", "<|eot_id|>"),
            ScriptedReply::ending_with("second", "<|eom_id|>"),
        ]);
        let one = generate_to_string(&mut backend, &request("p1")).unwrap();
        let two = generate_to_string(&mut backend, &request("p1first p2")).unwrap();
        assert_eq!(one.text, "first");
        assert_eq!(two.stop, StopReason::EndOfGeneration("<|eom_id|>".into()));
        assert_eq!(backend.prompts(), ["p1", "p1first p2"]);
        // The cache held "p1" + "first": the second prompt reuses all of it.
        assert_eq!(two.reused_tokens, "p1first".len());
    }

    #[test]
    fn honours_stop_strings_max_tokens_and_cancellation() {
        let mut backend = ScriptedBackend::new([
            ScriptedReply::ending_with("abc STOP def", "<|eot_id|>"),
            ScriptedReply::ending_with("abcdef", "<|eot_id|>"),
            ScriptedReply::ending_with("abcdef", "<|eot_id|>"),
        ]);
        let mut req = request("x");
        req.stop_strings = vec!["STOP".into()];
        let g = generate_to_string(&mut backend, &req).unwrap();
        assert_eq!(
            (g.text.as_str(), g.stop),
            ("abc ", StopReason::StopString("STOP".into()))
        );

        let mut req = request("x");
        req.max_tokens = Some(3);
        let g = generate_to_string(&mut backend, &req).unwrap();
        assert_eq!((g.text.as_str(), g.stop), ("abc", StopReason::MaxTokens));

        let mut seen = 0;
        let g = backend
            .generate(&request("x"), &mut |_| {
                seen += 1;
                ControlFlow::Break(())
            })
            .unwrap();
        assert_eq!((seen, g.stop), (1, StopReason::Cancelled));
    }

    #[test]
    fn running_out_of_replies_is_an_error_not_a_panic() {
        let mut backend = ScriptedBackend::new([]);
        let err = generate_to_string(&mut backend, &request("x")).unwrap_err();
        assert!(matches!(err, EngineError::ScriptExhausted), "{err}");
        assert!(!err.is_usage());
    }
}
