//! What a turn reports as it runs. The CLI, `corral run --json` and tests consume the same stream.

use serde::Serialize;
use serde_json::Value;

use crate::memory::{MemoryReport, Regions};

/// Why a turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnStop {
    /// The model ended its turn with an answer.
    Answered,
    /// The model still wanted tools after the step limit.
    StepLimit,
    /// The caller cancelled.
    Cancelled,
    /// The turn's deadline ([`super::TurnOptions::deadline`]) passed.
    Timeout,
    /// A call was denied by policy or by the user.
    Denied,
    /// The engine failed, or the model kept making invalid calls past the retry limit.
    Error,
}

/// One event of a turn, serialized as one JSON object with a `type` field.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// Visible text the model produced (a delta).
    Text {
        /// The new text.
        delta: String,
    },
    /// The model called a tool.
    ToolCall {
        /// The call's id, unique in the conversation.
        id: String,
        /// The tool.
        name: String,
        /// Its arguments.
        arguments: Value,
    },
    /// A call finished (or was refused); `content` is what the model reads.
    ToolResult {
        /// The id of the call.
        id: String,
        /// The tool.
        name: String,
        /// Whether the tool succeeded.
        ok: bool,
        /// What the model is given.
        content: String,
        /// Seconds the call took.
        seconds: f64,
    },
    /// Memory made room before a model call: what it did and dropped, and the tokens per
    /// region of the prompt that followed.
    Memory {
        /// What was done (`action`, `dropped`, `turns`, `summary_by`, tokens `before`/`after`).
        #[serde(flatten)]
        report: MemoryReport,
        /// Turns evicted in the conversation so far.
        evicted_turns: usize,
        /// Tokens per region (`pinned`, `summary`, `recent`, `reserve`, `free`).
        tokens: Regions,
        /// Tokens kept in the KV cache by shifting them in place (0: evaluated again).
        shifted: usize,
        /// Seconds it took, summary included.
        seconds: f64,
    },
    /// The turn is over.
    TurnFinished {
        /// Why.
        stop: TurnStop,
        /// Generations run in this turn.
        steps: usize,
        /// Prompt tokens of all steps.
        prompt_tokens: usize,
        /// Of those, tokens reused from the KV cache.
        reused_tokens: usize,
        /// Tokens generated.
        generated_tokens: usize,
        /// Wall-clock seconds of the turn.
        seconds: f64,
        /// What went wrong, for `denied` and `error`.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}
