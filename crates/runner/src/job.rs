//! Running the job: working dir, repo and files (`prepare`), then the process (`execute`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use dstack_agent_proto::runner::{JobState, RunResponse, SubmitBody, reason};
use dstack_api::runs::RepoData;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::state::Shared;

/// Why a job is being stopped before it exits by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopCause {
    /// `/api/stop` or a signal to the runner.
    Stop,
    MaxDuration,
    LogQuota,
}

/// Where a job runs, resolved by [`prepare`].
#[derive(Clone)]
pub(crate) struct Prepared {
    pub(crate) working_dir: PathBuf,
    pub(crate) repo_dir: PathBuf,
    pub(crate) username: String,
    /// Where the MPI hostfile was written (`DSTACK_MPI_HOSTFILE`).
    pub(crate) mpi_hostfile: PathBuf,
}

impl Prepared {
    pub(crate) fn response(&self) -> RunResponse {
        RunResponse { working_dir: self.working_dir.display().to_string(), username: self.username.clone() }
    }
}

/// A failed preparation step: the job fails with `reason` and `message` and never runs.
pub(crate) struct PrepareError {
    pub(crate) reason: &'static str,
    pub(crate) message: String,
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from)
}

/// `~`-expands `path`, re-roots dstack's `/workflow` at `workflow_dir`, and resolves a relative
/// path against `base`.
fn resolve(path: &str, base: &Path, workflow_dir: &Path) -> PathBuf {
    let expanded = if path == "~" {
        home()
    } else if let Some(rest) = path.strip_prefix("~/") {
        home().join(rest)
    } else {
        PathBuf::from(path)
    };
    if let Ok(rest) = expanded.strip_prefix("/workflow") {
        return if rest.as_os_str().is_empty() { workflow_dir.to_owned() } else { workflow_dir.join(rest) };
    }
    if expanded.is_absolute() { expanded } else { base.join(expanded) }
}

fn username() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_default()
}

/// Resolves the working dir and the repo dir; what `/api/run` does before it answers.
pub(crate) fn prepare(shared: &Shared, body: &SubmitBody) -> Result<Prepared, PrepareError> {
    let workflow_dir = shared.config.workflow_dir();
    let spec = &body.job_spec;
    let working_dir = match spec.working_dir.as_deref() {
        None | Some("") => workflow_dir.clone(),
        Some(dir) => resolve(dir, &workflow_dir, &workflow_dir),
    };
    std::fs::create_dir_all(&working_dir).map_err(|e| PrepareError {
        reason: reason::EXECUTOR_ERROR,
        message: format!("Failed to set job working dir ({}: {e})", working_dir.display()),
    })?;
    let repo_dir = resolve(&spec.repo_dir, &working_dir, &workflow_dir);
    let root = nix::unistd::geteuid().is_root();
    let mpi_hostfile =
        crate::cluster::set_up(body, &shared.config.temp_dir, root, root && crate::ssh::in_container())
            .map_err(|e| PrepareError {
                reason: reason::EXECUTOR_ERROR,
                message: format!("Failed to set up the cluster files ({e})"),
            })?;
    Ok(Prepared { working_dir, repo_dir, username: username(), mpi_hostfile })
}

/// Sets up the repo (extracts the uploaded code, or clones a remote repo) and the file
/// archives, after `/api/run` has answered (as dstack's runner does).
pub(crate) fn setup(shared: &Shared, body: &SubmitBody, prepared: &Prepared) -> Result<(), PrepareError> {
    let config = &shared.config;
    let workflow_dir = config.workflow_dir();
    setup_repo(shared, body, &prepared.repo_dir).map_err(|e| PrepareError {
        reason: reason::CONTAINER_EXITED_WITH_ERROR,
        message: format!("Failed to set up the repo ({e})"),
    })?;
    for archive in &body.job_spec.file_archives {
        let dest = resolve(&archive.path, &prepared.working_dir, &workflow_dir);
        let src = config.temp_dir.join("file_archives").join(archive.id.to_string());
        setup_file(&src, &dest, &config.temp_dir).map_err(|e| PrepareError {
            reason: reason::EXECUTOR_ERROR,
            message: format!("Failed to set up files ({}: {e})", archive.path),
        })?;
    }
    let _ = std::fs::remove_dir_all(config.temp_dir.join("file_archives"));
    Ok(())
}

pub(crate) fn repo_id(body: &SubmitBody) -> String {
    body.run.run_spec.repo_id.clone().unwrap_or_else(|| "none".to_owned())
}

fn is_empty_dir(dir: &Path) -> std::io::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(entries.flatten().all(|e| e.file_name() == "lost+found")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

fn setup_repo(shared: &Shared, body: &SubmitBody, repo_dir: &Path) -> Result<(), String> {
    let blobs = shared.config.temp_dir.join("repo_blobs");
    let blob = blobs.join(repo_id(body));
    let repo_data = body.job_spec.repo_data.as_ref().or(body.run.run_spec.repo_data.as_ref());
    let result = (|| {
        if !is_empty_dir(repo_dir).map_err(|e| e.to_string())? {
            let action = body.job_spec.repo_exists_action.map(|a| format!("{a:?}").to_lowercase());
            if action.as_deref() == Some("error") {
                return Err(format!("repo dir {} exists and is not empty", repo_dir.display()));
            }
            shared.runner_log(&format!("repo dir {} is not empty; keeping it", repo_dir.display()));
            return Ok(());
        }
        std::fs::create_dir_all(repo_dir).map_err(|e| format!("{}: {e}", repo_dir.display()))?;
        if let Some(RepoData::Remote(remote)) = repo_data {
            let spec = crate::repo::CloneSpec {
                repo: remote,
                creds: body.repo_credentials.as_ref(),
                single_branch: body.job_spec.single_branch.unwrap_or(false),
                diff: blob.exists().then_some(blob.as_path()),
                temp_dir: &shared.config.temp_dir,
            };
            let cancelled = || shared.stop_tx.borrow().is_some();
            return crate::repo::clone(&spec, repo_dir, &cancelled, &|line| shared.runner_log(line));
        }
        if blob.exists() {
            let file = std::fs::File::open(&blob).map_err(|e| e.to_string())?;
            tar::Archive::new(file).unpack(repo_dir).map_err(|e| format!("extracting the code: {e}"))?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&blobs);
    result
}

/// Extracts `archive` so that its one top-level entry becomes `dest`.
fn setup_file(archive: &Path, dest: &Path, temp_dir: &Path) -> Result<(), String> {
    let file = std::fs::File::open(archive).map_err(|e| format!("archive not uploaded: {e}"))?;
    let staging = temp_dir.join(format!("file_staging_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| e.to_string())?;
    let result = (|| {
        tar::Archive::new(file).unpack(&staging).map_err(|e| format!("extracting: {e}"))?;
        let mut entries = std::fs::read_dir(&staging).map_err(|e| e.to_string())?.flatten();
        let (Some(top), None) = (entries.next(), entries.next()) else {
            return Err("the archive must hold exactly one top-level entry".to_owned());
        };
        if dest.is_dir() {
            std::fs::remove_dir_all(dest).map_err(|e| e.to_string())?;
        } else if dest.exists() {
            std::fs::remove_file(dest).map_err(|e| e.to_string())?;
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        if std::fs::rename(top.path(), dest).is_err() {
            copy_tree(&top.path(), dest).map_err(|e| format!("{}: {e}", dest.display()))?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn copy_tree(src: &Path, dest: &Path) -> std::io::Result<()> {
    if src.is_dir() {
        std::fs::create_dir_all(dest)?;
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            copy_tree(&entry.path(), &dest.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::copy(src, dest).map(drop)
    }
}

/// The job's environment: the runner's, then the dstack variables, secrets and `job_spec.env`.
pub(crate) fn environment(body: &SubmitBody, prepared: &Prepared) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> =
        std::env::vars().filter(|(k, _)| !k.starts_with("BASH_FUNC_")).collect();
    let spec = &body.job_spec;
    let cluster = &body.cluster_info;
    let nodes = spec.jobs_per_replica.max(1);
    let gpus_num: i64 = if cluster.gpus_per_node.is_empty() {
        nodes * cluster.gpus_per_job
    } else {
        cluster.gpus_per_node.iter().sum()
    };
    // This job's GPUs (its share when the host is split), as dstack's `GPUSPerJob`.
    let gpus_per_node = cluster.gpus_per_job;
    let dstack = [
        ("DSTACK_RUN_ID", body.run.id.to_string()),
        ("DSTACK_JOB_ID", body.job_submission.id.to_string()),
        ("DSTACK_RUN_NAME", body.run.run_spec.run_name.clone().unwrap_or_default()),
        ("DSTACK_REPO_ID", repo_id(body)),
        ("DSTACK_REPO_DIR", prepared.repo_dir.display().to_string()),
        ("DSTACK_WORKING_DIR", prepared.working_dir.display().to_string()),
        ("DSTACK_NODES_IPS", cluster.job_ips.join("\n")),
        ("DSTACK_MASTER_NODE_IP", cluster.master_job_ip.clone()),
        ("DSTACK_NODE_RANK", spec.job_num.to_string()),
        ("DSTACK_NODES_NUM", nodes.to_string()),
        ("DSTACK_GPUS_PER_NODE", gpus_per_node.to_string()),
        ("DSTACK_GPUS_NUM", gpus_num.to_string()),
        ("DSTACK_MPI_HOSTFILE", prepared.mpi_hostfile.display().to_string()),
    ];
    env.extend(dstack.into_iter().map(|(k, v)| (k.to_owned(), v)));
    env.extend(body.secrets.clone());
    env.extend(spec.env.clone());
    env
}

/// Runs the job to its end and records the final state; then the runner waits for the pull.
pub(crate) async fn execute(shared: Arc<Shared>, body: SubmitBody, prepared: Prepared) {
    let set_up = {
        let (shared, body, prepared) = (shared.clone(), body.clone(), prepared.clone());
        tokio::task::spawn_blocking(move || setup(&shared, &body, &prepared)).await
    };
    let stopped = || shared.stop_tx.borrow().is_some();
    let (state, reason, message, exit_status) = match set_up {
        _ if stopped() => (JobState::Terminated, "", String::new(), None),
        Ok(Ok(())) => run_process(&shared, &body, &prepared).await,
        Ok(Err(e)) => (JobState::Failed, e.reason, e.message, None),
        Err(e) => (JobState::Failed, reason::EXECUTOR_ERROR, format!("setting up the job: {e}"), None),
    };
    shared.job_state(state, reason, &message, exit_status);
    shared.runner_log(&format!("job finished: {state:?} {reason} {message}"));
    let mut inner = shared.lock();
    shared.set_state(&mut inner, dstack_agent_proto::runner::RunnerState::WaitLogsFinished);
}

type Outcome = (JobState, &'static str, String, Option<i32>);

async fn run_process(shared: &Arc<Shared>, body: &SubmitBody, prepared: &Prepared) -> Outcome {
    let commands = &body.job_spec.commands;
    let Some((program, args)) = commands.split_first() else {
        return (JobState::Failed, reason::EXECUTOR_ERROR, "no commands to run".to_owned(), None);
    };
    // stdout and stderr share one pipe, as they share a terminal: the output keeps the order
    // the job wrote it in, and a line written in pieces to one stream is never cut by the other.
    let (output, output_w) = match output_pipe() {
        Ok(pipe) => pipe,
        Err(e) => {
            return (
                JobState::Failed,
                reason::EXECUTOR_ERROR,
                format!("creating the output pipe: {e}"),
                None,
            );
        }
    };
    let spawned = tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(environment(body, prepared))
        .current_dir(&prepared.working_dir)
        .stdin(Stdio::null())
        .stdout(output_w.0)
        .stderr(output_w.1)
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let message = format!("cannot start {program}: {e}");
            return (JobState::Failed, reason::EXECUTOR_ERROR, message, None);
        }
    };
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    if let Some(pgid) = pgid {
        let _ = std::fs::write(
            shared.config.temp_dir.join(dstack_agent_proto::runner_files::JOB_PID),
            pgid.to_string(),
        );
    }
    shared.job_state(JobState::Running, "", "", None);
    let reader = tokio::spawn(pump(shared.clone(), output));
    let max_duration = body.job_spec.max_duration.filter(|d| *d > 0).map(|d| Duration::from_secs(d as u64));
    let mut stop_rx = shared.stop_tx.subscribe();
    let status = tokio::select! {
        status = child.wait() => Some(status),
        _ = stop_rx.wait_for(Option::is_some) => None,
        () = sleep_opt(max_duration) => {
            shared.stop(StopCause::MaxDuration);
            None
        }
    };
    let status = match status {
        Some(status) => status,
        None => {
            if let Some(pgid) = pgid {
                let _ = killpg(pgid, Signal::SIGTERM);
            }
            match tokio::time::timeout(shared.config.stop_grace, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    if let Some(pgid) = pgid {
                        let _ = killpg(pgid, Signal::SIGKILL);
                    }
                    child.wait().await
                }
            }
        }
    };
    // Leftover background processes of the job would keep the pipes open.
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
    let _ = std::fs::remove_file(shared.config.temp_dir.join(dstack_agent_proto::runner_files::JOB_PID));
    let code = match status {
        Ok(status) => status.code().unwrap_or(-1),
        Err(e) => {
            return (JobState::Failed, reason::EXECUTOR_ERROR, format!("waiting for the job: {e}"), None);
        }
    };
    let cause = *shared.stop_tx.borrow();
    match cause {
        Some(StopCause::Stop) => (JobState::Terminated, "", String::new(), None),
        Some(StopCause::MaxDuration) => {
            (JobState::Terminated, reason::MAX_DURATION_EXCEEDED, "Max duration exceeded".to_owned(), None)
        }
        Some(StopCause::LogQuota) => {
            let quota = body.log_quota_hour.unwrap_or_default();
            let message = format!("Job log output exceeded the hourly quota of {quota} bytes");
            (JobState::Failed, reason::LOG_QUOTA_EXCEEDED, message, Some(code))
        }
        None if code == 0 => (JobState::Done, "", String::new(), Some(0)),
        None => (JobState::Failed, "", String::new(), Some(code)),
    }
}

/// One pipe for a job's output: the read end for [`pump`], and its write end twice, for the
/// child's stdout and stderr (the spawned command closes them in this process).
fn output_pipe() -> std::io::Result<(tokio::net::unix::pipe::Receiver, (Stdio, Stdio))> {
    let (read, write) = std::io::pipe()?;
    let write2 = write.try_clone()?;
    let read = tokio::net::unix::pipe::Receiver::from_owned_fd(std::os::fd::OwnedFd::from(read))?;
    Ok((read, (Stdio::from(write), Stdio::from(write2))))
}

async fn sleep_opt(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

const HOUR_MS: u64 = 3_600_000;

/// Copies one output stream into job log events, enforcing the hourly log quota.
async fn pump(shared: Arc<Shared>, mut out: impl AsyncRead + Unpin) {
    let quota = shared.lock().submit.as_ref().and_then(|b| b.log_quota_hour).unwrap_or(0);
    let started = std::time::Instant::now();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match out.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut inner = shared.lock();
        let bucket = started.elapsed().as_millis() as u64 / HOUR_MS;
        if inner.quota_bucket != bucket {
            inner.quota_bucket = bucket;
            inner.quota_used = 0;
        }
        inner.quota_used += n as u64;
        let over = quota > 0 && inner.quota_used > quota;
        shared.job_log(&mut inner, buf[..n].to_vec());
        drop(inner);
        if over {
            shared.stop(StopCause::LogQuota);
        }
    }
}
