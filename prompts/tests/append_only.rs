//! Append-only rendering, the property that keeps the engine's KV cache valid: a conversation plus
//! one message renders to the old text plus a suffix, and an assistant turn rendered from the
//! text the model generated extends the prompt it was generated from, byte for byte.

mod common;

use common::gen::{case, text};
use corral_prompts::llama31::{Style, ToolPrompt};
use corral_prompts::{Conversation, Format, Message};
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn cases() -> u32 {
    std::env::var("CORRAL_PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn adding_a_message_only_appends() {
    let checked = AtomicUsize::new(0);
    let strategy = (case(), any::<bool>(), any::<bool>());
    runner()
        .run(&strategy, |(mut case, meta, function_tag)| {
            if meta {
                case.format.style = Style::Meta;
                if function_tag {
                    case.format.tool_prompt = ToolPrompt::FunctionTag;
                }
            }
            let messages = case.conversation.messages.clone();
            for k in 1..messages.len() {
                let mut before = case.conversation.clone();
                before.messages = messages[..k].to_vec();
                let mut after = case.conversation.clone();
                after.messages = messages[..=k].to_vec();
                let (Ok(old), Ok(new)) = (
                    case.format.render(&before, false),
                    case.format.render(&after, false),
                ) else {
                    continue; // e.g. tools in the first user message before it exists
                };
                prop_assert!(
                    new.starts_with(&old),
                    "not append-only at message {k}:\nold {old:?}\nnew {new:?}"
                );
                if matches!(messages[k], Message::Assistant { .. }) {
                    let prompt = case.format.render(&before, true).unwrap();
                    prop_assert!(
                        new.starts_with(&prompt),
                        "generation prompt not extended at {k}"
                    );
                }
                checked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
        .unwrap();
    let checked = checked.into_inner();
    eprintln!("{checked} message appends checked");
    assert!(checked > cases() as usize);
}

/// What the model might generate, stop token included or not.
fn generation() -> impl Strategy<Value = String> {
    let stop = prop_oneof![Just("<|eot_id|>"), Just("<|eom_id|>"), Just("")];
    let body = prop_oneof![
        text(),
        text().prop_map(|t| format!("{{\"name\": \"f\", \"parameters\": {{\"q\": {t:?}}}}}")),
        text().prop_map(|t| format!("<|python_tag|>brave_search.call(query={t:?})")),
        text().prop_map(|t| format!("  {{ \"name\":\"f\",\"arguments\":{{\"q\":{t:?}}} }}\n")),
    ];
    (body, stop).prop_map(|(body, stop)| format!("{body}{stop}"))
}

#[test]
fn generated_turns_extend_their_prompt_exactly() {
    let checked = AtomicUsize::new(0);
    runner()
        .run(
            &(case(), any::<bool>(), generation()),
            |(case, meta, generated)| {
                let mut format = case.format.clone();
                if meta {
                    format.style = Style::Meta;
                }
                let mut conversation: Conversation = case.conversation.clone();
                let Ok(prompt) = format.render(&conversation, true) else {
                    return Ok(());
                };
                conversation.push(Message::generated(generated.clone()));
                let rendered = format.render(&conversation, false).unwrap();
                let ends_with_stop = ["<|eot_id|>", "<|eom_id|>"]
                    .iter()
                    .any(|s| generated.ends_with(s));
                let expected = format!(
                    "{prompt}{generated}{}",
                    if ends_with_stop { "" } else { "<|eot_id|>" }
                );
                prop_assert_eq!(rendered.clone(), expected);
                // And the next turn's prompt extends it.
                conversation.push(Message::user("next"));
                prop_assert!(format
                    .render(&conversation, true)
                    .unwrap()
                    .starts_with(&rendered));
                checked.fetch_add(1, Ordering::Relaxed);
                Ok(())
            },
        )
        .unwrap();
    let checked = checked.into_inner();
    eprintln!("{checked} generated turns re-rendered byte-exactly");
    assert!(checked > 0);
}
