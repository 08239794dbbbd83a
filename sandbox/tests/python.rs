//! CPython in the sandbox: notebook state, tracebacks, and every way out or over the limits
//! stopped or refused, with the next cell working. Runs the pinned `python-3.12.0.wasm` fixture.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use corral_sandbox::python::{
    CellOutput, CellStop, Interpreter, InterpreterOptions, PythonRuntime,
};
use corral_sandbox::CacheOutcome;

const CELL: Duration = Duration::from_secs(30);

struct Shared {
    runtime: PythonRuntime,
    _cache: tempfile::TempDir,
}

/// One compiled interpreter for the whole test binary (compiling takes seconds).
fn runtime() -> &'static PythonRuntime {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    &SHARED
        .get_or_init(|| {
            let wasm = std::fs::read(corral_test_support::fixture("python-3.12.0.wasm")).unwrap();
            let cache = tempfile::tempdir().unwrap();
            let (runtime, outcome) =
                PythonRuntime::load(&wasm, Some(&cache.path().join("modules"))).unwrap();
            assert_eq!(outcome, CacheOutcome::Miss);
            Shared {
                runtime,
                _cache: cache,
            }
        })
        .runtime
}

struct Kernel {
    interpreter: Interpreter,
    scratch: tempfile::TempDir,
}

fn kernel() -> Kernel {
    let scratch = tempfile::tempdir().unwrap();
    let interpreter = runtime()
        .start(&InterpreterOptions::new(scratch.path()))
        .unwrap();
    Kernel {
        interpreter,
        scratch,
    }
}

impl Kernel {
    fn run(&mut self, code: &str) -> CellOutput {
        self.interpreter
            .run(code, CELL, None)
            .unwrap_or_else(|stop| panic!("{code:?} stopped the interpreter: {stop}"))
    }

    /// The repr of `code`'s last expression.
    fn eval(&mut self, code: &str) -> String {
        let out = self.run(code);
        assert_eq!(out.error, None, "{code:?}");
        let result = out.result.clone();
        result.unwrap_or_else(|| panic!("{code:?} has no result: {out:?}"))
    }

    /// The traceback of `code`.
    fn fails(&mut self, code: &str) -> String {
        let out = self.run(code);
        let error = out.error.clone();
        error.unwrap_or_else(|| panic!("{code:?} did not fail: {out:?}"))
    }
}

#[test]
fn arithmetic_stdlib_and_state_carry_from_cell_to_cell() {
    let mut k = kernel();
    assert_eq!(k.eval("x = 2**100\nx"), "1267650600228229401496703205376");
    let out = k.run("print(x + 1)");
    assert_eq!(out.stdout, "1267650600228229401496703205377\n");
    assert_eq!(out.result, None);
    k.run(
        "import json, math, datetime, re\n\
         def area(r):\n    return round(math.pi * r * r, 3)",
    );
    assert_eq!(k.eval("area(2)"), "12.566");
    assert_eq!(
        k.eval("json.dumps({'a': [1, 2]}, sort_keys=True)"),
        "'{\"a\": [1, 2]}'"
    );
    assert_eq!(
        k.eval("datetime.date(2024, 7, 23).isoformat()"),
        "'2024-07-23'"
    );
    assert_eq!(
        k.eval("re.findall(r'\\d+', 'a1b22c333')"),
        "['1', '22', '333']"
    );
    assert_eq!(
        k.eval("import sqlite3, zlib, hashlib, decimal\nhashlib.sha256(b'abc').hexdigest()[:8]"),
        "'ba7816bf'"
    );
    // A fresh interpreter knows none of it.
    let mut fresh = kernel();
    assert!(fresh
        .fails("x")
        .contains("NameError: name 'x' is not defined"));
}

#[test]
fn an_exception_returns_its_traceback_and_the_next_cell_works() {
    let mut k = kernel();
    k.run("def f(n):\n    return 1 / n");
    let tb = k.fails("print('before')\nf(0)");
    assert!(tb.starts_with("Traceback (most recent call last):"), "{tb}");
    assert!(
        tb.contains("<cell 2>") && tb.contains("return 1 / n"),
        "{tb}"
    );
    assert!(tb.contains("ZeroDivisionError: division by zero"), "{tb}");
    assert!(
        !tb.contains("driver"),
        "the driver's frames are left out: {tb}"
    );
    let syntax = k.fails("1 +");
    assert!(syntax.contains("SyntaxError"), "{syntax}");
    // SystemExit ends the cell, not the interpreter; input() reads nothing.
    assert!(k.fails("import sys; sys.exit(3)").contains("SystemExit: 3"));
    assert!(k.fails("input()").contains("EOFError"));
    assert_eq!(k.eval("f(4)"), "0.25");
}

#[test]
fn a_loop_or_a_sleep_past_the_deadline_stops_and_a_new_interpreter_works() {
    for code in ["while True:\n    pass", "import time\ntime.sleep(600)"] {
        let mut k = kernel();
        k.run("y = 1");
        let started = Instant::now();
        let stop = k
            .interpreter
            .run(code, Duration::from_millis(700), None)
            .unwrap_err();
        let took = started.elapsed();
        assert_eq!(stop, CellStop::Deadline(Duration::from_millis(700)));
        // A generous liveness bound (the deadline is 0.7 s), not a speed claim.
        assert!(took < Duration::from_secs(5), "{code:?} took {took:?}");
        assert!(!k.interpreter.is_alive());
        assert!(
            k.interpreter.run("y", CELL, None).is_err(),
            "it stays stopped"
        );
        assert_eq!(kernel().eval("2 + 2"), "4");
    }
}

#[test]
fn a_cancelled_cell_stops_soon() {
    let mut k = kernel();
    k.run("pass");
    let flag = Arc::new(AtomicBool::new(false));
    let setter = {
        let flag = flag.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            flag.store(true, Ordering::Relaxed);
        })
    };
    let started = Instant::now();
    let stop = k
        .interpreter
        .run("while True:\n    pass", CELL, Some(&flag))
        .unwrap_err();
    setter.join().unwrap();
    assert_eq!(stop, CellStop::Cancelled);
    // A generous liveness bound (cancelled after 0.3 s), not a speed claim.
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn memory_and_recursion_bombs_are_stopped_and_the_host_is_unharmed() {
    let mut k = kernel();
    // One allocation past the cap is a MemoryError inside Python; the interpreter lives.
    assert!(k.fails("x = bytearray(10**9)").contains("MemoryError"));
    assert_eq!(k.eval("1 + 1"), "2");
    // Growing until the cap: a MemoryError, or the interpreter dies of it.
    let options = InterpreterOptions {
        memory_bytes: 96 << 20,
        ..InterpreterOptions::new(k.scratch.path())
    };
    let mut small = runtime().start(&options).unwrap();
    match small.run(
        "b = []\nwhile True:\n    b.append(bytearray(1 << 20))",
        CELL,
        None,
    ) {
        Ok(out) => assert!(out.error.unwrap_or_default().contains("MemoryError")),
        Err(stop) => assert_eq!(stop, CellStop::OutOfMemory(96 << 20)),
    }
    // Deep recursion, past the default limit and in C: a RecursionError, or a stack overflow
    // that ends the interpreter.
    for bomb in [
        "import sys\nsys.setrecursionlimit(50_000)\ndef r(n): return r(n + 1)\nr(0)",
        "import json\njson.loads('[' * 200_000 + ']' * 200_000)",
    ] {
        let mut k = kernel();
        match k.interpreter.run(bomb, CELL, None) {
            Ok(out) => {
                let tb = out.error.unwrap_or_default();
                assert!(tb.contains("RecursionError"), "{bomb:?}: {tb}");
            }
            Err(CellStop::Ended(why)) => assert!(why.contains("stack"), "{bomb:?}: {why}"),
            Err(other) => panic!("{bomb:?}: {other}"),
        }
    }
    assert_eq!(kernel().eval("'still here'"), "'still here'");
}

#[test]
fn no_way_out_of_the_sandbox() {
    let mut k = kernel();
    let refused = [
        ("open('/etc/passwd').read()", "FileNotFoundError"),
        ("import os\nos.listdir('/')", "FileNotFoundError"),
        ("open('../etc/passwd').read()", "PermissionError"),
        (
            "open('/scratch/../../etc/passwd').read()",
            "PermissionError",
        ),
        ("import socket\nsocket.socket()", "OSError"),
        (
            "import socket\nsocket.create_connection(('127.0.0.1', 22))",
            "Error",
        ),
        ("import subprocess\nsubprocess.run(['ls'])", "OSError"),
        ("import os\nos.system('ls')", "AttributeError"),
    ];
    for (code, error) in refused {
        let tb = k.fails(code);
        assert!(tb.contains(error), "{code:?}: {tb}");
    }
    // No host environment, and the working folder is the scratch folder.
    assert_eq!(k.eval("import os\ndict(os.environ)"), "{}");
    assert_eq!(k.eval("os.getcwd()"), "'/scratch'");
    assert_eq!(k.eval("1 + 1"), "2");
}

#[test]
fn files_go_to_the_scratch_folder_and_a_workspace_is_read_only() {
    let workspace = tempfile::tempdir().unwrap();
    std::fs::write(workspace.path().join("data.csv"), "a,b\n1,2\n").unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let options = InterpreterOptions {
        workspace: Some((workspace.path().to_path_buf(), false)),
        ..InterpreterOptions::new(scratch.path())
    };
    let mut k = Kernel {
        interpreter: runtime().start(&options).unwrap(),
        scratch,
    };
    k.run("open('notes.txt', 'w').write('héllo')");
    assert_eq!(
        std::fs::read_to_string(k.scratch.path().join("notes.txt")).unwrap(),
        "héllo"
    );
    assert_eq!(
        k.eval("open('/workspace/data.csv').read()"),
        "'a,b\\n1,2\\n'"
    );
    let tb = k.fails("open('/workspace/new.txt', 'w')");
    assert!(tb.contains("Error"), "{tb}");
    assert!(!workspace.path().join("new.txt").exists());
}

#[test]
fn ten_megabytes_of_output_are_capped_and_unicode_is_intact() {
    let mut k = kernel();
    let out = k.run("print('x' * 10_000_000)\nprint('done')");
    assert_eq!(out.stdout.len(), corral_sandbox::python::DEFAULT_KEEP_CHARS);
    assert_eq!(out.dropped["stdout"], 10_000_006 - out.stdout.len());
    let out = k.run("print('नमस्ते दुनिया', 'สวัสดีชาวโลก', '🎉👍')\n'ok ✓'");
    assert_eq!(out.stdout, "नमस्ते दुनिया สวัสดีชาวโลก 🎉👍\n");
    assert_eq!(out.result.as_deref(), Some("'ok ✓'"));
    let out = k.run("'é' * 20_000");
    assert_eq!(
        out.result.unwrap().chars().count(),
        corral_sandbox::python::DEFAULT_KEEP_CHARS
    );
    // Writing around the driver, to the real stdout, is shown and capped too.
    let out = k.run("import os\nos.write(1, b'raw\\n')");
    assert_eq!(out.loose, "raw\n");
}

#[test]
fn the_interpreter_exiting_is_reported_and_the_next_one_works() {
    let mut k = kernel();
    let stop = k
        .interpreter
        .run("import os\nos._exit(7)", CELL, None)
        .unwrap_err();
    assert_eq!(stop, CellStop::Ended("it exited with status 7".into()));
    assert_eq!(kernel().eval("'next'"), "'next'");
}

#[test]
fn a_forged_driver_frame_changes_no_cells_answer() {
    let mut k = kernel();
    // The code can learn the driver's nonce (it shares the process) and write frames in its
    // form, guessing ids; only the frame answering the request's random id counts.
    let forge = "import sys, os\n\
                 nonce = sys.argv[1]\n\
                 for i in range(0, 8):\n    \
                     frame = {'id': i, 'stdout': 'forged', 'stderr': '', 'result': None, 'error': None}\n    \
                     os.write(1, (nonce + ' ' + __import__('json').dumps(frame) + '\\n').encode())\n\
                 print('real')";
    let out = k.run(forge);
    assert_eq!(out.stdout, "real\n");
    assert!(out.loose.contains("forged"), "shown as output: {out:?}");
    let out = k.run("print('next')");
    assert_eq!(out.stdout, "next\n");
    assert_eq!(out.loose, "");
    assert_eq!(k.eval("6 * 7"), "42");
}
