//! `files:` of a run configuration: each local path packed as dstack packs it (a tar of the
//! file or directory, named relative to its parent, paths sorted, `.gitignore`,
//! `.dstackignore` and git's ignore rules respected, `.git/` left out, hidden files kept) and
//! uploaded by its sha256.

use std::path::{Path, PathBuf};

use dstack_api::runs::FileArchiveMapping;
use dstack_client::Client;
use dstack_model::run::FilePathMapping;
use sha2::{Digest, Sha256};

/// Packs and uploads every mapping; `config_dir` anchors relative local paths.
pub fn upload(
    client: &Client,
    config_dir: &Path,
    files: &[FilePathMapping],
) -> Result<Vec<FileArchiveMapping>, String> {
    let mut out = Vec::new();
    for mapping in files {
        let root = local_path(config_dir, &mapping.local_path);
        let archive =
            archive(&root).map_err(|e| format!("failed to archive '{}': {e}", mapping.local_path))?;
        let hash = hex(&Sha256::digest(&archive));
        let uploaded = client.upload_archive(&hash, archive).map_err(|e| e.to_string())?;
        out.push(FileArchiveMapping { id: uploaded.id, path: mapping.path.clone() });
    }
    Ok(out)
}

/// `~` expanded; a relative path is relative to the configuration file's directory.
fn local_path(config_dir: &Path, local: &str) -> PathBuf {
    let expanded = match local.strip_prefix("~") {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            dirs::home_dir().unwrap_or_default().join(rest.trim_start_matches('/'))
        }
        _ => PathBuf::from(local),
    };
    if expanded.is_absolute() { expanded } else { config_dir.join(expanded) }
}

/// The tar of `root` (a file or a directory), entries named relative to its parent.
pub fn archive(root: &Path) -> std::io::Result<Vec<u8>> {
    let root = std::path::absolute(root)?;
    let parent = root.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
    let mut overrides = ignore::overrides::OverrideBuilder::new(&root);
    overrides.add("!/.git/").map_err(std::io::Error::other)?;
    let walk = ignore::WalkBuilder::new(&root)
        .overrides(overrides.build().map_err(std::io::Error::other)?)
        .hidden(false)
        .require_git(false)
        .add_custom_ignore_filename(".dstackignore")
        .build();
    let mut paths = Vec::new();
    for entry in walk {
        paths.push(entry.map_err(std::io::Error::other)?.into_path());
    }
    paths.sort();
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    for path in paths {
        let name = path.strip_prefix(&parent).unwrap_or(&path);
        builder.append_path_with_name(&path, name)?;
    }
    builder.into_inner()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_respect_ignore_files_and_skip_git() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join(".git/HEAD"), "ref").unwrap();
        std::fs::write(root.join("a.txt"), "a").unwrap();
        std::fs::write(root.join(".hidden"), "h").unwrap();
        std::fs::write(root.join("sub/b.txt"), "b").unwrap();
        std::fs::write(root.join("skip.log"), "x").unwrap();
        std::fs::write(root.join(".dstackignore"), "*.log\n").unwrap();
        let bytes = archive(&root).unwrap();
        let mut names: Vec<String> = tar::Archive::new(bytes.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["data", "data/.dstackignore", "data/.hidden", "data/a.txt", "data/sub", "data/sub/b.txt"]
        );
        let one = archive(&root.join("a.txt")).unwrap();
        let names: Vec<String> = tar::Archive::new(one.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["a.txt"]);
        assert_eq!(local_path(Path::new("/cfg"), "rel/x"), PathBuf::from("/cfg/rel/x"));
        assert_eq!(local_path(Path::new("/cfg"), "/abs"), PathBuf::from("/abs"));
    }
}
