//! Granted folders, opened once and pinned to the directory they named when they were granted.
//!
//! A grant names a host folder by path, but a path is only a name: a plugin with write access to
//! a parent folder can rename the granted folder away and put a symlink in its place, and a call
//! that opens the grant by name again then reaches whatever the symlink points at. So each
//! granted folder is opened exactly once, walking the path one component at a time with
//! `O_NOFOLLOW` (a grant path that is or passes through a symlink is refused), and the open
//! handle is kept. Every call's preopen is made from that handle (through `/proc/self/fd/N`,
//! which resolves to the very directory the handle holds, whatever happened to its name since),
//! so later renames and symlinks cannot redirect a grant.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode as FileMode, OFlags, CWD};
use rustix::io::Errno;

use crate::grants::{Mode, Preopen};

/// Why a granted folder could not be pinned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PinError {
    /// The path is relative or contains `..`.
    #[error("granted folder `{0}` must be an absolute path without `..`")]
    NotAbsolute(PathBuf),
    /// The path is, or passes through, a symbolic link.
    #[error("granted folder `{path}`: `{link}` is a symbolic link; grant the real folder it points to instead")]
    Symlink {
        /// The granted path.
        path: PathBuf,
        /// The component that is a symlink.
        link: PathBuf,
    },
    /// Something on the path is not a folder.
    #[error("granted folder `{path}`: `{at}` is not a folder")]
    NotADirectory {
        /// The granted path.
        path: PathBuf,
        /// The component that is not a folder.
        at: PathBuf,
    },
    /// The folder cannot be opened.
    #[error("granted folder `{path}` cannot be opened: {reason}")]
    Open {
        /// The granted path.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
}

/// A granted folder held open: where the guest sees it, with what access.
#[derive(Debug)]
pub struct PinnedDir {
    host: PathBuf,
    guest: String,
    mode: Mode,
    fd: OwnedFd,
}

impl PinnedDir {
    /// Opens `preopen.host` without following any symlink on the way and keeps the handle.
    ///
    /// # Errors
    /// A [`PinError`] naming the path and what is wrong with it.
    pub fn open(preopen: &Preopen) -> Result<PinnedDir, PinError> {
        Ok(PinnedDir {
            fd: open_no_symlinks(&preopen.host)?,
            host: preopen.host.clone(),
            guest: preopen.guest.clone(),
            mode: preopen.mode,
        })
    }

    /// The host path the folder had when it was granted (for messages only: calls use the handle).
    pub fn host(&self) -> &Path {
        &self.host
    }

    /// Where the guest sees it.
    pub fn guest(&self) -> &str {
        &self.guest
    }

    /// The access calls get.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// A path that opens exactly the pinned directory, whatever its name is now.
    pub(crate) fn handle_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }
}

/// Opens the directory `path` walking it one component at a time, refusing symlinks.
fn open_no_symlinks(path: &Path) -> Result<OwnedFd, PinError> {
    let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY;
    let mut components = path.components();
    let lexical = path
        .components()
        .skip(1)
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if components.next() != Some(Component::RootDir) || !lexical {
        return Err(PinError::NotAbsolute(path.to_owned()));
    }
    let open_err = |e: Errno| PinError::Open {
        path: path.to_owned(),
        reason: std::io::Error::from(e).to_string(),
    };
    let mut dir = rustix::fs::openat(CWD, "/", flags, FileMode::empty()).map_err(open_err)?;
    let mut walked = PathBuf::from("/");
    for component in components {
        let name = match component {
            Component::Normal(name) => name,
            Component::CurDir => continue,
            _ => return Err(PinError::NotAbsolute(path.to_owned())),
        };
        walked.push(name);
        dir = match rustix::fs::openat(&dir, name, flags, FileMode::empty()) {
            Ok(fd) => fd,
            Err(Errno::LOOP) => {
                return Err(PinError::Symlink {
                    path: path.to_owned(),
                    link: walked,
                })
            }
            // O_NOFOLLOW|O_DIRECTORY on a symlink gives ENOTDIR on some kernels: tell them apart.
            Err(Errno::NOTDIR) => {
                let is_link =
                    std::fs::symlink_metadata(&walked).is_ok_and(|m| m.file_type().is_symlink());
                return Err(if is_link {
                    PinError::Symlink {
                        path: path.to_owned(),
                        link: walked,
                    }
                } else {
                    PinError::NotADirectory {
                        path: path.to_owned(),
                        at: walked,
                    }
                });
            }
            Err(e) => return Err(open_err(e)),
        };
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preopen(host: &Path) -> Preopen {
        Preopen {
            host: host.to_owned(),
            guest: "/w".into(),
            mode: Mode::Rw,
        }
    }

    #[test]
    fn a_real_folder_is_pinned_and_survives_a_rename() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("granted");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("f.txt"), "pinned").unwrap();
        let pinned = PinnedDir::open(&preopen(&dir)).unwrap();
        // Swap the name for a symlink to another folder: the handle still names the original.
        std::fs::rename(&dir, tmp.path().join("moved")).unwrap();
        std::fs::create_dir(tmp.path().join("other")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("other"), &dir).unwrap();
        let text = std::fs::read_to_string(pinned.handle_path().join("f.txt")).unwrap();
        assert_eq!(text, "pinned");
    }

    #[test]
    fn symlinks_anywhere_on_the_path_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir_all(real.join("inner")).unwrap();
        std::os::unix::fs::symlink(&real, tmp.path().join("link")).unwrap();
        for (path, link) in [
            (tmp.path().join("link"), tmp.path().join("link")),
            (tmp.path().join("link/inner"), tmp.path().join("link")),
        ] {
            let err = PinnedDir::open(&preopen(&path)).unwrap_err();
            assert_eq!(
                err,
                PinError::Symlink {
                    path: path.clone(),
                    link
                },
                "{path:?}"
            );
        }
    }

    #[test]
    fn relative_dotdot_and_non_folders_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("file"), "").unwrap();
        assert!(matches!(
            PinnedDir::open(&preopen(Path::new("relative/dir"))),
            Err(PinError::NotAbsolute(_))
        ));
        assert!(matches!(
            PinnedDir::open(&preopen(&tmp.path().join("a/../b"))),
            Err(PinError::NotAbsolute(_))
        ));
        assert_eq!(
            PinnedDir::open(&preopen(&tmp.path().join("file"))).unwrap_err(),
            PinError::NotADirectory {
                path: tmp.path().join("file"),
                at: tmp.path().join("file")
            }
        );
        assert!(matches!(
            PinnedDir::open(&preopen(&tmp.path().join("missing"))),
            Err(PinError::Open { .. })
        ));
    }

    #[test]
    fn a_fifo_is_not_a_folder_and_opening_it_does_not_block() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("fifo");
        rustix::fs::mknodat(
            CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            FileMode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(matches!(
            PinnedDir::open(&preopen(&fifo)),
            Err(PinError::NotADirectory { .. })
        ));
    }
}
