//! Remote repos: the runner clones a real Git repo (a `file://` remote, or HTTPS with a token
//! through `tests/support/git_https_server.py`), checks out the branch and commit, applies the
//! uploaded diff, and respects `repo_exists_action`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dstack_agent_proto::runner::{JobState, PullResponse, reason};
use serde_json::{Value, json};

use crate::{Runner, job_output, last_state, submit_body};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_SYSTEM", "/dev/null")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A bare upstream `up.git` with `main` (two commits to `a.txt`) and `feature` (adds `f.txt`).
struct Upstream {
    root: tempfile::TempDir,
    /// The first commit on `main` (`a.txt` = `v1`).
    first: String,
}

impl Upstream {
    fn new() -> Upstream {
        let root = tempfile::tempdir().expect("temp dir");
        git(root.path(), &["init", "-q", "--bare", "up.git"]);
        git(root.path(), &["clone", "-q", "up.git", "work"]);
        let work = root.path().join("work");
        std::fs::write(work.join("a.txt"), "v1\n").unwrap();
        git(&work, &["add", "a.txt"]);
        git(&work, &["commit", "-qm", "first"]);
        let first = git(&work, &["rev-parse", "HEAD"]);
        std::fs::write(work.join("a.txt"), "v2\n").unwrap();
        git(&work, &["commit", "-qam", "second"]);
        git(&work, &["push", "-q", "origin", "main"]);
        git(&work, &["checkout", "-qb", "feature"]);
        std::fs::write(work.join("f.txt"), "feature\n").unwrap();
        git(&work, &["add", "f.txt"]);
        git(&work, &["commit", "-qm", "feature"]);
        git(&work, &["push", "-q", "origin", "feature"]);
        git(&work, &["checkout", "-q", "main"]);
        Upstream { root, first }
    }

    fn url(&self) -> String {
        format!("file://{}", self.root.path().join("up.git").display())
    }

    /// What dstack's CLI uploads for a working tree at `first` with `a.txt` changed, an
    /// untracked text file and an untracked binary file.
    fn diff(&self) -> Vec<u8> {
        let work = self.root.path().join("work");
        git(&work, &["checkout", "-q", &self.first]);
        std::fs::write(work.join("a.txt"), "v1 changed locally\n").unwrap();
        std::fs::write(work.join("new.txt"), "untracked\n").unwrap();
        std::fs::write(work.join("blob.bin"), [0u8, 159, 146, 150, 255, 0, 1]).unwrap();
        let mut diff =
            Command::new("git").args(["diff", "--binary", &self.first]).current_dir(&work).output();
        let mut bytes = diff.expect("git diff").stdout;
        for file in ["blob.bin", "new.txt"] {
            diff = Command::new("git")
                .args(["diff", "--no-index", "--binary", "/dev/null", file])
                .current_dir(&work)
                .output();
            bytes.extend(diff.expect("git diff --no-index").stdout);
        }
        bytes
    }
}

fn remote_body(script: &str, url: &str, repo: Value, extra: Value) -> dstack_agent_proto::runner::SubmitBody {
    let mut repo_data = json!({"repo_type": "remote", "repo_name": "up", "repo_branch": "main",
        "repo_hash": null, "repo_config_name": "Jane Doe", "repo_config_email": "jane@example.com"});
    if let (Some(data), Some(extra)) = (repo_data.as_object_mut(), repo.as_object()) {
        data.extend(extra.clone());
    }
    let mut spec = json!({"repo_data": repo_data, "single_branch": true});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    let mut body = submit_body(script, spec);
    body.run.run_spec.repo_data = serde_json::from_value(repo_data).ok();
    body.repo_credentials = Some(dstack_agent_proto::runner::RepoCredentials {
        clone_url: Some(url.to_owned()),
        private_key: None,
        oauth_token: None,
    });
    body
}

async fn run_to_end(
    runner: &Runner,
    body: &dstack_agent_proto::runner::SubmitBody,
    code: Option<Vec<u8>>,
) -> PullResponse {
    runner.client.submit(body).await.expect("submit");
    if let Some(code) = code {
        runner.client.upload_code(code).await.expect("upload_code");
    }
    runner.client.run().await.expect("run");
    runner.pull_to_end(Duration::from_secs(60)).await
}

fn runner_output(pull: &PullResponse) -> String {
    pull.runner_logs.iter().map(|e| String::from_utf8_lossy(&e.message).into_owned()).collect()
}

const SHOW: &str = "cat a.txt new.txt; od -An -tu1 blob.bin; git rev-parse HEAD; git rev-parse --abbrev-ref HEAD; \
                    git config user.name; git config user.email; git status --porcelain | sort";

#[tokio::test]
async fn a_remote_repo_is_cloned_at_its_commit_with_the_local_changes_applied() {
    let upstream = Upstream::new();
    let diff = upstream.diff();
    let runner = Runner::start();
    let body = remote_body(SHOW, &upstream.url(), json!({"repo_hash": upstream.first}), json!({}));
    let pull = run_to_end(&runner, &body, Some(diff)).await;
    assert_eq!(last_state(&pull).state, JobState::Done, "{pull:?}");
    let out = job_output(&pull);
    let expected = format!(
        "v1 changed locally\nuntracked\n   0 159 146 150 255   0   1\n{}\nmain\nJane Doe\n{}",
        upstream.first, "jane@example.com\n M a.txt\n?? blob.bin\n?? new.txt\n"
    );
    assert_eq!(out, expected);
}

#[tokio::test]
async fn a_branch_without_a_hash_is_cloned_at_its_head_and_other_branches_are_not_fetched() {
    let upstream = Upstream::new();
    let runner = Runner::start();
    let script = "cat f.txt a.txt; git branch -a | sed 's/^[* ]*//' | sort; git status --porcelain";
    let body = remote_body(script, &upstream.url(), json!({"repo_branch": "feature"}), json!({}));
    let pull = run_to_end(&runner, &body, None).await;
    assert_eq!(last_state(&pull).state, JobState::Done, "{pull:?}");
    assert_eq!(job_output(&pull), "feature\nv2\nfeature\nremotes/origin/feature\n");
}

#[tokio::test]
async fn repo_exists_action_error_fails_the_job_and_skip_keeps_the_dir() {
    let upstream = Upstream::new();
    let existing = tempfile::tempdir().expect("temp dir");
    std::fs::write(existing.path().join("mine.txt"), "kept\n").unwrap();
    let repo_dir = existing.path().display().to_string();

    let runner = Runner::start();
    let extra = json!({"repo_dir": repo_dir, "repo_exists_action": "error"});
    let pull = run_to_end(&runner, &remote_body("echo never", &upstream.url(), json!({}), extra), None).await;
    let last = last_state(&pull);
    assert_eq!(
        (last.state, last.termination_reason.as_str()),
        (JobState::Failed, reason::CONTAINER_EXITED_WITH_ERROR)
    );
    assert!(last.termination_message.starts_with("Failed to set up the repo ("), "{last:?}");
    assert!(last.termination_message.contains("exists and is not empty"), "{last:?}");
    assert_eq!(job_output(&pull), "");

    let runner = Runner::start();
    let extra = json!({"repo_dir": repo_dir, "repo_exists_action": "skip"});
    let script = format!("cat {repo_dir}/mine.txt; test -e {repo_dir}/.git || echo no-clone");
    let pull = run_to_end(&runner, &remote_body(&script, &upstream.url(), json!({}), extra), None).await;
    assert_eq!(last_state(&pull).state, JobState::Done, "{pull:?}");
    assert_eq!(job_output(&pull), "kept\nno-clone\n");
}

#[tokio::test]
async fn clone_failures_end_the_job_with_a_clear_message() {
    let upstream = Upstream::new();
    // An unknown branch.
    let runner = Runner::start();
    let body = remote_body("echo never", &upstream.url(), json!({"repo_branch": "nope"}), json!({}));
    let pull = run_to_end(&runner, &body, None).await;
    let last = last_state(&pull);
    assert_eq!(last.state, JobState::Failed);
    assert!(last.termination_message.starts_with("Failed to set up the repo (git fetch"), "{last:?}");

    // No credentials at all.
    let runner = Runner::start();
    let mut body = remote_body("echo never", &upstream.url(), json!({}), json!({}));
    body.repo_credentials = None;
    let last = last_state(&run_to_end(&runner, &body, None).await).clone();
    assert!(last.termination_message.contains("no repo credentials"), "{last:?}");

    // No git on the host.
    let empty = tempfile::tempdir().expect("temp dir");
    let runner = Runner::start_with_env(&[("PATH", &empty.path().display().to_string())]);
    let body = remote_body("echo never", &upstream.url(), json!({}), json!({}));
    let last = last_state(&run_to_end(&runner, &body, None).await).clone();
    assert_eq!(last.state, JobState::Failed);
    assert!(last.termination_message.contains("git is not installed on this host"), "{last:?}");
}

/// `tests/support/git_https_server.py` over `root`, killed on drop.
struct HttpsGit {
    child: Child,
    port: u16,
    cert: PathBuf,
    _state: tempfile::TempDir,
}

impl HttpsGit {
    fn start(root: &Path, token: &str) -> HttpsGit {
        let state = tempfile::tempdir().expect("temp dir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/support/git_https_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("--root")
            .arg(root)
            .arg("--state")
            .arg(state.path())
            .args(["--token", token])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the git server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("a port line");
        let port = line.trim().trim_start_matches("listening on ").parse().expect("a port");
        HttpsGit { child, port, cert: state.path().join("cert.pem"), _state: state }
    }
}

impl Drop for HttpsGit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn an_oauth_token_clones_a_private_repo_and_is_never_stored_or_logged() {
    let upstream = Upstream::new();
    let token = "tok-5ecr3t-value";
    let server = HttpsGit::start(upstream.root.path(), token);
    let url = format!("https://127.0.0.1:{}/up.git", server.port);
    let cert = server.cert.display().to_string();

    let runner = Runner::start_with_env(&[("GIT_SSL_CAINFO", &cert)]);
    let script = "cat a.txt; cat .git/config; git remote get-url origin";
    let mut body = remote_body(script, &url, json!({}), json!({}));
    if let Some(creds) = body.repo_credentials.as_mut() {
        creds.oauth_token = Some(token.to_owned());
    }
    let pull = run_to_end(&runner, &body, None).await;
    assert_eq!(last_state(&pull).state, JobState::Done, "{pull:?}");
    let out = job_output(&pull);
    assert!(out.starts_with("v2\n"), "{out}");
    assert!(out.ends_with(&format!("{url}\n")), "{out}");
    assert!(!out.contains(token), "the token is not in .git/config: {out}");
    assert!(!runner_output(&pull).contains(token), "{}", runner_output(&pull));

    // A wrong token: the job fails, and says so without the token.
    let runner = Runner::start_with_env(&[("GIT_SSL_CAINFO", &cert)]);
    let mut body = remote_body("echo never", &url, json!({}), json!({}));
    if let Some(creds) = body.repo_credentials.as_mut() {
        creds.oauth_token = Some("wrong-token-value".to_owned());
    }
    let pull = run_to_end(&runner, &body, None).await;
    let last = last_state(&pull);
    assert_eq!(last.state, JobState::Failed);
    assert!(last.termination_message.starts_with("Failed to set up the repo (git"), "{last:?}");
    let everything = format!("{pull:?}{}", runner_output(&pull));
    assert!(!everything.contains("wrong-token-value"), "{everything}");
}
