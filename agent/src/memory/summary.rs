//! The rolling summary: evicted turns folded in by the loaded model itself, in the
//! conversation's language, or by a deterministic fallback when it fails.

use std::ops::ControlFlow;

use corral_prompts::{Conversation, Message};
use unicode_segmentation::UnicodeSegmentation;

use super::{Language, Measure};
use crate::engine::{GenerateRequest, Prompt, Sampling};

/// What to fold into the summary.
#[derive(Debug, Clone, Copy)]
pub struct SummaryRequest<'r> {
    /// The summary so far (may be empty).
    pub previous: &'r str,
    /// The messages that left the window, as the model saw them.
    pub messages: &'r [Message],
    /// The conversation's language: the summary is written in it.
    pub language: Language,
    /// Most tokens the summary may take.
    pub max_tokens: usize,
}

/// Writes the merged summary.
pub trait Summariser {
    /// The summary of `request.previous` and `request.messages` together.
    ///
    /// # Errors
    /// Generation failed; the caller then uses [`fallback_summary`].
    fn summarise(
        &mut self,
        request: &SummaryRequest<'_>,
        measure: &mut Measure<'_>,
    ) -> Result<String, String>;
}

/// The loaded model writes the summary in a side generation on its own sequence, so the
/// conversation's KV prefix stays as it was (on a one-sequence backend the conversation's cache
/// is evaluated again after it).
#[derive(Debug, Clone, Copy)]
pub struct ModelSummariser {
    /// The backend sequence the side generation runs on.
    pub sequence: usize,
}

/// The line every summary prompt ends with (test doubles recognise summary requests by it).
pub const SUMMARY_REQUEST: &str = "Write the updated summary now.";

impl Summariser for ModelSummariser {
    fn summarise(
        &mut self,
        request: &SummaryRequest<'_>,
        measure: &mut Measure<'_>,
    ) -> Result<String, String> {
        let language = request.language.english_name();
        let words = (request.max_tokens * 2 / 3).max(20);
        let instruction = format!(
            "You keep the summary of a conversation between a user and an assistant. Merge the \
             previous summary with the new part into one summary of at most {words} words. Keep \
             every fact the user stated (names, numbers, dates, places, decisions) and what the \
             tools found. Write the summary in {language}. {}",
            request.language.directive()
        );
        // The part that left may be most of the window: each message is shortened (to its
        // first sentence, then less) until the prompt and the summary fit.
        let window = measure.backend.info().context_tokens;
        let mut line_cap = 2000;
        let rendered = loop {
            let mut body = String::new();
            if !request.previous.is_empty() {
                body.push_str("Previous summary:\n");
                body.push_str(request.previous);
                body.push_str("\n\n");
            }
            body.push_str("New part of the conversation:\n");
            body.push_str(&transcript(request.messages, line_cap));
            body.push_str("\n\n");
            body.push_str(SUMMARY_REQUEST);
            let conversation = Conversation::new(vec![
                Message::system(instruction.clone()),
                Message::user(body),
            ]);
            let rendered = measure
                .format
                .render(&conversation.plain_marked(measure.controls), true)
                .map_err(|e| format!("cannot render the summary prompt: {e}"))?;
            let tokens = measure
                .backend
                .tokenize(&rendered, true)
                .map_err(|e| format!("cannot tokenize the summary prompt: {e}"))?
                .len();
            if tokens + request.max_tokens <= window {
                break rendered;
            }
            if line_cap <= 20 {
                return Err(format!(
                    "the summary prompt takes {tokens} tokens even with each message cut short"
                ));
            }
            line_cap /= 3;
        };
        let generate = GenerateRequest {
            prompt: Prompt::Text(rendered),
            sequence: self.sequence,
            max_tokens: Some(request.max_tokens),
            sampling: Sampling::greedy(),
            ..GenerateRequest::default()
        };
        let generation = measure
            .backend
            .generate(&generate, &mut |_| ControlFlow::Continue(()))
            .map_err(|e| format!("the summary generation failed: {e}"))?;
        Ok(corral_tools::sanitize::strip_control(&generation.text))
    }
}

/// The messages as plain lines (`User: …`, `Assistant: …`, `Assistant called NAME {…}`,
/// `Tool result: …`), each at most `cap` graphemes.
fn transcript(messages: &[Message], cap: usize) -> String {
    let mut lines = Vec::new();
    for message in messages {
        match message {
            Message::System { content } => lines.push(format!("System: {}", clip(content, cap))),
            Message::User { content } => lines.push(format!("User: {}", clip(content, cap))),
            Message::Assistant {
                content,
                tool_calls,
                ..
            } => {
                if !content.trim().is_empty() {
                    lines.push(format!("Assistant: {}", clip(content.trim(), cap)));
                }
                for call in tool_calls {
                    lines.push(format!("Assistant called {} {}", call.name, call.arguments));
                }
            }
            Message::Tool { content, .. } => {
                let text = super::tool_text(content);
                lines.push(format!(
                    "Tool result: {}",
                    first_sentence(&text, cap.min(200))
                ));
            }
        }
    }
    lines.join("\n")
}

/// At most `cap` graphemes of `text`, with `…` when cut.
fn clip(text: &str, cap: usize) -> String {
    let mut graphemes = text.graphemes(true);
    let mut out: String = graphemes.by_ref().take(cap).collect();
    if graphemes.next().is_some() {
        out.push('…');
    }
    out
}

/// The deterministic summary: the previous one, then the first sentence of each user message
/// and of each answer (a call by its tool's name), each grapheme-safe.
pub fn fallback_summary(request: &SummaryRequest<'_>) -> String {
    let mut lines: Vec<String> = request
        .previous
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    for message in request.messages {
        match message {
            Message::User { content } => {
                lines.push(format!("User: {}", first_sentence(content, 160)))
            }
            Message::Assistant {
                content,
                tool_calls,
                ..
            } => {
                if !content.trim().is_empty() {
                    lines.push(format!("Assistant: {}", first_sentence(content, 160)));
                }
                for call in tool_calls {
                    lines.push(format!("Assistant called {}", call.name));
                }
            }
            Message::System { .. } | Message::Tool { .. } => {}
        }
    }
    lines.join("\n")
}

/// The first sentence of `text` (up to `.`, `!`, `?`, `।`, `。` or a line break), at most
/// `max_graphemes` graphemes, never split inside one.
pub fn first_sentence(text: &str, max_graphemes: usize) -> String {
    let mut out = String::new();
    for (n, g) in text.trim().graphemes(true).enumerate() {
        if n >= max_graphemes {
            out.push('…');
            break;
        }
        if g == "\n" || g == "\r\n" {
            break;
        }
        out.push_str(g);
        if matches!(g, "." | "!" | "?" | "।" | "。") {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fallback_keeps_first_sentences_whole_graphemes_and_the_previous_summary() {
        let messages = [
            Message::user("मेरा नाम अनीता है। मैं दिल्ली में रहती हूँ।"),
            Message::assistant("नमस्ते अनीता! आपसे मिलकर खुशी हुई।"),
            Message::user("ผมชื่อสมชาย ผมอายุสามสิบปี"),
        ];
        let request = SummaryRequest {
            previous: "User: My name is Ada.",
            messages: &messages,
            language: Language::Hi,
            max_tokens: 100,
        };
        let summary = fallback_summary(&request);
        assert_eq!(
            summary,
            "User: My name is Ada.\nUser: मेरा नाम अनीता है।\nAssistant: नमस्ते अनीता!\nUser: ผมชื่อสมชาย ผมอายุสามสิบปี"
        );
        // A cut inside Devanagari keeps whole clusters.
        let cut = first_sentence("क्षत्रिय क्षत्रिय", 2);
        assert!("क्षत्रिय".starts_with(cut.trim_end_matches('…')), "{cut}");
        assert_eq!(cut.trim_end_matches('…').graphemes(true).count(), 2);
    }
}
