//! Cross-crate integration tests for corral.
//!
//! The tests live in `integration/` (one test binary, a module per area) and drive the real
//! `corral` binary and the real default model, so they prove what a user gets. This library only
//! holds what several test modules share: where the binary, the fixtures and the model are.

use std::path::PathBuf;

/// Path of the `corral` binary under test.
///
/// `CORRAL_BIN` wins; otherwise the binary that `cargo build --release` put next to this test
/// executable's `deps/` folder (the Makefile builds it before running the tests).
///
/// # Panics
/// When the binary cannot be found, naming the command that builds it.
pub fn corral_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("CORRAL_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in <target>/<profile>/deps");
    let bin = profile_dir.join("corral");
    assert!(
        bin.exists(),
        "corral binary not found at {}: run `cargo build --release -p corral` first (make test does)",
        bin.display()
    );
    bin
}

/// Folder of downloaded test fixtures (`CORRAL_FIXTURES`, else `<repo>/.fixtures`).
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("CORRAL_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.fixtures"))
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

/// Path of the cached default model.
///
/// # Panics
/// When it is not cached, naming the command that pulls it.
pub fn default_model() -> PathBuf {
    let output = std::process::Command::new(corral_bin())
        .args(["model", "path"])
        .output()
        .expect("run corral model path");
    assert!(
        output.status.success(),
        "the default model is not cached: run `corral model pull` (make test does): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// Runs `corral` with `args` and extra environment; returns (exit code, stdout, stderr).
pub fn run_corral(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = std::process::Command::new(corral_bin());
    command.args(args).stdin(std::process::Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("spawn corral");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

pub mod gguf_fixture;
pub mod http;
