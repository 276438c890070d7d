//! `text.count`: lines, words and bytes of the files under a path of the preopened `/data`
//! directory (the agent's workspace, read-only). Arguments: `{"path": "docs"}`.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

fn main() {
    let mut input = String::new();
    let result = std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| format!("cannot read the arguments: {e}"))
        .and_then(|_| run(&input));
    match result {
        Ok(value) => println!("{value}"),
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(1);
        }
    }
}

fn run(input: &str) -> Result<Value, String> {
    let args: Value = serde_json::from_str(input).map_err(|e| format!("arguments: {e}"))?;
    let rel = args.get("path").and_then(Value::as_str).unwrap_or(".");
    if Path::new(rel).is_absolute() || rel.split('/').any(|part| part == "..") {
        return Err(format!("`{rel}`: give a path relative to the workspace"));
    }
    let root = Path::new("/data").join(rel);
    let mut files = Vec::new();
    collect(&root, &mut files).map_err(|e| format!("{rel}: {e}"))?;
    files.sort();
    let (mut lines, mut words, mut bytes) = (0u64, 0u64, 0u64);
    let mut per_file = Vec::new();
    for file in &files {
        let data = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let text = String::from_utf8_lossy(&data);
        let (l, w, b) = (
            text.lines().count() as u64,
            text.split_whitespace().count() as u64,
            data.len() as u64,
        );
        lines += l;
        words += w;
        bytes += b;
        let name = file.strip_prefix("/data").unwrap_or(file).display().to_string();
        per_file.push(json!({"path": name.trim_start_matches('/'), "lines": l, "words": w, "bytes": b}));
    }
    Ok(json!({"files": files.len(), "lines": lines, "words": words, "bytes": bytes, "per_file": per_file}))
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            collect(&entry?.path(), out)?;
        }
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}
