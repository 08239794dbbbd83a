//! The served model's books: which sequence holds which conversation, how a request picks one,
//! and the replies remembered for rendering them back exactly as the model wrote them.

use std::collections::{HashMap, VecDeque};

use corral_prompts::ToolCall;
use serde_json::{json, Value};

use crate::agent::Transcript;

/// Replies remembered for rendering them back exactly, oldest forgotten first: at most this
/// many, and at most this many bytes of keys and texts together.
const REMEMBERED_REPLIES: usize = 4096;
const REMEMBERED_BYTES: usize = 32 << 20;

/// What the requests share: who holds which sequence, and the replies to render back.
#[derive(Default)]
pub(super) struct Books {
    pub(super) slots: Vec<Slot>,
    clock: u64,
    pub(super) replies: RememberedReplies,
    pub(super) calls: u64,
}

/// One sequence: what it holds, when a request last took it, whether one holds it now.
#[derive(Default)]
pub(super) struct Slot {
    pub(super) transcript: Transcript,
    used: u64,
    /// A request in flight holds this sequence.
    pub(super) busy: bool,
}

impl Books {
    /// Books for `sequences` empty sequences.
    pub(super) fn new(sequences: usize) -> Self {
        Books {
            slots: (0..sequences).map(|_| Slot::default()).collect(),
            ..Books::default()
        }
    }

    /// The free sequence for a prompt: one whose whole cache the prompt continues, or that holds
    /// the whole prompt (the same request again, a reply regenerated: only the old reply is
    /// dropped), the longest shared; else an empty one; else one that shares at least half of
    /// what it holds (a client that edited its last message); else the least recently used.
    /// Sharing only a system prompt with another conversation is not enough to take that
    /// conversation's cache. `None` when every sequence is busy.
    pub(super) fn pick_sequence(&mut self, rendered: &str) -> Option<usize> {
        self.clock += 1;
        // (index, shared bytes, held bytes) of each free sequence.
        let scored: Vec<(usize, usize, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| !slot.busy)
            .map(|(i, slot)| {
                let held = slot.transcript.text().len();
                (i, slot.transcript.shared_prefix(rendered), held)
            })
            .collect();
        let best = |keep: &dyn Fn(usize, usize) -> bool| {
            scored
                .iter()
                .filter(|&&(_, shared, held)| keep(shared, held))
                .max_by_key(|&&(_, shared, _)| shared)
                .map(|&(i, _, _)| i)
        };
        // The prompt continues all the sequence holds, or all of the prompt is held there.
        let same_conversation =
            |shared: usize, held: usize| held > 0 && (shared == held || shared == rendered.len());
        let sequence = best(&same_conversation)
            .or_else(|| scored.iter().find(|s| s.2 == 0).map(|s| s.0))
            .or_else(|| best(&|shared, held| shared > 0 && shared * 2 >= held))
            .or_else(|| {
                scored
                    .iter()
                    .min_by_key(|&&(i, _, _)| self.slots[i].used)
                    .map(|s| s.0)
            })?;
        self.slots[sequence].used = self.clock;
        Some(sequence)
    }
}

/// The key of a reply as a client sends it back: its content and its calls' names and
/// arguments (ids are the client's to keep or drop).
pub(super) fn reply_key(content: &str, calls: &[ToolCall]) -> String {
    let calls: Vec<Value> = calls.iter().map(|c| json!([c.name, c.arguments])).collect();
    json!([content, calls]).to_string()
}

/// What the model wrote for replies this server gave, by [`reply_key`].
#[derive(Default)]
pub(super) struct RememberedReplies {
    texts: HashMap<String, String>,
    order: VecDeque<String>,
    bytes: usize,
}

impl RememberedReplies {
    pub(super) fn remember(&mut self, key: String, generated: String) {
        let size = key.len() + generated.len();
        if size > REMEMBERED_BYTES / 4 {
            return;
        }
        match self.texts.insert(key.clone(), generated) {
            Some(old) => self.bytes = self.bytes + size - key.len() - old.len(),
            None => {
                self.bytes += size;
                self.order.push_back(key);
            }
        }
        while self.order.len() > REMEMBERED_REPLIES || self.bytes > REMEMBERED_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(text) = self.texts.remove(&oldest) {
                self.bytes -= oldest.len() + text.len();
            }
        }
    }

    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.texts.get(key).map(String::as_str)
    }
}
