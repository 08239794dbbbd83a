//! Plugin folders on disk: where they live, and install / list / remove / load / verify.
//!
//! Layout under the corral home ([`Home`]): `plugins/<id>/` holds `plugin.toml`, the component
//! and `tools.json`, the tool list recorded at install ([`record`]). Builtin plugins live in
//! read-only folders of the same shape (next to the `corral` binary). Compiled components are
//! cached under the cache dir; the user's grants are read from `grants.toml` ([`Grants`]).
//!
//! Loading never runs plugin code: it checks the component against its manifest's hash and the
//! recorded tool list against both, then registers the recorded tools. Two plugins with the same
//! id or the same tool name are an error, never settled by load order.

mod grants;
mod home;
pub mod record;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use corral_sandbox::{grants as rights, CallContext, Grant, Limits, Plugin, Sandbox};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind};
use crate::manifest::{Manifest, MANIFEST_FILE};
use crate::registry::Registry;
use crate::tool::WasmTool;
use crate::ToolSpec;

pub use grants::{check_grant, Grants};
use home::check_not_writable_by_others;
pub use home::Home;
use record::RECORD_FILE;

/// A plugin found on disk and loaded into the sandbox.
#[derive(Debug, Clone)]
pub struct LoadedPlugin {
    /// Its manifest.
    pub manifest: Manifest,
    /// Its folder.
    pub dir: PathBuf,
    /// Whether it is a builtin (cannot be removed).
    pub builtin: bool,
    /// Its tools, as recorded (or, while inspecting, as just listed).
    pub tools: Vec<ToolSpec>,
    /// The loaded component.
    pub plugin: Plugin,
}

/// Reads a plugin folder's manifest and component, checking the folder's files are safe to load
/// and the component matches the manifest's hash.
fn read_component(dir: &Path, builtin: bool) -> Result<(Manifest, Vec<u8>), Error> {
    // Installed plugins must be this user's own; builtins may also belong to root.
    let owned_by_me = !builtin;
    check_not_writable_by_others(dir, owned_by_me)?;
    let manifest = Manifest::load(dir)?;
    let path = dir.join(&manifest.component);
    for file in [dir.join(MANIFEST_FILE), path.clone()] {
        check_not_writable_by_others(&file, owned_by_me)?;
    }
    let bytes = std::fs::read(&path)
        .map_err(|e| Error::io(format_args!("cannot read component {}", path.display()), &e))?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != manifest.sha256 {
        return Err(Error::new(
            ErrorKind::Integrity,
            format!(
                "hash mismatch for {}: plugin.toml says sha256 {}, the file has {actual}; \
                 the component was changed or the manifest is stale",
                path.display(),
                manifest.sha256
            ),
        ));
    }
    Ok((manifest, bytes))
}

fn load_component(sandbox: &Sandbox, manifest: &Manifest, bytes: &[u8]) -> Result<Plugin, Error> {
    sandbox
        .load(bytes)
        .map_err(|e| Error::new(ErrorKind::Load, format!("plugin `{}`: {e}", manifest.id)))
}

/// Loads a plugin folder with its recorded tool list, without running any of its code.
///
/// # Errors
/// The folder or its files are writable by others or not this user's; the manifest is invalid;
/// the component's hash does not match; the tool record is missing or for another component;
/// the component does not load.
pub fn load_dir(sandbox: &Sandbox, dir: &Path, builtin: bool) -> Result<LoadedPlugin, Error> {
    let (manifest, bytes) = read_component(dir, builtin)?;
    // A missing record is reported by `record::read`, with what to do.
    let record_file = dir.join(RECORD_FILE);
    if record_file.exists() {
        check_not_writable_by_others(&record_file, !builtin)?;
    }
    let tools = record::read(dir, &manifest.id, &manifest.sha256)?;
    let plugin = load_component(sandbox, &manifest, &bytes)?;
    Ok(LoadedPlugin {
        manifest,
        dir: dir.to_owned(),
        builtin,
        tools,
        plugin,
    })
}

/// Loads a plugin folder and asks the plugin for its tools (running its `list-tools`), checking
/// what it declares ([`record`]'s caps, names, schemas). For install, record and verify only.
///
/// # Errors
/// As [`load_dir`] (less the record), plus what [`record`] refuses.
pub fn inspect_dir(sandbox: &Sandbox, dir: &Path, builtin: bool) -> Result<LoadedPlugin, Error> {
    let (manifest, bytes) = read_component(dir, builtin)?;
    let plugin = load_component(sandbox, &manifest, &bytes)?;
    let tools = record::inspect(&plugin, &manifest.id)?;
    Ok(LoadedPlugin {
        manifest,
        dir: dir.to_owned(),
        builtin,
        tools,
        plugin,
    })
}

/// Inspects the plugin folder `dir` and writes its tool record there (`corral tools record`,
/// used when builtin plugins are built).
///
/// # Errors
/// As [`inspect_dir`], or when the record cannot be written.
pub fn record_dir(sandbox: &Sandbox, dir: &Path) -> Result<LoadedPlugin, Error> {
    let p = inspect_dir(sandbox, dir, true)?;
    record::write(dir, &p.manifest.id, &p.manifest.sha256, &p.tools)?;
    Ok(p)
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

/// Every plugin that loads, plus one error per plugin folder that does not (each names it).
pub fn load_all(home: &Home, sandbox: &Sandbox) -> (Vec<LoadedPlugin>, Vec<Error>) {
    let (mut ok, mut problems) = (Vec::new(), Vec::new());
    for (dir, builtin) in plugin_dirs(home) {
        match load_dir(sandbox, &dir, builtin) {
            Ok(p) => ok.push(p),
            Err(e) => problems.push(e.context(format_args!("skipped {}", dir.display()))),
        }
    }
    (ok, problems)
}

/// Two loaded plugins with one id, or one tool name: an error naming both, never settled by
/// which folder loaded first.
fn check_unique(plugins: &[LoadedPlugin]) -> Result<(), Error> {
    let mut ids: BTreeMap<&str, &Path> = BTreeMap::new();
    let mut names: BTreeMap<&str, &str> = BTreeMap::new();
    for p in plugins {
        let id = p.manifest.id.as_str();
        if let Some(first) = ids.insert(id, &p.dir) {
            return Err(Error::new(
                ErrorKind::Refused,
                format!(
                    "two plugins have the id `{id}` ({} and {}); remove one",
                    first.display(),
                    p.dir.display()
                ),
            ));
        }
        for t in &p.tools {
            if let Some(other) = names.insert(t.name.as_str(), id) {
                return Err(Error::new(
                    ErrorKind::Refused,
                    format!(
                        "plugins `{other}` and `{id}` both provide a tool named `{}`; remove \
                         one of them (`corral tools remove ID`)",
                        t.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Builds the registry of every loadable plugin's recorded tools, with the user's grants and
/// limits, reading granted environment variables from the process. Returns the registry and
/// the problems met on the way (skipped plugins, grants not applied): show them to the user.
///
/// # Errors
/// When the grants file is invalid or unsafe, or two plugins share an id or a tool name.
pub fn registry(home: &Home, sandbox: &Sandbox) -> Result<(Registry, Vec<Error>), Error> {
    registry_with_env(home, sandbox, &|name| std::env::var(name).ok())
}

/// [`registry`] with granted environment variables read through `env`.
///
/// # Errors
/// As [`registry`].
pub fn registry_with_env(
    home: &Home,
    sandbox: &Sandbox,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Registry, Vec<Error>), Error> {
    load_registry(home, sandbox, env).map(|l| (l.registry, l.problems))
}

/// What [`load_registry`] found.
pub struct LoadedRegistry {
    /// Every loadable plugin's tools.
    pub registry: Registry,
    /// Names of the tools that builtin plugins provide (the agent allows them by default).
    pub builtin_tools: Vec<String>,
    /// Names of the tools of plugins that ask for folders but were granted none (such as
    /// `files` before a workspace is granted): registered, but not worth offering by default.
    pub idle_tools: Vec<String>,
    /// What each tool's calls can touch, by tool name (shown before a call is approved).
    pub reach: BTreeMap<String, Reach>,
    /// Problems met on the way, to show the user.
    pub problems: Vec<Error>,
}

/// What one plugin's calls can touch: its granted folders, environment variable names (never
/// their values) and network peers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    /// The plugin.
    pub plugin: String,
    /// Folders: host path, where the guest sees it, read-write or read-only.
    pub dirs: Vec<(PathBuf, String, rights::Mode)>,
    /// Variable names.
    pub env: Vec<String>,
    /// `ip:port` peers.
    pub network: Vec<String>,
    /// For a tool that runs outside the sandbox (an MCP server's): the command it runs as.
    pub outside: Option<String>,
}

impl Reach {
    /// Whether the calls can touch nothing outside their own memory.
    pub fn is_nothing(&self) -> bool {
        self.outside.is_none()
            && self.dirs.is_empty()
            && self.env.is_empty()
            && self.network.is_empty()
    }
}

impl std::fmt::Display for Reach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(command) = &self.outside {
            return write!(
                f,
                "anything you can: it runs outside the sandbox, as your own process `{command}`"
            );
        }
        if self.is_nothing() {
            return f.write_str("nothing outside the sandbox");
        }
        let mut parts = Vec::new();
        for (host, guest, mode) in &self.dirs {
            let mode = match mode {
                rights::Mode::Ro => "read-only",
                rights::Mode::Rw => "read-write",
            };
            parts.push(format!("folder {} as {guest} ({mode})", host.display()));
        }
        if !self.env.is_empty() {
            parts.push(format!("env {}", self.env.join(", ")));
        }
        if !self.network.is_empty() {
            parts.push(format!("network {}", self.network.join(", ")));
        }
        f.write_str(&parts.join("; "))
    }
}

/// [`registry_with_env`], also telling which tools come from builtin plugins.
///
/// # Errors
/// As [`registry`].
pub fn load_registry(
    home: &Home,
    sandbox: &Sandbox,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedRegistry, Error> {
    load_registry_with(home, sandbox, env, &ExtraGrants::default())
}

/// Grants from outside the grants file.
#[derive(Debug, Clone, Default)]
pub struct ExtraGrants {
    /// Bound to a component like the file's (the config file's `[grants.ID]`); they replace
    /// the file's grant for that plugin.
    pub bound: BTreeMap<String, Grant>,
    /// For this process only (`--grant`, `/grant`): bound to the component loaded now, added
    /// to what the plugin is granted already.
    pub session: BTreeMap<String, Grant>,
}

/// [`load_registry`] with grants from the config file and the command line too; every grant
/// passes the same rules ([`check_grant`]).
///
/// # Errors
/// As [`registry`], and [`ErrorKind::Refused`] for a session grant to a plugin that is not
/// loaded.
pub fn load_registry_with(
    home: &Home,
    sandbox: &Sandbox,
    env: &dyn Fn(&str) -> Option<String>,
    extra: &ExtraGrants,
) -> Result<LoadedRegistry, Error> {
    let mut grants = Grants::load(&home.grants)?;
    let (plugins, mut problems) = load_all(home, sandbox);
    check_unique(&plugins)?;
    grants.plugins.extend(extra.bound.clone());
    for (id, add) in &extra.session {
        let Some(p) = plugins.iter().find(|p| &p.manifest.id == id) else {
            let ids: Vec<&str> = plugins.iter().map(|p| p.manifest.id.as_str()).collect();
            return Err(Error::new(
                ErrorKind::Refused,
                format!(
                    "cannot grant to plugin `{id}`: no such plugin is loaded (plugins: {})",
                    ids.join(", ")
                ),
            ));
        };
        let entry = grants.plugins.entry(id.clone()).or_default();
        if entry.sha256.as_deref() != Some(p.manifest.sha256.as_str()) {
            // A stale or unbound file grant gives nothing; the session grant starts afresh.
            *entry = Grant::default();
        }
        entry.sha256 = Some(p.manifest.sha256.clone());
        for dir in &add.dirs {
            let mut dir = dir.clone();
            if dir.guest.is_empty() {
                // `--grant files=DIR`: the folder goes where the plugin asks for one.
                let asked = &p.manifest.capabilities.dirs;
                let [only] = asked.as_slice() else {
                    let guests: Vec<&str> = asked.iter().map(|d| d.guest.as_str()).collect();
                    return Err(Error::new(
                        ErrorKind::Refused,
                        format!(
                            "plugin `{id}` asks for {} folders ({}), so a folder cannot be \
                             granted to it on the command line: grant each in grants.toml",
                            asked.len(),
                            guests.join(", ")
                        ),
                    ));
                };
                dir.guest = only.guest.clone();
            }
            entry.dirs.push(dir);
        }
        entry.env.extend(add.env.iter().cloned());
        entry.network.extend(add.network.iter().cloned());
    }
    let mut reg = Registry::new();
    let mut builtin_tools = Vec::new();
    let mut idle_tools = Vec::new();
    let mut reach = BTreeMap::new();
    for p in plugins {
        let id = &p.manifest.id;
        if p.builtin {
            builtin_tools.extend(p.tools.iter().map(|t| t.name.clone()));
        }
        let granted = match check_grant(id, &p.manifest.sha256, &grants, home) {
            Ok(()) => grants.plugins.get(id).cloned().unwrap_or_default(),
            Err(e) => {
                problems.push(e);
                Grant::default()
            }
        };
        let context = match call_context(&p.manifest, &granted, env) {
            Ok(c) => c,
            Err(e) => {
                problems.push(e.context(format_args!("plugin `{id}`: its grant is not applied")));
                call_context(&p.manifest, &Grant::default(), env)?
            }
        };
        if !p.manifest.capabilities.dirs.is_empty() && context.dirs().is_empty() {
            idle_tools.extend(p.tools.iter().map(|t| t.name.clone()));
        }
        let rights = context.rights();
        let touches = Reach {
            plugin: id.clone(),
            dirs: rights
                .dirs
                .iter()
                .map(|d| (d.host.clone(), d.guest.clone(), d.mode))
                .collect(),
            env: rights.env.iter().map(|(name, _)| name.clone()).collect(),
            network: rights.network.iter().map(|a| a.to_string()).collect(),
            outside: None,
        };
        let context = Arc::new(context);
        for spec in p.tools {
            reach.insert(spec.name.clone(), touches.clone());
            let tool = Arc::new(WasmTool::new(spec, p.plugin.clone(), context.clone()));
            reg.register(tool, id)
                .map_err(|e| Error::new(ErrorKind::Refused, format!("plugin `{id}`: {e}")))?;
        }
    }
    Ok(LoadedRegistry {
        registry: reg,
        builtin_tools,
        idle_tools,
        reach,
        problems,
    })
}

/// The limits and rights one plugin's calls run with, its granted folders pinned now.
///
/// # Errors
/// [`ErrorKind::Refused`] when a granted folder is missing, not a folder or reached through a
/// symlink.
pub fn call_context(
    manifest: &Manifest,
    grant: &Grant,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<CallContext, Error> {
    let limits = Limits::resolve(&manifest.limits, &grant.limits);
    let rights = rights::effective(&manifest.capabilities, grant, env);
    CallContext::new(limits, rights).map_err(|e| Error::new(ErrorKind::Refused, e.to_string()))
}

/// Asks every plugin for its tools again and compares with what was recorded: `Err` for each
/// plugin that cannot be asked or now lists something else (it may be trying to shadow another
/// plugin's tool). The registry never uses such a fresh answer, only the record.
pub fn verify(home: &Home, sandbox: &Sandbox) -> Vec<(PathBuf, Result<LoadedPlugin, Error>)> {
    plugin_dirs(home)
        .into_iter()
        .map(|(dir, builtin)| {
            let checked = load_dir(sandbox, &dir, builtin).and_then(|recorded| {
                let now = record::inspect(&recorded.plugin, &recorded.manifest.id)?;
                if recorded.tools == now {
                    return Ok(recorded);
                }
                let names = |t: &[ToolSpec]| {
                    t.iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                Err(Error::new(
                    ErrorKind::Refused,
                    format!(
                        "plugin `{}` now lists different tools than it did at install \
                         (recorded: {}; now: {}); corral keeps using the recorded list; a \
                         plugin whose tools change is not trustworthy: remove it",
                        recorded.manifest.id,
                        names(&recorded.tools),
                        names(&now)
                    ),
                ))
            });
            (dir, checked)
        })
        .collect()
}

/// Installs the plugin folder `src` (or the folder of `src` when it names a `plugin.toml`):
/// checks it, asks it for its tools once, and copies it with the record of those tools.
///
/// # Errors
/// [`ErrorKind::Usage`] when `src` is not a plugin folder; everything [`inspect_dir`] refuses;
/// an id already installed or a tool name another plugin has ([`ErrorKind::Refused`]);
/// [`ErrorKind::Io`] when the copy fails.
pub fn install(home: &Home, sandbox: &Sandbox, src: &Path) -> Result<LoadedPlugin, Error> {
    let src = if src.is_file() {
        src.parent().unwrap_or(Path::new("."))
    } else {
        src
    };
    if !src.join(MANIFEST_FILE).is_file() {
        return Err(Error::new(
            ErrorKind::Usage,
            format!(
                "{} has no {MANIFEST_FILE}: give the folder of a plugin",
                src.display()
            ),
        ));
    }
    let new = inspect_dir(sandbox, src, true)?;
    let id = &new.manifest.id;
    let (existing, _) = load_all(home, sandbox);
    if let Some(old) = existing.iter().find(|p| &p.manifest.id == id) {
        let how = if old.builtin {
            "it is a builtin".to_owned()
        } else {
            format!("remove it first with `corral tools remove {id}`")
        };
        return Err(Error::new(
            ErrorKind::Refused,
            format!("a plugin with id `{id}` is already installed ({how})"),
        ));
    }
    for spec in &new.tools {
        if let Some(owner) = existing
            .iter()
            .find(|p| p.tools.iter().any(|t| t.name == spec.name))
        {
            return Err(Error::new(
                ErrorKind::Refused,
                format!(
                    "plugin `{id}` refused: tool name `{}` collides with the tool of the same \
                     name from `{}`",
                    spec.name, owner.manifest.id
                ),
            ));
        }
    }
    home.ensure_plugins_dir()?;
    let dest = home.plugins.join(id);
    copy_plugin(src, &new, &dest)
        .map_err(|e| Error::io(format_args!("cannot install into {}", dest.display()), &e))?;
    Ok(LoadedPlugin {
        dir: dest,
        builtin: false,
        ..new
    })
}

fn copy_plugin(src: &Path, new: &LoadedPlugin, dest: &Path) -> std::io::Result<()> {
    let manifest = &new.manifest;
    let parent = dest.parent().unwrap_or(Path::new("."));
    let staging = tempfile::Builder::new()
        .prefix(&format!(".installing-{}-", manifest.id))
        .tempdir_in(parent)?;
    std::fs::copy(src.join(MANIFEST_FILE), staging.path().join(MANIFEST_FILE))?;
    std::fs::copy(
        src.join(&manifest.component),
        staging.path().join(&manifest.component),
    )?;
    record::write(staging.path(), &manifest.id, &manifest.sha256, &new.tools)
        .map_err(std::io::Error::other)?;
    std::fs::rename(staging.keep(), dest)
}

/// Removes installed plugin `id`.
///
/// # Errors
/// [`ErrorKind::Usage`] when no installed plugin has that id (builtins cannot be removed);
/// [`ErrorKind::Io`] when the folder cannot be deleted.
pub fn remove(home: &Home, id: &str) -> Result<(), Error> {
    let usage = |m: String| Err(Error::new(ErrorKind::Usage, m));
    if !crate::manifest::is_id(id) {
        return usage(format!("`{id}` is not a plugin id"));
    }
    let dir = home.plugins.join(id);
    if !dir.join(MANIFEST_FILE).is_file() {
        let builtin = home
            .builtin
            .iter()
            .any(|b| b.join(id).join(MANIFEST_FILE).is_file());
        return usage(if builtin {
            format!("`{id}` is a builtin plugin and cannot be removed")
        } else {
            format!("no installed plugin has id `{id}`; see `corral tools list`")
        });
    }
    std::fs::remove_dir_all(&dir)
        .map_err(|e| Error::io(format_args!("cannot remove {}", dir.display()), &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_sandbox::grants::Mode;

    #[test]
    fn grants_combine_with_the_manifest() {
        let grants: Grants = toml::from_str(
            r#"
            [plugins.files]
            dirs = [{ host = "/", guest = "/workspace", mode = "ro" }]
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
        let ctx = call_context(&manifest, &grants.plugins["files"], &|_| None).unwrap();
        assert_eq!(ctx.rights().dirs.len(), 1);
        assert_eq!(ctx.rights().dirs[0].mode, Mode::Ro);
        assert_eq!(ctx.dirs()[0].mode(), Mode::Ro);
        assert_eq!(ctx.limits.deadline, std::time::Duration::from_millis(500));
        assert_eq!(ctx.limits.memory_bytes, 8 << 20);
        assert!(
            ctx.rights().env.is_empty(),
            "a wildcard grants only what the manifest asked for"
        );
    }
}
