//! Plugin folders on disk: where they live, and install / list / remove / load.
//!
//! Layout under the corral home (`$CORRAL_HOME`, else the user's data dir + `corral`):
//! `plugins/<id>/plugin.toml` + the component. Builtin plugins live in read-only folders of the
//! same shape (next to the `corral` binary). Compiled components are cached under the cache dir;
//! the user's grants are read from `grants.toml` (see [`Grants`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use corral_sandbox::{grants, CallContext, Grant, Limits, Plugin, Sandbox};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::manifest::{Manifest, MANIFEST_FILE};
use crate::registry::{RegisterError, Registry};
use crate::tool::{ToolSpec, WasmTool};

/// Where corral keeps plugins, grants and its compiled-component cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    /// Installed plugins, one folder each.
    pub plugins: PathBuf,
    /// Folders of builtin plugins (read-only), searched before installed ones.
    pub builtin: Vec<PathBuf>,
    /// Compiled-component cache.
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
    pub fn from_env() -> Home {
        if let Some(root) = std::env::var_os("CORRAL_HOME") {
            return Home::at(Path::new(&root));
        }
        let data = dirs::data_dir()
            .unwrap_or_else(std::env::temp_dir)
            .join("corral");
        Home {
            plugins: data.join("plugins"),
            builtin: Vec::new(),
            cache: dirs::cache_dir()
                .unwrap_or_else(std::env::temp_dir)
                .join("corral")
                .join("components"),
            grants: dirs::config_dir()
                .unwrap_or(data)
                .join("corral")
                .join("grants.toml"),
        }
    }
}

/// The user's grants file: `[plugins.<id>]` tables of [`Grant`], empty when the file is absent.
///
/// ```toml
/// [plugins.files]
/// dirs = [{ host = "/home/me/project", guest = "/workspace", mode = "rw" }]
/// env = ["TZ"]
/// network = []
/// limits = { deadline_ms = 5000, memory_mib = 128 }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
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
    /// A message naming the file when it exists but cannot be read or parsed.
    pub fn load(path: &Path) -> Result<Grants, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Grants::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }
}

/// A plugin found on disk and loaded into the sandbox.
#[derive(Debug, Clone)]
pub struct LoadedPlugin {
    /// Its manifest.
    pub manifest: Manifest,
    /// Its folder.
    pub dir: PathBuf,
    /// Whether it is a builtin (cannot be removed).
    pub builtin: bool,
    /// Its tools.
    pub tools: Vec<ToolSpec>,
    /// The loaded component.
    pub plugin: Plugin,
}

/// Reads a plugin folder, verifies the component's hash, loads it and lists its tools.
///
/// # Errors
/// A message for the user naming the folder and the reason: unreadable or invalid manifest,
/// hash mismatch, a component that does not compile or imports what corral does not grant, a
/// tool spec that is not valid JSON.
pub fn load_dir(sandbox: &Sandbox, dir: &Path, builtin: bool) -> Result<LoadedPlugin, String> {
    let manifest = Manifest::load(dir)?;
    let path = dir.join(&manifest.component);
    let bytes = std::fs::read(&path)
        .map_err(|e| format!("cannot read component {}: {e}", path.display()))?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != manifest.sha256 {
        return Err(format!(
            "hash mismatch for {}: plugin.toml says sha256 {}, the file has {actual}; \
             the component was changed or the manifest is stale",
            path.display(),
            manifest.sha256
        ));
    }
    let plugin = sandbox
        .load(&bytes)
        .map_err(|e| format!("plugin `{}`: {e}", manifest.id))?;
    let tools = plugin
        .list_tools()
        .map_err(|e| format!("plugin `{}`: {e}", manifest.id))?
        .into_iter()
        .map(|s| {
            let input_schema = serde_json::from_str(&s.input_schema).map_err(|e| {
                format!(
                    "plugin `{}`: tool `{}` has an input schema that is not JSON: {e}",
                    manifest.id, s.name
                )
            })?;
            Ok(ToolSpec {
                name: s.name,
                description: s.description,
                input_schema,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(LoadedPlugin {
        manifest,
        dir: dir.to_owned(),
        builtin,
        tools,
        plugin,
    })
}

/// Plugin folders: builtins first, then installed, each sorted by name.
fn plugin_dirs(home: &Home) -> Vec<(PathBuf, bool)> {
    let list = |root: &Path, builtin: bool| {
        let mut dirs: Vec<(PathBuf, bool)> = std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join(MANIFEST_FILE).is_file())
            .map(|p| (p, builtin))
            .collect();
        dirs.sort();
        dirs
    };
    let mut all: Vec<(PathBuf, bool)> = home.builtin.iter().flat_map(|b| list(b, true)).collect();
    all.extend(list(&home.plugins, false));
    all
}

/// Every plugin that loads, plus one message per plugin that does not (skipped, not fatal).
pub fn load_all(home: &Home, sandbox: &Sandbox) -> (Vec<LoadedPlugin>, Vec<String>) {
    let (mut ok, mut problems) = (Vec::new(), Vec::new());
    for (dir, builtin) in plugin_dirs(home) {
        match load_dir(sandbox, &dir, builtin) {
            Ok(p)
                if ok
                    .iter()
                    .any(|o: &LoadedPlugin| o.manifest.id == p.manifest.id) =>
            {
                problems.push(format!(
                    "{}: plugin id `{}` is already loaded; skipped",
                    dir.display(),
                    p.manifest.id
                ));
            }
            Ok(p) => ok.push(p),
            Err(e) => problems.push(format!("skipped {}: {e}", dir.display())),
        }
    }
    (ok, problems)
}

/// Builds the registry of every loadable plugin's tools with the user's grants and limits.
/// Returns the registry and the problems met on the way (skipped plugins or tools).
///
/// # Errors
/// Only when the grants file exists but is invalid.
pub fn registry(home: &Home, sandbox: &Sandbox) -> Result<(Registry, Vec<String>), String> {
    let grants = Grants::load(&home.grants)?;
    let (plugins, mut problems) = load_all(home, sandbox);
    let mut reg = Registry::new();
    for p in plugins {
        let grant = grants
            .plugins
            .get(&p.manifest.id)
            .cloned()
            .unwrap_or_default();
        let context = Arc::new(call_context(&p.manifest, &grant));
        for spec in p.tools {
            let tool = Arc::new(WasmTool::new(spec, p.plugin.clone(), context.clone()));
            if let Err(e) = reg.register(tool, &p.manifest.id) {
                problems.push(format!("plugin `{}`: {e}; tool skipped", p.manifest.id));
            }
        }
    }
    Ok((reg, problems))
}

/// The limits and rights one plugin's calls run with.
pub fn call_context(manifest: &Manifest, grant: &Grant) -> CallContext {
    CallContext {
        limits: Limits::requested(&manifest.limits).clamp(&grant.limits),
        rights: grants::effective(&manifest.capabilities, grant, |name| {
            std::env::var(name).ok()
        }),
    }
}

/// Installs the plugin folder `src` (or the folder of `src` when it names a `plugin.toml`).
///
/// # Errors
/// A message for the user: everything [`load_dir`] refuses, a tool schema that is not valid
/// JSON Schema, an id already installed, a tool name that collides with an installed tool.
pub fn install(home: &Home, sandbox: &Sandbox, src: &Path) -> Result<LoadedPlugin, String> {
    let src = if src.is_file() {
        src.parent().unwrap_or(Path::new("."))
    } else {
        src
    };
    if !src.join(MANIFEST_FILE).is_file() {
        return Err(format!(
            "{} has no {MANIFEST_FILE}: give the folder of a plugin",
            src.display()
        ));
    }
    let new = load_dir(sandbox, src, false)?;
    let id = &new.manifest.id;
    let (existing, _) = load_all(home, sandbox);
    if let Some(old) = existing.iter().find(|p| &p.manifest.id == id) {
        let how = if old.builtin {
            "it is a builtin".to_owned()
        } else {
            format!("remove it first with `corral tools remove {id}`")
        };
        return Err(format!(
            "a plugin with id `{id}` is already installed ({how})"
        ));
    }
    let owner: BTreeMap<&str, &str> = existing
        .iter()
        .flat_map(|p| {
            p.tools
                .iter()
                .map(move |t| (t.name.as_str(), p.manifest.id.as_str()))
        })
        .collect();
    let mut seen = BTreeMap::new();
    for spec in &new.tools {
        Registry::check(spec, |name| {
            owner.get(name).copied().or_else(|| seen.get(name).copied())
        })
        .map_err(|e| refusal(id, &e))?;
        seen.insert(spec.name.as_str(), id.as_str());
    }
    let dest = home.plugins.join(id);
    copy_plugin(src, &new.manifest, &dest)
        .map_err(|e| format!("cannot install into {}: {e}", dest.display()))?;
    Ok(LoadedPlugin { dir: dest, ..new })
}

fn refusal(id: &str, e: &RegisterError) -> String {
    format!("plugin `{id}` refused: {e}")
}

fn copy_plugin(src: &Path, manifest: &Manifest, dest: &Path) -> std::io::Result<()> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(
        ".installing-{}-{}",
        manifest.id,
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    std::fs::copy(src.join(MANIFEST_FILE), tmp.join(MANIFEST_FILE))?;
    std::fs::copy(src.join(&manifest.component), tmp.join(&manifest.component))?;
    std::fs::rename(&tmp, dest)
}

/// Removes installed plugin `id`.
///
/// # Errors
/// When no installed plugin has that id (builtins cannot be removed), or the folder cannot be
/// deleted.
pub fn remove(home: &Home, id: &str) -> Result<(), String> {
    if !crate::manifest::is_id(id) {
        return Err(format!("`{id}` is not a plugin id"));
    }
    let dir = home.plugins.join(id);
    if !dir.join(MANIFEST_FILE).is_file() {
        let builtin = home
            .builtin
            .iter()
            .any(|b| b.join(id).join(MANIFEST_FILE).is_file());
        return Err(if builtin {
            format!("`{id}` is a builtin plugin and cannot be removed")
        } else {
            format!("no installed plugin has id `{id}`; see `corral tools list`")
        });
    }
    std::fs::remove_dir_all(&dir).map_err(|e| format!("cannot remove {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_sandbox::grants::Mode;

    #[test]
    fn a_missing_grants_file_grants_nothing() {
        let tmp = std::env::temp_dir().join("corral-no-such-grants.toml");
        assert_eq!(Grants::load(&tmp).unwrap(), Grants::default());
    }

    #[test]
    fn grants_parse_and_combine_with_the_manifest() {
        let grants: Grants = toml::from_str(
            r#"
            [plugins.files]
            dirs = [{ host = "/srv/project", guest = "/workspace", mode = "ro" }]
            env = ["*"]
            limits = { deadline_ms = 500, memory_mib = 8 }
            "#,
        )
        .unwrap();
        let manifest = Manifest::parse(
            r#"
            id = "files"
            version = "0.1.0"
            api = "0.1.0"
            component = "files.wasm"
            sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
            [capabilities]
            dirs = [{ guest = "/workspace", mode = "rw" }]
            [limits]
            deadline_ms = 5000
            memory_mib = 64
            "#,
        )
        .unwrap();
        let ctx = call_context(&manifest, &grants.plugins["files"]);
        assert_eq!(ctx.rights.dirs.len(), 1);
        assert_eq!(ctx.rights.dirs[0].mode, Mode::Ro);
        assert_eq!(ctx.limits.deadline, std::time::Duration::from_millis(500));
        assert_eq!(ctx.limits.memory_bytes, 8 << 20);
        assert!(
            ctx.rights.env.is_empty(),
            "a wildcard grants only what the manifest asked for"
        );
    }

    #[test]
    fn bad_grants_files_are_reported_with_their_path() {
        let dir = std::env::temp_dir().join(format!("corral-grants-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("grants.toml");
        std::fs::write(&path, "[plugins.files]\nnetwork = 5\n").unwrap();
        let err = Grants::load(&path).unwrap_err();
        assert!(err.contains("grants.toml"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
