//! The HTTP side: routes, the API key, CORS, body limits, the queue in front of the model, and
//! server-sent events.

use std::convert::Infallible;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;

use super::error::ApiError;
use super::model::{Completion, Piece, ServedModel};
use super::request::{self, ChatRequest};
use super::{ServerConfig, AGENT_MODEL};
use crate::engine::CancelToken;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    model: Arc<ServedModel>,
    waiting: Arc<AtomicUsize>,
    config: Arc<ServerConfig>,
    requests: Arc<AtomicUsize>,
}

impl AppState {
    /// State around a served model.
    pub fn new(mut model: ServedModel, config: ServerConfig) -> AppState {
        model.reply_cap = config.limits.max_tokens;
        AppState {
            model: Arc::new(model),
            waiting: Arc::new(AtomicUsize::new(0)),
            config: Arc::new(config),
            requests: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// How the server runs.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }
}

/// The API's routes with their guards.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(one_model))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    Router::new()
        .merge(api)
        .route("/health", get(health))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(state.clone(), cors))
        .with_state(state)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.body())).into_response()
    }
}

async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::no_route(404, method.as_str(), uri.path())
}

async fn wrong_method(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::no_route(405, method.as_str(), uri.path())
}

/// With an API key set, `/v1/…` needs `Authorization: Bearer KEY` (compared in constant time:
/// both sides are hashed first, so neither their bytes nor their lengths leak through timing).
async fn require_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(key) = &state.config.api_key else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let matches: bool = Sha256::digest(given.as_bytes())
        .as_slice()
        .ct_eq(Sha256::digest(key.as_bytes()).as_slice())
        .into();
    if matches {
        next.run(request).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

/// Browsers get in only from the origins the owner named (`--cors`): a request with any other
/// `Origin` is refused, so a web page cannot drive a local server (and its agent) behind the
/// user's back; preflights are answered here. Without an API key the server is loopback-only,
/// and a `Host` that is not a loopback name is refused too (DNS rebinding).
async fn cors(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.config.api_key.is_none() {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok());
        if let Some(host) = host.filter(|h| !is_loopback_host(h)) {
            return ApiError::forbidden(
                "forbidden_host",
                format!(
                    "Host {host:?} is not this loopback server: without an API key only \
                     localhost, 127.0.0.1 and [::1] are served"
                ),
            )
            .into_response();
        }
    }
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let Some(origin) = origin else {
        return next.run(request).await;
    };
    let allowed = state
        .config
        .cors
        .iter()
        .any(|allowed| allowed == "*" || *allowed == origin);
    if !allowed {
        return ApiError::forbidden(
            "forbidden_origin",
            format!(
                "requests from the web origin {origin:?} are not allowed: start the server with \
                 --cors {origin} to allow it"
            ),
        )
        .into_response();
    }
    let preflight = request.method() == Method::OPTIONS;
    let mut response = if preflight {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    if preflight {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    response
}

async fn health(State(state): State<AppState>) -> axum::Json<Value> {
    axum::Json(json!({
        "status": "ok",
        "model": state.config.model_id,
        "waiting": state.waiting.load(Ordering::SeqCst),
        "running": state.model.in_flight(),
        "at_once": state.model.concurrency(),
    }))
}

fn model_object(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "corral"})
}

async fn models(State(state): State<AppState>) -> axum::Json<Value> {
    let data: Vec<Value> = state
        .config
        .model_names()
        .iter()
        .map(|id| model_object(id))
        .collect();
    axum::Json(json!({"object": "list", "data": data}))
}

async fn one_model(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let names = state.config.model_names();
    if names.contains(&id) {
        Ok(axum::Json(model_object(&id)))
    } else {
        Err(ApiError::unknown_model(&id, &names))
    }
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Cancels a generation when the handler (or the event stream) is dropped: the client left.
struct CancelOnDrop(CancelToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Counts a request waiting for the model until dropped.
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the blocking completion sends to the handler.
enum Progress {
    /// Generation began: the request was good.
    Started,
    Piece(Piece),
    Done(Result<Completion, ApiError>),
}

async fn chat(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match chat_inner(state, headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = kind.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::not_json(kind));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    axum::body::to_bytes(body, limit)
        .await
        .map(|bytes| bytes.to_vec())
        .map_err(|e| {
            let over = std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                e.source()
            })
            .any(|e| e.is::<http_body_util::LengthLimitError>());
            if over {
                ApiError::too_large(limit)
            } else {
                ApiError::unreadable(e)
            }
        })
}

async fn chat_inner(state: AppState, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let config = Arc::clone(&state.config);
    let body = read_body(&headers, body, config.limits.body_bytes).await?;
    let request = request::parse(&body, &config.limits, &config.sampling)?;
    let agent_mode = request.model == AGENT_MODEL;
    if agent_mode {
        if config.agent.is_none() {
            return Err(ApiError {
                message: format!(
                    "agent mode (`{AGENT_MODEL}`) is off on this server: start it with \
                     `corral serve --agent`"
                ),
                ..ApiError::unknown_model(&request.model, &config.model_names())
            });
        }
        if !request.tools.is_empty() {
            return Err(ApiError::invalid(
                Some("tools".into()),
                format!(
                    "`{AGENT_MODEL}` runs corral's own sandboxed tools server-side: leave `tools` \
                     out, or send them to `{}` to run them yourself",
                    config.model_id
                ),
            ));
        }
    } else if !config.model_names().contains(&request.model) {
        return Err(ApiError::unknown_model(
            &request.model,
            &config.model_names(),
        ));
    }
    let waiting = state.waiting.fetch_add(1, Ordering::SeqCst);
    let waiting_guard = Waiting(Arc::clone(&state.waiting));
    if waiting >= config.limits.queue {
        return Err(ApiError::busy(waiting));
    }
    let admitted = state.model.admit().await?;
    drop(waiting_guard);
    let model = Arc::clone(&state.model);
    let number = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let cancel = CancelToken::new();
    let guard = CancelOnDrop(cancel.clone());
    let (progress, mut events) = mpsc::unbounded_channel();
    let job_request = request.clone();
    let job_config = Arc::clone(&config);
    tokio::task::spawn_blocking(move || {
        let _admitted = admitted;
        let mut sink = |piece: Piece| {
            let message = match piece {
                Piece::Started => Progress::Started,
                piece => Progress::Piece(piece),
            };
            if progress.send(message).is_err() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        let result = match &job_config.agent {
            Some(agent) if agent_mode => model.complete_agent(
                &job_request,
                &agent.registry,
                &agent.setup,
                &cancel,
                &mut sink,
            ),
            _ => model.complete(&job_request, &cancel, &mut sink),
        };
        log_request(number, &job_request.model, &result);
        let _ = progress.send(Progress::Done(result));
    });
    let id = format!("chatcmpl-{:x}-{number}", unix_seconds());
    if !request.stream {
        // Text and calls arrive in the final completion; the pieces only tell progress.
        loop {
            match events.recv().await {
                Some(Progress::Done(result)) => {
                    let completion = result?;
                    drop(guard);
                    return Ok(axum::Json(whole_reply(&id, &request, &completion)).into_response());
                }
                Some(_) => continue,
                None => return Err(ApiError::internal("the completion stopped unexpectedly")),
            }
        }
    }
    // A request that is refused before generation gets its error status, not a stream.
    match events.recv().await {
        Some(Progress::Started) => {}
        Some(Progress::Done(Err(error))) => return Err(error),
        _ => return Err(ApiError::internal("the completion stopped unexpectedly")),
    }
    let stream = EventStream {
        events,
        _cancel_on_drop: guard,
        id,
        model: request.model.clone(),
        include_usage: request.include_usage,
        created: unix_seconds(),
        state: StreamState::Opening,
        calls: 0,
    };
    let stream = futures_util::stream::unfold(stream, |mut stream| async move {
        let chunks = stream.next_chunks().await?;
        Some((futures_util::stream::iter(chunks), stream))
    });
    use futures_util::StreamExt;
    Ok(Sse::new(stream.flatten()).into_response())
}

/// One line on stderr per completion: what it cost and how it ended.
fn log_request(number: usize, model: &str, result: &Result<Completion, ApiError>) {
    match result {
        Ok(c) => eprintln!(
            "corral serve: #{number} {model}: {} prompt tokens ({} cached), {} generated, {}",
            c.usage.prompt_tokens,
            c.usage.cached_tokens,
            c.usage.completion_tokens,
            if c.cancelled {
                "cancelled: the client left"
            } else {
                c.finish.as_str()
            }
        ),
        Err(e) => eprintln!("corral serve: #{number} {model}: {e}"),
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn call_json(call: &corral_prompts::ToolCall) -> Value {
    json!({
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments.to_string()},
    })
}

fn whole_reply(id: &str, request: &ChatRequest, completion: &Completion) -> Value {
    let mut message = json!({
        "role": "assistant",
        "content": completion.content,
        "refusal": null,
    });
    if !completion.tool_calls.is_empty() {
        message["tool_calls"] = completion.tool_calls.iter().map(call_json).collect();
    }
    if let Some(agent) = &completion.agent {
        message["corral"] = agent.clone();
    }
    json!({
        "id": id,
        "object": "chat.completion",
        "created": unix_seconds(),
        "model": request.model,
        "system_fingerprint": concat!("corral-", env!("CARGO_PKG_VERSION")),
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": completion.finish.as_str(),
        }],
        "usage": completion.usage.to_json(),
    })
}

enum StreamState {
    Opening,
    Open,
    Closed,
}

/// Turns the completion's progress into `chat.completion.chunk` events.
struct EventStream {
    events: mpsc::UnboundedReceiver<Progress>,
    /// Dropped with the stream when the client hangs up.
    _cancel_on_drop: CancelOnDrop,
    id: String,
    model: String,
    include_usage: bool,
    created: u64,
    state: StreamState,
    calls: usize,
}

impl EventStream {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": concat!("corral-", env!("CARGO_PKG_VERSION")),
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    }

    fn event(value: &Value) -> Result<SseEvent, Infallible> {
        Ok(SseEvent::default().data(value.to_string()))
    }

    async fn next_chunks(&mut self) -> Option<Vec<Result<SseEvent, Infallible>>> {
        if matches!(self.state, StreamState::Opening) {
            self.state = StreamState::Open;
            let opening = self.chunk(json!({"role": "assistant", "content": ""}), None);
            return Some(vec![Self::event(&opening)]);
        }
        if matches!(self.state, StreamState::Closed) {
            return None;
        }
        match self.events.recv().await {
            Some(Progress::Piece(Piece::Text(text))) => Some(vec![Self::event(
                &self.chunk(json!({"content": text}), None),
            )]),
            Some(Progress::Piece(Piece::Call { index, call })) => {
                self.calls += 1;
                let head = self.chunk(
                    json!({"tool_calls": [{
                        "index": index, "id": call.id, "type": "function",
                        "function": {"name": call.name, "arguments": ""},
                    }]}),
                    None,
                );
                let arguments = self.chunk(
                    json!({"tool_calls": [{
                        "index": index,
                        "function": {"arguments": call.arguments.to_string()},
                    }]}),
                    None,
                );
                Some(vec![Self::event(&head), Self::event(&arguments)])
            }
            Some(Progress::Piece(Piece::Step(step))) => {
                let mut chunk = self.chunk(json!({}), None);
                chunk["corral_step"] = step;
                Some(vec![Self::event(&chunk)])
            }
            Some(Progress::Piece(_)) | Some(Progress::Started) => Some(Vec::new()),
            Some(Progress::Done(Ok(completion))) => {
                self.state = StreamState::Closed;
                let mut last = self.chunk(json!({}), Some(completion.finish.as_str()));
                if let Some(agent) = &completion.agent {
                    last["corral"] = agent.clone();
                }
                let mut out = vec![Self::event(&last)];
                if self.include_usage {
                    let mut usage = self.chunk(json!({}), None);
                    usage["choices"] = json!([]);
                    usage["usage"] = completion.usage.to_json();
                    out.push(Self::event(&usage));
                }
                out.push(Ok(SseEvent::default().data("[DONE]")));
                Some(out)
            }
            Some(Progress::Done(Err(error))) => {
                self.state = StreamState::Closed;
                Some(vec![
                    Self::event(&error.body()),
                    Ok(SseEvent::default().data("[DONE]")),
                ])
            }
            None => {
                self.state = StreamState::Closed;
                let error = ApiError::internal("the completion stopped unexpectedly");
                Some(vec![Self::event(&error.body())])
            }
        }
    }
}
