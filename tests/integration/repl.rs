//! The chat as a person meets it: the real binary in a real terminal (tmux), on the default
//! model, asserting on what the screen shows.
//!
//! Each test starts its own tmux server (a private socket) running `corral chat` in a shell
//! that, when corral exits, prints its exit status and `stty -a`, so the test can see that the
//! terminal was left sane (canonical mode and echo back on).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use corral_tests::{corral_bin, default_model};

use crate::engine::ONE_AT_A_TIME;

/// A tmux server with one window running a command.
struct Tmux {
    dir: tempfile::TempDir,
}

impl Tmux {
    /// Starts `corral ARGS` in a 140×45 terminal, with `CORRAL_HOME` in a fresh folder.
    fn corral(args: &[&str]) -> Tmux {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let quoted: Vec<String> = std::iter::once(corral_bin().display().to_string())
            .chain(args.iter().map(|a| a.to_string()))
            .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
            .collect();
        let script = format!(
            "export CORRAL_HOME='{}' TERM=xterm-256color; {}; echo \"EXIT:$?\"; stty -a; \
             sleep 600",
            home.display(),
            quoted.join(" ")
        );
        let t = Tmux { dir };
        let status = t
            .tmux()
            .args([
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                "140",
                "-y",
                "45",
                "bash",
                "-c",
            ])
            .arg(&script)
            .status()
            .expect("tmux runs (scripts/setup.sh installs it)");
        assert!(status.success());
        t
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("tmux.sock")
    }

    fn tmux(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(self.socket());
        c
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// Types `text` literally.
    fn type_text(&self, text: &str) {
        let ok = self
            .tmux()
            .args(["send-keys", "-t", "t", "-l", text])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Presses keys (`Enter`, `C-c`, `C-d`).
    fn press(&self, key: &str) {
        let ok = self
            .tmux()
            .args(["send-keys", "-t", "t", key])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// The screen and its scrollback, wrapped lines joined.
    fn screen(&self) -> String {
        let out = self
            .tmux()
            .args(["capture-pane", "-p", "-J", "-S", "-1000", "-t", "t"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until `ready` holds for the screen; returns it.
    fn wait_for(&self, what: &str, timeout: Duration, ready: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            assert!(
                started.elapsed() < timeout,
                "waited {timeout:?} for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the `n`th prompt.
    fn prompt(&self, n: usize) -> String {
        self.wait_for(&format!("prompt {n}"), Duration::from_secs(120), |s| {
            s.matches("you> ").count() >= n
        })
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").status();
    }
}

fn chat_args(model: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "chat",
        "--model",
        model.to_str().unwrap(),
        "--ctx",
        "2048",
        "--threads",
        "2",
        "--temperature",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// After corral exits: its status, and whether `stty -a` shows canonical mode and echo on.
fn exit_and_terminal(t: &Tmux) -> (String, bool) {
    let screen = t.wait_for("corral to exit", Duration::from_secs(30), |s| {
        s.contains("EXIT:") && s.contains("icanon")
    });
    let status = screen
        .lines()
        .find_map(|l| l.strip_prefix("EXIT:"))
        .unwrap_or("")
        .trim()
        .to_owned();
    let words: Vec<&str> = screen.split_whitespace().collect();
    let sane = words.contains(&"icanon") && words.contains(&"echo") && !words.contains(&"-icanon");
    (status, sane)
}

#[test]
fn a_question_streams_its_answer_with_a_tool_line_and_stats_and_ctrl_d_exits_cleanly() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let model = default_model();
    let args = chat_args(&model, &["--tool-choice", "calculator"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let t = Tmux::corral(&args);
    let first = t.prompt(1);
    assert!(first.contains("corral chat with"), "{first}");
    assert!(
        first.contains("calculator"),
        "the banner lists the tools: {first}"
    );

    t.type_text("What is 1234 * 5678?");
    t.press("Enter");
    let screen = t.prompt(2);
    let tool_line = screen
        .lines()
        .find(|l| l.starts_with("[tool] calculator"))
        .unwrap_or_else(|| panic!("no tool line:\n{screen}"));
    assert!(tool_line.contains("→ 7006652"), "{tool_line}");
    assert!(tool_line.contains(" ms)"), "{tool_line}");
    // The streamed answer sits between the tool line and the next prompt.
    let after_tool = screen.split(tool_line).nth(1).unwrap();
    let answer = after_tool.split("you> ").next().unwrap();
    assert!(!answer.trim().is_empty(), "no answer:\n{screen}");

    t.type_text("/stats");
    t.press("Enter");
    let screen = t.wait_for("/stats", Duration::from_secs(20), |s| {
        s.contains("last turn:")
    });
    let context = screen
        .lines()
        .find(|l| l.starts_with("context:"))
        .unwrap_or_else(|| panic!("{screen}"));
    assert!(context.contains("of 2048 tokens used"), "{context}");
    assert!(
        context.contains("pinned") && context.contains("free"),
        "{context}"
    );
    assert!(screen.contains("reused from the cache"), "{screen}");

    t.type_text("/last");
    t.press("Enter");
    t.wait_for("/last", Duration::from_secs(20), |s| {
        s.split("\n[calculator]\n")
            .nth(1)
            .is_some_and(|full| full.contains("7006652"))
    });

    t.prompt(4);
    t.press("C-d");
    let (status, sane) = exit_and_terminal(&t);
    assert_eq!(status, "0", "{}", t.screen());
    assert!(sane, "terminal left without icanon/echo:\n{}", t.screen());
    // What was typed is in the history file, for the next chat.
    let history = std::fs::read_to_string(t.home().join("history")).unwrap();
    assert!(history.contains("What is 1234 * 5678?"), "{history}");
}

#[test]
fn ctrl_c_stops_an_answer_and_returns_to_the_prompt_and_twice_exits() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let model = default_model();
    let args = chat_args(&model, &["--no-tools"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let t = Tmux::corral(&args);
    t.prompt(1);
    t.type_text("Write a very long story about a dragon who learns to count, in ten chapters.");
    t.press("Enter");
    // Some of the answer has streamed: the screen grew past the question's line.
    t.wait_for("the answer to start", Duration::from_secs(60), |s| {
        s.split("ten chapters.")
            .nth(1)
            .is_some_and(|rest| rest.split_whitespace().count() >= 5)
    });
    t.press("C-c");
    let screen = t.prompt(2);
    assert!(screen.contains("(stopped)"), "{screen}");

    // The conversation is consistent: the next question gets an answer.
    t.type_text("Say hello.");
    t.press("Enter");
    let screen = t.prompt(3);
    let reply = screen.split("Say hello.").nth(1).unwrap();
    assert!(
        reply.split("you> ").next().unwrap().trim().len() > 1,
        "{screen}"
    );

    t.press("C-c");
    t.wait_for("the hint", Duration::from_secs(10), |s| {
        s.contains("Ctrl-C again")
    });
    t.press("C-c");
    let (status, sane) = exit_and_terminal(&t);
    assert_eq!(status, "0", "{}", t.screen());
    assert!(sane, "terminal left without icanon/echo:\n{}", t.screen());
}
