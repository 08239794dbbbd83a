//! llama.cpp's own tools as references: finding them, running `llama-bench`, and driving a
//! `llama-server` over its OpenAI API.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::UsageError;

/// Where `scripts/bench.sh` caches its build when `CORRAL_BENCH_DIR` is not set.
const DEFAULT_BENCH_DIR: &str = "/var/tmp/corral-bench";

/// The folder with `llama-bench` and `llama-server`.
pub struct LlamaTools {
    dir: PathBuf,
}

impl LlamaTools {
    /// `dir`, else `$CORRAL_BENCH_DIR/build/bin`, else the default cache's `build/bin`.
    ///
    /// # Errors
    /// A `--llama-bin` that is not a folder.
    pub fn find(dir: Option<&Path>) -> anyhow::Result<LlamaTools> {
        let dir = match dir {
            Some(dir) => {
                if !dir.is_dir() {
                    return Err(UsageError::new(format!(
                        "--llama-bin {} is not a folder: give the folder that holds llama-bench \
                         and llama-server (scripts/bench.sh builds them into \
                         $CORRAL_BENCH_DIR/build/bin)",
                        dir.display()
                    ))
                    .into());
                }
                dir.to_path_buf()
            }
            None => std::env::var_os("CORRAL_BENCH_DIR")
                .map_or_else(|| PathBuf::from(DEFAULT_BENCH_DIR), PathBuf::from)
                .join("build/bin"),
        };
        Ok(LlamaTools { dir })
    }

    fn tool(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            bail!(
                "{name} is not in {}: build llama.cpp's tools once with scripts/bench.sh \
                 (or `make bench`), pass --llama-bin DIR, or leave the sections that need it \
                 out with --only",
                self.dir.display()
            )
        }
    }

    /// The `llama-bench` binary.
    ///
    /// # Errors
    /// When it is not built.
    pub fn bench(&self) -> anyhow::Result<PathBuf> {
        self.tool("llama-bench")
    }

    /// The `llama-server` binary.
    ///
    /// # Errors
    /// When it is not built.
    pub fn server(&self) -> anyhow::Result<PathBuf> {
        self.tool("llama-server")
    }

    /// How the tools were built, as scripts/bench.sh recorded it (build type and flags, shared
    /// with corral's own llama.cpp build).
    pub fn build_info(&self) -> Value {
        let stamp = self
            .dir
            .parent()
            .and_then(Path::parent)
            .map(|root| root.join("flags"))
            .and_then(|path| std::fs::read_to_string(path).ok());
        json!({"tools": self.dir.display().to_string(), "build": stamp})
    }
}

/// One llama-bench measurement: prompt and generation rates (t/s), and its build commit.
pub struct BenchRun {
    pub pp: f64,
    pub tg: f64,
    pub commit: String,
}

/// Runs llama-bench once (`-r reps`) with corral's settings: threads, batch 512, f16 KV,
/// flash attention as corral's option says, weights repacked or not.
///
/// # Errors
/// When it fails or prints something other than its JSON.
pub fn llama_bench(
    bin: &Path,
    model: &Path,
    threads: u32,
    prompt: usize,
    gen: usize,
    reps: usize,
    flash: &str,
) -> anyhow::Result<BenchRun> {
    let output = Command::new(bin)
        .arg("-m")
        .arg(model)
        .args(["-t", &threads.to_string(), "-b", "512", "-ub", "512"])
        .args(["-p", &prompt.to_string(), "-n", &gen.to_string()])
        .args(["-r", &reps.to_string(), "-fa", flash, "--repack", "1"])
        .args(["-o", "json"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    if !output.status.success() {
        bail!(
            "llama-bench failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" / ")
        );
    }
    let rows: Value =
        serde_json::from_slice(&output.stdout).context("llama-bench printed no JSON")?;
    let rows = rows
        .as_array()
        .context("llama-bench's JSON is not a list")?;
    let rate = |p: usize, g: usize| -> anyhow::Result<f64> {
        rows.iter()
            .find(|r| r["n_prompt"] == p && r["n_gen"] == g)
            .and_then(|r| r["avg_ts"].as_f64())
            .with_context(|| format!("llama-bench gave no row for p={p} n={g}"))
    };
    Ok(BenchRun {
        pp: rate(prompt, 0)?,
        tg: rate(0, gen)?,
        commit: rows
            .first()
            .and_then(|r| r["build_commit"].as_str())
            .unwrap_or("?")
            .to_string(),
    })
}

/// What a comparison sets on llama-server to match corral's side.
pub struct ServerSettings {
    /// Context tokens in all (`-c`), shared by the slots.
    pub context: usize,
    /// Conversations served at once (`-np`).
    pub slots: usize,
    pub threads: u32,
    /// `-fa`: on, off or auto.
    pub flash: &'static str,
}

/// A running `llama-server` (or `corral serve`, for a comparison over HTTP on both sides),
/// stopped when dropped.
pub struct Server {
    name: &'static str,
    child: Child,
    pub base: String,
    agent: ureq::Agent,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one streamed chat completion took.
#[derive(Debug, Clone, Default)]
pub struct Streamed {
    /// Seconds from sending the request to the first generated text or call.
    pub first_token: f64,
    /// Seconds from sending the request to the end of the stream.
    pub total: f64,
    /// The reply's text (content and call arguments, concatenated).
    pub text: String,
    /// The server's own counts: prompt tokens it evaluated, prompt tokens it took from its
    /// cache, tokens it generated.
    pub evaluated: Option<u64>,
    pub cached: Option<u64>,
    pub generated: Option<u64>,
}

impl Server {
    /// Starts llama-server on a free loopback port with corral's settings for a comparison
    /// (`settings`, batch 512, the model's own template, no warm-up) plus `extra` flags, and
    /// waits until it is ready.
    ///
    /// # Errors
    /// When it does not start, or exits, or is not ready within five minutes.
    pub fn start(
        bin: &Path,
        model: &Path,
        settings: &ServerSettings,
        extra: &[String],
    ) -> anyhow::Result<Server> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut command = Command::new(bin);
        command
            .arg("-m")
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "-c",
                &settings.context.to_string(),
                "-np",
                &settings.slots.to_string(),
            ])
            .args([
                "-t",
                &settings.threads.to_string(),
                "-b",
                "512",
                "-ub",
                "512",
            ])
            .args(["--jinja", "--no-warmup", "-fa", settings.flash])
            .args(extra);
        Server::launch("llama-server", command, port)
    }

    /// Starts `corral serve` (this executable) on `model` with the same settings as
    /// [`Server::start`] gives llama-server: `settings.context` is split among the slots, as
    /// llama-server splits it, and the engine options not set here are the defaults both sides
    /// share (batch 512, f16 KV).
    ///
    /// # Errors
    /// As [`Server::start`].
    pub fn start_corral(model: &Path, settings: &ServerSettings) -> anyhow::Result<Server> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("--model")
            .arg(model)
            .args(["serve", "--port", &port.to_string()])
            .args([
                "--ctx",
                &(settings.context / settings.slots.max(1)).to_string(),
                "--parallel",
                &settings.slots.to_string(),
                "--threads",
                &settings.threads.to_string(),
                "--flash-attn",
                settings.flash,
            ]);
        Server::launch("corral serve", command, port)
    }

    /// Runs `command` (a server that will listen on `port`) and waits until `/health` answers.
    fn launch(name: &'static str, mut command: Command, port: u16) -> anyhow::Result<Server> {
        let log = tempfile::NamedTempFile::new()?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen()?)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let base = format!("http://127.0.0.1:{port}");
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout(Duration::from_secs(1800))
            .build();
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                let mut text = String::new();
                let _ =
                    std::fs::File::open(log.path()).and_then(|mut f| f.read_to_string(&mut text));
                let tail: Vec<&str> = text.lines().rev().take(8).collect();
                bail!(
                    "{name} exited ({status}) before it was ready: {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                );
            }
            if let Ok(response) = agent.get(&format!("{base}/health")).call() {
                if response.status() == 200 {
                    return Ok(Server {
                        name,
                        child,
                        base,
                        agent,
                    });
                }
            }
            if started.elapsed() > Duration::from_secs(300) {
                let _ = child.kill();
                bail!("{name} was not ready after 5 minutes");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends `body` (a chat completion request; `stream` is set here) and times the stream.
    ///
    /// # Errors
    /// An HTTP error or a stream that is not server-sent events of chat chunks.
    pub fn chat(&self, body: &Value) -> anyhow::Result<Streamed> {
        self.stream("/v1/chat/completions", body)
    }

    /// Sends `body` (a completion request with a `prompt`) and times the stream.
    ///
    /// # Errors
    /// An HTTP error or a stream that is not server-sent events of completion chunks.
    pub fn complete(&self, body: &Value) -> anyhow::Result<Streamed> {
        self.stream("/v1/completions", body)
    }

    fn stream(&self, path: &str, body: &Value) -> anyhow::Result<Streamed> {
        let mut body = body.clone();
        body["stream"] = json!(true);
        body["cache_prompt"] = json!(true);
        let started = Instant::now();
        let response = self
            .agent
            .post(&format!("{}{path}", self.base))
            .set("Content-Type", "application/json")
            .send_string(&body.to_string())
            .map_err(|e| match e {
                ureq::Error::Status(code, r) => anyhow::anyhow!(
                    "{} answered {code}: {}",
                    self.name,
                    r.into_string().unwrap_or_default()
                ),
                other => anyhow::anyhow!("{} request failed: {other}", self.name),
            })?;
        let mut out = Streamed::default();
        let mut first = None;
        for line in BufReader::new(response.into_reader()).lines() {
            let line = line.with_context(|| format!("reading {}'s stream", self.name))?;
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            if data.trim() == "[DONE]" {
                break;
            }
            let chunk: Value = serde_json::from_str(data)
                .with_context(|| format!("{} sent a chunk that is not JSON: {data}", self.name))?;
            if let Some(error) = chunk.get("error") {
                bail!("{} reported an error: {error}", self.name);
            }
            let choice = &chunk["choices"][0];
            let delta = &choice["delta"];
            let mut piece = choice["text"].as_str().unwrap_or_default().to_string();
            for key in ["content", "reasoning_content"] {
                if let Some(text) = delta[key].as_str() {
                    piece.push_str(text);
                }
            }
            if let Some(calls) = delta["tool_calls"].as_array() {
                for call in calls {
                    for key in ["name", "arguments"] {
                        if let Some(text) = call["function"][key].as_str() {
                            piece.push_str(text);
                        }
                    }
                }
            }
            if !piece.is_empty() && first.is_none() {
                first = Some(started.elapsed().as_secs_f64());
            }
            out.text.push_str(&piece);
            // corral serve reports counts in `usage` (`include_usage`); llama-server in
            // `timings`, which win when both come.
            if let Some(generated) = chunk["usage"]["completion_tokens"].as_u64() {
                out.generated.get_or_insert(generated);
            }
            if let Some(timings) = chunk.get("timings") {
                out.evaluated = timings["prompt_n"].as_u64();
                out.cached = timings["cache_n"].as_u64();
                out.generated = timings["predicted_n"].as_u64();
            }
        }
        out.total = started.elapsed().as_secs_f64();
        out.first_token = first.unwrap_or(out.total);
        Ok(out)
    }
}
