//! JSON written the way Python's `json.dumps(ensure_ascii=False)` writes it.
//!
//! Chat templates run under Hugging Face `transformers` serialise with Python's `json`: `", "` and
//! `": "` separators (or `","` with `indent`), keys in insertion order, non-ASCII kept as UTF-8, and
//! floats in Python's `repr` (`1e+16`, `1e-05`, `1.0`). Being byte-exact with those templates means
//! writing JSON the same way; `serde_json`'s own writer differs in all three.

use serde_json::{Number, Value};

/// `json.dumps(value, ensure_ascii=False)`: one line, `", "` and `": "` separators.
pub fn dumps(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, None, 0);
    out
}

/// `json.dumps(value, ensure_ascii=False, indent=indent)`: `","` item separator, `": "` keys.
pub fn dumps_indent(value: &Value, indent: usize) -> String {
    let mut out = String::new();
    write_value(&mut out, value, Some(indent), 0);
    out
}

/// Python's `str()` of a JSON scalar as a Jinja template prints it (`True`, `None`, `1.5`);
/// strings as they are; arrays and objects as [`dumps`].
pub fn python_str(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::String(text) => text.clone(),
        Value::Number(number) => number_repr(number),
        other => dumps(other),
    }
}

fn write_value(out: &mut String, value: &Value, indent: Option<usize>, depth: usize) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(number) => out.push_str(&number_repr(number)),
        Value::String(text) => write_string(out, text),
        Value::Array(items) => {
            if items.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                separator(out, indent, depth + 1, i == 0);
                write_value(out, item, indent, depth + 1);
            }
            closing(out, indent, depth);
            out.push(']');
        }
        Value::Object(map) => {
            if map.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                separator(out, indent, depth + 1, i == 0);
                write_string(out, key);
                out.push_str(": ");
                write_value(out, item, indent, depth + 1);
            }
            closing(out, indent, depth);
            out.push('}');
        }
    }
}

fn separator(out: &mut String, indent: Option<usize>, depth: usize, first: bool) {
    match indent {
        None if !first => out.push_str(", "),
        None => {}
        Some(width) => {
            if !first {
                out.push(',');
            }
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', width * depth));
        }
    }
}

fn closing(out: &mut String, indent: Option<usize>, depth: usize) {
    if let Some(width) = indent {
        out.push('\n');
        out.extend(std::iter::repeat_n(' ', width * depth));
    }
}

/// A JSON string literal with Python's escapes (`serde_json` escapes exactly the same set when
/// non-ASCII is kept: `"`, `\`, and control characters).
pub fn write_string(out: &mut String, text: &str) {
    out.push_str(&serde_json::to_string(text).expect("a str always serialises"));
}

/// Python's `repr` of a number.
pub fn number_repr(number: &Number) -> String {
    if number.is_i64() || number.is_u64() {
        return number.to_string();
    }
    float_repr(number.as_f64().unwrap_or(f64::NAN))
}

/// Python's `repr(float)`: shortest round-trip digits, fixed notation when the decimal exponent
/// is in `-5 < e < 16`, otherwise `d.ddde±XX`.
pub fn float_repr(value: f64) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let sign = if value.is_sign_negative() { "-" } else { "" };
    let (digits, exponent) = shortest_digits(value.abs());
    if !(-5 < exponent && exponent < 16) {
        let mut out = format!("{sign}{}", &digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        out.push_str(&format!("e{exp_sign}{:02}", exponent.abs()));
        return out;
    }
    if exponent < 0 {
        let zeros = "0".repeat((-exponent - 1) as usize);
        return format!("{sign}0.{zeros}{digits}");
    }
    let int_len = exponent as usize + 1;
    if digits.len() <= int_len {
        let zeros = "0".repeat(int_len - digits.len());
        format!("{sign}{digits}{zeros}.0")
    } else {
        format!("{sign}{}.{}", &digits[..int_len], &digits[int_len..])
    }
}

/// The digits and decimal exponent of `{:e}` output (`1.25e3` → `("125", 3)`).
fn scientific(text: &str) -> (String, i32) {
    let (mantissa, exponent) = text.split_once('e').expect("{:e} always has an exponent");
    let digits = mantissa.chars().filter(|c| *c != '.').collect();
    (
        digits,
        exponent.parse().expect("{:e} exponent is an integer"),
    )
}

/// The shortest digits that read back as `value` (finite, not negative) and the decimal
/// exponent of the first, chosen as Python's `repr` chooses them. Rust's formatter also gives
/// the shortest digits nearest the value; but where the value lies exactly halfway between two
/// such candidates it may take the odd one, and Python takes the even one. (A halfway value has
/// one digit more than the shortest, and the shortest has 15 digits or more: the candidates are
/// then within an ulp.)
fn shortest_digits(value: f64) -> (String, i32) {
    let (digits, exponent) = scientific(&format!("{value:e}"));
    if digits.len() < 15 {
        return (digits, exponent);
    }
    // Every f64 has an exact decimal expansion of at most 767 significant digits.
    let (exact, exact_exponent) = scientific(&format!("{value:.800e}"));
    let (head, rest) = exact.split_at(digits.len());
    let halfway = rest.starts_with('5') && rest[1..].bytes().all(|b| b == b'0');
    if exponent != exact_exponent || !halfway {
        return (digits, exponent);
    }
    let reads_back = |candidate: &str| {
        let text = format!("{}.{}e{exponent}", &candidate[..1], &candidate[1..]);
        text.parse::<f64>() == Ok(value)
    };
    [Some(head.to_string()), decimal_increment(head)]
        .into_iter()
        .flatten()
        .find(|c| c.ends_with(['0', '2', '4', '6', '8']) && reads_back(c))
        .map_or((digits, exponent), |even| {
            let trimmed = even.trim_end_matches('0');
            (trimmed.to_string(), exponent)
        })
}

/// The decimal digit string plus one in the last place; `None` when it would gain a digit.
fn decimal_increment(digits: &str) -> Option<String> {
    let mut bytes = digits.as_bytes().to_vec();
    for b in bytes.iter_mut().rev() {
        if *b == b'9' {
            *b = b'0';
        } else {
            *b += 1;
            return String::from_utf8(bytes).ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_match_python_repr() {
        let cases = [
            (1.0, "1.0"),
            (0.5, "0.5"),
            (-2.25, "-2.25"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456789.125, "123456789.125"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1.2345e100, "1.2345e+100"),
            (0.1, "0.1"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            // Exactly halfway between two shortest candidates: Python takes the even digit.
            (13_027_151_540_311.0 + 1.0 / 16.0, "13027151540311.062"),
            (-13_027_151_540_311.0 - 1.0 / 16.0, "-13027151540311.062"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
        ];
        for (value, expected) in cases {
            assert_eq!(float_repr(value), expected, "repr({value})");
        }
    }

    #[test]
    fn dumps_like_python() {
        let value = json!({"a": [1, 2.5, {"b": null}], "é": "ü\n\"", "t": true, "e": {}, "l": []});
        assert_eq!(
            dumps(&value),
            r#"{"a": [1, 2.5, {"b": null}], "é": "ü\n\"", "t": true, "e": {}, "l": []}"#
        );
        assert_eq!(
            dumps_indent(&json!({"a": [1, {"b": 2}], "c": {}}), 4),
            "{\n    \"a\": [\n        1,\n        {\n            \"b\": 2\n        }\n    ],\n    \"c\": {}\n}"
        );
    }

    #[test]
    fn python_str_of_scalars() {
        assert_eq!(python_str(&json!(true)), "True");
        assert_eq!(python_str(&json!(null)), "None");
        assert_eq!(python_str(&json!(3)), "3");
        assert_eq!(python_str(&json!("x y")), "x y");
    }
}
