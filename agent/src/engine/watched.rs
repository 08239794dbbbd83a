//! A backend seen through: every call goes to the backend it wraps, and a [`Watcher`] is shown
//! each generation (its request, its streamed text, its result), for callers that time or record
//! what the agent asks of the model without changing it.

use std::path::Path;

use super::{Backend, EngineError, GenerateRequest, Generation, ModelInfo, TextSink, Token};

/// What a [`Watched`] backend shows of each generation. Every method does nothing by default.
pub trait Watcher {
    /// Before the generation starts, with the backend as it is then.
    fn before(&mut self, _request: &GenerateRequest, _backend: &dyn Backend) {}
    /// Each piece of text as it streams, before the caller's sink gets it.
    fn piece(&mut self, _piece: &str) {}
    /// After a generation that succeeded, with the backend as it is then.
    fn after(
        &mut self,
        _request: &GenerateRequest,
        _generation: &Generation,
        _backend: &dyn Backend,
    ) {
    }
}

/// `backend`, with `watcher` shown each generation.
pub struct Watched<'a, W> {
    backend: &'a mut dyn Backend,
    /// The watcher, to read what it saw.
    pub watcher: W,
}

impl<'a, W: Watcher> Watched<'a, W> {
    /// Watches the generations of `backend`.
    pub fn new(backend: &'a mut dyn Backend, watcher: W) -> Self {
        Self { backend, watcher }
    }
}

impl<W: Watcher> Backend for Watched<'_, W> {
    fn info(&self) -> &ModelInfo {
        self.backend.info()
    }
    fn tokenize(&mut self, text: &str, special: bool) -> Result<Vec<Token>, EngineError> {
        self.backend.tokenize(text, special)
    }
    fn generate(
        &mut self,
        request: &GenerateRequest,
        sink: &mut TextSink<'_>,
    ) -> Result<Generation, EngineError> {
        self.watcher.before(request, &*self.backend);
        let watcher = &mut self.watcher;
        let generation = self.backend.generate(request, &mut |piece: &str| {
            watcher.piece(piece);
            sink(piece)
        })?;
        self.watcher.after(request, &generation, &*self.backend);
        Ok(generation)
    }
    fn tokenize_continuation(&mut self, text: &str) -> Result<Vec<Token>, EngineError> {
        self.backend.tokenize_continuation(text)
    }
    fn cached_tokens(&self, sequence: usize) -> usize {
        self.backend.cached_tokens(sequence)
    }
    fn truncate_cache(&mut self, sequence: usize, keep: usize) -> Result<(), EngineError> {
        self.backend.truncate_cache(sequence, keep)
    }
    fn remove_tokens(
        &mut self,
        sequence: usize,
        range: std::ops::Range<usize>,
    ) -> Result<(), EngineError> {
        self.backend.remove_tokens(sequence, range)
    }
    fn save_sequence(&mut self, sequence: usize, path: &Path) -> Result<u64, EngineError> {
        self.backend.save_sequence(sequence, path)
    }
    fn restore_sequence(&mut self, sequence: usize, path: &Path) -> Result<usize, EngineError> {
        self.backend.restore_sequence(sequence, path)
    }
    fn share(&self) -> Option<Box<dyn Backend + Send>> {
        self.backend.share()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{generate_to_string, ScriptedBackend, ScriptedReply};

    /// What the watcher saw, in order: "before N", "piece", "after N" (N tokens cached).
    #[derive(Default)]
    struct Log {
        events: Vec<String>,
        text: String,
    }

    impl Watcher for Log {
        fn before(&mut self, _: &GenerateRequest, backend: &dyn Backend) {
            self.events
                .push(format!("before {}", backend.cached_tokens(0)));
        }
        fn piece(&mut self, piece: &str) {
            self.events.push("piece".into());
            self.text.push_str(piece);
        }
        fn after(&mut self, _: &GenerateRequest, generation: &Generation, backend: &dyn Backend) {
            assert_eq!(generation.text, self.text);
            self.events
                .push(format!("after {}", backend.cached_tokens(0)));
        }
    }

    #[test]
    fn a_watcher_sees_each_generation_before_while_and_after_it_runs() {
        let mut scripted =
            ScriptedBackend::new(vec![ScriptedReply::ending_with("Hi there", "<end>")]);
        let mut watched = Watched::new(&mut scripted, Log::default());
        let request = GenerateRequest {
            prompt: "Hello".into(),
            ..GenerateRequest::default()
        };
        let generation = generate_to_string(&mut watched, &request).unwrap();
        assert_eq!(generation.text, "Hi there");
        let Log { events, text } = watched.watcher;
        assert_eq!(text, "Hi there");
        assert_eq!(events.first().map(String::as_str), Some("before 0"));
        assert!(
            events[1..events.len() - 1].iter().all(|e| e == "piece"),
            "{events:?}"
        );
        // "Hello" and "Hi there" are in the cache after, one character a token.
        assert_eq!(
            events.last().map(String::as_str),
            Some("after 13"),
            "{events:?}"
        );
    }
}
