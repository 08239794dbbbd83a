//! Backslash escapes in command-line text (`--stop "\n\n"`): a shell passes `\n` through as two
//! characters, so corral turns the documented escapes into the characters they name.
//!
//! Only three escapes exist, so that a stop string means what it looks like: `\n` (newline),
//! `\t` (tab) and `\\` (one backslash). Any other backslash is a mistake the user should hear
//! about, not a character to keep silently.

use std::fmt;

/// A backslash that starts no known escape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EscapeError {
    /// `\` followed by this character, which names no escape.
    Unknown(char),
    /// The text ends with a lone `\`.
    Trailing,
}

impl fmt::Display for EscapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EscapeError::Unknown(c) => write!(
                f,
                "unknown escape `\\{c}`: use \\n (newline), \\t (tab) or \\\\ (backslash)"
            ),
            EscapeError::Trailing => write!(
                f,
                "a lone `\\` at the end: use \\\\ for a backslash, \\n for a newline, \\t for a tab"
            ),
        }
    }
}

impl std::error::Error for EscapeError {}

/// `text` with `\n`, `\t` and `\\` replaced by newline, tab and backslash.
///
/// # Errors
/// Any other character after a backslash, or a backslash at the end.
pub fn unescape(text: &str) -> Result<String, EscapeError> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some(other) => return Err(EscapeError::Unknown(other)),
            None => return Err(EscapeError::Trailing),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_escapes_become_their_characters() {
        let cases = [
            (r"\n\n", "\n\n"),
            (r"a\tb", "a\tb"),
            (r"C:\\dir", r"C:\dir"),
            (r"\\n", r"\n"),
            (r"\\\n", "\\\n"),
            ("plain", "plain"),
            ("", ""),
            ("é\\n🙂", "é\n🙂"),
            // A real newline (from `$'\n'`) stays as it is.
            ("\n", "\n"),
        ];
        for (input, expected) in cases {
            assert_eq!(unescape(input).as_deref(), Ok(expected), "{input:?}");
        }
    }

    #[test]
    fn unknown_and_trailing_escapes_are_errors_naming_them() {
        assert_eq!(unescape(r"a\x"), Err(EscapeError::Unknown('x')));
        assert_eq!(unescape(r"\r\n"), Err(EscapeError::Unknown('r')));
        assert_eq!(unescape(r"\é"), Err(EscapeError::Unknown('é')));
        assert_eq!(unescape("end\\"), Err(EscapeError::Trailing));
        assert_eq!(
            EscapeError::Unknown('x').to_string(),
            r"unknown escape `\x`: use \n (newline), \t (tab) or \\ (backslash)"
        );
    }
}
