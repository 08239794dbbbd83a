//! The Llama 3.1 tool-call parser: its special strings on top of the shared scanner.
//!
//! Understood: `<|python_tag|>` followed by builtin calls (`name.call(k=v, …)`), JSON calls or raw
//! code (a `code_interpreter` call); bare JSON calls (`{"name", "parameters"|"arguments"}`, with
//! `"type": "function"` or OpenAI's nesting); `<function=NAME>{…}</function>` with or without the
//! closing tag; Llama 3.2/3.3 pythonic lists `[f(a=1), g()]`; several calls separated by `;`, `,`
//! or newlines. `<|eom_id|>` and `<|eot_id|>` end the turn; so does a hallucinated next header.

use crate::format::StopKind;
use crate::scan::{Dialect, Special};

pub(crate) static DIALECT: Dialect = Dialect {
    specials: &[
        ("<|eom_id|>", Special::Stop(StopKind::Eom)),
        ("<|eot_id|>", Special::Stop(StopKind::Eot)),
        ("<|end_of_text|>", Special::Stop(StopKind::Eot)),
        ("<|start_header_id|>", Special::Stop(StopKind::Eot)),
        ("<|python_tag|>", Special::PythonTag),
        ("<function=", Special::FunctionTag),
    ],
    pythonic_lists: true,
};

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::format::{parse_all, Format, ParseErrorKind, ParsedMessage, StopKind};
    use crate::llama31::{Llama31, Style};
    use crate::types::{BuiltinTool, ToolCall, ToolSet, ToolSpec};

    fn tools() -> ToolSet {
        let spec = |name: &str, params: Value| ToolSpec::new(name, "", params);
        ToolSet::new(
            &[
                spec(
                    "get_weather",
                    json!({"type": "object", "properties": {"city": {}, "unit": {}}}),
                ),
                spec("get_time", json!({"type": "object", "properties": {}})),
                spec(
                    "math.factorial",
                    json!({"type": "object", "properties": {"n": {}}}),
                ),
                spec(
                    "trending_songs",
                    json!({"type": "object", "properties": {"n": {}, "genre": {}}}),
                ),
            ],
            &[
                BuiltinTool::BraveSearch,
                BuiltinTool::WolframAlpha,
                BuiltinTool::CodeInterpreter,
            ],
        )
    }

    fn parse_with(tools: ToolSet, text: &str) -> ParsedMessage {
        parse_all(Llama31::new(Style::Template).parser(tools), text)
    }

    fn parse(text: &str) -> ParsedMessage {
        parse_with(tools(), text)
    }

    /// Parses `text` fed one character at a time and checks it agrees with the one-shot parse.
    fn parse_streamed(text: &str) -> ParsedMessage {
        let mut parser = Llama31::new(Style::Template).parser(tools());
        let mut message = ParsedMessage::default();
        for c in text.chars() {
            for event in parser.push(&c.to_string()) {
                message.apply(event);
            }
        }
        for event in parser.finish() {
            message.apply(event);
        }
        assert_eq!(
            message,
            parse(text),
            "streamed and whole parses differ for {text:?}"
        );
        message
    }

    fn call(name: &str, arguments: Value) -> ToolCall {
        ToolCall::new(name, arguments)
    }

    #[test]
    fn plain_text_with_stop_kinds() {
        let m = parse_streamed("Hello there.<|eot_id|>");
        assert_eq!(
            (m.content.as_str(), m.stop),
            ("Hello there.", Some(StopKind::Eot))
        );
        assert!(m.tool_calls.is_empty() && m.errors.is_empty());
        assert_eq!(parse_streamed("Hi").stop, None);
        assert_eq!(
            parse_streamed("x < y and {not json} [1]<|eom_id|>").content,
            "x < y and {not json} [1]"
        );
    }

    #[test]
    fn builtin_calls() {
        let m = parse_streamed(
            "<|python_tag|>brave_search.call(query=\"latest price of 1oz gold\")<|eom_id|>",
        );
        assert_eq!(
            m.tool_calls,
            vec![call(
                "brave_search",
                json!({"query": "latest price of 1oz gold"})
            )]
        );
        assert_eq!(m.stop, Some(StopKind::Eom));
        let m = parse_streamed("<|python_tag|>wolfram_alpha.call(query='x\\'s \\u00e9', limit=3, exact=True)<|eom_id|>");
        assert_eq!(
            m.tool_calls,
            vec![call(
                "wolfram_alpha",
                json!({"query": "x's é", "limit": 3, "exact": true})
            )]
        );
    }

    #[test]
    fn raw_code_is_a_code_interpreter_call() {
        // Meta's own example, syntax error included.
        let code = "def is_prime(n):\n    if n <= 1\n        return False\n    return True\n\nprint(is_prime(7))  # Output: True";
        let m = parse_streamed(&format!("<|python_tag|>{code}<|eom_id|>"));
        assert_eq!(
            m.tool_calls,
            vec![call("code_interpreter", json!({"code": code}))]
        );
        let m = parse_streamed("<|python_tag|>print(\"hi\")<|eom_id|>");
        assert_eq!(
            m.tool_calls,
            vec![call("code_interpreter", json!({"code": "print(\"hi\")"}))]
        );
    }

    #[test]
    fn json_calls_in_every_shape() {
        let expected = vec![call("get_weather", json!({"city": "Paris"}))];
        for text in [
            "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}<|eot_id|>",
            "  \n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}<|eom_id|>",
            "{\"type\": \"function\", \"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
            "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Paris\\\"}\"}}",
            "<|python_tag|>{\n    \"type\": \"function\",\n    \"name\": \"get_weather\",\n    \"parameters\": {\"city\": \"Paris\"}\n}<|eom_id|>",
            "{'name': 'get_weather', 'parameters': {'city': 'Paris'}}",
        ] {
            let m = parse_streamed(text);
            assert_eq!(m.tool_calls, expected, "{text}");
            assert_eq!(m.content, "", "{text}");
            assert!(m.errors.is_empty(), "{text}: {:?}", m.errors);
        }
    }

    #[test]
    fn function_tags_with_and_without_closing_tag() {
        let expected = vec![call(
            "trending_songs",
            json!({"n": 10, "filter": {"genre": "all", "years": [2023, 2024]}}),
        )];
        for text in [
            "<function=trending_songs>{\"n\": 10, \"filter\": {\"genre\": \"all\", \"years\": [2023, 2024]}}</function><|eot_id|>",
            "<function=trending_songs>{\"n\": 10, \"filter\": {\"genre\": \"all\", \"years\": [2023, 2024]}}<|eot_id|>",
            "<function=trending_songs>{\"n\": 10, \"filter\": {\"genre\": \"all\", \"years\": [2023, 2024]}}",
        ] {
            assert_eq!(parse_streamed(text).tool_calls, expected, "{text}");
        }
    }

    #[test]
    fn several_calls_separated_by_semicolons_or_newlines() {
        let expected = vec![
            call("get_weather", json!({"city": "Oslo"})),
            call("get_time", json!({})),
        ];
        for text in [
            "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}; {\"name\": \"get_time\", \"parameters\": {}}",
            "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}\n{\"name\": \"get_time\"}",
            "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}};\n{\"name\": \"get_time\", \"parameters\": {}}<|eom_id|>",
            "[get_weather(city=\"Oslo\"), get_time()]<|eot_id|>",
            "<|python_tag|>[get_weather(city='Oslo'), get_time()]",
        ] {
            let m = parse_streamed(text);
            assert_eq!(m.tool_calls, expected, "{text}");
            assert!(m.errors.is_empty() && m.content.is_empty(), "{text}: {m:?}");
        }
    }

    #[test]
    fn pythonic_literals_dotted_names_and_positional_arguments() {
        let m = parse_streamed("[math.factorial(n=5), get_weather('Zürich', unit={\"kind\": [\"C\", None], \"ok\": False})]");
        assert_eq!(
            m.tool_calls,
            vec![
                call("math.factorial", json!({"n": 5})),
                call(
                    "get_weather",
                    json!({"city": "Zürich", "unit": {"kind": ["C", null], "ok": false}})
                ),
            ]
        );
        let m = parse_streamed("{\"name\": \"math.factorial\", \"parameters\": {\"n\": -2.5e3}}");
        assert_eq!(
            m.tool_calls,
            vec![call("math.factorial", json!({"n": -2500.0}))]
        );
    }

    #[test]
    fn unicode_and_escapes_in_arguments() {
        let m = parse_streamed("{\"name\": \"get_weather\", \"parameters\": {\"city\": \"S\\u00e3o Paulo \\\"SP\\\" 東京 🌧\"}}");
        assert_eq!(
            m.tool_calls,
            vec![call(
                "get_weather",
                json!({"city": "São Paulo \"SP\" 東京 🌧"})
            )]
        );
    }

    #[test]
    fn json_in_text_is_a_call_only_when_it_names_a_known_tool() {
        let m = parse_streamed(
            "Here is data: {\"name\": \"Bob\", \"parameters\": {\"age\": 3}} ok<|eot_id|>",
        );
        assert_eq!(
            m.content,
            "Here is data: {\"name\": \"Bob\", \"parameters\": {\"age\": 3}} ok"
        );
        assert!(m.tool_calls.is_empty() && m.errors.is_empty());
        let m =
            parse_streamed("Let me check. {\"name\": \"get_time\", \"parameters\": {}}<|eom_id|>");
        assert_eq!(m.content, "Let me check.");
        assert_eq!(m.tool_calls, vec![call("get_time", json!({}))]);
        let m = parse_streamed("{\"name\": \"Bob\", \"age\": 3}");
        assert_eq!(m.content, "{\"name\": \"Bob\", \"age\": 3}");
    }

    #[test]
    fn unknown_tools_are_reported() {
        let m = parse_streamed("{\"name\": \"launch_rockets\", \"parameters\": {}}<|eom_id|>");
        assert!(m.tool_calls.is_empty());
        assert_eq!(
            m.errors[0].kind,
            ParseErrorKind::UnknownTool {
                name: "launch_rockets".into()
            }
        );
        let m = parse_streamed("[get_time(), fly(to=\"moon\")]");
        assert_eq!(m.tool_calls, vec![call("get_time", json!({}))]);
        assert_eq!(
            m.errors[0].kind,
            ParseErrorKind::UnknownTool { name: "fly".into() }
        );
        let m = parse_streamed("<function=nope>{}</function>");
        assert_eq!(
            m.errors[0].kind,
            ParseErrorKind::UnknownTool {
                name: "nope".into()
            }
        );
    }

    #[test]
    fn malformed_calls_are_structured_errors() {
        let m = parse_streamed(
            "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"<|eom_id|>",
        );
        assert!(m.tool_calls.is_empty());
        assert!(
            matches!(m.errors[0].kind, ParseErrorKind::MalformedCall { .. }),
            "{m:?}"
        );
        assert_eq!(m.stop, Some(StopKind::Eom));
        let m = parse_streamed("{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Par");
        assert!(
            matches!(m.errors[0].kind, ParseErrorKind::MalformedCall { .. }),
            "{m:?}"
        );
        let m = parse_streamed("{\"name\": \"get_weather\", \"parameters\": [1]}");
        assert!(
            matches!(m.errors[0].kind, ParseErrorKind::MalformedCall { .. }),
            "{m:?}"
        );
        assert!(m.errors[0].to_string().contains("must be a JSON object"));
    }

    #[test]
    fn without_code_interpreter_raw_code_is_an_unknown_tool() {
        let tools = ToolSet::new(&[], &[BuiltinTool::BraveSearch]);
        let m = parse_with(tools.clone(), "<|python_tag|>import os<|eom_id|>");
        assert_eq!(
            m.errors[0].kind,
            ParseErrorKind::UnknownTool {
                name: "code_interpreter".into()
            }
        );
        let m = parse_with(
            tools,
            "<|python_tag|>brave_search.call(query=\"a\"<|eom_id|>",
        );
        assert!(
            matches!(m.errors[0].kind, ParseErrorKind::MalformedCall { .. }),
            "{m:?}"
        );
    }

    #[test]
    fn permissive_tool_set_accepts_any_name_at_the_start() {
        let m = parse_with(
            ToolSet::permissive(),
            "{\"name\": \"anything\", \"parameters\": {\"a\": 1}}",
        );
        assert_eq!(m.tool_calls, vec![call("anything", json!({"a": 1}))]);
        let m = parse_with(
            ToolSet::permissive(),
            "text {\"name\": \"anything\", \"parameters\": {}}",
        );
        assert!(m.tool_calls.is_empty());
    }

    #[test]
    fn text_after_the_stop_token_is_ignored() {
        let m = parse_streamed("Done.<|eot_id|>garbage {\"name\": \"get_time\"}");
        assert_eq!(m.content, "Done.");
        assert!(m.tool_calls.is_empty());
    }
}
