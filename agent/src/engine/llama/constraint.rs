//! Constrained tool calls in the llama.cpp engine: an llguidance matcher over a
//! [`ToolConstraint`]'s Lark grammar, engaged from the first token or lazily on a trigger.
//!
//! Lazy constraints let the model answer in plain text; the engine watches what it generates and
//! engages the matcher when a trigger shows up (a special token such as `<|python_tag|>`, or text
//! such as `{"` at the start of the turn). Text already generated from the trigger on is fed to
//! the matcher first, so the grammar sees the whole call. The matcher masks every later token, so
//! only calls to known tools with schema-valid arguments can follow.

use std::collections::HashMap;

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
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
            .map_err(|e| EngineError::Inference(format!("cannot prepare constraints: {e}")))?;
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
                let parser =
                    self.factory.create_parser(TopLevelGrammar::from_lark(lark.to_string()));
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
pub(super) struct ConstraintTracker<'c> {
    constraint: &'c ToolConstraint,
    engaged: bool,
    /// A lazy constraint whose start-of-turn triggers can no longer match.
    text_at_start_ruled_out: bool,
}

/// What to do after a token.
pub(super) enum Engage {
    /// Nothing changes.
    No,
    /// Put this matcher in front of the sampler chain.
    With(Matcher),
}

impl<'c> ConstraintTracker<'c> {
    pub(super) fn new(constraint: &'c ToolConstraint) -> Self {
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
    pub(super) fn immediate(&mut self, factory: &mut GrammarFactory) -> Result<Option<Matcher>, EngineError> {
        if self.constraint.is_lazy() {
            return Ok(None);
        }
        let matcher = factory.matcher(&self.constraint.lark, &[]).map_err(EngineError::Inference)?;
        self.engaged = true;
        Ok(Some(matcher))
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
                Engage::With(matcher)
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
