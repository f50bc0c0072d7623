//! `dstack-shim`: the host agent (spec agents.md §1). It serves the shim API on
//! `127.0.0.1:<port>` and runs *tasks*, one `dstack-runner` per job, through a [`Driver`]:
//!
//! - **process mode** ([`process`]): the runner is a child process on the host, in its own
//!   process group, with the temp dir `<home>/runners/<name>-<hash8>` and a free port, reported
//!   as `ports: [{"host": <runner port>, "container": 10999}]`. Used when `image_name` is empty,
//!   Docker is unreachable, or `--no-docker` is given; the local fleet runs this way.
//!   It takes its GPUs as a container does and the runner gets `CUDA_VISIBLE_DEVICES` /
//!   `ROCR_VISIBLE_DEVICES` naming only them (no CPU or memory limits on host processes).
//!   `pulling` and `creating` pass at once; the runner exiting 0 is `done_by_runner`, anything
//!   else `container_exited_with_error` with the last 5 lines of its output.
//! - **docker mode** ([`docker`], [`container`]): a container of `image_name` (pulled unless
//!   present locally) whose entrypoint is the bind-mounted runner; container user, pass-env,
//!   shm size (exec `/dev/shm`), CPU and memory limits, privileged, volume and instance
//!   mounts, `host` or `bridge` networking and GPUs ([`devices`]) as dstack's §1.7. A container
//!   that does not start is removed; one that ran stays until `/remove`.
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
//! | `POST /api/tasks/{id}/remove` | delete a terminated task, its container and dir; 409 otherwise |
//! | `POST /api/shutdown` | stop serving; tasks keep running (unless `--remove-tasks-on-shutdown`) |
//!
//! Tasks are persisted to `<home>/tasks.json` on each change. A restarted shim first reads
//! back its labelled containers (§1.9; `tasks.json` may be missing or stale): a running one is
//! a running task again, with its ports, runner dir and GPUs (re-locked), watched until it
//! exits; a stopped one is terminated. Then a process task whose runner is still alive stays
//! `running` and is watched (its exit code is read from the runner's `runner.exit` file);
//! runners are in their own process groups, so they survive the shim (and the server) being
//! killed.
//!
//! GPUs: the vendor comes from device files (`/dev/nvidiactl`, `/dev/kfd`), the IDs from the
//! detected GPUs (NVIDIA UUIDs, AMD render nodes). A task takes them all-or-nothing before it
//! pulls (`gpu`: -1 all free, 0 none, N exactly N, else `no capacity: N GPUs requested, M
//! available`) and gives them back whenever it becomes `terminated`, on every path.
//!
//! # Differences from dstack's Go shim
//!
//! - Process mode is new (it ignores `host_ssh_keys`: a host process has no sshd to jump
//!   to). No DCGM, no component install (`/api/components/install` answers 400), no Intel
//!   Gaudi or Tenstorrent devices, no `--pjrt-device`.
//! - `host_ssh_keys` (docker mode): added to `~<host_ssh_user>/.ssh/authorized_keys` while
//!   the task is not terminated, as in dstack, but each line carries a marker naming the task
//!   and only those lines are removed (`host_keys.rs`); dstack removes every line with the
//!   key's fingerprint, the user's own copy included.
//! - The container's entrypoint is the runner itself, not dstack's `sh -c` that installs
//!   `openssh-server` first: images need no shell or package manager. The runner gets
//!   dstack's flags (`--ssh-port`, one `--ssh-authorized-key` per `container_ssh_keys` entry)
//!   plus `--workflow-dir /workflow`.
//! - Host network mode: the runner listens on 127.0.0.1 on HTTP and SSH ports the shim picks
//!   (dstack's are fixed 10999/10022, so one container per host), reported as
//!   `ports: [{"host":P,"container":10999},{"host":S,"container":10022}]` (dstack reports
//!   `[]`) and kept in container labels for recovery. A shim in service mode (installed on an
//!   SSH-fleet host) takes 10999 and 10022 when no other task holds them and they are free,
//!   since the dstack CLI's attach forwards `localhost:10999` through the job's sshd; others
//!   get free ports (two tasks never get the same: ports are claimed in the task table). Bridge mode publishes 10999 and 10022 on
//!   ephemeral 127.0.0.1 ports, as dstack.
//! - Volumes: dstack attaches, formats and mounts cloud disks; this shim only binds a volume
//!   already mounted at `/mnt/disks/dstack-volumes/<name>` and otherwise ends the task with
//!   `executor_error` saying so.
//! - A container that fails to start is removed at once (dstack keeps it until `/remove`).
//! - Free GPUs are taken in detection order (dstack's choice is random). GPUs go back when
//!   the task is marked `terminated` (for `/terminate`, just before `docker stop`), not when
//!   the container has exited.
//! - Recovery is per shim home: containers carry `ai.dstack.rs.shim-home`, so shims sharing a
//!   Docker engine never adopt each other's containers. Recovered stopped containers get the
//!   reason their exit code gives (`done_by_runner`, `container_exited_with_error`), not an
//!   empty one; recovered running ones get a waiter, so they still reach `terminated`.
//! - GPU detection ([`gpu`]): `nvidia-smi` as dstack runs it; AMD through an `amd-smi` on the
//!   host's `PATH` (dstack runs it from the `dstackai/amd-smi` image). `--service` writes
//!   `host_info.json` as dstack's does (disk = space available under Docker's root dir, or
//!   under the shim home without Docker).
//! - `POST /api/tasks` answers the tagged TaskInfoResponse, not Go's capitalised struct.
//! - The shim binds 127.0.0.1 only and can pick a free port (`--shim-http-port 0`).
//! - `--device-root` (hidden) looks `/dev`, `/sys` and `/mnt/disks` up under another
//!   directory; the tests fake NVIDIA and AMD hosts with it.

mod api;
pub mod container;
pub mod devices;
pub mod docker;
pub mod gpu;
mod host;
mod host_keys;
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
    /// The runner's `--log-level` in containers.
    pub runner_log_level: String,
    /// Environment variables passed from the shim's environment into every container.
    pub pass_env: Vec<String>,
    /// Every container privileged, whatever the task says.
    pub privileged: bool,
    /// Where `/dev`, `/sys` and `/mnt/disks` are looked up: `/`, or a fake tree in tests.
    pub device_root: PathBuf,
    /// On shutdown, stop and remove every task (containers and runner dirs), not only stop
    /// serving.
    pub remove_tasks_on_shutdown: bool,
    /// The container this shim runs in, when that container belongs to the engine it drives
    /// (see [`docker::Nested`]).
    pub docker_self: Option<String>,
}

/// dstack's `--pass-env` default: the proxy variables.
pub const DEFAULT_PASS_ENV: [&str; 6] =
    ["http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"];

impl Config {
    /// dstack's defaults for everything but the paths.
    pub fn new(home: PathBuf, runner_binary: PathBuf) -> Config {
        Config {
            home,
            http_port: dstack_agent_proto::SHIM_HTTP_PORT,
            runner_binary,
            docker: true,
            service: false,
            runner_log_level: "info".to_owned(),
            pass_env: DEFAULT_PASS_ENV.map(str::to_owned).to_vec(),
            privileged: false,
            device_root: PathBuf::from("/"),
            remove_tasks_on_shutdown: false,
            docker_self: None,
        }
    }
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
    let gpus = host::detect_gpus(&config.device_root).await;
    let vendor = devices::detect_vendor(&config.device_root);
    let gpu_ids = devices::lockable_ids(&config.device_root, vendor, &gpus);
    let gpu_lock = devices::GpuLock::new(gpu_ids.clone());
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
        store: Store::load(&config.home, gpu_lock),
        process: process::ProcessDriver { runner_binary: config.runner_binary.clone(), vendor, gpu_ids },
        docker,
        gpus,
        shutdown: tokio::sync::Notify::new(),
        config,
    });
    restore(&shim).await;
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
    let served = axum::serve(listener, app).with_graceful_shutdown(stop).await.map_err(ShimError::Serve);
    if shim.config.remove_tasks_on_shutdown {
        remove_all(&shim).await;
    }
    served
}

/// Stops and removes every task: containers, runner dirs, GPU locks.
async fn remove_all(shim: &Shim) {
    for task in shim.store.all() {
        tracing::info!(id = %task.id, "removing a task on shutdown");
        let task =
            shim.store.terminate(&task.id, "terminated_by_server", "the shim shut down").unwrap_or(task);
        shim.terminate(&task, Duration::ZERO).await;
        match shim.remove(&task).await {
            Ok(()) => shim.store.remove(&task.id),
            Err(e) => tracing::error!(id = %task.id, %e, "cannot remove a task on shutdown"),
        }
    }
}

/// Picks up what the shim was doing before it restarted (§1.9). Docker tasks come from the
/// labelled containers, so `tasks.json` may be missing or stale: a running container is a
/// running task (its ports and GPUs taken again, watched until it exits), a stopped one a
/// terminated task. Then every other unfinished task of `tasks.json` gets a watcher (process
/// mode) or ends (a container that is gone, a task that had not started).
async fn restore(shim: &Arc<Shim>) {
    use dstack_agent_proto::shim::TaskStatus;
    let mut seen = std::collections::HashSet::new();
    if let Some(docker) = &shim.docker {
        for r in docker.recover().await {
            seen.insert(r.task_id.clone());
            let stored = shim.store.get(&r.task_id);
            if stored.as_ref().is_some_and(|t| t.status == TaskStatus::Terminated) {
                // Terminated before the shim went down, maybe before its container stopped.
                if r.running
                    && let Some(task) = &stored
                {
                    let task = Task {
                        handle: Handle::Docker { container_id: r.container_id.clone() },
                        ..task.clone()
                    };
                    docker.terminate(&task, Duration::ZERO).await;
                }
                continue;
            }
            tracing::info!(id = %r.task_id, container = %r.container_name, running = r.running, "recovering a task from its container");
            let runner_dir = r.runner_dir.clone().unwrap_or_else(|| shim.runner_dir(&r.container_name));
            let host_keys = stored.as_ref().and_then(|t| t.host_keys.clone());
            let task = Task {
                id: r.task_id.clone(),
                status: TaskStatus::Running,
                termination_reason: String::new(),
                termination_message: String::new(),
                ports: Some(r.ports.clone()),
                image_pull_progress: stored.and_then(|t| t.image_pull_progress),
                container_name: r.container_name.clone(),
                runner_dir,
                handle: Handle::Docker { container_id: r.container_id.clone() },
                gpu_ids: r.gpu_ids.clone(),
                host_keys,
            };
            shim.store.put(task.clone());
            if r.running {
                let locked = shim.store.relock_gpus(&r.task_id, &r.gpu_ids);
                shim.store.update(&r.task_id, |t| t.gpu_ids = locked);
                let shim2 = shim.clone();
                tokio::spawn(async move {
                    if let Some(docker) = &shim2.docker {
                        docker.restore(shim2.clone(), task).await;
                    }
                });
            } else {
                docker.finish_recovered(shim, &r).await;
            }
        }
    }
    for task in shim.store.all().into_iter().filter(|t| t.status != TaskStatus::Terminated) {
        if seen.contains(&task.id) {
            continue;
        }
        tracing::info!(id = %task.id, "restoring a task");
        match &task.handle {
            Handle::Docker { container_id } if shim.docker.is_some() => {
                let message =
                    format!("the container {container_id} is gone (removed while the shim was down)");
                shim.store.terminate(&task.id, dstack_agent_proto::shim::reason::EXECUTOR_ERROR, &message);
            }
            _ => {
                // A live runner keeps the GPUs it had.
                let locked = shim.store.relock_gpus(&task.id, &task.gpu_ids);
                shim.store.update(&task.id, |t| t.gpu_ids = locked);
                let shim2 = shim.clone();
                tokio::spawn(async move { shim2.process.restore(shim2.clone(), task).await });
            }
        }
    }
}
