//! CPython inside the sandbox, kept alive like a notebook kernel.
//!
//! The interpreter is a plain WASI preview-1 command (a CPython build with its standard library
//! inside the module). [`PythonRuntime`] compiles it once (or deserializes it from the same
//! MAC-checked, private cache as components) on an engine of its own. [`PythonRuntime::start`]
//! runs one instance as a long-lived task with `python -c DRIVER`: the driver (`driver.py`) keeps
//! one namespace and runs each cell [`Interpreter::run`] sends on stdin, answering one line on
//! stdout. So variables, imports and functions carry from cell to cell, and a warm cell costs
//! only its own work.
//!
//! No ambient authority: no environment variables, no network (preview 1 has no sockets to
//! open), no host folders but the conversation's scratch folder (`/scratch`, read-write, the
//! working folder) and a granted workspace (`/workspace`, read-only unless granted otherwise).
//! Limits: a memory cap (a refused `memory.grow` is a `MemoryError` inside Python, or a trap),
//! a wall-clock deadline per cell, and caps on what is kept of each output stream. The guest
//! yields to the host at every epoch tick, so a cell that computes forever, or waits forever in
//! a host call, is stopped by dropping the instance; the interpreter is then gone and the
//! caller starts another ([`CellStop`] says why).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use wasmtime::{Config, Engine, Linker, Module, Store, StoreLimitsBuilder};
use wasmtime_wasi::cli::{AsyncStdinStream, AsyncStdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::cache::ComponentCache;
use crate::error::{Error, ErrorKind};
use crate::host::MemoryLimiter;
use crate::output::CappedPipe;
use crate::runtime::EpochTicker;
use crate::CacheOutcome;

/// The driver the interpreter runs.
const DRIVER: &str = include_str!("driver.py");
/// How often a running guest yields to the host (and can be stopped).
const TICK: Duration = Duration::from_millis(10);
/// Default memory cap of one interpreter (CPython itself takes about 20 MB of it).
pub const DEFAULT_MEMORY_BYTES: u64 = 256 << 20;
/// Default characters kept of each of a cell's stdout, stderr, result and traceback.
pub const DEFAULT_KEEP_CHARS: usize = 16_000;
/// How long a new interpreter may take to be ready for its first cell.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Wasm stack of the interpreter (CPython's C recursion runs on it).
const STACK_BYTES: usize = 2 << 20;
/// Bytes kept of what code writes to the real stdout past the driver.
const LOOSE_BYTES: usize = 16 << 10;

/// The compiled interpreter and the engine that runs its instances. Cheap to clone.
#[derive(Clone)]
pub struct PythonRuntime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    engine: Engine,
    linker: Linker<GuestState>,
    module: Module,
    /// Runs every instance; `None` only in `drop`.
    runtime: Option<tokio::runtime::Runtime>,
    _ticker: EpochTicker,
}

impl RuntimeInner {
    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the runtime lives until drop")
    }
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        // An instance may be blocked in a host call: never wait for it.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

struct GuestState {
    wasi: WasiP1Ctx,
    limiter: MemoryLimiter,
}

/// Where an interpreter may reach and how much it may hold.
#[derive(Debug, Clone)]
pub struct InterpreterOptions {
    /// The host folder seen as `/scratch` (read-write, the working folder).
    pub scratch: PathBuf,
    /// A host folder seen as `/workspace`, and whether the guest may write to it.
    pub workspace: Option<(PathBuf, bool)>,
    /// Memory cap in bytes.
    pub memory_bytes: u64,
    /// Characters kept of each output stream of a cell (the rest is counted).
    pub keep_chars: usize,
}

impl InterpreterOptions {
    /// Defaults, with `scratch` as the scratch folder.
    pub fn new(scratch: impl Into<PathBuf>) -> Self {
        InterpreterOptions {
            scratch: scratch.into(),
            workspace: None,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            keep_chars: DEFAULT_KEEP_CHARS,
        }
    }
}

/// What one cell gave.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct CellOutput {
    /// What it printed (at most `keep_chars` characters).
    pub stdout: String,
    /// What it wrote to stderr.
    pub stderr: String,
    /// The `repr` of its last expression, when that was not `None`.
    pub result: Option<String>,
    /// The traceback of the exception that ended it.
    pub error: Option<String>,
    /// Characters dropped past the cap, per stream (`stdout`, `stderr`, `result`, `error`).
    #[serde(default)]
    pub dropped: std::collections::BTreeMap<String, usize>,
    /// What it wrote to the real stdout, around the driver (capped).
    #[serde(skip)]
    pub loose: String,
    /// Wall time of the cell.
    #[serde(skip)]
    pub elapsed: Duration,
}

/// Why a cell has no output: the interpreter was stopped or ended, and is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CellStop {
    /// The cell ran past its deadline.
    Deadline(Duration),
    /// The caller cancelled it.
    Cancelled,
    /// The interpreter hit its memory cap and died.
    OutOfMemory(u64),
    /// The interpreter ended (it exited, trapped, or broke the driver's protocol).
    Ended(String),
}

impl std::fmt::Display for CellStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CellStop::Deadline(d) => write!(
                f,
                "the code ran past its deadline of {:.1} s",
                d.as_secs_f64()
            ),
            CellStop::Cancelled => f.write_str("the run was cancelled"),
            CellStop::OutOfMemory(cap) => {
                write!(
                    f,
                    "the interpreter ran out of memory (cap {} MiB)",
                    cap >> 20
                )
            }
            CellStop::Ended(why) => write!(f, "the interpreter ended: {why}"),
        }
    }
}

impl PythonRuntime {
    /// Compiles `wasm` (a CPython WASI preview-1 command), or loads its compiled form from the
    /// checked cache in `cache_dir`, and prepares the WASI imports.
    ///
    /// # Errors
    /// [`ErrorKind::Engine`] when the engine cannot be set up, [`ErrorKind::Compile`] for a
    /// module that is not valid wasm, [`ErrorKind::UnsupportedImport`] for one that imports
    /// more than WASI preview 1.
    pub fn load(
        wasm: &[u8],
        cache_dir: Option<&Path>,
    ) -> Result<(PythonRuntime, CacheOutcome), Error> {
        let engine_err = |what: &str, e: wasmtime::Error| {
            Error::new(
                ErrorKind::Engine,
                format!("cannot set up the Python engine ({what}): {e:#}"),
            )
        };
        let mut config = Config::new();
        config.epoch_interruption(true).max_wasm_stack(STACK_BYTES);
        let engine = Engine::new(&config).map_err(|e| engine_err("config", e))?;
        let compile = || {
            Module::new(&engine, wasm).map_err(|e| {
                Error::new(
                    ErrorKind::Compile,
                    format!("not a valid WebAssembly module: {e:#}"),
                )
            })
        };
        let (module, outcome) = match cache_dir {
            None => (compile()?, CacheOutcome::Disabled),
            Some(dir) => {
                let cache = ComponentCache::new(dir.to_path_buf());
                let sha256 = hex::encode(Sha256::digest(wasm));
                let path = dir.join(format!(
                    "{sha256}-{}.module.cwasm",
                    crate::runtime::engine_key(&engine)
                ));
                cache.load_or_compile(
                    &path,
                    // SAFETY: `load_or_compile` hands over only bytes this user's corral wrote
                    // from a module this engine compiled (their keyed MAC says so, checked with a
                    // key outside the cache folder), from a cache folder and file private to this
                    // user. wasmtime also checks the header against the engine's configuration.
                    |artifact| unsafe { Module::deserialize(&engine, artifact) },
                    compile,
                    |module| module.serialize().ok(),
                )?
            }
        };
        let foreign: Vec<String> = module
            .imports()
            .filter(|i| i.module() != "wasi_snapshot_preview1")
            .map(|i| format!("{}::{}", i.module(), i.name()))
            .collect();
        if !foreign.is_empty() {
            return Err(Error::new(
                ErrorKind::UnsupportedImport,
                format!(
                    "the interpreter imports {} (only WASI preview 1 is provided)",
                    foreign.join(", ")
                ),
            ));
        }
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut GuestState| &mut s.wasi)
            .map_err(|e| engine_err("wasi", e))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("corral-python")
            .enable_all()
            .build()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Engine,
                    format!("cannot start the Python runtime: {e}"),
                )
            })?;
        let ticker = EpochTicker::start(&engine, TICK, "corral-python-epoch")?;
        let inner = RuntimeInner {
            engine,
            linker,
            module,
            runtime: Some(runtime),
            _ticker: ticker,
        };
        Ok((
            PythonRuntime {
                inner: Arc::new(inner),
            },
            outcome,
        ))
    }

    /// Starts an interpreter. It gets ready in the background (CPython's start-up); the first
    /// [`Interpreter::run`] waits for it, outside the cell's deadline.
    ///
    /// # Errors
    /// When a folder cannot be opened or the instance cannot be made.
    pub fn start(&self, options: &InterpreterOptions) -> Result<Interpreter, Error> {
        let inner = &self.inner;
        let runtime = inner.runtime();
        let nonce = hex::encode(random_bytes::<16>());
        let (host_in, guest_in) = tokio::io::duplex(64 << 10);
        let (guest_out, host_out) = tokio::io::duplex(64 << 10);
        let stderr = CappedPipe::new(LOOSE_BYTES);
        let refused = Arc::new(AtomicBool::new(false));
        let mut builder = WasiCtxBuilder::new();
        builder
            .args(&[
                "python",
                "-c",
                DRIVER,
                &nonce,
                &options.keep_chars.to_string(),
            ])
            .stdin(AsyncStdinStream::new(guest_in))
            .stdout(AsyncStdoutStream::new(8 << 10, guest_out))
            .stderr(stderr.clone());
        let open_err = |what: &str, path: &Path, e: wasmtime::Error| {
            Error::new(
                ErrorKind::Start,
                format!("cannot open the {what} folder {}: {e:#}", path.display()),
            )
        };
        builder
            .preopened_dir(&options.scratch, "/scratch", FsPerms::ReadWrite)
            .map_err(|e| open_err("scratch", &options.scratch, e))?;
        if let Some((workspace, writable)) = &options.workspace {
            let perms = if *writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            builder
                .preopened_dir(workspace, "/workspace", perms)
                .map_err(|e| open_err("workspace", workspace, e))?;
        }
        let memory = usize::try_from(options.memory_bytes).unwrap_or(usize::MAX);
        let state = GuestState {
            wasi: builder.build_p1(),
            limiter: MemoryLimiter {
                inner: StoreLimitsBuilder::new()
                    .memory_size(memory)
                    .instances(1)
                    .build(),
                refused: refused.clone(),
            },
        };
        let mut store = Store::new(&inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Yield to the host at every tick: a stopped cell is dropped at its next yield.
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        let task_inner = Arc::clone(inner);
        let task = runtime.spawn(async move {
            let instance = task_inner
                .linker
                .instantiate_async(&mut store, &task_inner.module)
                .await?;
            let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
            start.call_async(&mut store, ()).await
        });
        Ok(Interpreter {
            runtime: Arc::clone(inner),
            input: host_in,
            output: host_out,
            buffer: Vec::new(),
            task: Some(task),
            nonce,
            ready: false,
            stderr,
            refused,
            memory_bytes: options.memory_bytes,
            frame_bytes: options.keep_chars.saturating_mul(4 * 6 * 4) + 4096,
        })
    }
}

/// Random bytes for the driver's nonce and cell ids: they tell the driver's lines from the
/// code's (a failed draw leaves zeros, which only makes forging easier, never breaks a cell).
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    let _ = getrandom::fill(&mut bytes);
    bytes
}

/// One live interpreter: its namespace lasts until it is dropped or a cell stops it.
pub struct Interpreter {
    runtime: Arc<RuntimeInner>,
    input: DuplexStream,
    output: DuplexStream,
    buffer: Vec<u8>,
    task: Option<tokio::task::JoinHandle<wasmtime::Result<()>>>,
    nonce: String,
    ready: bool,
    stderr: CappedPipe,
    refused: Arc<AtomicBool>,
    memory_bytes: u64,
    /// Longest line the driver may answer (its caps, UTF-8 and JSON escapes included).
    frame_bytes: usize,
}

impl Drop for Interpreter {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Whether a frame is the driver's answer to cell `id`.
fn answers(frame: &[u8], id: u64) -> bool {
    #[derive(serde::Deserialize)]
    struct Id {
        id: Option<u64>,
    }
    serde_json::from_slice::<Id>(frame).is_ok_and(|f| f.id == Some(id))
}

/// A line the driver or the code wrote.
enum Line {
    Frame(Vec<u8>),
    Loose(Vec<u8>),
    End,
}

impl Interpreter {
    /// Whether the interpreter is still alive (no cell stopped it).
    pub fn is_alive(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Waits until the interpreter is ready for cells (CPython has started).
    ///
    /// # Errors
    /// Why it will never be.
    pub fn wait_ready(&mut self) -> Result<(), CellStop> {
        if self.ready {
            return Ok(());
        }
        let runtime = Arc::clone(&self.runtime);
        let rt = runtime.runtime();
        let outcome = rt.block_on(async {
            tokio::time::timeout(START_TIMEOUT, async {
                loop {
                    match self.next_line().await {
                        Line::Frame(rest) if rest == b"ready" => return Ok(()),
                        Line::Frame(_) | Line::Loose(_) => {}
                        Line::End => return Err(()),
                    }
                }
            })
            .await
        });
        match outcome {
            Ok(Ok(())) => {
                self.ready = true;
                Ok(())
            }
            Ok(Err(())) => Err(self.ended()),
            Err(_) => {
                self.stop();
                Err(CellStop::Ended(format!(
                    "it was not ready within {} s",
                    START_TIMEOUT.as_secs()
                )))
            }
        }
    }

    /// Runs `code` in the interpreter's namespace, within `timeout`; `cancel` stops it early.
    ///
    /// # Errors
    /// A [`CellStop`]: the interpreter is then gone, and every later call fails the same way.
    pub fn run(
        &mut self,
        code: &str,
        timeout: Duration,
        cancel: Option<&AtomicBool>,
    ) -> Result<CellOutput, CellStop> {
        if self.task.is_none() {
            return Err(CellStop::Ended("it was stopped by an earlier cell".into()));
        }
        self.wait_ready()?;
        // Unpredictable, so code cannot write the answer of a later cell ahead of time.
        let id = u64::from_le_bytes(random_bytes());
        let request = serde_json::json!({ "id": id, "code": code }).to_string() + "\n";
        let runtime = Arc::clone(&self.runtime);
        let rt = runtime.runtime();
        let started = Instant::now();
        let outcome = rt.block_on(async {
            let exchange = async {
                if self.input.write_all(request.as_bytes()).await.is_err() {
                    return Err(None);
                }
                let mut loose = Vec::new();
                loop {
                    match self.next_line().await {
                        Line::Frame(frame) if answers(&frame, id) => return Ok((frame, loose)),
                        // The code wrote a line in the driver's form (it can learn the nonce):
                        // it answers no request, so it is only output.
                        Line::Frame(mut bytes) | Line::Loose(mut bytes) => {
                            bytes.push(b'\n');
                            let room = LOOSE_BYTES.saturating_sub(loose.len());
                            loose.extend_from_slice(&bytes[..room.min(bytes.len())]);
                        }
                        Line::End => return Err(None),
                    }
                }
            };
            let watch = async {
                loop {
                    if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                        return;
                    }
                    tokio::time::sleep(TICK).await;
                }
            };
            tokio::select! {
                answer = tokio::time::timeout(timeout, exchange) => match answer {
                    Ok(answer) => answer,
                    Err(_) => Err(Some(CellStop::Deadline(timeout))),
                },
                () = watch => Err(Some(CellStop::Cancelled)),
            }
        });
        let elapsed = started.elapsed();
        match outcome {
            Ok((frame, loose)) => match serde_json::from_slice::<CellOutput>(&frame) {
                Ok(mut output) => {
                    output.loose = String::from_utf8_lossy(&loose).into_owned();
                    output.elapsed = elapsed;
                    Ok(output)
                }
                Err(e) => {
                    self.stop();
                    Err(CellStop::Ended(format!(
                        "the driver's answer was not understood ({e})"
                    )))
                }
            },
            Err(Some(stop)) => {
                self.stop();
                Err(stop)
            }
            Err(None) => Err(self.ended()),
        }
    }

    /// Drops the instance.
    fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Why the instance ended by itself (its stdout closed).
    fn ended(&mut self) -> CellStop {
        let runtime = Arc::clone(&self.runtime);
        let rt = runtime.runtime();
        let result = match self.task.take() {
            Some(task) => {
                rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), task).await })
            }
            None => return CellStop::Ended("it was stopped by an earlier cell".into()),
        };
        if self.refused.load(Ordering::Relaxed) {
            return CellStop::OutOfMemory(self.memory_bytes);
        }
        let stderr = self.stderr.text();
        let tail: String = {
            let t = stderr.trim_end();
            let start = t.char_indices().rev().nth(399).map_or(0, |(i, _)| i);
            t[start..].to_owned()
        };
        let why = match result {
            Ok(Ok(Ok(()))) => "it exited".to_owned(),
            Ok(Ok(Err(e))) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                Some(exit) => format!("it exited with status {}", exit.0),
                None => format!("{e:#}"),
            },
            Ok(Err(e)) => format!("its task failed ({e})"),
            Err(_) => "it did not finish".to_owned(),
        };
        if tail.is_empty() {
            CellStop::Ended(why)
        } else {
            CellStop::Ended(format!("{why}; stderr: {tail}"))
        }
    }

    /// The next line on the interpreter's stdout: a frame of the driver's (its nonce stripped),
    /// other text, or the end. A line longer than a frame can be is passed on in pieces.
    async fn next_line(&mut self) -> Line {
        let prefix_len = self.nonce.len() + 1;
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                line.pop();
                return if line.len() >= prefix_len
                    && line.starts_with(self.nonce.as_bytes())
                    && line[self.nonce.len()] == b' '
                {
                    Line::Frame(line.split_off(prefix_len))
                } else {
                    Line::Loose(line)
                };
            }
            if self.buffer.len() > self.frame_bytes {
                let piece = std::mem::take(&mut self.buffer);
                return Line::Loose(piece);
            }
            let mut chunk = [0u8; 16 << 10];
            match self.output.read(&mut chunk).await {
                Ok(0) | Err(_) => return Line::End,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }
}
