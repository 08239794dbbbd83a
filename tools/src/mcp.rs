//! Tools from MCP servers (Model Context Protocol), behind the same [`Tool`] seam as plugins,
//! and corral's own tools offered to MCP clients.
//!
//! **Client.** Each configured server (`command`, `args`, `env`: the `mcpServers` entries users
//! already write) is started as a child process speaking MCP over stdio (`rmcp`). Its tools are
//! registered as `SERVER__TOOL`: tool names allow letters, digits, `_` and `-` only (the
//! registry's rule, and OpenAI's, so `corral serve` clients can call them too), and a double
//! underscore keeps the server visible in every call. Their `inputSchema` is compiled and
//! arguments are validated by the registry, exactly as for wasm tools. These tools run outside
//! the sandbox, as the user's own processes: the description says so, and the agent's policy
//! asks before each call unless the user allowed the tool. A server that does not start, does
//! not answer `initialize` in time, crashes or hangs is reported as a problem or a failed call;
//! corral goes on.
//!
//! **Server.** [`serve_stdio`] answers `tools/list` and `tools/call` over stdin/stdout with a
//! registry's tools (the sandboxed plugins with the user's grants).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use corral_prompts::ToolSpec;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ContentBlock as McpContent, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig,
};
use rmcp::service::{RequestContext, RunningService};
use rmcp::{RoleClient, RoleServer, ServerHandler, ServiceExt};
use serde::Deserialize;
use serde_json::Value;

use crate::call::{CallControl, CallError, CallOutput, Content, RuntimeError, RuntimeErrorKind};
use crate::{Registry, Tool};

/// How long a server may take to start and answer `initialize` and `tools/list`, unless its
/// entry says otherwise (`startup_timeout_sec`).
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one call may take at most, unless the entry says otherwise (`tool_timeout_sec`).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest timeout an entry may set (an hour).
const MAX_TIMEOUT_SEC: f64 = 3600.0;
/// How much of a server's stderr is kept to explain why it failed.
const STDERR_TAIL: usize = 2048;

/// One `mcpServers` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerEntry {
    /// The program to start.
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Variables set for it (on top of corral's environment).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Seconds it may take to start and list its tools (default 20).
    #[serde(default)]
    pub startup_timeout_sec: Option<f64>,
    /// Seconds one call may take at most (default 60; a run's own deadline can cut it shorter).
    #[serde(default)]
    pub tool_timeout_sec: Option<f64>,
}

impl ServerEntry {
    /// Checks the timeouts: each must be a number of seconds above 0 and at most an hour.
    ///
    /// # Errors
    /// A message naming the bad key.
    pub fn check(&self) -> Result<(), String> {
        for (key, value) in [
            ("startup_timeout_sec", self.startup_timeout_sec),
            ("tool_timeout_sec", self.tool_timeout_sec),
        ] {
            if let Some(v) = value {
                if !(v > 0.0 && v <= MAX_TIMEOUT_SEC) {
                    return Err(format!(
                        "`{key}` is {v}: give seconds above 0 and at most {MAX_TIMEOUT_SEC}"
                    ));
                }
            }
        }
        Ok(())
    }

    fn start_timeout(&self) -> Duration {
        self.startup_timeout_sec
            .map_or(START_TIMEOUT, Duration::from_secs_f64)
    }

    fn call_timeout(&self) -> Duration {
        self.tool_timeout_sec
            .map_or(CALL_TIMEOUT, Duration::from_secs_f64)
    }
}

/// A `--mcp-config` file: `{"mcpServers": {"NAME": {"command", "args", "env"}}}`.
#[derive(Debug, Clone, Deserialize)]
struct ConfigFile {
    #[serde(rename = "mcpServers")]
    mcp_servers: BTreeMap<String, ServerEntry>,
}

/// Reads a `--mcp-config` JSON file's text.
///
/// # Errors
/// A message naming what is wrong (bad JSON, no `mcpServers`, an unknown key, a bad name).
pub fn parse_config(text: &str) -> Result<BTreeMap<String, ServerEntry>, String> {
    let file: ConfigFile = serde_json::from_str(text).map_err(|e| {
        format!("{e} (expected {{\"mcpServers\": {{\"NAME\": {{\"command\": …, \"args\": […], \"env\": {{…}}}}}}}})")
    })?;
    for (name, entry) in &file.mcp_servers {
        check_server_name(name)?;
        entry
            .check()
            .map_err(|e| format!("mcpServers.{name}: {e}"))?;
    }
    Ok(file.mcp_servers)
}

/// A server name becomes the prefix of its tools' names.
///
/// # Errors
/// When it could not be part of a tool name.
pub fn check_server_name(name: &str) -> Result<(), String> {
    let ok = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.contains("__");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "MCP server name `{name}` must be 1 to 32 letters, digits, `-` or `_` (no `__`): it \
             prefixes its tools' names"
        ))
    }
}

/// The name corral gives tool `tool` of server `server`.
pub fn tool_name(server: &str, tool: &str) -> String {
    format!("{server}__{tool}")
}

/// What [`connect_all`] started. The servers keep running while their tools are registered
/// (each tool holds its connection and the runtime that talks to it).
pub struct McpClients {
    /// Per server: what it runs, for showing what a call can touch.
    pub commands: BTreeMap<String, String>,
}

/// A server that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpProblem {
    /// The server's name.
    pub server: String,
    /// What went wrong.
    pub reason: String,
}

impl std::fmt::Display for McpProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MCP server `{}`: {}", self.server, self.reason)
    }
}

struct Connection {
    server: String,
    service: RunningService<RoleClient, ()>,
    runtime: Arc<tokio::runtime::Runtime>,
    call_timeout: Duration,
    stderr: StderrTail,
}

/// The last [`STDERR_TAIL`] bytes a server wrote on stderr, read all along so it never blocks
/// on a full pipe; `ended` is set once the pipe has closed (the server exited).
#[derive(Clone, Default)]
struct StderrTail {
    kept: Arc<std::sync::Mutex<Vec<u8>>>,
    ended: Arc<std::sync::atomic::AtomicBool>,
}

/// How long a failure waits for a dying server's last words on stderr.
const STDERR_GRACE: Duration = Duration::from_secs(2);

impl StderrTail {
    fn follow(&self, stderr: tokio::process::ChildStderr) {
        let tail = self.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut stderr = stderr;
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf).await {
                let mut kept = tail.kept.lock().unwrap_or_else(|e| e.into_inner());
                kept.extend_from_slice(&buf[..n]);
                let excess = kept.len().saturating_sub(STDERR_TAIL);
                kept.drain(..excess);
            }
            tail.ended.store(true, std::sync::atomic::Ordering::Release);
        });
    }

    /// [`StderrTail::explain`] once the server's stderr has closed, or after [`STDERR_GRACE`]
    /// (a failed connection usually means the server is dying, and its reason comes last).
    async fn explain_when_ended(&self) -> String {
        let waited = tokio::time::timeout(STDERR_GRACE, async {
            while !self.ended.load(std::sync::atomic::Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let _ = waited.await;
        self.explain()
    }

    /// `; its stderr ended with: …` (cleaned, last lines), or nothing when it wrote nothing.
    fn explain(&self) -> String {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let text = String::from_utf8_lossy(&kept);
        let text: String = text
            .trim()
            .chars()
            .map(|c| if c.is_control() && c != '\n' { ' ' } else { c })
            .collect();
        let lines: Vec<&str> = text.lines().rev().take(3).collect();
        if lines.is_empty() {
            String::new()
        } else {
            let lines: Vec<&str> = lines.into_iter().rev().collect();
            format!("; its stderr ended with: {}", lines.join(" | "))
        }
    }
}

/// One MCP server's tool.
pub struct McpTool {
    spec: ToolSpec,
    remote_name: String,
    connection: Arc<Connection>,
}

/// Starts every server in `servers` and registers its tools in `registry`; what could not be
/// used is returned as problems (corral goes on without it).
///
/// # Errors
/// Only when no runtime can be made for the clients.
pub fn connect_all(
    servers: &BTreeMap<String, ServerEntry>,
    registry: &mut Registry,
) -> std::io::Result<(McpClients, Vec<McpProblem>)> {
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("corral-mcp")
            .enable_all()
            .build()?,
    );
    let mut problems = Vec::new();
    let mut commands = BTreeMap::new();
    for (name, entry) in servers {
        let problem = |reason: String| McpProblem {
            server: name.clone(),
            reason,
        };
        if let Err(e) = check_server_name(name).and_then(|()| entry.check()) {
            problems.push(problem(e));
            continue;
        }
        commands.insert(
            name.clone(),
            std::iter::once(entry.command.as_str())
                .chain(entry.args.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    // Servers start together: one that hangs costs its timeout once, not once per server after it.
    let starts = servers
        .iter()
        .filter(|(name, _)| commands.contains_key(*name))
        .map(|(name, entry)| async move { (name, entry, start(entry).await) });
    let started = runtime.block_on(futures::future::join_all(starts));
    for (name, entry, outcome) in started {
        let problem = |reason: String| McpProblem {
            server: name.clone(),
            reason,
        };
        match outcome {
            Ok((service, tools, stderr)) => {
                let connection = Arc::new(Connection {
                    server: name.clone(),
                    service,
                    runtime: Arc::clone(&runtime),
                    call_timeout: entry.call_timeout(),
                    stderr,
                });
                for tool in tools {
                    let spec = ToolSpec {
                        name: tool_name(name, &tool.name),
                        description: Some(format!(
                            "{} (MCP server `{name}`: runs outside the sandbox)",
                            tool.description.as_deref().unwrap_or("").trim()
                        )),
                        parameters: Value::Object((*tool.input_schema).clone()),
                    };
                    let mcp_tool = McpTool {
                        spec,
                        remote_name: tool.name.to_string(),
                        connection: Arc::clone(&connection),
                    };
                    if let Err(e) = registry.register(Arc::new(mcp_tool), &format!("mcp:{name}")) {
                        problems.push(problem(format!("tool `{}` not offered: {e}", tool.name)));
                    }
                }
            }
            Err(reason) => problems.push(problem(reason)),
        }
    }
    Ok((McpClients { commands }, problems))
}

type Started = (
    RunningService<RoleClient, ()>,
    Vec<rmcp::model::Tool>,
    StderrTail,
);

async fn start(entry: &ServerEntry) -> Result<Started, String> {
    let mut command = tokio::process::Command::new(&entry.command);
    // Killed whenever corral lets go of it, even when corral's runtime shuts down first.
    command
        .args(&entry.args)
        .envs(&entry.env)
        .kill_on_drop(true);
    let (transport, stderr) = rmcp::transport::TokioChildProcess::builder(command)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", entry.command))?;
    let tail = StderrTail::default();
    if let Some(stderr) = stderr {
        tail.follow(stderr);
    }
    let limit = entry.start_timeout();
    let started = tokio::time::timeout(limit, async {
        let service = ().serve(transport).await.map_err(|e| e.to_string())?;
        let tools = service.list_all_tools().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((service, tools))
    })
    .await;
    match started {
        Ok(Ok((service, tools))) => Ok((service, tools, tail)),
        Ok(Err(e)) => Err(format!(
            "did not start an MCP session: {e}{}",
            tail.explain_when_ended().await
        )),
        Err(_) => Err(format!(
            "did not answer `initialize` and `tools/list` within {} s (set \
             `startup_timeout_sec` in its entry to wait longer){}",
            limit.as_secs_f64(),
            tail.explain()
        )),
    }
}

impl Tool for McpTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn call(&self, args: &Value, control: &CallControl) -> Result<CallOutput, CallError> {
        if let Some(stopped) = control.stopped() {
            return Err(stopped);
        }
        let ceiling = self.connection.call_timeout;
        let limit = control.remaining().unwrap_or(ceiling).min(ceiling);
        let arguments = match args {
            Value::Object(map) => Some(map.clone()),
            _ => None,
        };
        let mut params = CallToolRequestParams::new(self.remote_name.clone());
        params.arguments = arguments;
        let connection = &self.connection;
        let cancel = control.cancel.clone();
        let outcome = connection.runtime.block_on(async {
            let call = connection.service.call_tool(params);
            let watch = async {
                while !cancel.is_cancelled() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            tokio::select! {
                result = tokio::time::timeout(limit, call) => Some(result),
                () = watch => None,
            }
        });
        let stop =
            |kind, message: String| Err(CallError::Runtime(RuntimeError::new(kind, message)));
        match outcome {
            None => stop(RuntimeErrorKind::Cancelled, "the call was cancelled".into()),
            Some(Err(_)) => stop(
                RuntimeErrorKind::Deadline,
                format!(
                    "MCP server `{}` did not answer within {:.1} s",
                    connection.server,
                    limit.as_secs_f64()
                ),
            ),
            Some(Ok(Err(e))) => {
                let said = connection
                    .runtime
                    .block_on(connection.stderr.explain_when_ended());
                stop(
                    RuntimeErrorKind::Trap,
                    format!("MCP server `{}` failed: {e}{said}", connection.server),
                )
            }
            Some(Ok(Ok(result))) => from_result(result),
        }
    }
}

/// An MCP result as corral's: text blocks as text, structured content as JSON; `isError` as
/// an error for the model.
fn from_result(result: CallToolResult) -> Result<CallOutput, CallError> {
    let mut content: Vec<Content> = result
        .content
        .iter()
        .map(|block| match block.as_text() {
            Some(text) => Content::Text(text.text.clone()),
            None => Content::Json(serde_json::to_value(block).unwrap_or(Value::Null)),
        })
        .collect();
    if content.is_empty() {
        if let Some(structured) = result.structured_content {
            content.push(Content::Json(structured));
        }
    }
    if result.is_error == Some(true) {
        let text = content
            .iter()
            .map(|c| match c {
                Content::Text(t) => t.clone(),
                Content::Json(v) => v.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        return Err(CallError::Tool(text));
    }
    Ok(CallOutput {
        content,
        truncated: false,
        stdout: String::new(),
        stderr: String::new(),
    })
}

/// corral's tools as an MCP server.
#[derive(Clone)]
struct Served {
    registry: Arc<Registry>,
}

impl ServerHandler for Served {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(ServerCapabilities::builder().enable_tools().build());
        info.server_info = rmcp::model::Implementation::new("corral", env!("CARGO_PKG_VERSION"));
        info.instructions = Some(
            "corral's sandboxed tools: each runs in a wasmtime sandbox with only the folders, \
             variables and network peers its user granted."
                .into(),
        );
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, rmcp::ErrorData> {
        let tools = self
            .registry
            .specs()
            .map(|(spec, _)| {
                let schema = match &spec.parameters {
                    Value::Object(map) => map.clone(),
                    _ => serde_json::Map::new(),
                };
                rmcp::model::Tool::new(
                    spec.name.clone(),
                    spec.description.clone().unwrap_or_default(),
                    Arc::new(schema),
                )
            })
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, rmcp::ErrorData> {
        let registry = Arc::clone(&self.registry);
        let name = request.name.to_string();
        if !registry.contains(&name) {
            // An unknown tool is a protocol error (-32602), not a tool's own failure.
            return Err(rmcp::ErrorData::invalid_params(
                format!("unknown tool `{name}`"),
                None,
            ));
        }
        let args = Value::Object(request.arguments.unwrap_or_default());
        let result = tokio::task::spawn_blocking(move || {
            registry.call_value(&name, &args, &CallControl::default())
        })
        .await
        .map_err(|e| rmcp::ErrorData::internal_error(e.to_string(), None))?;
        let result = match result {
            Ok(output) => CallToolResult::success(
                output
                    .content
                    .into_iter()
                    .map(|c| match c {
                        Content::Text(text) => McpContent::text(text),
                        Content::Json(value) => McpContent::text(value.to_string()),
                    })
                    .collect(),
            ),
            Err(error) => CallToolResult::error(vec![McpContent::text(error.to_string())]),
        };
        Ok(result.into())
    }
}

/// Serves `registry`'s tools over stdin/stdout until the client closes the connection.
///
/// # Errors
/// When the session cannot start or breaks.
pub async fn serve_stdio(registry: Arc<Registry>) -> Result<(), String> {
    let service = Served { registry }
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| e.to_string())?;
    service.waiting().await.map_err(|e| e.to_string())?;
    Ok(())
}
