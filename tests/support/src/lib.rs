//! What corral's test suites share, kept free of dependencies so that every crate's tests can
//! use it (the prompts tests build without llama.cpp or wasmtime): where the downloaded fixtures
//! are, and how a guest plugin crate is built for `wasm32-wasip2`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The repository root: the nearest folder holding `rust-toolchain.toml` above the manifest
/// of the test being run (cargo sets `CARGO_MANIFEST_DIR` when it runs a test). Looked up at run
/// time, because a build shared between clones (one `CARGO_TARGET_DIR`) may reuse this crate
/// compiled in another clone.
pub fn repo() -> PathBuf {
    let compiled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let Some(start) = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from) else {
        return compiled;
    };
    start
        .ancestors()
        .find(|dir| dir.join("rust-toolchain.toml").is_file())
        .map_or(compiled, Path::to_path_buf)
}

/// The manifest folder of the crate whose test is running (cargo's `CARGO_MANIFEST_DIR` at run
/// time; `compiled` — the caller's `env!("CARGO_MANIFEST_DIR")` — when run by hand). See [`repo`]
/// for why not the compile-time value alone.
pub fn manifest_dir(compiled: &str) -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(compiled), PathBuf::from)
}

/// Folder of downloaded test fixtures (`CORRAL_FIXTURES`, else `<repo>/.fixtures`).
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("CORRAL_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".fixtures"))
}

/// A fixture file by name.
///
/// # Panics
/// When it is missing, naming the script that fetches it.
pub fn fixture(name: &str) -> PathBuf {
    let path = fixtures_dir().join(name);
    assert!(
        path.exists(),
        "fixture {} is missing: run `python3 scripts/fixtures.py` (make test does)",
        path.display()
    );
    path
}

/// Guest target dir shared with `scripts/build-plugins.sh` (`CORRAL_GUEST_TARGET_DIR`).
pub fn guest_target_dir() -> PathBuf {
    std::env::var_os("CORRAL_GUEST_TARGET_DIR").map_or_else(
        || PathBuf::from("/var/tmp/corral-guest-target"),
        PathBuf::from,
    )
}

/// Builds the guest crate at `crate_dir` for wasm32-wasip2 and returns the path of its
/// component `artifact` (such as `adversary.wasm`). Builds in one test binary never overlap.
///
/// # Panics
/// When the build fails, with cargo's output.
pub fn build_guest(crate_dir: &Path, artifact: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let target = guest_target_dir();
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(crate_dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        // No host rustflags (such as target-cpu=native) for the wasm target.
        .env("CARGO_ENCODED_RUSTFLAGS", "")
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "building guest {} failed (is `rustup target add wasm32-wasip2` done?):\n{}",
        crate_dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    target.join("wasm32-wasip2/release").join(artifact)
}
