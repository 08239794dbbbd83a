//! `scripts/setup.sh --plan ROOT`: what the set-up script decides to install, against fake roots.
//!
//! Regression (hardening issue): a root whose only clang library was `libclang-cpp.so.14` (not
//! libclang) was taken to have libclang, so `libclang-dev` was never installed and bindgen failed
//! on a fresh machine; and a root without Rust must plan rustup itself.

use std::path::Path;
use std::process::Command;

const PACKAGES: &[&str] = &[
    "cmake",
    "libclang-dev",
    "g++",
    "make",
    "python3",
    "python3-venv",
    "curl",
    "ca-certificates",
    "tmux",
    "fonts-dejavu-core",
];

fn script() -> std::path::PathBuf {
    corral_test_support::manifest_dir(env!("CARGO_MANIFEST_DIR")).join("../scripts/setup.sh")
}

/// The script's plan for `root`, one item a line.
fn plan(root: &Path) -> Vec<String> {
    let out = Command::new("bash")
        .arg(script())
        .arg("--plan")
        .arg(root)
        .env("HOME", "/root")
        .env_remove("CARGO_HOME")
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "setup.sh --plan failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A dpkg status database listing `installed` as installed.
fn dpkg_status(root: &Path, installed: &[&str]) {
    let stanzas: String = installed
        .iter()
        .map(|p| {
            format!(
                "Package: {p}\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\n\n"
            )
        })
        .collect();
    write(root, "var/lib/dpkg/status", &stanzas);
}

/// A stand-in `rustup` under the root's `~/.cargo/bin` that knows `toolchains` and `targets`.
fn fake_rustup(root: &Path, toolchains: &str, targets: &str) {
    let script = format!(
        "#!/bin/sh\ncase \"$1\" in\n  toolchain) printf '{toolchains}' ;;\n  target) printf '{targets}' ;;\nesac\n"
    );
    write(root, "root/.cargo/bin/rustup", &script);
    let path = root.join("root/.cargo/bin/rustup");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn pinned_toolchain() -> String {
    let text = std::fs::read_to_string(
        corral_test_support::manifest_dir(env!("CARGO_MANIFEST_DIR"))
            .join("../rust-toolchain.toml"),
    )
    .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("channel = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("rust-toolchain.toml pins a channel")
        .to_owned()
}

#[test]
fn an_empty_root_plans_every_package_and_rustup() {
    let root = tempfile::tempdir().unwrap();
    let mut want: Vec<String> = PACKAGES.iter().map(|s| s.to_string()).collect();
    want.extend([
        "rustup".to_owned(),
        format!("toolchain {}", pinned_toolchain()),
        "wasm32-wasip2".to_owned(),
    ]);
    assert_eq!(plan(root.path()), want);
}

#[test]
fn libclang_cpp_alone_is_not_libclang() {
    let root = tempfile::tempdir().unwrap();
    let mut installed: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| *p != "libclang-dev")
        .collect();
    installed.push("libclang-cpp14");
    dpkg_status(root.path(), &installed);
    write(root.path(), "usr/lib/llvm-14/lib/libclang-cpp.so.14", "");
    write(
        root.path(),
        "usr/lib/x86_64-linux-gnu/libclang-cpp.so.14",
        "",
    );
    fake_rustup(
        root.path(),
        &format!("{}-x86_64-unknown-linux-gnu\\n", pinned_toolchain()),
        "wasm32-wasip2\\n",
    );
    assert_eq!(plan(root.path()), ["libclang-dev"]);
}

#[test]
fn a_complete_root_plans_nothing_and_a_missing_target_alone() {
    let root = tempfile::tempdir().unwrap();
    dpkg_status(root.path(), PACKAGES);
    write(root.path(), "usr/lib/llvm-14/lib/libclang.so.1", "");
    let toolchain = format!("{}-x86_64-unknown-linux-gnu\\n", pinned_toolchain());
    fake_rustup(
        root.path(),
        &toolchain,
        "wasm32-wasip2\\nx86_64-unknown-linux-gnu\\n",
    );
    assert_eq!(plan(root.path()), Vec::<String>::new());

    fake_rustup(root.path(), &toolchain, "x86_64-unknown-linux-gnu\\n");
    assert_eq!(plan(root.path()), ["wasm32-wasip2"]);

    fake_rustup(root.path(), "stable-x86_64-unknown-linux-gnu\\n", "");
    assert_eq!(
        plan(root.path()),
        [
            format!("toolchain {}", pinned_toolchain()),
            "wasm32-wasip2".to_owned()
        ]
    );
}

#[test]
fn a_package_dpkg_lists_as_removed_is_planned() {
    let root = tempfile::tempdir().unwrap();
    dpkg_status(root.path(), PACKAGES);
    let status = std::fs::read_to_string(root.path().join("var/lib/dpkg/status")).unwrap();
    let status = status.replacen(
        "Package: cmake\nStatus: install ok installed",
        "Package: cmake\nStatus: deinstall ok config-files",
        1,
    );
    write(root.path(), "var/lib/dpkg/status", &status);
    write(root.path(), "usr/lib/x86_64-linux-gnu/libclang-14.so.1", "");
    fake_rustup(
        root.path(),
        &format!("{}-x86_64-unknown-linux-gnu\\n", pinned_toolchain()),
        "wasm32-wasip2\\n",
    );
    assert_eq!(plan(root.path()), ["cmake"]);
}
