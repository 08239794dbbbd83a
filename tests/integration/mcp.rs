//! MCP on the real binary: corral's client talking to corral's own `corral mcp serve` (the
//! sandboxed calculator, reached over MCP as `corral__calculator`), the `ask` policy MCP tools
//! get by default, and a server that cannot start.

use std::process::Output;

use serde_json::{json, Value};

use crate::engine::ONE_AT_A_TIME;
use crate::tools_cli::{builtins, Home};

fn corral(home: &Home, args: &[&str]) -> Output {
    let home_dir = home.path().to_str().unwrap();
    let env = [
        ("CORRAL_HOME", home_dir),
        ("CORRAL_BUILTIN_PLUGINS", builtins().to_str().unwrap()),
    ];
    corral_tests::corral_output(args, &env, None)
}

/// An `--mcp-config` file with `servers`, written into `home`.
fn mcp_config(home: &Home, servers: Value) -> String {
    let path = home.path().join("mcp.json");
    std::fs::write(&path, json!({"mcpServers": servers}).to_string()).unwrap();
    path.to_str().unwrap().to_owned()
}

/// corral's own MCP server, with the same plugin home.
fn corral_server(home: &Home) -> Value {
    json!({"command": corral_tests::corral_bin(), "args": ["mcp", "serve"],
           "env": {"CORRAL_HOME": home.path(), "CORRAL_BUILTIN_PLUGINS": builtins()}})
}

fn events(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

const TASK: &[&str] = &[
    "run",
    "--threads",
    "2",
    "--ctx",
    "2048",
    "--json",
    "--tool-choice",
    "required",
    "--max-steps",
    "2",
    "--max-tokens",
    "64",
];

#[test]
fn corrals_client_calls_corrals_mcp_server_through_the_registry() {
    let home = Home::new();
    let config = mcp_config(&home, json!({"corral": corral_server(&home)}));
    let call = |args: &str| {
        corral(
            &home,
            &[
                "tools",
                "call",
                "--mcp-config",
                &config,
                "corral__calculator",
                args,
            ],
        )
    };
    let out = call(r#"{"expression": "1234 * 5678"}"#);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "7006652");
    // The server's own tool error comes back as a tool error.
    let out = call(r#"{"expression": ""}"#);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ends too early"));
    // Arguments are checked against the MCP tool's inputSchema by corral's registry first.
    let out = call(r#"{"expression": 42}"#);
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("expression"), "{stderr}");
}

#[test]
fn an_mcp_tool_asks_first_and_is_denied_without_a_terminal() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let home = Home::new();
    let config = mcp_config(&home, json!({"corral": corral_server(&home)}));
    // Without --yes and without a terminal, a tool from an MCP server is denied: it runs
    // outside the sandbox, so its policy is `ask` unless the user named it.
    let mut args = TASK.to_vec();
    args.extend([
        "--mcp-config",
        &config,
        "--tools",
        "corral__calculator",
        "What is 1234 * 5678?",
    ]);
    let out = corral(&home, &args);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let denied = events(&out);
    assert!(
        denied
            .iter()
            .any(|e| e["type"] == "tool_call" && e["name"] == "corral__calculator"),
        "{denied:?}"
    );
}

#[test]
fn a_server_that_cannot_start_is_a_warning_and_the_rest_works() {
    let home = Home::new();
    let config = mcp_config(
        &home,
        json!({"gone": {"command": "/nonexistent/mcp-server"}, "quits": {"command": "false"}}),
    );
    let out = corral(
        &home,
        &[
            "tools",
            "call",
            "--mcp-config",
            &config,
            "calculator",
            r#"{"expression": "6 * 7"}"#,
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    assert!(
        stderr.contains("warning: MCP server `gone`: cannot start"),
        "{stderr}"
    );
    assert!(stderr.contains("warning: MCP server `quits`"), "{stderr}");

    // A malformed file is a usage error naming what it lacks.
    let bad = home.path().join("bad.json");
    std::fs::write(&bad, "{\"servers\": {}}").unwrap();
    let out = corral(&home, &["run", "--mcp-config", bad.to_str().unwrap(), "hi"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mcpServers"));
}
