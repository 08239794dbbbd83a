//! Chat templates run the way Hugging Face `transformers` runs them.
//!
//! `transformers` renders with `trim_blocks` and `lstrip_blocks`, a `tojson` that keeps key order
//! and non-ASCII characters (Python's `json.dumps`), and the globals `raise_exception` and
//! `strftime_now`. Python string methods (`.strip()`, `.items()`…) come from minijinja's
//! Python-compatibility layer.

use minijinja::{Environment, Error, ErrorKind, Value as JinjaValue};
use serde_json::Value;

use crate::date::Date;
use crate::format::RenderError;
use crate::pyjson;

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source`.
    ///
    /// # Errors
    /// [`RenderError::Template`] when it does not compile.
    pub fn new(
        source: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<ChatTemplate, RenderError> {
        let mut env = hf_environment();
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| RenderError::Template(e.to_string()))?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// Renders with `context` (an object: `messages`, `tools`, `add_generation_prompt`, …);
    /// `bos_token` and `eos_token` are added.
    ///
    /// # Errors
    /// [`RenderError::Template`] when the template fails (including `raise_exception`).
    pub fn render(&self, context: &Value) -> Result<String, RenderError> {
        let mut context = context.clone();
        if let Value::Object(map) = &mut context {
            map.insert("bos_token".into(), Value::String(self.bos_token.clone()));
            map.insert("eos_token".into(), Value::String(self.eos_token.clone()));
        }
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| RenderError::Template(e.to_string()))?;
        template
            .render(JinjaValue::from_serialize(&context))
            .map_err(|e| RenderError::Template(e.to_string()))
    }
}

/// A minijinja environment configured like `transformers`' chat-template environment.
pub fn hf_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_filter("tojson", tojson);
    env.add_function(
        "raise_exception",
        |message: String| -> Result<JinjaValue, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, message))
        },
    );
    env.add_function("strftime_now", |format: String| {
        strftime(&format, Date::today())
    });
    env
}

/// The few `strftime` codes chat templates use (`%d %b %B %m %Y %%`).
fn strftime(format: &str, date: Date) -> String {
    let long = date.long();
    let month = &long[3..long.len() - 5];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{:02}", date.day)),
            Some('m') => out.push_str(&format!("{:02}", date.month)),
            Some('Y') => out.push_str(&date.year.to_string()),
            Some('B') => out.push_str(month),
            Some('b') => out.push_str(&month[..3]),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// `tojson(value, indent=None)` as Python's `json.dumps(ensure_ascii=False)`.
fn tojson(value: JinjaValue, kwargs: minijinja::value::Kwargs) -> Result<JinjaValue, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let json: Value = serde_json::to_value(&value)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let text = match indent {
        Some(width) => pyjson::dumps_indent(&json, width),
        None => pyjson::dumps(&json),
    };
    Ok(JinjaValue::from_safe_string(text))
}
