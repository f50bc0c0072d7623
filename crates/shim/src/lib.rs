//! `dstack-shim`: the host agent (spec agents.md §1). It serves the shim API on
//! `127.0.0.1:<port>` and runs *tasks*, one `dstack-runner` per job, through a [`Driver`]:
//!
//! - **process mode** ([`process`]): the runner is a child process on the host, in its own
//!   process group, with the temp dir `<home>/runners/<name>-<hash8>` and a free port, reported
//!   as `ports: [{"host": <runner port>, "container": 10999}]`. Used when `image_name` is empty,
//!   Docker is unreachable, or `--no-docker` is given; the local fleet runs this way.
//!   `pulling` and `creating` pass at once; the runner exiting 0 is `done_by_runner`, anything
//!   else `container_exited_with_error` with the last 5 lines of its output.
//! - **docker mode** ([`docker`]): the runner binary is bind-mounted into a container of
//!   `image_name` (pulled unless present locally), host network, its port chosen by the shim.
//!
//! | Route | Answer |
//! |---|---|
//! | `GET /api/healthcheck` | `{"service":"dstack-shim","version":"0.22.5"}` |
//! | `GET /api/instance/health` | `{"dcgm":null}` |
//! | `GET /api/instance/info` | the first GPU's vendor and driver, else `{}` |
//! | `GET /api/components` | the runner's and the shim's versions |
//! | `GET /api/tasks`, `GET /api/tasks/{id}` | the task list, one task's info (404) |
//! | `POST /api/tasks` | submit and start; 400 empty id or name, 409 duplicate id |
//! | `POST /api/tasks/{id}/terminate` | stop (SIGTERM, SIGKILL after `timeout` s) and mark terminated |
//! | `POST /api/tasks/{id}/remove` | delete a terminated task and its dir; 409 otherwise |
//! | `POST /api/shutdown` | stop serving; tasks keep running |
//!
//! Tasks are persisted to `<home>/tasks.json` on each change. A restarted shim reloads them:
//! a process task whose runner is still alive stays `running` and is watched until it exits
//! (its exit code is read from the runner's `runner.exit` file); runners are in their own
//! process groups, so they survive the shim (and the server) being killed.
//!
//! # Differences from dstack's Go shim
//!
//! - Process mode is new. No GPU locking, no volumes, instance mounts or host SSH keys yet,
//!   no DCGM, no component install (`/api/components/install` answers 400).
//! - GPUs ([`gpu`]): `nvidia-smi` as dstack runs it; AMD through an `amd-smi` on the host's
//!   `PATH` (dstack runs it from the `dstackai/amd-smi` image). Intel Gaudi and Tenstorrent are
//!   not detected. `--service` writes `host_info.json` as dstack's does (disk = space available
//!   under Docker's root dir, or under the shim home without Docker).
//! - `POST /api/tasks` answers the tagged TaskInfoResponse, not Go's capitalised struct.
//! - The shim binds 127.0.0.1 only and can pick a free port (`--shim-http-port 0`).
//! - Unlike dstack, restored running tasks get a waiter, so they still reach `terminated`.

mod api;
pub mod docker;
pub mod gpu;
mod host;
pub mod process;
mod pull;
mod tasks;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dstack_agent_proto::shim::TaskConfig;
use sha2::Digest;

use crate::tasks::{Handle, Store, Task};

/// How the shim is started.
#[derive(Debug, Clone)]
pub struct Config {
    /// Holds `tasks.json` and `runners/`.
    pub home: PathBuf,
    /// 0 picks a free port (see [`run`]'s `on_listening`).
    pub http_port: u16,
    /// The `dstack-runner` binary to start (process mode) or mount (docker mode).
    pub runner_binary: PathBuf,
    /// Whether tasks with an `image_name` may use Docker.
    pub docker: bool,
    /// Service mode (`DSTACK_SERVICE_MODE`, set by the SSH-fleet deploy): write
    /// `<home>/host_info.json` at start unless it exists.
    pub service: bool,
}

/// Why the shim stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("cannot create the shim home {path}: {source}")]
    Home {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// One way of running tasks (Nomad's task driver, narrowed to what the shim needs).
pub(crate) trait Driver {
    /// Runs a submitted task through its states to `terminated`, updating the store.
    async fn run(&self, shim: Arc<Shim>, config: TaskConfig);
    /// Stops the task's processes: a graceful signal, then a kill after `timeout`.
    async fn terminate(&self, task: &Task, timeout: Duration);
    /// Deletes what the task left behind (container, runner dir).
    async fn remove(&self, task: &Task) -> Result<(), String>;
    /// Picks up a task that was running before the shim restarted.
    async fn restore(&self, shim: Arc<Shim>, task: Task);
}

pub(crate) struct Shim {
    pub(crate) config: Config,
    pub(crate) store: Store,
    pub(crate) process: process::ProcessDriver,
    pub(crate) docker: Option<docker::DockerDriver>,
    /// Detected once at start (§1.11).
    pub(crate) gpus: Vec<gpu::Gpu>,
    pub(crate) shutdown: tokio::sync::Notify,
}

impl Shim {
    /// `<home>/runners/<name>-<hex(sha256("<name>/<id>"))[:8]>`, as dstack names containers.
    pub(crate) fn container_name(name: &str, id: &str) -> String {
        let hash = hex::encode(sha2::Sha256::digest(format!("{name}/{id}")));
        format!("{name}-{}", &hash[..8])
    }

    pub(crate) fn runner_dir(&self, container_name: &str) -> PathBuf {
        self.config.home.join("runners").join(container_name)
    }

    pub(crate) async fn terminate(&self, task: &Task, timeout: Duration) {
        match (&task.handle, &self.docker) {
            (Handle::Docker { .. }, Some(docker)) => docker.terminate(task, timeout).await,
            _ => self.process.terminate(task, timeout).await,
        }
    }

    pub(crate) async fn remove(&self, task: &Task) -> Result<(), String> {
        if let (Handle::Docker { .. }, Some(docker)) = (&task.handle, &self.docker) {
            docker.remove(task).await?;
        }
        self.process.remove(task).await
    }
}

/// Serves the shim until `/api/shutdown` or SIGINT/SIGTERM. `on_listening` gets the bound
/// address as soon as the API accepts connections.
pub async fn run(config: Config, on_listening: impl FnOnce(SocketAddr)) -> Result<(), ShimError> {
    std::fs::create_dir_all(config.home.join("runners"))
        .map_err(|source| ShimError::Home { path: config.home.clone(), source })?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.http_port))
        .await
        .map_err(|source| ShimError::Bind { port: config.http_port, source })?;
    let local = listener.local_addr().map_err(|source| ShimError::Bind { port: config.http_port, source })?;
    let docker = if config.docker { docker::DockerDriver::connect(&config).await } else { None };
    let gpus = host::detect_gpus().await;
    if config.service {
        let disk_path = match &docker {
            Some(d) => d.root_dir().await.filter(|p| p.exists()).unwrap_or_else(|| config.home.clone()),
            None => config.home.clone(),
        };
        let info = host::host_info(&gpus, &disk_path);
        if let Err(e) = host::write_host_info(&config.home, &info) {
            tracing::error!(%e, "cannot write host_info.json");
        }
    }
    let shim = Arc::new(Shim {
        store: Store::load(&config.home),
        process: process::ProcessDriver { runner_binary: config.runner_binary.clone() },
        docker,
        gpus,
        shutdown: tokio::sync::Notify::new(),
        config,
    });
    restore(&shim);
    on_listening(local);
    tracing::info!(%local, "dstack-shim listening");
    let app = api::app(shim.clone());
    let stop = {
        let shim = shim.clone();
        async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            let term = async move {
                match term.as_mut() {
                    Some(t) => drop(t.recv().await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shim.shutdown.notified() => {}
                _ = tokio::signal::ctrl_c() => {}
                () = term => {}
            }
        }
    };
    axum::serve(listener, app).with_graceful_shutdown(stop).await.map_err(ShimError::Serve)
}

/// Tasks that were not terminated when the shim last stopped get a watcher again.
fn restore(shim: &Arc<Shim>) {
    use dstack_agent_proto::shim::TaskStatus;
    for task in shim.store.all().into_iter().filter(|t| t.status != TaskStatus::Terminated) {
        tracing::info!(id = %task.id, "restoring a task");
        let shim2 = shim.clone();
        match (&task.handle, &shim.docker) {
            (Handle::Docker { .. }, Some(_)) => {
                tokio::spawn(async move {
                    if let Some(docker) = &shim2.docker {
                        docker.restore(shim2.clone(), task).await;
                    }
                });
            }
            _ => {
                tokio::spawn(async move { shim2.process.restore(shim2.clone(), task).await });
            }
        }
    }
}
