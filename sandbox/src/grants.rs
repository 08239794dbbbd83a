//! Capabilities: what a plugin asks for, what the user granted, and what a call gets.
//!
//! Effective rights are the intersection of the two, so a plugin gets nothing its manifest did
//! not declare and nothing the user did not allow; the default grant is empty. Each kind of right
//! is matched by a key the plugin author and the user both write: a directory by its guest path,
//! an environment variable by name, a network peer by `ip:port`. A user may write `"*"` in `env`
//! or `network` to allow whatever the manifest declares (directories always need a host path).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::limits::LimitsSpec;

/// Access to a preopened directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Read and list only: writes, truncation, renames and removals fail.
    Ro,
    /// Read and write.
    Rw,
}

/// A directory a plugin asks for, by the path it will see.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirRequest {
    /// Absolute path inside the guest, such as `/workspace`.
    pub guest: String,
    /// The most access the plugin wants.
    pub mode: Mode,
}

/// The `[capabilities]` table of a plugin manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Directories, by guest path.
    #[serde(default)]
    pub dirs: Vec<DirRequest>,
    /// Environment variable names the plugin may read.
    #[serde(default)]
    pub env: Vec<String>,
    /// TCP peers (`ip:port`) the plugin may connect to. Everything else, including name lookup
    /// and UDP, stays denied.
    #[serde(default)]
    pub network: Vec<String>,
}

/// A directory the user grants: host folder, the guest path it maps to, and the most access.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    /// Folder on the host.
    pub host: PathBuf,
    /// Guest path it appears at; must match a [`DirRequest::guest`] to take effect.
    pub guest: String,
    /// The most access allowed.
    pub mode: Mode,
}

/// What the user granted one plugin (a `[plugins.<id>]` table of the grants file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// SHA-256 of the component the user granted this to. A grant follows the code, not the
    /// plugin id: a different component under the same id gets nothing until granted again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Directories.
    #[serde(default)]
    pub dirs: Vec<DirGrant>,
    /// Environment variable names, or `"*"`.
    #[serde(default)]
    pub env: Vec<String>,
    /// TCP peers (`ip:port`), or `"*"`.
    #[serde(default)]
    pub network: Vec<String>,
    /// The user's maxima for this plugin's limits.
    #[serde(default)]
    pub limits: LimitsSpec,
}

/// One directory a call sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preopen {
    /// Folder on the host.
    pub host: PathBuf,
    /// Where the guest sees it.
    pub guest: String,
    /// Effective access: the lesser of asked and granted.
    pub mode: Mode,
}

/// The rights a call runs with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effective {
    /// Preopened directories.
    pub dirs: Vec<Preopen>,
    /// Environment variables with the host's values at the time of granting.
    pub env: Vec<(String, String)>,
    /// Allowed TCP peers; empty means no network at all.
    pub network: Vec<SocketAddr>,
}

/// A manifest's capability request the plugin author must fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// A guest path that is not absolute or contains `..`.
    #[error("capabilities.dirs: guest path `{0}` must be absolute and must not contain `..`")]
    GuestPath(String),
    /// An empty, `=`- or NUL-containing variable name, or `*`.
    #[error("capabilities.env: `{0}` is not a variable name")]
    EnvName(String),
    /// A network entry that is not `ip:port`.
    #[error("capabilities.network: `{0}` is not an `ip:port` address such as `127.0.0.1:8080`")]
    Peer(String),
}

/// Checks a manifest's requests for shape errors the author must fix.
///
/// # Errors
/// The first bad entry.
pub fn check_requests(caps: &Capabilities) -> Result<(), RequestError> {
    for dir in &caps.dirs {
        if !dir.guest.starts_with('/') || dir.guest.split('/').any(|part| part == "..") {
            return Err(RequestError::GuestPath(dir.guest.clone()));
        }
    }
    for name in &caps.env {
        if name.is_empty() || name.contains('=') || name.contains('\0') || name == "*" {
            return Err(RequestError::EnvName(name.clone()));
        }
    }
    for peer in &caps.network {
        if peer.parse::<SocketAddr>().is_err() {
            return Err(RequestError::Peer(peer.clone()));
        }
    }
    Ok(())
}

/// Intersects what the plugin asked for with what the user granted.
///
/// `lookup_env` reads a host variable (the process environment in production, a table in tests).
/// Requests without a matching grant, and grants without a matching request, give nothing.
pub fn effective(
    asked: &Capabilities,
    granted: &Grant,
    lookup_env: impl Fn(&str) -> Option<String>,
) -> Effective {
    let dirs = asked
        .dirs
        .iter()
        .filter_map(|req| {
            let grant = granted.dirs.iter().find(|g| g.guest == req.guest)?;
            Some(Preopen {
                host: grant.host.clone(),
                guest: req.guest.clone(),
                mode: req.mode.min(grant.mode),
            })
        })
        .collect();
    let allows = |list: &[String], key: &str| list.iter().any(|g| g == "*" || g == key);
    let env = asked
        .env
        .iter()
        .filter(|name| allows(&granted.env, name))
        .filter_map(|name| Some((name.clone(), lookup_env(name)?)))
        .collect();
    let network = asked
        .network
        .iter()
        .filter(|peer| allows(&granted.network, peer))
        .filter_map(|peer| peer.parse().ok())
        .collect();
    Effective { dirs, env, network }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked() -> Capabilities {
        Capabilities {
            dirs: vec![
                DirRequest {
                    guest: "/workspace".into(),
                    mode: Mode::Rw,
                },
                DirRequest {
                    guest: "/data".into(),
                    mode: Mode::Ro,
                },
            ],
            env: vec!["TZ".into(), "LANG".into()],
            network: vec!["127.0.0.1:8080".into()],
        }
    }

    fn env(name: &str) -> Option<String> {
        Some(format!("value-of-{name}"))
    }

    #[test]
    fn no_grant_gives_nothing() {
        assert_eq!(
            effective(&asked(), &Grant::default(), env),
            Effective::default()
        );
    }

    #[test]
    fn exact_grants_intersect_and_lower_modes() {
        let grant = Grant {
            dirs: vec![
                DirGrant {
                    host: "/tmp/w".into(),
                    guest: "/workspace".into(),
                    mode: Mode::Ro,
                },
                DirGrant {
                    host: "/etc".into(),
                    guest: "/etc".into(),
                    mode: Mode::Rw,
                },
            ],
            env: vec!["TZ".into(), "HOME".into()],
            network: vec!["127.0.0.1:8080".into()],
            ..Grant::default()
        };
        let eff = effective(&asked(), &grant, env);
        assert_eq!(
            eff.dirs,
            vec![Preopen {
                host: "/tmp/w".into(),
                guest: "/workspace".into(),
                mode: Mode::Ro
            }]
        );
        assert_eq!(eff.env, vec![("TZ".to_string(), "value-of-TZ".to_string())]);
        assert_eq!(
            eff.network,
            vec!["127.0.0.1:8080".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn wildcard_allows_only_what_was_asked() {
        let grant = Grant {
            env: vec!["*".into()],
            network: vec!["*".into()],
            ..Grant::default()
        };
        let eff = effective(&asked(), &grant, env);
        assert_eq!(eff.env.len(), 2);
        assert_eq!(eff.network.len(), 1);
        assert!(eff.dirs.is_empty(), "directories always need a host path");
    }

    #[test]
    fn unset_host_variables_are_skipped() {
        let grant = Grant {
            env: vec!["TZ".into()],
            ..Grant::default()
        };
        assert!(effective(&asked(), &grant, |_| None).env.is_empty());
    }

    #[test]
    fn bad_requests_are_named() {
        for (caps, needle) in [
            (
                Capabilities {
                    dirs: vec![DirRequest {
                        guest: "rel".into(),
                        mode: Mode::Ro,
                    }],
                    ..Default::default()
                },
                "rel",
            ),
            (
                Capabilities {
                    dirs: vec![DirRequest {
                        guest: "/a/../b".into(),
                        mode: Mode::Ro,
                    }],
                    ..Default::default()
                },
                "/a/../b",
            ),
            (
                Capabilities {
                    env: vec!["A=B".into()],
                    ..Default::default()
                },
                "A=B",
            ),
            (
                Capabilities {
                    network: vec!["example.com".into()],
                    ..Default::default()
                },
                "example.com",
            ),
        ] {
            let err = check_requests(&caps).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
        check_requests(&asked()).unwrap();
    }
}
