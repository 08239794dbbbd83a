//! The exact token ids of a conversation, kept across steps so nothing is re-tokenized.
//!
//! Formats render append-only: the prompt of step N+1 starts with the prompt of step N and the
//! text the model generated in it. A [`Transcript`] holds that text and the ids that stand for
//! it — the ids the model was fed and the ids it sampled. The next prompt is those ids plus the
//! tokens of the newly rendered suffix alone. Re-tokenizing generated text often gives other ids
//! (a word split differently, a special token's spelling read back as plain text), and the KV
//! cache would be lost from the first differing id on.

use serde::{Deserialize, Serialize};

use crate::engine::{Backend, EngineError, Generation, StopReason, Token};

/// Rendered text and the exact ids that stand for it.
///
/// Marks record where the text and the ids split cleanly (each step's start and end, and the
/// end of the pinned prefix), so a change in the middle re-tokenizes from the last mark before
/// it, and a removal between two marks can be shifted out of the KV cache instead.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transcript {
    text: String,
    tokens: Vec<Token>,
    /// (byte offset in `text`, index in `tokens`), ascending.
    marks: Vec<(usize, usize)>,
    /// Tokens the last prompt removed from the cache in place (0 when none).
    #[serde(skip)]
    shifted: usize,
}

impl Transcript {
    /// The ids so far.
    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// The rendered text (plain marks kept) the ids stand for.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Bytes `rendered` shares with the text so far, from the start (how much of a prompt this
    /// transcript's cache could serve).
    pub fn shared_prefix(&self, rendered: &str) -> usize {
        common_prefix_bytes(&self.text, rendered)
    }

    /// Tokens the last [`Transcript::prompt_for`] shifted out of the KV cache in place.
    pub fn shifted(&self) -> usize {
        self.shifted
    }

    /// The ids of `rendered`, the whole prompt of the next step:
    /// - the ids so far plus those of the suffix, when `rendered` continues the text so far;
    /// - when `shift` is on and `rendered` is the text so far with a span between two marks
    ///   removed: the ids without that span, removed from `sequence`'s KV cache in place (the
    ///   tokens after it shifted down, so they stay cached);
    /// - else the ids up to the last mark both texts share, and the rest tokenized anew.
    ///
    /// `splits`, byte offsets of `rendered` where messages start (the end of the pinned prefix,
    /// each end-of-turn token), become marks wherever text is tokenized anew, so a prompt
    /// rebuilt from a saved or pre-filled conversation can shift too.
    ///
    /// # Errors
    /// When the backend cannot tokenize or refuses the removal.
    pub fn prompt_for(
        &mut self,
        rendered: &str,
        splits: &[usize],
        backend: &mut dyn Backend,
        sequence: usize,
        shift: bool,
    ) -> Result<Vec<Token>, EngineError> {
        self.shifted = 0;
        if self.tokens.is_empty() {
            self.tokenize_all(rendered, splits, backend)?;
        } else if rendered.starts_with(self.text.as_str()) {
            self.extend_to(rendered, splits, backend)?;
        } else {
            let common = common_prefix_bytes(&self.text, rendered);
            if !(shift && self.remove_span(rendered, common, splits, backend, sequence)?) {
                self.retokenize_from(rendered, common, splits, backend)?;
            }
        }
        Ok(self.tokens.clone())
    }

    /// Tokenizes the rest of `rendered` (the text so far is its prefix) as a continuation, in
    /// pieces at `splits`, marking each.
    fn extend_to(
        &mut self,
        rendered: &str,
        splits: &[usize],
        backend: &mut dyn Backend,
    ) -> Result<(), EngineError> {
        let from = self.text.len();
        let ends = splits
            .iter()
            .copied()
            .filter(|&s| s > from && s < rendered.len() && rendered.is_char_boundary(s))
            .chain([rendered.len()]);
        for end in ends {
            let piece = &rendered[self.text.len()..end];
            if piece.is_empty() {
                continue;
            }
            let more = backend.tokenize_continuation(piece)?;
            self.tokens.extend(more);
            self.text.push_str(piece);
            self.mark();
        }
        Ok(())
    }

    fn mark(&mut self) {
        let here = (self.text.len(), self.tokens.len());
        if self.marks.last() != Some(&here) {
            self.marks.push(here);
        }
    }

    fn tokenize_all(
        &mut self,
        rendered: &str,
        splits: &[usize],
        backend: &mut dyn Backend,
    ) -> Result<(), EngineError> {
        self.text.clear();
        self.marks = vec![(0, 0)];
        // The first piece gets the BOS handling of a whole prompt; the rest continue it.
        let first = splits
            .iter()
            .copied()
            .find(|&s| s > 0 && s < rendered.len() && rendered.is_char_boundary(s))
            .unwrap_or(rendered.len());
        self.tokens = backend.tokenize(&rendered[..first], true)?;
        self.text.push_str(&rendered[..first]);
        self.mark();
        self.extend_to(rendered, splits, backend)
    }

    /// Removes a span between two marks that makes the text a prefix of `rendered` (then
    /// tokenizes what follows), when there is one: the smallest, as late as possible.
    fn remove_span(
        &mut self,
        rendered: &str,
        common: usize,
        splits: &[usize],
        backend: &mut dyn Backend,
        sequence: usize,
    ) -> Result<bool, EngineError> {
        let text = self.text.as_str();
        let found = self
            .marks
            .iter()
            .rev()
            .filter(|m| m.0 <= common)
            .find_map(|&(at, from)| {
                self.marks
                    .iter()
                    .filter(|m| m.0 > at && m.0 < text.len())
                    .find(|m| rendered[at..].starts_with(&text[m.0..]))
                    .map(|&(end, to)| (at, from, end, to))
            });
        let Some((at, from, end, to)) = found else {
            return Ok(false);
        };
        if backend.cached_tokens(sequence) >= to {
            backend.remove_tokens(sequence, from..to)?;
        }
        let (gone, removed) = (end - at, to - from);
        self.tokens.drain(from..to);
        self.text.replace_range(at..end, "");
        self.marks.retain(|m| m.0 <= at || m.0 >= end);
        for m in &mut self.marks {
            if m.0 >= end {
                m.0 -= gone;
                m.1 -= removed;
            }
        }
        self.marks.dedup();
        self.shifted = removed;
        self.extend_to(rendered, splits, backend)?;
        Ok(true)
    }

    fn retokenize_from(
        &mut self,
        rendered: &str,
        common: usize,
        splits: &[usize],
        backend: &mut dyn Backend,
    ) -> Result<(), EngineError> {
        let (at, keep) = self
            .marks
            .iter()
            .rev()
            .find(|m| m.0 <= common)
            .copied()
            .unwrap_or((0, 0));
        if keep == 0 {
            return self.tokenize_all(rendered, splits, backend);
        }
        self.tokens.truncate(keep);
        self.text.truncate(at);
        self.marks.retain(|m| m.0 <= at);
        self.extend_to(rendered, splits, backend)
    }

    /// Adds what the model generated after the last prompt. A reply that ended on its own end
    /// token, or ran out of its token budget, is rendered back exactly as generated; one cut
    /// short otherwise (cancelled, a stop string) is left out, and the next prompt tokenizes
    /// whatever the conversation then holds.
    pub fn record(&mut self, generation: &Generation) {
        match &generation.stop {
            StopReason::EndOfGeneration(end) => {
                self.text.push_str(&generation.text);
                self.text.push_str(end);
                self.tokens.extend_from_slice(&generation.tokens);
                self.mark();
            }
            StopReason::MaxTokens => {
                self.text.push_str(&generation.text);
                self.tokens.extend_from_slice(&generation.tokens);
                self.mark();
            }
            _ => {}
        }
    }
}

/// Bytes two texts share at the start, at a char boundary.
fn common_prefix_bytes(a: &str, b: &str) -> usize {
    let mut n = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    while !a.is_char_boundary(n) {
        n -= 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{GenerateRequest, ScriptedBackend, ScriptedReply};

    fn generate(backend: &mut ScriptedBackend, tokens: Vec<Token>) -> Generation {
        let request = GenerateRequest {
            prompt: tokens.into(),
            ..GenerateRequest::default()
        };
        crate::engine::generate_to_string(backend, &request).unwrap()
    }

    #[test]
    fn a_continued_prompt_appends_only_the_suffix_and_keeps_the_sampled_ids() {
        let mut backend = ScriptedBackend::new([
            ScriptedReply::ending_with("hi", "<e>"),
            ScriptedReply::ending_with("ok", "<e>"),
        ]);
        let mut transcript = Transcript::default();
        let first = transcript
            .prompt_for("<u>q", &[], &mut backend, 0, true)
            .unwrap();
        let generation = generate(&mut backend, first);
        transcript.record(&generation);
        assert_eq!(transcript.text(), "<u>qhi<e>");
        // Tamper with the ids the "model" produced: the next prompt must carry them as they
        // are, not re-tokenized from the text.
        let sampled_marker = transcript.tokens.len() - 1;
        transcript.tokens[sampled_marker] = 7;
        let second = transcript
            .prompt_for("<u>qhi<e><u>more", &[], &mut backend, 0, true)
            .unwrap();
        assert_eq!(second[sampled_marker], 7);
        assert_eq!(second.len(), "<u>qhi<e><u>more".len());
    }

    #[test]
    fn a_prompt_that_does_not_continue_the_text_is_tokenized_anew() {
        let mut backend = ScriptedBackend::new([ScriptedReply::ending_with("hi", "<e>")]);
        let mut transcript = Transcript::default();
        let first = transcript
            .prompt_for("<u>q", &[], &mut backend, 0, true)
            .unwrap();
        transcript.record(&generate(&mut backend, first));
        let fresh = transcript
            .prompt_for("<u>other", &[], &mut backend, 0, true)
            .unwrap();
        assert_eq!(fresh, backend.tokenize("<u>other", true).unwrap());
        assert_eq!(transcript.text(), "<u>other");
    }

    #[test]
    fn a_span_removed_between_marks_is_shifted_out_of_the_cache() {
        let mut backend = ScriptedBackend::new([
            ScriptedReply::ending_with("a1", "<e>"),
            ScriptedReply::ending_with("a2", "<e>"),
            ScriptedReply::ending_with("a3", "<e>"),
        ]);
        let mut t = Transcript::default();
        // "<s>" is the pinned prefix: `split` marks its end.
        let p1 = t
            .prompt_for("<s><u>one", &[3], &mut backend, 0, true)
            .unwrap();
        t.record(&generate(&mut backend, p1));
        let p2 = t
            .prompt_for("<s><u>onea1<e><u>two", &[], &mut backend, 0, true)
            .unwrap();
        t.record(&generate(&mut backend, p2));
        let cached = backend.cached_tokens(0);
        // Evict the first exchange: the text loses "<u>onea1<e>", between two marks.
        let p3 = t
            .prompt_for("<s><u>twoa2<e><u>three", &[], &mut backend, 0, true)
            .unwrap();
        assert_eq!(t.shifted(), "<u>onea1<e>".len());
        assert_eq!(backend.cached_tokens(0), cached - "<u>onea1<e>".len());
        let g = generate(&mut backend, p3.clone());
        // Everything the cache held after the removal is reused.
        assert_eq!(g.reused_tokens, "<s><u>twoa2".len());
        assert_eq!(t.text(), "<s><u>twoa2<e><u>three");
        // Without the shift, the same removal re-tokenizes from the pinned mark.
        let mut u = Transcript::default();
        let mut backend = ScriptedBackend::new([ScriptedReply::ending_with("a1", "<e>")]);
        let p1 = u
            .prompt_for("<s><u>one", &[3], &mut backend, 0, false)
            .unwrap();
        u.record(&generate(&mut backend, p1));
        u.tokens[0] = 9; // an id only the kept prefix has
        let p2 = u
            .prompt_for("<s><u>two", &[], &mut backend, 0, false)
            .unwrap();
        assert_eq!(u.shifted(), 0);
        assert_eq!(p2[0], 9, "the ids before the last shared mark are kept");
        assert_eq!(p2.len(), "<s><u>two".len());
    }
}
