//! Repos for runs (api.md §5.1): `repos:` in a run configuration, or `-P/--repo`, as dstack
//! 0.22.5's `get_repo` reads them.
//!
//! - `local_path` (or `-P DIR`): a Git working tree (its root) whose branch has an upstream.
//!   The run gets the upstream's URL, branch and commit, the local `user.name`/`user.email`,
//!   and the local changes: `git diff --binary <commit>` plus every untracked, non-ignored
//!   file as a new-file diff (the code blob, uploaded after the plan is confirmed).
//! - `url` (or `-P URL`): the remote as it is, at `branch`/`hash` when given; nothing uploaded.
//!
//! The repo id is dstack's (`<name>-<8 base-36 digits of sha256(host + path)>`), so the real
//! CLI and this one share repos on a server. Before the run the remote's access is checked
//! with `git ls-remote`, in dstack's order: no credentials over HTTPS, the `--git-identity`
//! key (or the key stored on the server), the `--token` (or the stored one), the GitHub CLI's
//! token (`~/.config/gh/hosts.yml`), `~/.ssh/id_rsa`. The credentials that work are stored
//! with `repos/init` when the server had none for this user, or when `--token`/`--git-identity`
//! was given.
//!
//! Differences from dstack: `~/.ssh/config` is not read (dstack resolves `Host` aliases for the
//! repo id and the SSH URL, and tries a host's `IdentityFile`); the diff is taken with
//! `--no-color --no-ext-diff`, so a user's `color.ui=always` or external diff tool cannot
//! corrupt it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use dstack_api::repos::{RemoteRepoCreds, RepoInfo, SaveRepoCredsRequest};
use dstack_api::runs::RemoteRunRepoData;
use dstack_client::Client;
use dstack_model::run::RepoSpec;
use sha2::{Digest, Sha256};

/// A Git remote URL taken apart as dstack's `GitRepoURL` does (`https://`, `ssh://`, or
/// scp-style `user@host:path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRepoUrl {
    pub ssh_user: Option<String>,
    pub host: String,
    pub https_port: Option<u16>,
    pub ssh_port: Option<u16>,
    /// With a leading `/`.
    pub path: String,
}

impl GitRepoUrl {
    /// Errors are dstack's: `Could not parse git URL …`, `Unsupported URL scheme …`.
    pub fn parse(value: &str) -> Result<GitRepoUrl, String> {
        let url = match url::Url::parse(value) {
            Ok(url) => url,
            Err(_) => {
                scp_location_to_ssh_url(value).ok_or_else(|| format!("Could not parse git URL {value}"))?
            }
        };
        let host = url.host_str().unwrap_or_default().to_lowercase();
        let path = if url.path().is_empty() { "/".to_owned() } else { url.path().to_owned() };
        match url.scheme() {
            "https" => Ok(GitRepoUrl { ssh_user: None, host, https_port: url.port(), ssh_port: None, path }),
            "ssh" => Ok(GitRepoUrl {
                ssh_user: Some(url.username().to_owned()).filter(|u| !u.is_empty()),
                host,
                https_port: None,
                ssh_port: url.port(),
                path,
            }),
            scheme => Err(format!("Unsupported URL scheme {scheme}")),
        }
    }

    /// `https://[anything:TOKEN@]host[:port]/path`.
    pub fn as_https(&self, oauth_token: Option<&str>) -> String {
        let creds = oauth_token.map(|t| format!("anything:{t}@")).unwrap_or_default();
        let port = self.https_port.map(|p| format!(":{p}")).unwrap_or_default();
        format!("https://{creds}{}{port}{}", self.host, self.path)
    }

    /// `ssh://user@host[:port]/path` (user `git` by default).
    pub fn as_ssh(&self) -> String {
        let port = self.ssh_port.map(|p| format!(":{p}")).unwrap_or_default();
        format!("ssh://{}@{}{port}{}", self.ssh_user.as_deref().unwrap_or("git"), self.host, self.path)
    }

    fn clean_path(&self) -> &str {
        let path = self.path.trim_end_matches('/');
        path.strip_suffix(".git").unwrap_or(path)
    }

    pub fn repo_name(&self) -> String {
        let name = self.clean_path().rsplit('/').next().unwrap_or_default();
        if name.is_empty() { "unknown".to_owned() } else { name.to_owned() }
    }

    /// dstack's repo id: `slugify(repo_name, host + clean path)`.
    pub fn repo_id(&self) -> String {
        slugify(&self.repo_name(), &format!("{}{}", self.host, self.clean_path()))
    }
}

/// `user@host:path` → `ssh://user@host/path` (dstack's `SCP_LOCATION_REGEX`, matched at the
/// start).
fn scp_location_to_ssh_url(value: &str) -> Option<url::Url> {
    static SCP: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = SCP.get_or_init(|| {
        regex::Regex::new(r"(?i)^(?P<user>[^/]+)@(?P<host>[^/]+?):(?P<path>.+)").expect("a valid regex")
    });
    let caps = re.captures(value)?;
    url::Url::parse(&format!("ssh://{}@{}/{}", &caps["user"], &caps["host"], &caps["path"])).ok()
}

/// Whether `-P VALUE` is a URL (else a local path), as dstack decides.
pub fn is_git_repo_url(value: &str) -> bool {
    GitRepoUrl::parse(value).is_ok()
}

/// dstack's `slugify`: `<prefix>-<first 8 of base36(sha256(key))>`.
pub fn slugify(prefix: &str, key: &str) -> String {
    format!("{prefix}-{}", &base36(&Sha256::digest(key.as_bytes()))[..8])
}

/// dstack's `base36encode`: the bytes as a little-endian number, its lowest `len` base-36
/// digits, most significant first.
fn base36(bytes: &[u8]) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    // Big-endian base-256 digits of the little-endian number.
    let mut number: Vec<u32> = bytes.iter().rev().map(|b| u32::from(*b)).collect();
    let mut out = String::with_capacity(bytes.len());
    let mut digits = Vec::with_capacity(bytes.len());
    for _ in 0..bytes.len() {
        let mut rem = 0u32;
        for digit in &mut number {
            let acc = rem * 256 + *digit;
            *digit = acc / 36;
            rem = acc % 36;
        }
        digits.push(DIGITS[rem as usize] as char);
    }
    out.extend(digits.iter().rev());
    out
}

/// A repo as the CLI found it: what goes into the run spec, and the code blob.
#[derive(Debug, Clone)]
pub struct Repo {
    pub repo_id: String,
    pub repo_url: GitRepoUrl,
    pub data: RemoteRunRepoData,
    /// `None` for a repo by URL; possibly empty for a local one.
    pub diff: Option<Vec<u8>>,
}

impl Repo {
    /// The sha256 of the local changes; `None` when there are none (nothing to upload).
    pub fn code_hash(&self) -> Option<String> {
        let diff = self.diff.as_deref().filter(|d| !d.is_empty())?;
        Some(Sha256::digest(diff).iter().map(|b| format!("{b:02x}")).collect())
    }

    /// A repo by URL, at `branch`/`hash` when given.
    pub fn from_url(url: &str, branch: Option<&str>, hash: Option<&str>) -> Result<Repo, String> {
        let repo_url = GitRepoUrl::parse(url)?;
        Ok(Repo {
            repo_id: repo_url.repo_id(),
            data: RemoteRunRepoData {
                repo_name: repo_url.repo_name(),
                repo_branch: branch.map(str::to_owned),
                repo_hash: hash.map(str::to_owned),
                repo_config_name: None,
                repo_config_email: None,
            },
            repo_url,
            diff: None,
        })
    }

    /// A local working tree: its upstream, identity and local changes. Errors are dstack's.
    pub fn from_dir(dir: &Path) -> Result<Repo, String> {
        if !dir.exists() {
            return Err(format!("Path does not exist: {}", dir.display()));
        }
        if !dir.is_dir() {
            return Err(format!("Path is not a directory: {}", dir.display()));
        }
        let not_found = || {
            format!(
                "Git repo not found: {}\nUse `files` to mount an arbitrary directory: \
                 https://dstack.ai/docs/concepts/tasks/#files",
                dir.display()
            )
        };
        if !dir.join(".git").exists() {
            return Err(not_found());
        }
        let git = |args: &[&str]| git_in(dir, args);
        git(&["rev-parse", "--git-dir"]).map_err(|_| not_found())?;
        let Ok(branch) = git(&["symbolic-ref", "-q", "--short", "HEAD"]) else {
            return Err(format!(
                "Git repo in 'detached HEAD' state: {}\nCheck out to a branch",
                dir.display()
            ));
        };
        let branch = text(branch);
        let remote = git(&["config", "--get", &format!("branch.{branch}.remote")]).map(text);
        let merge = git(&["config", "--get", &format!("branch.{branch}.merge")]).map(text);
        let (Ok(remote), Ok(merge)) = (remote, merge) else {
            return Err("No remote branch is configured".to_owned());
        };
        let remote_head = merge.strip_prefix("refs/heads/").unwrap_or(&merge).to_owned();
        let url = git(&["config", "--get", &format!("remote.{remote}.url")])
            .map(text)
            .map_err(|_| format!("Remote named '{remote}' didn't exist"))?;
        let repo_url = GitRepoUrl::parse(&url)?;
        let tracking = format!("refs/remotes/{remote}/{remote_head}");
        let hash =
            git(&["rev-parse", "-q", "--verify", &format!("{tracking}^{{commit}}")]).map(text).map_err(
                |_| format!("The upstream branch {remote}/{remote_head} was never fetched: run `git fetch`"),
            )?;
        let config = |key: &str| git(&["config", "--get", key]).map(text).ok().filter(|v| !v.is_empty());
        let diff = local_changes(dir, &hash)?;
        Ok(Repo {
            repo_id: repo_url.repo_id(),
            data: RemoteRunRepoData {
                repo_name: repo_url.repo_name(),
                repo_branch: Some(remote_head),
                repo_hash: Some(hash),
                repo_config_name: config("user.name"),
                repo_config_email: config("user.email"),
            },
            repo_url,
            diff: Some(diff),
        })
    }
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).trim().to_owned()
}

fn git_in(dir: &Path, args: &[&str]) -> Result<Vec<u8>, String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run git (is it installed?): {e}"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!("git {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// `git diff <hash>` and every untracked, non-ignored file as a new-file diff (binary-safe).
fn local_changes(dir: &Path, hash: &str) -> Result<Vec<u8>, String> {
    const DIFF: [&str; 4] = ["diff", "--binary", "--no-color", "--no-ext-diff"];
    let mut diff = git_in(dir, &[&DIFF[..], &[hash]].concat())?;
    let untracked = git_in(dir, &["ls-files", "-z", "--others", "--exclude-standard"])?;
    for name in untracked.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        // `--no-index` exits 1 when the files differ, which they always do.
        let out = Command::new("git")
            .args(DIFF)
            .args(["--no-index", "/dev/null", &name])
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run git: {e}"))?;
        diff.extend(out.stdout);
    }
    Ok(diff)
}

/// The repo options of `dstack apply` (dstack's "Repo Options").
#[derive(Debug, Default, Clone, clap::Args)]
pub struct RepoArgs {
    /// The repo to use for the run. Can be a local path or a Git repo URL.
    #[arg(short = 'P', long = "repo", value_name = "REPO", help_heading = "Repo Options")]
    pub repo: Option<String>,
    /// The repo branch to use for the run.
    #[arg(long, value_name = "REPO_BRANCH", help_heading = "Repo Options")]
    pub repo_branch: Option<String>,
    /// The hash of the repo commit to use for the run.
    #[arg(long, value_name = "REPO_HASH", help_heading = "Repo Options")]
    pub repo_hash: Option<String>,
    /// Do not use any repo for the run.
    #[arg(long, help_heading = "Repo Options")]
    pub no_repo: bool,
    /// An authentication token to access a private Git repo.
    #[arg(short = 't', long = "token", value_name = "OAUTH_TOKEN", help_heading = "Repo Options")]
    pub gh_token: Option<String>,
    /// The private SSH key path to access a private Git repo.
    #[arg(long = "git-identity", value_name = "SSH_PRIVATE_KEY", help_heading = "Repo Options")]
    pub git_identity_file: Option<PathBuf>,
}

/// dstack's `get_repo`: the run's repo from `-P` or `repos[0]`, its access checked and (if
/// needed) registered with `repos/init`. `None`: the run has no repo (the virtual one).
/// `config_dir` is where a relative `local_path` starts.
pub fn get_repo(
    client: &Client,
    project: &str,
    repos: &[RepoSpec],
    config_dir: &Path,
    args: &RepoArgs,
) -> Result<Option<Repo>, String> {
    if args.no_repo {
        return Ok(None);
    }
    let mut branch = args.repo_branch.clone();
    let mut hash = args.repo_hash.clone();
    let (url, local_path, root_dir) = if let Some(repo) = &args.repo {
        if is_git_repo_url(repo) {
            (Some(repo.clone()), None, PathBuf::new())
        } else {
            (None, Some(repo.clone()), std::env::current_dir().unwrap_or_default())
        }
    } else if let Some(spec) = repos.first() {
        branch = branch.or_else(|| spec.branch.clone());
        hash = hash.or_else(|| spec.hash.clone());
        match (&spec.url, &spec.local_path) {
            (Some(url), _) if !url.is_empty() => (Some(url.clone()), None, PathBuf::new()),
            (_, Some(local)) => (None, Some(local.clone()), config_dir.to_path_buf()),
            _ => return Err("`repos[0]`: Either `local_path` or `url` must be specified".to_owned()),
        }
    } else {
        return Ok(None);
    };
    let mut repo = match (url, local_path) {
        (Some(url), _) => Repo::from_url(&url, None, None)?,
        (None, Some(original)) => {
            let expanded = expand_user(&original);
            let path = if expanded.is_absolute() { expanded } else { root_dir.join(expanded) };
            let path = std::fs::canonicalize(&path)
                .map_err(|_| format!("Invalid repo path: {original} -> {}", normalize(&path).display()))?;
            let repo = Repo::from_dir(&path)?;
            branch = repo.data.repo_branch.clone();
            hash = repo.data.repo_hash.clone();
            repo
        }
        (None, None) => return Ok(None),
    };
    let head = match client.get_repo(project, &repo.repo_id, true) {
        Ok(head) => Some(head),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e.to_string()),
    };
    let given = args.git_identity_file.is_some() || args.gh_token.is_some();
    let mut init = given;
    let mut private_key = None;
    let mut oauth_token = args.gh_token.clone();
    match head.and_then(|h| h.repo_creds) {
        Some(stored) if !given => {
            private_key = stored.private_key;
            oauth_token = stored.oauth_token;
        }
        Some(_) => {}
        None => init = true,
    }
    let creds = repo_creds(&repo.repo_url, args.git_identity_file.as_deref(), private_key, oauth_token)?;
    repo.data.repo_branch = branch;
    if hash.is_some() {
        repo.data.repo_hash = hash;
    }
    if init {
        let req = SaveRepoCredsRequest {
            repo_id: repo.repo_id.clone(),
            repo_info: RepoInfo::Remote { repo_name: repo.data.repo_name.clone() },
            repo_creds: Some(creds),
        };
        client.init_repo(project, &req).map_err(|e| e.to_string())?;
    }
    Ok(Some(repo))
}

fn expand_user(path: &str) -> PathBuf {
    let home = || dirs::home_dir().unwrap_or_default();
    if path == "~" {
        home()
    } else if let Some(rest) = path.strip_prefix("~/") {
        home().join(rest)
    } else {
        PathBuf::from(path)
    }
}

/// `path` with `.` and `..` folded, for messages about paths that do not exist.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

const NO_CREDS: &str = "No valid default Git credentials found. Pass valid `--token` or `--git-identity`.";

/// dstack's `get_repo_creds_and_default_branch`: the first credentials that `git ls-remote`
/// accepts.
fn repo_creds(
    url: &GitRepoUrl,
    identity_file: Option<&Path>,
    private_key: Option<String>,
    oauth_token: Option<String>,
) -> Result<RemoteRepoCreds, String> {
    let https = |token: Option<String>| {
        ls_remote(&url.as_https(token.as_deref()), None).then(|| RemoteRepoCreds {
            clone_url: url.as_https(None),
            private_key: None,
            oauth_token: token,
        })
    };
    let ssh = |key_file: &Path, key: String| {
        ls_remote(&url.as_ssh(), Some(key_file)).then(|| RemoteRepoCreds {
            clone_url: url.as_ssh(),
            private_key: Some(key),
            oauth_token: None,
        })
    };
    if let Some(creds) = https(None) {
        return Ok(creds);
    }
    if let Some(file) = identity_file {
        let key = read_private_key(file)?;
        return ssh(file, key).ok_or_else(|| {
            format!("Cannot access `{}` using the `{}` private SSH key", url.as_ssh(), file.display())
        });
    }
    if let Some(key) = private_key {
        let file =
            tempfile::NamedTempFile::new().map_err(|e| format!("cannot write a temp key file: {e}"))?;
        std::fs::write(file.path(), &key).map_err(|e| format!("cannot write a temp key file: {e}"))?;
        return ssh(file.path(), key)
            .ok_or_else(|| format!("Cannot access `{}` using the stored private SSH key", url.as_ssh()));
    }
    if let Some(token) = oauth_token {
        let masked = mask(&token);
        return https(Some(token))
            .ok_or_else(|| format!("Cannot access `{}` using the `{masked}` token", url.as_https(None)));
    }
    if let Some(token) = gh_config_token(&url.host)
        && let Some(creds) = https(Some(token))
    {
        return Ok(creds);
    }
    let default_key = dirs::home_dir().unwrap_or_default().join(".ssh/id_rsa");
    if default_key.exists()
        && let Ok(key) = read_private_key(&default_key)
        && let Some(creds) = ssh(&default_key, key)
    {
        return Ok(creds);
    }
    Err(NO_CREDS.to_owned())
}

fn mask(token: &str) -> String {
    let n = token.chars().count();
    if n > 4 {
        let tail: String = token.chars().skip(n - 4).collect();
        format!("{}{tail}", "*".repeat(n - 4))
    } else {
        "***MASKED***".to_owned()
    }
}

fn read_private_key(file: &Path) -> Result<String, String> {
    std::fs::read_to_string(file)
        .map_err(|_| format!("Cannot access the `{}` private SSH key", file.display()))
}

/// The GitHub CLI's token for `host` (`~/.config/gh/hosts.yml`: `<host>:` then an indented
/// `oauth_token: <token>`).
fn gh_config_token(host: &str) -> Option<String> {
    let text = std::fs::read_to_string(dirs::home_dir()?.join(".config/gh/hosts.yml")).ok()?;
    let mut in_host = false;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.starts_with('\t') {
            in_host = line.trim_end().trim_end_matches(':').trim_matches(['"', '\'']) == host;
            continue;
        }
        if in_host && let Some(value) = line.trim().strip_prefix("oauth_token:") {
            return Some(value.trim().trim_matches(['"', '\'']).to_owned()).filter(|t| !t.is_empty());
        }
    }
    None
}

/// `git ls-remote --symref URL HEAD` with only the given credentials: no configs, no prompts,
/// no askpass helpers (as dstack checks them).
fn ls_remote(url: &str, key_file: Option<&Path>) -> bool {
    let mut cmd = Command::new("git");
    cmd.args(["-c", "credential.helper=", "ls-remote", "--symref", url, "HEAD"])
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "")
        .env("SSH_ASKPASS", "")
        .env("GIT_CONFIG_SYSTEM", "/dev/null")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_DIR", "/dev/null")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(key) = key_file {
        cmd.env(
            "GIT_SSH_COMMAND",
            format!(
                "ssh -F none -i \"{}\" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
                 -o IdentitiesOnly=yes",
                key.display()
            ),
        );
    }
    cmd.status().is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_match_dstack() {
        // `dstack-nizdmsg0` is what dstack 0.22.5 sent for this repo (api.md §4.1).
        for remote in ["git@github.com:dstackai/dstack.git", "https://github.com/dstackai/dstack.git"] {
            let url = GitRepoUrl::parse(remote).unwrap();
            assert_eq!(url.repo_id(), "dstack-nizdmsg0", "{remote}");
            assert_eq!(url.repo_name(), "dstack");
            assert_eq!(url.as_https(None), "https://github.com/dstackai/dstack.git");
        }
        let url = GitRepoUrl::parse("ssh://git@GitLab.com:2222/a/b/").unwrap();
        assert_eq!(url.repo_name(), "b");
        assert_eq!(url.as_https(None), "https://gitlab.com/a/b/");
        assert_eq!(url.as_ssh(), "ssh://git@gitlab.com:2222/a/b/");
        let url = GitRepoUrl::parse("https://127.0.0.1:8443/up.git").unwrap();
        assert_eq!(url.as_https(Some("t")), "https://anything:t@127.0.0.1:8443/up.git");
        assert_eq!(url.as_ssh(), "ssh://git@127.0.0.1/up.git");
        assert_eq!(GitRepoUrl::parse("https://github.com:443/a/b").unwrap().https_port, None);
        assert_eq!(GitRepoUrl::parse("file:///tmp/x").unwrap_err(), "Unsupported URL scheme file");
        assert_eq!(GitRepoUrl::parse("http://h/x").unwrap_err(), "Unsupported URL scheme http");
        assert_eq!(GitRepoUrl::parse("./dir").unwrap_err(), "Could not parse git URL ./dir");
        assert!(!is_git_repo_url("."));
        assert!(is_git_repo_url("git@github.com:org/repo.git"));
    }

    #[test]
    fn slugify_is_dstacks() {
        // Computed with dstack 0.22.5's `dstack._internal.utils.hash.slugify`.
        assert_eq!(slugify("up", "127.0.0.1/up"), "up-cuie8gcw");
        assert_eq!(slugify("x", ""), "x-u10b2ge6");
    }

    #[test]
    fn tokens_are_masked_as_dstack_masks_them() {
        assert_eq!(mask("abcdefgh"), "****efgh");
        assert_eq!(mask("abc"), "***MASKED***");
    }
}
