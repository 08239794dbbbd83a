//! `code_interpreter`: Python the model writes, run by CPython inside the sandbox, with state
//! kept like a notebook's.
//!
//! One [`CodeInterpreter`] serves one conversation. It holds a live interpreter
//! ([`corral_sandbox::python`]) in which every call's code runs, so variables, imports and
//! functions carry from call to call; `reset: true` starts a fresh one. A call that runs past
//! its deadline or kills the interpreter (memory cap, stack overflow, `os._exit`) ends that
//! interpreter: the model reads why, and that its state was lost (a tool error, so the turn goes
//! on); the next call gets a new one, already started. A cancelled call ends the turn.
//!
//! The successful cells of the current interpreter are kept ([`CodeInterpreter::cells`]), so a
//! saved conversation can bring its state back: [`CodeInterpreter::restore`] re-runs them in a
//! fresh interpreter before the next call (their output is not shown again).
//!
//! The runtime (the compiled CPython) comes from a loader the caller gives, called on first
//! need: pulling and compiling take seconds, so [`CodeInterpreter::warm_up`] can do it ahead,
//! on a thread, when the runtime is already at hand.

use std::fmt::Write as _;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use corral_prompts::ToolSpec;
use corral_sandbox::python::{
    CellOutput, CellStop, Interpreter, InterpreterOptions, PythonRuntime,
};
use serde_json::{json, Value};

use crate::call::{CallControl, CallError, CallOutput, RuntimeError, RuntimeErrorKind};
use crate::Tool;

/// The tool's name, as Llama 3.1 knows it.
pub const NAME: &str = "code_interpreter";
/// The longest a cell may run when the caller sets no sooner deadline.
pub const DEFAULT_CELL_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest one restored cell may run.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(60);

/// Makes the runtime: finds (or pulls) and compiles the interpreter. Called on first need, and
/// again after it failed.
pub type Loader = dyn Fn() -> Result<PythonRuntime, String> + Send + Sync;

/// The code interpreter of one conversation.
pub struct CodeInterpreter {
    spec: ToolSpec,
    shared: Arc<Shared>,
}

struct Shared {
    loader: Box<Loader>,
    options: InterpreterOptions,
    cell_timeout: Duration,
    runtime: Mutex<Option<PythonRuntime>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    interpreter: Option<Interpreter>,
    /// Cells that ran without an exception in the current interpreter, or wait to be re-run.
    cells: Vec<String>,
    /// Whether `cells` must be re-run before the next call (after [`CodeInterpreter::restore`]).
    replay: bool,
}

/// The tool's spec: `code`, and `reset` to start from a fresh interpreter.
pub fn spec() -> ToolSpec {
    ToolSpec::new(
        NAME,
        "Runs Python 3.12 code in a sandboxed interpreter and returns what it printed, the value \
         of its last expression and any traceback. Variables, imports and functions stay defined \
         for later calls in this conversation. The standard library is available (no network, \
         no subprocesses); the working folder /scratch is writable. Set reset to true to start \
         from a fresh interpreter.",
        json!({
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "Python code to run"},
                "reset": {"type": "boolean", "description": "Start from a fresh interpreter first"}
            },
            "required": ["code"],
            "additionalProperties": false
        }),
    )
}

impl CodeInterpreter {
    /// An interpreter tool whose cells run with `options` (scratch folder, memory cap, output
    /// caps), each within `cell_timeout` at most, on the runtime `loader` makes.
    pub fn new(options: InterpreterOptions, cell_timeout: Duration, loader: Box<Loader>) -> Self {
        CodeInterpreter {
            spec: spec(),
            shared: Arc::new(Shared {
                loader,
                options,
                cell_timeout,
                runtime: Mutex::new(None),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Loads the runtime and starts the interpreter on a thread, so the first call does not
    /// wait for them. Failures are left for the first call to report.
    pub fn warm_up(&self) {
        let shared = Arc::clone(&self.shared);
        let _ = std::thread::Builder::new()
            .name("corral-python-warm-up".into())
            .spawn(move || {
                let mut state = shared.lock_state();
                let _ = shared.ensure_started(&mut state);
                if let Some(interpreter) = state.interpreter.as_mut() {
                    let _ = interpreter.wait_ready();
                }
            });
    }

    /// The cells that built the current interpreter's state, in order.
    pub fn cells(&self) -> Vec<String> {
        self.shared.lock_state().cells.clone()
    }

    /// Brings back the state `cells` built (from a saved conversation): they are re-run in a
    /// fresh interpreter before the next call.
    pub fn restore(&self, cells: Vec<String>) {
        let mut state = self.shared.lock_state();
        state.interpreter = None;
        state.replay = !cells.is_empty();
        state.cells = cells;
    }

    /// Forgets everything: the next call starts from a fresh interpreter.
    pub fn reset(&self) {
        let mut state = self.shared.lock_state();
        *state = State::default();
    }
}

impl Shared {
    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn runtime(&self) -> Result<PythonRuntime, String> {
        let mut runtime = self.runtime.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = runtime.as_ref() {
            return Ok(r.clone());
        }
        let loaded = (self.loader)()?;
        *runtime = Some(loaded.clone());
        Ok(loaded)
    }

    fn start(&self) -> Result<Interpreter, String> {
        self.runtime()?
            .start(&self.options)
            .map_err(|e| e.to_string())
    }

    /// Starts an interpreter in `state` unless a live one is there.
    fn ensure_started(&self, state: &mut State) -> Result<(), String> {
        if state.interpreter.as_ref().is_none_or(|i| !i.is_alive()) {
            state.interpreter = Some(self.start()?);
        }
        Ok(())
    }
}

fn runtime_error(kind: RuntimeErrorKind, message: String) -> CallError {
    CallError::Runtime(RuntimeError::new(kind, message))
}

impl Tool for CodeInterpreter {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn call(&self, args: &Value, control: &CallControl) -> Result<CallOutput, CallError> {
        if let Some(stopped) = control.stopped() {
            return Err(stopped);
        }
        let code = args.get("code").and_then(Value::as_str).unwrap_or_default();
        let shared = &self.shared;
        let mut state = shared.lock_state();
        if args.get("reset").and_then(Value::as_bool) == Some(true) {
            *state = State::default();
        }
        let mut notes = Vec::new();
        shared.ensure_started(&mut state).map_err(|e| {
            runtime_error(
                RuntimeErrorKind::Instantiate,
                format!("the code interpreter cannot start: {e}"),
            )
        })?;
        if std::mem::take(&mut state.replay) {
            notes.push(replay(&mut state));
        }
        let timeout = control
            .remaining()
            .map_or(shared.cell_timeout, |left| left.min(shared.cell_timeout));
        let cancel = control.cancel.flag();
        let interpreter = state.interpreter.as_mut().expect("started above");
        match interpreter.run(code, timeout, Some(&cancel as &AtomicBool)) {
            Ok(output) => {
                let text = render(&output, &notes);
                if output.error.is_some() {
                    return Err(CallError::Tool(text));
                }
                state.cells.push(code.to_owned());
                Ok(CallOutput::text(text))
            }
            Err(stop) => {
                // That interpreter is gone; start the next one now, so it is ready.
                state.cells.clear();
                state.interpreter = shared.start().ok();
                let message = format!(
                    "{stop}. The interpreter was restarted: variables, imports and functions \
                     from earlier calls are lost (files in /scratch are kept)."
                );
                // The user stopping the turn ends it; anything else is the model's to read, so
                // it can try again differently.
                if stop == CellStop::Cancelled {
                    Err(runtime_error(RuntimeErrorKind::Cancelled, message))
                } else {
                    Err(CallError::Tool(message))
                }
            }
        }
    }
}

/// Re-runs the kept cells in the (fresh) interpreter; says how it went.
fn replay(state: &mut State) -> String {
    let cells = std::mem::take(&mut state.cells);
    let total = cells.len();
    let Some(interpreter) = state.interpreter.as_mut() else {
        return "the saved state could not be restored".into();
    };
    for (done, cell) in cells.iter().enumerate() {
        match interpreter.run(cell, RESTORE_TIMEOUT, None) {
            Ok(out) if out.error.is_none() => state.cells.push(cell.clone()),
            Ok(_) | Err(_) => {
                return format!(
                    "restoring the saved state stopped at cell {} of {total}: later definitions \
                     are missing",
                    done + 1
                );
            }
        }
    }
    format!("the saved state was restored by re-running {total} earlier cell(s)")
}

/// What the model reads: stdout, stderr, the traceback, the last expression's value (each
/// cut with a marker where the interpreter dropped characters), then the time taken.
fn render(output: &CellOutput, notes: &[String]) -> String {
    let mut text = String::new();
    for note in notes {
        let _ = writeln!(text, "[{note}]");
    }
    let dropped = |key: &str| output.dropped.get(key).copied().unwrap_or(0);
    section(&mut text, "", &output.stdout, dropped("stdout"));
    section(&mut text, "", &output.loose, 0);
    section(&mut text, "stderr:\n", &output.stderr, dropped("stderr"));
    if let Some(error) = &output.error {
        section(&mut text, "", error, dropped("error"));
    }
    if let Some(result) = &output.result {
        section(&mut text, "Out: ", result, dropped("result"));
    }
    if text.is_empty() {
        text.push_str("(no output)\n");
    }
    let _ = write!(text, "[ran in {:.3} s]", output.elapsed.as_secs_f64());
    text
}

/// Appends `label` and `body` on lines of their own, with a marker for `dropped` characters.
fn section(text: &mut String, label: &str, body: &str, dropped: usize) {
    if body.is_empty() && dropped == 0 {
        return;
    }
    text.push_str(label);
    text.push_str(body);
    if !body.ends_with('\n') {
        text.push('\n');
    }
    if dropped > 0 {
        let _ = writeln!(text, "[… {dropped} more characters not shown]");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_result_shows_each_part_and_marks_what_was_cut() {
        let mut output = CellOutput {
            stdout: "hi\n".into(),
            result: Some("42".into()),
            elapsed: Duration::from_millis(12),
            ..CellOutput::default()
        };
        assert_eq!(render(&output, &[]), "hi\nOut: 42\n[ran in 0.012 s]");
        output.stdout = "x".repeat(5);
        output.dropped.insert("stdout".into(), 7);
        output.result = None;
        output.stderr = "warn".into();
        assert_eq!(
            render(&output, &["restored".into()]),
            "[restored]\nxxxxx\n[… 7 more characters not shown]\nstderr:\nwarn\n[ran in 0.012 s]"
        );
        let empty = CellOutput::default();
        assert_eq!(render(&empty, &[]), "(no output)\n[ran in 0.000 s]");
    }
}
