//! A plugin that misbehaves on purpose, one tool per attack, for `tools/tests/adversarial.rs`.
//! Filesystem, env and socket tools answer `ok: …` or `denied: …` so tests can tell what the
//! host allowed; the rest trap, spin, or flood.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use corral_sdk::{json, Output, Plugin, Tool, Value};

const TOOLS: &[&str] = &[
    "echo",
    "counter",
    "spin",
    "sleep",
    "alloc",
    "recurse",
    "trap",
    "panic",
    "big_result",
    "big_stdout",
    "log",
    "env",
    "socket",
    "read",
    "write",
    "truncate",
    "rename",
    "list",
    "symlink",
];

static CALLS: AtomicU64 = AtomicU64::new(0);

struct Adversary;

fn s<'a>(args: &'a Value, key: &str) -> &'a str {
    args[key].as_str().unwrap_or_default()
}

fn outcome<T: std::fmt::Debug>(r: std::io::Result<T>) -> Output {
    match r {
        Ok(v) => Output::text(format!("ok: {v:?}")),
        Err(e) => Output::text(format!("denied: {e}")),
    }
}

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    let buf = std::hint::black_box([n; 16]);
    recurse(buf[3] + 1) + buf[7]
}

impl Plugin for Adversary {
    fn tools() -> Vec<Tool> {
        let strict = json!({
            "type": "object",
            "properties": {"text": {"type": "string"}, "n": {"type": "integer"}},
            "required": ["text"],
            "additionalProperties": false
        });
        TOOLS
            .iter()
            .map(|name| {
                let schema = if *name == "echo" {
                    strict.clone()
                } else {
                    json!({"type": "object"})
                };
                Tool::new(name, "misbehaves", schema)
            })
            .collect()
    }

    fn call(tool: &str, args: Value) -> Result<Output, String> {
        let n = args["n"].as_u64().unwrap_or(0);
        Ok(match tool {
            "echo" => Output::json(args),
            "counter" => Output::text((CALLS.fetch_add(1, Ordering::SeqCst) + 1).to_string()),
            "spin" => loop {
                std::hint::black_box(n);
            },
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Output::text("woke up")
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recurse" => Output::text(recurse(n).to_string()),
            "trap" => {
                #[cfg(target_arch = "wasm32")]
                core::arch::wasm32::unreachable();
                #[cfg(not(target_arch = "wasm32"))]
                unreachable!()
            }
            "panic" => panic!("the adversary panicked on purpose"),
            "big_result" => Output::text("é".repeat(usize::try_from(n).unwrap_or(0) / 2)),
            "big_stdout" => {
                let chunk = vec![b'x'; 1 << 16];
                let mut out = std::io::stdout().lock();
                let mut err = std::io::stderr().lock();
                for _ in 0..n / (1 << 16) {
                    out.write_all(&chunk).map_err(|e| e.to_string())?;
                    err.write_all(&chunk).map_err(|e| e.to_string())?;
                }
                Output::text("flooded")
            }
            "log" => {
                corral_sdk::log::info("hello from the guest");
                corral_sdk::log::error(&"e".repeat(usize::try_from(n).unwrap_or(0)));
                Output::text("logged")
            }
            "env" => match std::env::var(s(&args, "name")) {
                Ok(v) => Output::text(format!("ok: {v}")),
                Err(e) => Output::text(format!("denied: {e}")),
            },
            "socket" => {
                outcome(std::net::TcpStream::connect(s(&args, "addr")).map(|_| "connected"))
            }
            "read" => outcome(std::fs::read_to_string(s(&args, "path"))),
            "write" => outcome(std::fs::write(s(&args, "path"), s(&args, "content"))),
            "truncate" => outcome(
                std::fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(s(&args, "path"))
                    .map(|_| ()),
            ),
            "rename" => outcome(std::fs::rename(s(&args, "path"), s(&args, "to"))),
            "list" => outcome(
                std::fs::read_dir(s(&args, "path"))
                    .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>()),
            ),
            "symlink" => outcome(std::fs::read_link(s(&args, "path"))),
            other => return Err(format!("unknown tool {other}")),
        })
    }
}

corral_sdk::export_plugin!(Adversary);
