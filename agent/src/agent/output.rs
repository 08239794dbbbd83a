//! Tool output is untrusted: what the model reads of it is cleaned and capped here.

use corral_tools::sanitize::strip_control;
use corral_tools::{CallOutput, Content};
use unicode_segmentation::UnicodeSegmentation;

/// The marker that ends a result cut to its budget.
pub const TRUNCATED_MARKER: &str = "\n[… output truncated by corral]";

/// The text of a tool's output as the model reads it: JSON pieces as JSON text, terminal
/// escapes and control characters removed (newline and tab kept), and at most `max_bytes`
/// bytes, cut at a grapheme boundary with [`TRUNCATED_MARKER`] when longer (or when the
/// sandbox already truncated it).
pub fn for_model(output: &CallOutput, max_bytes: usize) -> String {
    let joined: Vec<String> = output
        .content
        .iter()
        .map(|piece| match piece {
            Content::Text(t) => t.clone(),
            Content::Json(v) => v.to_string(),
        })
        .collect();
    let (text, cut) = cap(&strip_control(&joined.join("\n")), max_bytes);
    if cut || output.truncated {
        format!("{text}{TRUNCATED_MARKER}")
    } else {
        text
    }
}

/// `text` cut to at most `max_bytes` at a grapheme boundary; whether it was cut.
pub fn cap(text: &str, max_bytes: usize) -> (String, bool) {
    if text.len() <= max_bytes {
        return (text.to_owned(), false);
    }
    let mut end = 0;
    for (i, g) in text.grapheme_indices(true) {
        if i + g.len() > max_bytes {
            break;
        }
        end = i + g.len();
    }
    (text[..end].to_owned(), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_never_splits_a_grapheme() {
        // "é" as e + combining acute: two chars, one grapheme.
        let text = "ab\u{65}\u{301}cd";
        assert_eq!(cap(text, 3), ("ab".to_owned(), true));
        assert_eq!(cap(text, 5), ("ab\u{65}\u{301}".to_owned(), true));
        assert_eq!(cap(text, 100), (text.to_owned(), false));
    }
}
