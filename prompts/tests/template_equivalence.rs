//! Property test: the `template` style renders byte for byte what the official Llama 3.1 Instruct
//! chat template renders, run by a Jinja engine configured like Hugging Face `transformers`, over
//! many generated conversations (custom and builtin tools, tools in the user or system message,
//! dates, generation prompt, tool calls and results, non-ASCII, stray whitespace).
//!
//! The number of cases is `CORRAL_PROPTEST_CASES` (default 3000 per template).

mod common;

use common::gen::{case, Case};
use common::template_context::{context, for_llama_3_2};

use std::sync::atomic::{AtomicUsize, Ordering};

use corral_prompts::jinja::hf_environment;
use corral_prompts::llama31::{Llama31, Style};
use corral_prompts::{Conversation, Message, ToolCall};
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

fn cases() -> u32 {
    std::env::var("CORRAL_PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3000)
}

fn check_template(file: &str, builtins_allowed: bool) -> usize {
    let source = common::fixture_text(file);
    let mut env = hf_environment();
    env.add_template_owned("t", source)
        .expect("official template compiles");
    let template = env.get_template("t").unwrap();
    let compared = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&case(), |mut case| {
            if !builtins_allowed {
                for_llama_3_2(&mut case);
            }
            let ours = case
                .format
                .render_text(&case.conversation, case.add_generation_prompt);
            let reference = template.render(context(&case));
            match (ours, reference) {
                (Ok(ours), Ok(reference)) => common::assert_same(&ours, &reference, file),
                (ours, reference) => {
                    panic!("one side failed: ours {ours:?}, template {reference:?}")
                }
            }
            compared.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    let n = compared.into_inner();
    eprintln!("{file}: {n} generated conversations rendered byte-identically");
    n
}

#[test]
fn llama_3_1_template_matches_byte_for_byte() {
    assert_eq!(
        check_template("llama-3.1-instruct.jinja", true),
        cases() as usize
    );
}

#[test]
fn llama_3_3_template_matches_byte_for_byte() {
    assert_eq!(
        check_template("llama-3.3-instruct.jinja", true),
        cases() as usize
    );
}

/// Llama 3.2's template drops builtin tools and reads the date from `strftime_now`; without
/// builtin tools and with an explicit date it renders the same text as 3.1.
#[test]
fn llama_3_2_template_matches_without_builtin_tools() {
    assert_eq!(
        check_template("llama-3.2-instruct.jinja", false),
        cases() as usize
    );
}

#[test]
fn both_refuse_tools_without_a_user_message() {
    let source = common::fixture_text("llama-3.1-instruct.jinja");
    let mut env = hf_environment();
    env.add_template_owned("t", source).unwrap();
    let case = Case {
        conversation: Conversation::new(vec![Message::system("x")]).with_tools(vec![]),
        format: Llama31::new(Style::Template),
        add_generation_prompt: true,
    };
    assert!(env
        .get_template("t")
        .unwrap()
        .render(context(&case))
        .is_err());
    assert!(case.format.render_text(&case.conversation, true).is_err());
}

/// The template refuses several calls in one turn; corral renders each as the template renders
/// one, separated by newlines, ending like a single call.
#[test]
fn template_refuses_parallel_calls_and_corral_renders_them() {
    let source = common::fixture_text("llama-3.1-instruct.jinja");
    let mut env = hf_environment();
    env.add_template_owned("t", source).unwrap();
    let calls = vec![
        ToolCall::new("a", json!({"x": 1})),
        ToolCall::new("b", json!({})),
    ];
    let case = Case {
        conversation: Conversation::new(vec![Message::user("go"), Message::tool_calls(calls)]),
        format: Llama31::new(Style::Template).with_date(None),
        add_generation_prompt: false,
    };
    let error = env
        .get_template("t")
        .unwrap()
        .render(context(&case))
        .unwrap_err();
    assert!(error.to_string().contains("single tool-calls"), "{error}");
    let ours = case.format.render_text(&case.conversation, false).unwrap();
    assert!(ours.ends_with(
        "<|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"a\", \"parameters\": {\"x\": 1}}\n{\"name\": \"b\", \"parameters\": {}}<|eot_id|>"
    ), "{ours}");
}

#[test]
fn the_official_templates_are_detected_as_llama3() {
    for file in [
        "llama-3.1-instruct.jinja",
        "llama-3.2-instruct.jinja",
        "llama-3.3-instruct.jinja",
    ] {
        let source = common::fixture_text(file);
        assert_eq!(
            corral_prompts::detect(&source),
            Some(corral_prompts::FormatKind::Llama3),
            "{file}"
        );
    }
}
