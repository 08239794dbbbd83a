//! Exact rationals and a small recursive-descent parser for arithmetic expressions.

use std::fmt;

/// Deepest parenthesis nesting accepted (keeps the parser's recursion bounded).
const MAX_NESTING: usize = 200;

/// A reduced fraction with a positive denominator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rational {
    num: i128,
    den: i128,
}

const OVERFLOW: &str = "the result is too large to represent exactly (beyond 128-bit fractions)";

fn gcd(mut a: i128, mut b: i128) -> i128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.abs()
}

impl Rational {
    fn new(num: i128, den: i128) -> Result<Rational, String> {
        if den == 0 {
            return Err("division by zero".into());
        }
        let g = gcd(num, den).max(1);
        let (mut num, mut den) = (num / g, den / g);
        if den < 0 {
            num = num.checked_neg().ok_or(OVERFLOW)?;
            den = den.checked_neg().ok_or(OVERFLOW)?;
        }
        Ok(Rational { num, den })
    }

    fn int(n: i128) -> Rational {
        Rational { num: n, den: 1 }
    }

    pub fn is_integer(&self) -> bool {
        self.den == 1
    }

    fn add(self, o: Rational) -> Result<Rational, String> {
        let g = gcd(self.den, o.den).max(1);
        let den = (self.den / g).checked_mul(o.den).ok_or(OVERFLOW)?;
        let a = self.num.checked_mul(o.den / g).ok_or(OVERFLOW)?;
        let b = o.num.checked_mul(self.den / g).ok_or(OVERFLOW)?;
        Rational::new(a.checked_add(b).ok_or(OVERFLOW)?, den)
    }

    fn neg(self) -> Result<Rational, String> {
        Ok(Rational {
            num: self.num.checked_neg().ok_or(OVERFLOW)?,
            den: self.den,
        })
    }

    fn mul(self, o: Rational) -> Result<Rational, String> {
        let g1 = gcd(self.num, o.den).max(1);
        let g2 = gcd(o.num, self.den).max(1);
        let num = (self.num / g1).checked_mul(o.num / g2).ok_or(OVERFLOW)?;
        let den = (self.den / g2).checked_mul(o.den / g1).ok_or(OVERFLOW)?;
        Rational::new(num, den)
    }

    fn recip(self) -> Result<Rational, String> {
        Rational::new(self.den, self.num)
    }

    fn pow(self, e: Rational) -> Result<Rational, String> {
        if !e.is_integer() {
            return Err("only integer exponents are exact; rewrite the power".into());
        }
        if e.num.unsigned_abs() > 4096 {
            return Err("exponent too large (at most 4096 in absolute value)".into());
        }
        let mut out = Rational::int(1);
        for _ in 0..e.num.unsigned_abs() {
            out = out.mul(self)?;
        }
        if e.num < 0 {
            out = out.recip()?;
        }
        Ok(out)
    }

    /// Decimal expansion with up to `places` digits after the point, trailing zeros removed.
    pub fn to_decimal(&self, places: usize) -> String {
        let neg = self.num < 0;
        let (n, d) = (self.num.unsigned_abs(), self.den.unsigned_abs());
        let mut s = format!("{}{}.", if neg { "-" } else { "" }, n / d);
        let mut rem = n % d;
        for _ in 0..places {
            rem *= 10;
            s.push(char::from(b'0' + (rem / d) as u8));
            rem %= d;
        }
        let trimmed = s.trim_end_matches('0').trim_end_matches('.');
        trimmed.to_owned()
    }
}

impl fmt::Display for Rational {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 1 {
            write!(f, "{}", self.num)
        } else {
            write!(f, "{}/{}", self.num, self.den)
        }
    }
}

/// Evaluates `expr`.
pub fn evaluate(expr: &str) -> Result<Rational, String> {
    let mut p = Parser {
        s: expr.as_bytes(),
        i: 0,
        depth: 0,
    };
    let v = p.expr()?;
    p.skip_ws();
    if p.i < p.s.len() {
        return Err(format!(
            "unexpected `{}` at position {}",
            p.s[p.i] as char,
            p.i + 1
        ));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.i).copied()
    }

    fn expr(&mut self) -> Result<Rational, String> {
        let mut v = self.term()?;
        while let Some(op @ (b'+' | b'-')) = self.peek() {
            self.i += 1;
            let rhs = self.term()?;
            v = if op == b'+' {
                v.add(rhs)?
            } else {
                v.add(rhs.neg()?)?
            };
        }
        Ok(v)
    }

    fn term(&mut self) -> Result<Rational, String> {
        let mut v = self.unary()?;
        while let Some(op @ (b'*' | b'/')) = self.peek() {
            self.i += 1;
            let rhs = self.unary()?;
            v = if op == b'/' {
                v.mul(rhs.recip()?)?
            } else {
                v.mul(rhs)?
            };
        }
        Ok(v)
    }

    fn unary(&mut self) -> Result<Rational, String> {
        match self.peek() {
            Some(b'-') => {
                self.i += 1;
                self.enter()?;
                let v = self.unary()?.neg();
                self.depth -= 1;
                v
            }
            Some(b'+') => {
                self.i += 1;
                self.enter()?;
                let v = self.unary();
                self.depth -= 1;
                v
            }
            _ => self.power(),
        }
    }

    fn power(&mut self) -> Result<Rational, String> {
        let base = self.atom()?;
        if self.peek() == Some(b'^') {
            self.i += 1;
            self.enter()?;
            let exp = self.unary();
            self.depth -= 1;
            return base.pow(exp?);
        }
        Ok(base)
    }

    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(format!(
                "expression nests more than {MAX_NESTING} levels deep"
            ));
        }
        Ok(())
    }

    fn atom(&mut self) -> Result<Rational, String> {
        match self.peek() {
            Some(b'(') => {
                self.i += 1;
                self.enter()?;
                let v = self.expr()?;
                self.depth -= 1;
                if self.peek() != Some(b')') {
                    return Err(format!("missing `)` at position {}", self.i + 1));
                }
                self.i += 1;
                Ok(v)
            }
            Some(c) if c.is_ascii_digit() || c == b'.' => self.number(),
            Some(c) => Err(format!(
                "unexpected `{}` at position {}",
                c as char,
                self.i + 1
            )),
            None => Err("the expression ends too early".into()),
        }
    }

    fn number(&mut self) -> Result<Rational, String> {
        let (mut num, mut den, mut seen_dot, mut digits) = (0i128, 1i128, false, 0);
        while let Some(&c) = self.s.get(self.i) {
            match c {
                b'0'..=b'9' => {
                    num = num
                        .checked_mul(10)
                        .and_then(|n| n.checked_add(i128::from(c - b'0')))
                        .ok_or(OVERFLOW)?;
                    if seen_dot {
                        den = den.checked_mul(10).ok_or(OVERFLOW)?;
                    }
                    digits += 1;
                }
                b'.' if !seen_dot => seen_dot = true,
                b'_' => {}
                _ => break,
            }
            self.i += 1;
        }
        if digits == 0 {
            return Err(format!("a number needs digits (position {})", self.i));
        }
        Rational::new(num, den)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_results() {
        for (expr, want) in [
            ("2+3", "5"),
            ("0.1 + 0.2", "3/10"),
            ("1/3*3", "1"),
            ("(2+3)*4/6", "10/3"),
            ("-2^2", "-4"),
            ("2^-2", "1/4"),
            ("2^10", "1024"),
            ("--3", "3"),
        ] {
            assert_eq!(evaluate(expr).unwrap().to_string(), want, "{expr}");
        }
        assert_eq!(evaluate("1/3").unwrap().to_decimal(4), "0.3333");
    }

    #[test]
    fn errors_are_explained() {
        assert_eq!(evaluate("1/0").unwrap_err(), "division by zero");
        assert!(evaluate("2^200").unwrap_err().contains("too large"));
        assert!(evaluate("(1").unwrap_err().contains("missing `)`"));
        assert!(evaluate("1 +").unwrap_err().contains("ends too early"));
        assert!(evaluate(&"(".repeat(10_000))
            .unwrap_err()
            .contains("levels deep"));
    }
}
