//! Loading components: what the host refuses before anything runs (inline WAT guests).

use corral_sandbox::{ErrorKind, PoolConfig, Sandbox, SandboxConfig};

fn sandbox() -> Sandbox {
    Sandbox::new(SandboxConfig {
        pool: Some(PoolConfig::default()),
        ..SandboxConfig::default()
    })
    .unwrap()
}

fn load_err(wat: &str) -> corral_sandbox::Error {
    sandbox().load(wat.as_bytes()).unwrap_err()
}

#[test]
fn unknown_interfaces_are_refused_by_name() {
    let err =
        load_err(r#"(component (import "evil:net/raw@1.0.0" (instance (export "open" (func)))))"#);
    assert_eq!(err.kind(), ErrorKind::UnsupportedImport);
    assert!(err.to_string().contains("`evil:net/raw@1.0.0`"), "{err}");
    // A plain function import outside any interface is refused too.
    let err = load_err(r#"(component (import "spawn-process" (func)))"#);
    assert_eq!(err.kind(), ErrorKind::UnsupportedImport);
    assert!(err.to_string().contains("spawn-process"), "{err}");
}

#[test]
fn a_wasi_interface_with_the_wrong_shape_is_refused() {
    let err = load_err(
        r#"(component (import "wasi:cli/environment@0.2.0" (instance (export "launch-missiles" (func)))))"#,
    );
    assert_eq!(err.kind(), ErrorKind::UnsupportedImport, "{err}");
}

#[test]
fn bytes_that_are_not_a_component_are_refused() {
    assert_eq!(
        sandbox().load(b"\0asm garbage").unwrap_err().kind(),
        ErrorKind::Compile
    );
    // A core module is not a component.
    assert_eq!(load_err("(module)").kind(), ErrorKind::Compile);
}

#[test]
fn a_component_without_the_tool_export_is_refused() {
    let err = load_err("(component)");
    assert_eq!(err.kind(), ErrorKind::MissingExport);
    assert!(err.to_string().contains("corral:tool/tool@0.1.0"), "{err}");
}

#[test]
fn the_engine_also_runs_without_the_pool() {
    let s = Sandbox::new(SandboxConfig::default()).unwrap();
    assert_eq!(
        s.load(b"(component)").unwrap_err().kind(),
        ErrorKind::MissingExport
    );
}
