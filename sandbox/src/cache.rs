//! The compiled-component cache, and why it is trusted only after checks.
//!
//! A cached artifact is native code: wasmtime maps it and runs it outside the sandbox, so a
//! file planted or swapped in the cache is code execution as the corral user. Before an artifact
//! is deserialized:
//! - the cache folder must be a real folder (not a symlink) owned by this user and writable by
//!   nobody else; corral creates it with mode 0700;
//! - the artifact must be a regular file owned by this user, writable by nobody else;
//! - its bytes must carry the keyed MAC (HMAC-SHA256) that corral recorded beside it when it
//!   wrote them. The MAC covers the artifact's file name too (which names the source
//!   component's hash and the engine), so a genuine artifact of one component copied over
//!   another's fails. The key lives outside the cache folder (`<cache>.key`, mode 0600, 32
//!   random bytes), so a process that can write the cache folder but not the key cannot forge
//!   one.
//!
//! The checked bytes are the ones deserialized (read into memory first, never mapped by name
//! again). Anything that fails a check is reported as [`CacheOutcome::Refused`] and the
//! component is compiled from source again, which then rewrites the artifact.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What happened with the cache when a component was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    /// No cache is configured: compiled from source.
    Disabled,
    /// No artifact yet: compiled from source (and cached when the cache is usable).
    Miss,
    /// A checked artifact was deserialized.
    Hit,
    /// An artifact or the cache itself failed a check: compiled from source instead.
    Refused(String),
}

/// The on-disk cache: a private folder of artifacts and the MAC key beside it.
#[derive(Debug, Clone)]
pub(crate) struct ComponentCache {
    dir: PathBuf,
    key_file: PathBuf,
}

/// Bytes of the MAC key.
const KEY_BYTES: usize = 32;

impl ComponentCache {
    pub(crate) fn new(dir: PathBuf) -> Self {
        let mut key_file = dir.clone().into_os_string();
        key_file.push(".key");
        ComponentCache {
            dir,
            key_file: PathBuf::from(key_file),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn mac_path(artifact: &Path) -> PathBuf {
        let mut p = artifact.as_os_str().to_owned();
        p.push(".mac");
        PathBuf::from(p)
    }

    /// The artifact's bytes when every check passes; `Ok(None)` when there is none yet.
    ///
    /// # Errors
    /// Why the artifact (or the cache) cannot be trusted.
    pub(crate) fn read(&self, artifact: &Path) -> Result<Option<Vec<u8>>, String> {
        if std::fs::symlink_metadata(&self.dir).is_err() {
            return Ok(None);
        }
        check_private(&self.dir, true)?;
        let meta = match std::fs::symlink_metadata(artifact) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot inspect {}: {e}", artifact.display())),
        };
        if !meta.file_type().is_file() {
            return Err(format!("{} is not a regular file", artifact.display()));
        }
        check_private(artifact, false)?;
        let bytes = read_no_follow(artifact)?;
        let recorded = read_no_follow(&Self::mac_path(artifact))
            .map_err(|e| format!("{}: no recorded MAC ({e})", artifact.display()))?;
        let mac = Self::mac(&self.key(false)?, artifact, &bytes);
        let recorded = hex::decode(recorded.trim_ascii())
            .map_err(|_| format!("{}: the recorded MAC is not hex", artifact.display()))?;
        mac.verify_slice(&recorded).map_err(|_| {
            format!(
                "{} does not match the MAC corral recorded when it wrote it (changed or planted)",
                artifact.display()
            )
        })?;
        Ok(Some(bytes))
    }

    /// The checked artifact at `artifact`, made by `deserialize`; else what `compile` makes,
    /// cached as `serialize` spells it (a cache that cannot be written only costs time on the
    /// next start). Says which happened.
    ///
    /// # Errors
    /// What `compile` reports.
    pub(crate) fn load_or_compile<T, E>(
        &self,
        artifact: &Path,
        deserialize: impl FnOnce(&[u8]) -> wasmtime::Result<T>,
        compile: impl FnOnce() -> Result<T, E>,
        serialize: impl FnOnce(&T) -> Option<Vec<u8>>,
    ) -> Result<(T, CacheOutcome), E> {
        let outcome = match self.read(artifact) {
            Ok(Some(bytes)) => match deserialize(&bytes) {
                Ok(value) => return Ok((value, CacheOutcome::Hit)),
                Err(e) => CacheOutcome::Refused(format!("{}: {e:#}", artifact.display())),
            },
            Ok(None) => CacheOutcome::Miss,
            Err(reason) => CacheOutcome::Refused(reason),
        };
        let value = compile()?;
        if let Some(bytes) = serialize(&value) {
            let _ = self.write(artifact, &bytes);
        }
        Ok((value, outcome))
    }

    /// Writes an artifact and its MAC (each through a temp file and a rename).
    ///
    /// # Errors
    /// When the cache folder is unusable or a write fails.
    pub(crate) fn write(&self, artifact: &Path, bytes: &[u8]) -> Result<(), String> {
        self.ensure_dir()?;
        let tag = hex::encode(
            Self::mac(&self.key(true)?, artifact, bytes)
                .finalize()
                .into_bytes(),
        );
        write_private(artifact, bytes)?;
        write_private(&Self::mac_path(artifact), tag.as_bytes())
    }

    /// The MAC of an artifact: its file name, a NUL, then its bytes.
    fn mac(key: &[u8], artifact: &Path, bytes: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        let name = artifact.file_name().unwrap_or_default();
        mac.update(name.as_encoded_bytes());
        mac.update(&[0]);
        mac.update(bytes);
        mac
    }

    /// Creates the cache folder (0700) if missing, then checks it is private.
    fn ensure_dir(&self) -> Result<(), String> {
        if let Some(parent) = self.dir.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", self.dir.display())),
        }
        check_private(&self.dir, true)
    }

    /// The MAC key, created (0600, random) when `create` and it does not exist yet.
    fn key(&self, create: bool) -> Result<Vec<u8>, String> {
        match std::fs::symlink_metadata(&self.key_file) {
            Ok(_) => {
                check_private(&self.key_file, false)?;
                let key = read_no_follow(&self.key_file)?;
                if key.len() != KEY_BYTES {
                    return Err(format!(
                        "{} is not a cache key (wrong length)",
                        self.key_file.display()
                    ));
                }
                Ok(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let mut key = vec![0u8; KEY_BYTES];
                getrandom::fill(&mut key).map_err(|e| format!("no randomness for a key: {e}"))?;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc_o_nofollow())
                    .open(&self.key_file)
                    .map_err(|e| format!("cannot create {}: {e}", self.key_file.display()))?;
                file.write_all(&key)
                    .map_err(|e| format!("cannot write {}: {e}", self.key_file.display()))?;
                Ok(key)
            }
            Err(e) => Err(format!("no cache key at {}: {e}", self.key_file.display())),
        }
    }
}

fn libc_o_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Checks that `path` (not followed) is owned by this user and writable by nobody else, and is a
/// folder when `dir`.
///
/// # Errors
/// What is wrong, naming the path.
pub(crate) fn check_private(path: &Path, dir: bool) -> Result<(), String> {
    let expect = crate::private::Expect {
        dir,
        ..Default::default()
    };
    crate::private::check_private(path, expect).map_err(|e| e.to_string())
}

fn read_no_follow(path: &Path) -> Result<Vec<u8>, String> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_o_nofollow())
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(bytes)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc_o_nofollow())
            .open(&tmp)?;
        file.write_all(bytes)?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}
