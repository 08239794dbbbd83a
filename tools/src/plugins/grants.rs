//! The user's grants file, and the rules a grant must pass before any call gets it.
//!
//! A grant gives one plugin folders, environment variables, network peers and higher limits.
//! It is applied only when:
//! - it is bound to the component it was given to (`sha256`), so a different component later
//!   installed under the same id inherits nothing;
//! - none of its folders holds, or lies inside, corral's own state (plugins, cache, cache key,
//!   grants): a plugin that could write there could plant native code or grant itself more;
//! - none of its folders lies strictly inside a folder that any plugin may write: that plugin
//!   could swap the inner folder for a symlink between calls. (Folders are also pinned when the
//!   registry is built, see `corral_sandbox::PinnedDir`; this rule makes the layout itself safe.)
//!
//! A grant that breaks a rule is not applied at all, and the reason is reported.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use corral_sandbox::grants::Mode;
use corral_sandbox::private::{check_private, Expect, PrivateError};
use corral_sandbox::Grant;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};

use super::Home;

/// The user's grants file: `[plugins.<id>]` tables of [`Grant`], empty when the file is absent.
///
/// ```toml
/// [plugins.files]
/// sha256 = "…the component's sha256, as `corral tools list` shows it…"
/// dirs = [{ host = "/home/me/project", guest = "/workspace", mode = "rw" }]
/// env = ["TZ"]
/// network = []
/// limits = { deadline_ms = 5000, memory_mib = 128 }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Grants by plugin id.
    #[serde(default)]
    pub plugins: BTreeMap<String, Grant>,
}

impl Grants {
    /// Reads `path`; a missing file grants nothing.
    ///
    /// # Errors
    /// [`ErrorKind::Grants`] naming the file when it exists but is not a regular file, is
    /// writable by other users or not owned by this user, or does not parse; [`ErrorKind::Io`]
    /// when it cannot be read.
    pub fn load(path: &Path) -> Result<Grants, Error> {
        match std::fs::metadata(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Grants::default()),
            Err(e) => {
                return Err(Error::io(
                    format_args!("cannot read {}", path.display()),
                    &e,
                ))
            }
        }
        let expect = Expect {
            file: true,
            follow: true,
            ..Expect::default()
        };
        let refuse = |why: String| Err(Error::new(ErrorKind::Grants, why));
        match check_private(path, expect) {
            Ok(()) => {}
            Err(e @ PrivateError::Owner { .. }) => {
                return refuse(format!("{e}: corral takes grants only from your own file"))
            }
            Err(e @ PrivateError::Writable { .. }) => {
                return refuse(format!(
                    "{e}, who could grant plugins anything; run `chmod go-w {}`",
                    path.display()
                ))
            }
            Err(e) => return refuse(e.to_string()),
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format_args!("cannot read {}", path.display()), &e))?;
        toml::from_str(&text)
            .map_err(|e| Error::new(ErrorKind::Grants, format!("{}: {e}", path.display())))
    }
}

/// Whether `grant` gives anything at all.
fn gives_anything(grant: &Grant) -> bool {
    !grant.dirs.is_empty()
        || !grant.env.is_empty()
        || !grant.network.is_empty()
        || grant.limits != Default::default()
}

/// Checks `id`'s grant against the rules above, given the component's hash and every grant in
/// the file (for overlaps across plugins).
///
/// # Errors
/// [`ErrorKind::Refused`] with the reason and what to do.
pub fn check_grant(id: &str, sha256: &str, grants: &Grants, home: &Home) -> Result<(), Error> {
    let Some(grant) = grants.plugins.get(id).filter(|g| gives_anything(g)) else {
        return Ok(());
    };
    let refuse = |why: String| Err(Error::new(ErrorKind::Refused, why));
    match grant.sha256.as_deref() {
        Some(bound) if bound == sha256 => {}
        Some(bound) => {
            return refuse(format!(
                "plugin `{id}` changed since it was granted (the grant is for sha256 {bound}, the \
                 component now is {sha256}): its grant is not applied; check the new component, \
                 then set `sha256 = \"{sha256}\"` in [plugins.{id}] of {}",
                home.grants.display()
            ))
        }
        None => {
            return refuse(format!(
                "the grant for plugin `{id}` names no component: it is not applied; add \
                 `sha256 = \"{sha256}\"` to [plugins.{id}] in {} to grant it to this component",
                home.grants.display()
            ))
        }
    }
    let state: Vec<PathBuf> = home
        .state_paths()
        .iter()
        .map(|p| real_or_lexical(p))
        .collect();
    for dir in &grant.dirs {
        let host = lexical(&dir.host).ok_or_else(|| {
            Error::new(
                ErrorKind::Refused,
                format!(
                    "plugin `{id}`: granted folder `{}` must be an absolute path without `..`",
                    dir.host.display()
                ),
            )
        })?;
        if let Some(s) = state
            .iter()
            .find(|s| s.starts_with(&host) || host.starts_with(s))
        {
            return refuse(format!(
                "plugin `{id}`: granted folder {} overlaps corral's own state ({}); a plugin may \
                 never reach corral's plugins, cache or grants: grant a folder outside them",
                host.display(),
                s.display()
            ));
        }
        for (other_id, other) in &grants.plugins {
            for outer in other.dirs.iter().filter(|d| d.mode == Mode::Rw) {
                let Some(outer_host) = lexical(&outer.host) else {
                    continue;
                };
                if host != outer_host && host.starts_with(&outer_host) {
                    return refuse(format!(
                        "plugin `{id}`: granted folder {} lies inside {}, which plugin \
                         `{other_id}` may write (it could replace the folder between calls); \
                         grant the outer folder instead, or folders that do not nest",
                        host.display(),
                        outer_host.display()
                    ));
                }
            }
        }
    }
    Ok(())
}

/// `path` without `.` components; `None` when it is relative or has `..`.
fn lexical(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::RootDir => out.push("/"),
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    out.is_absolute().then_some(out)
}

/// The resolved path when it exists (state folders may sit behind a symlinked home), else the
/// path as written.
fn real_or_lexical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .ok()
        .or_else(|| lexical(path))
        .unwrap_or_else(|| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_sandbox::grants::DirGrant;

    const SHA: &str = "1111111111111111111111111111111111111111111111111111111111111111";

    fn grant(dirs: &[(&str, Mode)]) -> Grant {
        Grant {
            sha256: Some(SHA.into()),
            dirs: dirs
                .iter()
                .map(|(host, mode)| DirGrant {
                    host: host.into(),
                    guest: format!("/g{}", host.len()),
                    mode: *mode,
                })
                .collect(),
            ..Grant::default()
        }
    }

    fn file(entries: Vec<(&str, Grant)>) -> Grants {
        Grants {
            plugins: entries
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        }
    }

    fn home() -> Home {
        Home::at(Path::new("/srv/corral-home"))
    }

    fn refusal(id: &str, grants: &Grants) -> String {
        let err = check_grant(id, SHA, grants, &home()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Refused);
        err.to_string()
    }

    #[test]
    fn no_grant_and_an_empty_grant_need_no_binding() {
        let grants = file(vec![("a", Grant::default())]);
        check_grant("a", SHA, &grants, &home()).unwrap();
        check_grant("b", SHA, &grants, &home()).unwrap();
    }

    /// Regression (sandbox escapes, item 4): a grant follows the component, not the id.
    #[test]
    fn a_grant_is_bound_to_its_component() {
        let grants = file(vec![("a", grant(&[("/srv/data", Mode::Ro)]))]);
        check_grant("a", SHA, &grants, &home()).unwrap();
        let other = "2".repeat(64);
        let err = check_grant("a", &other, &grants, &home())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("changed since it was granted") && err.contains(&other),
            "{err}"
        );
        let mut unbound = grant(&[("/srv/data", Mode::Ro)]);
        unbound.sha256 = None;
        let err = refusal("a", &file(vec![("a", unbound)]));
        assert!(
            err.contains("names no component") && err.contains(SHA),
            "{err}"
        );
    }

    /// Regression (sandbox escapes, item 1): a folder inside another grant's rw area is refused,
    /// within one plugin and across plugins; equal and disjoint folders are fine.
    #[test]
    fn nested_grants_under_a_writable_folder_are_refused() {
        let same = file(vec![(
            "a",
            grant(&[("/srv/n", Mode::Rw), ("/srv/n/inner", Mode::Ro)]),
        )]);
        assert!(refusal("a", &same).contains("lies inside /srv/n"));
        let across = file(vec![
            ("writer", grant(&[("/srv/p", Mode::Rw)])),
            ("files", grant(&[("/srv/p/proj", Mode::Rw)])),
        ]);
        let err = refusal("files", &across);
        assert!(err.contains("plugin `writer` may write"), "{err}");
        check_grant("writer", SHA, &across, &home()).unwrap();
        let fine = file(vec![
            (
                "a",
                grant(&[("/srv/p", Mode::Ro), ("/srv/p/inner", Mode::Ro)]),
            ),
            ("b", grant(&[("/srv/p", Mode::Rw)])),
            ("c", grant(&[("/srv/q", Mode::Rw)])),
        ]);
        check_grant("b", SHA, &fine, &home()).unwrap();
        check_grant("c", SHA, &fine, &home()).unwrap();
        // `a` nests /srv/p/inner under /srv/p, which `b` may write.
        assert!(refusal("a", &fine).contains("plugin `b` may write"));
    }

    /// Regression (sandbox escapes, item 3): no plugin may be granted corral's own state.
    #[test]
    fn folders_holding_or_inside_corral_state_are_refused() {
        for host in ["/srv", "/srv/corral-home", "/srv/corral-home/cache", "/"] {
            let grants = file(vec![("a", grant(&[(host, Mode::Ro)]))]);
            let err = refusal("a", &grants);
            assert!(err.contains("corral's own state"), "{host}: {err}");
        }
        let grants = file(vec![("a", grant(&[("/srv/corral-home-other", Mode::Rw)]))]);
        check_grant("a", SHA, &grants, &home()).unwrap();
    }

    #[test]
    fn relative_and_dotdot_folders_are_refused() {
        for host in ["relative", "/srv/a/../b"] {
            let grants = file(vec![("a", grant(&[(host, Mode::Ro)]))]);
            assert!(refusal("a", &grants).contains("absolute path without `..`"));
        }
    }

    #[test]
    fn grants_files_others_can_write_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("grants.toml");
        assert_eq!(Grants::load(&path).unwrap(), Grants::default());
        std::fs::write(&path, "[plugins.a]\nenv = [\"TZ\"]\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(Grants::load(&path).unwrap().plugins["a"].env, ["TZ"]);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = Grants::load(&path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Grants);
        assert!(err.to_string().contains("writable by other users"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "[plugins.files]\nnetwork = 5\n").unwrap();
        let err = Grants::load(&path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Grants);
        assert!(err.to_string().contains("grants.toml"), "{err}");
        let err = Grants::load(tmp.path()).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}
