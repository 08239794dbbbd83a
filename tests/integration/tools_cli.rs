//! `corral tools …` end to end: builtin plugins, grants, and the plugin SDK (the example plugin
//! built from source for wasm32-wasip2, installed, called, removed).
//!
//! Guests are built with `scripts/build-plugins.sh` and cargo into the shared guest target dir
//! (`CORRAL_GUEST_TARGET_DIR`, default /var/tmp/corral-guest-target); needs the wasm32-wasip2
//! Rust target.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use corral_tests::corral_bin;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

fn repo() -> PathBuf {
    corral_test_support::manifest_dir(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builtin plugins laid out by the real build script, once per test binary.
pub(crate) fn builtins() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Next to the binary under test, reused by later runs (the script replaces each plugin
        // atomically), so repeated test runs leave nothing behind in /tmp.
        let dir = corral_bin()
            .parent()
            .expect("the binary lives in a folder")
            .join("test-builtin-plugins");
        let out = Command::new("bash")
            .arg(repo().join("scripts/build-plugins.sh"))
            .arg(&dir)
            .env(
                "CORRAL_GUEST_TARGET_DIR",
                corral_test_support::guest_target_dir(),
            )
            .env("CORRAL_BIN", corral_bin())
            .output()
            .expect("run scripts/build-plugins.sh");
        assert!(
            out.status.success(),
            "scripts/build-plugins.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// A throwaway corral home.
pub(crate) struct Home {
    dir: TempDir,
}

impl Home {
    pub(crate) fn new() -> Home {
        Home {
            dir: TempDir::new().unwrap(),
        }
    }

    /// The corral home (`CORRAL_HOME`) of this test.
    pub(crate) fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub(crate) fn corral(&self, args: &[&str]) -> Output {
        Command::new(corral_bin())
            .args(args)
            .env("CORRAL_HOME", self.dir.path())
            .env("CORRAL_BUILTIN_PLUGINS", builtins())
            .output()
            .expect("run corral")
    }

    /// Runs `corral tools call NAME ARGS`, returning (exit code, stdout, stderr).
    fn call(&self, name: &str, args: &str) -> (i32, String, String) {
        let out = self.corral(&["tools", "call", name, args]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// The sha256 a builtin plugin's manifest records (what a grant names).
fn builtin_sha256(id: &str) -> String {
    let manifest = std::fs::read_to_string(builtins().join(id).join("plugin.toml")).unwrap();
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("sha256 = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("the manifest records a sha256")
        .to_owned()
}

fn ok(out: (i32, String, String)) -> String {
    assert_eq!(out.0, 0, "stderr: {}", out.2);
    out.1
}

fn failed(out: (i32, String, String), code: i32) -> String {
    assert_eq!(out.0, code, "stdout: {} stderr: {}", out.1, out.2);
    out.2
}

#[test]
fn builtin_calculator_clock_and_json_answer() {
    let home = Home::new();
    assert_eq!(
        ok(home.call("calculator", r#"{"expression":"2+3"}"#)),
        "5\n"
    );
    assert_eq!(
        ok(home.call("calculator", r#"{"expression":"0.1+0.2"}"#)),
        "3/10 ≈ 0.3\n"
    );
    let clock: serde_json::Value =
        serde_json::from_str(&ok(home.call("clock", r#"{"timezone":"Asia/Tokyo"}"#))).unwrap();
    assert_eq!(clock["timezone"], "Asia/Tokyo");
    assert_eq!(clock["utc_offset"], "+09:00");
    let got = ok(home.call(
        "json",
        r#"{"op":"get","document":"{\"a\":[1,{\"b\":42}]}","pointer":"/a/1/b"}"#,
    ));
    assert_eq!(got.trim(), "42");
}

#[test]
fn tool_errors_and_refused_arguments_exit_1_with_the_message() {
    let home = Home::new();
    assert!(
        failed(home.call("calculator", r#"{"expression":"1/0"}"#), 1)
            .contains("tool error: division by zero")
    );
    let err = failed(home.call("calculator", r#"{"expr":"1"}"#), 1);
    assert!(
        err.contains("\"expression\" is a required property"),
        "{err}"
    );
    assert!(failed(home.call("calculator", "{not json"), 1).contains("not valid JSON"));
    assert!(
        failed(home.call("clock", r#"{"timezone":"Mars/Olympus"}"#), 1)
            .contains("unknown time zone")
    );
    for name in ["brave_search", "wolfram_alpha", "no_such_tool"] {
        let err = failed(home.call(name, r#"{"query":"weather"}"#), 1);
        assert!(err.contains("tool not available"), "{name}: {err}");
    }
}

#[test]
fn files_works_only_inside_the_granted_workspace() {
    let home = Home::new();
    let err = failed(home.call("files", r#"{"op":"list"}"#), 1);
    assert!(err.contains("no workspace is granted"), "{err}");

    let ws = TempDir::new().unwrap();
    std::fs::write(ws.path().join("notes.md"), "alpha\nneedle here\n").unwrap();
    let grant = |mode: &str| {
        std::fs::write(
            home.dir.path().join("grants.toml"),
            format!(
                "[plugins.files]\nsha256 = \"{}\"\ndirs = [{{ host = \"{}\", guest = \"/workspace\", mode = \"{mode}\" }}]\n",
                builtin_sha256("files"),
                ws.path().display()
            ),
        )
        .unwrap();
    };
    grant("ro");
    assert!(ok(home.call("files", r#"{"op":"list"}"#)).contains("notes.md"));
    assert_eq!(
        ok(home.call("files", r#"{"op":"read","path":"notes.md"}"#)),
        "alpha\nneedle here\n\n"
    );
    assert!(
        ok(home.call("files", r#"{"op":"search","pattern":"needle"}"#)).contains("\"line\": 2")
    );
    assert!(failed(
        home.call("files", r#"{"op":"write","path":"new.txt","content":"x"}"#),
        1
    )
    .contains("tool error"));
    assert!(!ws.path().join("new.txt").exists());
    assert!(failed(
        home.call("files", r#"{"op":"read","path":"../../etc/passwd"}"#),
        1
    )
    .contains("inside the workspace"));

    grant("rw");
    ok(home.call(
        "files",
        r#"{"op":"write","path":"new.txt","content":"written"}"#,
    ));
    assert_eq!(
        std::fs::read_to_string(ws.path().join("new.txt")).unwrap(),
        "written"
    );
}

/// Builds tools/examples/word-count from source and lays it out as an installable folder.
pub(crate) fn example_plugin(dest: &Path) -> PathBuf {
    let src = repo().join("tools/examples/word-count");
    let wasm = build_guest(&src, "word_count.wasm");
    let manifest = std::fs::read_to_string(src.join("plugin.toml")).unwrap();
    plugin_folder(
        &dest.join("word-count"),
        "word_count.wasm",
        &wasm,
        &manifest,
    )
}

/// Lays out `wasm` with `manifest` (its sha256 line filled in) as a plugin folder at `dir`.
fn plugin_folder(dir: &Path, file: &str, wasm: &[u8], manifest: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(file), wasm).unwrap();
    let sum = hex::encode(Sha256::digest(wasm));
    let manifest: String = manifest
        .lines()
        .map(|l| {
            if l.starts_with("sha256") {
                format!("sha256 = \"{sum}\"\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(dir.join("plugin.toml"), manifest).unwrap();
    dir.to_owned()
}

/// Builds the guest crate at `src` for wasm32-wasip2 and returns the component `artifact`.
fn build_guest(src: &Path, artifact: &str) -> Vec<u8> {
    std::fs::read(corral_test_support::build_guest(src, artifact)).unwrap()
}

#[test]
fn the_sdk_example_builds_installs_calls_and_removes() {
    let home = Home::new();
    let tmp = TempDir::new().unwrap();
    let dir = example_plugin(tmp.path());
    let dir_s = dir.to_str().unwrap();

    let out = home.corral(&["tools", "install", dir_s]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("installed word-count 0.1.0"));

    let list = String::from_utf8_lossy(&home.corral(&["tools", "list"]).stdout).into_owned();
    assert!(
        list.contains("word-count 0.1.0 (installed)") && list.contains("word_count"),
        "{list}"
    );
    assert!(list.contains("calculator 0.1.0 (builtin)"), "{list}");

    let got: serde_json::Value =
        serde_json::from_str(&ok(home.call("word_count", r#"{"text":"one two\nthree"}"#))).unwrap();
    assert_eq!(
        got,
        serde_json::json!({"words": 3, "lines": 2, "chars": 13})
    );

    let again = home.corral(&["tools", "install", dir_s]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already installed"));

    let removed = home.corral(&["tools", "remove", "word-count"]);
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    assert!(failed(home.call("word_count", r#"{"text":"x"}"#), 1).contains("tool not available"));
    let builtin = home.corral(&["tools", "remove", "calculator"]);
    assert_eq!(builtin.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&builtin.stderr).contains("builtin"));
}

#[test]
fn install_refuses_tampered_and_missing_plugins() {
    let home = Home::new();
    let tmp = TempDir::new().unwrap();
    let dir = example_plugin(tmp.path());
    let mut wasm = std::fs::read(dir.join("word_count.wasm")).unwrap();
    wasm.push(0);
    std::fs::write(dir.join("word_count.wasm"), wasm).unwrap();
    let out = home.corral(&["tools", "install", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("hash mismatch"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let missing = home.corral(&["tools", "install", "/no/such/plugin"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));
}

/// Sandbox escapes, item 5: `files search` over a workspace holding a FIFO hung `corral tools
/// call` (2 s deadline, still running after 12 s). Now the FIFO is refused and the process
/// exits; the bound is generous (a liveness check, the refusal takes milliseconds).
#[test]
fn a_fifo_in_the_workspace_never_hangs_the_call() {
    let home = Home::new();
    let ws = TempDir::new().unwrap();
    std::fs::write(ws.path().join("notes.md"), "needle\n").unwrap();
    let fifo = ws.path().join("pipe");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    std::fs::write(
        home.dir.path().join("grants.toml"),
        format!(
            "[plugins.files]\nsha256 = \"{}\"\ndirs = [{{ host = \"{}\", guest = \"/workspace\", mode = \"ro\" }}]\n",
            builtin_sha256("files"),
            ws.path().display()
        ),
    )
    .unwrap();
    let start = std::time::Instant::now();
    let found = ok(home.call("files", r#"{"op":"search","pattern":"needle"}"#));
    assert!(found.contains("notes.md"), "{found}");
    let read = failed(home.call("files", r#"{"op":"read","path":"pipe"}"#), 1);
    assert!(read.contains("tool error"), "{read}");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
}

/// Sandbox escapes, item 9: `corral tools call` printed a tool's `ESC ]0;…BEL`, `ESC [2J` and
/// NUL straight to the terminal.
#[test]
fn tool_text_reaches_the_terminal_without_control_sequences() {
    let home = Home::new();
    let tmp = TempDir::new().unwrap();
    let wasm = build_guest(&repo().join("tools/tests/guests/shifty"), "shifty.wasm");
    let manifest = "id = \"shifty\"\nversion = \"0.1.0\"\napi = \"0.1.0\"\ncomponent = \"shifty.wasm\"\nsha256 = \"\"\n";
    let dir = plugin_folder(&tmp.path().join("shifty"), "shifty.wasm", &wasm, manifest);
    let out = home.corral(&["tools", "install", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ok(home.call("ansi", "{}")), "visible text\n");
}
