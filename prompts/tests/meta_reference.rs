//! The `meta` style against Meta's reference prompts (`models/llama3_1/prompt_format.md`).
//!
//! The expected prompts are our own test vectors, written from the format's rules; the examples
//! of Meta's `prompt_format.md` (from the hash-pinned `llama-models==0.3.0` wheel, extracted
//! verbatim by `scripts/fixtures.py`) are the oracle they are checked against, and each model
//! response there is parsed back into the call it shows.

mod common;

use corral_prompts::llama31::{Llama31, Style, ToolPrompt};
use corral_prompts::{
    parse_all, BuiltinTool, Conversation, Format, Message, StopKind, ToolCall, ToolSet, ToolSpec,
};
use serde_json::{json, Value};

const HEAD: &str = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n";
const ASSISTANT: &str = "<|start_header_id|>assistant<|end_header_id|>\n\n";

fn oracle() -> Vec<Value> {
    let text = common::fixture_text("llama3_1-prompt-examples.json");
    let value: Value = serde_json::from_str(&text).expect("reference is JSON");
    value["examples"]
        .as_array()
        .expect("examples array")
        .clone()
}

fn example(section: &str) -> (String, String) {
    let examples = oracle();
    let found = examples
        .iter()
        .find(|e| e["section"] == section)
        .unwrap_or_else(|| panic!("reference has no section {section:?}"));
    (
        found["input_prompt"].as_str().unwrap().to_string(),
        found["model_response"].as_str().unwrap().to_string(),
    )
}

fn meta(date: Option<&str>) -> Llama31 {
    Llama31::new(Style::Meta).with_date(date.map(str::to_string))
}

fn trending_songs() -> ToolSpec {
    ToolSpec::new(
        "trending_songs",
        "Returns the trending songs on a Music site",
        json!({
            "type": "object",
            "properties": {
                "n": {"type": "integer", "description": "The number of songs to return"},
                "genre": {"type": "string", "description": "The genre of the songs to return"}
            },
            "required": ["n"]
        }),
    )
}

/// One reference case: our conversation, our expected prompt, the oracle's section.
struct Vector {
    section: &'static str,
    conversation: Conversation,
    format: Llama31,
    expected: String,
}

fn vectors() -> Vec<Vector> {
    let searches = vec![BuiltinTool::BraveSearch, BuiltinTool::WolframAlpha];
    let pi_result = "\n{\n    \"queryresult\": {\n        \"success\": true,\n        \"inputstring\": \"100th decimal of pi\",\n        \"pods\": [\n            {\n                \"title\": \"Input interpretation\",\n                \"subpods\": [\n                    {\n                        \"title\": \"\",\n                        \"plaintext\": \"100th digit | \u{3c0}\"\n                    }\n                ]\n            },\n            {\n                \"title\": \"Nearby digits\",\n                \"subpods\": [\n                    {\n                        \"title\": \"\",\n                        \"plaintext\": \"...86208998628034825342117067982148086513282306647093...\"\n                    }\n                ]\n            },\n            {\n                \"title\": \"Result\",\n                \"primary\": true,\n                \"subpods\": [\n                    {\n                        \"title\": \"\",\n                        \"plaintext\": \"7\"\n                    }\n                ]\n            }\n        ]\n    }\n}\n";
    let json_tools_prompt = "Answer the user's question by making use of the following functions if needed.\nIf none of the function can be used, please say so.\nHere is a list of functions in JSON format:\n{\n    \"type\": \"function\",\n    \"function\": {\n        \"name\": \"trending_songs\",\n        \"description\": \"Returns the trending songs on a Music site\",\n        \"parameters\": {\n            \"type\": \"object\",\n            \"properties\": [\n                {\n                    \"n\": {\n                        \"type\": \"object\",\n                        \"description\": \"The number of songs to return\"\n                    }\n                },\n                {\n                    \"genre\": {\n                        \"type\": \"object\",\n                        \"description\": \"The genre of the songs to return\"\n                    }\n                }\n            ],\n            \"required\": [\"n\"]\n        }\n    }\n}\n\nReturn function calls in JSON format.";
    let function_tag_prompt = "You have access to the following functions:\n\nUse the function 'trending_songs' to 'Returns the trending songs on a Music site':\n{\"name\": \"trending_songs\", \"description\": \"Returns the trending songs on a Music site\", \"parameters\": {\"genre\": {\"description\": \"The genre of the songs to return\", \"param_type\": \"str\", \"required\": false}, \"n\": {\"description\": \"The number of songs to return\", \"param_type\": \"int\", \"required\": true}}}\n\nThink very carefully before calling functions.\nIf you choose to call a function ONLY reply in the following format with no prefix or suffix:\n\n<function=example_function_name>{\"example_name\": \"example_value\"}</function>\n\nReminder:\n- If looking for real time information use relevant functions before falling back to brave_search\n- Function calls MUST follow the specified format, start with <function= and end with </function>\n- Required parameters MUST be specified\n- Only call one function at a time\n- Put the entire function call reply on one line";
    let custom_system = "Environment: ipython\n\nCutting Knowledge Date: December 2023\nToday Date: 21 September 2024\n\nYou are a helpful assistant.\n<|eot_id|>";
    let songs_question = "<|start_header_id|>user<|end_header_id|>\n\nUse tools to get latest trending songs<|eot_id|>";
    let mut function_tag = meta(Some("21 September 2024"));
    function_tag.tool_prompt = ToolPrompt::FunctionTag;
    vec![
        Vector {
            section: "User and assistant conversation",
            conversation: Conversation::new(vec![
                Message::system("You are a helpful assistant"),
                Message::user("Answer who are you in the form of jeopardy?"),
            ]),
            format: meta(None),
            expected: format!("{HEAD}You are a helpful assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAnswer who are you in the form of jeopardy?<|eot_id|>{ASSISTANT}"),
        },
        Vector {
            section: "Builtin Tool Calling",
            conversation: Conversation::new(vec![
                Message::system("You are a helpful assistant."),
                Message::user("Search the web for the latest price of 1oz gold?"),
            ])
            .with_builtin_tools(searches.clone()),
            format: meta(Some("21 September 2024")),
            expected: format!("{HEAD}Environment: ipython\nTools: brave_search, wolfram_alpha\nCutting Knowledge Date: December 2023\nToday Date: 21 September 2024\n\nYou are a helpful assistant.\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nSearch the web for the latest price of 1oz gold?<|eot_id|>{ASSISTANT}"),
        },
        Vector {
            section: "Builtin Code Interpreter",
            conversation: Conversation::new(vec![Message::user(
                "Write code to check if number is prime, use that to see if the number 7 is prime",
            )])
            .with_builtin_tools(vec![BuiltinTool::CodeInterpreter]),
            format: meta(None),
            expected: format!("{HEAD}Environment: ipython<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWrite code to check if number is prime, use that to see if the number 7 is prime<|eot_id|>{ASSISTANT}"),
        },
        Vector {
            section: "Built-in tools full interaction",
            conversation: Conversation::new(vec![
                Message::user("What is the 100th decimal of pi?"),
                Message::tool_calls(vec![ToolCall::new("wolfram_alpha", json!({"query": "100th decimal of pi"}))]),
                Message::tool_text(pi_result),
            ])
            .with_builtin_tools(searches),
            format: meta(None),
            expected: format!("{HEAD}Environment: ipython\nTools: brave_search, wolfram_alpha\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is the 100th decimal of pi?<|eot_id|>{ASSISTANT}<|python_tag|>wolfram_alpha.call(query=\"100th decimal of pi\")<|eom_id|><|start_header_id|>ipython<|end_header_id|>\n\n{pi_result}<|eot_id|>{ASSISTANT}"),
        },
        Vector {
            section: "JSON based tool calling",
            conversation: Conversation::new(vec![
                Message::system("You are a helpful assistant."),
                Message::user("Use tools to get latest trending songs"),
            ])
            .with_tools(vec![trending_songs()]),
            format: meta(Some("21 September 2024")),
            expected: format!("{HEAD}{custom_system}<|start_header_id|>user<|end_header_id|>\n\n{json_tools_prompt}<|eot_id|>{songs_question}{ASSISTANT}"),
        },
        Vector {
            section: "`<function>` based tool calling",
            conversation: Conversation::new(vec![
                Message::system("You are a helpful assistant."),
                Message::user("Use tools to get latest trending songs"),
            ])
            .with_tools(vec![trending_songs()]),
            format: function_tag,
            expected: format!("{HEAD}{custom_system}<|start_header_id|>user<|end_header_id|>\n\n{function_tag_prompt}<|eot_id|>{songs_question}{ASSISTANT}"),
        },
    ]
}

#[test]
fn meta_style_is_byte_exact_with_every_reference_prompt() {
    let vectors = vectors();
    for vector in &vectors {
        let ours = vector.format.render(&vector.conversation, true).unwrap();
        common::assert_same(&ours, &vector.expected, vector.section);
        let (reference, _) = example(vector.section);
        common::assert_same(
            &vector.expected,
            &reference,
            &format!("oracle: {}", vector.section),
        );
    }
    eprintln!(
        "{} of Meta's reference prompts rendered byte-exactly",
        vectors.len()
    );
}

#[test]
fn every_reference_response_parses_to_its_call() {
    let tools = ToolSet::new(&[trending_songs()], &BuiltinTool::ALL);
    let parse = |section: &str| {
        let (_, response) = example(section);
        parse_all(meta(None).parser(tools.clone()), &response)
    };
    let m = parse("Builtin Tool Calling");
    assert_eq!(
        m.tool_calls,
        vec![ToolCall::new(
            "brave_search",
            json!({"query": "latest price of 1oz gold"})
        )]
    );
    assert_eq!(m.stop, Some(StopKind::Eom));
    let m = parse("Builtin Code Interpreter");
    assert_eq!(m.tool_calls[0].name, "code_interpreter");
    assert!(m.tool_calls[0].arguments["code"]
        .as_str()
        .unwrap()
        .starts_with("def is_prime(n):\n    if n <= 1\n"));
    let m = parse("JSON based tool calling");
    assert_eq!(
        m.tool_calls,
        vec![ToolCall::new(
            "trending_songs",
            json!({"n": "10", "genre": "all"})
        )]
    );
    assert_eq!(m.stop, Some(StopKind::Eom));
    let m = parse("`<function>` based tool calling");
    assert_eq!(
        m.tool_calls,
        vec![ToolCall::new("trending_songs", json!({"n": 10}))]
    );
    assert_eq!(m.stop, Some(StopKind::Eot));
    let m = parse("Built-in tools full interaction");
    assert_eq!(
        (m.content.as_str(), m.stop),
        ("The 100th decimal of pi is 7.", Some(StopKind::Eot))
    );
    let m = parse("User and assistant conversation");
    assert_eq!(
        m.content,
        "Here's my response\n\n\"What is a helpful assistant?\""
    );
}

/// Meta's assistant turns re-render to what the model wrote: builtin calls, raw code, JSON and
/// `<function=…>` calls.
#[test]
fn meta_style_renders_calls_as_meta_encodes_them() {
    let conversation = |calls| {
        Conversation::new(vec![Message::user("q"), Message::tool_calls(calls)])
            .with_builtin_tools(vec![BuiltinTool::CodeInterpreter, BuiltinTool::BraveSearch])
            .with_tools(vec![trending_songs()])
    };
    let tail = |format: &Llama31, calls| {
        let text = format.render(&conversation(calls), false).unwrap();
        text[text.rfind(ASSISTANT).unwrap() + ASSISTANT.len()..].to_string()
    };
    let format = meta(None);
    assert_eq!(
        tail(
            &format,
            vec![ToolCall::new(
                "code_interpreter",
                json!({"code": "print(1)"})
            )]
        ),
        "<|python_tag|>print(1)<|eom_id|>"
    );
    assert_eq!(
        tail(&format, vec![ToolCall::new("trending_songs", json!({"n": 3}))]),
        "<|python_tag|>{\"type\": \"function\", \"name\": \"trending_songs\", \"parameters\": {\"n\": 3}}<|eom_id|>"
    );
    let mut tagged = meta(None);
    tagged.tool_prompt = ToolPrompt::FunctionTag;
    assert_eq!(
        tail(
            &tagged,
            vec![ToolCall::new("trending_songs", json!({"n": 3}))]
        ),
        "<function=trending_songs>{\"n\": 3}</function><|eot_id|>"
    );
}
