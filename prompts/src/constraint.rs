//! Backend-neutral description of a tool-call constraint: a Lark grammar for llguidance plus the
//! triggers that engage it.
//!
//! # Contract with the engine
//! - [`ToolChoice::Auto`] gives a *lazy* constraint: the model samples freely, so it may answer in
//!   plain text. When it samples a [`TriggerKind::SpecialToken`] trigger, the engine starts an
//!   llguidance matcher on [`ToolConstraint::lark`] for the tokens *after* that token. When the
//!   turn's text (leading whitespace aside) begins with a [`TriggerKind::TextAtStart`] trigger, or
//!   a [`TriggerKind::Text`] trigger appears anywhere, the engine starts the matcher and feeds it
//!   the text from the trigger on (the trigger is part of what the grammar matches), then masks
//!   the following tokens.
//! - [`ToolChoice::Required`] and [`ToolChoice::Named`] give an *immediate* constraint (no
//!   triggers): the grammar matches the whole turn from its first token. Special tokens appear in
//!   the grammar as llguidance token references (`<|python_tag|>`), so the matcher's tokenizer must
//!   know them.
//! - [`ToolChoice::None`], or no tools at all, gives no constraint.
//!
//! When the grammar completes, the matcher allows only end-of-generation tokens; the engine stops
//! as usual and the parser reads the call.

use serde_json::Value;

use crate::types::{ToolChoice, ToolSpec};

/// A constraint on tool calls for one turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolConstraint {
    /// An llguidance Lark grammar (arguments as `%json` rules built from the tools' schemas).
    pub lark: String,
    /// What engages the grammar; empty for an immediate constraint.
    pub triggers: Vec<Trigger>,
    /// The choice this constraint implements.
    pub choice: ToolChoice,
}

impl ToolConstraint {
    /// Whether the constraint waits for a trigger (the model may answer in text).
    pub fn is_lazy(&self) -> bool {
        !self.triggers.is_empty()
    }

    /// A reply that is one JSON value valid against `schema` from its first token (JSON mode),
    /// spelled compactly as tool arguments are.
    pub fn json_reply(schema: &Value) -> ToolConstraint {
        let mut schema = match schema {
            Value::Object(map) if !map.is_empty() => schema.clone(),
            _ => serde_json::json!({"type": "object"}),
        };
        if let Value::Object(map) = &mut schema {
            map.entry("x-guidance").or_insert_with(compact_json);
        }
        ToolConstraint {
            lark: format!(
                "start: reply\nreply: %json {}",
                serde_json::to_string(&schema).expect("values serialise")
            ),
            triggers: Vec::new(),
            choice: ToolChoice::Required,
        }
    }
}

/// llguidance's options for JSON spelled one way: `{"a": 1, "b": [2, 3]}`.
fn compact_json() -> Value {
    serde_json::json!({
        "whitespace_flexible": false,
        "item_separator": ", ",
        "key_separator": ": ",
    })
}

/// Something in the generated turn that engages a lazy constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// How to recognise it.
    pub kind: TriggerKind,
    /// The special token's text or the text prefix.
    pub text: String,
}

impl Trigger {
    pub(crate) fn token(text: &str) -> Trigger {
        Trigger {
            kind: TriggerKind::SpecialToken,
            text: text.into(),
        }
    }

    pub(crate) fn at_start(text: &str) -> Trigger {
        Trigger {
            kind: TriggerKind::TextAtStart,
            text: text.into(),
        }
    }

    pub(crate) fn anywhere(text: &str) -> Trigger {
        Trigger {
            kind: TriggerKind::Text,
            text: text.into(),
        }
    }
}

/// Kinds of [`Trigger`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerKind {
    /// A special token was sampled; the grammar matches what follows it.
    SpecialToken,
    /// The turn begins (after whitespace) with this text; the grammar matches from it.
    TextAtStart,
    /// This text appears anywhere in the turn; the grammar matches from it.
    Text,
}

/// Why a constraint could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConstraintError {
    /// `tool_choice` names a tool that is not offered.
    #[error("tool_choice names `{0}`, which is not among the offered tools")]
    UnknownTool(String),
    /// A call is required but no tool is offered.
    #[error("tool_choice is `required` but no tools are offered")]
    NoTools,
}

/// A Lark string literal for `text`.
pub(crate) fn lark_string(text: &str) -> String {
    serde_json::to_string(text).expect("strings serialise")
}

/// The `%json` rule body for a tool's argument schema (`{"type": "object"}` when the schema is
/// not an object).
///
/// The arguments are spelled one way, as the templates render them and models write them:
/// `{"city": "Paris", "unit": "C"}`, no other whitespace. So the keys and separators are text
/// the grammar forces, which the engine appends without sampling (much cheaper than sampling
/// them), and a small model cannot wander into endless whitespace. A schema with its own
/// `x-guidance` options keeps them.
///
/// Objects that list their `properties` and say nothing of others get only those (see
/// [`close_objects`]).
pub(crate) fn json_rule(tool: &ToolSpec) -> String {
    let mut schema = match &tool.parameters {
        Value::Object(map) if !map.is_empty() => tool.parameters.clone(),
        _ => serde_json::json!({"type": "object"}),
    };
    close_objects(&mut schema);
    if let Value::Object(map) = &mut schema {
        map.entry("x-guidance").or_insert_with(compact_json);
    }
    format!(
        "%json {}",
        serde_json::to_string(&schema).expect("values serialise")
    )
}

/// Adds `"additionalProperties": false` to each object schema in `schema` that lists
/// `properties` and has neither `additionalProperties` nor `patternProperties`, as llama.cpp's
/// and OpenAI's tool grammars treat them. JSON Schema would allow any other key there, and most
/// published schemas (every pydantic-made MCP schema) leave the key out; a small model then
/// copies the tool's description into its arguments until it runs out of tokens. The schema
/// that validates the call is not changed. Subschemas of `allOf` are left alone: closing each
/// branch would make their conjunction unsatisfiable.
fn close_objects(schema: &mut Value) {
    let Value::Object(map) = schema else {
        return;
    };
    if map.contains_key("properties")
        && !map.contains_key("additionalProperties")
        && !map.contains_key("patternProperties")
    {
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
    for key in ["properties", "$defs", "definitions"] {
        if let Some(Value::Object(children)) = map.get_mut(key) {
            children.values_mut().for_each(close_objects);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = map.get_mut(key) {
            close_objects(child);
        }
    }
    for key in ["anyOf", "oneOf", "prefixItems"] {
        if let Some(Value::Array(children)) = map.get_mut(key) {
            children.iter_mut().for_each(close_objects);
        }
    }
}

/// The tools (custom, by index) that `choice` allows; errors for unknown names.
pub(crate) fn chosen<'a>(
    tools: &'a [ToolSpec],
    builtin_names: &[&str],
    choice: &ToolChoice,
) -> Result<(Vec<&'a ToolSpec>, Vec<String>), ConstraintError> {
    match choice {
        ToolChoice::Named(name) => {
            if let Some(tool) = tools.iter().find(|tool| &tool.name == name) {
                Ok((vec![tool], Vec::new()))
            } else if builtin_names.contains(&name.as_str()) {
                Ok((Vec::new(), vec![name.clone()]))
            } else {
                Err(ConstraintError::UnknownTool(name.clone()))
            }
        }
        _ => Ok((
            tools.iter().collect(),
            builtin_names.iter().map(|name| name.to_string()).collect(),
        )),
    }
}
