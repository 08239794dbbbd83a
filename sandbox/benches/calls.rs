//! Sandbox figures: warm call latency vs a native function, compile time, cold vs cached start,
//! and memory per concurrent call. A plain `harness = false` bench that prints a table:
//!
//! ```text
//! cargo bench -p corral-sandbox --bench calls
//! ```
//!
//! Guests: the SDK example `word_count` (a trivial tool) and the adversarial test guest
//! (whose `spin` tool keeps instances alive for the memory figure), built from source for
//! wasm32-wasip2 into the shared guest target dir.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use corral_sandbox::{CallContext, Limits, PoolConfig, Sandbox, SandboxConfig};

const ARGS: &str = r#"{"text":"the quick brown fox"}"#;
const WARM_CALLS: usize = 3000;

fn build_guest(rel: &str, artifact: &str) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CORRAL_GUEST_TARGET_DIR").map_or_else(
        || PathBuf::from("/var/tmp/corral-guest-target"),
        PathBuf::from,
    );
    let status = Command::new("cargo")
        .args([
            "build",
            "--quiet",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(repo.join(rel).join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .env("CARGO_ENCODED_RUSTFLAGS", "")
        .status()
        .expect("run cargo");
    assert!(status.success(), "building {rel} failed");
    target.join("wasm32-wasip2/release").join(artifact)
}

fn pct(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn time<R>(f: impl FnOnce() -> R) -> (R, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

fn native_word_count(args: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(args).unwrap();
    let text = v["text"].as_str().unwrap_or_default();
    serde_json::json!({
        "words": text.split_whitespace().count(),
        "lines": text.lines().count(),
        "chars": text.chars().count(),
    })
    .to_string()
}

fn warm(label: &str, sandbox: &Sandbox, bytes: &[u8]) {
    let plugin = sandbox.load(bytes).unwrap();
    let ctx = CallContext::default();
    for _ in 0..200 {
        plugin.call("word_count", ARGS, &ctx).unwrap();
    }
    let mut samples: Vec<Duration> = (0..WARM_CALLS)
        .map(|_| time(|| plugin.call("word_count", ARGS, &ctx).unwrap()).1)
        .collect();
    println!(
        "warm call, {label:<28} p50 {:>10}   p99 {:>10}",
        us(pct(&mut samples, 0.5)),
        us(pct(&mut samples, 0.99))
    );
}

fn vm_size_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

fn main() {
    let wc = std::fs::read(build_guest("tools/examples/word-count", "word_count.wasm")).unwrap();
    let adversary = std::fs::read(build_guest(
        "tools/tests/guests/adversary",
        "adversary.wasm",
    ))
    .unwrap();
    println!(
        "trivial tool: word_count component, {} KiB; fresh Store per call, limits on",
        wc.len() / 1024
    );

    // Native baseline: the same work in-process, JSON in and out.
    let mut native: Vec<Duration> = (0..WARM_CALLS)
        .map(|_| time(|| native_word_count(ARGS)).1)
        .collect();
    println!(
        "native Rust function (JSON in/out)     p50 {:>10}   p99 {:>10}",
        us(pct(&mut native, 0.5)),
        us(pct(&mut native, 0.99))
    );

    let va_before = vm_size_bytes();
    let pooled = Sandbox::new(SandboxConfig {
        pool: Some(PoolConfig::default()),
        ..SandboxConfig::default()
    })
    .unwrap();
    println!(
        "pooling allocator address space reserved  {:>8.1} GiB ({:?})",
        (vm_size_bytes().saturating_sub(va_before)) as f64 / (1u64 << 30) as f64,
        PoolConfig::default()
    );
    warm("pooling allocator", &pooled, &wc);
    let on_demand = Sandbox::new(SandboxConfig::default()).unwrap();
    warm("on-demand allocator", &on_demand, &wc);

    // Compile (install) time, no cache.
    let mut compiles: Vec<Duration> = (0..5)
        .map(|_| time(|| pooled.load(&wc).unwrap()).1)
        .collect();
    println!(
        "compile (Cranelift, no cache)          p50 {:>10}",
        ms(pct(&mut compiles, 0.5))
    );

    // Cold start vs cached start: a new engine each time, as a new process would have.
    let cache = tempfile::tempdir().unwrap();
    let first_call = |label: &str| {
        let (_, t) = time(|| {
            let s =
                Sandbox::new(SandboxConfig::with_cache(cache.path().join("components"))).unwrap();
            let p = s.load(&wc).unwrap();
            p.list_tools().unwrap();
            p.call("word_count", ARGS, &CallContext::default()).unwrap();
        });
        println!("{label:<38} {:>14}", ms(t));
    };
    first_call("cold start: engine+compile+list+call");
    first_call("cached start: engine+load+list+call");
    first_call("cached start (again)");

    // Memory per concurrent call: N instances of a guest spinning until its deadline.
    let n = 16usize;
    let plugin = pooled.load(&adversary).unwrap();
    let ctx = CallContext::with_limits(Limits {
        deadline: Duration::from_millis(600),
        ..Limits::default()
    });
    plugin.call("counter", "{}", &ctx).unwrap();
    let before = rss_bytes();
    let peak = std::thread::scope(|s| {
        for _ in 0..n {
            s.spawn(|| plugin.call("spin", "{}", &ctx));
        }
        std::thread::sleep(Duration::from_millis(300));
        rss_bytes()
    });
    println!(
        "memory per concurrent call ({n} in flight) {:>10.2} MiB RSS each (adversary guest, {} KiB)",
        (peak.saturating_sub(before)) as f64 / n as f64 / (1 << 20) as f64,
        adversary.len() / 1024
    );
}
