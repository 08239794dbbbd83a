//! Where corral keeps its own state: plugins, the compiled-component cache, the grants file.
//!
//! None of it ever falls back to a shared folder such as `/tmp` (another user could plant a
//! compiled artifact there, which is native code): without a home folder corral says so and
//! stops. Folders corral creates are private (0700), and installed plugins are loaded only from
//! folders owned by this user that nobody else can write.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind};

/// Where corral keeps plugins, grants and its compiled-component cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    /// Installed plugins, one folder each.
    pub plugins: PathBuf,
    /// Folders of builtin plugins (read-only), searched before installed ones.
    pub builtin: Vec<PathBuf>,
    /// Compiled-component cache (its MAC key is the sibling file `<cache>.key`).
    pub cache: PathBuf,
    /// The user's grants file.
    pub grants: PathBuf,
}

impl Home {
    /// Everything under one folder: `plugins/`, `cache/`, `grants.toml`.
    pub fn at(root: &Path) -> Home {
        Home {
            plugins: root.join("plugins"),
            builtin: Vec::new(),
            cache: root.join("cache"),
            grants: root.join("grants.toml"),
        }
    }

    /// `$CORRAL_HOME` if set, else the platform's data, cache and config folders.
    ///
    /// # Errors
    /// [`ErrorKind::Home`] when neither is known (no `HOME`): corral never falls back to a
    /// folder other users can write.
    pub fn from_env() -> Result<Home, Error> {
        if let Some(root) = std::env::var_os("CORRAL_HOME").filter(|r| !r.is_empty()) {
            return Ok(Home::at(Path::new(&root)));
        }
        let missing = || {
            Error::new(
                ErrorKind::Home,
                "cannot find a folder for corral's plugins and cache (HOME is not set); \
                 set HOME, or CORRAL_HOME to a private folder",
            )
        };
        let data = dirs::data_dir().ok_or_else(missing)?.join("corral");
        let cache = dirs::cache_dir().ok_or_else(missing)?.join("corral");
        let config = dirs::config_dir().ok_or_else(missing)?.join("corral");
        Ok(Home {
            plugins: data.join("plugins"),
            builtin: Vec::new(),
            cache: cache.join("components"),
            grants: config.join("grants.toml"),
        })
    }

    /// The paths of corral's own state, which no plugin may ever be granted (nor a folder that
    /// holds one of them): installed plugins, the cache and its key, the grants file.
    pub fn state_paths(&self) -> Vec<PathBuf> {
        let mut key = self.cache.clone().into_os_string();
        key.push(".key");
        vec![
            self.plugins.clone(),
            self.cache.clone(),
            PathBuf::from(key),
            self.grants.clone(),
        ]
    }

    /// Creates the installed-plugins folder (0700, parents too) if missing.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when it cannot be created, [`ErrorKind::Refused`] when it exists but
    /// others can write it.
    pub fn ensure_plugins_dir(&self) -> Result<(), Error> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.plugins)
            .map_err(|e| Error::io(format_args!("cannot create {}", self.plugins.display()), &e))?;
        check_not_writable_by_others(&self.plugins, true)
    }
}

/// Checks that `path` (not followed) is no symlink, and writable by nobody but its owner, who
/// must be this user (`owned_by_me`) or else this user or root (builtins installed by root).
///
/// # Errors
/// [`ErrorKind::Refused`] naming the path and what is wrong; [`ErrorKind::Io`] when it cannot
/// be inspected.
pub(crate) fn check_not_writable_by_others(path: &Path, owned_by_me: bool) -> Result<(), Error> {
    use corral_sandbox::private::{check_private, Expect, PrivateError};
    let expect = Expect {
        root_may_own: !owned_by_me,
        ..Expect::default()
    };
    let refuse = |why: String| Err(Error::new(ErrorKind::Refused, why));
    match check_private(path, expect) {
        Ok(()) => Ok(()),
        Err(e @ PrivateError::Io { .. }) => Err(Error::new(ErrorKind::Io, e.to_string())),
        Err(e @ PrivateError::Symlink { .. }) => {
            refuse(format!("{e}; corral loads plugins only from real folders"))
        }
        Err(e @ PrivateError::Owner { .. }) => {
            refuse(format!("{e}; corral does not load code others control"))
        }
        Err(e) => refuse(format!("{e}; run `chmod go-w {}`", path.display())),
    }
}
