//! Generators of conversations for the property tests.

use corral_prompts::llama31::{Llama31, Style, ToolPrompt};
use corral_prompts::{BuiltinTool, Conversation, Message, ToolCall, ToolOutput, ToolSpec};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Text with the things that trip renderers: surrounding whitespace, quotes, braces, special-ish
/// markup, non-ASCII (Latin, CJK, emoji).
pub fn text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[ a-zA-Z0-9.,!?:'\"{}<>|\\\\\n\téüß日本語😀-]{0,24}").unwrap()
}

pub fn name() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-z][a-z0-9_.]{0,10}").unwrap()
}

pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        prop::num::f64::NORMAL.prop_map(|f| json!(f)),
        Just(json!(1.0)),
        Just(json!(1e16)),
        Just(json!(0.00001)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..4)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

pub fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::vec((text(), json_value()), 0..4)
        .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>()))
}

pub fn tool_spec() -> impl Strategy<Value = ToolSpec> {
    (name(), prop::option::of(text()), json_object()).prop_map(|(name, description, props)| {
        ToolSpec {
            name,
            description,
            parameters: json!({"type": "object", "properties": props, "required": []}),
        }
    })
}

#[derive(Debug, Clone)]
pub enum Turn {
    User(String),
    System(String),
    Text(String),
    /// A call: `builtin` picks a builtin tool of the conversation when there is one.
    Call {
        builtin: bool,
        index: usize,
        name: String,
        args: Value,
        string_args: Vec<(String, String)>,
    },
    Result(ToolOutput),
}

pub fn turn() -> impl Strategy<Value = Turn> {
    prop_oneof![
        3 => text().prop_map(Turn::User),
        1 => text().prop_map(Turn::System),
        3 => text().prop_map(Turn::Text),
        3 => (any::<bool>(), any::<usize>(), name(), json_object(), prop::collection::vec((name(), text()), 0..3))
            .prop_map(|(builtin, index, name, args, string_args)| Turn::Call { builtin, index, name, args, string_args }),
        3 => prop_oneof![
            text().prop_map(ToolOutput::Text),
            json_object().prop_map(ToolOutput::Json),
            prop::collection::vec(json_value(), 0..3).prop_map(|v| ToolOutput::Json(Value::Array(v))),
            text().prop_map(|t| ToolOutput::Json(Value::String(t))),
        ].prop_map(Turn::Result),
    ]
}

#[derive(Debug, Clone)]
pub struct Case {
    pub conversation: Conversation,
    pub format: Llama31,
    pub add_generation_prompt: bool,
}

pub fn case() -> impl Strategy<Value = Case> {
    (
        prop::option::of(text()),
        prop::option::of(prop::collection::vec(tool_spec(), 0..3)),
        prop::option::of(prop::sample::subsequence(BuiltinTool::ALL.to_vec(), 0..=3)),
        any::<bool>(),
        prop::option::of(text()),
        any::<bool>(),
        text(),
        prop::collection::vec(turn(), 0..7),
    )
        .prop_map(
            |(system, tools, builtins, in_user, date, gen, first, turns)| {
                let mut messages = Vec::new();
                if let Some(system) = system {
                    messages.push(Message::system(system));
                }
                messages.push(Message::user(first));
                let tool_names: Vec<String> =
                    tools.iter().flatten().map(|t| t.name.clone()).collect();
                for turn in turns {
                    messages.push(match turn {
                        Turn::User(t) => Message::user(t),
                        Turn::System(t) => Message::system(t),
                        Turn::Text(t) => Message::assistant(t),
                        Turn::Result(output) => Message::Tool {
                            content: output,
                            call_id: None,
                        },
                        Turn::Call {
                            builtin,
                            index,
                            name,
                            args,
                            string_args,
                        } => {
                            let builtin_list = builtins.as_deref().unwrap_or_default();
                            let call = if builtin && !builtin_list.is_empty() {
                                // The template concatenates builtin arguments as strings.
                                let args: Map<String, Value> = string_args
                                    .into_iter()
                                    .map(|(k, v)| (k, Value::String(v)))
                                    .collect();
                                ToolCall::new(
                                    builtin_list[index % builtin_list.len()].name(),
                                    Value::Object(args),
                                )
                            } else if !tool_names.is_empty() && index % 3 != 0 {
                                ToolCall::new(tool_names[index % tool_names.len()].clone(), args)
                            } else {
                                ToolCall::new(name, args)
                            };
                            Message::tool_calls(vec![call])
                        }
                    });
                }
                Case {
                    conversation: Conversation {
                        messages,
                        tools,
                        builtin_tools: builtins,
                    },
                    format: Llama31 {
                        style: Style::Template,
                        date,
                        tools_in_user_message: in_user,
                        tool_prompt: ToolPrompt::Json,
                    },
                    add_generation_prompt: gen,
                }
            },
        )
}
