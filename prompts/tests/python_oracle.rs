//! corral against oracles that share none of its code: Python's Jinja2 rendering the official
//! Llama 3.1/3.2/3.3 chat templates the way `transformers` does, and Meta's own `tool_utils.py`
//! reading model outputs. The Python side is `python_oracle.py`, run once with the fixtures'
//! virtual environment (`python3 scripts/fixtures.py` makes it; without it the test fails).
//!
//! Renders: `CORRAL_ORACLE_CASES` generated conversations per template (default 1000), all
//! byte-identical. Outputs: Meta's example replies from `prompt_format.md`, and generated calls
//! in each form `tool_utils.py` reads; corral must read each as the call it was generated from,
//! and Meta's reading must be the one [`FORMS`] states, known differences included. Cases are
//! drawn from `CORRAL_ORACLE_SEED` (printed; random by default).

mod common;

use std::path::Path;
use std::process::Command;

use common::gen::{case, json_object};
use common::template_context::{context, for_llama_3_2};
use corral_prompts::llama31::{Llama31, Style};
use corral_prompts::{parse_all, BuiltinTool, Format, ParsedMessage, ToolCall, ToolSet, ToolSpec};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{json, Map, Value};

const TEMPLATES: [&str; 3] = [
    "llama-3.1-instruct.jinja",
    "llama-3.2-instruct.jinja",
    "llama-3.3-instruct.jinja",
];

/// Generated outputs per form.
const OUTPUTS_PER_FORM: usize = 200;

fn cases_per_template() -> usize {
    std::env::var("CORRAL_ORACLE_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000)
}

fn runner() -> TestRunner {
    let seed: u64 = std::env::var("CORRAL_ORACLE_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.map_or(0, |d| d.as_nanos() as u64)
        });
    eprintln!("cases drawn with CORRAL_ORACLE_SEED={seed}");
    let mut bytes = [0; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    TestRunner::new_with_rng(Config::default(), rng)
}

fn draw<S: Strategy>(runner: &mut TestRunner, strategy: &S) -> S::Value {
    strategy.new_tree(runner).expect("strategy draws").current()
}

/// The virtual environment's Python; fails naming `scripts/fixtures.py` when it is missing or
/// incomplete (its `requirements.txt` is written last).
fn venv_python() -> std::path::PathBuf {
    common::fixture("venv/requirements.txt");
    common::fixture("venv/bin/python")
}

/// The oracle's answers for a request, from one run of `python_oracle.py` with `python`.
fn ask_python(python: &Path, request: &Value) -> Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let (request_path, answer_path) = (
        dir.path().join("request.json"),
        dir.path().join("answer.json"),
    );
    std::fs::write(&request_path, request.to_string()).expect("write the request");
    let driver = corral_test_support::manifest_dir(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python_oracle.py");
    let run = Command::new(python)
        .arg(driver)
        .arg(&request_path)
        .arg(&answer_path)
        .output()
        .expect("run the fixtures' Python");
    assert!(
        run.status.success(),
        "python_oracle.py failed ({}): {}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(answer_path).expect("answer")).expect("JSON")
}

// ---------------------------------------------------------------------------------------------
// Model outputs: the forms Meta's `ToolUtils` reads, and what it reads in each.

/// How Meta's reading of an output relates to the calls corral reads (and was generated from).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Relation {
    /// The same call, or no call on both sides.
    Same,
    /// Meta takes only the first of several calls (its code: "FIXME: Enable multiple tool calls").
    FirstCallOnly,
    /// Meta reads no call.
    MetaReadsNothing,
    /// Meta's parser raises this exception.
    MetaRaises(&'static str),
    /// Meta keeps the query's escapes as written; corral decodes them as Python strings.
    MetaKeepsEscapes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// Meta's own example replies.
    Example,
    PlainText,
    Builtin,
    BuiltinWithEscapes,
    Json,
    JsonWithArgumentsKey,
    FunctionTag,
    FunctionTagNested,
    FunctionTagApostrophe,
    PythonicCall,
    PythonicCalls,
}

/// Every form, how Meta reads it, and why.
const FORMS: &[(Form, Relation, &str)] = &[
    (
        Form::Example,
        Relation::Same,
        "the model responses of prompt_format.md",
    ),
    (Form::PlainText, Relation::Same, "no call"),
    (
        Form::Builtin,
        Relation::Same,
        "<|python_tag|>brave_search.call(query=\"…\")",
    ),
    (
        Form::BuiltinWithEscapes,
        Relation::MetaKeepsEscapes,
        "its regex takes the query's raw text",
    ),
    (
        Form::Json,
        Relation::Same,
        "{\"name\", \"parameters\"} with or without type, tag, indent",
    ),
    (
        Form::JsonWithArgumentsKey,
        Relation::MetaRaises("KeyError"),
        "Meta reads only \"parameters\"; corral also OpenAI's \"arguments\"",
    ),
    (
        Form::FunctionTag,
        Relation::Same,
        "<function=NAME>{flat object}</function>",
    ),
    (
        Form::FunctionTagNested,
        Relation::MetaReadsNothing,
        "its regex ends the arguments at the first `}`",
    ),
    (
        Form::FunctionTagApostrophe,
        Relation::MetaReadsNothing,
        "it turns every `'` into `\"` before reading the JSON",
    ),
    (Form::PythonicCall, Relation::Same, "[f(a=1)] (Llama 3.2)"),
    (
        Form::PythonicCalls,
        Relation::FirstCallOnly,
        "[f(a=1), g(b=2)]",
    ),
];

const CUSTOM_TOOLS: [&str; 4] = ["get_weather", "trending_songs", "search_flights", "convert"];

fn tool_set() -> ToolSet {
    let specs: Vec<ToolSpec> = CUSTOM_TOOLS
        .iter()
        .map(|name| ToolSpec::new(*name, "", json!({"type": "object", "properties": {}})))
        .collect();
    ToolSet::new(&specs, &BuiltinTool::ALL)
}

/// A generated output: its text, the calls it was written from, and for builtin queries the
/// query as written.
#[derive(Debug, Clone)]
struct Output {
    form: Form,
    text: String,
    calls: Vec<ToolCall>,
    raw_query: Option<String>,
}

/// Text that none of the readers treats specially (no quotes, brackets, escapes, `<`, `=`).
fn plain() -> impl Strategy<Value = String> {
    "[ a-zA-Z0-9.,!?:é日😀-]{0,16}"
}

/// Python's reserved words, which cannot name a keyword argument.
const PYTHON_KEYWORDS: &[&str] = &[
    "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del", "elif",
    "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is", "lambda",
    "nonlocal", "not", "or", "pass", "raise", "return", "try", "while", "with", "yield",
];

fn key() -> impl Strategy<Value = String> {
    "[a-z][a-z_]{0,7}".prop_filter("a Python identifier", |k| {
        !PYTHON_KEYWORDS.contains(&k.as_str())
    })
}

fn stop() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["<|eom_id|>", "<|eot_id|>", ""])
}

fn custom_name() -> impl Strategy<Value = String> {
    prop::sample::select(CUSTOM_TOOLS.to_vec()).prop_map(str::to_string)
}

/// A scalar and how Python writes it.
fn scalar() -> impl Strategy<Value = (Value, String)> {
    prop_oneof![
        any::<i32>().prop_map(|n| (json!(n), n.to_string())),
        any::<bool>().prop_map(|b| (json!(b), if b { "True" } else { "False" }.to_string())),
        Just((Value::Null, "None".to_string())),
        plain().prop_map(|s| (json!(s), format!("\"{s}\""))),
        prop::sample::select(vec![0.5, -2.25, 1e16, 3.0])
            .prop_map(|f| (json!(f), format!("{f:?}"))),
    ]
}

fn flat_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((key(), scalar()), 0..4)
        .prop_map(|pairs| pairs.into_iter().map(|(k, (v, _))| (k, v)).collect())
}

/// A pythonic call `name(k=v, …)` and the call it stands for.
fn pythonic_call() -> impl Strategy<Value = (String, ToolCall)> {
    let argument = prop_oneof![
        3 => scalar(),
        1 => prop::collection::vec(scalar(), 0..3).prop_map(|items| {
            let (values, texts): (Vec<Value>, Vec<String>) = items.into_iter().unzip();
            (Value::Array(values), format!("[{}]", texts.join(", ")))
        }),
    ];
    let arguments = prop::collection::vec((key(), argument), 0..3).prop_map(|mut args| {
        // Python refuses a repeated keyword argument.
        let mut seen = std::collections::HashSet::new();
        args.retain(|(k, _)| seen.insert(k.clone()));
        args
    });
    (custom_name(), arguments).prop_map(|(name, args)| {
        let text = args
            .iter()
            .map(|(k, (_, v))| format!("{k}={v}"))
            .collect::<Vec<_>>();
        let arguments: Map<String, Value> = args.into_iter().map(|(k, (v, _))| (k, v)).collect();
        (
            format!("{name}({})", text.join(", ")),
            ToolCall::new(name, Value::Object(arguments)),
        )
    })
}

fn output(form: Form) -> BoxedStrategy<Output> {
    let simple = move |text: String, calls: Vec<ToolCall>| Output {
        form,
        text,
        calls,
        raw_query: None,
    };
    let builtin_name = prop::sample::select(vec!["brave_search", "wolfram_alpha"]);
    match form {
        Form::Example => unreachable!("examples are read from the fixture"),
        Form::PlainText => (plain(), stop())
            .prop_map(move |(text, stop)| simple(format!("{text}{stop}"), vec![]))
            .boxed(),
        Form::Builtin => (builtin_name, plain(), stop())
            .prop_map(move |(name, query, stop)| {
                let text = format!("<|python_tag|>{name}.call(query=\"{query}\"){stop}");
                simple(text, vec![ToolCall::new(name, json!({ "query": query }))])
            })
            .boxed(),
        Form::BuiltinWithEscapes => {
            let escape = prop::sample::select(vec![("\\n", "\n"), ("\\t", "\t"), ("\\\\", "\\")]);
            (builtin_name, plain(), escape, plain(), stop())
                .prop_map(move |(name, before, (written, meant), after, stop)| {
                    let raw = format!("{before}{written}{after}");
                    Output {
                        form,
                        text: format!("<|python_tag|>{name}.call(query=\"{raw}\"){stop}"),
                        calls: vec![ToolCall::new(
                            name,
                            json!({ "query": format!("{before}{meant}{after}") }),
                        )],
                        raw_query: Some(raw),
                    }
                })
                .boxed()
        }
        Form::Json | Form::JsonWithArgumentsKey => {
            let shape = (any::<bool>(), any::<bool>(), any::<bool>());
            (custom_name(), json_object(), shape, stop())
                .prop_map(move |(name, args, (typed, tagged, indented), stop)| {
                    let mut call = Map::new();
                    if typed {
                        call.insert("type".into(), json!("function"));
                    }
                    call.insert("name".into(), json!(name));
                    let key = if form == Form::Json {
                        "parameters"
                    } else {
                        "arguments"
                    };
                    call.insert(key.into(), args.clone());
                    let call = Value::Object(call);
                    let body = if indented {
                        serde_json::to_string_pretty(&call).unwrap()
                    } else {
                        call.to_string()
                    };
                    let tag = if tagged { "<|python_tag|>" } else { "" };
                    simple(
                        format!("{tag}{body}{stop}"),
                        vec![ToolCall::new(name, args)],
                    )
                })
                .boxed()
        }
        Form::FunctionTag | Form::FunctionTagNested | Form::FunctionTagApostrophe => {
            let extra = match form {
                Form::FunctionTagNested => flat_object().prop_map(Value::Object).boxed(),
                _ => "[a-z]{1,8}".prop_map(|w| json!(format!("{w}'s"))).boxed(),
            };
            (custom_name(), flat_object(), extra, any::<bool>(), stop())
                .prop_map(move |(name, mut args, extra, closed, stop)| {
                    if form != Form::FunctionTag {
                        args.insert("extra".into(), extra);
                    }
                    let args = Value::Object(args);
                    let close = if closed { "</function>" } else { "" };
                    let text = format!("<function={name}>{args}{close}{stop}");
                    simple(text, vec![ToolCall::new(name, args)])
                })
                .boxed()
        }
        Form::PythonicCall | Form::PythonicCalls => {
            let count = if form == Form::PythonicCall {
                1..2
            } else {
                2..4
            };
            (prop::collection::vec(pythonic_call(), count), stop())
                .prop_map(move |(calls, stop)| {
                    let (texts, calls): (Vec<String>, Vec<ToolCall>) = calls.into_iter().unzip();
                    simple(format!("[{}]{stop}", texts.join(", ")), calls)
                })
                .boxed()
        }
    }
}

/// What Meta's reader answered: `Call(name, arguments)`, `Nothing` or `Raised(exception)`.
#[derive(Debug, Clone, PartialEq)]
enum MetaAnswer {
    Call(String, Value),
    Nothing,
    Raised(String),
}

fn meta_answer(answer: &Value) -> MetaAnswer {
    if let Some(raised) = answer.get("raised") {
        return MetaAnswer::Raised(raised.as_str().unwrap().to_string());
    }
    match &answer["call"] {
        Value::Null => MetaAnswer::Nothing,
        call => MetaAnswer::Call(call[0].as_str().unwrap().to_string(), exact(&call[1])),
    }
}

/// Python's value with its floats restored from their bits (`{"f64_bits": N}`): serde_json's
/// default float parser may round the last bit, Python's `repr` of a float does not lose it.
fn exact(value: &Value) -> Value {
    match value {
        Value::Object(map) => match (map.len(), map.get("f64_bits").and_then(Value::as_u64)) {
            (1, Some(bits)) => json!(f64::from_bits(bits)),
            _ => Value::Object(map.iter().map(|(k, v)| (k.clone(), exact(v))).collect()),
        },
        Value::Array(items) => Value::Array(items.iter().map(exact).collect()),
        other => other.clone(),
    }
}

fn expected_meta(relation: Relation, output: &Output) -> MetaAnswer {
    let first = || {
        let call = &output.calls[0];
        MetaAnswer::Call(call.name.clone(), call.arguments.clone())
    };
    match relation {
        Relation::Same if output.calls.is_empty() => MetaAnswer::Nothing,
        Relation::Same => {
            assert_eq!(output.calls.len(), 1, "one call: {output:?}");
            first()
        }
        Relation::FirstCallOnly => first(),
        Relation::MetaReadsNothing => MetaAnswer::Nothing,
        Relation::MetaRaises(exception) => MetaAnswer::Raised(exception.to_string()),
        Relation::MetaKeepsEscapes => MetaAnswer::Call(
            output.calls[0].name.clone(),
            json!({ "query": output.raw_query.clone().unwrap() }),
        ),
    }
}

/// Meta's example replies (`prompt_format.md`) and the calls both must read in them.
fn example_outputs() -> Vec<Output> {
    let text = common::fixture_text("llama3_1-prompt-examples.json");
    let examples: Value = serde_json::from_str(&text).expect("examples are JSON");
    let expected = |section: &str| -> Vec<ToolCall> {
        match section {
            "Builtin Tool Calling" => vec![ToolCall::new(
                "brave_search",
                json!({"query": "latest price of 1oz gold"}),
            )],
            "Builtin Code Interpreter" => vec![ToolCall::new("code_interpreter", json!({}))],
            "JSON based tool calling" => vec![ToolCall::new(
                "trending_songs",
                json!({"n": "10", "genre": "all"}),
            )],
            "`<function>` based tool calling" => {
                vec![ToolCall::new("trending_songs", json!({"n": 10}))]
            }
            _ => vec![],
        }
    };
    examples["examples"]
        .as_array()
        .expect("examples")
        .iter()
        .map(|example| {
            let section = example["section"].as_str().unwrap();
            let text = example["model_response"].as_str().unwrap().to_string();
            let mut calls = expected(section);
            if section == "Builtin Code Interpreter" {
                // The code is the text between the tag and the stop token, as written.
                let code = text.trim_start_matches("<|python_tag|>");
                let code = code.strip_suffix("<|eom_id|>").unwrap_or(code);
                calls[0].arguments = json!({ "code": code });
            }
            Output {
                form: Form::Example,
                text,
                calls,
                raw_query: None,
            }
        })
        .collect()
}

fn corral_reads(text: &str) -> ParsedMessage {
    parse_all(Llama31::new(Style::Template).parser(tool_set()), text)
}

// ---------------------------------------------------------------------------------------------

/// A generated conversation for `template`, its context and corral's render.
fn render_case(runner: &mut TestRunner, template: &str) -> (Value, String) {
    let mut case = draw(runner, &case());
    if template == "llama-3.2-instruct.jinja" {
        for_llama_3_2(&mut case);
    }
    let ours = case
        .format
        .render_text(&case.conversation, case.add_generation_prompt)
        .unwrap_or_else(|e| panic!("corral refuses a generated case: {e}\n{case:?}"));
    (
        json!({"template": template, "context": context(&case)}),
        ours,
    )
}

#[test]
fn python_jinja2_and_meta_tool_utils_agree_with_corral() {
    let python = venv_python();
    let mut runner = runner();
    let (renders, ours): (Vec<Value>, Vec<String>) = TEMPLATES
        .iter()
        .flat_map(|t| std::iter::repeat_n(*t, cases_per_template()))
        .map(|template| render_case(&mut runner, template))
        .unzip();
    let mut outputs = example_outputs();
    for (form, _, _) in FORMS.iter().filter(|(f, _, _)| *f != Form::Example) {
        let strategy = output(*form);
        outputs.extend((0..OUTPUTS_PER_FORM).map(|_| draw(&mut runner, &strategy)));
    }
    let templates: Map<String, Value> = TEMPLATES
        .iter()
        .map(|t| (t.to_string(), json!(common::fixture(t))))
        .collect();
    let answer = ask_python(
        &python,
        &json!({
            "templates": templates,
            "renders": renders,
            "tool_utils": common::fixture("llama-models/llama3/tool_utils.py"),
            "outputs": outputs.iter().map(|o| o.text.clone()).collect::<Vec<_>>(),
        }),
    );

    let python_renders = answer["renders"].as_array().expect("renders");
    assert_eq!(python_renders.len(), ours.len());
    let mismatches: Vec<usize> = (0..ours.len())
        .filter(|&i| python_renders[i]["text"].as_str() != Some(ours[i].as_str()))
        .collect();
    if let Some(&first) = mismatches.first() {
        let template = renders[first]["template"].as_str().unwrap();
        let what = format!(
            "{} of {} renders differ from Python's Jinja2; the first ({template}, context {})",
            mismatches.len(),
            ours.len(),
            renders[first]["context"]
        );
        match python_renders[first]["text"].as_str() {
            Some(reference) => common::assert_same(&ours[first], reference, &what),
            None => panic!("{what}: Python failed: {}", python_renders[first]["error"]),
        }
    }
    eprintln!(
        "{} conversations over {} templates: 0 mismatches",
        ours.len(),
        TEMPLATES.len()
    );

    let meta = answer["outputs"].as_array().expect("outputs");
    assert_eq!(meta.len(), outputs.len());
    for (output, meta) in outputs.iter().zip(meta) {
        let corral = corral_reads(&output.text);
        assert!(
            corral.errors.is_empty(),
            "{:?}: {:?}",
            output.text,
            corral.errors
        );
        assert_eq!(
            corral.tool_calls, output.calls,
            "corral reads {:?}",
            output.text
        );
        let relation = FORMS.iter().find(|(f, _, _)| *f == output.form).unwrap().1;
        assert_eq!(
            meta_answer(meta),
            expected_meta(relation, output),
            "Meta's tool_utils reads {:?} ({:?}: {relation:?})",
            output.text,
            output.form
        );
    }
    for (form, relation, why) in FORMS {
        let n = outputs.iter().filter(|o| o.form == *form).count();
        eprintln!("{n:>5} {form:?}: {relation:?} ({why})");
    }
}
