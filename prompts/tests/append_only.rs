//! Append-only rendering, the property that keeps the engine's KV cache valid: a conversation plus
//! one message renders to the old text plus a suffix, and an assistant turn rendered from the
//! text the model generated extends the prompt it was generated from, byte for byte.

mod common;

use common::gen::{case, text};
use corral_prompts::llama31::{Llama31, Style, ToolPrompt};
use corral_prompts::{Conversation, Format, Message, RenderError};

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

/// Whether `format` must refuse `conversation`: the template style puts the tools in the first
/// user message, and there is none after the system message. (The generated conversations always
/// put a user message right after the optional system message, so no other refusal can happen.)
fn refuses(format: &Llama31, conversation: &Conversation) -> bool {
    let after_system = match conversation.messages.first() {
        Some(Message::System { .. }) => &conversation.messages[1..],
        _ => &conversation.messages[..],
    };
    format.style == Style::Template
        && format.tools_in_user_message
        && conversation.tools.is_some()
        && after_system.is_empty()
}

#[test]
fn adding_a_message_only_appends() {
    let strategy = (case(), any::<bool>(), any::<bool>());
    runner()
        .run(&strategy, |(mut case, meta, function_tag)| {
            if meta {
                case.format.style = Style::Meta;
                if function_tag {
                    case.format.tool_prompt = ToolPrompt::FunctionTag;
                }
            }
            // A last user message, so every case has at least one append to check.
            let mut messages = case.conversation.messages.clone();
            messages.push(Message::user("next"));
            for k in 1..messages.len() {
                let mut before = case.conversation.clone();
                before.messages = messages[..k].to_vec();
                let mut after = case.conversation.clone();
                after.messages = messages[..=k].to_vec();
                let new = case.format.render(&after, false);
                prop_assert!(new.is_ok(), "{k}: {new:?}");
                let new = new.unwrap();
                let old = case.format.render(&before, false);
                if refuses(&case.format, &before) {
                    prop_assert_eq!(old, Err(RenderError::NoFirstUserMessage));
                } else {
                    prop_assert!(old.is_ok(), "{k}: {old:?}");
                    let old = old.unwrap();
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
                }
            }
            Ok(())
        })
        .unwrap();
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
    runner()
        .run(
            &(case(), any::<bool>(), generation()),
            |(case, meta, generated)| {
                let mut format = case.format.clone();
                if meta {
                    format.style = Style::Meta;
                }
                let mut conversation: Conversation = case.conversation.clone();
                // A user message follows the optional system message: nothing is refused.
                prop_assert!(!refuses(&format, &conversation));
                let prompt = format.render(&conversation, true).unwrap();
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
                Ok(())
            },
        )
        .unwrap();
}
