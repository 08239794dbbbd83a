//! Argument checks that run before JSON parsing finishes: size and nesting depth.
//!
//! Arguments come from the model and are untrusted. A cheap scan of the raw bytes rejects
//! oversized text and deep nesting (say 10,000 `[`) before serde_json sees it, so no parser
//! recursion is ever at risk.

use serde_json::Value;

/// Caps on a call's arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgLimits {
    /// Largest argument text, in bytes.
    pub max_bytes: usize,
    /// Deepest nesting of arrays and objects (the top-level object counts as 1).
    pub max_depth: usize,
}

/// Default largest argument text: 256 KiB.
pub const DEFAULT_MAX_ARG_BYTES: usize = 256 << 10;
/// Default deepest nesting: 64.
pub const DEFAULT_MAX_ARG_DEPTH: usize = 64;

impl Default for ArgLimits {
    fn default() -> Self {
        ArgLimits {
            max_bytes: DEFAULT_MAX_ARG_BYTES,
            max_depth: DEFAULT_MAX_ARG_DEPTH,
        }
    }
}

/// Why argument text was refused; its message is written for the model to fix its call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgumentError {
    /// More bytes than [`ArgLimits::max_bytes`].
    #[error("arguments are {bytes} bytes, more than the limit of {limit} bytes; send less data")]
    TooLarge {
        /// Size of the text.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// Deeper than [`ArgLimits::max_depth`].
    #[error("arguments nest arrays/objects more than {limit} levels deep; flatten them")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// Not JSON (serde_json's message, with line and column).
    #[error("arguments are not valid JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object.
    #[error("arguments must be a JSON object, not {0}")]
    NotAnObject(&'static str),
}

/// Checks `raw` against `limits` and parses it as a JSON object.
///
/// # Errors
/// An [`ArgumentError`]: too large, too deep, not JSON, or not an object.
pub fn parse_arguments(raw: &str, limits: ArgLimits) -> Result<Value, ArgumentError> {
    if raw.len() > limits.max_bytes {
        return Err(ArgumentError::TooLarge {
            bytes: raw.len(),
            limit: limits.max_bytes,
        });
    }
    let depth = max_depth(raw.as_bytes(), limits.max_depth);
    if depth > limits.max_depth {
        return Err(ArgumentError::TooDeep {
            limit: limits.max_depth,
        });
    }
    let value: Value =
        serde_json::from_str(raw).map_err(|e| ArgumentError::NotJson(e.to_string()))?;
    if !value.is_object() {
        return Err(ArgumentError::NotAnObject(type_name(&value)));
    }
    Ok(value)
}

/// Deepest bracket nesting outside strings, stopping early once `stop_above` is exceeded.
fn max_depth(bytes: &[u8], stop_above: usize) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
                if max > stop_above {
                    return max;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_objects_within_limits() {
        let v = parse_arguments(r#"{"a":[1,{"b":"[[[[\"]]"}]}"#, ArgLimits::default()).unwrap();
        assert_eq!(v["a"][1]["b"], "[[[[\"]]");
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        let raw = format!(r#"{{"s":"{}"}}"#, "[".repeat(10_000));
        assert!(parse_arguments(&raw, ArgLimits::default()).is_ok());
    }

    #[test]
    fn rejects_deep_nesting_without_recursing() {
        let raw = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let err = parse_arguments(&raw, ArgLimits::default()).unwrap_err();
        assert_eq!(err, ArgumentError::TooDeep { limit: 64 });
        assert!(err.to_string().contains("64 levels"), "{err}");
        let raw = format!(r#"{{"a":{}1{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_arguments(
            &raw,
            ArgLimits {
                max_bytes: usize::MAX,
                max_depth: 64
            }
        )
        .is_err());
    }

    #[test]
    fn rejects_oversize_malformed_and_non_objects() {
        let limits = ArgLimits {
            max_bytes: 16,
            max_depth: 4,
        };
        for (raw, needle) in [
            (r#"{"a":"0123456789abcdef"}"#, "bytes"),
            (r#"{"a":"#, "not valid JSON"),
            ("[1]", "an array"),
            ("42", "a number"),
            ("", "not valid JSON"),
        ] {
            let err = parse_arguments(raw, limits).unwrap_err().to_string();
            assert!(err.contains(needle), "{raw}: {err}");
        }
    }
}
