//! Scripted automation on the real default model: tasks from files and stdin, the system
//! prompt, `--timeout`, batches, recorded runs and their replay, and the config file.

use std::process::Output;

use serde_json::Value;

use crate::engine::ONE_AT_A_TIME;
use crate::tools_cli::Home;

const COMMON: &[&str] = &["--threads", "1", "--ctx", "2048"];

/// `corral ARGS` in `home` with `input` on stdin (closed when `None`) and extra env.
fn corral(home: &Home, args: &[&str], input: Option<&str>, env: &[(&str, &str)]) -> Output {
    let home_dir = home.path().to_str().unwrap();
    let builtins = crate::tools_cli::builtins().to_str().unwrap();
    let mut all = vec![
        ("CORRAL_HOME", home_dir),
        ("CORRAL_BUILTIN_PLUGINS", builtins),
    ];
    all.extend_from_slice(env);
    corral_tests::corral_output(args, &all, input)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn lines(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn finished(events: &[Value]) -> &Value {
    events
        .iter()
        .rev()
        .find(|e| e["type"] == "turn_finished")
        .expect("a turn_finished event")
}

fn run_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["run"];
    all.extend_from_slice(COMMON);
    all.extend_from_slice(extra);
    all
}

#[test]
fn the_task_comes_from_a_file_or_stdin_and_the_system_prompt_reaches_the_model() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let home = Home::new();
    let task = home.path().join("task.md");
    std::fs::write(&task, "Say hello in one word.\n").unwrap();
    let flags = ["--json", "--tools", "calculator", "--max-tokens", "8"];
    let mut from_file = run_args(&flags);
    from_file.extend(["--file", task.to_str().unwrap()]);
    let out = corral(&home, &from_file, None, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let by_file = finished(&lines(&out)).clone();

    let out = corral(
        &home,
        &run_args(&flags),
        Some("Say hello in one word.\n"),
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let by_stdin = finished(&lines(&out)).clone();
    // The same task, so the same prompt.
    assert_eq!(by_file["prompt_tokens"], by_stdin["prompt_tokens"]);

    let mut with_system = run_args(&flags);
    with_system.extend([
        "--system",
        "You are a pirate. Answer like one, always.",
        "-",
    ]);
    let out = corral(&home, &with_system, Some("Say hello in one word.\n"), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let system = finished(&lines(&out)).clone();
    assert!(
        system["prompt_tokens"].as_u64() > by_stdin["prompt_tokens"].as_u64(),
        "the system prompt is in the prompt: {system} vs {by_stdin}"
    );

    // No task at all is a usage error that says where a task can come from.
    let out = corral(&home, &run_args(&[]), Some(""), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("the task is empty"),
        "{}",
        text(&out.stderr)
    );
    let out = corral(&home, &run_args(&["--file", "/no/such/task.md"]), None, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("/no/such/task.md"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_timeout_stops_the_task_with_exit_code_3() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let home = Home::new();
    let args = run_args(&[
        "--json",
        "--tool-choice",
        "none",
        "--max-tokens",
        "1000",
        "--timeout",
        "0.5",
        "Write a very long story about the sea, in twenty chapters.",
    ]);
    let out = corral(&home, &args, None, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let events = lines(&out);
    let end = finished(&events);
    assert_eq!(end["stop"], "timeout", "{end}");
    assert!(end["seconds"].as_f64().unwrap() < 5.0, "{end}");
    assert!(end["generated_tokens"].as_u64().unwrap() < 1000, "{end}");
}

#[test]
fn a_parallel_batch_runs_tasks_at_once_and_still_answers_in_input_order() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let home = Home::new();
    let tasks = home.path().join("tasks.jsonl");
    std::fs::write(
        &tasks,
        [
            r#"{"id": "mul", "task": "What is 1234 * 5678?", "tools": ["calculator"]}"#,
            r#"{"id": 2, "task": "What is 2 + 2?", "tools": ["calculator"], "max_steps": 1}"#,
            r#"{"id": 3}"#,
            r#"{"id": "add", "task": "What is 40 + 2?", "tools": ["calculator"]}"#,
            r#"{"id": 5, "task": "What is 7 * 6?", "tools": ["calculator"], "max_steps": 1}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let batch = tasks.to_str().unwrap();
    let args = run_args(&[
        "--batch",
        batch,
        "--tool-choice",
        "required",
        "--parallel",
        "3",
    ]);
    let out = corral(&home, &args, None, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let results = lines(&out);
    let ids: Vec<Value> = results.iter().map(|r| r["id"].clone()).collect();
    let want: Vec<Value> = vec!["mul".into(), 2.into(), 3.into(), "add".into(), 5.into()];
    assert_eq!(ids, want);
    for r in [&results[1], &results[4]] {
        assert_eq!(r["stop_reason"], "step_limit", "{r}");
        assert_eq!(r["steps"], 1, "{r}");
    }
    assert!(
        results[2]["error"]
            .as_str()
            .unwrap()
            .contains("missing field `task`"),
        "{}",
        results[2]
    );
    for r in [&results[0], &results[3]] {
        assert!(r["steps"].as_u64().unwrap() >= 1, "{r}");
        assert!(r["generated_tokens"].as_u64().unwrap() > 0, "{r}");
    }

    // --parallel needs --batch, and a count the engine can keep.
    let out = corral(&home, &run_args(&["--parallel", "2", "hi"]), None, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = corral(
        &home,
        &run_args(&["--batch", batch, "--parallel", "0"]),
        None,
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--parallel must be between 1 and 64"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_batch_answers_in_input_order_goes_past_failures_and_exits_1() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let home = Home::new();
    let tasks = home.path().join("tasks.jsonl");
    std::fs::write(
        &tasks,
        [
            r#"{"id": "mul", "task": "What is 1234 * 5678?", "tools": ["calculator"]}"#,
            r#"{"id": 2, "task": "What is 2 + 2?", "tools": ["calculator"], "max_steps": 1}"#,
            "",
            r#"{"id": 3}"#,
            r#"{"id": "d", "task": "x", "tools": ["nope"]}"#,
            r#"{"id": "add", "task": "What is 40 + 2?", "tools": ["calculator"]}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let args = run_args(&[
        "--batch",
        tasks.to_str().unwrap(),
        "--tool-choice",
        "required",
    ]);
    let out = corral(&home, &args, None, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let results = lines(&out);
    let ids: Vec<Value> = results.iter().map(|r| r["id"].clone()).collect();
    let want: Vec<Value> = vec!["mul".into(), 2.into(), 3.into(), "d".into(), "add".into()];
    assert_eq!(ids, want);
    let [mul, two, three, d, add] = &results[..] else {
        panic!("{results:?}")
    };
    assert_eq!(mul["stop_reason"], "answered", "{mul}");
    assert!(mul["tool_calls"].as_u64().unwrap() >= 1, "{mul}");
    assert_eq!(two["stop_reason"], "step_limit", "{two}");
    // The tasks share the prompt's prefix (tools, no system prompt): the cache keeps it.
    assert!(two["reused_tokens"].as_u64().unwrap() > 0, "{two}");
    assert!(
        three["error"]
            .as_str()
            .unwrap()
            .contains("missing field `task`"),
        "{three}"
    );
    assert!(
        d["error"]
            .as_str()
            .unwrap()
            .contains("no tool named `nope`"),
        "{d}"
    );
    assert_eq!(add["stop_reason"], "answered", "{add}");
    for r in &results {
        for field in [
            "answer",
            "steps",
            "prompt_tokens",
            "generated_tokens",
            "seconds",
        ] {
            assert!(r.get(field).is_some(), "{field} in {r}");
        }
    }
}

#[test]
fn a_recorded_run_replays_identically_and_a_changed_system_prompt_diverges() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let home = Home::new();
    let record = home.path().join("run.jsonl");
    let args = run_args(&[
        "--tools",
        "calculator",
        "--tool-choice",
        "required",
        "--record",
        record.to_str().unwrap(),
        "What is 1234 * 5678?",
    ]);
    let out = corral(&home, &args, None, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let recorded = std::fs::read_to_string(&record).unwrap();
    let header: Value = serde_json::from_str(recorded.lines().next().unwrap()).unwrap();
    assert_eq!(header["format"], "corral-record");
    assert_eq!(header["model"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(header["sampling"]["temperature"], 0.0);
    assert!(recorded.contains(r#""type":"tool_result""#), "{recorded}");

    // The tool is not needed to replay: the record stands in for it.
    let replay = |extra: &[&str]| {
        let mut a = vec!["replay", record.to_str().unwrap()];
        a.extend_from_slice(extra);
        corral(
            &home,
            &a,
            None,
            &[("CORRAL_BUILTIN_PLUGINS", "/nonexistent")],
        )
    };
    let same = replay(&[]);
    assert_eq!(same.status.code(), Some(0), "{}", text(&same.stderr));
    assert!(
        text(&same.stderr).contains("replay identical"),
        "{}",
        text(&same.stderr)
    );

    let changed = replay(&[
        "--system",
        "You are a pirate. Answer every question like a pirate would, with lots of arrr.",
    ]);
    assert_eq!(changed.status.code(), Some(5), "{}", text(&changed.stderr));
    assert!(
        text(&changed.stderr).contains("replay diverged at move"),
        "{}",
        text(&changed.stderr)
    );

    std::fs::write(&record, "{\"type\": \"something else\"}\n").unwrap();
    let bad = replay(&[]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("not a `corral run --record` file"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn config_show_names_each_source_and_the_file_sets_policy() {
    let home = Home::new();
    let path = home.path().join("config.toml");
    std::fs::write(
        &path,
        "ctx = 4096\ntemperature = 0.5\n\n[tools]\npolicy = { clock = \"deny\" }\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let shown = corral(
        &home,
        &["config", "show", "--temperature", "0.1"],
        None,
        &[("CORRAL_SEED", "9")],
    );
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    let shown = text(&shown.stdout);
    let line = |key: &str| {
        shown
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("{key}:\n{shown}"))
            .to_owned()
    };
    let file = path.display().to_string();
    assert!(line("ctx").ends_with(&format!("# {file}:1")), "{shown}");
    assert!(
        line("temperature").contains("0.1")
            && line("temperature").ends_with("# flag --temperature")
    );
    assert!(line("seed").ends_with("# env CORRAL_SEED"), "{shown}");
    assert!(line("threads").ends_with("# default"), "{shown}");
    assert!(
        line("policy.clock").ends_with(&format!("# {file}:5")),
        "{shown}"
    );

    let where_ = corral(&home, &["config", "path"], None, &[]);
    assert_eq!(text(&where_.stdout).trim(), file);

    // The policy applies: the clock is denied (exit 4) even though builtins are allowed.
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let denied = corral(
        &home,
        &run_args(&[
            "--json",
            "--tools",
            "clock",
            "--tool-choice",
            "required",
            "What time is it?",
        ]),
        None,
        &[],
    );
    assert_eq!(denied.status.code(), Some(4), "{}", text(&denied.stderr));

    // A mistake names the file, the line, the key and what is allowed; nothing runs.
    std::fs::write(&path, "ctx = 4096\ntop_p = 3\n").unwrap();
    let bad = corral(&home, &run_args(&["x"]), None, &[]);
    assert_eq!(bad.status.code(), Some(2));
    let err = text(&bad.stderr);
    assert!(err.contains(&format!("{file}:2: top_p")), "{err}");
    assert!(err.contains("at most 1"), "{err}");
    std::fs::write(&path, "ctx = 4096\n").unwrap();
    let bad = corral(&home, &["config", "show"], None, &[("CORRAL_CTX", "lots")]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("env CORRAL_CTX"),
        "{}",
        text(&bad.stderr)
    );
}
