//! `corral run`: one task with tools on the real default model, and its exit codes.

use crate::engine::ONE_AT_A_TIME;
use crate::tools_cli::Home;
use serde_json::Value;

fn run(home: &Home, args: &[&str]) -> (i32, Vec<Value>, String) {
    let mut all = vec!["run", "--threads", "1", "--ctx", "2048"];
    all.extend_from_slice(args);
    let out = home.corral(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let events = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (
        out.status.code().unwrap_or(-1),
        events,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

#[test]
fn the_default_model_calls_the_calculator_and_answers() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let home = Home::new();
    let (code, events, stderr) = run(
        &home,
        &[
            "--json",
            "--tools",
            "calculator",
            "--tool-choice",
            "required",
            "What is 1234 * 5678?",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let calls = of_type(&events, "tool_call");
    assert!(!calls.is_empty(), "{events:?}");
    assert!(calls.iter().all(|c| c["name"] == "calculator"), "{calls:?}");
    let results = of_type(&events, "tool_result");
    assert_eq!(results.len(), calls.len());
    assert!(
        results
            .iter()
            .any(|r| r["ok"] == true && r["content"].as_str().unwrap().contains("7006652")),
        "{results:?}"
    );
    assert_eq!(results[0]["id"], calls[0]["id"]);
    let finished = of_type(&events, "turn_finished");
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["stop"], "answered");
    assert_eq!(finished[0]["steps"], 2);
    assert!(
        finished[0]["reused_tokens"].as_u64().unwrap() > 0,
        "step 2 reuses step 1's cache"
    );
    assert_eq!(events.last().unwrap()["type"], "turn_finished");
}

#[test]
fn the_step_limit_exits_3() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let home = Home::new();
    let (code, events, stderr) = run(
        &home,
        &[
            "--json",
            "--tools",
            "calculator",
            "--tool-choice",
            "required",
            "--max-steps",
            "1",
            "What is 2 + 2?",
        ],
    );
    assert_eq!(code, 3, "{stderr}");
    let finished = of_type(&events, "turn_finished");
    assert_eq!(finished[0]["stop"], "step_limit");
    // Every call that was made has its result.
    assert_eq!(
        of_type(&events, "tool_call").len(),
        of_type(&events, "tool_result").len()
    );
}

#[test]
fn bad_flags_are_usage_errors_before_any_model_loads() {
    let home = Home::new();
    for (args, needle) in [
        (
            vec!["--tools", "nope", "x"],
            "no tool named `nope` is installed",
        ),
        (
            vec!["--tool-choice", "sometimes", "x"],
            "--tool-choice sometimes",
        ),
        (
            vec!["--max-steps", "0", "x"],
            "--max-steps must be at least 1",
        ),
        (
            vec!["--call-timeout", "0", "x"],
            "--call-timeout must be a positive number of seconds, got 0",
        ),
        (
            vec!["--call-timeout=-1", "x"],
            "--call-timeout must be a positive number of seconds, got -1",
        ),
        (vec![" "], "the task is empty"),
    ] {
        let (code, events, stderr) = run(&home, &args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(events.is_empty());
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn a_tool_that_asks_is_denied_without_a_terminal_and_runs_with_yes() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let home = Home::new();
    let src = tempfile::TempDir::new().unwrap();
    let dir = crate::tools_cli::example_plugin(src.path());
    let installed = home.corral(&["tools", "install", dir.to_str().unwrap()]);
    assert!(installed.status.success(), "{installed:?}");
    let task = [
        "--json",
        "--tools",
        "word_count",
        "--tool-choice",
        "required",
        "How many words are in: one two three",
    ];
    // An installed (not builtin) tool asks; stdin is not a terminal, so it is denied.
    let (code, events, stderr) = run(&home, &task);
    assert_eq!(code, 4, "{stderr}");
    let results = of_type(&events, "tool_result");
    assert!(!results.is_empty(), "{events:?}");
    assert!(results.iter().all(|r| r["ok"] == false), "{results:?}");
    assert!(results[0]["content"].as_str().unwrap().contains("denied"));
    assert_eq!(of_type(&events, "turn_finished")[0]["stop"], "denied");

    let mut approved = vec!["--yes"];
    approved.extend_from_slice(&task);
    let (code, events, stderr) = run(&home, &approved);
    assert_eq!(code, 0, "{stderr}");
    let results = of_type(&events, "tool_result");
    assert!(results.iter().any(|r| r["ok"] == true), "{results:?}");
}
