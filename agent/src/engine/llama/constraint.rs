//! Constrained tool calls in the llama.cpp engine: an llguidance matcher over a
//! [`ToolConstraint`]'s Lark grammar, engaged from the first token or lazily on a trigger.
//!
//! Lazy constraints let the model answer in plain text; the engine watches what it generates and
//! engages the matcher when a trigger shows up (a special token such as `<|python_tag|>`, or text
//! such as `{"` at the start of the turn). Text already generated from the trigger on is fed to
//! the matcher first, so the grammar sees the whole call. The matcher masks every later token, so
//! only calls to known tools with schema-valid arguments can follow.
//!
//! # Cost
//! An engaged constraint is a [`Guide`], which the engine drives itself rather than hiding the
//! matcher in llama.cpp's sampler chain, for two reasons:
//! - Much of a call is text the grammar forces (`<tool_call>\n{"name": "get_weather",
//!   "arguments": {"city": "`). [`Guide::forced`] hands those tokens over without sampling, so
//!   the engine evaluates them in one batch, far cheaper than one decode step each.
//! - Where the model does choose, the sampler runs over the tokens the mask allows (often a
//!   handful), not over the whole vocabulary with the rest set to minus infinity. The result is
//!   the same: excluded tokens have probability zero either way.
//!
//! Computing a mask costs llguidance a fraction of a millisecond per token, small against a
//! decode step (the generation bench measures both). The one-off costs are walking the
//! vocabulary for the token trie (once per model, [`GrammarFactory::new`]) and compiling each
//! grammar (once per tool set: compiled matchers are cached and cloned).

use std::collections::HashMap;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};

use crate::engine::{EngineError, Token};
use corral_prompts::{ToolConstraint, TriggerKind};

/// The parser factory for one model: its token trie is built once (a walk over the vocabulary)
/// and shared by every constraint.
pub(super) struct GrammarFactory {
    factory: ParserFactory,
    /// Fresh matchers by grammar text: an agent sends the same tools turn after turn, so each
    /// grammar is compiled once and cloned afterwards.
    compiled: HashMap<String, Matcher>,
}

/// Compiled grammars kept at most (a handful of tool sets per session is typical).
const MAX_COMPILED_GRAMMARS: usize = 16;

impl GrammarFactory {
    pub(super) fn new(model: &LlamaModel) -> Result<Self, EngineError> {
        let tok_env = LlamaSampler::llguidance_tok_env(model);
        let mut factory = ParserFactory::new_simple(&tok_env)
            .map_err(|e| EngineError::Constraint(format!("cannot prepare constraints: {e}")))?;
        factory.quiet();
        Ok(Self {
            factory,
            compiled: HashMap::new(),
        })
    }

    /// A matcher for `lark`, having consumed `prefix` (tokens already generated that the grammar
    /// must match first).
    fn matcher(&mut self, lark: &str, prefix: &[Token]) -> Result<Matcher, String> {
        let mut matcher = match self.compiled.get(lark) {
            Some(fresh) => fresh.deep_clone(),
            None => {
                let parser = self
                    .factory
                    .create_parser(TopLevelGrammar::from_lark(lark.to_string()));
                let fresh = Matcher::new(parser);
                if let Some(err) = fresh.get_error() {
                    return Err(format!("the tool-call grammar does not compile: {err}"));
                }
                if self.compiled.len() >= MAX_COMPILED_GRAMMARS {
                    self.compiled.clear();
                }
                self.compiled.insert(lark.to_string(), fresh.deep_clone());
                fresh
            }
        };
        let prefix: Vec<u32> = prefix.iter().map(|&t| t as u32).collect();
        matcher
            .consume_tokens(&prefix)
            .map_err(|e| format!("generated text does not start a valid call: {e}"))?;
        Ok(matcher)
    }
}

/// Where a constraint stands during one generation.
pub(super) struct ConstraintTracker {
    constraint: ToolConstraint,
    engaged: bool,
    /// A lazy constraint whose start-of-turn triggers can no longer match.
    text_at_start_ruled_out: bool,
}

/// What to do after a token.
pub(super) enum Engage {
    /// Nothing changes.
    No,
    /// Sample through this guide from now on.
    With(Box<Guide>),
}

impl ConstraintTracker {
    pub(super) fn new(constraint: ToolConstraint) -> Self {
        Self {
            constraint,
            engaged: false,
            text_at_start_ruled_out: false,
        }
    }

    pub(super) fn engaged(&self) -> bool {
        self.engaged
    }

    /// For an immediate constraint: the matcher to use from the first token.
    pub(super) fn immediate(
        &mut self,
        factory: &mut GrammarFactory,
    ) -> Result<Option<Guide>, EngineError> {
        if self.constraint.is_lazy() {
            return Ok(None);
        }
        let matcher = factory
            .matcher(&self.constraint.lark, &[])
            .map_err(EngineError::Constraint)?;
        self.engaged = true;
        Ok(Some(Guide::new(matcher, None)))
    }

    /// Called after each sampled token with its text (`piece`) and the whole text generated so
    /// far (`text`, special tokens included). `retokenize` turns text into token ids.
    pub(super) fn after_token(
        &mut self,
        factory: &mut GrammarFactory,
        piece: &str,
        text: &str,
        retokenize: impl Fn(&str) -> Vec<Token>,
    ) -> Engage {
        if self.engaged || !self.constraint.is_lazy() {
            return Engage::No;
        }
        let Some(from) = self.trigger_position(piece, text) else {
            return Engage::No;
        };
        let prefix = retokenize(&text[from..]);
        match factory.matcher(&self.constraint.lark, &prefix) {
            Ok(matcher) => {
                self.engaged = true;
                Engage::With(Box::new(Guide::new(matcher, prefix.last().copied())))
            }
            // The text cannot become a valid call: leave it to the parser to report.
            Err(_) => {
                self.text_at_start_ruled_out = true;
                Engage::No
            }
        }
    }

    /// Byte offset in `text` from which the grammar matches, if a trigger just fired.
    fn trigger_position(&mut self, piece: &str, text: &str) -> Option<usize> {
        let start = text.len() - text.trim_start().len();
        for trigger in &self.constraint.triggers {
            match trigger.kind {
                // The grammar matches what follows the special token.
                TriggerKind::SpecialToken if piece == trigger.text => return Some(text.len()),
                TriggerKind::TextAtStart if !self.text_at_start_ruled_out => {
                    let head = &text[start..];
                    if head.starts_with(trigger.text.as_str()) {
                        return Some(start);
                    }
                }
                TriggerKind::Text => {
                    // Only look where the new piece could have completed the trigger, so a
                    // trigger that failed to start a call is not retried on every token.
                    let mut window = text.len().saturating_sub(piece.len() + trigger.text.len());
                    while !text.is_char_boundary(window) {
                        window -= 1;
                    }
                    if let Some(at) = text[window..].find(trigger.text.as_str()) {
                        return Some(window + at);
                    }
                }
                _ => {}
            }
        }
        let head = &text[start..];
        if !head.is_empty()
            && !self.constraint.triggers.iter().any(|t| {
                t.kind == TriggerKind::TextAtStart
                    && (t.text.starts_with(head) || head.starts_with(t.text.as_str()))
            })
        {
            self.text_at_start_ruled_out = true;
        }
        None
    }
}

/// An engaged constraint: picks or forces each next token so the output stays in the grammar.
pub(super) struct Guide {
    matcher: Matcher,
    /// The last token the matcher consumed, re-tokenised with forced text (see [`Guide::forced`]).
    last: Option<Token>,
}

impl Guide {
    fn new(matcher: Matcher, last: Option<Token>) -> Self {
        Self { matcher, last }
    }

    /// Tokens the grammar forces next, to append without sampling (empty when the model has a
    /// choice). `tokenize` is the model's tokenizer (special tokens not parsed).
    ///
    /// The forced text is tokenised together with the last token, so the split matches what the
    /// model would write (`{"` rather than `{` then `"`), and it is used only if that token comes
    /// out unchanged. The final token of the forced text is left to sampling: a longer token
    /// might merge it with what follows. Every token is checked against the grammar.
    pub(super) fn forced(&mut self, tokenize: impl Fn(&[u8]) -> Vec<Token>) -> Vec<Token> {
        let mut bytes = self.matcher.compute_ff_bytes();
        // A special token (marked 0xFF by the token trie) is sampled, not tokenised from text.
        if let Some(special) = bytes.iter().position(|&b| b == 0xFF) {
            bytes.truncate(special);
        }
        if bytes.is_empty() {
            return Vec::new();
        }
        let mut tokens = match self.last {
            Some(last) => {
                let mut text = self.token_bytes(last);
                text.extend_from_slice(&bytes);
                let tokens = tokenize(&text);
                if tokens.first() != Some(&last) {
                    return Vec::new();
                }
                tokens[1..].to_vec()
            }
            None => tokenize(&bytes),
        };
        tokens.pop();
        let as_ids: Vec<u32> = tokens.iter().map(|&t| t as u32).collect();
        let valid = self.matcher.validate_tokens(&as_ids).unwrap_or(0);
        tokens.truncate(valid);
        tokens
    }

    /// Samples the next token with `sampler` among those the grammar allows, and lets the
    /// sampler see it. Falls back to unconstrained sampling if the matcher failed.
    /// Samples from the logits at output `index` of the last decode, among the tokens the
    /// grammar allows.
    pub(super) fn sample(
        &mut self,
        ctx: &LlamaContext<'_>,
        sampler: &mut LlamaSampler,
        index: i32,
    ) -> Token {
        let Ok(mask) = self.matcher.compute_mask_or_eos() else {
            return sampler.sample(ctx, index).0;
        };
        let logits = ctx.get_logits_ith(index);
        let mut allowed = Vec::with_capacity(mask.num_set().min(logits.len()));
        mask.iter_set_entries(|id| {
            if let (Some(&logit), Ok(token)) = (logits.get(id), i32::try_from(id)) {
                allowed.push(LlamaTokenData::new(LlamaToken(token), logit, 0.0));
            }
        });
        if allowed.is_empty() {
            return sampler.sample(ctx, index).0;
        }
        let mut candidates = LlamaTokenDataArray::new(allowed, false);
        candidates.apply_sampler(sampler);
        let token = candidates
            .selected_token()
            .unwrap_or_else(|| candidates.data[0].id());
        sampler.accept(token);
        token.0
    }

    /// Advances the grammar past `token` (sampled or forced).
    pub(super) fn accept(&mut self, token: Token) {
        // Consuming into a stopped matcher errors and poisons it; it only allows EOS then.
        if !self.matcher.is_stopped() {
            let _ = self.matcher.consume_token(token as u32);
        }
        self.last = Some(token);
    }

    fn token_bytes(&self, token: Token) -> Vec<u8> {
        self.matcher
            .tok_env()
            .map(|env| env.tok_trie().decode_raw(&[token as u32]))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use llguidance::toktrie::ApproximateTokEnv;

    use super::*;

    /// A matcher over llguidance's test vocabulary: one token per byte (token id = byte), then
    /// special tokens from 256 (`<|tool|>` is 256).
    fn guide(lark: &str) -> Guide {
        let env = ApproximateTokEnv::single_byte_env();
        let mut factory = ParserFactory::new_simple(&env).unwrap();
        factory.quiet();
        let matcher =
            Matcher::new(factory.create_parser(TopLevelGrammar::from_lark(lark.to_string())));
        assert!(matcher.get_error().is_none(), "{:?}", matcher.get_error());
        Guide::new(matcher, None)
    }

    fn bytes(tokens: &[Token]) -> String {
        tokens.iter().map(|&t| t as u8 as char).collect()
    }

    fn by_byte(text: &[u8]) -> Vec<Token> {
        text.iter().map(|&b| Token::from(b)).collect()
    }

    #[test]
    fn forced_text_is_handed_over_but_its_last_token() {
        let mut guide = guide("start: \"{\\\"name\\\": \" /[a-z]+/");
        let forced = guide.forced(by_byte);
        // The last byte of the forced text might merge with what the model writes next.
        assert_eq!(bytes(&forced), "{\"name\":");
        for &token in &forced {
            guide.accept(token);
        }
        // The space is forced on its own now: re-tokenised with the last token, it is kept back.
        assert!(guide.forced(by_byte).is_empty());
        guide.accept(Token::from(b' '));
        // Where the model has a choice, nothing is forced.
        assert!(guide.forced(by_byte).is_empty());
    }

    #[test]
    fn forced_tokens_the_grammar_rejects_are_dropped() {
        let mut guide = guide("start: \"abcd\" /[0-9]/");
        // A tokenizer that splits differently from the grammar: only the valid prefix stays.
        let wrong = |text: &[u8]| -> Vec<Token> {
            let mut tokens = by_byte(text);
            tokens[1] = Token::from(b'x');
            tokens
        };
        assert_eq!(bytes(&guide.forced(wrong)), "a");
    }

    #[test]
    fn nothing_is_forced_past_a_special_token() {
        let mut guide = guide("start: \"ab\" <|tool|> \"cd\"");
        assert_eq!(bytes(&guide.forced(by_byte)), "a");
        for token in by_byte(b"ab") {
            guide.accept(token);
        }
        assert!(guide.forced(by_byte).is_empty());
    }

    #[test]
    fn a_retokenised_last_token_that_changes_forces_nothing() {
        let mut guide = guide("start: \"abcd\"");
        guide.accept(Token::from(b'a'));
        // The tokenizer merges the last token with the forced text: leave it to sampling.
        let merging = |text: &[u8]| -> Vec<Token> {
            let mut tokens = by_byte(&text[1..]);
            tokens.insert(0, 300);
            tokens
        };
        assert!(guide.forced(merging).is_empty());
        assert_eq!(bytes(&guide.forced(by_byte)), "bc");
    }
}
