//! corral builtin `files`: list, read, write and search files inside `/workspace`, the folder
//! the user granted. The sandbox enforces the boundary; this plugin also refuses `..` and paths
//! outside `/workspace` up front so the model gets a clear message.

use std::fs;
use std::path::{Component, Path, PathBuf};

use corral_sdk::{json, Output, Plugin, Tool, Value};

const ROOT: &str = "/workspace";
const MAX_READ: usize = 256 << 10;
const MAX_FILES_SCANNED: usize = 2000;
const MAX_MATCHES: usize = 200;

struct Files;

impl Plugin for Files {
    fn tools() -> Vec<Tool> {
        vec![Tool::new(
            "files",
            "Works with files in the user's workspace. op: list (a folder's entries), read (a text \
             file), write (create or replace a text file with `content`), search (lines containing \
             `pattern` under a folder). Paths are relative to the workspace (e.g. src/main.rs) or \
             start with /workspace.",
            json!({
                "type": "object",
                "properties": {
                    "op": {"enum": ["list", "read", "write", "search"]},
                    "path": {"type": "string", "default": "."},
                    "content": {"type": "string"},
                    "pattern": {"type": "string", "minLength": 1}
                },
                "required": ["op"],
                "additionalProperties": false
            }),
        )]
    }

    fn call(_tool: &str, args: Value) -> Result<Output, String> {
        if fs::metadata(ROOT).is_err() {
            return Err("no workspace is granted to the files tool: the user must map a folder to /workspace \
                        in corral's grants.toml ([plugins.files] dirs = [{ host = \"...\", guest = \"/workspace\", mode = \"rw\" }])"
                .into());
        }
        let rel = args["path"].as_str().unwrap_or(".");
        let path = resolve(rel)?;
        match args["op"].as_str().unwrap_or("") {
            "list" => list(&path),
            "read" => read(&path),
            "write" => {
                let content = args["content"].as_str().ok_or("write needs `content`")?;
                fs::write(&path, content).map_err(|e| io(rel, e))?;
                Ok(Output::text(format!(
                    "wrote {} bytes to {rel}",
                    content.len()
                )))
            }
            "search" => search(
                &path,
                args["pattern"].as_str().ok_or("search needs `pattern`")?,
            ),
            other => Err(format!("unknown op `{other}`")),
        }
    }
}

fn resolve(rel: &str) -> Result<PathBuf, String> {
    let p = Path::new(rel);
    let p = p.strip_prefix(ROOT).unwrap_or(p);
    let mut out = PathBuf::from(ROOT);
    for c in p.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "`{rel}` is outside the workspace: use a path relative to it"
                ))
            }
            Component::ParentDir => {
                return Err(format!(
                    "`{rel}` uses `..`: paths must stay inside the workspace"
                ))
            }
        }
    }
    Ok(out)
}

fn io(rel: &str, e: std::io::Error) -> String {
    format!("{rel}: {e}")
}

fn shown(p: &Path) -> String {
    p.strip_prefix(ROOT)
        .map_or_else(|_| p.display().to_string(), |r| r.display().to_string())
}

fn list(dir: &Path) -> Result<Output, String> {
    let mut entries: Vec<Value> = fs::read_dir(dir)
        .map_err(|e| io(&shown(dir), e))?
        .flatten()
        .map(|e| {
            let meta = e.metadata().ok();
            json!({
                "name": e.file_name().to_string_lossy(),
                "type": if meta.as_ref().is_some_and(|m| m.is_dir()) { "dir" } else { "file" },
                "bytes": meta.map_or(0, |m| m.len()),
            })
        })
        .collect();
    entries.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(Output::json(json!(entries)))
}

fn read(path: &Path) -> Result<Output, String> {
    let bytes = fs::read(path).map_err(|e| io(&shown(path), e))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("{} is not a UTF-8 text file", shown(path)))?;
    if text.len() <= MAX_READ {
        return Ok(Output::text(text));
    }
    let mut end = MAX_READ;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Ok(Output::text(&text[..end]).and_text(format!(
        "\n[files: showing the first {end} of {} bytes]",
        text.len()
    )))
}

fn search(dir: &Path, pattern: &str) -> Result<Output, String> {
    let (mut stack, mut scanned, mut matches) = (vec![dir.to_path_buf()], 0usize, Vec::new());
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for entry in rd.flatten() {
            let p = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(p);
                continue;
            }
            scanned += 1;
            if scanned > MAX_FILES_SCANNED || matches.len() >= MAX_MATCHES {
                return Ok(Output::json(json!({"matches": matches, "complete": false})));
            }
            if meta.len() > MAX_READ as u64 {
                continue;
            }
            let Ok(text) = fs::read_to_string(&p) else {
                continue;
            };
            for (i, line) in text.lines().enumerate() {
                if line.contains(pattern) {
                    matches.push(json!({"path": shown(&p), "line": i + 1, "text": line.chars().take(200).collect::<String>()}));
                }
            }
        }
    }
    if dir.is_file() {
        return Err(format!("{} is a file; search takes a folder", shown(dir)));
    }
    Ok(Output::json(json!({"matches": matches, "complete": true})))
}

corral_sdk::export_plugin!(Files);
