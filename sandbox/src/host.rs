//! What lives in each call's `Store`: the WASI context, the memory limiter, the log sink, and the
//! bindings generated from `wit/tool.wit`.

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::output::CappedPipe;
use crate::write_quota::WriteBudget;

wasmtime::component::bindgen!({
    path: "wit",
    world: "plugin",
    exports: { default: async },
});

pub(crate) use corral::tool::host::Level;

/// Per-call host state. Built fresh for every call and dropped with its `Store`.
pub(crate) struct HostState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limiter: MemoryLimiter,
    pub log: CappedPipe,
    pub write_budget: Arc<WriteBudget>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl corral::tool::host::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        let tag = match level {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        self.log.push_str(&format!("[{tag}] {message}\n"));
    }
}

impl corral::tool::types::Host for HostState {}

/// [`StoreLimits`] that remembers whether it refused to grow memory, so a trap that follows
/// (Rust's allocator aborts when `memory.grow` fails) is reported as "memory limit reached".
pub(crate) struct MemoryLimiter {
    pub inner: StoreLimits,
    /// Set when a memory or table could not grow; shared, so the host can read it while the
    /// guest runs.
    pub refused: Arc<AtomicBool>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = self.inner.memory_growing(current, desired, maximum)?;
        if !ok {
            self.refused.store(true, Ordering::Relaxed);
        }
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = self.inner.table_growing(current, desired, maximum)?;
        if !ok {
            self.refused.store(true, Ordering::Relaxed);
        }
        Ok(ok)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}
