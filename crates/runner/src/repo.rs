//! Remote repos: clone with the `git` binary, check out the branch and commit, set the
//! committer identity, apply the uploaded diff (spec agents.md §2.5 step 3).
//!
//! Credentials never reach the disk of the repo or the logs:
//! - an OAuth token goes to git as an `Authorization: Basic` header through `GIT_CONFIG_*`
//!   environment variables (git's own way to pass one-shot configuration), so it is neither in
//!   `.git/config`, nor in the command line other users can see, nor in git's messages;
//! - a private key is written to a 0600 file in the runner's temp dir, named in
//!   `GIT_SSH_COMMAND` (host keys are not checked, as dstack's runner does not), and removed
//!   when the clone is done.
//!
//! git never prompts (`GIT_TERMINAL_PROMPT=0`, no askpass), and every git command has a time
//! limit and stops early when the job is stopped, so a bad remote fails the job instead of
//! hanging it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use dstack_agent_proto::runner::RepoCredentials;
use dstack_api::runs::RemoteRunRepoData;

/// How long one git command may take (a clone of a big repo included).
const GIT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// What to clone and how.
pub(crate) struct CloneSpec<'a> {
    pub(crate) repo: &'a RemoteRunRepoData,
    pub(crate) creds: Option<&'a RepoCredentials>,
    /// `job_spec.single_branch`: fetch only the branch.
    pub(crate) single_branch: bool,
    /// The uploaded `git diff`, if any.
    pub(crate) diff: Option<&'a Path>,
    /// Where the key file goes.
    pub(crate) temp_dir: &'a Path,
}

/// Clones into `dir` (empty or missing). `cancelled` is polled while git runs; `log` gets
/// progress lines (no secrets).
pub(crate) fn clone(
    spec: &CloneSpec<'_>,
    dir: &Path,
    cancelled: &dyn Fn() -> bool,
    log: &dyn Fn(&str),
) -> Result<(), String> {
    let creds = spec.creds.ok_or_else(|| {
        "the job has no repo credentials (repo_credentials.clone_url) to clone the remote repo from; \
         run `dstack apply` again so that the CLI initializes the repo"
            .to_owned()
    })?;
    let url = creds.clone_url.as_deref().filter(|u| !u.is_empty()).ok_or_else(|| {
        "repo_credentials.clone_url is empty; run `dstack apply` again so that the CLI initializes the repo"
            .to_owned()
    })?;
    let mut git = Git::new(dir, cancelled);
    git.check_installed()?;
    let key_file = match creds.private_key.as_deref().filter(|k| !k.is_empty()) {
        Some(key) => Some(KeyFile::write(spec.temp_dir, key)?),
        None => None,
    };
    if let Some(key) = &key_file {
        git.env.push((
            "GIT_SSH_COMMAND".to_owned(),
            format!(
                "ssh -i '{}' -o IdentitiesOnly=yes -o StrictHostKeyChecking=no \
                 -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o ConnectTimeout=30",
                key.path.display()
            ),
        ));
    }
    if let Some(token) = creds.oauth_token.as_deref().filter(|t| !t.is_empty()) {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("anything:{token}"));
        git.env.extend([
            ("GIT_CONFIG_COUNT".to_owned(), "1".to_owned()),
            ("GIT_CONFIG_KEY_0".to_owned(), "http.extraHeader".to_owned()),
            ("GIT_CONFIG_VALUE_0".to_owned(), format!("Authorization: Basic {basic}")),
        ]);
        git.secrets.push(token.to_owned());
        git.secrets.push(basic);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    log(&format!("cloning {url} into {}", dir.display()));
    git.run(&["init", "-q"])?;
    git.run(&["remote", "add", "origin", url])?;
    let branch = match spec.repo.repo_branch.as_deref().filter(|b| !b.is_empty()) {
        Some(branch) => branch.to_owned(),
        None => git.default_branch()?,
    };
    let tracking = format!("refs/remotes/origin/{branch}");
    if spec.single_branch {
        git.run(&["fetch", "-q", "origin", &format!("+refs/heads/{branch}:{tracking}")])?;
    } else {
        git.run(&["fetch", "-q", "origin"])?;
    }
    if git.output(&["rev-parse", "-q", "--verify", &format!("{tracking}^{{commit}}")]).is_err() {
        return Err(format!("the branch {branch} is not in the repo {url}"));
    }
    let target = match spec.repo.repo_hash.as_deref().filter(|h| !h.is_empty()) {
        Some(hash) => {
            let known = git.output(&["cat-file", "-e", &format!("{hash}^{{commit}}")]).is_ok();
            if !known {
                // A commit outside the fetched branch: ask for it by name.
                git.run(&["fetch", "-q", "origin", hash])
                    .map_err(|e| format!("the commit {hash} is not in the repo ({e})"))?;
            }
            hash.to_owned()
        }
        None => tracking.clone(),
    };
    git.run(&["checkout", "-q", "-B", &branch, &target])?;
    git.run(&["branch", "-q", &format!("--set-upstream-to=origin/{branch}"), &branch])?;
    if dir.join(".gitmodules").exists() {
        git.run(&["submodule", "update", "-q", "--init", "--recursive"])?;
    }
    drop(key_file);
    if let Some(name) = spec.repo.repo_config_name.as_deref() {
        git.run(&["config", "user.name", name])?;
    }
    if let Some(email) = spec.repo.repo_config_email.as_deref() {
        git.run(&["config", "user.email", email])?;
    }
    if let Some(diff) = spec.diff.filter(|d| std::fs::metadata(d).is_ok_and(|m| m.len() > 0)) {
        let diff = diff.to_str().ok_or_else(|| format!("{}: not a UTF-8 path", diff.display()))?;
        git.run(&["apply", "--whitespace=nowarn", diff])
            .map_err(|e| format!("applying the uploaded local changes failed: {e}"))?;
        log("applied the uploaded local changes");
    }
    Ok(())
}

/// The private key on disk for the clone only.
struct KeyFile {
    path: PathBuf,
}

impl KeyFile {
    fn write(temp_dir: &Path, key: &str) -> Result<KeyFile, String> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = temp_dir.join(format!("git_key_{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("cannot write the repo's SSH key to {}: {e}", path.display()))?;
        let key = if key.ends_with('\n') { key.to_owned() } else { format!("{key}\n") };
        file.write_all(key.as_bytes())
            .map_err(|e| format!("cannot write the repo's SSH key to {}: {e}", path.display()))?;
        Ok(KeyFile { path })
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// git in one working dir, with the clone's environment.
struct Git<'a> {
    dir: &'a Path,
    env: Vec<(String, String)>,
    /// Masked in every message.
    secrets: Vec<String>,
    cancelled: &'a dyn Fn() -> bool,
}

impl<'a> Git<'a> {
    fn new(dir: &'a Path, cancelled: &'a dyn Fn() -> bool) -> Git<'a> {
        let env = [("GIT_TERMINAL_PROMPT", "0"), ("GIT_ASKPASS", ""), ("SSH_ASKPASS", "")];
        Git {
            dir,
            env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            secrets: Vec::new(),
            cancelled,
        }
    }

    fn check_installed(&self) -> Result<(), String> {
        match Command::new("git").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err("git is not installed on this host: the runner clones remote repos with the `git` \
                 binary; install git (or bake the code into the image and drop `repos`)"
                    .to_owned())
            }
            Err(e) => Err(format!("cannot run git: {e}")),
        }
    }

    fn mask(&self, text: &str) -> String {
        self.secrets.iter().filter(|s| !s.is_empty()).fold(text.to_owned(), |t, s| t.replace(s, "***"))
    }

    fn run(&self, args: &[&str]) -> Result<(), String> {
        self.output(args).map(drop)
    }

    /// Runs git, returns its stdout; an error holds the command and git's last words.
    fn output(&self, args: &[&str]) -> Result<String, String> {
        let shown = format!("git {}", args.join(" "));
        let mut child = Command::new("git")
            .args(args)
            .current_dir(self.dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{shown}: {e}"))?;
        let readers = [child.stdout.take().map(drain), child.stderr.take().map(drain)];
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if (self.cancelled)() => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err("the job was stopped".to_owned());
                }
                Ok(None) if started.elapsed() > GIT_TIMEOUT => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("{shown}: no answer within {} min", GIT_TIMEOUT.as_secs() / 60));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(format!("{shown}: {e}")),
            }
        };
        let [out, err] = readers.map(|r| r.and_then(|h| h.join().ok()).unwrap_or_default());
        if status.success() {
            return Ok(out);
        }
        let last: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        let last = last[last.len().saturating_sub(5)..].join("; ");
        Err(self.mask(&format!("{shown} failed ({status}): {last}")))
    }

    /// The remote's default branch (`HEAD`), as `git ls-remote --symref` tells.
    fn default_branch(&self) -> Result<String, String> {
        let out = self.output(&["ls-remote", "--symref", "origin", "HEAD"])?;
        out.lines()
            .find_map(|l| l.strip_prefix("ref: refs/heads/").and_then(|r| r.strip_suffix("\tHEAD")))
            .map(str::to_owned)
            .ok_or_else(|| "the remote repo has no default branch; set `branch` in `repos`".to_owned())
    }
}

fn drain(mut r: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}
