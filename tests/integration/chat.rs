//! `corral` with no subcommand: the minimal chat on the default model, driven through stdin.

use corral_tests::{default_model, run_corral_input};

#[test]
fn chat_answers_each_line_and_quits_on_exit() {
    let model = default_model();
    let (code, stdout, stderr) = run_corral_input(
        &[
            "--temperature",
            "0",
            "--threads",
            "1",
            "--ctx",
            "1024",
            "--model",
            model.to_str().unwrap(),
        ],
        "Hello! Who are you?\n/reset\nSay hi.\n/exit\nnever read\n",
    );
    assert_eq!(code, 0, "{stderr}");
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
