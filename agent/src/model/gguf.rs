//! A GGUF header reader: enough to refuse bad files with a clear reason before llama.cpp sees
//! them, and to read the metadata corral needs (name, architecture, training context, chat
//! template).
//!
//! It walks the header, every metadata value and every tensor description, then checks that the
//! file is long enough to hold the tensor data those descriptions promise, so a download cut
//! short is caught here instead of deep inside llama.cpp. Lengths read from the file are checked
//! against the file's size before anything is allocated: a hostile header cannot make it
//! allocate or loop without bound.
//!
//! [`string_array`] reads one metadata array of strings (a vocabulary's tokens) and says where
//! its value lies in the file, so a caller can splice in a changed copy ([`StringArray::encode`]).

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// What was wrong with a file that should be GGUF.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file does not exist.
    #[error("no such file: pass an existing .gguf file to --model, or run `corral model pull`")]
    Missing,
    /// It could not be read.
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
    /// The magic bytes are wrong.
    #[error("not a GGUF model file (it starts with {0:?}, GGUF files start with \"GGUF\")")]
    NotGguf(String),
    /// A GGUF version corral does not read.
    #[error("GGUF version {0} is not supported (versions 2 and 3 are)")]
    UnsupportedVersion(u32),
    /// The file ends before its header says it should.
    #[error(
        "the file is truncated: it has {actual} bytes but its header needs {needed}; \
         download it again"
    )]
    Truncated {
        /// Bytes the header requires.
        needed: u64,
        /// Bytes present.
        actual: u64,
    },
    /// The header contradicts itself.
    #[error("the GGUF header is corrupt: {0}")]
    Corrupt(String),
}

/// What corral reads from a GGUF header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GgufSummary {
    /// `general.name`, else the file stem.
    pub name: String,
    /// `general.architecture` (e.g. `llama`).
    pub architecture: String,
    /// `<arch>.context_length`, the training context.
    pub context_length: Option<u64>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
    /// Number of tensors (0 for a vocab-only file).
    pub tensor_count: u64,
    /// File size in bytes.
    pub file_size: u64,
}

/// A metadata value, as far as corral cares.
enum Value {
    Uint(u64),
    Text(String),
    Other,
}

/// Reads and checks the GGUF file at `path`.
///
/// # Errors
/// Missing, unreadable, not GGUF, unsupported version, corrupt or truncated.
pub fn inspect(path: &Path) -> Result<GgufSummary, GgufError> {
    let Header {
        mut reader,
        tensor_count,
        kv_count,
    } = Header::read(path)?;
    let file_size = reader.len;
    let mut summary = GgufSummary {
        tensor_count,
        file_size,
        ..GgufSummary::default()
    };
    let mut context_lengths = Vec::new();
    let mut alignment = 32u64;
    for _ in 0..kv_count {
        let key = reader.string()?;
        let value = reader.value()?;
        match (key.as_str(), value) {
            ("general.name", Value::Text(v)) => summary.name = v,
            ("general.architecture", Value::Text(v)) => summary.architecture = v,
            ("tokenizer.chat_template", Value::Text(v)) => summary.chat_template = Some(v),
            ("general.alignment", Value::Uint(v)) if v > 0 => alignment = v,
            (k, Value::Uint(v)) if k.ends_with(".context_length") => {
                context_lengths.push((k.to_string(), v));
            }
            _ => {}
        }
    }
    let arch_key = format!("{}.context_length", summary.architecture);
    summary.context_length = context_lengths
        .iter()
        .find(|(k, _)| *k == arch_key)
        .map(|(_, v)| *v);
    if summary.name.is_empty() {
        summary.name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
    }

    let mut data_end = 0u64;
    for _ in 0..tensor_count {
        let name = reader.string()?;
        let dims = reader.u32()?;
        if dims > 8 {
            return Err(GgufError::Corrupt(format!(
                "tensor {name} has {dims} dimensions"
            )));
        }
        let mut elements = 1u64;
        for _ in 0..dims {
            elements = elements.saturating_mul(reader.u64()?);
        }
        let kind = reader.u32()?;
        let offset = reader.u64()?;
        if let Some(bytes) = tensor_bytes(kind, elements) {
            data_end = data_end.max(offset.saturating_add(bytes));
        }
    }
    let data_start = reader.pos.div_ceil(alignment) * alignment;
    let needed = if tensor_count == 0 {
        reader.pos
    } else {
        data_start.saturating_add(data_end)
    };
    if needed > file_size {
        return Err(GgufError::Truncated {
            needed,
            actual: file_size,
        });
    }
    Ok(summary)
}

/// One metadata array of strings, and where its value lies in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringArray {
    /// The strings, as bytes (GGUF does not promise UTF-8).
    pub values: Vec<Vec<u8>>,
    /// Byte range of the value in the file: item type, count and the strings.
    pub span: Range<u64>,
}

impl StringArray {
    /// The value as GGUF stores it (item type, count, then length-prefixed strings): the bytes
    /// to put at [`span`](Self::span) for a file holding `values` instead.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(TYPE_STRING.to_le_bytes());
        out.extend((self.values.len() as u64).to_le_bytes());
        for value in &self.values {
            out.extend((value.len() as u64).to_le_bytes());
            out.extend(value);
        }
        out
    }
}

/// GGUF's metadata type ids for strings and arrays.
const TYPE_STRING: u32 = 8;
const TYPE_ARRAY: u32 = 9;

/// Reads the metadata array of strings under `key` (e.g. `tokenizer.ggml.tokens`) from the GGUF
/// file at `path`; `None` when there is no such key or its value is not an array of strings.
///
/// # Errors
/// As [`inspect`], for the part of the file read up to that key.
pub fn string_array(path: &Path, key: &str) -> Result<Option<StringArray>, GgufError> {
    let Header {
        mut reader,
        kv_count,
        ..
    } = Header::read(path)?;
    for _ in 0..kv_count {
        let this_key = reader.string()?;
        let kind = reader.u32()?;
        if this_key != key || kind != TYPE_ARRAY {
            reader.typed_value(kind)?;
            continue;
        }
        let start = reader.pos;
        let item = reader.u32()?;
        let count = reader.u64()?;
        if item != TYPE_STRING {
            return Ok(None);
        }
        reader.check_count(count, 8)?;
        let values = (0..count)
            .map(|_| reader.bytes())
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Some(StringArray {
            values,
            span: start..reader.pos,
        }));
    }
    Ok(None)
}

/// What a path is when it is not a regular file (a model file must be one).
fn file_kind(ft: &std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    match () {
        _ if ft.is_file() => None,
        _ if ft.is_dir() => Some("a directory"),
        _ if ft.is_fifo() => Some("a FIFO"),
        _ if ft.is_socket() => Some("a socket"),
        _ if ft.is_block_device() || ft.is_char_device() => Some("a device"),
        _ => Some("not a regular file"),
    }
}

/// `O_NONBLOCK` for `open(2)`.
fn libc_nonblock() -> i32 {
    0o4000
}

/// A checked file header: a reader placed after it, and the counts it declares.
struct Header {
    reader: Reader,
    tensor_count: u64,
    kv_count: u64,
}

impl Header {
    fn read(path: &Path) -> Result<Self, GgufError> {
        // Look before opening: opening a FIFO would block until someone writes to it.
        let kind = match std::fs::metadata(path) {
            Ok(meta) => file_kind(&meta.file_type()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(GgufError::Missing),
            Err(e) => return Err(GgufError::Io(e)),
        };
        if let Some(kind) = kind {
            return Err(GgufError::NotGguf(kind.into()));
        }
        // Non-blocking, in case it was swapped for a FIFO since: the open then never waits.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc_nonblock())
            .open(path)?;
        let meta = file.metadata()?;
        if let Some(kind) = file_kind(&meta.file_type()) {
            return Err(GgufError::NotGguf(kind.into()));
        }
        let file_size = meta.len();
        let mut reader = Reader {
            inner: BufReader::new(file),
            pos: 0,
            len: file_size,
        };
        let mut magic = [0u8; 4];
        if file_size < 4 {
            return Err(GgufError::NotGguf(format!("{file_size} bytes")));
        }
        reader.read_exact(&mut magic)?;
        if &magic != b"GGUF" {
            return Err(GgufError::NotGguf(
                String::from_utf8_lossy(&magic).into_owned(),
            ));
        }
        let version = reader.u32()?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let tensor_count = reader.u64()?;
        let kv_count = reader.u64()?;
        reader.check_count(tensor_count, 8)?;
        reader.check_count(kv_count, 12)?;
        Ok(Self {
            reader,
            tensor_count,
            kv_count,
        })
    }
}

/// Bytes of a tensor of `elements` elements of ggml type `kind`, for the types whose layout is
/// known here (others are left to llama.cpp to check).
fn tensor_bytes(kind: u32, elements: u64) -> Option<u64> {
    // (ggml type id, elements per block, bytes per block)
    const LAYOUTS: &[(u32, u64, u64)] = &[
        (0, 1, 4),      // F32
        (1, 1, 2),      // F16
        (2, 32, 18),    // Q4_0
        (3, 32, 20),    // Q4_1
        (6, 32, 22),    // Q5_0
        (7, 32, 24),    // Q5_1
        (8, 32, 34),    // Q8_0
        (9, 32, 36),    // Q8_1
        (10, 256, 84),  // Q2_K
        (11, 256, 110), // Q3_K
        (12, 256, 144), // Q4_K
        (13, 256, 176), // Q5_K
        (14, 256, 210), // Q6_K
        (15, 256, 292), // Q8_K
        (20, 32, 18),   // IQ4_NL
        (23, 256, 136), // IQ4_XS
        (24, 1, 1),     // I8
        (25, 1, 2),     // I16
        (26, 1, 4),     // I32
        (27, 1, 8),     // I64
        (28, 1, 8),     // F64
        (30, 1, 2),     // BF16
    ];
    let &(_, per_block, block_bytes) = LAYOUTS.iter().find(|(id, _, _)| *id == kind)?;
    Some(elements.div_ceil(per_block).saturating_mul(block_bytes))
}

/// A byte reader that knows the file length, so declared sizes can be checked first.
struct Reader {
    inner: BufReader<File>,
    pos: u64,
    len: u64,
}

impl Reader {
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), GgufError> {
        let needed = self.pos + buf.len() as u64;
        if needed > self.len {
            return Err(GgufError::Truncated {
                needed,
                actual: self.len,
            });
        }
        self.inner.read_exact(buf)?;
        self.pos = needed;
        Ok(())
    }

    fn skip(&mut self, bytes: u64) -> Result<(), GgufError> {
        let needed = self.pos.saturating_add(bytes);
        if needed > self.len {
            return Err(GgufError::Truncated {
                needed,
                actual: self.len,
            });
        }
        self.inner.seek(SeekFrom::Start(needed))?;
        self.pos = needed;
        Ok(())
    }

    /// Refuses a count of items of at least `min_size` bytes each that cannot fit in the file.
    fn check_count(&self, count: u64, min_size: u64) -> Result<(), GgufError> {
        let needed = self.pos.saturating_add(count.saturating_mul(min_size));
        if needed > self.len {
            return Err(GgufError::Truncated {
                needed,
                actual: self.len,
            });
        }
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        let mut buf = [0u8; 4];
        self.read_exact(&mut buf)?;
        Ok(u32::from_le_bytes(buf))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        let mut buf = [0u8; 8];
        self.read_exact(&mut buf)?;
        Ok(u64::from_le_bytes(buf))
    }

    fn bytes(&mut self) -> Result<Vec<u8>, GgufError> {
        let len = self.u64()?;
        self.check_count(len, 1)?;
        let mut buf = vec![0u8; len as usize];
        self.read_exact(&mut buf)?;
        Ok(buf)
    }

    fn string(&mut self) -> Result<String, GgufError> {
        Ok(String::from_utf8_lossy(&self.bytes()?).into_owned())
    }

    fn value(&mut self) -> Result<Value, GgufError> {
        let kind = self.u32()?;
        self.typed_value(kind)
    }

    fn typed_value(&mut self, kind: u32) -> Result<Value, GgufError> {
        Ok(match kind {
            0 | 1 | 7 => {
                let mut b = [0u8; 1];
                self.read_exact(&mut b)?;
                Value::Uint(u64::from(b[0]))
            }
            2 | 3 => {
                let mut b = [0u8; 2];
                self.read_exact(&mut b)?;
                Value::Uint(u64::from(u16::from_le_bytes(b)))
            }
            4 | 5 => Value::Uint(u64::from(self.u32()?)),
            6 => {
                self.skip(4)?;
                Value::Other
            }
            10 | 11 => Value::Uint(self.u64()?),
            12 => {
                self.skip(8)?;
                Value::Other
            }
            8 => Value::Text(self.string()?),
            9 => {
                let item = self.u32()?;
                let count = self.u64()?;
                self.skip_array(item, count)?;
                Value::Other
            }
            other => return Err(GgufError::Corrupt(format!("unknown metadata type {other}"))),
        })
    }

    fn skip_array(&mut self, item: u32, count: u64) -> Result<(), GgufError> {
        let fixed = match item {
            0 | 1 | 7 => Some(1),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        };
        if let Some(size) = fixed {
            return self.skip(count.saturating_mul(size));
        }
        match item {
            8 => {
                self.check_count(count, 8)?;
                for _ in 0..count {
                    let len = self.u64()?;
                    self.skip(len)?;
                }
                Ok(())
            }
            9 => Err(GgufError::Corrupt("nested metadata arrays".into())),
            other => Err(GgufError::Corrupt(format!(
                "unknown array item type {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A minimal GGUF v3 file: name + architecture + context length + one F32 tensor of 8
    /// elements (32 bytes of data).
    fn tiny_gguf(with_data: bool) -> Vec<u8> {
        fn string(out: &mut Vec<u8>, s: &str) {
            out.extend((s.len() as u64).to_le_bytes());
            out.extend(s.as_bytes());
        }
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend(1u64.to_le_bytes()); // tensors
        out.extend(3u64.to_le_bytes()); // kv
        string(&mut out, "general.architecture");
        out.extend(8u32.to_le_bytes());
        string(&mut out, "llama");
        string(&mut out, "general.name");
        out.extend(8u32.to_le_bytes());
        string(&mut out, "Tiny");
        string(&mut out, "llama.context_length");
        out.extend(4u32.to_le_bytes());
        out.extend(2048u32.to_le_bytes());
        string(&mut out, "w");
        out.extend(1u32.to_le_bytes());
        out.extend(8u64.to_le_bytes());
        out.extend(0u32.to_le_bytes()); // F32
        out.extend(0u64.to_le_bytes()); // offset
        while !out.len().is_multiple_of(32) {
            out.push(0);
        }
        if with_data {
            out.extend([0u8; 32]);
        }
        out
    }

    fn write(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(bytes).unwrap();
        file
    }

    #[test]
    fn reads_metadata_of_a_complete_file() {
        let file = write(&tiny_gguf(true));
        let summary = inspect(file.path()).unwrap();
        assert_eq!(summary.name, "Tiny");
        assert_eq!(summary.architecture, "llama");
        assert_eq!(summary.context_length, Some(2048));
        assert_eq!(summary.tensor_count, 1);
    }

    #[test]
    fn missing_tensor_data_is_truncation() {
        let file = write(&tiny_gguf(false));
        let err = inspect(file.path()).unwrap_err();
        assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
    }

    #[test]
    fn every_cut_of_the_header_is_an_error_not_a_panic() {
        let bytes = tiny_gguf(true);
        for cut in 0..bytes.len() {
            let file = write(&bytes[..cut]);
            assert!(inspect(file.path()).is_err(), "cut at {cut} accepted");
        }
    }

    #[test]
    fn other_files_are_not_gguf() {
        let file = write(b"PK\x03\x04 this is a zip");
        assert!(matches!(inspect(file.path()), Err(GgufError::NotGguf(_))));
        assert!(matches!(
            inspect(Path::new("/no/such/model.gguf")),
            Err(GgufError::Missing)
        ));
    }

    /// Hardening issue: a model path that is a folder or a FIFO gives one clear error, and the
    /// FIFO is never opened (that would block until someone writes to it).
    #[test]
    fn folders_and_fifos_are_named_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        let err = inspect(dir.path()).unwrap_err();
        assert!(
            matches!(&err, GgufError::NotGguf(k) if k == "a directory"),
            "{err}"
        );
        let fifo = dir.path().join("model.gguf");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let err = inspect(&fifo).unwrap_err();
        assert!(
            matches!(&err, GgufError::NotGguf(k) if k == "a FIFO"),
            "{err}"
        );
    }

    /// A tensor-free GGUF v3 file: a name, then `tokenizer.ggml.tokens` = `tokens`, then a u32.
    fn vocab_gguf(tokens: &[&str]) -> Vec<u8> {
        fn string(out: &mut Vec<u8>, s: &str) {
            out.extend((s.len() as u64).to_le_bytes());
            out.extend(s.as_bytes());
        }
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend(0u64.to_le_bytes()); // tensors
        out.extend(3u64.to_le_bytes()); // kv
        string(&mut out, "general.name");
        out.extend(8u32.to_le_bytes());
        string(&mut out, "Vocab");
        string(&mut out, "tokenizer.ggml.tokens");
        out.extend(9u32.to_le_bytes());
        out.extend(8u32.to_le_bytes());
        out.extend((tokens.len() as u64).to_le_bytes());
        for token in tokens {
            string(&mut out, token);
        }
        string(&mut out, "tokenizer.ggml.bos_token_id");
        out.extend(4u32.to_le_bytes());
        out.extend(7u32.to_le_bytes());
        out
    }

    #[test]
    fn string_arrays_are_read_with_their_span_and_splice_back() {
        let bytes = vocab_gguf(&["<s>", "a", "b"]);
        let file = write(&bytes);
        let mut tokens = string_array(file.path(), "tokenizer.ggml.tokens")
            .unwrap()
            .expect("the array is there");
        assert_eq!(tokens.values, [&b"<s>"[..], b"a", b"b"]);
        let span = tokens.span.start as usize..tokens.span.end as usize;
        assert_eq!(
            tokens.encode(),
            bytes[span.clone()],
            "encode is the identity"
        );

        tokens.values[1] = b"<|longer token|>".to_vec();
        let mut spliced = bytes[..span.start].to_vec();
        spliced.extend(tokens.encode());
        spliced.extend(&bytes[span.end..]);
        let file = write(&spliced);
        let again = string_array(file.path(), "tokenizer.ggml.tokens")
            .unwrap()
            .unwrap();
        assert_eq!(again.values, [&b"<s>"[..], b"<|longer token|>", b"b"]);
        assert_eq!(inspect(file.path()).unwrap().name, "Vocab");

        assert_eq!(string_array(file.path(), "general.name").unwrap(), None);
        assert_eq!(string_array(file.path(), "no.such.key").unwrap(), None);
    }

    #[test]
    fn absurd_lengths_are_refused_before_allocating() {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(3u32.to_le_bytes());
        bytes.extend(0u64.to_le_bytes());
        bytes.extend(1u64.to_le_bytes());
        bytes.extend(u64::MAX.to_le_bytes()); // key length
        let file = write(&bytes);
        assert!(matches!(
            inspect(file.path()),
            Err(GgufError::Truncated { .. })
        ));
    }
}
