//! `corral mcp serve`: corral's sandboxed tools for any MCP client, over stdin/stdout.
//!
//! The tools are the installed plugins' with the user's grants (config, grants file and
//! `--grant`), as `corral run` offers them; a tool whose policy is `deny` is not offered. Tools
//! corral itself takes from MCP servers are not passed on. The MCP client decides whether to
//! call a tool; it runs in the sandbox either way.

use clap::Subcommand;

use super::toolset::tools_with_grants;
use super::GlobalOpts;
use crate::agent::Decision;

#[derive(Debug, Subcommand)]
pub enum McpCommand {
    /// Serve the installed tools to an MCP client on stdin/stdout.
    Serve {
        /// Grant a plugin more for this process (PLUGIN=DIR[:ro], PLUGIN=env:NAME,
        /// PLUGIN=net:IP:PORT).
        #[arg(long = "grant", value_name = "PLUGIN=WHAT")]
        grant: Vec<String>,
        /// Offer only these tools (comma-separated).
        #[arg(long, value_delimiter = ',', value_name = "A,B")]
        tools: Option<Vec<String>>,
    },
}

pub fn run(command: McpCommand, global: &GlobalOpts) -> anyhow::Result<()> {
    let McpCommand::Serve { grant, tools } = command;
    // Tools taken from MCP servers are not served on: only corral's own, sandboxed ones.
    let mut global = global.clone();
    global.mcp_config = None;
    global.config.mcp_servers.clear();
    let (loaded, offered) = tools_with_grants(&global, &grant, tools.as_deref())?;
    let mut registry = corral_tools::Registry::new();
    for name in offered {
        if loaded.policy.decide(&name) == Decision::Deny {
            continue;
        }
        if let Some(tool) = loaded.registry.tool(&name) {
            let source = loaded
                .registry
                .source_of(&name)
                .unwrap_or("corral")
                .to_string();
            registry.register(tool, &source)?;
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime
        .block_on(corral_tools::mcp::serve_stdio(std::sync::Arc::new(
            registry,
        )))
        .map_err(|e| anyhow::anyhow!("MCP session: {e}"))
}
