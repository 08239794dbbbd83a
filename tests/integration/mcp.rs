//! MCP on the real binary, with real peers: corral's client talking to a published server from
//! PyPI (`mcp-server-time`) and to corral's own `corral mcp serve` (the sandboxed calculator,
//! reached over MCP as `corral__calculator`); the official Python `mcp` client driving
//! `corral mcp serve`; the `ask` policy MCP tools get by default; and servers that cannot start,
//! never answer, crash in a call or stall in one (an SDK-built server that misbehaves on purpose).

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Instant;

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

/// A program of the fixtures' client venv (`mcp-server-time`, `python`).
fn venv_bin(name: &str) -> PathBuf {
    let path = corral_tests::fixtures_dir().join("clients/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `python3 scripts/fixtures.py` (make test does)",
        path.display()
    );
    path
}

/// A script of `tests/clients/`.
fn client_script(name: &str) -> PathBuf {
    corral_test_support::manifest_dir(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(name)
}

/// The published time server, with its local zone fixed so answers do not depend on the host.
fn time_server(local_zone: &str) -> Value {
    json!({"command": venv_bin("mcp-server-time"), "args": ["--local-timezone", local_zone]})
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
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

#[test]
fn corrals_client_uses_the_published_time_server() {
    let home = Home::new();
    let config = mcp_config(&home, json!({"time": time_server("UTC")}));
    let listed = corral(&home, &["tools", "list", "--mcp-config", &config]);
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{}", stderr_of(&listed));
    assert!(
        listing.contains("time (MCP server, runs outside the sandbox)"),
        "{listing}"
    );
    for tool in ["time__get_current_time", "time__convert_time"] {
        assert!(listing.contains(tool), "{tool} not listed: {listing}");
    }

    let call = |name: &str, args: &str| {
        corral(
            &home,
            &["tools", "call", "--mcp-config", &config, name, args],
        )
    };
    let out = call("time__get_current_time", r#"{"timezone": "Asia/Kolkata"}"#);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let now: Value = serde_json::from_slice(&out.stdout).expect("the server answers JSON");
    assert_eq!(now["timezone"], "Asia/Kolkata");
    assert!(
        now["datetime"].as_str().unwrap().ends_with("+05:30"),
        "{now}"
    );

    let out = call(
        "time__convert_time",
        r#"{"source_timezone": "Europe/Paris", "time": "16:30", "target_timezone": "Asia/Tokyo"}"#,
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let converted: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(converted["target"]["timezone"], "Asia/Tokyo");
    assert!(
        converted["target"]["datetime"]
            .as_str()
            .unwrap()
            .contains("T00:30:00+09:00")
            || converted["target"]["datetime"]
                .as_str()
                .unwrap()
                .contains("T23:30:00+09:00"),
        "16:30 in Paris is 00:30 (winter) or 23:30 (summer) in Tokyo: {converted}"
    );

    // The server's own refusal is a tool error naming the bad value.
    let out = call("time__get_current_time", r#"{"timezone": "Mars/Olympus"}"#);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("Mars/Olympus"),
        "{}",
        stderr_of(&out)
    );
    // Arguments against its inputSchema never reach it: corral's registry refuses them.
    let out = call("time__get_current_time", r#"{"zone": "UTC"}"#);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr_of(&out).contains("timezone"), "{}", stderr_of(&out));
}

#[test]
fn the_agent_calls_the_published_time_server() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let home = Home::new();
    let config = mcp_config(&home, json!({"time": time_server("UTC")}));
    let mut args = TASK.to_vec();
    args.extend([
        "--yes",
        "--mcp-config",
        &config,
        "--tools",
        "time__get_current_time",
        "What time is it now?",
    ]);
    let out = corral(&home, &args);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let seen = events(&out);
    let results: Vec<&Value> = seen
        .iter()
        .filter(|e| e["type"] == "tool_result" && e["name"] == "time__get_current_time")
        .collect();
    assert!(!results.is_empty(), "no result of the time tool: {seen:?}");
    // Each call reached the server: it answered the time, or refused a zone the small model
    // made up (its own words, passed back to the model).
    for result in results {
        let content = result["content"].as_str().unwrap();
        if result["ok"] == true {
            let answer: Value = serde_json::from_str(content).unwrap();
            assert!(answer["datetime"].is_string(), "{answer}");
        } else {
            assert!(content.contains("Invalid timezone"), "{result}");
        }
    }
}

#[test]
fn the_python_mcp_client_drives_corrals_mcp_server() {
    let home = Home::new();
    let output = Command::new(venv_bin("python"))
        .arg(client_script("mcp_client.py"))
        .arg(corral_tests::corral_bin())
        .env("CORRAL_HOME", home.path())
        .env("CORRAL_BUILTIN_PLUGINS", builtins())
        .output()
        .expect("run the MCP client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the MCP client failed: {}\n{stdout}",
        stderr_of(&output)
    );
    let seen: Value = serde_json::from_str(stdout.trim()).expect("the client prints JSON");
    eprintln!("mcp client saw: {seen:#}");
    assert_eq!(seen["server"], "corral");
    assert_eq!(seen["good"]["text"], "7006652");
    assert_eq!(seen["unknown"]["code"], -32602);
    let tools = seen["tools"].as_array().unwrap();
    assert!(tools.iter().any(|t| t == "calculator"), "{seen}");
    // Tools that need a grant the user did not give are not offered.
    assert!(!tools.iter().any(|t| t == "files"), "{seen}");
}

#[test]
fn servers_that_fail_stall_or_crash_never_take_corral_down() {
    let home = Home::new();
    let unruly = client_script("mcp_unruly_server.py");
    let python = venv_bin("python");
    let config = mcp_config(
        &home,
        json!({
            "unruly": {"command": python, "args": [unruly], "tool_timeout_sec": 1.5},
            "silent": {"command": python, "args": [unruly, "--silent-start"],
                       "startup_timeout_sec": 2},
            "badzone": time_server("Mars/Olympus"),
        }),
    );
    let call = |name: &str, args: &str| {
        let started = Instant::now();
        let out = corral(
            &home,
            &["tools", "call", "--mcp-config", &config, name, args],
        );
        (out, started.elapsed().as_secs_f64())
    };

    let (out, seconds) = call("unruly__echo", r#"{"text": "नमस्ते ✓"}"#);
    let stderr = stderr_of(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "नमस्ते ✓");
    // The silent server costs its own timeout once, while the others start.
    assert!(
        stderr.contains(
            "warning: MCP server `silent`: did not answer `initialize` and `tools/list` within 2 s"
        ),
        "{stderr}"
    );
    assert!(seconds < 15.0, "starting took {seconds:.1} s");
    // A server that exits at once is explained by what it said on stderr.
    assert!(
        stderr.contains("warning: MCP server `badzone`")
            && stderr.contains("invalid --local-timezone 'Mars/Olympus'"),
        "{stderr}"
    );

    let (out, _) = call("unruly__crash", "{}");
    assert_eq!(out.status.code(), Some(1));
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("MCP server `unruly` failed") && stderr.contains("crashing on purpose"),
        "{stderr}"
    );

    let (out, seconds) = call("unruly__stall", "{}");
    assert_eq!(out.status.code(), Some(1));
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("MCP server `unruly` did not answer within 1.5 s"),
        "{stderr}"
    );
    assert!(seconds < 15.0, "a stalled call took {seconds:.1} s");
    // Servers do not outlive the corral that started them, the stalled and silent ones included.
    let script = unruly.to_str().unwrap().to_owned();
    let lingering = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .filter(|cmdline| String::from_utf8_lossy(cmdline).contains(&script))
            .count()
    };
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    while lingering() > 0 && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(lingering(), 0, "MCP servers outlived corral");

    // A bad timeout is a usage error naming the key.
    let bad = mcp_config(&home, json!({"t": {"command": "x", "tool_timeout_sec": 0}}));
    let out = corral(&home, &["tools", "list", "--mcp-config", &bad]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("tool_timeout_sec"),
        "{}",
        stderr_of(&out)
    );
}
