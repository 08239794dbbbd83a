//! The agent loop: a model's reply reaches a tool, and the tool's result reaches the model.
//!
//! One turn is: render the conversation → generate (constrained per `tool_choice`) → parse the
//! reply as it streams → check each call's policy → run the allowed calls (concurrently, bounded)
//! in the sandbox, schema-validated by the registry → append each result as a tool message →
//! generate again, until the model answers, the step limit is hit, a call is denied, the caller
//! cancels, or the model keeps making invalid calls.
//!
//! Model mistakes never end a turn by themselves: an unknown tool, a malformed call, a schema
//! violation or a tool's error goes back to the model as a tool result naming what was wrong;
//! only after `max_retries` steps in a row without one successful call does the turn end.
//! Tool output is untrusted: control sequences are stripped and it is capped
//! ([`output::for_model`]); all untrusted text is rendered plain
//! ([`corral_prompts::plain`]), so only the format's framing becomes special tokens.
//!
//! Every turn leaves the conversation consistent: each call that was appended has its result.

pub mod events;
mod formats;
pub mod output;
mod transcript;

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::Instant;

use corral_prompts::{
    ControlTexts, Conversation, Format, Message, ParseErrorKind, ParseEvent, ParsedMessage,
    ToolCall, ToolChoice, ToolOutput,
};
use corral_tools::{CallControl, CallError, Registry};

use crate::engine::{Backend, CancelToken, GenerateRequest, Prompt, Sampling, StopReason};
use crate::memory::{Measure, Memory, MemoryError, ModelSummariser, Summariser};
pub use events::{Event, TurnStop};
pub(crate) use formats::generate_parsed;
pub(crate) use formats::message_starts;
pub use formats::{format_for_model, format_for_template};
pub use transcript::Transcript;

/// What happens when the model calls a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Run it.
    Allow,
    /// Ask the user (through the turn's approver), showing the exact arguments.
    Ask,
    /// Refuse it; the turn ends as `denied`.
    Deny,
}

/// The user's policy: a decision per tool name, and one for the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// For tools not named in `tools`.
    pub default: Decision,
    /// Per tool.
    pub tools: BTreeMap<String, Decision>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            default: Decision::Ask,
            tools: BTreeMap::new(),
        }
    }
}

impl Policy {
    /// The decision for tool `name`.
    pub fn decide(&self, name: &str) -> Decision {
        self.tools.get(name).copied().unwrap_or(self.default)
    }
}

/// How a turn runs.
#[derive(Debug, Clone)]
pub struct TurnOptions {
    /// Generations per turn at most (default 8).
    pub max_steps: usize,
    /// Steps in a row without a successful call before the turn ends (default 2).
    pub max_retries: usize,
    /// Calls of one reply that run at once (default 4).
    pub parallel: usize,
    /// Cap on one tool result as the model reads it, in bytes (default 16 KiB).
    pub result_bytes: usize,
    /// Cap on the tokens of one generation (`None`: until the context is full).
    pub max_tokens: Option<usize>,
    /// Whether the model may, must, or must not call tools on the first step; later steps use
    /// `auto` (or `none` when this is `none`), so a forced call cannot loop.
    pub tool_choice: ToolChoice,
    /// How tokens are picked.
    pub sampling: Sampling,
    /// Who decides about each call.
    pub policy: Policy,
    /// Stops the turn (between tokens, and before each step and each call); running tools
    /// get it as their cancel signal.
    pub cancel: CancelToken,
    /// Longest one call may run (`None`: each tool's own limit); a call past it is stopped and
    /// the model reads that it timed out.
    pub call_timeout: Option<std::time::Duration>,
    /// When the whole turn must be over (`corral run --timeout`): at that moment `cancel` is
    /// set, and a turn it stops ends as [`TurnStop::Timeout`].
    pub deadline: Option<Instant>,
}

impl Default for TurnOptions {
    fn default() -> Self {
        TurnOptions {
            max_steps: 8,
            max_retries: 2,
            parallel: 4,
            result_bytes: 16 << 10,
            max_tokens: Some(1024),
            tool_choice: ToolChoice::Auto,
            sampling: Sampling::default(),
            policy: Policy::default(),
            cancel: CancelToken::new(),
            call_timeout: None,
            deadline: None,
        }
    }
}

/// What a finished turn says about itself (also sent as [`Event::TurnFinished`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TurnOutcome {
    /// Why it ended.
    pub stop: TurnStop,
    /// Generations run.
    pub steps: usize,
    /// The model's visible text of its last step.
    pub answer: String,
    /// Prompt tokens over all steps.
    pub prompt_tokens: usize,
    /// Of those, reused from the KV cache.
    pub reused_tokens: usize,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// For `denied` and `error`: what happened.
    pub reason: Option<String>,
}

/// Decides an `ask` call: `true` runs it.
pub type Approver<'a> = dyn FnMut(&ToolCall) -> bool + 'a;

/// Runs turns of one conversation on one backend, format and registry.
///
/// It keeps the conversation's exact token ids ([`Transcript`]) across steps and turns: each
/// step feeds what the model was fed and sampled before, plus the tokens of what was rendered
/// since, so the KV cache is reused up to the last token. Keep one agent for a conversation
/// (a new one starts by tokenizing the whole prompt once).
pub struct Agent<'a> {
    backend: &'a mut dyn Backend,
    format: &'a dyn Format,
    registry: &'a Registry,
    controls: ControlTexts,
    next_call: usize,
    transcript: Transcript,
    sequence: usize,
    memory: Option<Memory>,
    summariser: Box<dyn Summariser + 'a>,
}

impl<'a> Agent<'a> {
    /// An agent over these parts. The conversation's tools must be (a subset of) `registry`'s
    /// ([`prompt_tools`]).
    pub fn new(
        backend: &'a mut dyn Backend,
        format: &'a dyn Format,
        registry: &'a Registry,
    ) -> Agent<'a> {
        let controls = ControlTexts::new(backend.info().control_tokens.iter().cloned());
        let side = backend.info().sequences.saturating_sub(1);
        Agent {
            backend,
            format,
            registry,
            controls,
            next_call: 0,
            transcript: Transcript::default(),
            sequence: 0,
            memory: None,
            summariser: Box::new(ModelSummariser { sequence: side }),
        }
    }

    /// This agent generating on `sequence` of its backend (conversations that share a model
    /// use different ones, see [`crate::engine::SequencePool`]).
    #[must_use]
    pub fn on_sequence(mut self, sequence: usize) -> Self {
        self.sequence = sequence;
        self
    }

    /// This agent keeping the conversation within the window with `memory` (without memory, a
    /// prompt that does not fit is the engine's error). Summaries are written by the model on
    /// the backend's last sequence ([`ModelSummariser`]) unless [`Agent::with_summariser`].
    #[must_use]
    pub fn with_memory(mut self, memory: Memory) -> Self {
        self.memory = Some(memory);
        self
    }

    /// This agent folding evicted turns into the summary with `summariser`.
    #[must_use]
    pub fn with_summariser(mut self, summariser: Box<dyn Summariser + 'a>) -> Self {
        self.summariser = summariser;
        self
    }

    /// This agent continuing from a saved transcript (a resumed session).
    #[must_use]
    pub fn with_transcript(mut self, transcript: Transcript) -> Self {
        self.transcript = transcript;
        self
    }

    /// The conversation's memory, when it has one.
    pub fn memory(&self) -> Option<&Memory> {
        self.memory.as_ref()
    }

    /// The memory, to change it between turns (`/lang de`, `/reset`).
    pub fn memory_mut(&mut self) -> Option<&mut Memory> {
        self.memory.as_mut()
    }

    /// The sequence this agent generates on.
    pub fn sequence(&self) -> usize {
        self.sequence
    }

    /// The backend, for work between turns (counting tokens, say).
    pub fn backend(&mut self) -> &mut dyn Backend {
        self.backend
    }

    /// The token ids the conversation was fed and sampled so far.
    pub fn transcript(&self) -> &Transcript {
        &self.transcript
    }

    /// What this agent keeps between turns, to build another agent from (after the tools or
    /// the conversation changed): the transcript and the memory.
    pub fn into_state(self) -> (Transcript, Option<Memory>) {
        (self.transcript, self.memory)
    }

    /// Folds the whole kept history of `conversation` into the memory's summary now
    /// (`/compact`); `None` without memory or with nothing to fold.
    ///
    /// # Errors
    /// The conversation cannot be measured.
    pub fn compact(
        &mut self,
        conversation: &Conversation,
    ) -> Result<Option<crate::memory::MemoryReport>, String> {
        let Some(memory) = &mut self.memory else {
            return Ok(None);
        };
        let mut measure = Measure {
            backend: &mut *self.backend,
            format: self.format,
            controls: &self.controls,
        };
        memory
            .compact(conversation, &mut measure, self.summariser.as_mut())
            .map_err(|e| e.to_string())
    }

    /// Runs one turn on `conversation` (which ends with the user's message), reporting through
    /// `on_event`; `approve` decides calls whose policy is `ask`.
    pub fn run_turn(
        &mut self,
        conversation: &mut Conversation,
        options: &TurnOptions,
        approve: &mut Approver<'_>,
        on_event: &mut dyn FnMut(&Event),
    ) -> TurnOutcome {
        let started = Instant::now();
        // Ids stay unique in the conversation even across agents: one per result so far.
        let results_so_far = conversation
            .messages
            .iter()
            .filter(|m| matches!(m, Message::Tool { .. }))
            .count();
        self.next_call = self.next_call.max(results_so_far);
        let mut outcome = TurnOutcome {
            stop: TurnStop::Answered,
            steps: 0,
            answer: String::new(),
            prompt_tokens: 0,
            reused_tokens: 0,
            generated_tokens: 0,
            reason: None,
        };
        let end = |outcome: &mut TurnOutcome, stop, reason: Option<String>| {
            outcome.stop = stop;
            outcome.reason = reason;
        };
        let mut failed_steps = 0;
        let _watchdog = options
            .deadline
            .map(|at| Watchdog::start(at, options.cancel.clone()));
        loop {
            if options.cancel.is_cancelled() {
                end(&mut outcome, TurnStop::Cancelled, None);
                break;
            }
            if outcome.steps >= options.max_steps {
                let reason = format!(
                    "the model was still calling tools when the step limit ({}) was reached",
                    outcome.steps
                );
                end(&mut outcome, TurnStop::StepLimit, Some(reason));
                break;
            }
            outcome.steps += 1;
            let step = match self.step(conversation, options, outcome.steps, on_event) {
                Ok(step) => step,
                Err(reason) => {
                    end(&mut outcome, TurnStop::Error, Some(reason));
                    break;
                }
            };
            outcome.prompt_tokens += step.prompt_tokens;
            outcome.reused_tokens += step.reused_tokens;
            outcome.generated_tokens += step.generated_tokens;
            outcome.answer = step.parsed.content.clone();
            if step.cancelled {
                // A reply cut short keeps its text only when it holds no call without a result.
                if step.parsed.tool_calls.is_empty() && step.parsed.errors.is_empty() {
                    conversation
                        .messages
                        .push(Message::generated(step.generated));
                }
                end(&mut outcome, TurnStop::Cancelled, None);
                break;
            }
            let mut parsed = step.parsed;
            for call in &mut parsed.tool_calls {
                self.next_call += 1;
                call.id = Some(format!("call_{}", self.next_call));
            }
            // Rendered from `generated` (what the model wrote, byte for byte); the parsed text
            // and calls, with their ids, are kept for saved sessions and API clients.
            conversation.messages.push(Message::Assistant {
                content: parsed.content.clone(),
                tool_calls: parsed.tool_calls.clone(),
                generated: Some(step.generated),
            });
            if parsed.tool_calls.is_empty() && parsed.errors.is_empty() {
                break;
            }
            let results = self.run_calls(&parsed, options, approve, on_event);
            for r in &results {
                conversation.messages.push(Message::Tool {
                    content: ToolOutput::Text(r.content.clone()),
                    call_id: Some(r.id.clone()),
                });
            }
            if let Some(denied) = results.iter().find(|r| r.denied) {
                let reason = format!("the call to `{}` was denied", denied.name);
                end(&mut outcome, TurnStop::Denied, Some(reason));
                break;
            }
            if results.iter().any(|r| r.ok) {
                failed_steps = 0;
            } else {
                failed_steps += 1;
                if failed_steps > options.max_retries {
                    let last = results.last().map_or("", |r| r.content.as_str());
                    let reason = format!(
                        "the model made no valid call in {failed_steps} steps in a row; last: {}",
                        output::cap(last, 300).0
                    );
                    end(&mut outcome, TurnStop::Error, Some(reason));
                    break;
                }
            }
        }
        if outcome.stop == TurnStop::Cancelled
            && options.deadline.is_some_and(|at| Instant::now() >= at)
        {
            outcome.stop = TurnStop::Timeout;
            outcome.reason = Some(format!(
                "the turn's time ran out after {:.1} s",
                started.elapsed().as_secs_f64()
            ));
        }
        on_event(&Event::TurnFinished {
            stop: outcome.stop,
            steps: outcome.steps,
            prompt_tokens: outcome.prompt_tokens,
            reused_tokens: outcome.reused_tokens,
            generated_tokens: outcome.generated_tokens,
            seconds: started.elapsed().as_secs_f64(),
            reason: outcome.reason.clone(),
        });
        outcome
    }

    /// One generation: render, generate while parsing, and return what the model wrote.
    fn step(
        &mut self,
        conversation: &Conversation,
        options: &TurnOptions,
        step: usize,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<Step, String> {
        let choice = match (&options.tool_choice, step) {
            (choice, 1) => choice.clone(),
            (ToolChoice::None, _) => ToolChoice::None,
            _ => ToolChoice::Auto,
        };
        let tokens = self.prompt_tokens(conversation, on_event)?;
        let constraint = self
            .format
            .constraint(conversation, &choice)
            .map_err(|e| format!("cannot constrain tool calls: {e}"))?;
        let request = GenerateRequest {
            prompt: Prompt::Tokens(tokens),
            sequence: self.sequence,
            max_tokens: options.max_tokens,
            sampling: options.sampling.clone(),
            stop_strings: Vec::new(),
            stop_tokens: Vec::new(),
            cancel: options.cancel.clone(),
            constraint,
        };
        let mut parser = self.format.parser(conversation.tool_set());
        let mut parsed = ParsedMessage::default();
        let mut apply = |events: Vec<ParseEvent>, parsed: &mut ParsedMessage| {
            for event in events {
                if let ParseEvent::Text(delta) = &event {
                    on_event(&Event::Text {
                        delta: delta.clone(),
                    });
                }
                parsed.apply(event);
            }
        };
        let (generation, generated) =
            generate_parsed(&mut *self.backend, &request, &mut *parser, &mut |events| {
                apply(events, &mut parsed);
                ControlFlow::Continue(())
            })
            .map_err(|e| e.to_string())?;
        self.transcript.record(&generation);
        Ok(Step {
            generated,
            parsed,
            cancelled: generation.stop == StopReason::Cancelled,
            prompt_tokens: generation.prompt_tokens,
            reused_tokens: generation.reused_tokens,
            generated_tokens: generation.generated_tokens,
        })
    }

    /// The ids of the next prompt: the conversation as memory lets the model see it, made to
    /// fit first when it is over the high watermark (each action reported as a `memory` event).
    fn prompt_tokens(
        &mut self,
        conversation: &Conversation,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<Vec<crate::engine::Token>, String> {
        let started = Instant::now();
        if let Some(memory) = &mut self.memory {
            memory.observe(conversation);
        }
        let mut reports = Vec::new();
        loop {
            let view = match &self.memory {
                Some(memory) => memory.view(conversation),
                None => conversation.clone(),
            };
            let marked = view.plain_marked(&self.controls);
            let rendered = self
                .format
                .render(&marked, true)
                .map_err(|e| format!("cannot render the conversation: {e}"))?;
            let splits = message_starts(self.format, &marked, &rendered);
            let shift = self
                .memory
                .as_ref()
                .is_some_and(|m| m.settings.shift_in_place);
            let tokens = self
                .transcript
                .prompt_for(&rendered, &splits, self.backend, self.sequence, shift)
                .map_err(|e| format!("cannot tokenize the conversation: {e}"))?;
            let shifted = self.transcript.shifted();
            let Some(memory) = &mut self.memory else {
                return Ok(tokens);
            };
            let mut measure = Measure {
                backend: &mut *self.backend,
                format: self.format,
                controls: &self.controls,
            };
            if !memory.over(tokens.len()) {
                let regions = memory
                    .account(conversation, tokens.len(), &mut measure)
                    .map_err(|e| e.to_string())?;
                let seconds = started.elapsed().as_secs_f64();
                for report in reports {
                    on_event(&Event::Memory {
                        report,
                        evicted_turns: memory.evicted_turns,
                        tokens: regions,
                        shifted,
                        seconds,
                    });
                }
                return Ok(tokens);
            }
            match memory.make_room(
                conversation,
                tokens.len(),
                &mut measure,
                self.summariser.as_mut(),
            ) {
                Ok(report) => reports.push(report),
                Err(e @ MemoryError::TooBig { .. }) | Err(e @ MemoryError::Measure(_)) => {
                    return Err(e.to_string())
                }
            }
        }
    }

    /// Decides and runs the calls of one reply, then the parse errors; results in call order.
    fn run_calls(
        &mut self,
        parsed: &ParsedMessage,
        options: &TurnOptions,
        approve: &mut Approver<'_>,
        on_event: &mut dyn FnMut(&Event),
    ) -> Vec<CallResult> {
        let mut planned = Vec::new();
        for call in &parsed.tool_calls {
            let id = call.id.clone().unwrap_or_default();
            on_event(&Event::ToolCall {
                id: id.clone(),
                name: call.name.clone(),
                arguments: call.arguments.clone(),
            });
            let run = !options.cancel.is_cancelled()
                && match options.policy.decide(&call.name) {
                    Decision::Allow => true,
                    Decision::Ask => approve(call),
                    Decision::Deny => false,
                };
            planned.push((id, call, run));
        }
        let mut results: Vec<CallResult> = Vec::with_capacity(planned.len());
        for chunk in planned.chunks(options.parallel.max(1)) {
            let ran: Vec<CallResult> = std::thread::scope(|scope| {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|(id, call, run)| {
                        let registry = self.registry;
                        let control = CallControl {
                            deadline: options
                                .call_timeout
                                .and_then(|t| Instant::now().checked_add(t)),
                            cancel: options.cancel.clone(),
                        };
                        let cap = options.result_bytes;
                        scope.spawn(move || execute(registry, id, call, *run, &control, cap))
                    })
                    .collect();
                handles
                    .into_iter()
                    .zip(chunk)
                    .map(|(h, (id, call, _))| {
                        h.join().unwrap_or_else(|_| CallResult {
                            id: id.clone(),
                            name: call.name.clone(),
                            ok: false,
                            denied: false,
                            content: "error: the tool crashed".into(),
                            seconds: 0.0,
                        })
                    })
                    .collect()
            });
            results.extend(ran);
        }
        for error in &parsed.errors {
            self.next_call += 1;
            let hint = match &error.kind {
                ParseErrorKind::UnknownTool { .. } => {
                    let names: Vec<&str> = self
                        .registry
                        .specs()
                        .map(|(s, _)| s.name.as_str())
                        .collect();
                    format!("; available tools: {}", names.join(", "))
                }
                _ => String::new(),
            };
            results.push(CallResult {
                id: format!("call_{}", self.next_call),
                name: String::new(),
                ok: false,
                denied: false,
                content: format!("error: {error}{hint}"),
                seconds: 0.0,
            });
        }
        for r in &results {
            on_event(&Event::ToolResult {
                id: r.id.clone(),
                name: r.name.clone(),
                ok: r.ok,
                content: r.content.clone(),
                seconds: r.seconds,
            });
        }
        results
    }
}

/// The tools of `registry` as the model is told about them, sorted by name; `only` keeps those
/// named (all when `None`).
pub fn prompt_tools(registry: &Registry, only: Option<&[String]>) -> Vec<corral_prompts::ToolSpec> {
    registry
        .specs()
        .filter(|(spec, _)| only.is_none_or(|names| names.contains(&spec.name)))
        .map(|(spec, _)| spec.clone())
        .collect()
}

/// Sets a cancel token at a deadline, unless dropped first.
struct Watchdog {
    _stop: std::sync::mpsc::Sender<()>,
}

impl Watchdog {
    fn start(at: Instant, cancel: CancelToken) -> Watchdog {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let wait = at.saturating_duration_since(Instant::now());
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(wait) {
                cancel.cancel();
            }
        });
        Watchdog { _stop: stop }
    }
}

/// What one generation produced.
struct Step {
    generated: String,
    parsed: ParsedMessage,
    cancelled: bool,
    prompt_tokens: usize,
    reused_tokens: usize,
    generated_tokens: usize,
}

/// One call's outcome, as the model and the events see it.
struct CallResult {
    id: String,
    name: String,
    ok: bool,
    denied: bool,
    content: String,
    seconds: f64,
}

fn execute(
    registry: &Registry,
    id: &str,
    call: &ToolCall,
    run: bool,
    control: &CallControl,
    cap: usize,
) -> CallResult {
    let result = |ok, denied, content: String, seconds| CallResult {
        id: id.to_owned(),
        name: call.name.clone(),
        ok,
        denied,
        content,
        seconds,
    };
    if control.cancel.is_cancelled() {
        return result(false, false, "error: cancelled before it ran".into(), 0.0);
    }
    if !run {
        let text = format!("error: the user denied this call to `{}`", call.name);
        return result(false, true, text, 0.0);
    }
    let started = Instant::now();
    let outcome = registry.call_value(&call.name, &call.arguments, control);
    let seconds = started.elapsed().as_secs_f64();
    match outcome {
        Ok(out) => result(true, false, output::for_model(&out, cap), seconds),
        Err(CallError::Tool(msg)) => {
            let text = output::cap(&corral_tools::sanitize::strip_control(&msg), cap).0;
            result(false, false, format!("error: {text}"), seconds)
        }
        Err(CallError::Runtime(e)) => result(false, false, format!("error: {e}"), seconds),
    }
}

#[cfg(test)]
mod tests;
