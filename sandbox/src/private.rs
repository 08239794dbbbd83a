//! One check for files and folders corral trusts: owned by this user (or root, where a package
//! installed them) and writable by nobody else. The compiled-component cache, plugin folders,
//! the grants file and the config file all pass through [`check_private`].

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What a path must be, besides private.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Expect {
    /// A folder (else anything but a symlink, or a regular file when `file`).
    pub dir: bool,
    /// A regular file.
    pub file: bool,
    /// Follow a symlink and check its target (else a symlink is refused).
    pub follow: bool,
    /// Root may own it too (builtins installed by a package).
    pub root_may_own: bool,
}

/// Why a path is not private; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PrivateError {
    /// It cannot be inspected.
    #[error("cannot inspect {path}: {why}")]
    Io { path: String, why: String },
    /// A symlink where none may be.
    #[error("{path} is a symbolic link")]
    Symlink { path: String },
    /// Not a folder, or not a regular file.
    #[error("{path} is not a {wanted}")]
    Kind { path: String, wanted: &'static str },
    /// Someone else owns it.
    #[error("{path} is owned by uid {owner}, not by you (uid {me})")]
    Owner { path: String, owner: u32, me: u32 },
    /// Others may write it.
    #[error("{path} is writable by other users (mode {mode:o})")]
    Writable { path: String, mode: u32 },
}

/// Checks `path` as `expect` says.
///
/// # Errors
/// The first thing wrong, naming the path.
pub fn check_private(path: &Path, expect: Expect) -> Result<(), PrivateError> {
    let shown = || path.display().to_string();
    let meta = if expect.follow {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    }
    .map_err(|e| PrivateError::Io {
        path: shown(),
        why: e.to_string(),
    })?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        return Err(PrivateError::Symlink { path: shown() });
    }
    if expect.dir && !ft.is_dir() {
        return Err(PrivateError::Kind {
            path: shown(),
            wanted: "folder",
        });
    }
    if expect.file && !ft.is_file() {
        return Err(PrivateError::Kind {
            path: shown(),
            wanted: "regular file",
        });
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me && !(expect.root_may_own && meta.uid() == 0) {
        return Err(PrivateError::Owner {
            path: shown(),
            owner: meta.uid(),
            me,
        });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(PrivateError::Writable {
            path: shown(),
            mode: meta.mode() & 0o7777,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_paths_pass_and_shared_or_linked_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let file_only = Expect {
            file: true,
            ..Expect::default()
        };
        check_private(&file, file_only).unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(matches!(
            check_private(&link, file_only),
            Err(PrivateError::Symlink { .. })
        ));
        let follow = Expect {
            follow: true,
            ..file_only
        };
        check_private(&link, follow).unwrap();
        assert!(matches!(
            check_private(
                &file,
                Expect {
                    dir: true,
                    ..Expect::default()
                }
            ),
            Err(PrivateError::Kind { .. })
        ));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o620)).unwrap();
        let e = check_private(&file, file_only).unwrap_err();
        assert!(e.to_string().contains("mode 620"), "{e}");
    }
}
