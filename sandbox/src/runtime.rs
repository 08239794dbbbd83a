//! The [`Sandbox`]: one wasmtime engine, its linker, the epoch ticker, and the compiled-component
//! cache. Create one per process and share it; every [`Plugin`] it loads borrows it.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::cache::{CacheOutcome, ComponentCache};
use crate::error::{Error, ErrorKind};
use crate::host::{HostState, Plugin as Bindings, PluginPre};
use crate::limits::{MAX_MEMORY_BYTES, MAX_WASM_STACK_BYTES};
use crate::plugin::Plugin;

/// How often the epoch advances; deadlines are rounded up to a whole number of ticks.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Interface prefixes a plugin may import. Everything else is refused at load time.
/// Sockets are linked so that plugins built with a full `std` load, but every socket operation is
/// denied unless the user grants the plugin specific peers.
const ALLOWED_IMPORTS: &[&str] = &[
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:filesystem/",
    "wasi:io/",
    "wasi:random/",
    "wasi:sockets/",
    "corral:tool/",
];

/// Sizes of the pooling allocator. The pool reserves virtual address space up front:
/// `slots × memories_per_instance × (MAX_MEMORY_BYTES + guard)`, about 17 GiB with the
/// defaults instead of the ≈ 76 GB wasmtime reserves when left unsized. Physical memory is only
/// used by slots in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Concurrent calls (component instances alive at once). Calls beyond it wait for a slot.
    pub slots: u32,
    /// Linear memories one component instance may have.
    pub memories_per_instance: u32,
    /// Core module instances one component may create (wasi adapters add a few).
    pub core_instances_per_instance: u32,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            slots: 16,
            memories_per_instance: 2,
            core_instances_per_instance: 16,
        }
    }
}

/// The wall clock guests read (`wasi:clocks/wall-clock`): the system clock unless a test
/// injects its own, so time-dependent guest behaviour can be tested deterministically.
pub type WallClock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// How to build a [`Sandbox`].
#[derive(Clone, Default)]
pub struct SandboxConfig {
    /// Folder for compiled components (`None`: compile every time). It must be private to this
    /// user (see [`crate::CacheOutcome`]); its MAC key lives beside it as `<cache_dir>.key`.
    pub cache_dir: Option<PathBuf>,
    /// Pooling allocator sizes; `None` uses on-demand allocation (slower instantiation).
    pub pool: Option<PoolConfig>,
    /// The clock guests see; `None` is the system clock.
    pub wall_clock: Option<WallClock>,
}

impl std::fmt::Debug for SandboxConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxConfig")
            .field("cache_dir", &self.cache_dir)
            .field("pool", &self.pool)
            .field("wall_clock", &self.wall_clock.as_ref().map(|_| "custom"))
            .finish()
    }
}

impl SandboxConfig {
    /// Pooling with default sizes and the given cache folder.
    pub fn with_cache(cache_dir: impl Into<PathBuf>) -> Self {
        SandboxConfig {
            cache_dir: Some(cache_dir.into()),
            pool: Some(PoolConfig::default()),
            wall_clock: None,
        }
    }
}

pub(crate) struct Inner {
    pub engine: Engine,
    pub linker: Linker<HostState>,
    /// Runs every call, and so owns every blocking thread WASI starts; `None` only in `drop`.
    runtime: Option<tokio::runtime::Runtime>,
    pub slots: tokio::sync::Semaphore,
    pub wall_clock: Option<WallClock>,
    cache: Option<ComponentCache>,
    engine_key: String,
    _ticker: EpochTicker,
}

impl Inner {
    pub(crate) fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the runtime lives until drop")
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A call past its deadline may have left a thread blocked in a host call (an `open(2)`
        // that never returns): never wait for it, or the process could not exit.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The wasmtime host shared by every plugin of a process. Cheap to clone.
#[derive(Clone)]
pub struct Sandbox {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("cache_dir", &self.inner.cache.as_ref().map(|c| c.dir()))
            .finish_non_exhaustive()
    }
}

fn engine_config(pool: Option<&PoolConfig>) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.max_wasm_stack(MAX_WASM_STACK_BYTES);
    if let Some(pool) = pool {
        let mut p = PoolingAllocationConfig::new();
        let memories = pool.slots * pool.memories_per_instance;
        p.total_component_instances(pool.slots)
            .total_core_instances(pool.slots * pool.core_instances_per_instance)
            .total_memories(memories)
            .total_tables(pool.slots * pool.core_instances_per_instance)
            .total_stacks(pool.slots)
            .max_memories_per_component(pool.memories_per_instance)
            .max_memory_size(MAX_MEMORY_BYTES as usize)
            .max_unused_warm_slots(pool.slots);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
        config.memory_reservation(MAX_MEMORY_BYTES);
        config.memory_reservation_for_growth(0);
    }
    config
}

impl Sandbox {
    /// Builds the engine and linker, and starts the epoch ticker thread.
    ///
    /// # Errors
    /// [`ErrorKind::Engine`] when wasmtime rejects the configuration (for example when the pool
    /// cannot reserve its address space; retry with `pool: None`).
    pub fn new(config: SandboxConfig) -> Result<Sandbox, Error> {
        let engine_err = |what: &str, e: wasmtime::Error| {
            Error::new(
                ErrorKind::Engine,
                format!("cannot set up the wasm engine ({what}): {e:#}"),
            )
        };
        let engine = Engine::new(&engine_config(config.pool.as_ref()))
            .map_err(|e| engine_err("config", e))?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| engine_err("wasi", e))?;
        crate::fs_guard::add_to_linker(&mut linker).map_err(|e| engine_err("wasi open-at", e))?;
        crate::write_quota::add_to_linker(&mut linker)
            .map_err(|e| engine_err("wasi file writes", e))?;
        Bindings::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| engine_err("host", e))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("corral-sandbox")
            .enable_all()
            .build()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Engine,
                    format!("cannot start the sandbox runtime: {e}"),
                )
            })?;
        let slots = config
            .pool
            .map_or(tokio::sync::Semaphore::MAX_PERMITS, |p| p.slots as usize);
        let engine_key = engine_key(&engine);
        let ticker = EpochTicker::start(&engine, EPOCH_TICK, "corral-epoch")?;
        Ok(Sandbox {
            inner: Arc::new(Inner {
                engine,
                linker,
                runtime: Some(runtime),
                slots: tokio::sync::Semaphore::new(slots),
                wall_clock: config.wall_clock,
                cache: config.cache_dir.map(ComponentCache::new),
                engine_key,
                _ticker: ticker,
            }),
        })
    }

    /// Compiles (or loads from the cache) a component, checks its imports and exports, and
    /// prepares it for fast instantiation. `bytes` may also be WAT text.
    ///
    /// # Errors
    /// [`ErrorKind::Compile`], [`ErrorKind::UnsupportedImport`] or [`ErrorKind::MissingExport`],
    /// each naming what was wrong.
    pub fn load(&self, bytes: &[u8]) -> Result<Plugin, Error> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        let (component, cache) = self.compile_cached(bytes, &sha256)?;
        self.check_imports(&component)?;
        let pre = self.inner.linker.instantiate_pre(&component).map_err(|e| {
            Error::new(
                ErrorKind::UnsupportedImport,
                format!("the component's imports cannot be satisfied: {e:#}"),
            )
        })?;
        let pre = PluginPre::new(pre).map_err(|e| {
            Error::new(
                ErrorKind::MissingExport,
                format!("the component does not export `corral:tool/tool@0.1.0` as corral expects: {e:#}"),
            )
        })?;
        Ok(Plugin::new(self.clone(), pre, sha256, cache))
    }

    /// Where the compiled form of a component with this hash is cached, if caching is on.
    pub fn cache_path(&self, sha256: &str) -> Option<PathBuf> {
        let cache = self.inner.cache.as_ref()?;
        Some(
            cache
                .dir()
                .join(format!("{sha256}-{}.cwasm", self.inner.engine_key)),
        )
    }

    /// The checked artifact when there is one, else the component compiled from `bytes` (and
    /// cached when the cache is usable). Says which happened.
    fn compile_cached(
        &self,
        bytes: &[u8],
        sha256: &str,
    ) -> Result<(Component, CacheOutcome), Error> {
        let engine = &self.inner.engine;
        let (Some(cache), Some(path)) = (self.inner.cache.as_ref(), self.cache_path(sha256)) else {
            return Ok((compile(engine, bytes)?, CacheOutcome::Disabled));
        };
        cache.load_or_compile(
            &path,
            // SAFETY: `load_or_compile` hands over only bytes this user's corral wrote from a
            // component this engine compiled (their keyed MAC says so, checked with a key
            // outside the cache folder), from a cache folder and file private to this user.
            // wasmtime also checks the header against the engine's configuration.
            |artifact| unsafe { Component::deserialize(engine, artifact) },
            || compile(engine, bytes),
            |component| component.serialize().ok(),
        )
    }

    fn check_imports(&self, component: &Component) -> Result<(), Error> {
        let ty = component.component_type();
        let refused: Vec<&str> = ty
            .imports(&self.inner.engine)
            .map(|(name, _)| name)
            .filter(|name| !ALLOWED_IMPORTS.iter().any(|p| name.starts_with(p)))
            .collect();
        if refused.is_empty() {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::UnsupportedImport,
            format!(
                "the component imports {} which corral does not provide (allowed: WASI 0.2 cli, clocks, \
                 filesystem, io, random, sockets, and corral:tool/host)",
                refused.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
            ),
        ))
    }
}

fn compile(engine: &Engine, bytes: &[u8]) -> Result<Component, Error> {
    Component::new(engine, bytes).map_err(|e| {
        Error::new(
            ErrorKind::Compile,
            format!("not a valid WebAssembly component: {e:#}"),
        )
    })
}

/// The thread that advances an engine's epoch every tick (so running guests yield and meet
/// their deadlines); stopped and joined when dropped.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts the thread `name`, ticking `engine` every `tick` until dropped (or until the
    /// engine is gone).
    ///
    /// # Errors
    /// [`ErrorKind::Engine`] when the thread cannot start.
    pub(crate) fn start(engine: &Engine, tick: Duration, name: &str) -> Result<Self, Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let (engine, stopped) = (engine.weak(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    match engine.upgrade() {
                        Some(e) => e.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| {
                Error::new(
                    ErrorKind::Engine,
                    format!("cannot start the epoch thread: {e}"),
                )
            })?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Names the engine in cached artifacts' file names: wasmtime's major version and the
/// engine's compatibility hash (its settings), so an artifact is only read by an engine that can
/// run it.
pub(crate) fn engine_key(engine: &Engine) -> String {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("wasmtime{}-{:016x}", wasmtime_major(), hasher.finish())
}

fn wasmtime_major() -> &'static str {
    // Part of the cache key next to the engine's own compatibility hash.
    "48"
}
