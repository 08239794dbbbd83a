//! `corral` with no subcommand: the minimal chat on the default model, driven through stdin.
//!
//! `--stats` prints, after each answer, how many prompt tokens the model saw: that is how these
//! tests see what the conversation held when it answered.

use corral_tests::{default_model, run_corral_env_input, run_corral_input};
use serde_json::Value;

/// One chat session (greedy, one thread, 1024 tokens of context) fed `lines`; returns stdout,
/// stderr and the `--stats` line of each answer.
fn chat(lines: &[&str]) -> (String, String, Vec<Value>) {
    let model = default_model();
    let mut input = lines.join("\n");
    input.push('\n');
    let (code, stdout, stderr) = run_corral_input(
        &[
            "chat",
            "--stats",
            "--temperature",
            "0",
            "--threads",
            "1",
            "--ctx",
            "1024",
            "--model",
            model.to_str().unwrap(),
        ],
        &input,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
    let stats = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .collect();
    (stdout, stderr, stats)
}

fn prompt_tokens(stats: &Value) -> u64 {
    stats["prompt_tokens"].as_u64().expect("prompt_tokens")
}

#[test]
fn reset_clears_what_the_model_sees_and_exit_quits() {
    let _turn = crate::engine::ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let first = "Hello! Who are you?";
    let second = "Say hi.";
    let (stdout, stderr, reset) = chat(&[first, "/reset", second, "/exit", "never read"]);
    // Two answers (the line after /exit is never read), one clearing.
    assert_eq!(reset.len(), 2, "{stderr}");
    assert_eq!(
        stderr.matches("(conversation cleared)").count(),
        1,
        "{stderr}"
    );
    assert!(stdout.ends_with('\n'), "{stdout:?}");
    assert!(
        !stdout.contains("<|im_end|>") && !stdout.contains("<|im_start|>"),
        "chat markup leaked: {stdout}"
    );

    // After /reset the prompt is exactly that of a new chat whose first message is `second`.
    let (_, _, fresh) = chat(&[second]);
    assert_eq!(fresh.len(), 1);
    assert_eq!(prompt_tokens(&reset[1]), prompt_tokens(&fresh[0]));

    // Control, so the check above can fail: without /reset the same turn's prompt also holds
    // the first exchange.
    let (_, _, kept) = chat(&[first, second]);
    assert_eq!(prompt_tokens(&kept[0]), prompt_tokens(&reset[0]));
    assert_ne!(
        prompt_tokens(&kept[1]),
        prompt_tokens(&fresh[0]),
        "{kept:?}"
    );
}

#[test]
fn a_chat_session_is_saved_every_turn_and_resumed_with_its_language() {
    let _turn = crate::engine::ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let home = tempfile::tempdir().unwrap();
    let home_dir = home.path().to_str().unwrap();
    let model = default_model();
    let args = [
        "chat",
        "--stats",
        "--temperature",
        "0",
        "--threads",
        "1",
        "--ctx",
        "1024",
        "--session",
        "s",
        "--model",
        model.to_str().unwrap(),
    ];
    let env = [("TERM", "dumb"), ("CORRAL_HOME", home_dir)];
    let (code, _, stderr) = run_corral_env_input(&args, &env, "/lang fr\nBonjour !\n/exit\n");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("(answers in French from now on)"),
        "{stderr}"
    );
    let show = |name: &str| -> Value {
        let (code, stdout, stderr) =
            run_corral_env_input(&["session", "show", name, "--json"], &env, "");
        assert_eq!(code, 0, "{stderr}");
        serde_json::from_str(&stdout).unwrap()
    };
    let saved = show("s");
    assert_eq!(
        (
            saved["language"].as_str(),
            saved["language_fixed"].as_bool()
        ),
        (Some("fr"), Some(true))
    );
    let messages = saved["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{saved}");
    assert_eq!(messages[0]["content"], "Bonjour !");

    // Resumed: the earlier exchange is in what the model sees, and the session grows.
    let (code, _, stderr) = run_corral_env_input(&args, &env, "Et toi ?\n");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("(resumed session s: 2 messages)"),
        "{stderr}"
    );
    let resumed: Vec<Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let (_, _, fresh) = chat(&["Et toi ?"]);
    assert!(
        prompt_tokens(&resumed[0]) > prompt_tokens(&fresh[0]) + 5,
        "{resumed:?} {fresh:?}"
    );
    assert_eq!(show("s")["messages"].as_array().unwrap().len(), 4);
}

#[test]
fn tools_offers_only_the_named_tools_and_says_why_the_others_are_not() {
    let model = default_model();
    let run = |tools: &str| {
        run_corral_input(
            &[
                "chat",
                "--tools",
                tools,
                "--ctx",
                "512",
                "--model",
                model.to_str().unwrap(),
            ],
            "/tools\n/exit\n",
        )
    };
    let (code, stdout, stderr) = run("calculator,code_interpreter");
    assert_eq!(code, 0, "{stderr}");
    let all = format!("{stdout}{stderr}");
    let line = |name: &str| {
        all.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no /tools line for {name}: {all}"))
            .to_owned()
    };
    assert!(
        line("calculator").contains("allow  plugin calculator"),
        "{all}"
    );
    assert!(
        line("code_interpreter").contains("builtin, CPython in the sandbox"),
        "{all}"
    );
    assert!(
        line("clock").contains("not offered (not named in --tools)"),
        "{all}"
    );
    // A name that is no tool is a usage error, before any model is loaded.
    let (code, _, stderr) = run("calculator,nosuch");
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("nosuch"), "{stderr}");
}
