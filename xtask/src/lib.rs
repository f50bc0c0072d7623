//! Repository invariants that `cargo test` enforces (rust-analyzer's "tidy" tests).
//!
//! - Pure crates (`dstack-model`) depend on nothing that does I/O or async.
//! - Binaries are thin: every `main.rs` stays under 150 lines.
//! - No debugging or to-do macros and no ignored tests in Rust sources, and no leftover
//!   placeholder modules (the exact patterns are in `source_rules`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

/// Crates that must stay free of I/O and async, and what they may never depend on.
const PURE_CRATES: &[&str] = &["dstack-model", "dstack-decide"];
const FORBIDDEN_IN_PURE: &[&str] =
    &["tokio", "sqlx", "reqwest", "axum", "hyper", "bollard", "russh", "kube", "async-trait", "futures"];

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Every problem found, one line each.
pub fn tidy(root: &Path) -> Result<Vec<String>> {
    let mut problems = dependency_rules(root)?;
    problems.extend(source_rules(root)?);
    Ok(problems)
}

/// Walks the resolved dependency graph of each pure crate (normal dependencies only).
fn dependency_rules(root: &Path) -> Result<Vec<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(root)
        .output()
        .context("running cargo metadata")?;
    anyhow::ensure!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let packages = meta["packages"].as_array().context("packages")?;
    let name_of = |id: &str| -> String {
        packages.iter().find(|p| p["id"] == id).and_then(|p| p["name"].as_str()).unwrap_or(id).to_owned()
    };
    let nodes = meta["resolve"]["nodes"].as_array().context("resolve.nodes")?;
    let mut problems = Vec::new();
    for pure in PURE_CRATES {
        let Some(start) = packages.iter().find(|p| p["name"] == *pure).and_then(|p| p["id"].as_str()) else {
            problems.push(format!("pure crate {pure} not found in the workspace"));
            continue;
        };
        let mut stack = vec![(start.to_owned(), vec![pure.to_string()])];
        let mut seen = std::collections::HashSet::new();
        while let Some((id, chain)) = stack.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            let Some(node) = nodes.iter().find(|n| n["id"] == id.as_str()) else {
                continue;
            };
            for dep in node["deps"].as_array().into_iter().flatten() {
                let normal = dep["dep_kinds"].as_array().into_iter().flatten().any(|k| k["kind"].is_null());
                if !normal {
                    continue;
                }
                let dep_id = dep["pkg"].as_str().unwrap_or_default().to_owned();
                let name = name_of(&dep_id);
                let mut chain = chain.clone();
                chain.push(name.clone());
                if FORBIDDEN_IN_PURE.contains(&name.as_str()) {
                    problems.push(format!("pure crate depends on `{name}`: {}", chain.join(" -> ")));
                }
                stack.push((dep_id, chain));
            }
        }
    }
    Ok(problems)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && !name.to_string_lossy().starts_with('.') {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn source_rules(root: &Path) -> Result<Vec<String>> {
    let mut files = Vec::new();
    for dir in ["crates", "xtask", "fuzz"] {
        rust_files(&root.join(dir), &mut files);
    }
    let mut problems = Vec::new();
    // Built by concatenation so this file does not trip its own check.
    let banned = [
        ["dbg", "!("].concat(),
        ["todo", "!("].concat(),
        ["unimplemented", "!("].concat(),
        ["#[", "ignore", "]"].concat(),
        ["PLACE", "HOLDER"].concat(),
    ];
    for file in files {
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        let rel = file.strip_prefix(root).unwrap_or(&file).display().to_string();
        for (i, line) in text.lines().enumerate() {
            for b in &banned {
                if line.contains(b.as_str()) {
                    problems.push(format!("{rel}:{}: `{b}` is not allowed", i + 1));
                }
            }
        }
        if file.file_name().is_some_and(|n| n == "main.rs") && !rel.starts_with("fuzz") {
            let n_lines = text.lines().count();
            if n_lines > 150 {
                problems.push(format!("{rel}: main.rs has {n_lines} lines; keep binaries thin (< 150)"));
            }
        }
    }
    Ok(problems)
}
