//! The tool list a plugin declared when it was installed, recorded with its component's hash.
//!
//! A plugin's `list-tools` is guest code: it may answer differently each time it runs (by the
//! clock, by chance), so an answer checked at install proves nothing about the next one. corral
//! therefore asks once, when a plugin folder is made (`corral tools install`, or
//! `corral tools record` for builtins), checks the answer (names, schemas, the size caps below),
//! and writes it next to the manifest as `tools.json` with the component's SHA-256. Loading
//! reads the record and never runs `list-tools` again, so a plugin can neither change its tools
//! later (shadowing another plugin's tool) nor slow every start by spinning there. `corral tools
//! verify` asks each plugin again and refuses loudly any that now lists something else.

use std::path::Path;

use corral_sandbox::Plugin;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, ErrorKind};
use crate::registry::Registry;
use crate::ToolSpec;

/// Name of the record file inside a plugin folder.
pub const RECORD_FILE: &str = "tools.json";
/// Most tools one plugin may declare (a plugin with 20,000 made every call 30× slower).
pub const MAX_TOOLS: usize = 64;
/// Largest description of one tool, in bytes: it is shown to the model in every prompt.
pub const MAX_DESCRIPTION_BYTES: usize = 4 << 10;
/// Largest input schema of one tool, in bytes of JSON text.
pub const MAX_SCHEMA_BYTES: usize = 64 << 10;
/// Largest declaration of one plugin (names, descriptions and schemas together), in bytes.
pub const MAX_DECLARED_BYTES: usize = 256 << 10;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    plugin: String,
    sha256: String,
    tools: Vec<RecordedTool>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordedTool {
    name: String,
    description: String,
    input_schema: Value,
}

fn refused(message: String) -> Error {
    Error::new(ErrorKind::Refused, message)
}

/// Runs the plugin's `list-tools` and checks what it declares.
///
/// # Errors
/// [`ErrorKind::Load`] when the guest traps or runs past its deadline; [`ErrorKind::Refused`]
/// for too many tools, oversized descriptions or schemas, schemas that are not JSON or not
/// usable, bad or repeated names.
pub(crate) fn inspect(plugin: &Plugin, id: &str) -> Result<Vec<ToolSpec>, Error> {
    let listed = plugin
        .list_tools()
        .map_err(|e| Error::new(ErrorKind::Load, format!("plugin `{id}`: {e}")))?;
    if listed.len() > MAX_TOOLS {
        return Err(refused(format!(
            "plugin `{id}` declares {} tools, more than the limit of {MAX_TOOLS}",
            listed.len()
        )));
    }
    let mut total = 0usize;
    let mut tools: Vec<ToolSpec> = Vec::with_capacity(listed.len());
    for spec in listed {
        let shown: String = spec.name.chars().take(64).collect();
        if spec.description.len() > MAX_DESCRIPTION_BYTES {
            return Err(refused(format!(
                "plugin `{id}`: tool `{shown}` has a {}-byte description, more than the limit \
                 of {MAX_DESCRIPTION_BYTES} bytes",
                spec.description.len()
            )));
        }
        if spec.input_schema.len() > MAX_SCHEMA_BYTES {
            return Err(refused(format!(
                "plugin `{id}`: tool `{shown}` has a {}-byte input schema, more than the limit \
                 of {MAX_SCHEMA_BYTES} bytes",
                spec.input_schema.len()
            )));
        }
        total += spec.name.len() + spec.description.len() + spec.input_schema.len();
        if total > MAX_DECLARED_BYTES {
            return Err(refused(format!(
                "plugin `{id}` declares more than {MAX_DECLARED_BYTES} bytes of tools"
            )));
        }
        let input_schema = serde_json::from_str(&spec.input_schema).map_err(|e| {
            refused(format!(
                "plugin `{id}`: tool `{shown}` has an input schema that is not JSON: {e}"
            ))
        })?;
        let tool = ToolSpec {
            name: spec.name,
            description: Some(spec.description),
            parameters: input_schema,
        };
        Registry::check(&tool, |name| {
            tools.iter().any(|t| t.name == name).then_some(id)
        })
        .map_err(|e| refused(format!("plugin `{id}` refused: {e}")))?;
        tools.push(tool);
    }
    Ok(tools)
}

/// Writes the record of `tools` for the component `sha256` into `dir`.
///
/// # Errors
/// [`ErrorKind::Io`] when it cannot be written.
pub(crate) fn write(dir: &Path, id: &str, sha256: &str, tools: &[ToolSpec]) -> Result<(), Error> {
    let record = Record {
        plugin: id.to_owned(),
        sha256: sha256.to_owned(),
        tools: tools
            .iter()
            .map(|t| RecordedTool {
                name: t.name.clone(),
                description: t.description.clone().unwrap_or_default(),
                input_schema: t.parameters.clone(),
            })
            .collect(),
    };
    let text = serde_json::to_string_pretty(&record).expect("a record serializes");
    let path = dir.join(RECORD_FILE);
    let tmp = dir.join(format!(".{RECORD_FILE}.tmp"));
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| Error::io(format_args!("cannot write {}", path.display()), &e))
}

/// Reads the record in `dir` and checks it belongs to plugin `id` with component `sha256`.
///
/// # Errors
/// [`ErrorKind::Integrity`] when it is missing, malformed, for another component or plugin;
/// [`ErrorKind::Refused`] when it breaks the size caps (a record edited by hand).
pub(crate) fn read(dir: &Path, id: &str, sha256: &str) -> Result<Vec<ToolSpec>, Error> {
    let path = dir.join(RECORD_FILE);
    let integrity = |why: String| Error::new(ErrorKind::Integrity, why);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(integrity(format!(
                "plugin `{id}` has no recorded tool list ({} is missing): reinstall it with \
                 `corral tools install`, or for a builtin folder run `corral tools record {}`",
                path.display(),
                dir.display()
            )))
        }
        Err(e) => {
            return Err(Error::io(
                format_args!("cannot read {}", path.display()),
                &e,
            ))
        }
    };
    let record: Record = serde_json::from_str(&text)
        .map_err(|e| integrity(format!("{} is not a tool record: {e}", path.display())))?;
    if record.plugin != id || record.sha256 != sha256 {
        return Err(integrity(format!(
            "{} was recorded for plugin `{}` with component sha256 {}, but this is `{id}` with \
             {sha256}: the component changed after it was recorded; reinstall it",
            path.display(),
            record.plugin,
            record.sha256
        )));
    }
    if record.tools.len() > MAX_TOOLS {
        return Err(refused(format!(
            "{} lists more than {MAX_TOOLS} tools",
            path.display()
        )));
    }
    let tools: Vec<ToolSpec> = record
        .tools
        .into_iter()
        .map(|t| ToolSpec {
            name: t.name,
            description: Some(t.description),
            parameters: t.input_schema,
        })
        .collect();
    for t in &tools {
        let schema_bytes = t.parameters.to_string().len();
        let description_bytes = t.description.as_deref().map_or(0, str::len);
        if description_bytes > MAX_DESCRIPTION_BYTES || schema_bytes > MAX_SCHEMA_BYTES {
            return Err(refused(format!(
                "{}: tool `{}` is larger than a plugin may declare",
                path.display(),
                t.name
            )));
        }
    }
    Ok(tools)
}
