use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use corral_prompts::llama31::{Llama31, Style};
use serde_json::{json, Value};

use super::*;
use crate::engine::{CancelToken, ScriptedBackend, ScriptedReply};

const EOT: &str = "<|eot_id|>";
const EOM: &str = "<|eom_id|>";

mod http;

fn format() -> Box<dyn corral_prompts::Format + Send + Sync> {
    Box::new(Llama31::new(Style::Template).with_date(Some("26 Jul 2024".into())))
}

/// A model answering with `replies` in order, recording each prompt it saw.
fn served(replies: Vec<ScriptedReply>, sequences: usize) -> (ServedModel, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let mut replies = replies.into_iter();
    let backend = ScriptedBackend::new(Vec::new())
        .with_sequences(sequences)
        .with_responder(move |prompt| {
            log.lock().unwrap().push(prompt.to_string());
            replies
                .next()
                .unwrap_or_else(|| ScriptedReply::ending_with("(no more replies)", EOT))
        });
    (ServedModel::new(Box::new(backend), format()), seen)
}

fn parse(body: Value) -> Result<ChatRequest, ApiError> {
    request::parse(
        body.to_string().as_bytes(),
        &Limits::default(),
        &crate::engine::Sampling::greedy(),
    )
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}})
}

fn complete(model: &ServedModel, body: Value) -> (Result<Completion, ApiError>, Vec<Piece>) {
    let request = parse(body).expect("a valid request");
    let mut pieces = Vec::new();
    let result = model.complete(&request, &CancelToken::new(), &mut |piece| {
        pieces.push(piece);
        ControlFlow::Continue(())
    });
    (result, pieces)
}

#[test]
fn client_mistakes_are_400s_naming_the_field() {
    let cases = [
        (
            json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]}),
            "messages[0].role",
            "unknown role",
        ),
        (json!({"model": "m", "messages": []}), "messages", "empty"),
        (
            json!({"messages": [{"role": "user", "content": "x"}]}),
            "model",
            "missing `model`",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]}),
            "messages[1].tool_calls[0].function.arguments",
            "not a JSON object",
        ),
        (
            json!({"model": "m", "n": 2, "messages": [{"role": "user", "content": "x"}]}),
            "n",
            "must be 1",
        ),
        (
            json!({"model": "m", "tool_choice": "required", "messages": [{"role": "user", "content": "x"}]}),
            "tool_choice",
            "no `tools`",
        ),
        (
            json!({"model": "m", "tools": [weather_tool()], "tool_choice": {"type": "function", "function": {"name": "nope"}},
            "messages": [{"role": "user", "content": "x"}]}),
            "tool_choice",
            "`nope`",
        ),
        (
            json!({"model": "m", "max_tokens": 100000, "messages": [{"role": "user", "content": "x"}]}),
            "max_tokens",
            "cap of 4096",
        ),
        (
            json!({"model": "m", "temperature": 3, "messages": [{"role": "user", "content": "x"}]}),
            "temperature",
            "from 0 to 2",
        ),
        (
            json!({"model": "m", "stop": ["a", "b", "c", "d", "e"], "messages": [{"role": "user", "content": "x"}]}),
            "stop",
            "at most 4",
        ),
        (
            json!({"model": "m", "response_format": {"type": "json_schema", "json_schema": {"name": "x"}},
            "messages": [{"role": "user", "content": "x"}]}),
            "response_format.json_schema.schema",
            "needs",
        ),
        (
            json!({"model": "m", "tools": [{"type": "function", "function": {"name": "bad name!"}}],
            "messages": [{"role": "user", "content": "x"}]}),
            "tools[0].function.name",
            "letters, digits",
        ),
        (
            json!({"model": "m", "functions": [], "messages": [{"role": "user", "content": "x"}]}),
            "functions",
            "deprecated",
        ),
    ];
    for (body, param, needle) in cases {
        let error = parse(body.clone()).expect_err(&body.to_string());
        assert_eq!(error.status, 400, "{body}");
        assert_eq!(error.param.as_deref(), Some(param), "{body}: {error}");
        assert!(error.message.contains(needle), "{body}: {error}");
    }
    let error = request::parse(
        b"{\"model\": ",
        &Limits::default(),
        &crate::engine::Sampling::greedy(),
    )
    .unwrap_err();
    assert!(error.message.contains("not valid JSON"), "{error}");
    let limits = Limits {
        messages: 2,
        ..Limits::default()
    };
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]});
    let error = request::parse(
        body.to_string().as_bytes(),
        &limits,
        &crate::engine::Sampling::greedy(),
    )
    .unwrap_err();
    assert!(error.message.contains("limit of 2"), "{error}");
}

#[test]
fn a_reply_of_calls_has_null_content_ids_and_finish_reason_tool_calls() {
    let reply = r#"{"name": "get_weather", "parameters": {"city": "Paris"}}"#;
    let (model, _) = served(vec![ScriptedReply::ending_with(reply, EOM)], 1);
    let body = json!({"model": "m", "tools": [weather_tool()],
        "messages": [{"role": "user", "content": "Weather in Paris?"}]});
    let (result, pieces) = complete(&model, body);
    let completion = result.unwrap();
    assert_eq!(completion.content, None);
    assert_eq!(completion.finish, Finish::ToolCalls);
    assert_eq!(completion.tool_calls.len(), 1);
    assert_eq!(completion.tool_calls[0].arguments, json!({"city": "Paris"}));
    let id = completion.tool_calls[0].id.clone().unwrap();
    assert!(id.starts_with("call_"), "{id}");
    assert!(
        pieces.iter().all(|p| !matches!(p, Piece::Text(_))),
        "no text leaks: {pieces:?}"
    );
    assert!(
        matches!(&pieces[..], [Piece::Started, Piece::Call { index: 0, call }] if call.id.as_deref() == Some(id.as_str()))
    );
}

#[test]
fn text_replies_stream_without_leading_whitespace_and_parallel_false_keeps_one_call() {
    let (model, _) = served(
        vec![
            ScriptedReply::ending_with("\n\n  Hello there.", EOT),
            ScriptedReply::ending_with(
                r#"{"name": "get_weather", "parameters": {"city": "A"}}; {"name": "get_weather", "parameters": {"city": "B"}}"#,
                EOM,
            ),
        ],
        1,
    );
    let (result, pieces) = complete(
        &model,
        json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}]}),
    );
    let completion = result.unwrap();
    assert_eq!(completion.content.as_deref(), Some("Hello there."));
    assert_eq!(completion.finish, Finish::Stop);
    let streamed: String = pieces
        .iter()
        .filter_map(|p| match p {
            Piece::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(streamed, "Hello there.");
    let (result, _) = complete(
        &model,
        json!({"model": "m", "tools": [weather_tool()], "parallel_tool_calls": false,
               "messages": [{"role": "user", "content": "A and B?"}]}),
    );
    let completion = result.unwrap();
    assert_eq!(completion.tool_calls.len(), 1, "{completion:?}");
}

#[test]
fn a_client_sending_its_conversation_again_reuses_the_cache_and_the_models_exact_text() {
    // Odd spacing the client will not reproduce when it re-serialises the arguments.
    let reply = r#"{"name": "get_weather",  "parameters": {"city":"Paris"}}"#;
    let (model, seen) = served(
        vec![
            ScriptedReply::ending_with(reply, EOM),
            ScriptedReply::ending_with("Other conversation.", EOT),
            ScriptedReply::ending_with("It is sunny.", EOT),
        ],
        2,
    );
    let first = json!({"model": "m", "tools": [weather_tool()],
        "messages": [{"role": "user", "content": "Weather in Paris?"}]});
    let completion = complete(&model, first).0.unwrap();
    let call = &completion.tool_calls[0];
    // Another client in between takes the other sequence.
    complete(
        &model,
        json!({"model": "m", "messages": [{"role": "user", "content": "Something else entirely"}]}),
    )
    .0
    .unwrap();
    let again = json!({"model": "m", "tools": [weather_tool()], "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": call.id, "type": "function",
            "function": {"name": "get_weather", "arguments": call.arguments.to_string()}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 C"}]});
    let second = complete(&model, again).0.unwrap();
    assert_eq!(second.content.as_deref(), Some("It is sunny."));
    let prompts = seen.lock().unwrap();
    assert!(
        prompts[2].contains(&format!("{reply}{EOM}")),
        "the reply is rendered as the model wrote it: {}",
        prompts[2]
    );
    let first_len = prompts[0].chars().count();
    assert!(
        second.usage.cached_tokens >= first_len + reply.chars().count(),
        "cached {} of {} (first prompt {first_len})",
        second.usage.cached_tokens,
        second.usage.prompt_tokens
    );
}

#[test]
fn the_same_request_again_reuses_the_sequence_that_holds_it_whatever_its_reply() {
    // Replies much longer than the prompts: what a sequence holds is mostly its reply.
    let long = |name: &str| ScriptedReply::ending_with(&format!("{name} ").repeat(200), EOT);
    let (model, _) = served(vec![long("first"), long("second"), long("again")], 2);
    let ask =
        |content: &str| json!({"model": "m", "messages": [{"role": "user", "content": content}]});
    let first = complete(&model, ask("Tell me about rivers")).0.unwrap();
    complete(&model, ask("Tell me about bridges")).0.unwrap();
    assert!(
        model.held_text(1).contains("bridges"),
        "{}",
        model.held_text(1)
    );
    // The second conversation's request again (a retry, a regenerated reply): its own sequence,
    // though the first's is the least recently used.
    let again = complete(&model, ask("Tell me about bridges")).0.unwrap();
    assert!(
        again.usage.cached_tokens + 1 >= again.usage.prompt_tokens,
        "{} of {} prompt tokens reused (the first request's prompt was {} tokens)",
        again.usage.cached_tokens,
        again.usage.prompt_tokens,
        first.usage.prompt_tokens
    );
    assert!(
        model.held_text(0).contains("rivers"),
        "the other conversation keeps its cache"
    );
    assert!(model.held_text(1).contains("again"));
}

#[test]
fn a_prompt_over_the_window_is_a_400_with_the_numbers() {
    let backend =
        ScriptedBackend::new(vec![ScriptedReply::ending_with("x", EOT)]).with_context_tokens(200);
    let model = ServedModel::new(Box::new(backend), format());
    let (result, _) = complete(
        &model,
        json!({"model": "m", "messages": [{"role": "user", "content": "word ".repeat(100)}]}),
    );
    let error = result.unwrap_err();
    assert_eq!(
        (error.status, error.code),
        (400, Some("context_length_exceeded"))
    );
    assert!(error.message.contains("200 tokens"), "{error}");
    let (result, _) = complete(
        &model,
        json!({"model": "m", "max_tokens": 150, "messages": [{"role": "user", "content": "hi"}]}),
    );
    let error = result.unwrap_err();
    assert!(error.message.contains("max_tokens asks for 150"), "{error}");
}

#[test]
fn json_mode_constrains_the_reply() {
    let (model, _) = served(vec![ScriptedReply::ending_with("{\"a\": 1}", EOT)], 1);
    let request = parse(
        json!({"model": "m", "response_format": {"type": "json_object"},
        "messages": [{"role": "user", "content": "json please"}]}),
    )
    .unwrap();
    assert_eq!(request.response_format, ResponseFormat::JsonObject);
    let completion = model
        .complete(&request, &CancelToken::new(), &mut |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(completion.content.as_deref(), Some("{\"a\": 1}"));
    let lark = corral_prompts::ToolConstraint::json_reply(&json!({"type": "object"})).lark;
    assert!(lark.contains("%json"), "{lark}");
}

#[test]
fn without_max_tokens_a_reply_gets_the_servers_cap_and_a_refused_request_keeps_the_cache() {
    let backend = ScriptedBackend::new(Vec::new())
        .with_context_tokens(4000)
        .with_responder(|_| ScriptedReply::ending_with(&"y".repeat(300), EOT));
    let mut model = ServedModel::new(Box::new(backend), format());
    model.reply_cap = 50;
    let (result, _) = complete(
        &model,
        json!({"model": "m", "messages": [{"role": "user", "content": "long please"}]}),
    );
    let completion = result.unwrap();
    assert_eq!(completion.finish, Finish::Length);
    assert_eq!(completion.usage.completion_tokens, 50);
    let held = completion.usage.prompt_tokens + 50;
    let (refused, _) = complete(
        &model,
        json!({"model": "m", "max_tokens": 3990, "messages": [{"role": "user", "content": "other"}]}),
    );
    assert_eq!(refused.unwrap_err().code, Some("context_length_exceeded"));
    assert!(
        model.held_text(0).contains("long please"),
        "the refused request took the slot: {}",
        model.held_text(0)
    );
    let body = json!({"model": "m", "messages": [
        {"role": "user", "content": "long please"},
        {"role": "assistant", "content": completion.content.clone().unwrap()},
        {"role": "user", "content": "more"}]});
    let (again, _) = complete(&model, body);
    let again = again.unwrap();
    assert!(
        again.usage.cached_tokens >= held - 1,
        "cached {} of the {held} held before the refused request",
        again.usage.cached_tokens
    );
}

/// Arrivals at `generate` that a [`SharedBackend`] waits for before it answers.
struct Gate {
    /// (arrived, expected, generations that gave up waiting).
    state: Mutex<(usize, usize, usize)>,
    changed: std::sync::Condvar,
}

impl Gate {
    fn expect(&self, arrivals: usize) {
        *self.state.lock().unwrap() = (0, arrivals, 0);
    }

    /// Waits until the expected number of generations arrived; false when they did not within
    /// five seconds (requests served one at a time never meet).
    fn arrive(&self) -> bool {
        let mut state = self.state.lock().unwrap();
        state.0 += 1;
        self.changed.notify_all();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while state.0 < state.1 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                state.2 += 1;
                return false;
            }
            state = self.changed.wait_timeout(state, left).unwrap().0;
        }
        true
    }

    fn gave_up(&self) -> usize {
        self.state.lock().unwrap().2
    }
}

/// A scripted model that can be shared like the real engine: every handle reaches the same
/// backend, and generations wait at the gate for each other.
#[derive(Clone)]
struct SharedBackend {
    info: crate::engine::ModelInfo,
    inner: Arc<Mutex<ScriptedBackend>>,
    gate: Arc<Gate>,
}

impl crate::engine::Backend for SharedBackend {
    fn info(&self) -> &crate::engine::ModelInfo {
        &self.info
    }
    fn tokenize(
        &mut self,
        text: &str,
        special: bool,
    ) -> Result<Vec<crate::engine::Token>, crate::engine::EngineError> {
        self.inner.lock().unwrap().tokenize(text, special)
    }
    fn tokenize_continuation(
        &mut self,
        text: &str,
    ) -> Result<Vec<crate::engine::Token>, crate::engine::EngineError> {
        self.inner.lock().unwrap().tokenize_continuation(text)
    }
    fn generate(
        &mut self,
        request: &crate::engine::GenerateRequest,
        sink: &mut crate::engine::TextSink<'_>,
    ) -> Result<crate::engine::Generation, crate::engine::EngineError> {
        self.gate.arrive();
        self.inner.lock().unwrap().generate(request, sink)
    }
    fn cached_tokens(&self, sequence: usize) -> usize {
        self.inner.lock().unwrap().cached_tokens(sequence)
    }
    fn truncate_cache(
        &mut self,
        sequence: usize,
        keep: usize,
    ) -> Result<(), crate::engine::EngineError> {
        self.inner.lock().unwrap().truncate_cache(sequence, keep)
    }
    fn remove_tokens(
        &mut self,
        sequence: usize,
        range: std::ops::Range<usize>,
    ) -> Result<(), crate::engine::EngineError> {
        self.inner.lock().unwrap().remove_tokens(sequence, range)
    }
    fn save_sequence(
        &mut self,
        sequence: usize,
        path: &std::path::Path,
    ) -> Result<u64, crate::engine::EngineError> {
        self.inner.lock().unwrap().save_sequence(sequence, path)
    }
    fn restore_sequence(
        &mut self,
        sequence: usize,
        path: &std::path::Path,
    ) -> Result<usize, crate::engine::EngineError> {
        self.inner.lock().unwrap().restore_sequence(sequence, path)
    }
    fn share(&self) -> Option<Box<dyn crate::engine::Backend + Send>> {
        Some(Box::new(self.clone()))
    }
}

#[test]
fn requests_on_a_shared_engine_run_at_once_each_on_its_own_sequence() {
    let scripted = ScriptedBackend::new(Vec::new())
        .with_sequences(2)
        .with_responder(|prompt| {
            let asked = prompt.rsplit("user<|end_header_id|>").next().unwrap_or("");
            let asked = asked.split(EOT).next().unwrap_or("").trim();
            ScriptedReply::ending_with(&format!("Answer to {asked}"), EOT)
        });
    let gate = Arc::new(Gate {
        state: Mutex::new((0, 1, 0)),
        changed: std::sync::Condvar::new(),
    });
    let backend = SharedBackend {
        info: crate::engine::Backend::info(&scripted).clone(),
        inner: Arc::new(Mutex::new(scripted)),
        gate: Arc::clone(&gate),
    };
    let model = ServedModel::new(Box::new(backend), format());
    assert_eq!(model.concurrency(), 2);
    assert_eq!(
        served(Vec::new(), 2).0.concurrency(),
        1,
        "a backend that cannot share"
    );
    let first = complete(
        &model,
        json!({"model": "m", "messages": [{"role": "user", "content": "France?"}]}),
    )
    .0
    .unwrap();
    assert_eq!(first.content.as_deref(), Some("Answer to France?"));
    let held_before = first.usage.prompt_tokens + first.usage.completion_tokens;
    // The conversation goes on while another client asks something else, both at once.
    gate.expect(2);
    let (follow_up, other) = std::thread::scope(|scope| {
        let follow_up = scope.spawn(|| {
            complete(
                &model,
                json!({"model": "m", "messages": [
                    {"role": "user", "content": "France?"},
                    {"role": "assistant", "content": "Answer to France?"},
                    {"role": "user", "content": "Spain?"}]}),
            )
            .0
        });
        let other = scope.spawn(|| {
            complete(
                &model,
                json!({"model": "m", "messages": [{"role": "user", "content": "Peru?"}]}),
            )
            .0
        });
        (follow_up.join().unwrap(), other.join().unwrap())
    });
    assert_eq!(gate.gave_up(), 0, "the two requests did not run at once");
    let (follow_up, other) = (follow_up.unwrap(), other.unwrap());
    assert_eq!(follow_up.content.as_deref(), Some("Answer to Spain?"));
    assert_eq!(other.content.as_deref(), Some("Answer to Peru?"));
    // The follow-up went to the sequence holding its conversation, the other to the free one.
    assert!(
        follow_up.usage.cached_tokens >= held_before,
        "cached {} of the {held_before} held",
        follow_up.usage.cached_tokens
    );
    assert_eq!(other.usage.cached_tokens, 0);
    let (zero, one) = (model.held_text(0), model.held_text(1));
    assert!(
        zero.contains("Answer to Spain?") && !zero.contains("Peru"),
        "sequence 0 holds {zero:?}"
    );
    assert!(
        one.contains("Answer to Peru?") && !one.contains("France"),
        "sequence 1 holds {one:?}"
    );
    assert_eq!(model.in_flight(), 0);
}
