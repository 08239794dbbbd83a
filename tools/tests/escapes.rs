//! Regressions for the sandbox-escape review: each test is named after the case that got out
//! (or hung, or went uncapped) and fails on the code before the fix. Guests: the adversary
//! (`tests/guests/adversary`) and `tests/guests/shifty`, whose declared tools follow the wall
//! clock, which these tests inject.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use corral_sandbox::{CacheOutcome, Sandbox, SandboxConfig};
use corral_tools::plugins::{self, Home};
use corral_tools::{ErrorKind, Registry};
use tempfile::TempDir;

/// Deadline of the guests' calls here.
const DEADLINE_MS: u64 = 1000;

fn shifty_wasm() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        common::build_guest(
            &corral_test_support::manifest_dir(env!("CARGO_MANIFEST_DIR"))
                .join("tests/guests/shifty"),
            "shifty.wasm",
        )
    })
}

/// One corral home in a temp folder, a sandbox whose guests read `clock` (seconds), and the
/// plugin sources.
struct Lab {
    tmp: TempDir,
    home: Home,
    clock: Arc<AtomicU64>,
    sandbox: Sandbox,
}

impl Lab {
    fn new() -> Lab {
        let tmp = TempDir::new().unwrap();
        let home = Home::at(&tmp.path().join("home"));
        let clock = Arc::new(AtomicU64::new(1_000));
        let seen = clock.clone();
        let sandbox = Sandbox::new(SandboxConfig {
            wall_clock: Some(Arc::new(move || {
                UNIX_EPOCH + Duration::from_secs(seen.load(Ordering::SeqCst))
            })),
            ..SandboxConfig::with_cache(&home.cache)
        })
        .unwrap();
        Lab {
            tmp,
            home,
            clock,
            sandbox,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn set_clock(&self, secs: u64) {
        self.clock.store(secs, Ordering::SeqCst);
    }

    /// Installs `wasm` as plugin `id` asking for `caps` (TOML of `[capabilities]` entries).
    fn install(&self, id: &str, wasm: &[u8], caps: &str) -> plugins::LoadedPlugin {
        let extra = format!("[capabilities]\n{caps}\n[limits]\ndeadline_ms = {DEADLINE_MS}\n");
        let src = common::plugin_folder(&self.path(&format!("src/{id}")), id, wasm, None, &extra);
        plugins::install(&self.home, &self.sandbox, &src).unwrap()
    }

    fn grants(&self, text: &str) {
        std::fs::write(&self.home.grants, text).unwrap();
    }

    /// Grants `plugin` (bound to its component) the folders `(host, guest, mode)`.
    fn grant_dirs(&self, plugin: &plugins::LoadedPlugin, dirs: &[(&Path, &str, &str)]) {
        let dirs: Vec<String> = dirs
            .iter()
            .map(|(host, guest, mode)| {
                format!(
                    "{{ host = \"{}\", guest = \"{guest}\", mode = \"{mode}\" }}",
                    host.display()
                )
            })
            .collect();
        self.grants(&format!(
            "[plugins.{}]\nsha256 = \"{}\"\ndirs = [{}]\n",
            plugin.manifest.id,
            plugin.manifest.sha256,
            dirs.join(", ")
        ));
    }

    fn registry(&self) -> (Registry, Vec<String>) {
        let (reg, problems) =
            plugins::registry_with_env(&self.home, &self.sandbox, &|_| None).unwrap();
        (reg, problems.iter().map(ToString::to_string).collect())
    }
}

fn adversary() -> Vec<u8> {
    std::fs::read(common::adversary_wasm()).unwrap()
}

fn shifty() -> Vec<u8> {
    std::fs::read(shifty_wasm()).unwrap()
}

fn read(reg: &Registry, path: &str) -> String {
    common::text(&reg.call("read", &serde_json::json!({ "path": path }).to_string()))
}

fn dirs_caps() -> &'static str {
    r#"dirs = [{ guest = "/w", mode = "rw" }, { guest = "/ro", mode = "ro" }]"#
}

/// Item 1: rw on `N` as `/w`, ro on `N/inner` as `/ro`; call 1 swaps `inner` for a symlink to
/// `outside`, call 2 read `/ro/secret.txt` from the never-granted folder. Now the nested grant
/// is refused, and a grant that is pinned survives any swap of its name.
#[test]
fn nested_grant_swapped_for_a_symlink() {
    let lab = Lab::new();
    let wasm = adversary();
    let p = lab.install("adversary", &wasm, dirs_caps());
    let (n, outside) = (lab.path("N"), lab.path("outside"));
    std::fs::create_dir_all(n.join("inner")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(n.join("inner/readme.txt"), "inner").unwrap();
    std::fs::write(outside.join("secret.txt"), "top secret").unwrap();
    let grant = |w: &Path, ro: &Path| lab.grant_dirs(&p, &[(w, "/w", "rw"), (ro, "/ro", "ro")]);
    // The nested layout is refused as a whole.
    grant(&n, &n.join("inner"));
    let (reg, problems) = lab.registry();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("lies inside") && p.contains("may write")),
        "{problems:?}"
    );
    assert!(read(&reg, "/ro/readme.txt").starts_with("denied"));

    // Side by side, and the read-only folder pinned: swapping its name (here from outside the
    // sandbox, as a plugin with rw on its parent did) changes nothing for the next call.
    let (w, ro) = (lab.path("W"), lab.path("RO"));
    std::fs::create_dir_all(&w).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(ro.join("readme.txt"), "granted").unwrap();
    grant(&w, &ro);
    let (reg, problems) = lab.registry();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(read(&reg, "/ro/readme.txt"), r#"ok: "granted""#);
    std::fs::rename(&ro, lab.path("RO-moved")).unwrap();
    std::os::unix::fs::symlink(&outside, &ro).unwrap();
    assert_eq!(read(&reg, "/ro/readme.txt"), r#"ok: "granted""#);
    assert!(read(&reg, "/ro/secret.txt").starts_with("denied"));
    // A registry built now refuses the grant: its path is a symlink.
    let (reg, problems) = lab.registry();
    assert!(
        problems.iter().any(|p| p.contains("is a symbolic link")),
        "{problems:?}"
    );
    assert!(read(&reg, "/ro/secret.txt").starts_with("denied"));
}

/// Items 2 and 6: a plugin whose `list-tools` follows the clock passed the install check with
/// one set of names, later listed `echo` (another plugin's) and took its calls; and a spinning
/// `list-tools` slowed every start. Now only the list recorded at install is used, starts never
/// run `list-tools`, and `verify` refuses the plugin loudly.
#[test]
fn tool_shadowing_by_a_changing_tool_list() {
    let lab = Lab::new();
    lab.install("adversary", &adversary(), "");
    lab.install("shifty", &shifty(), "");
    lab.set_clock(1_500_000_000);
    let (reg, problems) = lab.registry();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(reg.source_of("echo"), Some("adversary"));
    assert_eq!(
        common::text(&reg.call("echo", r#"{"text":"mine"}"#)),
        r#"{"text":"mine"}"#
    );
    let shifty_tools: Vec<&str> = reg
        .specs()
        .filter(|(_, src)| *src == "shifty")
        .map(|(s, _)| s.name.as_str())
        .collect();
    assert_eq!(shifty_tools, ["ansi", "flood", "hoard", "shifty_echo"]);
    let verdicts = plugins::verify(&lab.home, &lab.sandbox);
    let shifty = verdicts
        .iter()
        .find(|(dir, _)| dir.ends_with("shifty"))
        .expect("shifty verified");
    let err = shifty.1.as_ref().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused);
    assert!(
        err.to_string().contains("now lists different tools") && err.to_string().contains("echo"),
        "{err}"
    );
    // In the era where `list-tools` spins, loading still works: it never runs.
    lab.set_clock(2_500_000_000);
    let (reg, problems) = lab.registry();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(common::text(&reg.call("shifty_echo", "{}")), "shifty");
}

/// Item 2: a name collision at load is an error naming both plugins, never settled by order.
#[test]
fn a_tool_name_collision_at_load_is_an_error() {
    let lab = Lab::new();
    let builtin = lab.path("builtin");
    let wasm = adversary();
    for id in ["first", "second"] {
        let dir = common::plugin_folder(&builtin.join(id), id, &wasm, None, "");
        plugins::record_dir(&lab.sandbox, &dir).unwrap();
    }
    let mut home = lab.home.clone();
    home.builtin = vec![builtin];
    let err = plugins::registry(&home, &lab.sandbox).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused);
    assert!(
        err.to_string()
            .contains("`first` and `second` both provide"),
        "{err}"
    );
}

/// Items 2 and 8: a record that does not match the component is refused, never trusted.
#[test]
fn a_record_for_another_component_is_refused() {
    let lab = Lab::new();
    let p = lab.install("adversary", &adversary(), "");
    let record = p.dir.join("tools.json");
    let text = std::fs::read_to_string(&record).unwrap();
    std::fs::write(&record, text.replace(&p.manifest.sha256, &"0".repeat(64))).unwrap();
    let (reg, problems) = lab.registry();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("the component changed after it was recorded")),
        "{problems:?}"
    );
    assert!(!reg.contains("echo"));
}

/// Item 3: the compiled-component cache was trusted by file name; a planted artifact in a
/// folder others can write, a genuine artifact of another component swapped in (with its MAC),
/// and an artifact owned by another user are each refused, then recompiled, and calls work.
#[test]
fn an_unverified_native_code_cache() {
    use std::os::unix::fs::PermissionsExt;
    let lab = Lab::new();
    let (a, s) = (adversary(), shifty());
    let sha = |b: &[u8]| common::sha256_hex(b);
    assert_eq!(
        lab.sandbox.load(&a).unwrap().cache_outcome(),
        &CacheOutcome::Miss
    );
    assert_eq!(
        lab.sandbox.load(&s).unwrap().cache_outcome(),
        &CacheOutcome::Miss
    );
    let (a_art, s_art) = (
        lab.sandbox.cache_path(&sha(&a)).unwrap(),
        lab.sandbox.cache_path(&sha(&s)).unwrap(),
    );
    let mac = |p: &Path| PathBuf::from(format!("{}.mac", p.display()));
    let refused = |needle: &str| {
        let plugin = lab.sandbox.load(&a).unwrap();
        match plugin.cache_outcome() {
            CacheOutcome::Refused(why) => assert!(why.contains(needle), "{why}"),
            other => panic!("expected a refusal naming {needle:?}, got {other:?}"),
        }
        let names: Vec<String> = plugin
            .list_tools()
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert!(names.contains(&"echo".to_owned()), "{names:?}");
        assert!(
            !names.contains(&"hoard".to_owned()),
            "ran the swapped-in code: {names:?}"
        );
    };
    // Swapped: shifty's genuine artifact and MAC copied over the adversary's.
    std::fs::copy(&s_art, &a_art).unwrap();
    std::fs::copy(mac(&s_art), mac(&a_art)).unwrap();
    refused("does not match the MAC");
    assert_eq!(
        lab.sandbox.load(&a).unwrap().cache_outcome(),
        &CacheOutcome::Hit
    );
    // Owned by someone else (the tests run as root, as CI does, to be able to chown).
    rustix::fs::chown(&a_art, Some(rustix::process::Uid::from_raw(65534)), None)
        .expect("chown needs root: run the tests as root, as CI does");
    refused("owned by uid 65534");
    assert_eq!(
        lab.sandbox.load(&a).unwrap().cache_outcome(),
        &CacheOutcome::Hit
    );
    // Planted in a cache folder others can write.
    let dir = a_art.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(&a_art, b"planted native code").unwrap();
    refused("writable by other users");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    // Recompiled (a refused cache is never written) and still callable.
    refused("does not match the MAC");
    assert_eq!(
        lab.sandbox.load(&a).unwrap().cache_outcome(),
        &CacheOutcome::Hit
    );
}

/// Item 4: remove a granted plugin, install a different component under the same id, and it
/// inherited the folder grant. Now the grant names the component and the new one gets nothing.
#[test]
fn grants_follow_the_plugin_id_not_the_code() {
    let lab = Lab::new();
    let p = lab.install(
        "adversary",
        &adversary(),
        r#"dirs = [{ guest = "/ro", mode = "ro" }]"#,
    );
    let ro = lab.path("granted");
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(ro.join("readme.txt"), "granted").unwrap();
    lab.grant_dirs(&p, &[(&ro, "/ro", "ro")]);
    let (reg, problems) = lab.registry();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(read(&reg, "/ro/readme.txt"), r#"ok: "granted""#);
    plugins::remove(&lab.home, "adversary").unwrap();
    // A different component (same tools, one byte more: a custom section) under the same id.
    let mut other = adversary();
    other.extend_from_slice(&[0, 4, 3, b'p', b'a', b'd']);
    lab.install(
        "adversary",
        &other,
        r#"dirs = [{ guest = "/ro", mode = "ro" }]"#,
    );
    let (reg, problems) = lab.registry();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("changed since it was granted")),
        "{problems:?}"
    );
    assert!(read(&reg, "/ro/readme.txt").starts_with("denied"));
}

/// Item 5: a guest opening a FIFO was not stopped at its deadline (still running after 12 s).
/// Now the open is refused at once, and no call outlives twice its deadline.
#[test]
fn blocking_host_calls_outlive_the_deadline() {
    let lab = Lab::new();
    let p = lab.install(
        "adversary",
        &adversary(),
        r#"dirs = [{ guest = "/w", mode = "rw" }]"#,
    );
    let w = lab.path("workspace");
    std::fs::create_dir_all(&w).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        w.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    lab.grant_dirs(&p, &[(&w, "/w", "rw")]);
    let (reg, problems) = lab.registry();
    assert!(problems.is_empty(), "{problems:?}");
    let start = Instant::now();
    let got = read(&reg, "/w/fifo");
    assert!(
        got.starts_with("denied") && got.contains("ermission"),
        "{got}"
    );
    // Twice the deadline: the bound the review set; refusing takes milliseconds.
    assert!(
        start.elapsed() < Duration::from_millis(2 * DEADLINE_MS),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        common::text(&reg.call("write", r#"{"path": "/w/ok.txt", "content": "fine"}"#)),
        "ok: ()"
    );
}

/// Item 8: one call held 19,986 descriptors. Now a call holds at most `MAX_HANDLES` resources.
#[test]
fn a_call_cannot_hoard_descriptors() {
    let lab = Lab::new();
    let p = lab.install(
        "shifty",
        &shifty(),
        r#"dirs = [{ guest = "/w", mode = "ro" }]"#,
    );
    let w = lab.path("w");
    std::fs::create_dir_all(&w).unwrap();
    std::fs::write(w.join("f"), "x").unwrap();
    lab.grant_dirs(&p, &[(&w, "/w", "ro")]);
    let (reg, _) = lab.registry();
    let got = common::text(&reg.call("hoard", r#"{"path": "/w/f", "n": 5000}"#));
    let held: usize = got
        .strip_prefix("stopped at ")
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("expected the hoard to be stopped: {got}"));
    assert!(
        held < corral_sandbox::limits::MAX_HANDLES,
        "held {held} handles"
    );
    assert_eq!(
        common::text(&reg.call("hoard", r#"{"path": "/w/f", "n": 10}"#)),
        "held 10"
    );
}

/// Item 8: one call wrote 300 MB into an rw grant in 0.17 s. Now a call writes at most its
/// write limit (16 MiB by default) to files, by stream or by positioned writes, and the guest
/// sees the write fail (no space left for positioned writes, an I/O error for streams).
#[test]
fn a_call_cannot_write_without_limit() {
    let lab = Lab::new();
    let p = lab.install(
        "shifty",
        &shifty(),
        r#"dirs = [{ guest = "/w", mode = "rw" }]"#,
    );
    let w = lab.path("w");
    std::fs::create_dir_all(&w).unwrap();
    lab.grant_dirs(&p, &[(&w, "/w", "rw")]);
    let (reg, _) = lab.registry();
    let limit = corral_sandbox::limits::DEFAULT_WRITE_BYTES;
    for (file, at) in [("stream", false), ("positioned", true)] {
        let args = serde_json::json!({ "path": format!("/w/{file}"), "mib": 300, "at": at });
        let got = common::text(&reg.call("flood", &args.to_string()));
        assert!(
            got.starts_with(&format!("stopped at {limit}:")),
            "{file}: {got}"
        );
        let why = if at { "No space left" } else { "I/O error" };
        assert!(got.contains(why), "{file}: {got}");
        let size = std::fs::metadata(w.join(file)).unwrap().len();
        assert_eq!(size, limit, "{file}: what fits is written, nothing more");
    }
    // A guest that traps on the refused write is reported as stopped by its write limit.
    let args = serde_json::json!({ "path": "/w/panic", "mib": 300, "panic": true });
    match reg.call("flood", &args.to_string()) {
        Err(corral_tools::CallError::Runtime(e)) => {
            assert_eq!(e.kind, corral_tools::RuntimeErrorKind::WriteLimit, "{e}");
            assert!(e.to_string().contains(&format!("{limit} bytes")), "{e}");
        }
        other => panic!("expected the write limit to stop the call: {other:?}"),
    }
    // The budget is per call: the next call starts with a fresh one.
    let args = serde_json::json!({ "path": "/w/small", "mib": 1 });
    assert_eq!(
        common::text(&reg.call("flood", &args.to_string())),
        "wrote 1048576"
    );
}

/// Item 8: the write limit is grantable like the others, up to what the plugin asked.
#[test]
fn a_granted_write_limit_raises_the_cap() {
    let lab = Lab::new();
    let extra = format!(
        "[capabilities]\ndirs = [{{ guest = \"/w\", mode = \"rw\" }}]\n\
         [limits]\ndeadline_ms = {DEADLINE_MS}\nwrite_mib = 20\n"
    );
    let src = common::plugin_folder(&lab.path("src/shifty"), "shifty", &shifty(), None, &extra);
    let p = plugins::install(&lab.home, &lab.sandbox, &src).unwrap();
    let w = lab.path("w");
    std::fs::create_dir_all(&w).unwrap();
    let grant = |mib: u64| {
        lab.grants(&format!(
            "[plugins.shifty]\nsha256 = \"{}\"\ndirs = [{{ host = \"{}\", guest = \"/w\", mode = \"rw\" }}]\n\
             limits = {{ write_mib = {mib} }}\n",
            p.manifest.sha256,
            w.display()
        ));
    };
    let flood = |mib: u64| {
        let (reg, _) = lab.registry();
        let args = serde_json::json!({ "path": "/w/f", "mib": mib });
        common::text(&reg.call("flood", &args.to_string()))
    };
    grant(64);
    assert_eq!(
        flood(20),
        format!("wrote {}", 20u64 << 20),
        "granted, and asked for"
    );
    assert!(
        flood(21).starts_with(&format!("stopped at {}:", 20u64 << 20)),
        "no more than asked"
    );
    grant(2);
    assert!(
        flood(3).starts_with(&format!("stopped at {}:", 2u64 << 20)),
        "a grant lowers it"
    );
}

/// Item 9 at the seam every front end uses: a tool's text comes back raw from the registry
/// (for the model, framing is the agent's job), and `strip_control` makes it safe to show.
#[test]
fn terminal_escapes_in_tool_output_are_stripped_for_display() {
    let lab = Lab::new();
    lab.install("shifty", &shifty(), "");
    let (reg, _) = lab.registry();
    let raw = common::text(&reg.call("ansi", "{}"));
    assert!(raw.contains('\u{1b}'));
    assert_eq!(corral_tools::sanitize::strip_control(&raw), "visible text");
}

/// The clock the guests see is the injected one (the tests above depend on it).
#[test]
fn guests_read_the_injected_clock() {
    let lab = Lab::new();
    lab.install("shifty", &shifty(), "");
    let plugin = lab.sandbox.load(&shifty()).unwrap();
    assert!(!plugin
        .list_tools()
        .unwrap()
        .iter()
        .any(|t| t.name == "echo"));
    lab.set_clock(1_500_000_000);
    assert!(plugin
        .list_tools()
        .unwrap()
        .iter()
        .any(|t| t.name == "echo"));
    assert!(SystemTime::now() > UNIX_EPOCH + Duration::from_secs(1_600_000_000));
}
