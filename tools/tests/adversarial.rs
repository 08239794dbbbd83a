//! The adversarial suite: a plugin that misbehaves on purpose (tests/guests/adversary), run
//! through the same registry path the agent uses. Every case checks that the host stays
//! responsive and that the next call works in a fresh instance. (The regressions found by the
//! sandbox-escape review live in `escapes.rs`.)

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use corral_sandbox::{CacheOutcome, Sandbox, SandboxConfig};
use corral_tools::plugins::{self, Home};
use corral_tools::{CallError, CallOutput, Registry, RuntimeErrorKind};
use tempfile::TempDir;

struct Fixture {
    _tmp: TempDir,
    root: PathBuf,
    home: Home,
    sandbox: Sandbox,
    registry: Registry,
    granted_peer: TcpListener,
    other_peer: TcpListener,
}

const DEADLINE_MS: u64 = 1500;

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = TempDir::new().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        for d in ["ro", "rw", "outside"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("ro/readme.txt"), "read me").unwrap();
        std::fs::write(root.join("rw/notes.txt"), "notes").unwrap();
        std::fs::write(root.join("outside/secret.txt"), "top secret").unwrap();
        std::os::unix::fs::symlink(root.join("outside/secret.txt"), root.join("rw/escape")).unwrap();
        std::os::unix::fs::symlink(root.join("outside"), root.join("ro/escape-dir")).unwrap();

        let granted_peer = TcpListener::bind("127.0.0.1:0").unwrap();
        let other_peer = TcpListener::bind("127.0.0.1:0").unwrap();
        let (gp, op) = (granted_peer.local_addr().unwrap(), other_peer.local_addr().unwrap());

        let home = Home::at(&root.join("home"));
        let wasm = std::fs::read(common::adversary_wasm()).unwrap();
        let extra = format!(
            "[capabilities]\n\
             dirs = [{{ guest = \"/ro\", mode = \"rw\" }}, {{ guest = \"/rw\", mode = \"rw\" }}]\n\
             env = [\"CORRAL_TEST_GRANTED\", \"CORRAL_TEST_SECRET\"]\n\
             network = [\"{gp}\", \"{op}\"]\n\
             [limits]\ndeadline_ms = {DEADLINE_MS}\nmemory_mib = 32\nresult_kib = 16\noutput_kib = 8\n"
        );
        let src = common::plugin_folder(&root.join("src/adversary"), "adversary", &wasm, None, &extra);
        let sha256 = common::sha256_hex(&wasm);
        // The user grants /ro read-only (the manifest asked for rw), /rw read-write, one env var
        // of the two asked, and one network peer of the two asked.
        std::fs::create_dir_all(&home.plugins).unwrap();
        std::fs::write(
            &home.grants,
            format!(
                "[plugins.adversary]\n\
                 sha256 = \"{sha256}\"\n\
                 dirs = [{{ host = \"{ro}\", guest = \"/ro\", mode = \"ro\" }}, {{ host = \"{rw}\", guest = \"/rw\", mode = \"rw\" }}]\n\
                 env = [\"CORRAL_TEST_GRANTED\"]\n\
                 network = [\"{gp}\"]\n",
                ro = root.join("ro").display(),
                rw = root.join("rw").display(),
            ),
        )
        .unwrap();
        let sandbox = Sandbox::new(SandboxConfig::with_cache(&home.cache)).unwrap();
        plugins::install(&home, &sandbox, &src).unwrap();
        // The host environment the grant reads, passed explicitly (no process-wide set_var).
        let env = |name: &str| match name {
            "CORRAL_TEST_GRANTED" => Some("granted-value".to_owned()),
            "CORRAL_TEST_SECRET" => Some("secret-value".to_owned()),
            _ => None,
        };
        let (registry, problems) = plugins::registry_with_env(&home, &sandbox, &env).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        Fixture { _tmp: tmp, root, home, sandbox, registry, granted_peer, other_peer }
    })
}

fn call(tool: &str, args: &str) -> Result<CallOutput, CallError> {
    fixture().registry.call(tool, args)
}

use common::text;

/// Liveness bound for a healthy call after an attack. Generous on purpose (a healthy call takes
/// milliseconds): it only catches a host left wedged, never flakes on a loaded CI machine.
/// Speed is measured in `sandbox/benches/calls.rs`, not here.
const LIVENESS: Duration = Duration::from_secs(30);

/// A call that hits the deadline returns by this bound. The epoch trap fires within a few
/// milliseconds of the deadline on an idle machine; the 10 s of slack is for a CI machine whose
/// two cores are busy with builds (seen: 3.5 s for a 1.5 s deadline at load 6), so this checks
/// that the call is stopped, not how fast.
const DEADLINE_BOUND: Duration = Duration::from_millis(DEADLINE_MS + 10_000);

/// The host answers and a fresh instance serves the next call.
fn assert_healthy() {
    let start = Instant::now();
    assert_eq!(
        text(&call("echo", r#"{"text":"still here"}"#)),
        r#"{"text":"still here"}"#
    );
    assert_eq!(
        text(&call("counter", "{}")),
        "1",
        "state leaked between calls"
    );
    assert!(
        start.elapsed() < LIVENESS,
        "host wedged after attack: {:?}",
        start.elapsed()
    );
}

fn runtime_kind(r: &Result<CallOutput, CallError>) -> RuntimeErrorKind {
    match r {
        Err(CallError::Runtime(e)) => e.kind,
        other => panic!("expected a runtime error, got {other:?}"),
    }
}

fn tool_error(r: &Result<CallOutput, CallError>) -> String {
    match r {
        Err(CallError::Tool(m)) => m.clone(),
        other => panic!("expected a tool error, got {other:?}"),
    }
}

fn fs(tool: &str, path: &str) -> String {
    text(&call(
        tool,
        &serde_json::json!({"path": path, "content": "pwned", "to": "/ro/moved.txt"}).to_string(),
    ))
}

#[test]
fn path_escapes_from_the_preopen_are_denied() {
    assert_eq!(fs("read", "/ro/readme.txt"), r#"ok: "read me""#);
    for path in [
        "/ro/../outside/secret.txt",
        "/rw/../../outside/secret.txt",
        "../outside/secret.txt",
        "/etc/passwd",
        &format!("{}/outside/secret.txt", fixture().root.display()),
        "/rw/escape",
        "/ro/escape-dir/secret.txt",
    ] {
        let got = fs("read", path);
        assert!(got.starts_with("denied"), "{path}: {got}");
        assert!(!got.contains("top secret"), "{path}: {got}");
    }
    // "/" itself was never preopened: listing it is denied (not merely free of `outside`).
    let root = fs("list", "/");
    assert!(root.starts_with("denied"), "{root}");
    let listed = fs("list", "/ro");
    assert!(
        [
            r#"ok: ["escape-dir", "readme.txt"]"#,
            r#"ok: ["readme.txt", "escape-dir"]"#
        ]
        .contains(&listed.as_str()),
        "{listed}"
    );
    assert_healthy();
}

#[test]
fn read_only_grants_refuse_writes_truncation_and_rename() {
    for tool in ["write", "truncate", "rename"] {
        let got = fs(tool, "/ro/readme.txt");
        assert!(got.starts_with("denied"), "{tool}: {got}");
    }
    assert_eq!(
        std::fs::read_to_string(fixture().root.join("ro/readme.txt")).unwrap(),
        "read me"
    );
    assert!(fs("write", "/ro/new.txt").starts_with("denied"));
    assert!(!fixture().root.join("ro/new.txt").exists());
    // The read-write grant does allow writing, inside it only.
    assert_eq!(fs("write", "/rw/out.txt"), "ok: ()");
    assert_eq!(
        std::fs::read_to_string(fixture().root.join("rw/out.txt")).unwrap(),
        "pwned"
    );
    assert!(
        fs("write", "/rw/escape").starts_with("denied"),
        "wrote through a symlink"
    );
    assert_eq!(
        std::fs::read_to_string(fixture().root.join("outside/secret.txt")).unwrap(),
        "top secret"
    );
    assert_healthy();
}

#[test]
fn an_infinite_loop_hits_the_deadline() {
    let start = Instant::now();
    let r = call("spin", "{}");
    assert_eq!(runtime_kind(&r), RuntimeErrorKind::Deadline);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(DEADLINE_MS - 10) && took < DEADLINE_BOUND,
        "{took:?}"
    );
    assert_healthy();
}

#[test]
fn the_callers_deadline_stops_a_guest_before_its_own_and_cancel_stops_it_starting() {
    use corral_tools::{CallControl, CancelToken};
    // The caller allows a tenth of the plugin's own deadline.
    let caller = Duration::from_millis(DEADLINE_MS / 10);
    let start = Instant::now();
    let control = CallControl::within(caller, CancelToken::new());
    let r = fixture()
        .registry
        .call_value("spin", &serde_json::json!({}), &control);
    assert_eq!(runtime_kind(&r), RuntimeErrorKind::Deadline);
    let Err(CallError::Runtime(e)) = &r else {
        unreachable!()
    };
    assert!(e.message.starts_with("the caller's deadline of"), "{e}");
    let took = start.elapsed();
    assert!(
        took < DEADLINE_BOUND,
        "{took:?} (the caller allowed {caller:?})"
    );

    let cancel = CancelToken::new();
    cancel.cancel();
    let control = CallControl {
        deadline: None,
        cancel,
    };
    let r = fixture()
        .registry
        .call_value("counter", &serde_json::json!({}), &control);
    assert_eq!(runtime_kind(&r), RuntimeErrorKind::Cancelled);
    assert_healthy();
}

#[test]
fn cancelling_a_running_guest_stops_it_computing_or_blocked() {
    use corral_tools::{CallControl, CancelToken};
    for tool in ["spin", "sleep"] {
        let cancel = CancelToken::new();
        let control = CallControl {
            deadline: None,
            cancel: cancel.clone(),
        };
        let canceller = {
            let cancel = cancel.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(DEADLINE_MS / 10));
                cancel.cancel();
            })
        };
        let start = Instant::now();
        let r = fixture()
            .registry
            .call_value(tool, &serde_json::json!({}), &control);
        let took = start.elapsed();
        canceller.join().unwrap();
        assert_eq!(
            runtime_kind(&r),
            RuntimeErrorKind::Cancelled,
            "{tool}: {r:?}"
        );
        // Stopped by the cancel, well before the plugin's own deadline.
        assert!(
            took < Duration::from_millis(DEADLINE_MS / 2),
            "{tool}: {took:?}"
        );
    }
    assert_healthy();
}

#[test]
fn a_guest_blocked_in_a_host_call_hits_the_deadline() {
    let start = Instant::now();
    let r = call("sleep", "{}");
    assert_eq!(runtime_kind(&r), RuntimeErrorKind::Deadline);
    assert!(start.elapsed() < DEADLINE_BOUND, "{:?}", start.elapsed());
    assert_healthy();
}

#[test]
fn a_memory_bomb_hits_the_memory_cap() {
    assert_eq!(runtime_kind(&call("alloc", "{}")), RuntimeErrorKind::Memory);
    assert_healthy();
}

#[test]
fn unbounded_recursion_overflows_the_wasm_stack() {
    assert_eq!(
        runtime_kind(&call("recurse", "{}")),
        RuntimeErrorKind::StackOverflow
    );
    assert_healthy();
}

#[test]
fn traps_and_panics_are_runtime_errors() {
    assert_eq!(runtime_kind(&call("trap", "{}")), RuntimeErrorKind::Trap);
    let r = call("panic", "{}");
    assert_eq!(runtime_kind(&r), RuntimeErrorKind::Trap);
    let Err(CallError::Runtime(e)) = &r else {
        unreachable!()
    };
    assert!(
        e.message.contains("panicked on purpose"),
        "panic message not captured: {}",
        e.message
    );
    assert_healthy();
}

#[test]
fn a_gigabyte_of_output_is_stopped_or_truncated() {
    // A gigabyte result cannot even be built under the 32 MiB cap.
    assert_eq!(
        runtime_kind(&call("big_result", r#"{"n": 1073741824}"#)),
        RuntimeErrorKind::Memory
    );
    // A few MiB can, and comes back cut to 16 KiB at a character boundary, with a marker.
    let out = call("big_result", r#"{"n": 4000000}"#).unwrap();
    assert!(out.truncated);
    let t = text(&Ok(out));
    assert!(
        t.len() < 16 * 1024 + 100 && t.contains("output truncated"),
        "{}",
        t.len()
    );
    assert!(t.starts_with("éé"));
    assert_healthy();
}

#[test]
fn a_gigabyte_of_stdout_is_capped() {
    let start = Instant::now();
    match call("big_stdout", r#"{"n": 1073741824}"#) {
        Ok(out) => {
            assert!(
                out.stdout.len() < 8 * 1024 + 100 && out.stdout.contains("output truncated"),
                "{}",
                out.stdout.len()
            );
            assert!(out.stderr.len() < 8 * 1024 + 100, "{}", out.stderr.len());
        }
        Err(CallError::Runtime(e)) => assert_eq!(e.kind, RuntimeErrorKind::Deadline, "{e}"),
        Err(e) => panic!("{e}"),
    }
    assert!(start.elapsed() < DEADLINE_BOUND, "{:?}", start.elapsed());
    assert_healthy();
}

#[test]
fn host_logging_is_captured_and_capped() {
    let out = call("log", r#"{"n": 100000}"#).unwrap();
    assert!(
        out.stderr
            .starts_with("[info] hello from the guest\n[error] eee"),
        "{}",
        &out.stderr[..60]
    );
    assert!(out.stderr.len() < 8 * 1024 + 100 && out.stderr.contains("output truncated"));
    assert_healthy();
}

#[test]
fn the_compiled_component_cache_is_used_and_survives_corruption() {
    let f = fixture();
    let wasm = std::fs::read(common::adversary_wasm()).unwrap();
    let cached = f.sandbox.cache_path(&common::sha256_hex(&wasm)).unwrap();
    assert!(
        cached.exists(),
        "install should leave a compiled artifact at {}",
        cached.display()
    );
    // A fresh engine (as in a second process) loads from the cache.
    let again = Sandbox::new(SandboxConfig::with_cache(&f.home.cache)).unwrap();
    let plugin = again.load(&wasm).unwrap();
    assert_eq!(plugin.cache_outcome(), &CacheOutcome::Hit);
    assert_eq!(plugin.list_tools().unwrap().len(), 19);
    // A corrupt artifact is refused and replaced by a recompiled one.
    let copy = TempDir::new().unwrap();
    let sandbox = Sandbox::new(SandboxConfig::with_cache(copy.path().join("cache"))).unwrap();
    assert_eq!(
        sandbox.load(&wasm).unwrap().cache_outcome(),
        &CacheOutcome::Miss
    );
    let path = sandbox.cache_path(&common::sha256_hex(&wasm)).unwrap();
    std::fs::write(&path, b"garbage").unwrap();
    let plugin = sandbox.load(&wasm).unwrap();
    assert!(
        matches!(plugin.cache_outcome(), CacheOutcome::Refused(why) if why.contains("MAC")),
        "{:?}",
        plugin.cache_outcome()
    );
    assert_eq!(plugin.list_tools().unwrap().len(), 19);
    assert_ne!(std::fs::read(&path).unwrap(), b"garbage");
    assert_eq!(
        sandbox.load(&wasm).unwrap().cache_outcome(),
        &CacheOutcome::Hit
    );
}

#[test]
fn only_granted_env_vars_are_visible() {
    let env = |name: &str| text(&call("env", &format!(r#"{{"name":"{name}"}}"#)));
    assert_eq!(env("CORRAL_TEST_GRANTED"), "ok: granted-value");
    for name in ["CORRAL_TEST_SECRET", "HOME", "PATH", "CORRAL_HOME"] {
        assert!(env(name).starts_with("denied"), "{name}: {}", env(name));
    }
    assert_healthy();
}

#[test]
fn sockets_are_denied_unless_the_peer_is_granted() {
    let f = fixture();
    let connect = |addr: String| text(&call("socket", &format!(r#"{{"addr":"{addr}"}}"#)));
    let other = f.other_peer.local_addr().unwrap();
    let got = connect(other.to_string());
    assert!(
        got.starts_with("denied"),
        "asked for but not granted: {got}"
    );
    assert!(connect("127.0.0.1:9".into()).starts_with("denied"));
    assert!(
        connect("example.com:80".into()).starts_with("denied"),
        "name lookup must be off"
    );
    let granted = f.granted_peer.local_addr().unwrap();
    assert_eq!(connect(granted.to_string()), r#"ok: "connected""#);
    assert_healthy();
}

#[test]
fn malformed_and_invalid_arguments_never_reach_the_guest() {
    for (args, needle) in [
        (r#"{"text": "#, "not valid JSON"),
        ("not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ("{}", "\"text\" is a required property"),
        (r#"{"text": 5}"#, "at /text"),
        (r#"{"text": "a", "extra": 1}"#, "'extra' was unexpected"),
    ] {
        let msg = tool_error(&call("echo", args));
        assert!(msg.contains(needle), "{args}: {msg}");
    }
    let deep = format!("{{\"text\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(tool_error(&call("echo", &deep)).contains("levels deep"));
    let huge = format!(r#"{{"text":"{}"}}"#, "a".repeat(1 << 20));
    assert!(tool_error(&call("echo", &huge)).contains("bytes"));
    assert_healthy();
}

#[test]
fn concurrent_calls_get_separate_instances() {
    std::thread::scope(|s| {
        let spinner = s.spawn(|| call("spin", "{}"));
        let workers: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    (0..10)
                        .map(|_| text(&call("counter", "{}")))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for w in workers {
            assert!(w.join().unwrap().iter().all(|c| c == "1"));
        }
        assert!(
            !spinner.is_finished(),
            "the spinning call should still be running"
        );
        assert_eq!(
            runtime_kind(&spinner.join().unwrap()),
            RuntimeErrorKind::Deadline
        );
    });
    assert_healthy();
}

fn install_err(dir: &Path) -> String {
    let f = fixture();
    plugins::install(&f.home, &f.sandbox, dir)
        .unwrap_err()
        .to_string()
}

#[test]
fn install_refuses_a_wrong_hash() {
    let f = fixture();
    let wasm = std::fs::read(common::adversary_wasm()).unwrap();
    let dir = common::plugin_folder(
        &f.root.join("src/badhash"),
        "badhash",
        &wasm,
        Some(&"ab".repeat(32)),
        "",
    );
    let err = install_err(&dir);
    assert!(err.contains("hash mismatch"), "{err}");
    assert!(!f.home.plugins.join("badhash").exists());
    assert_healthy();
}

#[test]
fn install_refuses_a_tool_name_collision() {
    let f = fixture();
    let wasm = std::fs::read(common::adversary_wasm()).unwrap();
    let dir = common::plugin_folder(&f.root.join("src/copycat"), "copycat", &wasm, None, "");
    let err = install_err(&dir);
    assert!(
        err.contains("tool name `") && err.contains("collides") && err.contains("adversary"),
        "{err}"
    );
    let dir = common::plugin_folder(&f.root.join("src/again"), "adversary", &wasm, None, "");
    assert!(install_err(&dir).contains("already installed"));
    assert_healthy();
}

#[test]
fn install_refuses_unknown_imports_bad_manifests_and_bad_schemas() {
    let f = fixture();
    let evil = wat::parse_str(
        r#"(component (import "evil:net/raw@1.0.0" (instance (export "open" (func)))))"#,
    )
    .unwrap();
    let dir = common::plugin_folder(&f.root.join("src/evil"), "evil", &evil, None, "");
    let err = install_err(&dir);
    assert!(
        err.contains("`evil:net/raw@1.0.0`") && err.contains("does not provide"),
        "{err}"
    );

    let bad_schema = common::build_guest(
        &corral_test_support::manifest_dir(env!("CARGO_MANIFEST_DIR"))
            .join("tests/guests/bad-schema"),
        "bad_schema.wasm",
    );
    let wasm = std::fs::read(bad_schema).unwrap();
    let dir = common::plugin_folder(
        &f.root.join("src/bad-schema"),
        "bad-schema",
        &wasm,
        None,
        "",
    );
    let err = install_err(&dir);
    assert!(
        err.contains("`broken_tool` has an unusable input schema")
            && err.contains("not a valid JSON Schema"),
        "{err}"
    );
    assert!(!f.home.plugins.join("bad-schema").exists());

    let dir = common::plugin_folder(&f.root.join("src/junk"), "junk", b"not wasm", None, "");
    assert!(install_err(&dir).contains("not a valid WebAssembly component"));

    let dir = common::plugin_folder(&f.root.join("src/badtoml"), "badtoml", b"x", None, "");
    std::fs::write(dir.join("plugin.toml"), "id = [").unwrap();
    assert!(install_err(&dir).contains("does not parse"));
    assert_healthy();
}
