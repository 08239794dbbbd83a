//! `corral serve` on the real default model, as its users meet it: the official `openai`
//! Python client (from the fixtures' `clients` venv), `curl` for every client mistake, and a
//! client that hangs up mid-stream.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::engine::ONE_AT_A_TIME;

const MODEL: &str = "smollm2-135m-instruct-q4_1";
const KEY: &str = "test-key-1234";

/// A running `corral serve` and what it has logged.
struct Server {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        Server::start_with(extra, &[])
    }

    fn start_with(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(corral_tests::corral_bin())
            .args([
                "serve",
                "--port",
                "0",
                "--threads",
                "2",
                "--ctx",
                "2048",
                "--api-key",
                KEY,
            ])
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start corral serve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (address_tx, address_rx) = mpsc::channel();
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let address = rest.split('/').next().unwrap_or_default().to_string();
                    let _ = address_tx.send(address);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let address = address_rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("corral serve did not start: {:?}", log.lock().unwrap()));
        Server {
            child,
            base: format!("http://{address}"),
            log,
        }
    }

    /// Waits for a log line containing `needle`.
    fn wait_for_log(&self, needle: &str, within: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            assert!(
                start.elapsed() < within,
                "no log line with {needle:?} in {within:?}: {:?}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_openai_client_round_trips_tool_calls_streaming_and_not() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(&[]);
    let python = corral_tests::fixtures_dir().join("clients/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `python3 scripts/fixtures.py` (make test does)",
        python.display()
    );
    let script = corral_test_support::manifest_dir(env!("CARGO_MANIFEST_DIR"))
        .join("clients/openai_roundtrip.py");
    let output = Command::new(&python)
        .arg(&script)
        .args([format!("{}/v1", server.base), KEY.into(), MODEL.into()])
        .output()
        .expect("run the openai client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the openai client failed: {}\n{stdout}\nserver: {:?}",
        String::from_utf8_lossy(&output.stderr),
        server.log.lock().unwrap()
    );
    let seen: Value = serde_json::from_str(stdout.trim()).expect("the client prints JSON");
    eprintln!("openai client saw: {seen:#}");
    assert_eq!(seen["first"]["finish_reason"], "tool_calls");
    assert_eq!(seen["stream"]["finish_reason"], "tool_calls");
}

/// `curl` with a JSON body; returns (status, parsed body).
fn curl(
    server: &Server,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&[u8]>,
) -> (u16, Value) {
    let mut command = Command::new("curl");
    command.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method]);
    command.arg(format!("{}{path}", server.base));
    if let Some(key) = key {
        command.args(["-H", &format!("Authorization: Bearer {key}")]);
    }
    if body.is_some() {
        command.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ]);
    }
    command.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = command
        .spawn()
        .expect("curl is installed (scripts/setup.sh)");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(body) = body {
        // curl may stop reading once the server has answered (413 before the whole body).
        let _ = stdin.write_all(body);
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("curl prints the status");
    let value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    (status.parse().unwrap(), value)
}

/// `POST /v1/chat/completions` of `body` with the key.
fn post_chat(server: &Server, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    curl(
        server,
        "POST",
        "/v1/chat/completions",
        Some(KEY),
        Some(body.as_bytes()),
    )
}

#[test]
fn curl_gets_an_openai_error_object_for_every_client_mistake() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(&["--max-body", "200000"]);
    let chat = "/v1/chat/completions";
    let user = |text: &str| format!(r#"{{"role": "user", "content": {}}}"#, Value::from(text));
    let request = |model: &str, messages: &str| {
        format!(r#"{{"model": "{model}", "max_tokens": 8, "messages": [{messages}]}}"#)
    };
    let long = "word ".repeat(3000);
    let bad_args = r#"{"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"city\": "}}]}"#;
    // (what, body, API key, status, a phrase of the message)
    type Case<'a> = (&'a str, Vec<u8>, Option<&'a str>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            b"{\"model\": \"x\", ".to_vec(),
            Some(KEY),
            400,
            "not valid JSON",
        ),
        (
            "unknown model",
            request("gpt-17", &user("hi")).into_bytes(),
            Some(KEY),
            404,
            "does not exist",
        ),
        (
            "unknown role",
            request(MODEL, r#"{"role": "wizard", "content": "x"}"#).into_bytes(),
            Some(KEY),
            400,
            "unknown role",
        ),
        (
            "context overflow",
            request(MODEL, &user(&long)).into_bytes(),
            Some(KEY),
            400,
            "context window is 2048 tokens",
        ),
        (
            "malformed arguments",
            request(MODEL, &format!("{}, {bad_args}", user("hi"))).into_bytes(),
            Some(KEY),
            400,
            "not a JSON object",
        ),
        (
            "body over the limit",
            request(MODEL, &user(&"x".repeat(300_000))).into_bytes(),
            Some(KEY),
            413,
            "limit of 200000 bytes",
        ),
        (
            "no API key",
            request(MODEL, &user("hi")).into_bytes(),
            None,
            401,
            "API key",
        ),
        (
            "wrong API key",
            request(MODEL, &user("hi")).into_bytes(),
            Some("nope"),
            401,
            "API key",
        ),
    ];
    for (what, body, key, status, needle) in cases {
        let (got, value) = curl(&server, "POST", chat, key, Some(&body));
        let message = value["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(got, status, "{what}: {value}");
        assert!(message.contains(needle), "{what}: {value}");
        assert!(value["error"]["type"].is_string(), "{what}: {value}");
    }
    let (got, value) = curl(
        &server,
        "POST",
        chat,
        Some(KEY),
        Some(request(MODEL, &user(&long)).as_bytes()),
    );
    assert_eq!(
        (got, value["error"]["code"].clone()),
        (400, "context_length_exceeded".into())
    );
    let (got, value) = curl(&server, "GET", chat, Some(KEY), None);
    assert_eq!(got, 405, "{value}");
    let (got, value) = curl(&server, "GET", "/v1/embeddings", Some(KEY), None);
    assert_eq!(got, 404, "{value}");
    // After all of that, the server still answers.
    let (got, value) = curl(
        &server,
        "POST",
        chat,
        Some(KEY),
        Some(request(MODEL, &user("Hi!")).as_bytes()),
    );
    assert_eq!(got, 200, "{value}");
    assert_eq!(value["choices"][0]["message"]["role"], "assistant");
}

#[test]
fn a_client_that_hangs_up_mid_stream_cancels_its_generation() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(&[]);
    let body = format!(
        r#"{{"model": "{MODEL}", "stream": true, "max_tokens": 1500, "temperature": 0,
            "messages": [{{"role": "user", "content": "Count from 1 to 1000, one number per line."}}]}}"#
    );
    let address = server.base.trim_start_matches("http://").to_string();
    let mut socket = std::net::TcpStream::connect(&address).unwrap();
    write!(
        socket,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Read until a few chunks of text have come, then hang up.
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    let started = Instant::now();
    while String::from_utf8_lossy(&seen)
        .matches("\"content\"")
        .count()
        < 6
    {
        let n = socket.read(&mut buffer).unwrap();
        assert!(
            n > 0,
            "the stream ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buffer[..n]);
        assert!(started.elapsed() < Duration::from_secs(120));
    }
    drop(socket);
    let line = server.wait_for_log("#1 ", Duration::from_secs(60));
    assert!(line.contains("cancelled: the client left"), "{line}");
    let generated: usize = line
        .split(", ")
        .find_map(|part| part.strip_suffix(" generated"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no generated count in {line}"));
    assert!(generated < 1500, "{line}");
}

#[test]
fn agent_mode_runs_corrals_own_tools_and_shows_the_steps() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let home = crate::tools_cli::Home::new();
    let home_dir = home.path().to_str().unwrap();
    let builtins = crate::tools_cli::builtins().to_str().unwrap();
    let server = Server::start_with(
        &["--agent", "--tools", "calculator", "--max-steps", "3"],
        &[
            ("CORRAL_HOME", home_dir),
            ("CORRAL_BUILTIN_PLUGINS", builtins),
        ],
    );
    let (status, models) = curl(&server, "GET", "/v1/models", Some(KEY), None);
    assert_eq!(status, 200);
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "corral-agent"),
        "{models}"
    );
    let body = serde_json::json!({"model": "corral-agent", "tool_choice": "required", "max_tokens": 64,
        "temperature": 0, "messages": [{"role": "user", "content": "What is 1234 * 5678? Use the calculator."}]});
    let (status, reply) = post_chat(&server, &body);
    assert_eq!(status, 200, "{reply}");
    let message = &reply["choices"][0]["message"];
    let steps = message["corral"]["steps"]
        .as_array()
        .expect("the steps are shown");
    assert!(!steps.is_empty(), "{reply}");
    assert_eq!(steps[0]["name"], "calculator", "{reply}");
    assert!(
        steps[0]["result"].to_string().contains("7006652"),
        "{reply}"
    );
    assert!(
        message["tool_calls"].is_null(),
        "the calls ran server-side: {reply}"
    );
    assert!(message["content"].is_string(), "{reply}");
    // Tools a request brings are refused: agent mode runs only the owner's.
    let theirs = serde_json::json!({"model": "corral-agent", "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "shell", "parameters": {"type": "object"}}}]});
    let (status, error) = post_chat(&server, &theirs);
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["param"], "tools");
}

/// What one streamed completion showed, and when.
struct Streamed {
    first_text: Instant,
    done: Instant,
    text: String,
    usage: Value,
}

/// Streams `body` through `curl -N`, noting when the first text and the end arrived.
fn stream_chat(server: &Server, body: &Value) -> Streamed {
    let mut child = Command::new("curl")
        .args(["-s", "-N", "-X", "POST"])
        .arg(format!("{}/v1/chat/completions", server.base))
        .args(["-H", &format!("Authorization: Bearer {KEY}")])
        .args(["-H", "Content-Type: application/json", "--data-binary"])
        .arg(body.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl is installed (scripts/setup.sh)");
    let mut first_text = None;
    let mut text = String::new();
    let mut usage = Value::Null;
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let chunk: Value =
            serde_json::from_str(data).unwrap_or_else(|e| panic!("not JSON ({e}): {data}"));
        if let Some(piece) = chunk["choices"][0]["delta"]["content"].as_str() {
            if !piece.is_empty() {
                first_text.get_or_insert_with(Instant::now);
                text.push_str(piece);
            }
        }
        if !chunk["usage"].is_null() {
            usage = chunk["usage"].clone();
        }
    }
    let done = Instant::now();
    let _ = child.wait();
    Streamed {
        first_text: first_text.unwrap_or_else(|| panic!("no text streamed for {body}")),
        done,
        text,
        usage,
    }
}

#[test]
fn two_clients_are_answered_at_once_and_each_keeps_its_conversation() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(&["--parallel", "2"]);
    let (health_status, health) = curl(&server, "GET", "/health", None, None);
    assert_eq!((health_status, &health["at_once"]), (200, &Value::from(2)));
    let questions = [
        "Count from 1 to 100, one number per line.",
        "List the letters of the alphabet, one per line.",
    ];
    let request = |question: &str| {
        serde_json::json!({"model": MODEL, "stream": true, "max_tokens": 96, "temperature": 0,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": question}]})
    };
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| stream_chat(&server, &request(questions[0])));
        let b = scope.spawn(|| stream_chat(&server, &request(questions[1])));
        (a.join().unwrap(), b.join().unwrap())
    });
    // One at a time, one stream would end before the other began.
    assert!(
        a.first_text < b.done && b.first_text < a.done,
        "the two streams did not overlap: a {:?}..{:?}, b {:?}..{:?}",
        a.first_text,
        a.done,
        b.first_text,
        b.done
    );
    // Each conversation goes on from its own cache: everything it had is reused.
    for (question, streamed) in questions.iter().zip([&a, &b]) {
        let held = streamed.usage["prompt_tokens"].as_u64().unwrap()
            + streamed.usage["completion_tokens"].as_u64().unwrap();
        let (status, reply) = post_chat(
            &server,
            &serde_json::json!({"model": MODEL, "max_tokens": 4, "temperature": 0,
                "messages": [{"role": "user", "content": question},
                             {"role": "assistant", "content": streamed.text},
                             {"role": "user", "content": "Thank you."}]}),
        );
        assert_eq!(status, 200, "{reply}");
        let cached = reply["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap();
        assert!(
            cached >= held - 1,
            "{question:?}: {cached} cached of the {held} its sequence held: {reply}"
        );
    }
}
