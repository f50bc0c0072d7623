//! `dstack-runner`: the agent that runs one job and serves its states and logs (spec
//! agents.md §2).
//!
//! `dstack-runner start` binds its HTTP API, then walks the state machine
//! `wait_submit → wait_run → serve_logs → wait_logs_finished` ([`RunnerState`]) and exits:
//!
//! | Route | What it does |
//! |---|---|
//! | `GET /api/healthcheck` | `{"service":"dstack-runner","version":"0.22.5"}` |
//! | `POST /api/submit` | stores the [`SubmitBody`](dstack_agent_proto::runner::SubmitBody); `wait_submit`/`wait_run` → `wait_run`, else 409 |
//! | `POST /api/upload_code` | raw body (a tar, or a remote repo's diff) → `<temp>/repo_blobs/<repo_id>`; 409 unless `wait_run` |
//! | `POST /api/upload_archive` | multipart, one part `archive` named by the archive id → `<temp>/file_archives/<id>`; 400 on a bad form |
//! | `POST /api/run` | resolves the working dir, answers `{"working_dir","username"}`, then sets up the repo and files and starts the job |
//! | `GET /api/pull?timestamp=<ms>` | states and logs newer than `timestamp`; 400 on a bad integer |
//! | `POST /api/stop` | stops the job (SIGTERM to its process group, SIGKILL after a grace period) |
//! | `GET /api/metrics` | CPU time, memory and GPUs of the job (see `metrics.rs`); 404 `Metrics collector is not available` if nothing can be read |
//! | `GET /logs_ws?start_time=<RFC 3339>` | WebSocket: the job's output as binary messages from `start_time`, closed when the job has ended (see `ws.rs`) |
//!
//! With `--ssh-port` (dstack's 10022; 0 for none) the runner starts OpenSSH's sshd for the
//! job before its API, with the `--ssh-authorized-key` keys and later the job's cluster key,
//! and stops it on exit; a connection tracker reports `no_connections_secs` in `/api/pull`
//! (see `ssh.rs`, which also says where sshd's files live).
//! After the job ends the runner exits once one `/api/pull` was served in `wait_logs_finished`,
//! or after [`Config::logs_finished_timeout`]; if no `/api/run` arrives within
//! [`Config::job_start_timeout`] it exits with an error.
//!
//! # Differences from dstack's Go runner
//!
//! - **No root needed.** The runner runs as whoever starts it (the local fleet runs it as the
//!   server's user): there is no `/dstack` dir, no `/dstack/profile`, no `/etc/profile` edit,
//!   the MPI hostfile is `<temp>/mpi/hostfile` when not root (see `cluster.rs`), and
//!   `job_spec.user` is ignored (the job runs as the runner's user; `/api/run`
//!   reports that user's name).
//! - **sshd is not installed.** dstack's container command installs openssh-server with the
//!   image's package manager when the image has no sshd; we do not (hosts may have no
//!   registry or mirror): without sshd the runner logs why, other jobs run without SSH, and a
//!   dev environment fails at `/api/run` with `executor_error` and
//!   `A dev environment needs an SSH server: the image has no OpenSSH server …`.
//! - **sshd extras**: `--ssh-address` (a `ListenAddress`; dstack listens on all interfaces),
//!   and, outside a container or when not root, `<temp>/ssh` with `StrictModes no` instead of
//!   `/dstack/ssh`. Multi-node `~/.ssh/config` entries and `~/.ssh/dstack_job` are written
//!   only when root in a container, else under `<temp>/ssh` (see `cluster.rs`). The tracker's thresholds can be
//!   shortened with hidden flags for tests.
//! - **`no_connections_secs`** counts from the job's start (`/api/run`); it is 0 before.
//! - **Paths.** A missing `working_dir` is `<temp>/workflow`, not the process cwd, and dstack's
//!   `/workflow` (and paths under it) are re-rooted at [`Config::workflow_dir`] (default
//!   `<temp>/workflow`), so a non-root runner can create them.
//! - **Repos.** Uploaded tars (local and virtual repos) are extracted. Remote repos are cloned
//!   with the host's `git` binary (dstack's runner links go-git), so hosts need git; without
//!   it the job fails with `Failed to set up the repo (git is not installed on this host …)`.
//!   The clone is `git init` + `fetch` (only the branch with `single_branch`) + a checkout of
//!   `repo_hash` (or the branch head) on a local branch tracking `origin/<branch>`, then
//!   `user.name`/`user.email` and `git apply` of the uploaded diff (see `repo.rs`). An OAuth
//!   token reaches git as an `Authorization` header in `GIT_CONFIG_*` variables, not in the
//!   URL: it is never in `.git/config`, the command line or the logs. dstack's home
//!   provisioning of git credentials (`~/.ssh/id_rsa`, `~/.config/gh/hosts.yml`) is not done.
//! - **Setup after `/api/run`.** The repo and the file archives are set up after `/api/run`
//!   has answered, as dstack's runner does, so a long clone never times out the server's
//!   call; a stop during the clone kills git and ends the job `terminated`.
//! - **Output** is read from pipes, not a pty: `commands` run as given, stdout and stderr each
//!   chunk a log event (bash's `-i` then warns once that it has no job control).
//! - **Stop** sends SIGTERM to the job's whole process group (dstack: SIGINT to the shell pid),
//!   then SIGKILL after [`Config::stop_grace`].
//! - **Timestamps** keep dstack's unix-millisecond format but are strictly increasing
//!   (`max(now_ms, last + 1)`) instead of saturating at 999 per second.
//! - The job's process group id is written to `<temp>/job.pid`, so a supervisor (the shim's
//!   process mode) can kill the job even after the runner was killed.

mod api;
mod clock;
mod cluster;
mod job;
mod metrics;
mod repo;
mod ssh;
mod state;
mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use dstack_agent_proto::runner::RunnerState;
pub use ssh::{SshConfig, TrackerConfig};

use crate::state::Shared;

/// How a runner is started.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where uploads, logs and the default working dir live; created if missing.
    pub temp_dir: PathBuf,
    /// The address to bind; `0.0.0.0` means all interfaces.
    pub http_address: String,
    /// 0 picks a free port (see [`run`]'s `on_listening`).
    pub http_port: u16,
    /// Where dstack's `/workflow` is re-rooted; `None`: `<temp>/workflow`.
    pub workflow_dir: Option<PathBuf>,
    /// How long to wait for `/api/run` before giving up.
    pub job_start_timeout: Duration,
    /// How long to wait for the final `/api/pull` after the job ended.
    pub logs_finished_timeout: Duration,
    /// Between SIGTERM and SIGKILL when the job is stopped.
    pub stop_grace: Duration,
    /// The job's SSH server and connection tracker; port 0 (the default here) starts none.
    pub ssh: SshConfig,
}

impl Config {
    pub fn new(temp_dir: PathBuf) -> Config {
        Config {
            temp_dir,
            http_address: "127.0.0.1".to_owned(),
            http_port: dstack_agent_proto::RUNNER_HTTP_PORT,
            workflow_dir: None,
            job_start_timeout: Duration::from_secs(300),
            logs_finished_timeout: Duration::from_secs(300),
            stop_grace: Duration::from_secs(10),
            ssh: SshConfig::default(),
        }
    }

    fn workflow_dir(&self) -> PathBuf {
        self.workflow_dir.clone().unwrap_or_else(|| self.temp_dir.join("workflow"))
    }
}

/// Why the runner stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("cannot create the temp dir {path}: {source}")]
    TempDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("no job was run within {0:?} of the start")]
    JobStartTimeout(Duration),
}

/// Records how the runner process ends in `<temp>/runner.exit`, for a supervisor that did not
/// start it (the shim after a restart).
pub fn write_exit_status(temp_dir: &std::path::Path, code: i32) {
    let _ = std::fs::write(temp_dir.join(dstack_agent_proto::runner_files::EXIT_STATUS), code.to_string());
}

/// Runs the runner until the job's logs were pulled (or a timeout). `on_listening` gets the
/// bound address as soon as the API accepts connections.
pub async fn run(config: Config, on_listening: impl FnOnce(SocketAddr)) -> Result<(), RunnerError> {
    std::fs::create_dir_all(&config.temp_dir)
        .map_err(|source| RunnerError::TempDir { path: config.temp_dir.clone(), source })?;
    let addr = format!("{}:{}", config.http_address, config.http_port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| RunnerError::Bind { addr: addr.clone(), source })?;
    let local = listener.local_addr().map_err(|source| RunnerError::Bind { addr, source })?;
    let shared = Arc::new(Shared::new(config.clone()));
    let sshd = start_sshd(&shared, &config).await;
    let shutdown = Arc::new(tokio::sync::Notify::new());
    let server = {
        let shutdown = shutdown.clone();
        let app = api::app(shared.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.notified().await }).await
        })
    };
    on_listening(local);
    tracing::info!(%local, "dstack-runner listening");
    let outcome = lifecycle(&shared, &config).await;
    if let Some(sshd) = sshd {
        sshd.stop().await;
    }
    shutdown.notify_one();
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(5), server).await {
        return Err(RunnerError::Serve(e));
    }
    outcome
}

/// Starts sshd when a port is configured; a failure is logged and kept, so that a dev
/// environment (which needs SSH) fails with the reason while other jobs run without SSH.
async fn start_sshd(shared: &Shared, config: &Config) -> Option<ssh::Sshd> {
    if config.ssh.port == 0 {
        return None;
    }
    match ssh::start(&config.ssh, &config.temp_dir).await {
        Ok(sshd) => {
            shared.runner_log(&format!("sshd listening on port {}", config.ssh.port));
            *shared.ssh_keys_file.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(sshd.authorized_keys.clone());
            Some(sshd)
        }
        Err(e) => {
            shared.runner_log(&format!("no SSH server: {e}"));
            *shared.ssh_unavailable.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(e.to_string());
            None
        }
    }
}

async fn lifecycle(shared: &Arc<Shared>, config: &Config) -> Result<(), RunnerError> {
    let mut states = shared.subscribe();
    let mut term = signal(nix::sys::signal::Signal::SIGTERM);
    let started = tokio::select! {
        r = states.wait_for(|s| matches!(s, RunnerState::ServeLogs | RunnerState::WaitLogsFinished)) => r.is_ok(),
        () = tokio::time::sleep(config.job_start_timeout) => false,
        () = wait_signal(&mut term) => {
            shared.stop_before_run();
            true
        }
    };
    if !started {
        shared.runner_log(&format!("no job was run within {:?}; exiting", config.job_start_timeout));
        return Err(RunnerError::JobStartTimeout(config.job_start_timeout));
    }
    let signalled = tokio::select! {
        _ = states.wait_for(|s| *s == RunnerState::WaitLogsFinished) => false,
        () = wait_signal(&mut term) => true,
    };
    if signalled {
        shared.stop(job::StopCause::Stop);
        let _ = states.wait_for(|s| *s == RunnerState::WaitLogsFinished).await;
    }
    let deadline = tokio::time::Instant::now() + config.logs_finished_timeout;
    tokio::select! {
        () = shared.pulled.notified() => {}
        () = tokio::time::sleep_until(deadline) => {
            tracing::warn!("logs were not pulled within {:?}; exiting", config.logs_finished_timeout);
        }
        () = wait_signal(&mut term) => return Ok(()),
    }
    // `/logs_ws` clients get to read to the end too.
    while shared.ws_streams.load(std::sync::atomic::Ordering::SeqCst) > 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn signal(sig: nix::sys::signal::Signal) -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(sig as i32)).ok()
}

async fn wait_signal(sig: &mut Option<tokio::signal::unix::Signal>) {
    match sig {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
