//! Stop strings in a text stream.
//!
//! A stop string may arrive split over several pieces, so text that could still be the start of
//! one is held back until it either completes the stop string (generation ends and the stop string
//! is not emitted) or can no longer match (it is released).

/// Watches streamed text for caller-given stop strings.
#[derive(Debug, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// What the matcher decided for one chunk of text.
#[derive(Debug, PartialEq, Eq)]
pub enum StopScan {
    /// Text that is safe to emit; generation goes on.
    Continue(String),
    /// A stop string matched: emit the text before it, then stop.
    Stopped {
        /// Text before the stop string.
        emit: String,
        /// The stop string that matched.
        stop: String,
    },
}

impl StopMatcher {
    /// A matcher for these stop strings (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Adds a chunk of generated text.
    pub fn push(&mut self, chunk: &str) -> StopScan {
        self.held.push_str(chunk);
        if self.stops.is_empty() {
            return StopScan::Continue(std::mem::take(&mut self.held));
        }
        let earliest = self
            .stops
            .iter()
            .filter_map(|stop| self.held.find(stop.as_str()).map(|at| (at, stop)))
            .min_by_key(|(at, _)| *at);
        if let Some((at, stop)) = earliest {
            let stop = stop.clone();
            let emit = self.held[..at].to_string();
            self.held.clear();
            return StopScan::Stopped { emit, stop };
        }
        let keep = self.longest_partial_suffix();
        let split = self.held.len() - keep;
        let emit = self.held[..split].to_string();
        self.held.drain(..split);
        StopScan::Continue(emit)
    }

    /// Ends the stream: whatever was held back is released.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Length in bytes of the longest suffix of `held` that is a proper prefix of a stop string.
    fn longest_partial_suffix(&self) -> usize {
        let mut best = 0;
        for (start, _) in self.held.char_indices() {
            let suffix = &self.held[start..];
            if suffix.len() <= best {
                break;
            }
            if self.stops.iter().any(|stop| stop.starts_with(suffix)) {
                best = suffix.len();
                break;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], chunks: &[&str]) -> (String, Option<String>) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut matcher = StopMatcher::new(&stops);
        let mut out = String::new();
        for chunk in chunks {
            match matcher.push(chunk) {
                StopScan::Continue(text) => out.push_str(&text),
                StopScan::Stopped { emit, stop } => {
                    out.push_str(&emit);
                    return (out, Some(stop));
                }
            }
        }
        out.push_str(&matcher.finish());
        (out, None)
    }

    #[test]
    fn stop_string_split_across_chunks_is_caught_and_not_emitted() {
        let (out, stop) = run(&["\nUser:"], &["Hello", "\nUs", "er:", " more"]);
        assert_eq!(out, "Hello");
        assert_eq!(stop.as_deref(), Some("\nUser:"));
    }

    #[test]
    fn partial_match_that_fails_is_released() {
        let (out, stop) = run(&["STOP"], &["ST", "ART", " ok"]);
        assert_eq!(out, "START ok");
        assert_eq!(stop, None);
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let (out, stop) = run(&["bb", "a"], &["xxbba"]);
        assert_eq!(out, "xx");
        assert_eq!(stop.as_deref(), Some("bb"));
    }

    #[test]
    fn held_text_is_not_emitted_early() {
        let stops = vec!["<|end|>".to_string()];
        let mut matcher = StopMatcher::new(&stops);
        assert_eq!(matcher.push("hi <|"), StopScan::Continue("hi ".into()));
        assert_eq!(matcher.finish(), "<|");
    }

    #[test]
    fn multibyte_text_near_stop_prefix_is_safe() {
        let (out, stop) = run(&["终"], &["日本語", "終わり"]);
        assert_eq!(out, "日本語終わり");
        assert_eq!(stop, None);
    }
}
