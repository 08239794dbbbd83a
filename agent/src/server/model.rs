//! The served model: one backend and format, its sequences, and the completion of one request.
//!
//! **KV reuse between requests.** Each sequence keeps the [`Transcript`] of what it last held.
//! A request is rendered in the model's format and given the sequence whose transcript shares
//! the longest prefix with it (the least recently used one when none shares anything), so a
//! client that sends its growing conversation again pays only for the new messages. Replies are
//! remembered by what the client will send back (content and calls) with the exact text the
//! model wrote, and an assistant message that comes back is rendered from that text — so the
//! prompt extends the cache byte for byte, the model's own token ids included.
//!
//! **Requests at once.** Each request in flight holds one sequence ([`ServedModel::admit`] lets
//! in as many as there are sequences, in arrival order) and its own handle to the engine
//! ([`Backend::share`]), which decodes the requests' tokens together, one batch per step. A
//! backend that cannot share serves one request at a time. The bookkeeping (which sequence holds
//! which conversation, remembered replies) sits behind one lock held only between steps.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use corral_prompts::{
    ControlTexts, Conversation, Format, Message, ParseEvent, ParsedMessage, ToolCall, ToolChoice,
    ToolConstraint,
};
use serde_json::{json, Value};

use super::books::{reply_key, Books};
use super::error::ApiError;
use super::request::{ChatRequest, ResponseFormat};
use crate::agent::{self, Transcript};
use crate::engine::{
    Backend, CancelToken, EngineError, GenerateRequest, ModelInfo, Prompt, StopReason, Token,
};

/// Why generation ended, as OpenAI spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The model ended its turn (or a stop string matched).
    Stop,
    /// `max_tokens` or the context window ran out.
    Length,
    /// The reply is tool calls.
    ToolCalls,
}

impl Finish {
    /// OpenAI's `finish_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::ToolCalls => "tool_calls",
        }
    }
}

/// Token counts of one completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Tokens of the prompt (all steps, in agent mode).
    pub prompt_tokens: usize,
    /// Of those, found in the KV cache and not evaluated again.
    pub cached_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
}

impl Usage {
    /// OpenAI's `usage` object.
    pub fn to_json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        })
    }
}

/// What a completion streams as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// The request was accepted and generation begins (errors after this come mid-stream).
    Started,
    /// Visible text (leading whitespace of the reply is dropped).
    Text(String),
    /// A complete call, with its id and its index in the reply.
    Call {
        /// 0, 1, … in the reply.
        index: usize,
        /// The call.
        call: ToolCall,
    },
    /// Agent mode: a tool ran server-side.
    Step(Value),
}

/// A finished completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The text; `None` when the reply is only calls.
    pub content: Option<String>,
    /// Calls, each with its id.
    pub tool_calls: Vec<ToolCall>,
    /// Why it ended.
    pub finish: Finish,
    /// Token counts.
    pub usage: Usage,
    /// Agent mode: the tool steps run server-side, and how the turn ended.
    pub agent: Option<Value>,
    /// Generation was cut short by the caller (the client left).
    pub cancelled: bool,
}

/// The one loaded model behind the server, shared by the requests in flight.
pub struct ServedModel {
    /// The handle given at start: requests get shares of it, or take turns with it.
    engine: Mutex<Box<dyn Backend + Send>>,
    shares: bool,
    info: ModelInfo,
    format: Box<dyn Format + Send + Sync>,
    controls: ControlTexts,
    books: Mutex<Books>,
    admission: Arc<tokio::sync::Semaphore>,
    call_prefix: String,
    /// Tokens a reply gets when the request names no `max_tokens` (the server's cap, or less
    /// when the window has less room).
    pub reply_cap: usize,
}

impl ServedModel {
    /// Serves `backend` in `format`, one slot per backend sequence; as many requests run at
    /// once as there are sequences when the backend can share itself ([`Backend::share`]).
    pub fn new(backend: Box<dyn Backend + Send>, format: Box<dyn Format + Send + Sync>) -> Self {
        let info = backend.info().clone();
        let controls = ControlTexts::new(info.control_tokens.iter().cloned());
        let sequences = info.sequences.max(1);
        let shares = backend.share().is_some();
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        ServedModel {
            engine: Mutex::new(backend),
            shares,
            info,
            format,
            controls,
            books: Mutex::new(Books::new(sequences)),
            admission: Arc::new(tokio::sync::Semaphore::new(if shares {
                sequences
            } else {
                1
            })),
            call_prefix: format!("call_{:x}", started & 0xff_ffff_ffff),
            reply_cap: super::Limits::default().max_tokens,
        }
    }

    /// Facts about the model.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Requests that may be in flight at once: one per sequence, or one when the backend cannot
    /// share itself.
    pub fn concurrency(&self) -> usize {
        if self.shares {
            self.info.sequences.max(1)
        } else {
            1
        }
    }

    /// Requests running now.
    pub fn in_flight(&self) -> usize {
        self.concurrency()
            .saturating_sub(self.admission.available_permits())
    }

    /// Waits, in arrival order, until one more request may run; it runs while the permit is
    /// held.
    ///
    /// # Errors
    /// Never in practice (the queue is never closed).
    pub async fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        Arc::clone(&self.admission)
            .acquire_owned()
            .await
            .map_err(|_| ApiError::internal("the server is stopping"))
    }

    /// The text `sequence`'s transcript holds (tests).
    #[cfg(test)]
    pub(super) fn held_text(&self, sequence: usize) -> String {
        self.books().slots[sequence].transcript.text().to_string()
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        // A request that panicked leaves the books as consistent as any step does.
        self.books.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Completes `request` (plain mode): streams pieces into `sink` (`Break`: the client is gone,
    /// generation stops) and returns the whole reply.
    ///
    /// # Errors
    /// 400s for a conversation the format cannot express or that does not fit the window, 500
    /// when the engine fails.
    pub fn complete(
        &self,
        request: &ChatRequest,
        cancel: &CancelToken,
        sink: &mut dyn FnMut(Piece) -> ControlFlow<()>,
    ) -> Result<Completion, ApiError> {
        let conversation = self.conversation(request);
        let (mut lease, tokens, transcript) = self.lease(&conversation)?;
        let sequence = lease.sequence;
        let max_tokens = self.room_for_reply(tokens.len(), request.max_tokens)?;
        let constraint = match &request.response_format {
            ResponseFormat::Text => self
                .format
                .constraint(&conversation, &request.tool_choice)
                .map_err(|e| ApiError::invalid(Some("tool_choice".into()), e.to_string()))?,
            ResponseFormat::JsonObject => {
                Some(ToolConstraint::json_reply(&json!({"type": "object"})))
            }
            ResponseFormat::JsonSchema(schema) => Some(ToolConstraint::json_reply(schema)),
        };
        let generate = GenerateRequest {
            prompt: Prompt::Tokens(tokens),
            sequence,
            max_tokens: Some(max_tokens),
            sampling: request.sampling.clone(),
            stop_strings: request.stop.clone(),
            stop_tokens: Vec::new(),
            cancel: cancel.clone(),
            constraint,
        };
        lease.held = transcript;
        if sink(Piece::Started).is_break() {
            return Err(ApiError::internal(
                "the client left before generation began",
            ));
        }
        let mut parser = self.format.parser(conversation.tool_set());
        let mut parsed = ParsedMessage::default();
        let mut out = Outgoing::new(request.parallel_tool_calls, self.next_id_base());
        let mut gone = false;
        let mut feed = |events: Vec<ParseEvent>, parsed: &mut ParsedMessage, gone: &mut bool| {
            for event in events {
                for piece in out.take(&event) {
                    if !*gone && sink(piece).is_break() {
                        *gone = true;
                    }
                }
                parsed.apply(event);
            }
        };
        let (generation, generated) =
            agent::generate_parsed(lease.backend(), &generate, &mut *parser, &mut |events| {
                feed(events, &mut parsed, &mut gone);
                if gone {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .map_err(engine_error)?;
        lease.held.record(&generation);
        drop(lease);
        let mut calls = parsed.tool_calls;
        let parsed_calls = calls.len();
        if !request.parallel_tool_calls {
            calls.truncate(1);
        }
        for (call, id) in calls.iter_mut().zip(out.ids.iter()) {
            call.id = Some(id.clone());
        }
        let content = parsed.content.trim_start().to_string();
        // Only a reply the client will send back as it got it: whole, not empty, no call left
        // out (`parallel_tool_calls: false` drops the rest, which the text still holds).
        let whole = matches!(
            generation.stop,
            StopReason::EndOfGeneration(_) | StopReason::MaxTokens
        ) && calls.len() == parsed_calls
            && !(content.is_empty() && calls.is_empty());
        if whole {
            self.books()
                .replies
                .remember(reply_key(&content, &calls), generated);
        }
        let finish = if !calls.is_empty() {
            Finish::ToolCalls
        } else if matches!(
            generation.stop,
            StopReason::MaxTokens | StopReason::ContextFull
        ) {
            Finish::Length
        } else {
            Finish::Stop
        };
        Ok(Completion {
            content: (!content.is_empty() || calls.is_empty()).then_some(content),
            tool_calls: calls,
            finish,
            usage: Usage {
                prompt_tokens: generation.prompt_tokens,
                cached_tokens: generation.reused_tokens,
                completion_tokens: generation.generated_tokens,
            },
            agent: None,
            cancelled: generation.stop == StopReason::Cancelled,
        })
    }

    /// Runs an agent turn with corral's own tools (`registry`, the server owner's grants and
    /// `policy`; calls whose policy is `ask` are refused, there is no one to ask) and returns
    /// the final answer, with the steps in [`Completion::agent`].
    ///
    /// # Errors
    /// As [`ServedModel::complete`]; a turn the engine broke off is a 500.
    pub fn complete_agent(
        &self,
        request: &ChatRequest,
        registry: &corral_tools::Registry,
        setup: &AgentSetup,
        cancel: &CancelToken,
        sink: &mut dyn FnMut(Piece) -> ControlFlow<()>,
    ) -> Result<Completion, ApiError> {
        if request.response_format != ResponseFormat::Text || !request.stop.is_empty() {
            return Err(ApiError::invalid(
                Some(
                    if request.stop.is_empty() {
                        "response_format"
                    } else {
                        "stop"
                    }
                    .into(),
                ),
                "agent mode runs whole turns: `stop` and `response_format` are not supported there",
            ));
        }
        let mut conversation = self.conversation(request);
        let tools = agent::prompt_tools(registry, Some(&setup.tools));
        super::request::check_choice(&request.tool_choice, tools.iter().map(|t| t.name.as_str()))?;
        conversation.tools = (!tools.is_empty()).then_some(tools);
        let (mut lease, tokens, transcript) = self.lease(&conversation)?;
        let prompt = tokens.len();
        let window = self.info.context_tokens;
        let max_tokens = request
            .max_tokens
            .unwrap_or_else(|| crate::cli::reply_budget(window));
        self.room_for_reply(prompt, Some(max_tokens))?;
        let options = agent::TurnOptions {
            max_steps: setup.max_steps,
            max_tokens: Some(max_tokens),
            tool_choice: if conversation.tools.is_some() {
                request.tool_choice.clone()
            } else {
                ToolChoice::None
            },
            sampling: request.sampling.clone(),
            policy: setup.policy.clone(),
            cancel: cancel.clone(),
            call_timeout: setup.call_timeout,
            ..agent::TurnOptions::default()
        };
        let before = conversation.messages.len();
        let mut out = Outgoing::new(true, self.next_id_base());
        if sink(Piece::Started).is_break() {
            return Err(ApiError::internal(
                "the client left before generation began",
            ));
        }
        let mut gone = false;
        let sequence = lease.sequence;
        let mut runner = agent::Agent::new(lease.backend(), self.format.as_ref(), registry)
            .on_sequence(sequence)
            .with_transcript(transcript);
        let outcome = runner.run_turn(&mut conversation, &options, &mut |_| false, &mut |event| {
            let piece = match event {
                agent::Event::Text { delta } => out.text(delta),
                agent::Event::ToolResult {
                    id,
                    name,
                    ok,
                    content,
                    seconds,
                } => Some(Piece::Step(json!({
                    "id": id, "name": name, "ok": ok, "result": content,
                    "seconds": seconds,
                }))),
                _ => None,
            };
            if let Some(piece) = piece {
                if !gone && sink(piece).is_break() {
                    gone = true;
                    cancel.cancel();
                }
            }
        });
        let held = runner.into_state().0;
        lease.held = held;
        drop(lease);
        let steps: Vec<Value> = steps_of(&conversation.messages[before..]);
        Ok(Completion {
            content: Some(outcome.answer.trim_start().to_string()),
            tool_calls: Vec::new(),
            finish: if outcome.stop == agent::TurnStop::StepLimit {
                Finish::Length
            } else {
                Finish::Stop
            },
            usage: Usage {
                prompt_tokens: outcome.prompt_tokens,
                cached_tokens: outcome.reused_tokens,
                completion_tokens: outcome.generated_tokens,
            },
            agent: Some(json!({
                "stop": outcome.stop,
                "reason": outcome.reason,
                "steps": steps,
            })),
            cancelled: outcome.stop == agent::TurnStop::Cancelled,
        })
    }

    /// The request's conversation; assistant messages this server wrote get their exact text.
    fn conversation(&self, request: &ChatRequest) -> Conversation {
        let books = self.books();
        let messages = request
            .messages
            .iter()
            .map(|message| match message {
                Message::Assistant {
                    content,
                    tool_calls,
                    generated: None,
                } => Message::Assistant {
                    content: content.clone(),
                    tool_calls: tool_calls.clone(),
                    generated: books
                        .replies
                        .get(&reply_key(content.trim_start(), tool_calls))
                        .map(str::to_string),
                },
                other => other.clone(),
            })
            .collect();
        let offered = !request.tools.is_empty() && request.tool_choice != ToolChoice::None;
        Conversation {
            messages,
            tools: offered.then(|| request.tools.clone()),
            builtin_tools: None,
        }
    }

    /// A free sequence for `conversation` with an engine handle, the exact ids of its prompt
    /// there, and the transcript that holds them (put in [`Lease::held`] only once the request
    /// is accepted, so a refused one leaves the slot's conversation as it was).
    fn lease(
        &self,
        conversation: &Conversation,
    ) -> Result<(Lease<'_>, Vec<Token>, Transcript), ApiError> {
        let (rendered, marked) = self.render(conversation)?;
        let (sequence, held) = {
            let mut books = self.books();
            let sequence = books.pick_sequence(&rendered).ok_or_else(|| {
                ApiError::internal("every sequence is busy (a request was not admitted)")
            })?;
            let slot = &mut books.slots[sequence];
            slot.busy = true;
            (sequence, std::mem::take(&mut slot.transcript))
        };
        let handle = {
            let engine = self.engine.lock().unwrap_or_else(PoisonError::into_inner);
            match engine.share() {
                Some(shared) => Handle::Shared(shared),
                None => Handle::Turn(engine),
            }
        };
        let mut lease = Lease {
            model: self,
            sequence,
            held,
            handle,
        };
        let splits = agent::message_starts(self.format.as_ref(), &marked, &rendered);
        let mut transcript = lease.held.clone();
        let tokens = transcript
            .prompt_for(&rendered, &splits, lease.backend(), sequence, false)
            .map_err(engine_error)?;
        Ok((lease, tokens, transcript))
    }

    fn render(&self, conversation: &Conversation) -> Result<(String, Conversation), ApiError> {
        let marked = conversation.plain_marked(&self.controls);
        let rendered = self.format.render(&marked, true).map_err(|e| {
            ApiError::invalid(
                Some("messages".into()),
                format!("the conversation cannot be put in this model's format: {e}"),
            )
        })?;
        Ok((rendered, marked))
    }

    /// Tokens the reply may take: what was asked (checked against the window), else what the
    /// window leaves.
    fn room_for_reply(&self, prompt: usize, asked: Option<usize>) -> Result<usize, ApiError> {
        let window = self.info.context_tokens;
        let left = window.saturating_sub(prompt);
        match asked {
            Some(asked) if prompt + asked > window => {
                Err(context_exceeded(window, prompt, Some(asked)))
            }
            Some(asked) => Ok(asked),
            None if left == 0 => Err(context_exceeded(window, prompt, None)),
            None => Ok(left.min(self.reply_cap)),
        }
    }

    /// A fresh prefix for one reply's call ids, unique on this server.
    fn next_id_base(&self) -> String {
        let mut books = self.books();
        books.calls += 1;
        format!("{}_{}", self.call_prefix, books.calls)
    }
}

/// The engine as one request reaches it.
enum Handle<'a> {
    /// Its own handle: it runs at the same time as other requests.
    Shared(Box<dyn Backend + Send>),
    /// The server's one handle, held for the whole request.
    Turn(MutexGuard<'a, Box<dyn Backend + Send>>),
}

/// One request's hold on a sequence; the sequence is free again, holding
/// [`Lease::held`], when the lease is dropped (also when the request fails or panics).
struct Lease<'a> {
    model: &'a ServedModel,
    sequence: usize,
    /// What the sequence holds once the request ends.
    held: Transcript,
    handle: Handle<'a>,
}

impl Lease<'_> {
    fn backend(&mut self) -> &mut dyn Backend {
        match &mut self.handle {
            Handle::Shared(backend) => backend.as_mut(),
            Handle::Turn(backend) => backend.as_mut(),
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut books = self.model.books();
        let slot = &mut books.slots[self.sequence];
        slot.transcript = std::mem::take(&mut self.held);
        slot.busy = false;
    }
}

/// How agent mode runs tools.
#[derive(Debug, Clone)]
pub struct AgentSetup {
    /// The owner's policy (`ask` counts as refused).
    pub policy: agent::Policy,
    /// Generations per turn at most.
    pub max_steps: usize,
    /// Longest one call may run.
    pub call_timeout: Option<std::time::Duration>,
    /// The tools offered (those of plugins that need a folder and got none are left out).
    pub tools: Vec<String>,
}

fn context_exceeded(window: usize, prompt: usize, asked: Option<usize>) -> ApiError {
    let message = match asked {
        Some(asked) => format!(
            "this model's context window is {window} tokens, but the messages are {prompt} \
             tokens and max_tokens asks for {asked} more: shorten the messages or lower max_tokens"
        ),
        None => format!(
            "this model's context window is {window} tokens, but the messages are {prompt} \
             tokens, leaving no room for a reply: shorten the messages"
        ),
    };
    ApiError::invalid_code(Some("messages".into()), "context_length_exceeded", message)
}

fn engine_error(error: EngineError) -> ApiError {
    match error {
        EngineError::PromptTooLong { prompt, context } => context_exceeded(context, prompt, None),
        e if e.is_usage() => ApiError::invalid(None, e.to_string()),
        // The grammar is built from the request's schemas (or `response_format`).
        EngineError::Constraint(why) => ApiError::invalid(
            Some("tools".into()),
            format!("the tools' schemas (or response_format's) cannot be enforced: {why}"),
        ),
        e => ApiError::internal(format!("the model failed: {e}")),
    }
}

/// Turns parse events into what the client sees: text without the reply's leading whitespace,
/// calls with fresh ids (only the first without parallel calls).
struct Outgoing {
    parallel: bool,
    started: bool,
    held: String,
    id_base: String,
    ids: Vec<String>,
}

impl Outgoing {
    fn new(parallel: bool, id_base: String) -> Self {
        Outgoing {
            parallel,
            started: false,
            held: String::new(),
            id_base,
            ids: Vec::new(),
        }
    }

    fn text(&mut self, delta: &str) -> Option<Piece> {
        if self.started {
            return Some(Piece::Text(delta.to_string()));
        }
        self.held.push_str(delta);
        let visible = self.held.trim_start();
        if visible.is_empty() {
            return None;
        }
        self.started = true;
        let piece = Piece::Text(visible.to_string());
        self.held.clear();
        Some(piece)
    }

    fn take(&mut self, event: &ParseEvent) -> Vec<Piece> {
        match event {
            ParseEvent::Text(delta) => self.text(delta).into_iter().collect(),
            ParseEvent::ToolCall(call) if self.parallel || self.ids.is_empty() => {
                let id = format!("{}_{}", self.id_base, self.ids.len());
                self.ids.push(id.clone());
                let mut call = call.clone();
                call.id = Some(id);
                vec![Piece::Call {
                    index: self.ids.len() - 1,
                    call,
                }]
            }
            _ => Vec::new(),
        }
    }
}

/// The tool steps of an agent turn: each call with its result.
fn steps_of(messages: &[Message]) -> Vec<Value> {
    let mut steps = Vec::new();
    let mut results: HashMap<&str, &corral_prompts::ToolOutput> = HashMap::new();
    for message in messages {
        if let Message::Tool {
            content,
            call_id: Some(id),
        } = message
        {
            results.insert(id.as_str(), content);
        }
    }
    for message in messages {
        if let Message::Assistant { tool_calls, .. } = message {
            for call in tool_calls {
                let result = call
                    .id
                    .as_deref()
                    .and_then(|id| results.get(id))
                    .map(|output| match output {
                        corral_prompts::ToolOutput::Text(text) => Value::String(text.clone()),
                        corral_prompts::ToolOutput::Json(value) => value.clone(),
                    });
                steps.push(json!({
                    "id": call.id, "name": call.name, "arguments": call.arguments,
                    "result": result,
                }));
            }
        }
    }
    steps
}
