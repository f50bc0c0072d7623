//! `dstack init`: register the current Git repo's `origin` with the project (api.md §4.1).
//!
//! Kept small: the repo id and name are dstack's (so the real CLI finds the same repo), the
//! clone URL is the `https://` form and no credentials are sent. dstack checks credentials
//! with `git ls-remote` first; we do not. `dstack apply` in this CLI does not need it.

use std::process::Command;

use dstack_api::repos::{RemoteRepoCreds, RepoInfo, SaveRepoCredsRequest};
use sha2::{Digest, Sha256};

use crate::common::connect;
use crate::{EXIT_OK, fail};

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The project (default: $DSTACK_PROJECT, then the default project).
    #[arg(long)]
    pub project: Option<String>,
}

/// A Git remote URL taken apart as dstack's `GitRepoURL` does.
#[derive(Debug, PartialEq, Eq)]
pub struct RepoUrl {
    pub host: String,
    pub port: Option<u16>,
    /// With a leading `/`.
    pub path: String,
}

impl RepoUrl {
    /// `https://host/path`, `ssh://user@host:port/path` or scp-style `user@host:path`.
    pub fn parse(url: &str) -> Option<RepoUrl> {
        let (host_part, path) =
            if let Some(rest) = url.strip_prefix("https://").or_else(|| url.strip_prefix("ssh://")) {
                match rest.find('/') {
                    Some(i) => (&rest[..i], rest[i..].to_owned()),
                    None => (rest, "/".to_owned()),
                }
            } else if !url.contains("://") {
                let (host, path) = url.split_once(':')?;
                (host, format!("/{}", path.trim_start_matches('/')))
            } else {
                return None;
            };
        let host_port = host_part.rsplit_once('@').map_or(host_part, |(_, h)| h);
        let (host, port) = match host_port.split_once(':') {
            Some((h, p)) => (h, Some(p.parse().ok()?)),
            None => (host_port, None),
        };
        if host.is_empty() {
            return None;
        }
        let https_default = url.starts_with("https://") && port == Some(443);
        Some(RepoUrl { host: host.to_lowercase(), port: port.filter(|_| !https_default), path })
    }

    fn clean_path(&self) -> &str {
        let path = self.path.trim_end_matches('/');
        path.strip_suffix(".git").unwrap_or(path)
    }

    pub fn repo_name(&self) -> String {
        let name = self.clean_path().rsplit('/').next().unwrap_or_default();
        if name.is_empty() { "unknown".to_owned() } else { name.to_owned() }
    }

    /// dstack's repo id: `<name>-<8 base-36 digits of sha256(host + path)>`.
    pub fn repo_id(&self) -> String {
        let key = format!("{}{}", self.host, self.clean_path());
        format!("{}-{}", self.repo_name(), &base36(&Sha256::digest(key.as_bytes()))[..8])
    }

    /// The clone URL for HTTPS access (ssh ports do not carry over).
    pub fn as_https(&self) -> String {
        format!("https://{}{}", self.host, self.path)
    }
}

/// dstack's `base36encode`: the bytes as a little-endian number, its lowest `len` base-36
/// digits, most significant first.
fn base36(bytes: &[u8]) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    // Big-endian base-256 digits of the little-endian number.
    let mut number: Vec<u32> = bytes.iter().rev().map(|b| u32::from(*b)).collect();
    let mut out = Vec::with_capacity(bytes.len());
    for _ in 0..bytes.len() {
        let mut rem = 0u32;
        for digit in &mut number {
            let acc = rem * 256 + *digit;
            *digit = acc / 36;
            rem = acc % 36;
        }
        out.push(DIGITS[rem as usize]);
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub fn run(args: &InitArgs) -> u8 {
    let cwd = std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_else(|_| ".".to_owned());
    if git(&["rev-parse", "--show-toplevel"]).is_none() {
        return fail(format!(
            "{cwd} is not a Git repo; run dstack init inside one (`dstack apply` works without it)"
        ));
    }
    let Some(remote) = git(&["remote", "get-url", "origin"]) else {
        return fail("the Git repo has no `origin` remote; add one with `git remote add origin URL`");
    };
    let Some(url) = RepoUrl::parse(&remote) else {
        return fail(format!("cannot read the Git URL {remote}"));
    };
    let session = match connect(args.project.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let req = SaveRepoCredsRequest {
        repo_id: url.repo_id(),
        repo_info: RepoInfo::Remote { repo_name: url.repo_name() },
        repo_creds: Some(RemoteRepoCreds { clone_url: url.as_https(), private_key: None, oauth_token: None }),
    };
    match session.client.init_repo(&session.project, &req) {
        Ok(()) => {
            out!("OK");
            EXIT_OK
        }
        Err(e) => fail(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_match_dstack() {
        // `dstack-nizdmsg0` is what dstack 0.22.5 sent for this repo (api.md §4.1).
        for remote in ["git@github.com:dstackai/dstack.git", "https://github.com/dstackai/dstack.git"] {
            let url = RepoUrl::parse(remote).unwrap();
            assert_eq!(url.repo_id(), "dstack-nizdmsg0", "{remote}");
            assert_eq!(url.repo_name(), "dstack");
            assert_eq!(url.as_https(), "https://github.com/dstackai/dstack.git");
        }
        let url = RepoUrl::parse("ssh://git@gitlab.com:2222/a/b/").unwrap();
        assert_eq!(url.repo_name(), "b");
        assert_eq!(url.as_https(), "https://gitlab.com/a/b/");
        assert_eq!(RepoUrl::parse("file:///tmp/x"), None);
    }
}
