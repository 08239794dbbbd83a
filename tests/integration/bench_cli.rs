//! `corral bench --quick` on the real default model, for the sections that need no llama.cpp
//! tool (CI runs the rest through scripts/bench.sh): every row is a real measurement, the JSON
//! holds what the table shows, and the plots are PNG files. Timings are never asserted.

use corral_tests::{default_model, run_corral};
use serde_json::Value;

use crate::engine::ONE_AT_A_TIME;

fn rows<'a>(report: &'a Value, section: &str) -> Vec<&'a Value> {
    report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["section"] == section)
        .collect()
}

#[test]
fn quick_bench_measures_constraint_dispatch_and_memory_and_draws_them() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let model = default_model();
    let plots = tempfile::tempdir().unwrap();
    let temporary = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run_corral(
        &[
            "bench",
            "--quick",
            "--json",
            "--only",
            "constrained,dispatch,memory",
            "--plots",
            plots.path().to_str().unwrap(),
            "--threads",
            "2",
            "--model",
            model.to_str().unwrap(),
        ],
        &[("TMPDIR", temporary.path().to_str().unwrap())],
    );
    assert_eq!(code, 0, "{stderr}");
    // Its scratch files (the compile-from-nothing cache and its key) went with it.
    let left: Vec<_> = std::fs::read_dir(temporary.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(report["quick"], true);

    let constrained = rows(&report, "constrained");
    assert_eq!(constrained.len(), 1, "{report}");
    let per_token = constrained[0]["corral"].as_f64().unwrap();
    let free = constrained[0]["reference_value"].as_f64().unwrap();
    assert!(per_token > 0.0 && free > 0.0, "{report}");
    assert_eq!(constrained[0]["target"], "<= 1.1");

    let dispatch = rows(&report, "dispatch");
    assert_eq!(dispatch.len(), 3, "{report}");
    for row in &dispatch {
        assert!(row["corral"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["reference_value"].as_f64().unwrap() > 0.0, "{row}");
    }

    // At 1024 tokens, f16 and q8_0: a peak and an overhead each. The process held at least the
    // KV cache it reports, and q8_0's cache is the smaller one.
    let memory = rows(&report, "memory");
    assert_eq!(memory.len(), 4, "{report}");
    let needed = |kv: &str| {
        memory
            .iter()
            .find(|r| r["test"] == format!("peak RSS @ 1024 {kv}"))
            .and_then(|r| r["reference_value"].as_f64())
            .unwrap_or_else(|| panic!("no peak RSS row for {kv}: {report}"))
    };
    assert!(needed("q8_0") < needed("f16"), "{report}");
    for row in memory
        .iter()
        .filter(|r| r["test"].as_str().unwrap().starts_with("peak"))
    {
        let peak = row["corral"].as_f64().unwrap();
        assert!(
            peak > 50.0,
            "a peak RSS under 50 MB cannot hold the model: {row}"
        );
    }

    for name in ["modes.png", "memory.png"] {
        let bytes = std::fs::read(plots.path().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}; stderr: {stderr}"));
        assert_eq!(&bytes[..4], b"\x89PNG", "{name}");
    }
}

#[test]
fn a_missing_llama_tool_is_named_before_anything_runs() {
    let empty = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run_corral(
        &[
            "bench",
            "--quick",
            "--only",
            "raw",
            "--llama-bin",
            empty.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("llama-bench is not in"), "{stderr}");
    assert!(stderr.contains("scripts/bench.sh"), "{stderr}");
}
