//! `dstack-runner` as a real process: submit, upload, run, pull, stop.

mod api;
mod jobs;
mod repos;
mod sshd;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dstack_agent_proto::RunnerClient;
use dstack_agent_proto::runner::{JobStateEvent, PullResponse, SubmitBody};
use serde_json::json;

/// A runner process on a free port, killed on drop.
pub(crate) struct Runner {
    pub(crate) child: Child,
    pub(crate) client: RunnerClient,
    pub(crate) url: String,
    pub(crate) dir: tempfile::TempDir,
}

impl Runner {
    pub(crate) fn start() -> Runner {
        Runner::start_with_env(&[])
    }

    /// A runner with extra environment variables (`PATH`, `GIT_SSL_CAINFO`, …).
    pub(crate) fn start_with_env(env: &[(&str, &str)]) -> Runner {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_dstack-runner"))
            // No sshd unless a test asks for one.
            .env("DSTACK_RUNNER_SSH_PORT", "0")
            .envs(env.iter().copied())
            .args(["start", "--http-address", "127.0.0.1", "--http-port", "0", "--stop-grace", "2"])
            .args(["--logs-finished-timeout", "30", "--temp-dir"])
            .arg(dir.path().join("runner"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("runner starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("reads the port line");
        let addr = line.trim().strip_prefix("listening on ").expect("listening line").to_owned();
        let url = format!("http://{addr}");
        Runner { child, client: RunnerClient::new(&url), url, dir }
    }

    /// Pulls until the runner says it has everything; returns all events seen.
    pub(crate) async fn pull_to_end(&self, limit: Duration) -> PullResponse {
        let deadline = Instant::now() + limit;
        let mut all = PullResponse::default();
        loop {
            let pull = self.client.pull(all.last_updated).await.expect("pull");
            all.job_states.extend(pull.job_states);
            all.job_logs.extend(pull.job_logs);
            all.runner_logs.extend(pull.runner_logs);
            all.last_updated = pull.last_updated;
            if !pull.has_more {
                return all;
            }
            assert!(Instant::now() < deadline, "the job did not finish in {limit:?}: {all:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the process to exit by itself.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the runner did not exit in {limit:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A submit body running `script` with bash.
pub(crate) fn submit_body(script: &str, extra_job_spec: serde_json::Value) -> SubmitBody {
    let mut job_spec = json!({
        "replica_num": 0, "job_num": 1, "job_name": "my-run-0-1", "jobs_per_replica": 2,
        "commands": ["/bin/bash", "-c", script], "env": {"MY_VAR": "from-env"},
        "image_name": "", "requirements": {"resources": {}},
        "repo_data": {"repo_type": "virtual"}, "repo_dir": "/workflow"
    });
    if let (Some(spec), Some(extra)) = (job_spec.as_object_mut(), extra_job_spec.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "run": {"id": "5f0c3d52-8a4e-4d3c-9b1e-0f4f5a6b7c8d", "run_spec": {
            "run_name": "my-run", "repo_id": "my-repo", "repo_data": {"repo_type": "virtual"},
            "configuration": {"type": "task", "commands": ["true"]}}},
        "job_spec": job_spec,
        "job_submission": {"id": "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"},
        "cluster_info": {"job_ips": ["10.0.0.5", "10.0.0.6"], "master_job_ip": "10.0.0.5", "gpus_per_job": 0, "gpus_per_node": [1, 1]},
        "secrets": {}, "repo_credentials": null, "log_quota_hour": null
    }))
    .expect("a valid submit body")
}

pub(crate) fn last_state(pull: &PullResponse) -> &JobStateEvent {
    pull.job_states.last().expect("some job state")
}

pub(crate) fn job_output(pull: &PullResponse) -> String {
    pull.job_logs.iter().map(|e| String::from_utf8_lossy(&e.message).into_owned()).collect()
}

/// A tar holding `files` (path, contents).
pub(crate) fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, contents) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, contents.as_bytes()).expect("append");
    }
    builder.into_inner().expect("tar")
}
