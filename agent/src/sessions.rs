//! Saved conversations: a versioned JSON file per session, written atomically.
//!
//! A session holds the conversation (every message, evicted ones included), its memory (summary,
//! language, what the model still sees, the settings), and the exact token ids the model was fed
//! and sampled ([`Transcript`]), so a resumed conversation continues token for token. Optionally
//! the KV state sits beside it (`NAME.kv`), so resuming evaluates nothing again.
//!
//! Files are written to a temporary file in the same folder, synced, renamed over the old one,
//! and the folder synced: a crash at any point leaves the old version or the new one, never a
//! mix. A file that is corrupt, not a session, or from a newer corral is an error naming it, and
//! is left as it is.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use corral_prompts::Conversation;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agent::Transcript;
use crate::memory::Memory;

/// The session file format this corral writes (and the newest it reads).
pub const SESSION_VERSION: u64 = 1;

/// The `format` field of every session file.
pub const SESSION_FORMAT: &str = "corral-session";

/// The KV state saved beside a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvState {
    /// Tokens the state holds.
    pub tokens: usize,
    /// Its size in bytes.
    pub bytes: u64,
}

/// One saved conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Always [`SESSION_FORMAT`].
    pub format: String,
    /// The file format version ([`SESSION_VERSION`]).
    pub version: u64,
    /// The session's name.
    pub name: String,
    /// The model it was last run with (token ids are only valid for it).
    pub model: String,
    /// Seconds since the Unix epoch of the last save.
    pub saved_at: u64,
    /// Every message, evicted ones included.
    pub conversation: Conversation,
    /// Summary, language, what the model sees, and the memory settings.
    pub memory: Memory,
    /// The exact ids of the last prompt and reply.
    pub transcript: Transcript,
    /// The KV state beside it (`NAME.kv`), when saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv: Option<KvState>,
    /// The code interpreter's state, as the cells that built it (re-run on resume).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub code_cells: Vec<String>,
}

impl Session {
    /// A new session.
    pub fn new(name: &str, model: &str, conversation: Conversation, memory: Memory) -> Session {
        Session {
            format: SESSION_FORMAT.to_owned(),
            version: SESSION_VERSION,
            name: name.to_owned(),
            model: model.to_owned(),
            saved_at: 0,
            conversation,
            memory,
            transcript: Transcript::default(),
            kv: None,
            code_cells: Vec::new(),
        }
    }
}

/// What went wrong with a session file.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The name cannot be a file name.
    #[error(
        "session name {0:?} is not allowed: use 1 to 64 letters, digits, '.', '_' or '-', not \
         starting with '.'"
    )]
    BadName(String),
    /// No folder for sessions is known.
    #[error("cannot find a folder for sessions (HOME is not set): set HOME or CORRAL_HOME")]
    NoHome,
    /// Reading failed.
    #[error("cannot read session file {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Not JSON, not a session, or fields missing or wrong.
    #[error(
        "session file {path} is corrupt ({reason}); it was left as it is: move it away or \
         `corral session rm {name}`"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The session's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// Written by a newer corral.
    #[error(
        "session file {path} has format version {version}, newer than this corral reads \
         ({SESSION_VERSION}); it was left as it is: upgrade corral, or use another session name"
    )]
    Newer {
        /// The file.
        path: PathBuf,
        /// Its version.
        version: u64,
    },
    /// Writing failed (the previous version is intact).
    #[error("cannot save session file {path}: {reason} (the previous version is intact)")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The folder of saved sessions.
#[derive(Debug, Clone)]
pub struct SessionStore {
    dir: PathBuf,
}

/// One line of `corral session list`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionInfo {
    /// Its name.
    pub name: String,
    /// Seconds since the epoch of its last save.
    pub saved_at: u64,
    /// Messages in it.
    pub messages: usize,
    /// The conversation's language.
    pub language: Option<String>,
    /// The model it was run with.
    pub model: String,
}

impl SessionStore {
    /// Sessions in `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> SessionStore {
        SessionStore { dir: dir.into() }
    }

    /// `$CORRAL_HOME/sessions` if set, else `sessions` in the platform's data folder for corral.
    ///
    /// # Errors
    /// Neither is known.
    pub fn from_env() -> Result<SessionStore, SessionError> {
        if let Some(root) = std::env::var_os("CORRAL_HOME").filter(|r| !r.is_empty()) {
            return Ok(SessionStore::at(Path::new(&root).join("sessions")));
        }
        let data = dirs::data_dir().ok_or(SessionError::NoHome)?;
        Ok(SessionStore::at(data.join("corral").join("sessions")))
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of session `name`.
    ///
    /// # Errors
    /// A name that cannot be a plain file name.
    pub fn path(&self, name: &str) -> Result<PathBuf, SessionError> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !ok {
            return Err(SessionError::BadName(name.to_owned()));
        }
        Ok(self.dir.join(format!("{name}.json")))
    }

    /// The KV state file of session `name`.
    ///
    /// # Errors
    /// As [`SessionStore::path`].
    pub fn kv_path(&self, name: &str) -> Result<PathBuf, SessionError> {
        Ok(self.path(name)?.with_extension("kv"))
    }

    /// Session `name`, or `None` when there is none.
    ///
    /// # Errors
    /// The file cannot be read, is corrupt, or is newer than this corral reads.
    pub fn load(&self, name: &str) -> Result<Option<Session>, SessionError> {
        let path = self.path(name)?;
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(SessionError::Read {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        let corrupt = |reason: String| SessionError::Corrupt {
            path: path.clone(),
            name: name.to_owned(),
            reason,
        };
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("not JSON: {e}")))?;
        if value.get("format").and_then(Value::as_str) != Some(SESSION_FORMAT) {
            return Err(corrupt(format!(
                "no \"format\": \"{SESSION_FORMAT}\" field"
            )));
        }
        let version = value
            .get("version")
            .and_then(Value::as_u64)
            .ok_or_else(|| corrupt("no numeric \"version\" field".into()))?;
        if version > SESSION_VERSION {
            return Err(SessionError::Newer { path, version });
        }
        let session: Session = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
        Ok(Some(session))
    }

    /// Writes `session` atomically (private to the user), stamping the time.
    ///
    /// # Errors
    /// The folder or file cannot be written; the previous version is then intact.
    pub fn save(&self, session: &mut Session) -> Result<(), SessionError> {
        let path = self.path(&session.name)?;
        session.saved_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let bytes = serde_json::to_vec_pretty(session).map_err(|e| SessionError::Write {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomically(&path, |file| file.write_all(&bytes)).map_err(|e| SessionError::Write {
            path,
            reason: e.to_string(),
        })
    }

    /// A temporary path beside session `name`'s KV file, for the engine to write to before
    /// [`SessionStore::commit_kv`] renames it into place.
    ///
    /// # Errors
    /// As [`SessionStore::path`], or the folder cannot be made.
    pub fn kv_temp(&self, name: &str) -> Result<PathBuf, SessionError> {
        let path = self.kv_path(name)?;
        make_private_dir(&self.dir).map_err(|e| SessionError::Write {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(temp_beside(&path))
    }

    /// Moves a KV state written to [`SessionStore::kv_temp`] into place, atomically.
    ///
    /// # Errors
    /// The rename or sync failed.
    pub fn commit_kv(&self, name: &str, temp: &Path) -> Result<(), SessionError> {
        let path = self.kv_path(name)?;
        let done = File::open(temp)
            .and_then(|f| f.sync_all())
            .and_then(|()| fs::rename(temp, &path))
            .and_then(|()| sync_dir(&self.dir));
        done.map_err(|e| {
            let _ = fs::remove_file(temp);
            SessionError::Write {
                path,
                reason: e.to_string(),
            }
        })
    }

    /// Every saved session, by name.
    ///
    /// # Errors
    /// The folder cannot be read.
    pub fn list(&self) -> Result<Vec<Result<SessionInfo, SessionError>>, SessionError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(SessionError::Read {
                    path: self.dir.clone(),
                    reason: e.to_string(),
                })
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter_map(|n| n.strip_suffix(".json").map(str::to_owned))
            .filter(|n| self.path(n).is_ok())
            .collect();
        names.sort();
        Ok(names
            .into_iter()
            .filter_map(|name| match self.load(&name) {
                Ok(Some(s)) => Some(Ok(SessionInfo {
                    name: s.name,
                    saved_at: s.saved_at,
                    messages: s.conversation.messages.len(),
                    language: s.memory.language.current.map(|l| l.code().to_owned()),
                    model: s.model,
                })),
                Ok(None) => None,
                Err(e) => Some(Err(e)),
            })
            .collect())
    }

    /// Removes session `name` and its KV state; `false` when there was none.
    ///
    /// # Errors
    /// A bad name, or the file cannot be removed.
    pub fn remove(&self, name: &str) -> Result<bool, SessionError> {
        let path = self.path(name)?;
        let _ = fs::remove_file(self.kv_path(name)?);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(SessionError::Write {
                path,
                reason: e.to_string(),
            }),
        }
    }
}

fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    path.with_file_name(format!(".{name}.{}.{nanos}.tmp", std::process::id()))
}

fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Writes `path` through a synced temporary file beside it, renamed over it, then syncs the
/// folder. The file is readable by its owner only.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    make_private_dir(dir)?;
    let temp = temp_beside(path);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options.open(&temp)?;
        write(&mut file)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemorySettings;
    use corral_prompts::Message;

    fn session(name: &str, text: &str) -> Session {
        let conversation = Conversation::new(vec![Message::user(text)]);
        Session::new(
            name,
            "m",
            conversation,
            Memory::new(MemorySettings::for_window(1024, 64)),
        )
    }

    #[test]
    fn a_session_round_trips_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::at(dir.path().join("sessions"));
        assert!(store.load("a").unwrap().is_none());
        let mut s = session("a", "नमस्ते");
        s.code_cells = vec!["import math".into(), "r = math.tau".into()];
        store.save(&mut s).unwrap();
        assert_eq!(store.load("a").unwrap(), Some(s.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(store.path("a").unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].as_ref().unwrap().messages, 1);
        assert!(store.remove("a").unwrap());
        assert!(!store.remove("a").unwrap());
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(store.dir()).unwrap().count(), 0);
    }

    #[test]
    fn bad_names_corrupt_and_newer_files_are_errors_that_leave_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::at(dir.path());
        for bad in ["", "../x", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(
                matches!(store.path(bad), Err(SessionError::BadName(_))),
                "{bad}"
            );
        }
        let path = store.path("c").unwrap();
        for (text, expect) in [
            ("{not json", "not JSON"),
            ("{\"format\": \"other\"}", "no \"format\""),
            (
                "{\"format\": \"corral-session\", \"version\": 1}",
                "missing field",
            ),
        ] {
            fs::write(&path, text).unwrap();
            let err = store.load("c").unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, SessionError::Corrupt { .. }), "{msg}");
            assert!(
                msg.contains(expect) && msg.contains(&path.display().to_string()),
                "{msg}"
            );
            assert_eq!(fs::read_to_string(&path).unwrap(), text);
        }
        fs::write(&path, "{\"format\": \"corral-session\", \"version\": 9}").unwrap();
        let err = store.load("c").unwrap_err();
        assert!(
            matches!(err, SessionError::Newer { version: 9, .. }),
            "{err}"
        );
    }
}
