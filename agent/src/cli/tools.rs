//! `corral tools …`: install, list, remove and call sandboxed tool plugins.
//!
//! `call` takes exactly the path the agent takes for a model's tool call ([`Registry::call`]):
//! size and depth caps, JSON parse, schema validation, then a fresh sandboxed instance.
//! Where things live: see [`Home`]; builtin plugins are found through [`builtin_dirs`].

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use corral_sandbox::{Sandbox, SandboxConfig};
use corral_tools::plugins::{self, Home};
use corral_tools::{CallError, Content, Registry};

use super::{GlobalOpts, UsageError};

/// Subcommands of `corral tools`.
#[derive(Debug, Subcommand)]
pub enum ToolsCommand {
    /// List plugins (builtin and installed) and their tools.
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
    let home = home();
    match command {
        ToolsCommand::List => list(&home),
        ToolsCommand::Install { path } => install(&home, &path),
        ToolsCommand::Remove { id } => {
            plugins::remove(&home, &id).map_err(UsageError::new)?;
            println!("removed {id}");
            Ok(())
        }
        ToolsCommand::Call { name, arguments } => call(&home, &name, &arguments, global.verbose),
    }
}

/// The corral home ([`Home::from_env`]) with the builtin plugin folders.
pub fn home() -> Home {
    let mut home = Home::from_env();
    home.builtin = builtin_dirs();
    home
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

fn warn_all(problems: &[String]) {
    for p in problems {
        eprintln!("warning: {p}");
    }
}

fn list(home: &Home) -> anyhow::Result<()> {
    let sandbox = sandbox(home)?;
    let (loaded, problems) = plugins::load_all(home, &sandbox);
    warn_all(&problems);
    if loaded.is_empty() {
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
        for t in &p.tools {
            println!("  {:<20} {}", t.name, first_line(&t.description));
        }
    }
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
    let p = plugins::install(home, &sandbox, path)
        .map_err(|e| anyhow::anyhow!("install refused: {e}"))?;
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

fn call(home: &Home, name: &str, arguments: &str, verbose: bool) -> anyhow::Result<()> {
    let arguments = if arguments == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| UsageError::new(format!("cannot read arguments from stdin: {e}")))?;
        text
    } else {
        arguments.to_owned()
    };
    let sandbox = sandbox(home)?;
    let (registry, problems): (Registry, Vec<String>) =
        plugins::registry(home, &sandbox).map_err(UsageError::new)?;
    if verbose {
        warn_all(&problems);
    }
    match registry.call(name, &arguments) {
        Ok(out) => {
            if verbose {
                print_guest_output(&out.stdout, &out.stderr);
            }
            for piece in &out.content {
                match piece {
                    Content::Text(t) => println!("{t}"),
                    Content::Json(v) => println!("{}", serde_json::to_string_pretty(v)?),
                }
            }
            Ok(())
        }
        Err(CallError::Tool(msg)) => Err(anyhow::anyhow!("tool error: {msg}")),
        Err(CallError::Runtime(err)) => Err(anyhow::anyhow!("{err}")),
    }
}

fn print_guest_output(stdout: &str, stderr: &str) {
    for (label, text) in [("stdout", stdout), ("stderr", stderr)] {
        if !text.is_empty() {
            eprintln!("--- tool {label} ---\n{}", text.trim_end());
        }
    }
}
