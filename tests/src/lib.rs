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

pub use corral_test_support::{fixture, fixtures_dir};

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

/// Runs `corral` with `args` and extra environment, stdin closed; returns (exit code, stdout,
/// stderr).
pub fn run_corral(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    run(args, env, None)
}

/// Runs `corral` with `args` and `input` on stdin; returns (exit code, stdout, stderr).
pub fn run_corral_input(args: &[&str], input: &str) -> (i32, String, String) {
    // TERM=dumb, as on a fresh machine's console: the chat's line editor once printed its
    // prompt into piped output there (and only there).
    run(args, &[("TERM", "dumb")], Some(input))
}

/// Runs `corral` with `args`, `env` set and `input` on stdin; returns (exit code, stdout, stderr).
pub fn run_corral_env_input(
    args: &[&str],
    env: &[(&str, &str)],
    input: &str,
) -> (i32, String, String) {
    run(args, env, Some(input))
}

fn run(args: &[&str], env: &[(&str, &str)], input: Option<&str>) -> (i32, String, String) {
    let output = corral_output(args, env, input);
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `corral` with `args`, `env` set and `input` on stdin (closed when `None`); returns
/// what it printed and how it exited.
pub fn corral_output(
    args: &[&str],
    env: &[(&str, &str)],
    input: Option<&str>,
) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut command = Command::new(corral_bin());
    command
        .args(args)
        .envs(env.iter().copied())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn corral");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        // corral may exit before reading everything (e.g. on `/exit`): that is not an error.
        let _ = stdin.write_all(input.as_bytes());
    }
    child.wait_with_output().expect("corral runs")
}

/// Asserts exit code `code`, exactly one `error` line on stderr (the last one) containing
/// `needle`, and no panic. Progress lines before it are allowed.
///
/// # Panics
/// When any of that does not hold.
pub fn assert_one_error_line(result: &(i32, String, String), code: i32, needle: &str) {
    let (status, _stdout, stderr) = result;
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(*status, code, "stderr: {stderr}");
    assert_eq!(errors.len(), 1, "expected one error line, got: {stderr}");
    assert_eq!(
        stderr.lines().last(),
        Some(errors[0]),
        "error is not the last line: {stderr}"
    );
    assert!(
        errors[0].contains(needle),
        "expected {needle:?} in: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

pub mod gguf_fixture;
pub mod http;

/// Version `v` (0 or 1) of the session the crash test saves over and over (`save_sessions`):
/// 3000 messages of about 400 bytes, each naming the version, so one save takes a while.
pub fn crash_session(v: usize) -> corral::sessions::Session {
    use corral_prompts::{Conversation, Message};
    let messages = (0..3000)
        .map(|i| Message::user(format!("version {v} message {i}: {}", "नमस्ते ".repeat(20))))
        .collect();
    corral::sessions::Session::new(
        "crash",
        "m",
        Conversation::new(messages),
        corral::memory::Memory::new(corral::memory::MemorySettings::for_window(1024, 64)),
    )
}

/// Rows the CPU engine evaluates at least when it pads a short continuation with cached tokens
/// before it, so llama.cpp's flash attention takes its tiled path (it does where that costs
/// less than the row-by-row path; the engine's own tests check where).
pub const TILED_ROWS: usize = 64;

/// Whether a generation that found `cached` of its `prompt` tokens in the KV cache evaluated
/// `evaluated` of them as it should: exactly the new ones, or the new ones padded with cached
/// ones before them to [`TILED_ROWS`] rows.
pub fn evaluated_only_the_new_tokens(prompt: usize, cached: usize, evaluated: usize) -> bool {
    let new = prompt - cached;
    evaluated == new || (new < TILED_ROWS && evaluated == TILED_ROWS)
}
