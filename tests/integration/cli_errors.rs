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
            "16384",
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
            "16384",
        ],
    ] {
        let result = run_corral(&args, &[]);
        assert_one_line_error(
            result,
            2,
            "--ctx 16384 is larger than this model supports (8192 tokens, its training context): \
             use --ctx 8192 or less",
        );
    }
}

/// Flags that are wrong whatever the model, each with the message naming it. Run with an empty
/// model cache and a PyPI index nobody answers: checked after resolving the model, each would
/// instead fail with exit code 1 trying to pull the default model.
const BAD_FLAGS: &[(&[&str], &str)] = &[
    (
        &["generate", "x", "--temperature=-1"],
        "--temperature must be 0 or more (got -1)",
    ),
    (
        &["generate", "x", "--top-p", "1.5"],
        "--top-p must be in (0, 1] (got 1.5)",
    ),
    (
        &["generate", "x", "--top-k=-2"],
        "--top-k must be 0 or more (got -2)",
    ),
    (
        &["generate", "x", "--repeat-penalty", "0"],
        "--repeat-penalty must be more than 0 (got 0)",
    ),
    (
        &["generate", "x", "--ctx", "999999"],
        "--ctx 999999 is larger than corral's maximum (131072 tokens)",
    ),
    (
        &["generate", "x", "--ctx", "0"],
        "--ctx must be at least 1 token",
    ),
    (
        &["generate", "x", "--threads", "0"],
        "--threads must be at least 1",
    ),
    (
        &["generate", "x", "--batch-size", "0"],
        "--batch-size must be at least 1",
    ),
    (
        &["generate", "x", "--max-tokens", "0"],
        "--max-tokens must be at least 1",
    ),
    (
        &["generate", "x", "--stop", r"a\x"],
        r#"--stop "a\\x": unknown escape `\x`: use \n (newline), \t (tab) or \\ (backslash)"#,
    ),
    (
        &["generate", "x", "--stop", r"end\"],
        r#"--stop "end\\": a lone `\` at the end"#,
    ),
    (
        &["generate", "x", "--stop", ""],
        "--stop needs a non-empty text",
    ),
    (
        &["generate", "-", "--temperature=-1"],
        "--temperature must be 0 or more",
    ),
    (&["--top-p", "0"], "--top-p must be in (0, 1] (got 0)"),
    (
        &["--kv-type", "q4", "generate", "x"],
        "unknown KV cache type `q4`: use f16 or q8_0",
    ),
    (
        &["--kv-type", "q8_0", "--flash-attn", "off", "generate", "x"],
        "--kv-type q8_0 needs flash attention: drop `--flash-attn off`",
    ),
    (
        &["chat", "--repeat-penalty=-1"],
        "--repeat-penalty must be more than 0 (got -1)",
    ),
];

#[test]
fn flags_are_checked_before_the_model_is_pulled_or_loaded() {
    let cache = tempfile::tempdir().unwrap();
    let env = [
        // Port 9 (discard) on loopback: nothing listens, the connection is refused.
        ("CORRAL_PYPI_INDEX", "http://127.0.0.1:9/pypi"),
        ("CORRAL_CACHE_DIR", cache.path().to_str().unwrap()),
    ];
    for (args, message) in BAD_FLAGS {
        let result = run_corral(args, &env);
        assert_one_line_error(result, 2, message);
    }
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
}

#[test]
fn prompt_longer_than_the_context_is_a_usage_error() {
    let model = default_model();
    // 301 tokens; llama.cpp's smallest context is 256 tokens.
    let long = "word ".repeat(300);
    let result = run_corral(
        &[
            "generate",
            &long,
            "--ctx",
            "256",
            "--model",
            model.to_str().unwrap(),
        ],
        &[],
    );
    assert_one_line_error(
        result,
        2,
        "prompt is 301 tokens but the context holds 256: shorten it or raise --ctx",
    );
}

#[test]
fn unknown_flag() {
    assert_one_line_error(run_corral(&["--frobnicate"], &[]), 2, "--frobnicate");
    assert_one_line_error(run_corral(&["model", "list", "--bogus"], &[]), 2, "--bogus");
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
