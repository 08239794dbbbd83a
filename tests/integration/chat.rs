//! `corral` with no subcommand: the minimal chat on the default model, driven through stdin.

use std::io::Write;
use std::process::{Command, Stdio};

use corral_tests::{corral_bin, default_model};

#[test]
fn chat_answers_each_line_and_quits_on_exit() {
    let mut child = Command::new(corral_bin())
        .args([
            "--temperature",
            "0",
            "--threads",
            "1",
            "--ctx",
            "1024",
            "--model",
        ])
        .arg(default_model())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn corral");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Hello! Who are you?\n/reset\nSay hi.\n/exit\nnever read\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("conversation cleared"), "{stderr}");
    // Two answers, each ended by a newline; chat markup never leaks into the answer; the line
    // after /exit is never answered.
    let answers = stdout.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(answers >= 2, "expected two answers: {stdout}");
    assert!(stdout.ends_with('\n'), "{stdout:?}");
    assert!(
        !stdout.contains("<|im_end|>") && !stdout.contains("<|im_start|>"),
        "{stdout}"
    );
}
