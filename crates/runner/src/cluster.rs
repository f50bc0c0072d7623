//! A multi-node job's view of its cluster (agents.md §2.8): the MPI hostfile and the
//! inter-node SSH key.
//!
//! Where the files go:
//!
//! - the hostfile: dstack's `/dstack/mpi/hostfile` when the runner is root, else
//!   `<temp>/mpi/hostfile` (a runner on a host as an ordinary user cannot write `/dstack`);
//!   `DSTACK_MPI_HOSTFILE` names the one written;
//! - the key (`job_spec.ssh_key`): when root in a container (dstack's layout), the private key
//!   in `~/.ssh/dstack_job` (0600) and, per node IP, dstack's `Host` entry appended to
//!   `~/.ssh/config`, so `ssh <ip>` and `mpirun` reach the other nodes; otherwise both files
//!   are written under `<temp>/ssh/` (`ssh -F <temp>/ssh/config <ip>`), so a runner on a host
//!   never edits its user's own `~/.ssh`. The public key is authorized in the runner's sshd
//!   by `api.rs` in both cases.
//!
//! The `Host` entries name port 10022, dstack's container sshd port; see ARCHITECTURE.md for
//! where our shim puts the container's sshd.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use dstack_agent_proto::runner::{ClusterInfo, SubmitBody};

/// dstack's hostfile path.
pub(crate) const DSTACK_HOSTFILE: &str = "/dstack/mpi/hostfile";

/// The hostfile's text: one line per node, `<ip> slots=<gpus>` or `<ip>` for a node without
/// GPUs; empty when a node has no IP yet; an error when IPs and GPU counts disagree.
pub(crate) fn hostfile(info: &ClusterInfo) -> Result<String, String> {
    if info.job_ips.iter().any(String::is_empty) {
        return Ok(String::new());
    }
    if !info.gpus_per_node.is_empty() && info.gpus_per_node.len() != info.job_ips.len() {
        return Err(format!(
            "the cluster has {} node IPs but {} GPU counts",
            info.job_ips.len(),
            info.gpus_per_node.len()
        ));
    }
    let mut text = String::new();
    for (i, ip) in info.job_ips.iter().enumerate() {
        match info.gpus_per_node.get(i).copied().unwrap_or(0) {
            0 => text.push_str(&format!("{ip}\n")),
            gpus => text.push_str(&format!("{ip} slots={gpus}\n")),
        }
    }
    Ok(text)
}

/// dstack's `~/.ssh/config` entries for the nodes, naming `identity`.
pub(crate) fn ssh_config(ips: &[String], identity: &str) -> String {
    ips.iter()
        .filter(|ip| !ip.is_empty())
        .map(|ip| {
            format!(
                "Host {ip}\n    Port 10022\n    StrictHostKeyChecking no\n    UserKnownHostsFile /dev/null\n    \
                 IdentityFile {identity}\n"
            )
        })
        .collect()
}

/// Writes the hostfile and the SSH key files for the job; returns the hostfile's path.
pub(crate) fn set_up(
    body: &SubmitBody,
    temp_dir: &Path,
    root: bool,
    dstack_layout: bool,
) -> Result<PathBuf, String> {
    let hostfile_path =
        if root { PathBuf::from(DSTACK_HOSTFILE) } else { temp_dir.join("mpi").join("hostfile") };
    let text = hostfile(&body.cluster_info)?;
    write_file(&hostfile_path, &text, 0o644)?;
    if let Some(key) = &body.job_spec.ssh_key {
        let (dir, identity) = if dstack_layout {
            let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
            (home.join(".ssh"), "~/.ssh/dstack_job".to_owned())
        } else {
            let dir = temp_dir.join("ssh");
            let identity = dir.join("dstack_job").display().to_string();
            (dir, identity)
        };
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        let mut private = key.private.clone();
        if !private.ends_with('\n') {
            private.push('\n');
        }
        write_file(&dir.join("dstack_job"), &private, 0o600)?;
        let config = dir.join("config");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config)
            .map_err(|e| format!("{}: {e}", config.display()))?;
        f.write_all(ssh_config(&body.cluster_info.job_ips, &identity).as_bytes())
            .map_err(|e| format!("{}: {e}", config.display()))?;
        let _ = std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600));
    }
    Ok(hostfile_path)
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(ips: &[&str], gpus: &[i64]) -> ClusterInfo {
        ClusterInfo {
            job_ips: ips.iter().map(|s| (*s).to_owned()).collect(),
            master_job_ip: ips.first().map(|s| (*s).to_owned()).unwrap_or_default(),
            gpus_per_job: gpus.first().copied().unwrap_or(0),
            gpus_per_node: gpus.to_vec(),
        }
    }

    #[test]
    fn hostfile_lines_as_dstack_writes_them() {
        assert_eq!(
            hostfile(&info(&["10.0.0.1", "10.0.0.2"], &[8, 4])).unwrap(),
            "10.0.0.1 slots=8\n10.0.0.2 slots=4\n"
        );
        assert_eq!(hostfile(&info(&["10.0.0.1", "10.0.0.2"], &[0, 0])).unwrap(), "10.0.0.1\n10.0.0.2\n");
        assert_eq!(hostfile(&info(&["10.0.0.1", "10.0.0.2"], &[])).unwrap(), "10.0.0.1\n10.0.0.2\n");
        assert_eq!(hostfile(&info(&["10.0.0.1", ""], &[1, 1])).unwrap(), "");
        let err = hostfile(&info(&["10.0.0.1", "10.0.0.2"], &[1])).unwrap_err();
        assert_eq!(err, "the cluster has 2 node IPs but 1 GPU counts");
    }

    #[test]
    fn ssh_config_entries_for_every_node() {
        let ips = vec!["10.0.0.1".to_owned(), "10.0.0.2".to_owned()];
        let text = ssh_config(&ips, "~/.ssh/dstack_job");
        assert_eq!(
            text,
            "Host 10.0.0.1\n    Port 10022\n    StrictHostKeyChecking no\n    UserKnownHostsFile /dev/null\n    \
             IdentityFile ~/.ssh/dstack_job\n\
             Host 10.0.0.2\n    Port 10022\n    StrictHostKeyChecking no\n    UserKnownHostsFile /dev/null\n    \
             IdentityFile ~/.ssh/dstack_job\n"
        );
    }
}
