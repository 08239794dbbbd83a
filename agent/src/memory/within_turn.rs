//! Making room inside the current turn, when it alone outgrows the window: its tool results
//! shortened, its older steps folded into the summary, then cuts (results, the summary, last
//! the newest user message), each grapheme-safe with a marker.

use corral_prompts::{Conversation, Message, Role};

use super::{
    cut_at_grapheme, cut_with_marker, plural, tool_text, Measure, Memory, MemoryAction,
    MemoryError, MemoryReport, Summariser, SummaryBy, CUT_MARKER,
};

impl Memory {
    /// Shortens the summary (halving it, at whole lines or graphemes, down to nothing) until the
    /// prompt is under the high watermark: in a small window the summary yields before the
    /// newest message is cut.
    pub(super) fn trim_summary(
        &mut self,
        conversation: &Conversation,
        before: usize,
        measure: &mut Measure<'_>,
    ) -> Result<Option<MemoryReport>, MemoryError> {
        if self.summary.is_empty() {
            return Ok(None);
        }
        let original = self.summary.len();
        let mut after = before;
        while after > self.settings.high_mark() && !self.summary.is_empty() {
            let half = self.summary.len() / 2;
            self.summary = if half < 16 {
                String::new()
            } else {
                cut_at_grapheme(&self.summary, half)
            };
            after = measure.count(&self.view(conversation))?;
        }
        Ok(Some(MemoryReport {
            action: MemoryAction::Cut,
            dropped: format!("{} bytes of the summary", original - self.summary.len()),
            turns: 0,
            summary_by: SummaryBy::None,
            summary_error: None,
            before,
            after,
        }))
    }

    /// Shortens the current turn's tool results, oldest first (the last step's kept whole if
    /// the earlier ones suffice), until the prompt is under the low watermark.
    pub(super) fn shorten_results(
        &mut self,
        conversation: &Conversation,
        current: usize,
        before: usize,
        measure: &mut Measure<'_>,
    ) -> Result<Option<MemoryReport>, MemoryError> {
        let keep = self.settings.short_result_bytes;
        let candidates: Vec<usize> = (current..conversation.messages.len())
            .filter(|i| !self.hidden.contains(i) && !self.shortened.contains_key(i))
            .filter(|&i| match &conversation.messages[i] {
                Message::Tool { content, .. } => tool_text(content).len() > keep + CUT_MARKER.len(),
                _ => false,
            })
            .collect();
        if candidates.is_empty() {
            return Ok(None);
        }
        let mut after = before;
        let mut count = 0;
        let mut bytes = 0;
        for i in candidates {
            let Message::Tool { content, .. } = &conversation.messages[i] else {
                continue;
            };
            let text = tool_text(content);
            let cut = cut_with_marker(&text, keep);
            bytes += text.len() - cut.len();
            self.shortened.insert(i, cut);
            count += 1;
            after = measure.count(&self.view(conversation))?;
            if after <= self.settings.low_mark() {
                break;
            }
        }
        Ok(Some(MemoryReport {
            action: MemoryAction::Shortened,
            dropped: format!("{bytes} bytes of {count} tool result{}", plural(count)),
            turns: 0,
            summary_by: SummaryBy::None,
            summary_error: None,
            before,
            after,
        }))
    }

    /// Folds the current turn's older steps (a call with its results) into the summary, oldest
    /// first, keeping the last step.
    pub(super) fn fold_steps(
        &mut self,
        conversation: &Conversation,
        current: usize,
        before: usize,
        target: usize,
        measure: &mut Measure<'_>,
        summariser: &mut dyn Summariser,
    ) -> Result<Option<MemoryReport>, MemoryError> {
        // Steps: each assistant message with the tool results that follow it.
        let mut steps: Vec<Vec<usize>> = Vec::new();
        for i in current + 1..conversation.messages.len() {
            if self.hidden.contains(&i) {
                continue;
            }
            match conversation.messages[i].role() {
                Role::Assistant => steps.push(vec![i]),
                _ => {
                    if let Some(step) = steps.last_mut() {
                        step.push(i);
                    }
                }
            }
        }
        if steps.len() < 2 {
            return Ok(None);
        }
        let mut folded: Vec<usize> = Vec::new();
        for step in &steps[..steps.len() - 1] {
            folded.extend(step);
            let mut hidden = self.hidden.clone();
            hidden.extend(folded.iter().copied());
            let view = self.view_with(
                conversation,
                self.first_kept,
                &hidden,
                &self.shortened,
                &self.summary,
            );
            if measure.count(&view)? <= target {
                break;
            }
        }
        let gone: Vec<Message> = folded
            .iter()
            .map(|&i| self.seen_text(conversation, i))
            .collect();
        let (summary_by, summary_error) = self.fold(&gone, measure, summariser);
        let steps_folded = folded
            .iter()
            .filter(|&&i| conversation.messages[i].role() == Role::Assistant)
            .count();
        self.hidden.extend(folded);
        let after = measure.count(&self.view(conversation))?;
        Ok(Some(MemoryReport {
            action: MemoryAction::Folded,
            dropped: format!(
                "{steps_folded} earlier step{} of this turn",
                plural(steps_folded)
            ),
            turns: 0,
            summary_by,
            summary_error,
            before,
            after,
        }))
    }

    /// Cuts the current turn's messages that `which` picks, the longest first, until the
    /// prompt is under the high mark.
    pub(super) fn cut_current(
        &mut self,
        conversation: &Conversation,
        current: usize,
        before: usize,
        measure: &mut Measure<'_>,
        which: &dyn Fn(&Message) -> bool,
    ) -> Result<MemoryReport, MemoryError> {
        let too_big = |tokens| MemoryError::TooBig {
            tokens,
            window: self.settings.window,
            reserve: self.settings.reserve,
        };
        let mut candidates: Vec<usize> = (current..conversation.messages.len())
            .filter(|i| !self.hidden.contains(i))
            .filter(|&i| which(&conversation.messages[i]))
            .collect();
        // The longest first.
        candidates.sort_by_key(|&i| std::cmp::Reverse(self.seen_len(conversation, i)));
        let high = self.settings.high_mark();
        let mut after = before;
        let mut cut_bytes = 0;
        for i in candidates {
            let text = self.seen_string(conversation, i);
            let mut bytes = text.len();
            while after > high && bytes > 64 {
                bytes = bytes * high / after.max(1) * 9 / 10;
                let cut = cut_with_marker(&text, bytes);
                self.shortened.insert(i, cut);
                after = measure.count(&self.view(conversation))?;
            }
            cut_bytes += text.len().saturating_sub(self.seen_len(conversation, i));
            if after <= high {
                return Ok(MemoryReport {
                    action: MemoryAction::Cut,
                    dropped: format!("{cut_bytes} bytes of the current turn"),
                    turns: 0,
                    summary_by: SummaryBy::None,
                    summary_error: None,
                    before,
                    after,
                });
            }
        }
        Err(too_big(after))
    }

    pub(super) fn seen_string(&self, conversation: &Conversation, i: usize) -> String {
        match self.seen_text(conversation, i) {
            Message::Tool { content, .. } => tool_text(&content),
            Message::User { content } => content,
            _ => String::new(),
        }
    }

    pub(super) fn seen_len(&self, conversation: &Conversation, i: usize) -> usize {
        self.seen_string(conversation, i).len()
    }
}
