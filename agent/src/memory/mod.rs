//! Conversation memory: what of a long conversation the model sees, within its context window.
//!
//! The window is split into regions, counted in the loaded model's own tokens:
//! - **pinned**: the system prompt, the tool definitions and the language directive; never
//!   evicted, rendered byte-identically on every step;
//! - **summary**: a bounded rolling summary of evicted turns, right after the pinned text;
//! - **recent**: whole turns (a user message and everything done for it, calls and results
//!   together), oldest first;
//! - **reserve**: room for the reply.
//!
//! [`Memory::make_room`] runs before every model call that would cross the high watermark (also
//! inside a long tool loop): the oldest turns are evicted down to the low watermark and folded
//! into the summary; when the current turn alone is too big, its oldest tool results are
//! shortened, then its older steps folded, then its results cut further, the summary shortened,
//! and last the newest message itself cut, each at a grapheme boundary with a marker the model
//! can read. Every action is reported
//! ([`MemoryReport`]); the caller's conversation is never changed, only the model's view of it
//! ([`Memory::view`]).

pub mod language;
pub mod samples;
mod summary;
mod within_turn;

use std::collections::{BTreeMap, BTreeSet};

use corral_prompts::{ControlTexts, Conversation, Format, Message, Role, ToolOutput};
use serde::{Deserialize, Serialize};
use unicode_segmentation::UnicodeSegmentation;

use crate::engine::Backend;
pub use language::{Language, LanguageChange, LanguageTracker};
pub use summary::{fallback_summary, ModelSummariser, Summariser, SummaryRequest};

/// Default high watermark: a prompt above this share of the usable window (window − reserve)
/// triggers an eviction.
pub const HIGH_WATERMARK: f64 = 0.9;
/// Default low watermark: an eviction frees turns until the prompt is below this share. The gap
/// to the high mark (30% of the window) makes evictions rare and batched: each one re-evaluates
/// at most the kept 60%, once per 30% of new text, instead of on every turn.
pub const LOW_WATERMARK: f64 = 0.6;

/// The marker that ends a text memory cut to fit.
pub const CUT_MARKER: &str = "[… cut by corral to fit the context window]";

/// How memory budgets the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemorySettings {
    /// The context window, in tokens.
    pub window: usize,
    /// Tokens kept free for the reply.
    pub reserve: usize,
    /// High watermark, a share of `window - reserve`.
    pub high: f64,
    /// Low watermark, a share of `window - reserve`.
    pub low: f64,
    /// Most tokens the summary may take.
    pub summary_tokens: usize,
    /// Fold evicted turns into a summary (`false`: drop them; the kept turns are then shifted
    /// in place in the KV cache instead of evaluated again).
    pub summarise: bool,
    /// What a shortened tool result keeps, in bytes.
    pub short_result_bytes: usize,
    /// When an eviction leaves the summary as it was (summaries off), remove the evicted
    /// tokens from the KV cache and shift the kept ones down (`seq_rm` + `seq_add`) instead of
    /// evaluating them again.
    #[serde(default = "yes")]
    pub shift_in_place: bool,
}

fn yes() -> bool {
    true
}

impl MemorySettings {
    /// The defaults for a `window`-token context and replies of up to `reserve` tokens: the
    /// watermarks above, a summary of at most an eighth of the usable window (64 to 1024
    /// tokens), summaries on.
    pub fn for_window(window: usize, reserve: usize) -> MemorySettings {
        let usable = window.saturating_sub(reserve);
        MemorySettings {
            window,
            reserve,
            high: HIGH_WATERMARK,
            low: LOW_WATERMARK,
            summary_tokens: (usable / 8).clamp(64, 1024),
            summarise: true,
            short_result_bytes: 512,
            shift_in_place: true,
        }
    }

    fn usable(&self) -> usize {
        self.window.saturating_sub(self.reserve)
    }

    /// Prompt tokens above which room is made.
    pub fn high_mark(&self) -> usize {
        (self.usable() as f64 * self.high) as usize
    }

    /// Prompt tokens an eviction aims under.
    pub fn low_mark(&self) -> usize {
        (self.usable() as f64 * self.low) as usize
    }
}

/// Tokens per region of the last prompt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Regions {
    /// System prompt, tools, language directive (with the framing of the first user message).
    pub pinned: usize,
    /// The rolling summary.
    pub summary: usize,
    /// The kept turns.
    pub recent: usize,
    /// Kept for the reply.
    pub reserve: usize,
    /// Left over.
    pub free: usize,
}

/// What memory did to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryAction {
    /// Whole old turns left the window (folded into the summary when summaries are on).
    Evicted,
    /// Tool results of the current turn were shortened.
    Shortened,
    /// Older steps of the current turn were folded into the summary.
    Folded,
    /// The newest message (or the last step's results) was cut.
    Cut,
}

/// How the summary was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SummaryBy {
    /// Summaries are off: what left was dropped.
    None,
    /// The loaded model wrote it.
    Model,
    /// The model failed or returned nothing: the deterministic first-sentences fallback.
    Fallback,
}

/// One thing memory did, for the agent's `memory` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryReport {
    /// What.
    pub action: MemoryAction,
    /// What was dropped, in words.
    pub dropped: String,
    /// Turns evicted by this action.
    pub turns: usize,
    /// How the summary was written (for evictions and folds).
    pub summary_by: SummaryBy,
    /// Why the summariser failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary_error: Option<String>,
    /// Prompt tokens before.
    pub before: usize,
    /// Prompt tokens after.
    pub after: usize,
}

/// Why memory could not make the prompt fit.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// Rendering or tokenizing failed.
    #[error("memory cannot measure the conversation: {0}")]
    Measure(String),
    /// Even cut down to the newest message and pinned text, it does not fit.
    #[error(
        "the pinned text and the newest message take {tokens} tokens, and the {window}-token \
         window keeps {reserve} for the reply: raise --ctx or offer fewer tools"
    )]
    TooBig {
        /// Tokens of the smallest prompt.
        tokens: usize,
        /// The window.
        window: usize,
        /// The reserve.
        reserve: usize,
    },
}

/// What memory needs to measure a view: the backend's tokenizer and the format.
pub struct Measure<'m> {
    /// Tokenizes (and, for summaries, generates).
    pub backend: &'m mut dyn Backend,
    /// Renders.
    pub format: &'m dyn Format,
    /// The vocabulary's control texts (untrusted text is rendered plain).
    pub controls: &'m ControlTexts,
}

impl Measure<'_> {
    /// Prompt tokens of `view` with the generation prompt.
    ///
    /// # Errors
    /// It cannot be rendered or tokenized.
    pub fn count(&mut self, view: &Conversation) -> Result<usize, MemoryError> {
        let rendered = self
            .format
            .render(&view.plain_marked(self.controls), true)
            .map_err(|e| MemoryError::Measure(e.to_string()))?;
        self.backend
            .tokenize(&rendered, true)
            .map(|t| t.len())
            .map_err(|e| MemoryError::Measure(e.to_string()))
    }

    fn text_tokens(&mut self, text: &str) -> usize {
        self.backend
            .tokenize_continuation(text)
            .map_or(text.len() / 3, |t| t.len())
    }
}

/// A conversation's memory: its language, summary, and which messages the model still sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// The budget.
    pub settings: MemorySettings,
    /// The conversation's language.
    pub language: LanguageTracker,
    /// The rolling summary of what left the window.
    pub summary: String,
    /// Index of the first message the model still sees (after the leading system message).
    pub first_kept: usize,
    /// Messages folded out of the current turn.
    pub hidden: BTreeSet<usize>,
    /// Messages the model sees cut down (index → text).
    pub shortened: BTreeMap<usize, String>,
    /// Turns evicted so far.
    pub evicted_turns: usize,
    /// Tokens per region of the last prompt.
    pub regions: Regions,
    /// User messages whose language was observed.
    observed: usize,
    /// Tokens of the pinned region (cached; `None` after the directive changed).
    #[serde(skip)]
    pinned_tokens: Option<usize>,
}

impl Memory {
    /// Empty memory with these settings.
    pub fn new(settings: MemorySettings) -> Memory {
        Memory {
            settings,
            language: LanguageTracker::default(),
            summary: String::new(),
            first_kept: 0,
            hidden: BTreeSet::new(),
            shortened: BTreeMap::new(),
            evicted_turns: 0,
            regions: Regions::default(),
            observed: 0,
            pinned_tokens: None,
        }
    }

    /// The system message changed: added (`delta` +1), removed (-1) or replaced (0). Every
    /// message index moves by `delta`, and the pinned region is measured again.
    pub fn system_changed(&mut self, delta: isize) {
        self.pinned_tokens = None;
        let moved = |i: usize| i.saturating_add_signed(delta);
        if self.first_kept > 0 {
            self.first_kept = moved(self.first_kept);
        }
        self.hidden = self.hidden.iter().map(|&i| moved(i)).collect();
        self.shortened = std::mem::take(&mut self.shortened)
            .into_iter()
            .map(|(i, t)| (moved(i), t))
            .collect();
        self.observed = moved(self.observed);
    }

    /// Forgets everything but the settings (a `/reset`).
    pub fn reset(&mut self) {
        *self = Memory::new(self.settings.clone());
    }

    /// Follows the language of user messages not seen yet; returns the last change.
    pub fn observe(&mut self, conversation: &Conversation) -> LanguageChange {
        // The conversation may have been shortened under us (a failed turn taken back).
        let len = conversation.messages.len();
        self.observed = self.observed.min(len);
        self.first_kept = self.first_kept.min(len);
        self.hidden.retain(|&i| i < len);
        self.shortened.retain(|&i, _| i < len);
        let mut change = LanguageChange::Kept;
        for message in &conversation.messages[self.observed..] {
            if let Message::User { content } = message {
                match self.language.observe(content) {
                    LanguageChange::Kept => {}
                    other => {
                        change = other;
                        self.pinned_tokens = None;
                    }
                }
            }
        }
        self.observed = conversation.messages.len();
        change
    }

    /// Sets the language by hand (`/lang de`); detection no longer changes it.
    pub fn set_language(&mut self, language: Language) {
        self.language.set(language, true);
        self.pinned_tokens = None;
    }

    /// The language directive, when the model needs one: for a conversation not in English, or
    /// a language chosen by hand. (English conversations get none, so a model's own default
    /// system prompt stays as it was.)
    pub fn directive(&self) -> Option<&'static str> {
        match self.language.current {
            Some(Language::En) if !self.language.fixed => None,
            Some(lang) => Some(lang.directive()),
            None => None,
        }
    }

    fn pinned_system(&self, conversation: &Conversation) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(Message::System { content }) = conversation.messages.first() {
            parts.push(content.clone());
        }
        if let Some(directive) = self.directive() {
            parts.push(directive.to_owned());
        }
        (!parts.is_empty()).then(|| parts.join("\n\n"))
    }

    /// The conversation as the model sees it: the pinned system text (the conversation's own
    /// system message and the language directive) with the summary after it, then the kept
    /// messages, folded ones left out and cut ones cut.
    pub fn view(&self, conversation: &Conversation) -> Conversation {
        self.view_with(
            conversation,
            self.first_kept,
            &self.hidden,
            &self.shortened,
            &self.summary,
        )
    }

    fn view_with(
        &self,
        conversation: &Conversation,
        first_kept: usize,
        hidden: &BTreeSet<usize>,
        shortened: &BTreeMap<usize, String>,
        summary: &str,
    ) -> Conversation {
        let mut messages = Vec::with_capacity(conversation.messages.len() + 1);
        let mut system = self.pinned_system(conversation);
        if !summary.is_empty() {
            let block = format!("Summary of the earlier conversation:\n{summary}");
            system = Some(match system {
                Some(pinned) => format!("{pinned}\n\n{block}"),
                None => block,
            });
        }
        if let Some(content) = system {
            messages.push(Message::System { content });
        }
        let start = self.body_start(conversation).max(first_kept);
        for (i, message) in conversation.messages.iter().enumerate().skip(start) {
            if hidden.contains(&i) {
                continue;
            }
            messages.push(as_cut(message, shortened.get(&i)));
        }
        Conversation {
            messages,
            tools: conversation.tools.clone(),
            builtin_tools: conversation.builtin_tools.clone(),
        }
    }

    /// Index of the first message after the leading system message.
    fn body_start(&self, conversation: &Conversation) -> usize {
        usize::from(matches!(
            conversation.messages.first(),
            Some(Message::System { .. })
        ))
    }

    /// Indexes of the user messages that start the kept turns.
    fn turn_starts(&self, conversation: &Conversation) -> Vec<usize> {
        let start = self.body_start(conversation).max(self.first_kept);
        conversation
            .messages
            .iter()
            .enumerate()
            .skip(start)
            .filter(|(_, m)| m.role() == Role::User)
            .map(|(i, _)| i)
            .collect()
    }

    /// Updates the region counts for a prompt of `prompt_tokens`.
    ///
    /// # Errors
    /// The pinned text cannot be measured.
    pub fn account(
        &mut self,
        conversation: &Conversation,
        prompt_tokens: usize,
        measure: &mut Measure<'_>,
    ) -> Result<Regions, MemoryError> {
        let pinned = match self.pinned_tokens {
            Some(p) => p,
            None => {
                // The pinned text alone, with the framing of an empty first user message (where
                // Llama 3.1 puts the tool list).
                let mut bare = self.view_with(
                    conversation,
                    conversation.messages.len(),
                    &BTreeSet::new(),
                    &BTreeMap::new(),
                    "",
                );
                bare.messages.push(Message::user(""));
                let p = measure.count(&bare)?;
                self.pinned_tokens = Some(p);
                p
            }
        };
        let summary = if self.summary.is_empty() {
            0
        } else {
            measure.text_tokens(&self.summary)
        };
        let recent = prompt_tokens.saturating_sub(pinned + summary);
        self.regions = Regions {
            pinned,
            summary,
            recent,
            reserve: self.settings.reserve,
            free: self
                .settings
                .window
                .saturating_sub(prompt_tokens + self.settings.reserve),
        };
        Ok(self.regions)
    }

    /// Whether a prompt of `tokens` is over the high watermark.
    pub fn over(&self, tokens: usize) -> bool {
        tokens > self.settings.high_mark()
    }

    /// Makes room when the prompt of `tokens` is over the high watermark: evicts old turns, or
    /// shortens, folds and cuts inside the current turn, down to the low watermark.
    ///
    /// # Errors
    /// Nothing more can go and it still does not fit ([`MemoryError::TooBig`]), or it cannot be
    /// measured.
    pub fn make_room(
        &mut self,
        conversation: &Conversation,
        tokens: usize,
        measure: &mut Measure<'_>,
        summariser: &mut dyn Summariser,
    ) -> Result<MemoryReport, MemoryError> {
        let turns = self.turn_starts(conversation);
        let summary_room = if self.settings.summarise {
            self.settings
                .summary_tokens
                .saturating_sub(measure.text_tokens(&self.summary))
        } else {
            0
        };
        let target = self.settings.low_mark().saturating_sub(summary_room);
        if turns.len() > 1 {
            return self.evict(conversation, &turns, tokens, target, measure, summariser);
        }
        let current = turns
            .first()
            .copied()
            .unwrap_or(conversation.messages.len());
        if let Some(report) = self.shorten_results(conversation, current, tokens, measure)? {
            return Ok(report);
        }
        if let Some(report) =
            self.fold_steps(conversation, current, tokens, target, measure, summariser)?
        {
            return Ok(report);
        }
        // Then cut: the current turn's tool results, the summary, and last the user's message.
        let results = |m: &Message| matches!(m, Message::Tool { .. });
        if let Ok(report) = self.cut_current(conversation, current, tokens, measure, &results) {
            return Ok(report);
        }
        let before = measure.count(&self.view(conversation))?;
        if let Some(report) = self.trim_summary(conversation, before, measure)? {
            if report.after <= self.settings.high_mark() {
                return Ok(report);
            }
        }
        let before = measure.count(&self.view(conversation))?;
        let user = |m: &Message| matches!(m, Message::User { .. });
        self.cut_current(conversation, current, before, measure, &user)
    }

    /// Evicts the fewest oldest turns that bring the prompt under `target` (all but the
    /// current one at most).
    fn evict(
        &mut self,
        conversation: &Conversation,
        turns: &[usize],
        before: usize,
        target: usize,
        measure: &mut Measure<'_>,
        summariser: &mut dyn Summariser,
    ) -> Result<MemoryReport, MemoryError> {
        // The prompt shrinks as more turns go: binary search for the fewest that suffice.
        let last = turns.len() - 1;
        let (mut lo, mut hi) = (1, last);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let view = self.view_with(
                conversation,
                turns[mid],
                &self.hidden,
                &self.shortened,
                &self.summary,
            );
            if measure.count(&view)? <= target {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        self.evict_until(conversation, turns[lo], lo, before, measure, summariser)
    }

    /// Folds every kept turn into the summary now (`/compact`): the model then sees only the
    /// pinned prefix and the summary until the next message. `None` when nothing is kept.
    ///
    /// # Errors
    /// The conversation cannot be measured.
    pub fn compact(
        &mut self,
        conversation: &Conversation,
        measure: &mut Measure<'_>,
        summariser: &mut dyn Summariser,
    ) -> Result<Option<MemoryReport>, MemoryError> {
        let turns = self.turn_starts(conversation).len();
        if turns == 0 {
            return Ok(None);
        }
        let before = measure.count(&self.view(conversation))?;
        let end = conversation.messages.len();
        self.evict_until(conversation, end, turns, before, measure, summariser)
            .map(Some)
    }

    /// Evicts the `k` kept turns before message `to`, folding them into the summary.
    fn evict_until(
        &mut self,
        conversation: &Conversation,
        to: usize,
        k: usize,
        before: usize,
        measure: &mut Measure<'_>,
        summariser: &mut dyn Summariser,
    ) -> Result<MemoryReport, MemoryError> {
        let from = self.body_start(conversation).max(self.first_kept);
        let gone: Vec<Message> = (from..to)
            .filter(|i| !self.hidden.contains(i))
            .map(|i| self.seen_text(conversation, i))
            .collect();
        let (summary_by, summary_error) = self.fold(&gone, measure, summariser);
        self.first_kept = to;
        self.hidden.retain(|&i| i >= to);
        self.shortened.retain(|&i, _| i >= to);
        self.evicted_turns += k;
        let after = measure.count(&self.view(conversation))?;
        Ok(MemoryReport {
            action: MemoryAction::Evicted,
            dropped: format!(
                "{k} oldest turn{} ({} messages, {} tokens)",
                plural(k),
                to - from,
                before.saturating_sub(after)
            ),
            turns: k,
            summary_by,
            summary_error,
            before,
            after,
        })
    }

    /// Message `i` as the model last saw it (cut text kept cut).
    fn seen_text(&self, conversation: &Conversation, i: usize) -> Message {
        as_cut(&conversation.messages[i], self.shortened.get(&i))
    }

    /// Folds `gone` into the summary, by the summariser or the fallback.
    fn fold(
        &mut self,
        gone: &[Message],
        measure: &mut Measure<'_>,
        summariser: &mut dyn Summariser,
    ) -> (SummaryBy, Option<String>) {
        if !self.settings.summarise {
            return (SummaryBy::None, None);
        }
        let request = SummaryRequest {
            previous: &self.summary,
            messages: gone,
            language: self.language.current.unwrap_or(Language::En),
            max_tokens: self.settings.summary_tokens,
        };
        let (text, by, error) = match summariser.summarise(&request, measure) {
            Ok(text) if !text.trim().is_empty() => (text.trim().to_owned(), SummaryBy::Model, None),
            Ok(_) => (
                fallback_summary(&request),
                SummaryBy::Fallback,
                Some("the summariser returned nothing".to_owned()),
            ),
            Err(e) => (fallback_summary(&request), SummaryBy::Fallback, Some(e)),
        };
        self.summary = self.bounded(&text, measure);
        (by, error)
    }

    /// `text` within the summary bound: whole lines from the end (the newest) first, then a
    /// grapheme-safe cut.
    fn bounded(&self, text: &str, measure: &mut Measure<'_>) -> String {
        let bound = self.settings.summary_tokens;
        if measure.text_tokens(text) <= bound {
            return text.to_owned();
        }
        let mut kept: Vec<&str> = Vec::new();
        for line in text.lines().rev() {
            kept.insert(0, line);
            if measure.text_tokens(&kept.join("\n")) > bound {
                kept.remove(0);
                break;
            }
        }
        if kept.is_empty() {
            let mut bytes = text.len();
            loop {
                bytes /= 2;
                let cut = cut_at_grapheme(text, bytes);
                if bytes == 0 || measure.text_tokens(&cut) <= bound {
                    return cut;
                }
            }
        }
        kept.join("\n")
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `message` with its text replaced by `cut` (tool results and user messages only).
fn as_cut(message: &Message, cut: Option<&String>) -> Message {
    match (cut, message) {
        (Some(text), Message::Tool { call_id, .. }) => Message::Tool {
            content: ToolOutput::Text(text.clone()),
            call_id: call_id.clone(),
        },
        (Some(text), Message::User { .. }) => Message::user(text.clone()),
        _ => message.clone(),
    }
}

/// A tool result's text (JSON results as JSON text).
pub(crate) fn tool_text(content: &ToolOutput) -> String {
    match content {
        ToolOutput::Text(t) => t.clone(),
        ToolOutput::Json(v) => v.to_string(),
    }
}

/// `text` cut to at most `max_bytes` at a grapheme boundary.
pub fn cut_at_grapheme(text: &str, max_bytes: usize) -> String {
    crate::agent::output::cap(text, max_bytes).0
}

/// `text` cut to about `max_bytes` at a grapheme boundary, ending with [`CUT_MARKER`] and how
/// much was cut, so the model can tell.
pub fn cut_with_marker(text: &str, max_bytes: usize) -> String {
    let kept = cut_at_grapheme(text, max_bytes);
    let gone = text[kept.len()..].graphemes(true).count();
    format!("{kept}\n{CUT_MARKER} ({gone} characters)")
}

#[cfg(test)]
mod tests;
