//! The user's configuration: a TOML file, then `CORRAL_*` environment variables, then flags.
//!
//! The file is `$CORRAL_CONFIG`, else `config.toml` in `$CORRAL_HOME`, else in the platform's
//! config folder (`~/.config/corral/config.toml` on Linux). A missing file is an empty one.
//! Every value remembers where it came from ([`Source`]), so `corral config show` can say why
//! a setting has the value it has. A mistake names the file, the line, the key and what is
//! allowed ([`ConfigError`]).
//!
//! ```toml
//! model = "SmolLM2-135M-Instruct"   # a path, or a cached or known model's name
//! ctx = 8192
//! temperature = 0.2
//! system = "You are terse."
//! max_steps = 6
//!
//! [tools]
//! default = "ask"                   # allow | ask | deny, for tools not listed below
//! policy = { clock = "allow", files = "ask" }
//!
//! [grants.files]                    # same shape and rules as grants.toml's [plugins.files]
//! sha256 = "…the component's sha256 (corral tools list)…"
//! dirs = [{ host = "/home/me/project", guest = "/workspace", mode = "rw" }]
//! ```
//!
//! Because the file can grant folders, it gets the grants file's checks: a regular file, owned
//! by this user and writable by no one else.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use corral_sandbox::Grant;
use serde::Deserialize;
use toml::Spanned;

use crate::agent::Decision;

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// corral's own default.
    Default,
    /// The config file, at this line (1-based).
    File { path: PathBuf, line: usize },
    /// This environment variable.
    Env(&'static str),
    /// This command-line flag.
    Flag(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File { path, line } => write!(f, "{}:{line}", path.display()),
            Source::Env(name) => write!(f, "env {name}"),
            Source::Flag(name) => write!(f, "flag {name}"),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Sourced<T> {
    /// The value.
    pub value: T,
    /// Where it came from.
    pub from: Source,
}

/// A configuration that cannot be used: what, where, and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {message}")]
pub struct ConfigError {
    /// `FILE:LINE: key` or `env NAME`.
    pub place: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

/// The settings the config file and environment can give (flags override them all).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// The file read (whether or not it exists).
    pub path: PathBuf,
    /// Whether it existed.
    pub found: bool,
    /// Model path or name.
    pub model: Option<Sourced<String>>,
    /// Context window in tokens.
    pub ctx: Option<Sourced<u32>>,
    /// CPU threads.
    pub threads: Option<Sourced<u32>>,
    /// Sampling temperature.
    pub temperature: Option<Sourced<f32>>,
    /// Nucleus mass.
    pub top_p: Option<Sourced<f32>>,
    /// Top-k.
    pub top_k: Option<Sourced<i32>>,
    /// Sampling seed.
    pub seed: Option<Sourced<u32>>,
    /// Repeat penalty.
    pub repeat_penalty: Option<Sourced<f32>>,
    /// System prompt for chats and runs.
    pub system: Option<Sourced<String>>,
    /// Steps per turn at most.
    pub max_steps: Option<Sourced<usize>>,
    /// Tokens per reply at most.
    pub max_tokens: Option<Sourced<usize>>,
    /// Where installed plugins live.
    pub plugin_dir: Option<Sourced<PathBuf>>,
    /// The decision for tools without their own.
    pub default_policy: Option<Sourced<Decision>>,
    /// Decisions per tool name.
    pub policy: BTreeMap<String, Sourced<Decision>>,
    /// Grants by plugin id (as in grants.toml; these win over it).
    pub grants: BTreeMap<String, Grant>,
    /// MCP servers to take tools from, by name (`[mcpServers.NAME]`).
    pub mcp_servers: BTreeMap<String, corral_tools::mcp::ServerEntry>,
}

/// The config file's shape; unknown keys are errors (a typo must not be silently ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    model: Option<Spanned<String>>,
    ctx: Option<Spanned<u32>>,
    threads: Option<Spanned<u32>>,
    temperature: Option<Spanned<f32>>,
    top_p: Option<Spanned<f32>>,
    top_k: Option<Spanned<i32>>,
    seed: Option<Spanned<u32>>,
    repeat_penalty: Option<Spanned<f32>>,
    system: Option<Spanned<String>>,
    max_steps: Option<Spanned<usize>>,
    max_tokens: Option<Spanned<usize>>,
    plugin_dir: Option<Spanned<String>>,
    #[serde(default)]
    tools: ToolsTable,
    #[serde(default)]
    grants: BTreeMap<String, Grant>,
    #[serde(default, rename = "mcpServers")]
    mcp_servers: BTreeMap<String, corral_tools::mcp::ServerEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolsTable {
    default: Option<Spanned<String>>,
    #[serde(default)]
    policy: BTreeMap<String, Spanned<String>>,
}

/// The keys, for `corral config show` and error messages: name, environment variable, what
/// is allowed.
pub const KEYS: &[(&str, &str, &str)] = &[
    ("model", "CORRAL_MODEL", "a GGUF path or a model name"),
    ("ctx", "CORRAL_CTX", "tokens, 1 to 131072"),
    ("threads", "CORRAL_THREADS", "a whole number, at least 1"),
    (
        "temperature",
        "CORRAL_TEMPERATURE",
        "a number, at least 0 (0 is greedy)",
    ),
    ("top_p", "CORRAL_TOP_P", "a number above 0, at most 1"),
    (
        "top_k",
        "CORRAL_TOP_K",
        "a whole number, at least 0 (0 disables)",
    ),
    ("seed", "CORRAL_SEED", "a whole number, 0 to 4294967295"),
    (
        "repeat_penalty",
        "CORRAL_REPEAT_PENALTY",
        "a number above 0",
    ),
    ("system", "CORRAL_SYSTEM", "text"),
    (
        "max_steps",
        "CORRAL_MAX_STEPS",
        "a whole number, at least 1",
    ),
    (
        "max_tokens",
        "CORRAL_MAX_TOKENS",
        "a whole number, at least 1",
    ),
    ("plugin_dir", "CORRAL_PLUGIN_DIR", "a folder"),
];

fn allowed(key: &str) -> &'static str {
    KEYS.iter()
        .find(|(k, _, _)| *k == key)
        .map_or("", |(_, _, a)| a)
}

impl Config {
    /// Where the config file is: `$CORRAL_CONFIG`, else `$CORRAL_HOME/config.toml`, else the
    /// platform's config folder; `None` when none is known (no `HOME`).
    pub fn default_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
        let set = |name| env(name).filter(|v| !v.is_empty());
        if let Some(path) = set("CORRAL_CONFIG") {
            return Some(PathBuf::from(path));
        }
        if let Some(home) = set("CORRAL_HOME") {
            return Some(Path::new(&home).join("config.toml"));
        }
        dirs::config_dir().map(|d| d.join("corral").join("config.toml"))
    }

    /// The file at [`Config::default_path`], then the environment, read through `env`.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, a value out of range, an unsafe file, or a bad
    /// `CORRAL_*` value.
    pub fn load(env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut config = match Config::default_path(env) {
            Some(path) => Config::from_file(&path)?,
            None => Config::default(),
        };
        config.apply_env(env)?;
        Ok(config)
    }

    /// Reads one file; a missing file gives an empty configuration.
    ///
    /// # Errors
    /// As [`Config::load`], for the file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Config {
                    path: path.to_owned(),
                    ..Config::default()
                })
            }
            Err(e) => {
                return Err(ConfigError {
                    place: path.display().to_string(),
                    message: format!("cannot read it: {e}"),
                })
            }
        };
        check_private(path)?;
        let mut config = Config::parse(path, &text)?;
        config.found = true;
        Ok(config)
    }

    /// Parses `text` as the file at `path`.
    ///
    /// # Errors
    /// A TOML error (with its line), an unknown key, a wrong type or a value out of range.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError {
            place: match e.span() {
                Some(span) => format!("{}:{}", path.display(), line_of(text, span.start)),
                None => path.display().to_string(),
            },
            message: format!(
                "{} (allowed keys: {}, [tools] default/policy, [grants.PLUGIN])",
                e.message().trim_end(),
                KEYS.iter().map(|k| k.0).collect::<Vec<_>>().join(", ")
            ),
        })?;
        let at = |span: std::ops::Range<usize>| Source::File {
            path: path.to_owned(),
            line: line_of(text, span.start),
        };
        let place = |key: &str, span: std::ops::Range<usize>| {
            format!("{}:{}: {key}", path.display(), line_of(text, span.start))
        };
        macro_rules! take {
            ($field:ident) => {
                match file.$field {
                    None => None,
                    Some(s) => {
                        let span = s.span();
                        let value = s.into_inner();
                        check(stringify!($field), &value).map_err(|message| ConfigError {
                            place: place(stringify!($field), span.clone()),
                            message,
                        })?;
                        Some(Sourced {
                            value: value.into(),
                            from: at(span),
                        })
                    }
                }
            };
        }
        let policy_word = |key: &str, s: Spanned<String>| {
            let span = s.span();
            parse_decision(s.get_ref())
                .map(|value| Sourced {
                    value,
                    from: at(span.clone()),
                })
                .ok_or_else(|| ConfigError {
                    place: place(key, span),
                    message: format!("`{}` is not allow, ask or deny", s.get_ref()),
                })
        };
        for (name, entry) in &file.mcp_servers {
            corral_tools::mcp::check_server_name(name)
                .and_then(|()| entry.check())
                .map_err(|message| ConfigError {
                    place: format!("{}: mcpServers.{name}", path.display()),
                    message,
                })?;
        }
        let mut policy = BTreeMap::new();
        for (name, word) in file.tools.policy {
            let key = format!("tools.policy.{name}");
            policy.insert(name, policy_word(&key, word)?);
        }
        Ok(Config {
            path: path.to_owned(),
            found: false,
            model: take!(model),
            ctx: take!(ctx),
            threads: take!(threads),
            temperature: take!(temperature),
            top_p: take!(top_p),
            top_k: take!(top_k),
            seed: take!(seed),
            repeat_penalty: take!(repeat_penalty),
            system: take!(system),
            max_steps: take!(max_steps),
            max_tokens: take!(max_tokens),
            plugin_dir: take!(plugin_dir),
            default_policy: file
                .tools
                .default
                .map(|w| policy_word("tools.default", w))
                .transpose()?,
            policy,
            grants: file.grants,
            mcp_servers: file.mcp_servers,
        })
    }

    /// Overrides values with the `CORRAL_*` variables that are set.
    ///
    /// # Errors
    /// A variable whose value is not allowed, naming it.
    pub fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn read<T: std::str::FromStr + Checked>(
            env: &dyn Fn(&str) -> Option<String>,
            key: &str,
            var: &'static str,
        ) -> Result<Option<Sourced<T>>, ConfigError> {
            let Some(raw) = env(var).filter(|v| !v.is_empty()) else {
                return Ok(None);
            };
            let bad = |why: String| ConfigError {
                place: format!("env {var}"),
                message: why,
            };
            let value: T = raw.trim().parse().map_err(|_| {
                bad(format!(
                    "`{raw}` is not allowed for {key}: {}",
                    allowed(key)
                ))
            })?;
            check(key, &value).map_err(bad)?;
            Ok(Some(Sourced {
                value,
                from: Source::Env(var),
            }))
        }
        macro_rules! over {
            ($field:ident, $var:literal) => {
                if let Some(v) = read(env, stringify!($field), $var)? {
                    self.$field = Some(v);
                }
            };
        }
        over!(model, "CORRAL_MODEL");
        over!(ctx, "CORRAL_CTX");
        over!(threads, "CORRAL_THREADS");
        over!(temperature, "CORRAL_TEMPERATURE");
        over!(top_p, "CORRAL_TOP_P");
        over!(top_k, "CORRAL_TOP_K");
        over!(seed, "CORRAL_SEED");
        over!(repeat_penalty, "CORRAL_REPEAT_PENALTY");
        over!(system, "CORRAL_SYSTEM");
        over!(max_steps, "CORRAL_MAX_STEPS");
        over!(max_tokens, "CORRAL_MAX_TOKENS");
        over!(plugin_dir, "CORRAL_PLUGIN_DIR");
        Ok(())
    }
}

/// A decision word of the config file and of `/grant`-style commands.
pub fn parse_decision(word: &str) -> Option<Decision> {
    match word {
        "allow" => Some(Decision::Allow),
        "ask" => Some(Decision::Ask),
        "deny" => Some(Decision::Deny),
        _ => None,
    }
}

/// The word for a decision.
pub fn decision_word(decision: Decision) -> &'static str {
    match decision {
        Decision::Allow => "allow",
        Decision::Ask => "ask",
        Decision::Deny => "deny",
    }
}

/// Range checks shared by the file and the environment.
trait Checked {
    fn check(&self, key: &str) -> Result<(), String>;
}

fn check<T: Checked>(key: &str, value: &T) -> Result<(), String> {
    value.check(key)
}

fn out_of_range(key: &str, shown: impl fmt::Display) -> Result<(), String> {
    Err(format!(
        "{shown} is out of range; allowed: {}",
        allowed(key)
    ))
}

impl Checked for u32 {
    fn check(&self, key: &str) -> Result<(), String> {
        match key {
            "ctx" if !(1..=131_072).contains(self) => out_of_range(key, self),
            "threads" if *self == 0 => out_of_range(key, self),
            _ => Ok(()),
        }
    }
}

impl Checked for usize {
    fn check(&self, key: &str) -> Result<(), String> {
        if *self == 0 {
            return out_of_range(key, self);
        }
        Ok(())
    }
}

impl Checked for i32 {
    fn check(&self, key: &str) -> Result<(), String> {
        if *self < 0 {
            return out_of_range(key, self);
        }
        Ok(())
    }
}

impl Checked for f32 {
    fn check(&self, key: &str) -> Result<(), String> {
        let ok = self.is_finite()
            && match key {
                "temperature" => *self >= 0.0,
                "top_p" => *self > 0.0 && *self <= 1.0,
                _ => *self > 0.0,
            };
        if ok {
            Ok(())
        } else {
            out_of_range(key, self)
        }
    }
}

impl Checked for String {
    fn check(&self, key: &str) -> Result<(), String> {
        if self.trim().is_empty() && key != "system" {
            return Err(format!("must not be empty; allowed: {}", allowed(key)));
        }
        Ok(())
    }
}

impl Checked for PathBuf {
    fn check(&self, key: &str) -> Result<(), String> {
        if self.as_os_str().is_empty() {
            return Err(format!("must not be empty; allowed: {}", allowed(key)));
        }
        Ok(())
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The config file can grant folders, so it must be as private as the grants file.
fn check_private(path: &Path) -> Result<(), ConfigError> {
    use corral_sandbox::private::{Expect, PrivateError};
    let expect = Expect {
        file: true,
        follow: true,
        ..Expect::default()
    };
    corral_sandbox::private::check_private(path, expect).map_err(|e| ConfigError {
        place: path.display().to_string(),
        message: match e {
            PrivateError::Owner { .. } => format!(
                "{e}: it can grant folders to plugins, so corral reads only your own \
                 (chown it, or point CORRAL_CONFIG elsewhere)"
            ),
            PrivateError::Writable { .. } => format!(
                "{e}: it can grant folders to plugins; run `chmod go-w {}`",
                path.display()
            ),
            other => other.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/cfg/config.toml"), text)
    }

    #[test]
    fn values_carry_their_line() {
        let c = parse("# comment\nctx = 4096\n\ntemperature = 0\n[tools]\ndefault = \"deny\"\npolicy = { clock = \"allow\" }\n").unwrap();
        let ctx = c.ctx.unwrap();
        assert_eq!(ctx.value, 4096);
        assert_eq!(ctx.from.to_string(), "/cfg/config.toml:2");
        assert_eq!(c.temperature.unwrap().value, 0.0);
        assert_eq!(c.default_policy.unwrap().value, Decision::Deny);
        assert_eq!(c.policy["clock"].value, Decision::Allow);
        assert_eq!(c.policy["clock"].from.to_string(), "/cfg/config.toml:7");
    }

    #[test]
    fn mcp_servers_are_read_as_users_write_them() {
        let c = parse(
            "[mcpServers.time]\ncommand = \"uvx\"\nargs = [\"mcp-server-time\"]\nenv = { TZ = \"UTC\" }\n",
        )
        .unwrap();
        let time = &c.mcp_servers["time"];
        assert_eq!((time.command.as_str(), time.args.len()), ("uvx", 1));
        assert_eq!(time.env["TZ"], "UTC");
        let e = parse("[mcpServers.\"a__b\"]\ncommand = \"x\"\n").unwrap_err();
        assert!(e.message.contains("no `__`"), "{e:?}");
        assert!(parse("[mcpServers.t]\ncommand = \"x\"\ncwd = \"/\"\n").is_err());
        let c = parse("[mcpServers.t]\ncommand = \"x\"\nstartup_timeout_sec = 90\n").unwrap();
        assert_eq!(c.mcp_servers["t"].startup_timeout_sec, Some(90.0));
        let e = parse("[mcpServers.t]\ncommand = \"x\"\ntool_timeout_sec = -1\n").unwrap_err();
        assert!(e.message.contains("`tool_timeout_sec` is -1"), "{e:?}");
    }

    #[test]
    fn mistakes_name_file_line_key_and_what_is_allowed() {
        let e = parse("model = \"x\"\nctx = 0\n").unwrap_err();
        assert_eq!(e.place, "/cfg/config.toml:2: ctx");
        assert!(e.message.contains("1 to 131072"), "{e}");

        let e = parse("\n\ncontext = 5\n").unwrap_err();
        assert!(e.place.ends_with(":3"), "{e}");
        assert!(e.message.contains("unknown field `context`"), "{e}");
        assert!(e.message.contains("ctx"), "{e}");

        let e = parse("temperature = \"hot\"\n").unwrap_err();
        assert!(e.place.ends_with(":1"), "{e}");

        let e = parse("[tools]\npolicy = { clock = \"maybe\" }\n").unwrap_err();
        assert_eq!(e.place, "/cfg/config.toml:2: tools.policy.clock");
        assert!(e.message.contains("allow, ask or deny"), "{e}");
    }

    #[test]
    fn the_environment_overrides_the_file_and_bad_values_name_the_variable() {
        let mut c = parse("ctx = 4096\nseed = 7\n").unwrap();
        let env = |name: &str| match name {
            "CORRAL_CTX" => Some("2048".to_owned()),
            _ => None,
        };
        c.apply_env(&env).unwrap();
        assert_eq!(c.ctx.as_ref().unwrap().value, 2048);
        assert_eq!(c.ctx.unwrap().from, Source::Env("CORRAL_CTX"));
        assert_eq!(c.seed.unwrap().value, 7);

        let bad = |name: &str| (name == "CORRAL_TOP_P").then(|| "2".to_owned());
        let e = Config::default().apply_env(&bad).unwrap_err();
        assert_eq!(e.place, "env CORRAL_TOP_P");
        assert!(e.message.contains("at most 1"), "{e}");
        let junk = |name: &str| (name == "CORRAL_MAX_STEPS").then(|| "many".to_owned());
        let e = Config::default().apply_env(&junk).unwrap_err();
        assert!(e.message.contains("`many`"), "{e}");
    }

    #[test]
    fn the_path_follows_corral_config_then_corral_home() {
        let env = |name: &str| match name {
            "CORRAL_HOME" => Some("/h".to_owned()),
            _ => None,
        };
        assert_eq!(
            Config::default_path(&env).unwrap(),
            Path::new("/h/config.toml")
        );
        let env = |name: &str| match name {
            "CORRAL_HOME" => Some("/h".to_owned()),
            "CORRAL_CONFIG" => Some("/elsewhere.toml".to_owned()),
            _ => None,
        };
        assert_eq!(
            Config::default_path(&env).unwrap(),
            Path::new("/elsewhere.toml")
        );
    }

    #[test]
    fn a_missing_file_is_empty_and_a_shared_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let c = Config::from_file(&path).unwrap();
        assert!(!c.found);
        std::fs::write(&path, "ctx = 512\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Config::from_file(&path).unwrap().found);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = Config::from_file(&path).unwrap_err();
        assert!(e.message.contains("chmod go-w"), "{e}");
    }
}
