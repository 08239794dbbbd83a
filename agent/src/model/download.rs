//! Downloading a file by URL and sha256, with progress, into a temporary file that only becomes
//! visible once complete and verified.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// The server could not be reached.
    #[error("cannot reach {url}: {reason}; check your network connection (or proxy) and retry")]
    Network {
        /// What was requested.
        url: String,
        /// The transport error.
        reason: String,
    },
    /// The server answered with an error status.
    #[error("{url} answered HTTP {status}; the file may have moved, retry later")]
    Status {
        /// What was requested.
        url: String,
        /// HTTP status code.
        status: u16,
    },
    /// The transfer ended early.
    #[error("download of {url} was cut short ({got} of {expected} bytes); retry")]
    Truncated {
        /// What was requested.
        url: String,
        /// Bytes received.
        got: u64,
        /// Bytes announced.
        expected: u64,
    },
    /// The content is not what was pinned.
    #[error("sha256 mismatch for {url}: expected {expected}, got {actual}; the file was not kept")]
    HashMismatch {
        /// What was requested.
        url: String,
        /// Pinned hash.
        expected: String,
        /// Hash of what arrived.
        actual: String,
    },
    /// A local file error.
    #[error("cannot write the download into {dir}: {source}")]
    Io {
        /// Destination folder.
        dir: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// An HTTP agent with the system's CA certificates and sane timeouts.
pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(15))
        .timeout_read(Duration::from_secs(60))
        .user_agent(concat!("corral/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Sends a GET and maps transport and status failures to [`DownloadError`].
///
/// # Errors
/// Network failure or a non-2xx status.
pub fn get(url: &str) -> Result<ureq::Response, DownloadError> {
    match agent().get(url).call() {
        Ok(response) => Ok(response),
        Err(ureq::Error::Status(status, _)) => Err(DownloadError::Status {
            url: url.to_string(),
            status,
        }),
        Err(ureq::Error::Transport(t)) => Err(DownloadError::Network {
            url: url.to_string(),
            // ureq's message repeats the URL; keep only the cause.
            reason: t.to_string().replace(&format!("{url}: "), ""),
        }),
    }
}

/// Downloads `url` into a new temporary file inside `dir`, checking its sha256 (lowercase hex).
///
/// The file is deleted on any failure; on success the caller persists it (an atomic rename).
///
/// # Errors
/// Network, status, truncation, hash mismatch or local I/O failures.
pub fn download(
    url: &str,
    expected_sha256: &str,
    dir: &Path,
    show_progress: bool,
) -> Result<NamedTempFile, DownloadError> {
    let io = |source| DownloadError::Io {
        dir: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let response = get(url)?;
    let expected_len: Option<u64> = response
        .header("Content-Length")
        .and_then(|v| v.trim().parse().ok());
    let bar = progress_bar(expected_len, show_progress, url);
    let mut body = response.into_reader();
    let mut file = NamedTempFile::with_prefix_in(".download-", dir).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bar.abandon();
                if let Some(expected) = expected_len {
                    return Err(DownloadError::Truncated {
                        url: url.to_string(),
                        got,
                        expected,
                    });
                }
                return Err(DownloadError::Network {
                    url: url.to_string(),
                    reason: e.to_string(),
                });
            }
        };
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(io)?;
        got += n as u64;
        bar.set_position(got);
    }
    bar.finish_and_clear();
    if let Some(expected) = expected_len.filter(|&e| e != got) {
        return Err(DownloadError::Truncated {
            url: url.to_string(),
            got,
            expected,
        });
    }
    file.flush().map_err(io)?;
    let actual = hex::encode(hasher.finalize());
    if !actual.eq_ignore_ascii_case(expected_sha256) {
        return Err(DownloadError::HashMismatch {
            url: url.to_string(),
            expected: expected_sha256.to_string(),
            actual,
        });
    }
    Ok(file)
}

fn progress_bar(len: Option<u64>, show: bool, url: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let name = url.rsplit('/').next().unwrap_or(url).to_string();
    let bar = match len {
        Some(len) => indicatif::ProgressBar::new(len),
        None => indicatif::ProgressBar::no_length(),
    };
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(name);
    bar
}
