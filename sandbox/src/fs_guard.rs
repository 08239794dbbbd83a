//! What the host adds to WASI's `open-at`: only regular files and folders may be opened.
//!
//! Opening a FIFO blocks in `open(2)` until someone opens its other end, and WASI runs that
//! open on a blocking thread the call's deadline cannot interrupt: a guest (or the builtin
//! `files` plugin searching a workspace that holds one) would hang its thread for as long as
//! the FIFO stays unopened. Sockets and device nodes are no better. So `open-at` first looks at
//! what the path is (`stat-at`, which never blocks, following symlinks exactly as the open
//! would) and refuses anything that is not a regular file or a folder with `access`, before
//! WASI's own `open-at` runs. A path that does not exist yet passes (it may be created, and a
//! created file is regular). Opening past the per-call handle cap (`MAX_HANDLES`) fails with
//! `insufficient-memory` instead of trapping. The deadline and a runtime that never waits for abandoned work
//! (see `runtime.rs`) remain the backstop if the path is swapped between the look and the open.

use wasmtime::component::{Linker, Resource, ResourceTableError};
use wasmtime_wasi::filesystem::WasiFilesystemView;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    Descriptor, DescriptorFlags, DescriptorType, ErrorCode, HostDescriptor, OpenFlags, PathFlags,
};
use wasmtime_wasi::p2::FsError;

use crate::host::HostState;

/// The WASI filesystem interface as wasmtime-wasi 48 registers it (guests importing any
/// 0.2.x version are linked to it by semver).
pub(crate) const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// Replaces `[method]descriptor.open-at` in `linker` (already holding WASI) by the guarded one.
///
/// # Errors
/// When the linker does not hold WASI's filesystem interface under the expected name.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(FILESYSTEM_TYPES)?;
    types.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store,
         (dir, path_flags, path, oflags, flags): (
            Resource<Descriptor>,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            Box::new(async move {
                let mut fs = store.data_mut().filesystem();
                let peek = Resource::new_borrow(dir.rep());
                match fs.stat_at(peek, path_flags, path.clone()).await {
                    Ok(stat) if !openable(stat.type_) => return Ok((Err(ErrorCode::Access),)),
                    Ok(_) => {}
                    Err(e) => match guest_error(e)? {
                        ErrorCode::NoEntry => {}
                        code => return Ok((Err(code),)),
                    },
                }
                match fs.open_at(dir, path_flags, path, oflags, flags).await {
                    Ok(fd) => Ok((Ok(fd),)),
                    Err(e) => Ok((Err(guest_error(e)?),)),
                }
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Regular files and folders; symlinks only show up here for `open-at` without
/// `symlink-follow`, where opening them fails on its own without blocking.
fn openable(ty: DescriptorType) -> bool {
    matches!(
        ty,
        DescriptorType::RegularFile | DescriptorType::Directory | DescriptorType::SymbolicLink
    )
}

/// The error code the guest sees, or the trap that ends the call. A full resource table (the
/// call holds `MAX_HANDLES` resources) is an error the guest can handle, not a trap.
pub(crate) fn guest_error(e: FsError) -> wasmtime::Result<ErrorCode> {
    e.downcast()
        .or_else(|trap| match trap.downcast_ref::<ResourceTableError>() {
            Some(ResourceTableError::Full) => Ok(ErrorCode::InsufficientMemory),
            _ => Err(trap),
        })
}
