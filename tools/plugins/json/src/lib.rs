//! corral builtin `json`: query and transform a JSON document with JSON Pointers (RFC 6901).

use corral_sdk::{json, serde_json, Output, Plugin, Tool, Value};

struct Json;

const OPS: &[&str] = &[
    "get", "keys", "length", "type", "pretty", "minify", "set", "delete",
];

impl Plugin for Json {
    fn tools() -> Vec<Tool> {
        vec![Tool::new(
            "json",
            "Queries or transforms a JSON document. `document` is JSON text (or any JSON value); \
             `pointer` is a JSON Pointer such as /items/0/name (empty for the whole document). \
             op: get (the value at pointer), keys (of an object), length (of an array, object or \
             string), type, pretty, minify, set (put `value` at pointer, returns the new document), \
             delete (remove pointer, returns the new document).",
            json!({
                "type": "object",
                "properties": {
                    "op": {"enum": OPS},
                    "document": {"description": "JSON text, or a JSON value"},
                    "pointer": {"type": "string", "default": ""},
                    "value": {"description": "for op=set"}
                },
                "required": ["op", "document"],
                "additionalProperties": false
            }),
        )]
    }

    fn call(_tool: &str, args: Value) -> Result<Output, String> {
        let mut doc = match &args["document"] {
            Value::String(text) => {
                serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()))
            }
            other => other.clone(),
        };
        let pointer = args["pointer"].as_str().unwrap_or("");
        if !(pointer.is_empty() || pointer.starts_with('/')) {
            return Err(format!(
                "pointer `{pointer}` must be empty or start with `/` (e.g. /items/0)"
            ));
        }
        let op = args["op"].as_str().unwrap_or("get");
        let at = |doc: &Value| {
            doc.pointer(pointer)
                .cloned()
                .ok_or_else(|| format!("nothing at pointer `{pointer}`"))
        };
        match op {
            "get" => Ok(Output::json(at(&doc)?)),
            "keys" => match at(&doc)? {
                Value::Object(m) => Ok(Output::json(json!(m.keys().collect::<Vec<_>>()))),
                other => Err(format!(
                    "keys needs an object; the value at `{pointer}` is {}",
                    kind(&other)
                )),
            },
            "length" => match at(&doc)? {
                Value::Array(a) => Ok(Output::json(json!(a.len()))),
                Value::Object(m) => Ok(Output::json(json!(m.len()))),
                Value::String(s) => Ok(Output::json(json!(s.chars().count()))),
                other => Err(format!(
                    "length needs an array, object or string, not {}",
                    kind(&other)
                )),
            },
            "type" => Ok(Output::text(kind(&at(&doc)?))),
            "pretty" => Ok(Output::text(
                serde_json::to_string_pretty(&at(&doc)?).map_err(|e| e.to_string())?,
            )),
            "minify" => Ok(Output::text(at(&doc)?.to_string())),
            "set" => {
                let value = args.get("value").cloned().ok_or("set needs `value`")?;
                set(&mut doc, pointer, value)?;
                Ok(Output::json(doc))
            }
            "delete" => {
                remove(&mut doc, pointer)?;
                Ok(Output::json(doc))
            }
            other => Err(format!(
                "unknown op `{other}`; use one of {}",
                OPS.join(", ")
            )),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn split(pointer: &str) -> Result<(&str, String), String> {
    let (parent, last) = pointer
        .rsplit_once('/')
        .ok_or("the pointer must name a member, e.g. /name")?;
    Ok((parent, last.replace("~1", "/").replace("~0", "~")))
}

fn set(doc: &mut Value, pointer: &str, value: Value) -> Result<(), String> {
    if pointer.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, key) = split(pointer)?;
    match doc.pointer_mut(parent) {
        Some(Value::Object(m)) => {
            m.insert(key, value);
            Ok(())
        }
        Some(Value::Array(a)) if key == "-" => {
            a.push(value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            let i: usize = key
                .parse()
                .map_err(|_| format!("`{key}` is not an array index"))?;
            let len = a.len();
            let slot = a
                .get_mut(i)
                .ok_or_else(|| format!("index {i} is past the end (length {len})"))?;
            *slot = value;
            Ok(())
        }
        _ => Err(format!("nothing to set into at `{parent}`")),
    }
}

fn remove(doc: &mut Value, pointer: &str) -> Result<(), String> {
    let (parent, key) = split(pointer)?;
    let removed = match doc.pointer_mut(parent) {
        Some(Value::Object(m)) => m.remove(&key).is_some(),
        Some(Value::Array(a)) => match key.parse::<usize>() {
            Ok(i) if i < a.len() => {
                a.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    };
    if removed {
        Ok(())
    } else {
        Err(format!("nothing at pointer `{pointer}`"))
    }
}

corral_sdk::export_plugin!(Json);
