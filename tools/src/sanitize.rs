//! Text from tools is untrusted: before a person (or a model) sees it, terminal control goes.
//!
//! A tool's output printed as is can retitle the terminal (`ESC ]0;…BEL`), clear it
//! (`ESC [2J`), move the cursor to overwrite what corral printed, or hide text. [`strip_control`]
//! removes every escape sequence (CSI, OSC, DCS/SOS/PM/APC strings and two-byte escapes) and
//! every other control character except newline and tab; NUL and the C1 controls included.
//! Carriage returns go too: one alone can overwrite a line on screen.

/// `text` without escape sequences and control characters (newline and tab are kept).
pub fn strip_control(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => skip_escape(&mut chars),
            // C1 CSI, OSC, DCS, SOS, PM, APC: their parameters or strings go with them.
            '\u{9b}' => skip_csi(&mut chars),
            '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars),
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

/// After ESC: a CSI (`[`), a string (`]`, `P`, `X`, `^`, `_`), or a two-character escape.
fn skip_escape(chars: &mut Chars<'_>) {
    match chars.next() {
        Some('[') => skip_csi(chars),
        Some(']' | 'P' | 'X' | '^' | '_') => skip_string(chars),
        // Intermediate bytes, then one final byte (`ESC ( B`, `ESC c`, …).
        Some(' '..='/') => {
            while let Some(&c) = chars.peek() {
                chars.next();
                if !(' '..='/').contains(&c) {
                    break;
                }
            }
        }
        _ => {}
    }
}

/// Parameter and intermediate bytes up to and including the final byte (`@`..`~`).
fn skip_csi(chars: &mut Chars<'_>) {
    for c in chars.by_ref() {
        if ('@'..='~').contains(&c) {
            break;
        }
    }
}

/// Up to and including the terminator: BEL, ST (`ESC \`) or C1 ST.
fn skip_string(chars: &mut Chars<'_>) {
    while let Some(c) = chars.next() {
        match c {
            '\u{7}' | '\u{9c}' => break,
            '\u{1b}' => {
                if chars.peek() == Some(&'\\') {
                    chars.next();
                }
                break;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::strip_control;

    /// Regression (sandbox escapes, item 9): what a hostile tool printed reached the terminal.
    #[test]
    fn escapes_and_controls_are_removed() {
        for (input, want) in [
            ("\u{1b}]0;pwned\u{7}title", "title"),
            ("\u{1b}]8;;http://x\u{1b}\\link\u{1b}]8;;\u{1b}\\", "link"),
            ("\u{1b}[2Jcleared", "cleared"),
            ("\u{1b}[1;31mred\u{1b}[0m", "red"),
            ("a\0b\u{7}c\u{8}d\re\u{7f}f", "abcdef"),
            ("\u{9b}31mC1\u{9d}osc\u{9c}!", "C1!"),
            ("\u{1b}(Bcharset", "charset"),
            ("\u{1b}Pdcs payload\u{1b}\\after", "after"),
            ("keep\ttabs\nand lines", "keep\ttabs\nand lines"),
            ("unicode: ä ह ไทย 🦀", "unicode: ä ह ไทย 🦀"),
            ("unterminated \u{1b}]0;title", "unterminated "),
            ("trailing escape \u{1b}", "trailing escape "),
        ] {
            assert_eq!(strip_control(input), want, "{input:?}");
        }
    }
}
