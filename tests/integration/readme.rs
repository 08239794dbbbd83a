//! Every example in README.md's "Using corral" section runs as written against the built binary,
//! with local resources only: `sh` blocks must exit 0 without an `error:` line, and `console`
//! blocks are transcripts whose output must match exactly.
//!
//! Nothing is skipped. What the README reaches outside this machine is replaced explicitly
//! ([`substitutions`]): its example URL is served by a local HTTP server with a file whose sha256
//! is the one the README shows. Every command runs in a fresh folder holding only `.fixtures`
//! (a link to the test fixtures), with `corral` first on `PATH`, a private model cache holding the
//! default model (a link to the cached one), a private `HOME`, a PyPI index nobody answers (so any
//! download the README did not mean fails loudly), and stdin closed (the chat ends at once, as on
//! Ctrl-D).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use corral::model::{ModelStore, DEFAULT_MODEL};
use corral_tests::gguf_fixture::{sha256_hex, tiny_gguf};
use corral_tests::http::{Route, TestServer};
use corral_tests::{corral_bin, default_model, fixtures_dir};

/// The README's example URL for `corral model pull URL`.
const EXAMPLE_URL: &str = "https://example.com/models/my-model.gguf";

/// One fenced block of the section.
#[derive(Debug, PartialEq)]
enum Block {
    /// ```sh: command lines.
    Shell(Vec<String>),
    /// ```console: `$ command` lines, each followed by the exact stdout it prints.
    Transcript(Vec<(String, String)>),
}

/// The text of the `## Using corral` section, up to the next `## ` heading.
fn using_corral_section(readme: &str) -> &str {
    let start = readme
        .find("\n## Using corral\n")
        .expect("README.md has a `## Using corral` section");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 4);
    &rest[..end]
}

/// The `sh` and `console` blocks of `section`, in order. Any other fenced block in the section
/// is an error: the README would show an example this test does not run.
fn blocks(section: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        match info {
            "sh" => blocks.push(Block::Shell(
                body.iter()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| l.to_string())
                    .collect(),
            )),
            "console" => blocks.push(Block::Transcript(transcript(&body))),
            other => panic!("a ```{other} block in `Using corral`: make it `sh` or `console`"),
        }
    }
    blocks
}

/// `$ command` lines and the output lines that follow each (joined, without a final newline).
fn transcript(body: &[&str]) -> Vec<(String, String)> {
    let mut steps: Vec<(String, Vec<&str>)> = Vec::new();
    for line in body {
        match line.strip_prefix("$ ") {
            Some(command) => steps.push((command.to_string(), Vec::new())),
            None => steps
                .last_mut()
                .expect("a console block starts with a `$ ` line")
                .1
                .push(line),
        }
    }
    steps
        .into_iter()
        .map(|(command, output)| (command, output.join("\n")))
        .collect()
}

/// README text replaced before running, each with why. Every entry must occur in the section, so
/// a stale one fails the test.
fn substitutions(server: &TestServer) -> Vec<(&'static str, String, &'static str)> {
    vec![(
        EXAMPLE_URL,
        server.url("/models/my-model.gguf"),
        "no network: a local server answers with a file of the README's sha256",
    )]
}

/// A fresh place to run the README's commands.
struct Sandbox {
    _root: tempfile::TempDir,
    work: PathBuf,
    env: Vec<(String, String)>,
}

impl Sandbox {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let [bin, cache, home, work] = ["bin", "cache", "home", "work"].map(|name| {
            let dir = root.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            dir
        });
        symlink(&corral_bin(), &bin.join("corral"));
        symlink(
            &default_model(),
            &ModelStore::at(&cache).path_of(DEFAULT_MODEL),
        );
        symlink(&fixtures_dir(), &work.join(".fixtures"));
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let env = vec![
            ("PATH".into(), path),
            ("HOME".into(), home.display().to_string()),
            ("CORRAL_CACHE_DIR".into(), cache.display().to_string()),
            // Port 9 (discard) on loopback: nothing listens, any PyPI lookup fails.
            ("CORRAL_PYPI_INDEX".into(), "http://127.0.0.1:9/pypi".into()),
        ];
        Self {
            _root: root,
            work,
            env,
        }
    }

    /// Runs `command` with `sh`; returns (exit code, stdout, stderr).
    fn sh(&self, command: &str) -> (i32, String, String) {
        let output = Command::new("sh")
            .args(["-c", command])
            .current_dir(&self.work)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .output()
            .expect("run sh");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link)
        .unwrap_or_else(|e| panic!("link {} -> {}: {e}", link.display(), target.display()));
}

#[test]
fn the_section_is_parsed_into_its_blocks() {
    let section = "## Using corral\n\ntext\n\n```sh\ncorral a   # x\n\ncorral b\n```\n\n    \
                   indented, not run\n\n```console\n$ echo hi\nhi\n$ true\n$ printf 'a\\n\\nb'\na\n\nb\n```\n";
    let readme = format!(
        "# t\n\n## Set-up\n\n```sh\nnot this\n```\n\n{section}## Next\n\n```sh\nnor this\n```\n"
    );
    assert_eq!(using_corral_section(&readme), section);
    assert_eq!(
        blocks(using_corral_section(&readme)),
        [
            Block::Shell(vec!["corral a   # x".into(), "corral b".into()]),
            Block::Transcript(vec![
                ("echo hi".into(), "hi".into()),
                ("true".into(), String::new()),
                ("printf 'a\\n\\nb'".into(), "a\n\nb".into()),
            ]),
        ]
    );
}

#[test]
fn every_example_in_using_corral_runs_as_written() {
    let _turn = crate::engine::ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let readme = std::fs::read_to_string(
        corral_test_support::manifest_dir(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
    )
    .expect("read README.md");
    let mut section = using_corral_section(&readme).to_string();

    let example_model = tiny_gguf("My model");
    let server = TestServer::start(HashMap::from([(
        "/models/my-model.gguf".to_string(),
        Route::ok(example_model.clone()),
    )]));
    assert!(
        section.contains(&sha256_hex(&example_model)),
        "the README's `model pull` example should show the sha256 of the file served for {EXAMPLE_URL}"
    );
    for (from, to, why) in substitutions(&server) {
        assert!(
            section.contains(from),
            "stale substitution {from:?} ({why})"
        );
        section = section.replace(from, &to);
    }

    let blocks = blocks(&section);
    let sandbox = Sandbox::new();
    let mut ran = 0;
    for block in &blocks {
        match block {
            Block::Shell(lines) => {
                for line in lines {
                    let (code, stdout, stderr) = sandbox.sh(line);
                    assert_eq!(
                        code, 0,
                        "README example failed: {line}\nstdout: {stdout}\nstderr: {stderr}"
                    );
                    assert!(
                        !stderr.lines().any(|l| l.starts_with("error")),
                        "README example printed an error: {line}\n{stderr}"
                    );
                    ran += 1;
                }
            }
            Block::Transcript(steps) => {
                for (command, expected) in steps {
                    let (code, stdout, stderr) = sandbox.sh(command);
                    assert_eq!(code, 0, "README example failed: {command}\n{stderr}");
                    // A transcript cannot show trailing newlines: compare without them.
                    assert_eq!(
                        stdout.trim_end_matches('\n'),
                        expected,
                        "README example prints something else: {command}"
                    );
                    ran += 1;
                }
            }
        }
    }
    // The section's examples: 11 `sh` lines and 4 transcript commands. A README edit that adds or
    // drops one updates this count, so none goes unrun by mistake.
    assert_eq!(ran, 16, "{blocks:#?}");
    let (_, listing, _) = sandbox.sh("corral model list");
    assert!(
        listing.contains("my-model\t") && listing.contains(&format!("{DEFAULT_MODEL}\t")),
        "the pulled example model is cached: {listing}"
    );
}

/// Every field of every JSON event (`run --json`, records) is named in the README's table, so
/// scripts can rely on what it documents.
#[test]
fn every_json_event_field_is_documented() {
    use corral::agent::{Event, TurnStop};
    use corral::memory::{MemoryAction, MemoryReport, Regions, SummaryBy};
    let readme = std::fs::read_to_string(
        corral_test_support::manifest_dir(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
    )
    .unwrap();
    let start = readme
        .find("### JSON events")
        .expect("a JSON events section");
    let section = &readme[start..];
    let section = &section[..section[4..].find("\n### ").map_or(section.len(), |i| i + 4)];
    let events = [
        Event::Text { delta: "x".into() },
        Event::ToolCall {
            id: "call_1".into(),
            name: "clock".into(),
            arguments: serde_json::json!({}),
        },
        Event::ToolResult {
            id: "call_1".into(),
            name: "clock".into(),
            ok: true,
            content: "12:00".into(),
            seconds: 0.0,
        },
        Event::Memory {
            report: MemoryReport {
                action: MemoryAction::Evicted,
                dropped: "1 turn".into(),
                turns: 1,
                summary_by: SummaryBy::Fallback,
                summary_error: Some("failed".into()),
                before: 2,
                after: 1,
            },
            evicted_turns: 1,
            tokens: Regions::default(),
            shifted: 0,
            seconds: 0.0,
        },
        Event::TurnFinished {
            stop: TurnStop::Timeout,
            steps: 1,
            prompt_tokens: 1,
            reused_tokens: 0,
            generated_tokens: 1,
            seconds: 0.0,
            reason: Some("late".into()),
        },
    ];
    fn keys(value: &serde_json::Value, out: &mut Vec<String>) {
        if let Some(map) = value.as_object() {
            for (k, v) in map {
                out.push(k.clone());
                keys(v, out);
            }
        }
    }
    for event in &events {
        let value = serde_json::to_value(event).unwrap();
        let mut found = Vec::new();
        keys(&value, &mut found);
        found.push(value["type"].as_str().unwrap().to_owned());
        for key in found {
            assert!(
                section.contains(&format!("`{key}`")),
                "README's JSON events table does not name `{key}` (of {value})"
            );
        }
    }
    for stop in [
        "answered",
        "step_limit",
        "timeout",
        "cancelled",
        "denied",
        "error",
    ] {
        assert!(section.contains(&format!("`{stop}`")), "{stop}");
    }
}
