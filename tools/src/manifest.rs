//! `plugin.toml`: what a plugin folder declares about itself.
//!
//! ```toml
//! id = "calculator"              # [a-z0-9][a-z0-9_-]{0,63}, unique among installed plugins
//! version = "0.1.0"              # the plugin's own version
//! api = "0.1.0"                  # corral:tool WIT version it targets
//! component = "calculator.wasm"  # file name inside the folder
//! sha256 = "…64 hex digits…"     # of the component file
//! description = "Exact arithmetic"
//!
//! [capabilities]                 # what it asks for; the user grants (see `corral_sandbox::grants`)
//! dirs = [{ guest = "/workspace", mode = "rw" }]
//! env = ["TZ"]
//! network = []
//!
//! [limits]                       # what it asks for; clamped to the user's maxima
//! deadline_ms = 2000
//! memory_mib = 32
//! ```

use std::path::Path;

use corral_sandbox::{grants, Capabilities, LimitsSpec};
use serde::Deserialize;

use crate::error::{Error, ErrorKind};

/// Name of the manifest file inside a plugin folder.
pub const MANIFEST_FILE: &str = "plugin.toml";

/// A parsed and checked `plugin.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Plugin id.
    pub id: String,
    /// The plugin's version.
    pub version: String,
    /// Plugin API (WIT package) version it targets.
    pub api: String,
    /// Component file name, relative to the plugin folder.
    pub component: String,
    /// SHA-256 of the component, lowercase hex.
    pub sha256: String,
    /// One line for humans.
    #[serde(default)]
    pub description: String,
    /// Requested capabilities.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Requested limits.
    #[serde(default)]
    pub limits: LimitsSpec,
}

impl Manifest {
    /// Reads and checks `<dir>/plugin.toml`.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when the file cannot be read, [`ErrorKind::Manifest`] naming the file
    /// and what is wrong with it.
    pub fn load(dir: &Path) -> Result<Manifest, Error> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format_args!("cannot read {}", path.display()), &e))?;
        Manifest::parse(&text).map_err(|e| e.context(path.display()))
    }

    /// Parses and checks manifest text.
    ///
    /// # Errors
    /// [`ErrorKind::Manifest`]: the TOML error, or the field that breaks a rule.
    pub fn parse(text: &str) -> Result<Manifest, Error> {
        let m: Manifest = toml::from_str(text).map_err(|e| {
            Error::new(ErrorKind::Manifest, format!("manifest does not parse: {e}"))
        })?;
        m.check().map_err(|e| Error::new(ErrorKind::Manifest, e))?;
        Ok(m)
    }

    fn check(&self) -> Result<(), String> {
        if !is_id(&self.id) {
            return Err(format!(
                "id `{}` must match [a-z0-9][a-z0-9_-]{{0,63}}",
                self.id
            ));
        }
        if !api_supported(&self.api) {
            return Err(format!(
                "api `{}` is not supported: this corral implements corral:tool@{}",
                self.api,
                corral_sandbox::API_VERSION
            ));
        }
        let c = &self.component;
        if c.is_empty() || c.contains(['/', '\\']) || c == "." || c == ".." {
            return Err(format!(
                "component `{c}` must be a plain file name inside the plugin folder"
            ));
        }
        if self.sha256.len() != 64
            || !self
                .sha256
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err("sha256 must be 64 lowercase hex digits".into());
        }
        grants::check_requests(&self.capabilities).map_err(|e| e.to_string())
    }
}

/// Whether `s` is a valid plugin id.
pub fn is_id(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && s.len() <= 64
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

/// Whether a plugin built against WIT version `api` runs on this host (same 0.minor line).
fn api_supported(api: &str) -> bool {
    let host: Vec<&str> = corral_sandbox::API_VERSION.split('.').collect();
    let want: Vec<&str> = api.split('.').collect();
    want.len() >= 2
        && want.len() <= 3
        && want[..2] == host[..2]
        && want.iter().all(|p| p.parse::<u32>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        id = "calc"
        version = "1.2.3"
        api = "0.1.0"
        component = "calc.wasm"
        sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
        [capabilities]
        dirs = [{ guest = "/workspace", mode = "ro" }]
        env = ["TZ"]
        [limits]
        deadline_ms = 500
    "#;

    #[test]
    fn parses_a_full_manifest() {
        let m = Manifest::parse(GOOD).unwrap();
        assert_eq!(m.id, "calc");
        assert_eq!(m.capabilities.env, ["TZ"]);
        assert_eq!(m.limits.deadline_ms, Some(500));
    }

    #[test]
    fn refuses_with_a_reason() {
        for (from, to, needle) in [
            ("id = \"calc\"", "id = \"Calc!\"", "id `Calc!`"),
            ("api = \"0.1.0\"", "api = \"1.0.0\"", "not supported"),
            ("\"calc.wasm\"", "\"../x.wasm\"", "plain file name"),
            (
                "\"0000000000000000000000000000000000000000000000000000000000000000\"",
                "\"abc\"",
                "64 lowercase",
            ),
            (
                "guest = \"/workspace\"",
                "guest = \"workspace\"",
                "must be absolute",
            ),
            ("version = \"1.2.3\"", "version = 3", "does not parse"),
            ("[limits]", "[limits]\nbogus = 1", "does not parse"),
        ] {
            let text = GOOD.replace(from, to);
            assert_ne!(text, GOOD, "{from}");
            let err = Manifest::parse(&text).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Manifest);
            assert!(err.to_string().contains(needle), "{to}: {err}");
        }
    }
}
