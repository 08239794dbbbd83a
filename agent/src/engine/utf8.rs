//! Turning token pieces into text without ever emitting a broken character.
//!
//! A token's bytes may end in the middle of a UTF-8 sequence (byte-level BPE splits Hindi, Thai and
//! emoji freely), so the decoder keeps the incomplete tail across pieces and only releases whole
//! characters. Bytes that can never become valid UTF-8 are replaced by U+FFFD, one per invalid
//! sequence, so a misbehaving model cannot make the stream stall or panic.

/// Incremental UTF-8 decoder for a stream of byte pieces.
#[derive(Debug, Default, Clone)]
pub struct PieceDecoder {
    pending: Vec<u8>,
}

impl PieceDecoder {
    /// A decoder with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one piece and returns the text that is now complete (possibly empty).
    pub fn push(&mut self, piece: &[u8]) -> String {
        self.pending.extend_from_slice(piece);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(text) => {
                    out.push_str(text);
                    self.pending.clear();
                    return out;
                }
                Err(err) => {
                    let valid = err.valid_up_to();
                    // SAFETY of the slice: `valid_up_to` marks the end of valid UTF-8.
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match err.error_len() {
                        // An incomplete sequence at the end: keep it for the next piece.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        // Bytes that can never be valid: replace them and go on.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Ends the stream: an incomplete trailing sequence becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        if self.pending.is_empty() {
            String::new()
        } else {
            self.pending.clear();
            char::REPLACEMENT_CHARACTER.to_string()
        }
    }

    /// Whether bytes are waiting for the rest of their character.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `text` split into pieces of `size` bytes and returns what came out.
    fn feed_in_pieces(text: &str, size: usize) -> (String, Vec<String>) {
        let mut decoder = PieceDecoder::new();
        let mut out = String::new();
        let mut chunks = Vec::new();
        for piece in text.as_bytes().chunks(size) {
            let chunk = decoder.push(piece);
            assert!(
                !chunk.contains('\u{FFFD}'),
                "valid input produced U+FFFD: {chunk:?}"
            );
            out.push_str(&chunk);
            chunks.push(chunk);
        }
        out.push_str(&decoder.finish());
        (out, chunks)
    }

    const SAMPLES: &[(&str, &str)] = &[
        ("hindi", "नमस्ते, आप कैसे हैं?"),
        ("thai", "สวัสดีครับ ยินดีที่ได้รู้จัก"),
        ("emoji", "ok 👍🏽 family 👨‍👩‍👧 flag 🇫🇷"),
        ("mixed", "Grüße, ça va? ¿Qué tal? 東京"),
    ];

    #[test]
    fn every_split_of_multibyte_text_roundtrips() {
        for (name, text) in SAMPLES {
            for size in 1..=5 {
                let (out, _) = feed_in_pieces(text, size);
                assert_eq!(&out, text, "{name} split every {size} bytes");
            }
        }
    }

    #[test]
    fn split_sequence_is_held_back_until_complete() {
        let thumbs = "👍".as_bytes(); // 4 bytes
        let mut decoder = PieceDecoder::new();
        assert_eq!(decoder.push(&thumbs[..1]), "");
        assert_eq!(decoder.push(&thumbs[1..3]), "");
        assert!(decoder.has_pending());
        assert_eq!(decoder.push(&thumbs[3..]), "👍");
        assert!(!decoder.has_pending());
    }

    #[test]
    fn hindi_combining_marks_split_across_pieces() {
        // "स्" is three code points (3 bytes each); split mid second code point.
        let text = "स्ते";
        let bytes = text.as_bytes();
        let mut decoder = PieceDecoder::new();
        let first = decoder.push(&bytes[..4]);
        assert_eq!(first, "स");
        let rest = decoder.push(&bytes[4..]);
        assert_eq!(format!("{first}{rest}"), text);
    }

    #[test]
    fn invalid_bytes_become_replacement_characters_without_stalling() {
        let mut decoder = PieceDecoder::new();
        assert_eq!(decoder.push(b"a\xffb"), "a\u{FFFD}b");
        // A lone continuation byte followed by valid text.
        assert_eq!(decoder.push(b"\x80ok"), "\u{FFFD}ok");
    }

    #[test]
    fn unfinished_sequence_at_end_of_stream_is_replaced() {
        let mut decoder = PieceDecoder::new();
        assert_eq!(decoder.push(&"ไ".as_bytes()[..2]), "");
        assert_eq!(decoder.finish(), "\u{FFFD}");
        assert_eq!(decoder.finish(), "");
    }
}
