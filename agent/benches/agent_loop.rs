//! The agent loop's own cost per step, beyond generation: one run, both sides alike.
//!
//! A turn of `STEPS` generations (seven calls to a trivial native tool, then an answer) runs
//! through [`Agent::run_turn`] on the scripted backend; the reference replays the very prompts
//! that turn produced, straight into the same backend with the same replies. The difference is
//! what the loop adds per step: marking untrusted text, rendering the conversation, building
//! the constraint, parsing the stream, validating and dispatching the call (the tool itself
//! returns at once), and appending the result. The backend is the scripted one, so generation
//! costs almost nothing on either side; the figure is the overhead alone. Medians over `REPS`.
//! Run with `cargo bench -p corral --bench agent_loop`.

use std::sync::Arc;
use std::time::Instant;

use corral::agent::{prompt_tools, Agent, Decision, Policy, TurnOptions};
use corral::engine::{generate_to_string, GenerateRequest, ScriptedBackend, ScriptedReply};
use corral_prompts::llama31::{Llama31, Style};
use corral_prompts::{Conversation, Message};
use corral_tools::{FnTool, Registry, ToolSpec};
use serde_json::json;

const STEPS: usize = 8;
const REPS: usize = 200;

fn replies() -> Vec<ScriptedReply> {
    let mut r: Vec<ScriptedReply> = (0..STEPS - 1)
        .map(|i| {
            let call = json!({"name": "add", "parameters": {"a": i, "b": 1}}).to_string();
            ScriptedReply::ending_with(&call, "<|eom_id|>")
        })
        .collect();
    r.push(ScriptedReply::ending_with("All done.", "<|eot_id|>"));
    r
}

fn registry() -> Registry {
    let mut reg = Registry::new();
    let spec = ToolSpec {
        name: "add".into(),
        description: Some("adds two integers".into()),
        parameters: json!({
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"]
        }),
    };
    let add = FnTool::new(spec, |args| {
        Ok((args["a"].as_i64().unwrap_or(0) + args["b"].as_i64().unwrap_or(0)).to_string())
    });
    reg.register(Arc::new(add), "bench").expect("register");
    reg
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let reg = registry();
    let format = Llama31::new(Style::Template).with_date(Some("1 Dec 2026".into()));
    let options = TurnOptions {
        policy: Policy {
            default: Decision::Allow,
            ..Policy::default()
        },
        ..TurnOptions::default()
    };
    let (mut looped, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..REPS {
        let mut backend = ScriptedBackend::new(replies()).with_control_tokens(&[
            "<|eot_id|>",
            "<|eom_id|>",
            "<|start_header_id|>",
        ]);
        let mut conversation = Conversation::new(vec![Message::user("Add up, step by step.")])
            .with_tools(prompt_tools(&reg, None));
        let started = Instant::now();
        let outcome = Agent::new(&mut backend, &format, &reg).run_turn(
            &mut conversation,
            &options,
            &mut |_| true,
            &mut |_| {},
        );
        looped.push(started.elapsed().as_secs_f64());
        assert_eq!(outcome.steps, STEPS, "{outcome:?}");

        let prompts = backend.raw_prompts().to_vec();
        let mut reference = ScriptedBackend::new(replies());
        let started = Instant::now();
        for prompt in prompts {
            let request = GenerateRequest {
                prompt: prompt.into(),
                max_tokens: options.max_tokens,
                ..GenerateRequest::default()
            };
            generate_to_string(&mut reference, &request).expect("generate");
        }
        direct.push(started.elapsed().as_secs_f64());
    }
    let (l, d) = (median(looped), median(direct));
    println!(
        "agent loop: {:.3} ms per turn of {STEPS} steps vs {:.3} ms for the same generations alone \
         (ratio {:.1}); overhead {:.3} ms per step (median of {REPS})",
        l * 1e3,
        d * 1e3,
        l / d,
        (l - d) / STEPS as f64 * 1e3
    );
}
