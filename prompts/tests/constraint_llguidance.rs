//! The tool-call constraints, checked with llguidance itself: each grammar compiles, accepts the
//! calls the renderer writes, and rejects unknown tools and arguments that break the schema.
//!
//! The tokenizer is llguidance's approximate one (one token per byte) plus the special tokens the
//! grammars reference, so what is tested is the language the grammar accepts.

use std::sync::Arc;

use corral_prompts::hermes::Hermes;
use corral_prompts::llama31::{Llama31, Style};
use corral_prompts::{
    BuiltinTool, ConstraintError, Conversation, Format, Message, ToolChoice, ToolConstraint,
    ToolSpec, TriggerKind,
};
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use serde_json::json;
use toktrie::{ApproximateTokEnv, InferenceCapabilities, TokEnv, TokRxInfo, TokTrie, TokenId};

const SPECIALS: &[&str] = &["<|python_tag|>", "<|eom_id|>"];

fn tok_env() -> TokEnv {
    let mut words: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    for special in SPECIALS {
        let mut word = vec![TokTrie::SPECIAL_TOKEN_MARKER];
        word.extend_from_slice(special.as_bytes());
        words.push(word);
    }
    let info = TokRxInfo::new(words.len() as u32, words.len() as u32 - 1);
    Arc::new(ApproximateTokEnv::new(TokTrie::from(&info, &words)))
}

/// Bytes as byte tokens, the special tokens as theirs.
fn tokenize(text: &str) -> Vec<TokenId> {
    let mut tokens = Vec::new();
    let mut rest = text;
    'outer: while !rest.is_empty() {
        for (i, special) in SPECIALS.iter().enumerate() {
            if let Some(after) = rest.strip_prefix(special) {
                tokens.push(256 + i as TokenId);
                rest = after;
                continue 'outer;
            }
        }
        let c = rest.chars().next().unwrap();
        tokens.extend(rest[..c.len_utf8()].bytes().map(TokenId::from));
        rest = &rest[c.len_utf8()..];
    }
    tokens
}

fn matcher(lark: &str) -> Matcher {
    let env = tok_env();
    let factory = ParserFactory::new(&env, InferenceCapabilities::default(), &[]).unwrap();
    let matcher = Matcher::new(factory.create_parser(TopLevelGrammar::from_lark(lark.to_string())));
    assert!(
        !matcher.is_error(),
        "grammar does not compile: {:?}\n{lark}",
        matcher.get_error()
    );
    matcher
}

/// Whether the grammar accepts exactly `text`.
fn accepts(constraint: &ToolConstraint, text: &str) -> bool {
    let mut matcher = matcher(&constraint.lark);
    let tokens = tokenize(text);
    let valid = matcher.validate_tokens(&tokens).unwrap_or(0);
    if valid != tokens.len() {
        return false;
    }
    matcher.consume_tokens(&tokens).unwrap();
    matcher.is_accepting().unwrap_or(false)
}

fn weather() -> ToolSpec {
    ToolSpec::new(
        "get_weather",
        "Weather in a city",
        json!({
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["C", "F"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7}
            },
            "required": ["city"],
            "additionalProperties": false
        }),
    )
}

fn factorial() -> ToolSpec {
    ToolSpec::new(
        "math.factorial",
        "n!",
        json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}),
    )
}

fn conversation(builtins: Vec<BuiltinTool>) -> Conversation {
    Conversation::new(vec![Message::user("q")])
        .with_tools(vec![weather(), factorial()])
        .with_builtin_tools(builtins)
}

fn llama() -> Llama31 {
    Llama31::new(Style::Template)
}

#[test]
fn auto_is_lazy_and_accepts_valid_calls_only() {
    let constraint = llama()
        .constraint(
            &conversation(vec![BuiltinTool::BraveSearch]),
            &ToolChoice::Auto,
        )
        .unwrap()
        .expect("a constraint");
    assert!(constraint.is_lazy());
    let kinds: Vec<(TriggerKind, &str)> = constraint
        .triggers
        .iter()
        .map(|t| (t.kind, t.text.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (TriggerKind::TextAtStart, "{\""),
            (TriggerKind::SpecialToken, "<|python_tag|>")
        ]
    );
    for good in [
        r#"{"name": "get_weather", "parameters": {"city": "Zürich"}}"#,
        r#"{"name": "get_weather", "parameters": {"city": "Oslo", "unit": "C", "days": 3}}"#,
        r#"{"name": "math.factorial", "parameters": {"n": 5}}"#,
        "brave_search.call(query=\"météo à Paris\")",
        "{\"name\": \"math.factorial\", \"parameters\": {\"n\": 5}}\nbrave_search.call(query=\"x\")",
    ] {
        assert!(accepts(&constraint, good), "should accept {good}");
    }
    for bad in [
        r#"{"name": "launch_rockets", "parameters": {}}"#,
        r#"{"name": "get_weather", "parameters": {}}"#,
        r#"{"name": "get_weather", "parameters": {"city": 3}}"#,
        r#"{"name": "get_weather", "parameters": {"city": "Oslo", "unit": "K"}}"#,
        r#"{"name": "get_weather", "parameters": {"city": "Oslo", "days": 9}}"#,
        r#"{"name": "get_weather", "parameters": {"city": "Oslo", "extra": 1}}"#,
        r#"{"name": "math.factorial", "parameters": {"n": 1.5}}"#,
        "wolfram_alpha.call(query=\"x\")",
        "brave_search.call(query=\"unterminated)",
        "Sure, here you go",
    ] {
        assert!(!accepts(&constraint, bad), "should reject {bad}");
    }
}

#[test]
fn the_renderers_calls_satisfy_the_constraint() {
    // What the template style renders for a call is exactly what the grammar expects.
    let mut conversation = conversation(vec![BuiltinTool::BraveSearch]);
    conversation.push(Message::tool_calls(vec![
        corral_prompts::ToolCall::new("get_weather", json!({"city": "Zürich", "unit": "F"})),
        corral_prompts::ToolCall::new("brave_search", json!({"query": "news"})),
    ]));
    let text = llama().render(&conversation, false).unwrap();
    let header = "<|start_header_id|>assistant<|end_header_id|>\n\n";
    let turn = &text[text.rfind(header).unwrap() + header.len()..];
    let body = turn
        .strip_suffix("<|eom_id|>")
        .unwrap()
        .replace("<|python_tag|>", "");
    let constraint = llama()
        .constraint(&conversation, &ToolChoice::Auto)
        .unwrap()
        .unwrap();
    assert!(accepts(&constraint, &body), "{body}");
}

#[test]
fn required_and_named_engage_from_the_first_token() {
    let required = llama()
        .constraint(
            &conversation(vec![BuiltinTool::BraveSearch]),
            &ToolChoice::Required,
        )
        .unwrap()
        .unwrap();
    assert!(!required.is_lazy());
    assert!(accepts(
        &required,
        r#"{"name": "get_weather", "parameters": {"city": "Oslo"}}"#
    ));
    assert!(accepts(
        &required,
        "<|python_tag|>brave_search.call(query=\"x\")"
    ));
    assert!(accepts(
        &required,
        "<|python_tag|>{\"name\": \"math.factorial\", \"parameters\": {\"n\": 2}}"
    ));
    assert!(!accepts(&required, "Hello"));
    assert!(
        !accepts(&required, "brave_search.call(query=\"x\")"),
        "builtins need the tag"
    );

    let named = llama()
        .constraint(
            &conversation(vec![]),
            &ToolChoice::Named("math.factorial".into()),
        )
        .unwrap()
        .unwrap();
    assert!(accepts(
        &named,
        r#"{"name": "math.factorial", "parameters": {"n": 2}}"#
    ));
    assert!(!accepts(
        &named,
        r#"{"name": "get_weather", "parameters": {"city": "Oslo"}}"#
    ));
}

#[test]
fn code_interpreter_keeps_the_tag_free_in_auto_and_allows_code_when_required() {
    let conversation = conversation(vec![BuiltinTool::CodeInterpreter]);
    let auto = llama()
        .constraint(&conversation, &ToolChoice::Auto)
        .unwrap()
        .unwrap();
    assert_eq!(
        auto.triggers.len(),
        1,
        "only the JSON trigger: code after the tag stays free"
    );
    let named = llama()
        .constraint(&conversation, &ToolChoice::Named("code_interpreter".into()))
        .unwrap()
        .unwrap();
    assert!(accepts(&named, "<|python_tag|>print(1 + 1)\nimport os"));
    assert!(!accepts(&named, "print(1)"));
}

#[test]
fn none_and_unknown_choices() {
    assert_eq!(
        llama().constraint(&conversation(vec![]), &ToolChoice::None),
        Ok(None)
    );
    assert_eq!(
        llama().constraint(&conversation(vec![]), &ToolChoice::Named("nope".into())),
        Err(ConstraintError::UnknownTool("nope".into()))
    );
    let empty = Conversation::new(vec![Message::user("q")]);
    assert_eq!(llama().constraint(&empty, &ToolChoice::Auto), Ok(None));
    assert_eq!(
        llama().constraint(&empty, &ToolChoice::Required),
        Err(ConstraintError::NoTools)
    );
}

#[test]
fn hermes_constraint_accepts_tool_call_tags() {
    let hermes = Hermes::new("{{ messages }}", "", "<|im_end|>").unwrap();
    let constraint = hermes
        .constraint(&conversation(vec![]), &ToolChoice::Auto)
        .unwrap()
        .unwrap();
    assert_eq!(constraint.triggers[0].kind, TriggerKind::Text);
    assert_eq!(constraint.triggers[0].text, "<tool_call>");
    assert!(accepts(&constraint, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}\n</tool_call>"));
    assert!(!accepts(&constraint, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"town\": \"Rome\"}}\n</tool_call>"));
    assert!(!accepts(
        &constraint,
        "<tool_call>\n{\"name\": \"fly\", \"arguments\": {}}\n</tool_call>"
    ));
}

#[test]
fn objects_that_list_their_properties_get_only_those() {
    // As pydantic writes schemas (every Python MCP server's): no `additionalProperties`.
    let timezone = ToolSpec::new(
        "get_time",
        "Current time",
        json!({
            "type": "object",
            "title": "get_timeArguments",
            "properties": {
                "timezone": {"type": "string", "title": "Timezone"},
                "place": {"$ref": "#/$defs/Place"}
            },
            "required": ["timezone"],
            "$defs": {"Place": {"type": "object", "properties": {"city": {"type": "string"}}}}
        }),
    );
    let open = ToolSpec::new(
        "tag",
        "Free-form tags",
        json!({"type": "object", "properties": {"name": {"type": "string"}},
               "additionalProperties": {"type": "integer"}}),
    );
    let conversation = Conversation::new(vec![Message::user("q")]).with_tools(vec![timezone, open]);
    let required = llama()
        .constraint(&conversation, &ToolChoice::Required)
        .unwrap()
        .unwrap();
    let call = |args: &str| format!(r#"{{"name": "get_time", "parameters": {args}}}"#);
    assert!(accepts(&required, &call(r#"{"timezone": "UTC"}"#)));
    assert!(accepts(
        &required,
        &call(r#"{"timezone": "UTC", "place": {"city": "Oslo"}}"#)
    ));
    assert!(!accepts(
        &required,
        &call(r#"{"timezone": "UTC", "description": "Current time"}"#)
    ));
    assert!(
        !accepts(
            &required,
            &call(r#"{"timezone": "UTC", "place": {"city": "Oslo", "x": 1}}"#)
        ),
        "nested objects are closed too"
    );
    // A schema that says what other keys may be keeps its word.
    assert!(accepts(
        &required,
        r#"{"name": "tag", "parameters": {"name": "a", "weight": 3}}"#
    ));
}
