//! Shared by the tools integration tests: build a guest crate, lay out a plugin folder.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

pub use corral_test_support::build_guest;

/// The adversary test guest, built once per test binary.
pub fn adversary_wasm() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        build_guest(
            &corral_test_support::manifest_dir(env!("CARGO_MANIFEST_DIR"))
                .join("tests/guests/adversary"),
            "adversary.wasm",
        )
    })
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes a plugin folder `dir` holding `wasm` as `<id>.wasm` and a manifest with the right
/// hash (unless `sha256` overrides it) plus `extra` TOML appended.
pub fn plugin_folder(
    dir: &Path,
    id: &str,
    wasm: &[u8],
    sha256: Option<&str>,
    extra: &str,
) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let sum = sha256.map_or_else(|| hex::encode(Sha256::digest(wasm)), str::to_owned);
    std::fs::write(dir.join(format!("{id}.wasm")), wasm).unwrap();
    let manifest = format!(
        "id = \"{id}\"\nversion = \"0.1.0\"\napi = \"0.1.0\"\ncomponent = \"{id}.wasm\"\nsha256 = \"{sum}\"\n{extra}"
    );
    std::fs::write(dir.join("plugin.toml"), manifest).unwrap();
    dir.to_owned()
}

/// The text of a call's result (JSON pieces as JSON text).
///
/// # Panics
/// When the call failed, with the error.
pub fn text(r: &Result<corral_tools::CallOutput, corral_tools::CallError>) -> String {
    match r {
        Ok(out) => out
            .content
            .iter()
            .map(|c| match c {
                corral_tools::Content::Text(t) => t.clone(),
                corral_tools::Content::Json(v) => v.to_string(),
            })
            .collect(),
        Err(e) => panic!("expected a result, got {e}"),
    }
}
