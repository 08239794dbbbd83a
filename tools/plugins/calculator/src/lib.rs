//! corral builtin `calculator`: evaluates arithmetic exactly, on rationals with 128-bit
//! numerator and denominator, so `0.1 + 0.2` is exactly `3/10` and `1/3*3` is exactly `1`.

mod rational;

use corral_sdk::{json, Output, Plugin, Tool, Value};
use rational::{evaluate, Rational};

struct Calculator;

impl Plugin for Calculator {
    fn tools() -> Vec<Tool> {
        vec![Tool::new(
            "calculator",
            "Evaluates an arithmetic expression exactly. Supports + - * / ^ (integer powers), \
             parentheses, unary minus and decimals such as 0.1. Answers with the exact value \
             (a fraction when needed) and a decimal approximation.",
            json!({
                "type": "object",
                "properties": {
                    "expression": {"type": "string", "description": "For example: (2+3)*4/6", "maxLength": 4096}
                },
                "required": ["expression"],
                "additionalProperties": false
            }),
        )]
    }

    fn call(_tool: &str, args: Value) -> Result<Output, String> {
        let expr = args["expression"]
            .as_str()
            .ok_or("`expression` must be a string")?;
        let value = evaluate(expr)?;
        Ok(Output::text(describe(&value)))
    }
}

fn describe(v: &Rational) -> String {
    if v.is_integer() {
        v.to_string()
    } else {
        format!("{v} ≈ {}", v.to_decimal(12))
    }
}

corral_sdk::export_plugin!(Calculator);
