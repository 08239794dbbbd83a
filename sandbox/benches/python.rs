//! Code-interpreter figures: compiling CPython cold and loading it from the checked cache, an
//! interpreter's start, warm cell latency (`print(1)`), memory per live interpreter, and the
//! time to be working again after a cell is stopped at its deadline. The warm cell latency is
//! compared, in the same run, with the reference: the same driver and protocol in the host's
//! native `python3` over pipes (what a process-isolated interpreter such as Meta's costs at
//! best, without its sandbox). A plain `harness = false` bench that prints a table:
//!
//! ```text
//! cargo bench -p corral-sandbox --bench python
//! ```
//!
//! It runs the pinned `python-3.12.0.wasm` fixture (`python3 scripts/fixtures.py`). With
//! `--quick` it runs a few cells only (CI runs it so for breakage, never for timings).

use std::time::{Duration, Instant};

use corral_sandbox::python::{InterpreterOptions, PythonRuntime};
use corral_sandbox::CacheOutcome;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// The driver, as the sandbox runs it.
const DRIVER: &str = include_str!("../src/python/driver.py");

/// `cells` warm `print(1)` cells in the host's native `python3` running the same driver over
/// pipes, timed from the request written to the answer read; `None` without a `python3`.
fn native_cells(cells: usize) -> Option<Vec<Duration>> {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let nonce = "0123456789abcdef";
    let mut child = Command::new("python3")
        .args(["-c", DRIVER, nonce, "16000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    let mut input = child.stdin.take()?;
    let mut output = BufReader::new(child.stdout.take()?);
    let mut line = String::new();
    output.read_line(&mut line).ok()?;
    assert_eq!(line.trim_end(), format!("{nonce} ready"));
    let mut times = Vec::with_capacity(cells);
    for id in 1..=cells {
        let t = Instant::now();
        writeln!(input, r#"{{"id": {id}, "code": "print(1)"}}"#).ok()?;
        input.flush().ok()?;
        line.clear();
        output.read_line(&mut line).ok()?;
        times.push(t.elapsed());
        assert!(line.contains(r#""stdout": "1\n""#), "{line}");
    }
    drop(input);
    let _ = child.wait();
    times.sort();
    Some(times)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let wasm = std::fs::read(corral_test_support::fixture("python-3.12.0.wasm")).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("modules");
    let scratch = tempfile::tempdir().unwrap();
    let options = InterpreterOptions::new(scratch.path());

    let t = Instant::now();
    let (runtime, outcome) = PythonRuntime::load(&wasm, Some(&cache_dir)).unwrap();
    let cold = t.elapsed();
    assert_eq!(outcome, CacheOutcome::Miss);
    drop(runtime);
    let t = Instant::now();
    let (runtime, outcome) = PythonRuntime::load(&wasm, Some(&cache_dir)).unwrap();
    let warm_load = t.elapsed();
    assert_eq!(outcome, CacheOutcome::Hit);

    let t = Instant::now();
    let mut interpreter = runtime.start(&options).unwrap();
    interpreter.wait_ready().unwrap();
    let start = t.elapsed();
    let t = Instant::now();
    interpreter
        .run("print(1)", Duration::from_secs(30), None)
        .unwrap();
    let first_cell = t.elapsed();

    let cells = if quick { 20 } else { 500 };
    let mut times = Vec::with_capacity(cells);
    for _ in 0..cells {
        let out = interpreter
            .run("print(1)", Duration::from_secs(30), None)
            .unwrap();
        assert_eq!(out.stdout, "1\n");
        times.push(out.elapsed);
    }
    times.sort();

    let live = if quick { 2 } else { 8 };
    let before = rss_kib();
    let mut kept = Vec::new();
    for _ in 0..live {
        let mut i = runtime.start(&options).unwrap();
        i.wait_ready().unwrap();
        i.run(
            "import json, math, re, datetime\nx = list(range(1000))",
            Duration::from_secs(30),
            None,
        )
        .unwrap();
        kept.push(i);
    }
    let per_interpreter = (rss_kib().saturating_sub(before)) / live as u64;
    drop(kept);

    let stopped = interpreter
        .run("while True:\n    pass", Duration::from_millis(200), None)
        .unwrap_err();
    let t = Instant::now();
    let mut fresh = runtime.start(&options).unwrap();
    fresh
        .run("print(1)", Duration::from_secs(30), None)
        .unwrap();
    let restart = t.elapsed();

    println!(
        "code interpreter (CPython 3.12.0 WASI, {} MB module)",
        wasm.len() >> 20
    );
    println!("  compile, cold cache            {}", ms(cold));
    println!("  load from the checked cache    {}", ms(warm_load));
    println!("  start an interpreter (ready)   {}", ms(start));
    println!("  its first cell print(1)        {}", ms(first_cell));
    println!(
        "  warm print(1), {cells} cells      p50 {}  p99 {}",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99))
    );
    println!(
        "  RSS per live interpreter       {:.1} MiB ({live} live)",
        per_interpreter as f64 / 1024.0
    );
    println!("  after `{stopped}`:");
    println!("    new interpreter + print(1)   {}", ms(restart));
    match native_cells(cells) {
        Some(native) => {
            let (ours, theirs) = (percentile(&times, 0.5), percentile(&native, 0.5));
            println!(
                "  native python3, same driver    p50 {}  p99 {}",
                ms(theirs),
                ms(percentile(&native, 0.99))
            );
            println!(
                "  warm print(1) p50, sandbox / native: {:.2}x",
                ours.as_secs_f64() / theirs.as_secs_f64()
            );
        }
        None => println!("  native python3: not found, no ratio"),
    }
}
