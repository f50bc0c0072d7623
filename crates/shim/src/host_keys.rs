//! A task's `host_ssh_keys` (spec agents.md §1.6 step 3): the run's public keys, added to
//! `~<host_ssh_user>/.ssh/authorized_keys` while the task lives so that the user's key can log
//! in to the host as the jump to the job's sshd (`ssh <run>` through `<run>-host`, agents.md
//! §3.7), and taken out again when the task ends.
//!
//! Like dstack, the file must exist (on an SSH-fleet host the deploy has put the project's key
//! there). Unlike dstack, which appends the keys and later deletes *every* line with their
//! fingerprint (a copy of the key the user had put there before included), each added line
//! ends with a marker naming the task, ` dstack-task=<id>`, and removal deletes exactly the
//! lines with that marker: a line the user wrote is never touched, and two tasks with the same
//! key each keep their own line. The file is edited in place, so its owner and mode stay.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Serializes this shim's edits of authorized_keys files.
static EDITS: Mutex<()> = Mutex::new(());

/// The comment that marks the lines added for task `id`.
fn marker(id: &str) -> String {
    format!("dstack-task={id}")
}

/// `~<user>/.ssh/authorized_keys`, from the password database.
pub(crate) fn authorized_keys_path(user: &str) -> Result<PathBuf, String> {
    match nix::unistd::User::from_name(user) {
        Ok(Some(u)) => Ok(u.dir.join(".ssh").join("authorized_keys")),
        Ok(None) => Err(format!("no user {user:?} on the host")),
        Err(e) => Err(format!("cannot look up the user {user:?}: {e}")),
    }
}

/// The lines to append for task `id`: one per key (blank and comment lines skipped), each
/// with the task's marker.
pub(crate) fn lines_for(keys: &[String], id: &str) -> String {
    let marker = marker(id);
    keys.iter()
        .flat_map(|k| k.lines())
        .map(str::trim)
        .filter(|k| !k.is_empty() && !k.starts_with('#'))
        .map(|k| format!("{k} {marker}\n"))
        .collect()
}

/// `content` without the lines of task `id`; `None` when it has none.
pub(crate) fn without_task(content: &str, id: &str) -> Option<String> {
    let suffix = format!(" {}", marker(id));
    let kept: String = content.split_inclusive('\n').filter(|l| !l.trim_end().ends_with(&suffix)).collect();
    (kept.len() != content.len()).then_some(kept)
}

/// Appends the keys of task `id` to `path`, which must exist.
pub(crate) fn add(path: &Path, keys: &[String], id: &str) -> Result<(), String> {
    let lines = lines_for(keys, id);
    if lines.is_empty() {
        return Ok(());
    }
    let _guard = EDITS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let content = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let separator = if content.is_empty() || content.ends_with('\n') { "" } else { "\n" };
    file.write_all(format!("{separator}{lines}").as_bytes())
        .map_err(|e| format!("cannot append to {}: {e}", path.display()))
}

/// Removes the lines of task `id` from `path` (nothing to do if the file or the lines are
/// gone).
pub(crate) fn remove(path: &Path, id: &str) -> Result<(), String> {
    let _guard = EDITS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let content = match std::fs::read_to_string(path) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let Some(kept) = without_task(&content, id) else { return Ok(()) };
    // Truncate and write, not rename: the file keeps its inode, owner and mode.
    std::fs::write(path, kept).map_err(|e| format!("cannot rewrite {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_added_with_the_task_marker_and_only_those_lines_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authorized_keys");
        // The user's own copy of the same key, without a final newline.
        std::fs::write(&path, "ssh-ed25519 AAAAproject project\nssh-ed25519 AAAAuser me").unwrap();
        let keys = vec!["ssh-ed25519 AAAAuser me\n".to_owned(), "  ".to_owned()];
        add(&path, &keys, "t1").unwrap();
        add(&path, &keys, "t2").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "ssh-ed25519 AAAAproject project\nssh-ed25519 AAAAuser me\n\
             ssh-ed25519 AAAAuser me dstack-task=t1\nssh-ed25519 AAAAuser me dstack-task=t2\n"
        );
        remove(&path, "t1").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "ssh-ed25519 AAAAproject project\nssh-ed25519 AAAAuser me\nssh-ed25519 AAAAuser me dstack-task=t2\n"
        );
        remove(&path, "t2").unwrap();
        remove(&path, "t2").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "ssh-ed25519 AAAAproject project\nssh-ed25519 AAAAuser me\n"
        );
    }

    #[test]
    fn a_missing_file_is_an_error_to_add_to_and_nothing_to_remove_from() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authorized_keys");
        let err = add(&path, &["ssh-ed25519 AAAA k".to_owned()], "t1").unwrap_err();
        assert!(err.contains("authorized_keys"), "{err}");
        remove(&path, "t1").unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn a_marker_is_matched_whole() {
        assert_eq!(without_task("k dstack-task=t10\n", "t1"), None);
        assert_eq!(without_task("k dstack-task=t1\r\nother\n", "t1").as_deref(), Some("other\n"));
    }
}
