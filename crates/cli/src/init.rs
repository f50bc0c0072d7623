//! `dstack init`: register the current Git repo's `origin` with the project (api.md §4.1).
//!
//! Kept small: the repo id and name are dstack's (so the real CLI finds the same repo), the
//! clone URL is the `https://` form and no credentials are sent. dstack checks credentials
//! with `git ls-remote` first; we do not. `dstack apply` in this CLI does not need it.

use std::process::Command;

use dstack_api::repos::{RemoteRepoCreds, RepoInfo, SaveRepoCredsRequest};

use crate::common::connect;
use crate::repo::GitRepoUrl;
use crate::{EXIT_OK, fail};

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The project (default: $DSTACK_PROJECT, then the default project).
    #[arg(long)]
    pub project: Option<String>,
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
    let url = match GitRepoUrl::parse(&remote) {
        Ok(url) => url,
        Err(e) => return fail(e),
    };
    let session = match connect(args.project.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let req = SaveRepoCredsRequest {
        repo_id: url.repo_id(),
        repo_info: RepoInfo::Remote { repo_name: url.repo_name() },
        repo_creds: Some(RemoteRepoCreds {
            clone_url: url.as_https(None),
            private_key: None,
            oauth_token: None,
        }),
    };
    match session.client.init_repo(&session.project, &req) {
        Ok(()) => {
            out!("OK");
            EXIT_OK
        }
        Err(e) => fail(e),
    }
}
