//! A loaded [`Plugin`]: list its tools, call one in a fresh `Store` under limits and grants.

use wasmtime::{Store, StoreLimitsBuilder, Trap};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use std::sync::Arc;

use crate::cache::CacheOutcome;
use crate::error::{CallError, Error, ErrorKind, RuntimeError, RuntimeErrorKind};
use crate::grants::{Effective, Mode};
use crate::host::exports::corral::tool::tool::Content as WitContent;
use crate::host::{HostState, MemoryLimiter, PluginPre};
use crate::limits::{Limits, MAX_HANDLES};
use crate::output::{truncate_with_marker, CappedPipe};
use crate::pinned::{PinError, PinnedDir};
use crate::runtime::{Sandbox, WallClock, EPOCH_TICK};
use crate::write_quota::WriteBudget;

/// Deadline for `list-tools`, which runs every time plugins load: a plugin that stalls there
/// must not stall every `corral` start for the full call deadline.
pub const LIST_TOOLS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// One tool as the plugin describes it (MCP `Tool`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedTool {
    /// Name the model calls it by.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of the arguments, as JSON text (checked by the caller).
    pub input_schema: String,
}

/// One piece of a result.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// Text.
    Text(String),
    /// A JSON document.
    Json(serde_json::Value),
}

/// A successful call.
#[derive(Debug, Clone, PartialEq)]
pub struct CallOutput {
    /// The result, capped at [`Limits::result_bytes`] in total.
    pub content: Vec<Content>,
    /// Whether the result was truncated.
    pub truncated: bool,
    /// What the guest wrote to stdout (capped); for logs, not the model.
    pub stdout: String,
    /// What the guest wrote to stderr and through `host.log` (capped).
    pub stderr: String,
}

/// What a call runs with: limits, and rights whose folders are pinned (opened once, see
/// [`PinnedDir`]) when the context is made, so every call sees the folders that were granted.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// Limits, already resolved against the user's grant.
    pub limits: Limits,
    rights: Effective,
    dirs: Arc<[PinnedDir]>,
    cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl CallContext {
    /// A context with `limits` and `rights`, opening each granted folder now.
    ///
    /// # Errors
    /// A [`PinError`] when a granted folder is missing, not a folder, or reached through a
    /// symlink.
    pub fn new(limits: Limits, rights: Effective) -> Result<CallContext, PinError> {
        let dirs = rights
            .dirs
            .iter()
            .map(PinnedDir::open)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CallContext {
            limits,
            rights,
            dirs: dirs.into(),
            cancel: None,
        })
    }

    /// This context with a cancel flag: once it is set, a running guest stops within an
    /// epoch tick (computing or blocked in a host call) with [`RuntimeErrorKind::Cancelled`].
    #[must_use]
    pub fn with_cancel(mut self, flag: Arc<std::sync::atomic::AtomicBool>) -> CallContext {
        self.cancel = Some(flag);
        self
    }

    /// Default rights (none) with these limits.
    pub fn with_limits(limits: Limits) -> CallContext {
        CallContext {
            limits,
            ..CallContext::default()
        }
    }

    /// The rights calls run with.
    pub fn rights(&self) -> &Effective {
        &self.rights
    }

    /// The pinned folders.
    pub fn dirs(&self) -> &[PinnedDir] {
        &self.dirs
    }
}

/// A component compiled and pre-linked for fast instantiation. Cheap to clone; calls may run
/// concurrently from many threads, each in its own `Store`.
#[derive(Clone)]
pub struct Plugin {
    sandbox: Sandbox,
    pre: PluginPre<HostState>,
    sha256: String,
    cache: CacheOutcome,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    pub(crate) fn new(
        sandbox: Sandbox,
        pre: PluginPre<HostState>,
        sha256: String,
        cache: CacheOutcome,
    ) -> Self {
        Plugin {
            sandbox,
            pre,
            sha256,
            cache,
        }
    }

    /// Whether the compiled form came from the cache, and why not when it did not.
    pub fn cache_outcome(&self) -> &CacheOutcome {
        &self.cache
    }

    /// SHA-256 of the component's bytes, lowercase hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Asks the plugin for its tools, with default limits (but a [`LIST_TOOLS_DEADLINE`]
    /// deadline) and no rights.
    ///
    /// # Errors
    /// [`ErrorKind::Inspect`] when the guest traps or hits a limit.
    pub fn list_tools(&self) -> Result<Vec<ExportedTool>, Error> {
        let ctx = CallContext::with_limits(Limits {
            deadline: LIST_TOOLS_DEADLINE,
            ..Limits::default()
        });
        let specs = self
            .block_on(self.run(&ctx, |bindings, store| {
                Box::pin(async move { bindings.corral_tool_tool().call_list_tools(store).await })
            }))
            .map_err(|e| {
                Error::new(
                    ErrorKind::Inspect,
                    format!("listing the plugin's tools failed: {e}"),
                )
            })?;
        Ok(specs
            .0
            .into_iter()
            .map(|s| ExportedTool {
                name: s.name,
                description: s.description,
                input_schema: s.input_schema,
            })
            .collect())
    }

    /// Calls tool `name` with `arguments` (JSON text, already validated), blocking this thread.
    /// Safe to call from inside an async runtime too (it then blocks on a helper thread);
    /// async code should prefer [`Plugin::call_async`].
    ///
    /// # Errors
    /// [`CallError::Tool`] for the plugin's own error, [`CallError::Runtime`] when a limit was hit
    /// or the guest trapped. Neither affects later calls.
    pub fn call(
        &self,
        name: &str,
        arguments: &str,
        ctx: &CallContext,
    ) -> Result<CallOutput, CallError> {
        self.block_on(self.call_here(name, arguments, ctx))
    }

    /// Runs `fut` on the sandbox's runtime. From inside another tokio runtime (where blocking
    /// the thread would panic) it runs on a helper thread instead.
    fn block_on<R: Send>(&self, fut: impl std::future::Future<Output = R> + Send) -> R {
        let runtime = self.sandbox.inner.runtime();
        if tokio::runtime::Handle::try_current().is_err() {
            return runtime.block_on(fut);
        }
        std::thread::scope(|s| match s.spawn(|| runtime.block_on(fut)).join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        })
    }

    /// Async form of [`Plugin::call`], usable from any tokio runtime: the call runs on a
    /// blocking thread of the caller's runtime, driven by the sandbox's own runtime, so whatever
    /// blocking work WASI starts belongs to the sandbox (and is never waited for at shutdown,
    /// see `runtime.rs`), and the caller's runtime is free at the deadline.
    ///
    /// # Errors
    /// As for [`Plugin::call`].
    pub async fn call_async(
        &self,
        name: &str,
        arguments: &str,
        ctx: &CallContext,
    ) -> Result<CallOutput, CallError> {
        let (this, ctx) = (self.clone(), ctx.clone());
        let (name, arguments) = (name.to_owned(), arguments.to_owned());
        tokio::task::spawn_blocking(move || this.call(&name, &arguments, &ctx))
            .await
            .unwrap_or_else(|e| {
                Err(CallError::Runtime(rt(
                    RuntimeErrorKind::Trap,
                    format!("the call's thread ended abnormally: {e}"),
                )))
            })
    }

    async fn call_here(
        &self,
        name: &str,
        arguments: &str,
        ctx: &CallContext,
    ) -> Result<CallOutput, CallError> {
        let (name, arguments) = (name.to_owned(), arguments.to_owned());
        let (result, stdout, stderr) = self
            .run(ctx, move |bindings, store| {
                Box::pin(async move {
                    bindings
                        .corral_tool_tool()
                        .call_call(store, &name, &arguments)
                        .await
                })
            })
            .await
            .map_err(CallError::Runtime)?;
        let content = result.map_err(|msg| {
            let cap = usize::try_from(ctx.limits.result_bytes).unwrap_or(usize::MAX);
            CallError::Tool(truncate_with_marker(&msg, cap).0)
        })?;
        let (content, truncated) = cap_content(content, ctx.limits.result_bytes)?;
        Ok(CallOutput {
            content,
            truncated,
            stdout,
            stderr,
        })
    }

    /// Runs `f` against a fresh instance under `ctx`, returning its value and the captured
    /// stdout and stderr.
    async fn run<R: Send>(
        &self,
        ctx: &CallContext,
        f: impl for<'a> FnOnce(
            &'a crate::host::Plugin,
            &'a mut Store<HostState>,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = wasmtime::Result<R>> + Send + 'a>,
        >,
    ) -> Result<(R, String, String), RuntimeError> {
        let inner = &self.sandbox.inner;
        let _slot = inner
            .slots
            .acquire()
            .await
            .map_err(|_| rt(RuntimeErrorKind::Instantiate, "sandbox closed"))?;
        let limits = ctx.limits;
        let stdout = CappedPipe::new(usize::try_from(limits.output_bytes).unwrap_or(usize::MAX));
        let stderr = CappedPipe::new(usize::try_from(limits.output_bytes).unwrap_or(usize::MAX));
        let wasi = build_wasi(ctx, inner.wall_clock.as_ref(), &stdout, &stderr)?;
        let memory = usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX);
        let mut table = wasmtime::component::ResourceTable::new();
        table.set_max_capacity(MAX_HANDLES);
        let state = HostState {
            wasi,
            table,
            limiter: MemoryLimiter {
                inner: StoreLimitsBuilder::new()
                    .memory_size(memory)
                    .instances(64)
                    .tables(64)
                    .memories(8)
                    .build(),
                refused: Arc::default(),
            },
            log: stderr.clone(),
            write_budget: WriteBudget::new(limits.write_bytes),
        };
        let mut store = Store::new(&inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        let ticks = limits
            .deadline
            .as_nanos()
            .div_ceil(EPOCH_TICK.as_nanos())
            .max(1);
        let ticks = u64::try_from(ticks).unwrap_or(u64::MAX);
        match ctx.cancel.clone() {
            None => {
                store.set_epoch_deadline(ticks);
                store.epoch_deadline_trap();
            }
            Some(flag) => {
                // Wake every tick to look at the flag; trap as the deadline would at its end.
                let mut left = ticks;
                store.set_epoch_deadline(1);
                store.epoch_deadline_callback(move |_| {
                    left = left.saturating_sub(1);
                    if flag.load(std::sync::atomic::Ordering::Relaxed) {
                        Err(wasmtime::Error::new(CancelledByCaller))
                    } else if left == 0 {
                        Err(Trap::Interrupt.into())
                    } else {
                        Ok(wasmtime::UpdateDeadline::Continue(1))
                    }
                });
            }
        }

        let work = async {
            let bindings = self.pre.instantiate_async(&mut store).await?;
            f(&bindings, &mut store).await
        };
        // The epoch deadline stops wasm that computes; the timer also stops a guest blocked in a
        // host call (sleeping, waiting on a stream). A little slack lets the trap win the race.
        let timed = tokio::time::timeout(limits.deadline + EPOCH_TICK * 4, work);
        let flag = ctx.cancel.clone();
        let cancelled = async move {
            // A guest blocked in a host call never reaches an epoch check: watch the flag here.
            match flag {
                Some(flag) => {
                    while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                        tokio::time::sleep(EPOCH_TICK).await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        let outcome = tokio::select! {
            outcome = timed => Some(outcome),
            () = cancelled => None,
        };
        let refused_memory = store
            .data()
            .limiter
            .refused
            .load(std::sync::atomic::Ordering::Relaxed);
        let budget = store.data().write_budget.clone();
        drop(store);
        let Some(outcome) = outcome else {
            return Err(rt(RuntimeErrorKind::Cancelled, "by the caller"));
        };
        match outcome {
            Err(_elapsed) => Err(rt(
                RuntimeErrorKind::Deadline,
                format!("deadline {:?}", limits.deadline),
            )),
            Ok(Ok(value)) => Ok((value, stdout.text(), stderr.text())),
            Ok(Err(err)) if budget.exhausted() && err.downcast_ref::<Trap>().is_some() => Err(rt(
                RuntimeErrorKind::WriteLimit,
                format!("{}; {err:#}", budget.message()),
            )),
            Ok(Err(err)) => Err(classify(&err, refused_memory, &stderr.text())),
        }
    }
}

/// The epoch callback's error when the caller's cancel flag is set.
#[derive(Debug)]
struct CancelledByCaller;

impl std::fmt::Display for CancelledByCaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cancelled by the caller")
    }
}

impl std::error::Error for CancelledByCaller {}

fn rt(kind: RuntimeErrorKind, message: impl Into<String>) -> RuntimeError {
    RuntimeError {
        kind,
        message: message.into(),
    }
}

fn classify(err: &wasmtime::Error, refused_memory: bool, stderr: &str) -> RuntimeError {
    let tail: String = {
        let t = stderr.trim_end();
        let start = t.char_indices().rev().nth(499).map_or(0, |(i, _)| i);
        t[start..].to_owned()
    };
    let detail = if tail.is_empty() {
        format!("{err:#}")
    } else {
        format!("{err:#}; stderr: {tail}")
    };
    if err.downcast_ref::<CancelledByCaller>().is_some() {
        return rt(RuntimeErrorKind::Cancelled, "by the caller");
    }
    let kind = match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => RuntimeErrorKind::Deadline,
        Some(Trap::StackOverflow) => RuntimeErrorKind::StackOverflow,
        _ if refused_memory => RuntimeErrorKind::Memory,
        Some(_) => RuntimeErrorKind::Trap,
        None => RuntimeErrorKind::Trap,
    };
    rt(kind, detail)
}

fn build_wasi(
    ctx: &CallContext,
    wall_clock: Option<&WallClock>,
    stdout: &CappedPipe,
    stderr: &CappedPipe,
) -> Result<WasiCtx, RuntimeError> {
    let rights = &ctx.rights;
    let mut b = WasiCtxBuilder::new();
    b.stdout(stdout.clone()).stderr(stderr.clone());
    if let Some(clock) = wall_clock {
        b.wall_clock(InjectedClock(clock.clone()));
    }
    for (k, v) in &rights.env {
        b.env(k, v);
    }
    for dir in ctx.dirs.iter() {
        let perms = match dir.mode() {
            Mode::Ro => FsPerms::ReadOnly,
            Mode::Rw => FsPerms::ReadWrite,
        };
        // The pinned handle, never the path: see `pinned.rs`.
        b.preopened_dir(dir.handle_path(), dir.guest(), perms)
            .map_err(|e| {
                rt(
                    RuntimeErrorKind::Instantiate,
                    format!("cannot open granted folder {}: {e:#}", dir.host().display()),
                )
            })?;
    }
    if !rights.network.is_empty() {
        let allowed = rights.network.clone();
        b.allow_tcp(true);
        b.socket_addr_check(move |addr, usage| {
            // Connecting binds implicitly to the wildcard address first; allow only that bind.
            let ok = match usage {
                SocketAddrUse::TcpConnect => allowed.contains(&addr),
                SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
                _ => false,
            };
            Box::pin(async move { ok })
        });
    }
    Ok(b.build())
}

/// A test's clock as WASI's wall clock.
struct InjectedClock(WallClock);

impl wasmtime_wasi::HostWallClock for InjectedClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(1)
    }

    fn now(&self) -> std::time::Duration {
        (self.0)()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
    }
}

/// Converts the guest's content, checking JSON and capping the total size.
fn cap_content(content: Vec<WitContent>, cap: u64) -> Result<(Vec<Content>, bool), CallError> {
    let mut left = usize::try_from(cap).unwrap_or(usize::MAX);
    let mut out = Vec::with_capacity(content.len());
    let mut truncated = false;
    for piece in content {
        if truncated {
            break;
        }
        let (text, is_json) = match piece {
            WitContent::Text(t) => (t, false),
            WitContent::Json(j) => (j, true),
        };
        if text.len() > left {
            out.push(Content::Text(truncate_with_marker(&text, left).0));
            truncated = true;
            continue;
        }
        left -= text.len();
        if is_json {
            let value = serde_json::from_str(&text).map_err(|e| {
                CallError::Runtime(rt(
                    RuntimeErrorKind::InvalidResult,
                    format!("json content is not valid JSON: {e}"),
                ))
            })?;
            out.push(Content::Json(value));
        } else {
            out.push(Content::Text(text));
        }
    }
    Ok((out, truncated))
}
