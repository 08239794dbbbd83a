//! Tiny GGUF files and wheels built in memory, for pull and bad-input tests.

use std::io::Write;

/// A minimal, complete GGUF v3 file: architecture + name + one F32 tensor of 8 elements.
pub fn tiny_gguf(name: &str) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(1u64.to_le_bytes());
    out.extend(2u64.to_le_bytes());
    string(&mut out, "general.architecture");
    out.extend(8u32.to_le_bytes());
    string(&mut out, "llama");
    string(&mut out, "general.name");
    out.extend(8u32.to_le_bytes());
    string(&mut out, name);
    string(&mut out, "w");
    out.extend(1u32.to_le_bytes());
    out.extend(8u64.to_le_bytes());
    out.extend(0u32.to_le_bytes());
    out.extend(0u64.to_le_bytes());
    while !out.len().is_multiple_of(32) {
        out.push(0);
    }
    out.extend([0u8; 32]);
    out
}

/// A wheel (zip) holding `gguf` as `<package>/model.gguf`, next to some metadata.
pub fn wheel_with(gguf: &[u8]) -> Vec<u8> {
    let mut cursor = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut cursor);
        let options = zip::write::SimpleFileOptions::default();
        zip.start_file("tiny/__init__.py", options).unwrap();
        zip.write_all(b"").unwrap();
        zip.start_file("tiny/model.gguf", options).unwrap();
        zip.write_all(gguf).unwrap();
        zip.start_file("tiny-0.1.dist-info/METADATA", options)
            .unwrap();
        zip.write_all(b"Name: tiny\n").unwrap();
        zip.finish().unwrap();
    }
    cursor.into_inner()
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
