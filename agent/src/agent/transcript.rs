//! The exact token ids of a conversation, kept across steps so nothing is re-tokenized.
//!
//! Formats render append-only: the prompt of step N+1 starts with the prompt of step N and the
//! text the model generated in it. A [`Transcript`] holds that text and the ids that stand for
//! it — the ids the model was fed and the ids it sampled. The next prompt is those ids plus the
//! tokens of the newly rendered suffix alone. Re-tokenizing generated text often gives other ids
//! (a word split differently, a special token's spelling read back as plain text), and the KV
//! cache would be lost from the first differing id on.

use crate::engine::{Backend, EngineError, Generation, StopReason, Token};

/// Rendered text and the exact ids that stand for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transcript {
    text: String,
    tokens: Vec<Token>,
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

    /// The ids of `rendered`, the whole prompt of the next step: the ids so far plus those of
    /// the suffix when `rendered` continues the text so far, else (a conversation that was
    /// reset or shortened) the whole prompt tokenized anew.
    ///
    /// # Errors
    /// When the backend cannot tokenize.
    pub fn prompt_for(
        &mut self,
        rendered: &str,
        backend: &mut dyn Backend,
    ) -> Result<Vec<Token>, EngineError> {
        match rendered.strip_prefix(self.text.as_str()) {
            Some(suffix) if !self.tokens.is_empty() => {
                let more = backend.tokenize_continuation(suffix)?;
                self.tokens.extend(more);
            }
            _ => self.tokens = backend.tokenize(rendered, true)?,
        }
        self.text.clear();
        self.text.push_str(rendered);
        Ok(self.tokens.clone())
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
            }
            StopReason::MaxTokens => {
                self.text.push_str(&generation.text);
                self.tokens.extend_from_slice(&generation.tokens);
            }
            _ => {}
        }
    }
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
        let first = transcript.prompt_for("<u>q", &mut backend).unwrap();
        let generation = generate(&mut backend, first);
        transcript.record(&generation);
        assert_eq!(transcript.text(), "<u>qhi<e>");
        // Tamper with the ids the "model" produced: the next prompt must carry them as they
        // are, not re-tokenized from the text.
        let sampled_marker = transcript.tokens.len() - 1;
        transcript.tokens[sampled_marker] = 7;
        let second = transcript
            .prompt_for("<u>qhi<e><u>more", &mut backend)
            .unwrap();
        assert_eq!(second[sampled_marker], 7);
        assert_eq!(second.len(), "<u>qhi<e><u>more".len());
    }

    #[test]
    fn a_prompt_that_does_not_continue_the_text_is_tokenized_anew() {
        let mut backend = ScriptedBackend::new([ScriptedReply::ending_with("hi", "<e>")]);
        let mut transcript = Transcript::default();
        let first = transcript.prompt_for("<u>q", &mut backend).unwrap();
        transcript.record(&generate(&mut backend, first));
        let fresh = transcript.prompt_for("<u>other", &mut backend).unwrap();
        assert_eq!(fresh, backend.tokenize("<u>other", true).unwrap());
        assert_eq!(transcript.text(), "<u>other");
    }
}
