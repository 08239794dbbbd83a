//! Saved sessions: crash safety of the file, `corral run --session` past a small window on the
//! real default model, resuming with the KV state, and the `corral session` commands.

use std::process::{Command, Stdio};
use std::time::Duration;

use corral::sessions::{SessionError, SessionStore};
use corral_prompts::Message;
use corral_tests::{crash_session, evaluated_only_the_new_tokens};
use serde_json::Value;

use crate::engine::ONE_AT_A_TIME;
use crate::tools_cli::Home;

fn marker(session: &corral::sessions::Session) -> Option<usize> {
    let first = session.conversation.messages.first()?;
    let Message::User { content } = first else {
        return None;
    };
    content.strip_prefix("version ")?[..1].parse().ok()
}

#[test]
fn a_session_killed_while_saving_is_always_the_old_or_the_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = SessionStore::at(dir.path());
    let expected = [
        serde_json::to_value(crash_session(0)).unwrap(),
        serde_json::to_value(crash_session(1)).unwrap(),
    ];
    let mut seen = [0usize; 2];
    // A small deterministic generator for the kill times (0–80 ms after start).
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for round in 0..40 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let wait = Duration::from_millis(state % 80);
        let mut child = Command::new(env!("CARGO_BIN_EXE_save_sessions"))
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("start save_sessions");
        std::thread::sleep(wait);
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        match store.load("crash") {
            Ok(None) => {}
            Ok(Some(mut session)) => {
                let v = marker(&session).unwrap_or_else(|| panic!("round {round}: no marker"));
                session.saved_at = 0;
                assert_eq!(
                    serde_json::to_value(&session).unwrap(),
                    expected[v],
                    "round {round}: the file is neither version"
                );
                seen[v] += 1;
            }
            Err(e) => panic!("round {round}, killed after {wait:?}: {e}"),
        }
    }
    // The kills landed at different points: both versions were found on disk.
    assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
    // Temporary files a kill left behind are never taken for sessions.
    assert!(store.list().unwrap().iter().all(|s| s.is_ok()));
}

fn run_json(home: &Home, args: &[&str]) -> (i32, Vec<Value>, String) {
    let mut all = vec!["run", "--threads", "1", "--json"];
    all.extend_from_slice(args);
    let out = home.corral(&all);
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (
        out.status.code().unwrap_or(-1),
        events,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn show(home: &Home, name: &str) -> Value {
    let out = home.corral(&["session", "show", name, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const TURNS: [&str; 5] = [
    "My name is Ada and my locker number is 4711. All human beings are born free and equal in \
     dignity and rights. They are endowed with reason and conscience.",
    "Tous les êtres humains naissent libres et égaux en dignité et en droits. Ils sont doués de \
     raison et de conscience. Please answer in English.",
    "Everyone has the right to life, liberty and security of person. No one shall be held in \
     slavery or servitude. What does this mean?",
    "No one shall be subjected to torture or to cruel, inhuman or degrading treatment. Explain \
     it in two sentences.",
    "What is my name, and what is my locker number?",
];

#[test]
fn a_conversation_past_a_1024_token_window_continues_and_its_session_shows_evictions() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let home = Home::new();
    let mut memory_events = Vec::new();
    for (i, task) in TURNS.iter().enumerate() {
        let (code, events, stderr) = run_json(
            &home,
            &[
                "--ctx",
                "1024",
                "--tool-choice",
                "none",
                "--session",
                "long",
                task,
            ],
        );
        assert_eq!(code, 0, "turn {i}: {stderr}");
        let finished = events
            .iter()
            .find(|e| e["type"] == "turn_finished")
            .unwrap();
        assert_eq!(finished["stop"], "answered", "turn {i}: {finished}");
        memory_events.extend(events.into_iter().filter(|e| e["type"] == "memory"));
    }
    assert!(
        !memory_events.is_empty(),
        "no eviction in {} turns",
        TURNS.len()
    );
    for e in &memory_events {
        for field in ["pinned", "summary", "recent", "free"] {
            assert!(e["tokens"][field].is_u64(), "{e}");
        }
        assert!(e["dropped"].as_str().is_some_and(|d| !d.is_empty()), "{e}");
    }
    let session = show(&home, "long");
    assert_eq!(session["version"], 1);
    assert!(session["evicted_turns"].as_u64().unwrap() > 0, "{session}");
    assert!(
        !session["summary"].as_str().unwrap().is_empty(),
        "{session}"
    );
    assert_eq!(session["language"], "en");
    let messages = session["messages"].as_array().unwrap();
    // Nothing is lost from the file: every task is there, evicted or not.
    for task in TURNS {
        assert!(messages
            .iter()
            .any(|m| m["role"] == "user" && m["content"] == task));
    }
    let tokens = &session["tokens"];
    let used: u64 = ["pinned", "summary", "recent", "free", "reserve"]
        .iter()
        .map(|f| tokens[f].as_u64().unwrap())
        .sum();
    assert!(used <= 1024, "{tokens}");
    eprintln!(
        "real model at --ctx 1024: {} memory events; summary: {}",
        memory_events.len(),
        session["summary"]
    );
}

#[test]
fn resuming_with_the_kv_state_evaluates_no_saved_token_again() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let home = Home::new();
    let args = |task| {
        vec![
            "--ctx",
            "2048",
            "--tool-choice",
            "none",
            "--session",
            "kv",
            "--session-kv",
            task,
        ]
    };
    let (code, _, stderr) = run_json(&home, &args("Say hello to Ada in one short sentence."));
    assert_eq!(code, 0, "{stderr}");
    let store = SessionStore::at(home.path().join("sessions"));
    let saved = store.load("kv").unwrap().unwrap();
    let kv_tokens = saved.kv.as_ref().expect("the KV state was saved").tokens;
    assert!(kv_tokens > 0);
    assert!(store.kv_path("kv").unwrap().exists());

    let (code, events, stderr) = run_json(&home, &args("And now say goodbye."));
    assert_eq!(code, 0, "{stderr}");
    let finished = events
        .iter()
        .find(|e| e["type"] == "turn_finished")
        .unwrap();
    assert_eq!(finished["steps"], 1);
    // The restored cache held every saved token: none was evaluated again (beyond padding
    // the new ones to the tiled rows, where that is cheaper).
    let prompt = finished["prompt_tokens"].as_u64().unwrap() as usize;
    let reused = finished["reused_tokens"].as_u64().unwrap() as usize;
    assert!(
        evaluated_only_the_new_tokens(prompt, kv_tokens, prompt - reused),
        "{kv_tokens} saved: {finished}"
    );

    // Without the KV state, the same resume evaluates the conversation again.
    let (code, events, stderr) = run_json(
        &home,
        &[
            "--ctx",
            "2048",
            "--tool-choice",
            "none",
            "--session",
            "kv",
            "One more word.",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let finished = events
        .iter()
        .find(|e| e["type"] == "turn_finished")
        .unwrap();
    assert_eq!(finished["reused_tokens"], 0, "{finished}");
}

#[test]
fn a_corrupt_or_newer_session_is_one_error_naming_the_file_and_is_left_alone() {
    let home = Home::new();
    let dir = home.path().join("sessions");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.json");
    for (text, needle, code) in [
        (
            "{\"format\": \"corral-session\", \"version\": 7}",
            "newer than this corral reads",
            1,
        ),
        ("{ not json", "is corrupt", 1),
    ] {
        std::fs::write(&file, text).unwrap();
        // The file is read before the model is loaded: no model is needed to fail.
        let out = home.corral(&[
            "run",
            "--model",
            "/nonexistent.gguf",
            "--session",
            "bad",
            "hi",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{stderr}");
        assert!(
            stderr.contains(needle) && stderr.contains(&file.display().to_string()),
            "{stderr}"
        );
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            text,
            "the file was touched"
        );
        let out = home.corral(&["session", "show", "bad"]);
        assert_eq!(out.status.code(), Some(1));
    }
    let out = home.corral(&["run", "--session", "../escape", "hi"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = home.corral(&["session", "rm", "missing"]);
    assert_eq!(out.status.code(), Some(2));
    let out = home.corral(&["session", "rm", "bad"]);
    assert!(out.status.success());
    assert!(!file.exists());
    assert!(matches!(
        SessionStore::at(&dir).load("bad"),
        Ok(None) | Err(SessionError::Read { .. })
    ));
}
