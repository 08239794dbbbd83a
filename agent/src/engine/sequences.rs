//! Handing a model's sequences to conversations.
//!
//! A loaded model keeps [`super::ModelInfo::sequences`] KV caches. When more conversations are
//! open than that, the least recently used one loses its sequence: the newcomer's prompt shares
//! no prefix with what the cache holds, so the engine trims it and evaluates the newcomer from
//! its start. When the evicted conversation speaks again it gets a sequence back the same way,
//! and its whole prompt is evaluated once; nothing it said is lost, only the cache.

/// Which sequence each conversation uses, least recently used given up first.
#[derive(Debug, Clone)]
pub struct SequencePool<K> {
    /// Per sequence: its conversation and when it was last used.
    slots: Vec<Option<(K, u64)>>,
    clock: u64,
}

/// The answer of [`SequencePool::acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment<K> {
    /// The sequence to generate on.
    pub sequence: usize,
    /// Whether the sequence was this conversation's already (its cached prefix is there).
    pub kept: bool,
    /// The conversation that lost the sequence, if one did.
    pub evicted: Option<K>,
}

impl<K: Eq + Clone> SequencePool<K> {
    /// A pool over `sequences` sequences (at least one).
    pub fn new(sequences: usize) -> Self {
        SequencePool {
            slots: vec![None; sequences.max(1)],
            clock: 0,
        }
    }

    /// The sequence for `key`: its own if it has one, else a free one, else the least recently
    /// used conversation's.
    pub fn acquire(&mut self, key: &K) -> Assignment<K> {
        self.clock += 1;
        let now = self.clock;
        if let Some(sequence) = self.sequence_of(key) {
            self.slots[sequence] = Some((key.clone(), now));
            return Assignment {
                sequence,
                kept: true,
                evicted: None,
            };
        }
        let sequence = self
            .slots
            .iter()
            .position(Option::is_none)
            .unwrap_or_else(|| self.least_recently_used());
        let evicted = self.slots[sequence].take().map(|(owner, _)| owner);
        self.slots[sequence] = Some((key.clone(), now));
        Assignment {
            sequence,
            kept: false,
            evicted,
        }
    }

    /// The sequence `key` holds, if any.
    pub fn sequence_of(&self, key: &K) -> Option<usize> {
        self.slots
            .iter()
            .position(|slot| slot.as_ref().is_some_and(|(owner, _)| owner == key))
    }

    /// Gives `key`'s sequence back (a closed conversation); returns which it was.
    pub fn release(&mut self, key: &K) -> Option<usize> {
        let sequence = self.sequence_of(key)?;
        self.slots[sequence] = None;
        Some(sequence)
    }

    fn least_recently_used(&self) -> usize {
        self.slots
            .iter()
            .enumerate()
            .min_by_key(|(_, slot)| slot.as_ref().map_or(0, |(_, used)| *used))
            .map_or(0, |(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_conversation_keeps_its_sequence_while_there_are_enough() {
        let mut pool = SequencePool::new(4);
        let first: Vec<usize> = ["a", "b", "c", "d"]
            .iter()
            .map(|k| pool.acquire(k).sequence)
            .collect();
        assert_eq!(first, [0, 1, 2, 3]);
        for (k, seq) in ["c", "a", "d", "b"].iter().zip([2, 0, 3, 1]) {
            let got = pool.acquire(k);
            assert_eq!((got.sequence, got.kept, got.evicted), (seq, true, None));
        }
    }

    #[test]
    fn the_least_recently_used_conversation_loses_its_sequence_and_gets_one_back() {
        let mut pool = SequencePool::new(2);
        pool.acquire(&"a");
        pool.acquire(&"b");
        pool.acquire(&"a"); // b is now the least recently used
        let c = pool.acquire(&"c");
        assert_eq!((c.sequence, c.kept, c.evicted), (1, false, Some("b")));
        assert_eq!(pool.sequence_of(&"b"), None);
        // b comes back: a is now the least recently used.
        let b = pool.acquire(&"b");
        assert_eq!((b.sequence, b.kept, b.evicted), (0, false, Some("a")));
    }

    #[test]
    fn a_released_sequence_is_taken_before_anyone_is_evicted() {
        let mut pool = SequencePool::new(2);
        pool.acquire(&"a");
        pool.acquire(&"b");
        assert_eq!(pool.release(&"a"), Some(0));
        assert_eq!(pool.release(&"a"), None);
        let c = pool.acquire(&"c");
        assert_eq!((c.sequence, c.evicted), (0, None));
    }
}
