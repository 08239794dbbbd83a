//! `corral serve`: the OpenAI-compatible server ([`crate::server`]) on the loaded model.
//!
//! Loopback by default; another address needs `--api-key` (or `CORRAL_API_KEY`). `--parallel N`
//! keeps N conversations' KV caches and runs up to N requests at once (more wait in arrival
//! order).
//! `--agent` adds the model `corral-agent`, which runs corral's sandboxed tools with this
//! process's grants (config, `--grant`) and policy; `ask` tools are refused there (no one can be
//! asked), so allow the ones to serve in the config's `[tools]` table.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};

use clap::Args;
use corral_prompts::llama31::{Llama31, Style};
use corral_prompts::{Format, FormatKind};

use super::run::{max_steps, seconds};
use super::toolset::tools_with_grants;
use super::{session, GlobalOpts, UsageError};
use crate::agent::format_for_model;
use crate::engine::{self, ModelInfo};
use crate::server::{self, AgentServe, AgentSetup, AppState, Limits, ServedModel, ServerConfig};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; anything but loopback needs an API key.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Bearer token clients must send (`Authorization: Bearer KEY`).
    #[arg(long = "api-key", env = "CORRAL_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Allow browser calls from this origin (repeatable; `*` for any). Off by default.
    #[arg(long = "cors", value_name = "ORIGIN")]
    pub cors: Vec<String>,
    /// Conversations that keep their KV cache between requests (llama.cpp sequences), and
    /// requests that run at once.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub parallel: u32,
    /// Largest request body in bytes.
    #[arg(long = "max-body", default_value_t = Limits::default().body_bytes, value_name = "BYTES")]
    pub max_body: usize,
    /// Most messages in one request.
    #[arg(long = "max-messages", default_value_t = Limits::default().messages, value_name = "N")]
    pub max_messages: usize,
    /// Largest `max_tokens` a request may ask for.
    #[arg(long = "max-tokens-cap", default_value_t = Limits::default().max_tokens, value_name = "N")]
    pub max_tokens_cap: usize,
    /// Requests that may wait for the model; more are answered 503.
    #[arg(long, default_value_t = Limits::default().queue, value_name = "N")]
    pub queue: usize,
    /// Serve agent mode: model `corral-agent` runs corral's own sandboxed tools.
    #[arg(long)]
    pub agent: bool,
    /// Agent mode: grant a plugin more for this process (PLUGIN=DIR[:ro], PLUGIN=env:NAME,
    /// PLUGIN=net:IP:PORT).
    #[arg(long = "grant", value_name = "PLUGIN=WHAT", requires = "agent")]
    pub grant: Vec<String>,
    /// Agent mode: serve only these tools (comma-separated; default: every installed tool,
    /// `files` once granted).
    #[arg(long, value_delimiter = ',', value_name = "A,B", requires = "agent")]
    pub tools: Option<Vec<String>>,
    /// Agent mode: generations per turn at most.
    #[arg(long = "max-steps", value_name = "N", requires = "agent")]
    pub max_steps: Option<usize>,
    /// Agent mode: seconds one tool call may run.
    #[arg(long = "call-timeout", value_name = "SECONDS", requires = "agent")]
    pub call_timeout: Option<f64>,
}

/// The format requests are rendered in: Llama 3.x exactly as its official template renders
/// with default options (tools in the first user message), ChatML models as the agent does.
pub fn server_format(info: &ModelInfo) -> Result<Box<dyn Format + Send + Sync>, String> {
    let template = info.chat_template.as_deref().unwrap_or_default();
    match corral_prompts::detect(template) {
        Some(FormatKind::Llama3) => Ok(Box::new(Llama31::new(Style::Template))),
        _ => format_for_model(info),
    }
}

/// The id clients use for the model: the name it was asked by (or the default model's), else
/// the file's stem.
fn model_id(global: &GlobalOpts, path: &std::path::Path) -> String {
    match &global.model {
        Some(asked) if !asked.exists() => asked.to_string_lossy().into_owned(),
        Some(_) => path
            .file_stem()
            .map_or("model".into(), |s| s.to_string_lossy().into_owned()),
        None => crate::model::DEFAULT_MODEL.to_string(),
    }
}

pub fn run(args: &ServeArgs, global: &GlobalOpts) -> anyhow::Result<u8> {
    let address = SocketAddr::new(args.host, args.port);
    if !address.ip().is_loopback() && args.api_key.as_deref().is_none_or(str::is_empty) {
        return Err(UsageError::new(server::ServeError::Unprotected(address).to_string()).into());
    }
    if args.parallel == 0 {
        return Err(UsageError::new("--parallel must be at least 1").into());
    }
    for (flag, value) in [
        ("--max-body", args.max_body),
        ("--max-messages", args.max_messages),
        ("--max-tokens-cap", args.max_tokens_cap),
        ("--queue", args.queue),
    ] {
        if value == 0 {
            return Err(UsageError::new(format!("{flag} must be at least 1")).into());
        }
    }
    let agent = if args.agent {
        let (tools, offered) = tools_with_grants(global, &args.grant, args.tools.as_deref())?;
        if offered
            .iter()
            .any(|n| n == corral_tools::code_interpreter::NAME)
        {
            // Its state would carry from one client's request to another's.
            return Err(UsageError::new(
                "agent mode does not offer code_interpreter: its interpreter keeps state \
                 between calls, and requests are separate conversations",
            )
            .into());
        }
        let max_steps = max_steps(args.max_steps, global)?;
        Some(AgentServe {
            registry: tools.registry,
            setup: AgentSetup {
                policy: tools.policy,
                max_steps,
                call_timeout: seconds("--call-timeout", args.call_timeout)?,
                tools: offered,
            },
        })
    } else {
        None
    };
    let sampling = global.sampling()?;
    let mut options = global.engine_options()?;
    options.sequences = args.parallel;
    options.validate()?;
    let path = session::resolve_model(global)?;
    options.show_progress = std::io::stderr().is_terminal();
    let backend = engine::llama::load(&path, &options)?;
    let info = backend.info().clone();
    let format = server_format(&info).map_err(anyhow::Error::msg)?;
    let id = model_id(global, &path);
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let config = ServerConfig {
        model_id: id.clone(),
        aliases: vec![info.name.clone(), stem],
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        cors: args.cors.clone(),
        limits: Limits {
            body_bytes: args.max_body,
            messages: args.max_messages,
            max_tokens: args.max_tokens_cap,
            queue: args.queue,
        },
        sampling,
        agent,
    };
    let agent_on = config.agent.is_some();
    let state = AppState::new(ServedModel::new(backend, format), config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()?;
    runtime.block_on(async move {
        let listener = server::bind(address, state.config()).await?;
        let bound = listener.local_addr()?;
        eprintln!(
            "corral serve: listening on http://{bound}/v1 (model {id}, {} cached \
             conversations, {} tokens each{})",
            info.sequences,
            info.context_tokens,
            if agent_on {
                ", agent mode: corral-agent"
            } else {
                ""
            }
        );
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("corral serve: stopping");
        };
        server::serve(listener, state, shutdown).await?;
        anyhow::Ok(())
    })?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_prompts::{Conversation, Message, ToolSpec};

    #[test]
    fn llama_models_are_served_in_the_official_templates_default_layout() {
        let info = ModelInfo {
            name: "Llama 3.1 8B Instruct".into(),
            context_tokens: 8192,
            sequences: 1,
            trained_context_tokens: 131072,
            chat_template: Some("{{ '<|start_header_id|>' }}…{{ '<|eot_id|>' }}".into()),
            control_tokens: Vec::new(),
            kv_cache_bytes: 0,
        };
        let conversation =
            Conversation::new(vec![Message::user("Weather in Paris?")]).with_tools(vec![
                ToolSpec::new(
                    "get_weather",
                    "Weather",
                    serde_json::json!({"type": "object"}),
                ),
            ]);
        let served = server_format(&info)
            .unwrap()
            .render(&conversation, true)
            .unwrap();
        // The agent keeps tools in the system message (memory pins it); a client expects the
        // template's default: tools in the first user message.
        let template = Llama31::new(Style::Template)
            .render(&conversation, true)
            .unwrap();
        assert_eq!(served, template);
        let agent = format_for_model(&info)
            .unwrap()
            .render(&conversation, true)
            .unwrap();
        assert_ne!(served, agent);
    }
}
