//! Docker mode (spec agents.md §1.6–1.9): the task is a container of `image_name` whose
//! entrypoint is the runner, bind-mounted from the host (see [`crate::container`] for what the
//! container is made of). The image is pulled (with `registry_auth` when given, progress in
//! the task's `image_pull_progress`) unless present with a tag other than `:latest`; unlike
//! dstack, `host:5000/img` gets its `:latest` too (dstack would ask the engine for every tag).
//!
//! A task takes its GPUs before anything else and gives them back when it becomes
//! `terminated` (the lock lives in the task table). A container that fails to start is
//! removed at once; one that ran stays (with its logs) until `/remove`, as in dstack.

use std::collections::HashSet;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, StartContainerOptions, StopContainerOptions, WaitContainerOptions,
};
use dstack_agent_proto::shim::{PortMapping, TaskConfig, TaskStatus, reason};
use futures_util::StreamExt;

use crate::container::{self, Bind, ContainerSpec, Gpus, Network, Recovered, RunnerCommand};
use crate::devices;
use crate::gpu::Vendor;
use crate::pull;
use crate::tasks::{Handle, Task};
use crate::{Config, Driver, Shim};

/// Where dstack mounts a task's network volumes on the host (under the device root).
pub const VOLUMES_DIR: &str = "/mnt/disks/dstack-volumes";

/// A shim running in a container of the engine it drives (`--docker-self`), e.g. on a test
/// host that is itself a container sharing the machine's engine. The engine resolves bind
/// mounts on its own host and `host` networking means its own host's network, so: task
/// containers join this container's network (`container:<self>`), and every path they mount
/// must lie on one of this container's mounts (volumes or binds), translated to that mount's
/// source. A path on no mount is an error that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nested {
    pub container: String,
    /// (destination in this container, source on the engine's host), longest destination
    /// first.
    mounts: Vec<(PathBuf, PathBuf)>,
}

impl Nested {
    pub fn new(container: String, mut mounts: Vec<(PathBuf, PathBuf)>) -> Nested {
        mounts.sort_by_key(|(dst, _)| std::cmp::Reverse(dst.components().count()));
        Nested { container, mounts }
    }

    /// Where the engine finds `path` of this container.
    pub fn to_engine(&self, path: &Path) -> Result<PathBuf, String> {
        self.mounts
            .iter()
            .find_map(|(dst, src)| path.strip_prefix(dst).ok().map(|rest| src.join(rest)))
            .ok_or_else(|| {
                format!(
                    "{} is on no volume of the shim's container {}; the engine could not mount it \
                     (mount a volume there)",
                    path.display(),
                    self.container
                )
            })
    }

    /// The inverse of [`Nested::to_engine`], for paths read back from the engine.
    pub fn from_engine(&self, path: &Path) -> Option<PathBuf> {
        self.mounts.iter().find_map(|(dst, src)| path.strip_prefix(src).ok().map(|rest| dst.join(rest)))
    }
}

pub struct DockerDriver {
    docker: Docker,
    runner_binary: PathBuf,
    runner_log_level: String,
    /// `K=V` of the pass-env variables set in the shim's environment at start.
    env: Vec<String>,
    /// Every container privileged (`--privileged`).
    privileged: bool,
    device_root: PathBuf,
    vendor: Option<Vendor>,
    /// The shim's home, labelled on its containers (as the engine sees it when nested, so
    /// that shims in different containers of one engine never share a label).
    home: String,
    nested: Option<Nested>,
    /// Try dstack's fixed runner ports first on the host network (a shim installed on a host
    /// as its service, see [`host_ports`]).
    fixed_ports: bool,
}

/// The container named by `--docker-self`: `auto` is the one this shim runs in, by its host
/// name (Docker sets it to the container's short ID unless `--hostname` is given), so one fleet
/// `env:` serves every host of a fleet of containers.
fn self_container(name: &str) -> String {
    if name != "auto" {
        return name.to_owned();
    }
    std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_default()
}

impl DockerDriver {
    /// A driver if a Docker engine answers, else `None` (process mode only).
    pub(crate) async fn connect(config: &Config) -> Option<DockerDriver> {
        let docker = Docker::connect_with_local_defaults().ok()?;
        if let Err(e) = docker.ping().await {
            tracing::info!(%e, "no Docker engine; tasks run as processes");
            return None;
        }
        let nested = match config.docker_self.as_deref().map(self_container) {
            None => None,
            Some(name) => match docker.inspect_container(&name, None::<InspectContainerOptions>).await {
                Ok(inspect) => {
                    // `auto` found the container by its ID; its name is what tasks refer to.
                    let name = inspect
                        .name
                        .as_deref()
                        .map_or(name.clone(), |n| n.trim_start_matches('/').to_owned());
                    let mounts = inspect
                        .mounts
                        .into_iter()
                        .flatten()
                        .filter_map(|m| Some((PathBuf::from(m.destination?), PathBuf::from(m.source?))))
                        .collect();
                    Some(Nested::new(name, mounts))
                }
                Err(e) => {
                    tracing::error!(%e, container = %name, "--docker-self: no such container; tasks run as processes");
                    return None;
                }
            },
        };
        let home = match &nested {
            Some(n) => n.to_engine(&config.home).unwrap_or_else(|_| config.home.clone()),
            None => config.home.clone(),
        };
        Some(DockerDriver {
            docker,
            runner_binary: config.runner_binary.clone(),
            runner_log_level: config.runner_log_level.clone(),
            env: config
                .pass_env
                .iter()
                .filter_map(|name| Some(format!("{name}={}", std::env::var(name).ok()?)))
                .collect(),
            privileged: config.privileged,
            device_root: config.device_root.clone(),
            vendor: devices::detect_vendor(&config.device_root),
            home: home.display().to_string(),
            nested,
            fixed_ports: config.service,
        })
    }

    /// `DockerRootDir` of `docker info`.
    pub(crate) async fn root_dir(&self) -> Option<std::path::PathBuf> {
        self.docker.info().await.ok()?.docker_root_dir.map(std::path::PathBuf::from)
    }

    async fn pull(&self, shim: &Shim, id: &str, config: &TaskConfig) -> Result<(), String> {
        let image = config.image_name.as_str();
        if !pull::repull_when_present(image) && self.docker.inspect_image(image).await.is_ok() {
            return Ok(());
        }
        let reference = pull::pull_reference(image);
        let options = CreateImageOptions { from_image: Some(reference.clone()), ..Default::default() };
        let credentials = (!config.registry_username.is_empty() || !config.registry_password.is_empty())
            .then(|| DockerCredentials {
                username: Some(config.registry_username.clone()),
                password: Some(config.registry_password.clone()),
                ..Default::default()
            });
        let mut stream = self.docker.create_image(Some(options), None, credentials);
        let mut tracker = pull::PullTracker::default();
        let mut errors = Vec::new();
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                Err(e) => {
                    errors.push(e.to_string());
                    break;
                }
            };
            if let Some(error) = info.error_detail.and_then(|d| d.message).or(info.error) {
                errors.push(error);
                continue;
            }
            let detail = info.progress_detail.unwrap_or_default();
            tracker.observe(pull::PullEvent {
                layer: info.id.as_deref(),
                status: info.status.as_deref().unwrap_or(""),
                current: detail.current,
                total: detail.total,
            });
            let progress = tracker.progress();
            shim.store.update(id, |t| t.image_pull_progress = Some(progress));
        }
        if tracker.finished() && errors.is_empty() {
            return Ok(());
        }
        let p = tracker.progress();
        Err(format!(
            "failed pulling {reference}: downloaded {}/{} bytes, errors: [{}]",
            p.downloaded_bytes,
            p.total_bytes,
            errors.join("; ")
        ))
    }

    async fn wait(&self, shim: &Shim, id: &str, container: &str) {
        let mut stream = self.docker.wait_container(container, None::<WaitContainerOptions>);
        let code = match stream.next().await {
            Some(Ok(r)) => Some(r.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Some(code),
            _ => None,
        };
        if code == Some(0) {
            shim.store.terminate(id, reason::DONE_BY_RUNNER, "");
        } else {
            let message = self.last_lines(container, 5).await;
            shim.store.terminate(id, reason::CONTAINER_EXITED_WITH_ERROR, &message);
        }
    }

    async fn last_lines(&self, container: &str, n: usize) -> String {
        let options = LogsOptions { stdout: true, stderr: true, tail: n.to_string(), ..Default::default() };
        let mut logs = self.docker.logs(container, Some(options));
        let mut text = String::new();
        while let Some(Ok(chunk)) = logs.next().await {
            text.push_str(&chunk.to_string());
        }
        text.trim_end().to_owned()
    }

    /// The mounts of a task (§1.6 steps 4–5, §1.7): the runner dir and binary, network volumes
    /// that are mounted on the host, instance paths (created when missing).
    fn binds(&self, task: &Task, config: &TaskConfig) -> Result<Vec<Bind>, (&'static str, String)> {
        std::fs::create_dir_all(&task.runner_dir).map_err(|e| {
            (
                reason::EXECUTOR_ERROR,
                format!("cannot create the runner dir {}: {e}", task.runner_dir.display()),
            )
        })?;
        let mut binds = vec![
            Bind {
                source: task.runner_dir.clone(),
                target: container::RUNNER_TEMP_DIR.to_owned(),
                read_only: false,
            },
            Bind {
                source: self.runner_binary.clone(),
                target: container::RUNNER_PATH.to_owned(),
                read_only: true,
            },
        ];
        let volumes = volume_binds(&self.device_root, config)
            .map_err(|e| (reason::EXECUTOR_ERROR, format!("prepareVolumes error: {e}")))?;
        binds.extend(volumes);
        for mount in &config.instance_mounts {
            let source = prepare_instance_path(&mount.instance_path)
                .map_err(|e| (reason::EXECUTOR_ERROR, format!("prepareInstanceMountPoints error: {e}")))?;
            binds.push(Bind { source, target: mount.path.clone(), read_only: false });
        }
        Ok(binds)
    }

    /// The binds as the engine must see them (translated when nested).
    fn engine_binds(&self, binds: Vec<Bind>) -> Result<Vec<Bind>, (&'static str, String)> {
        let Some(nested) = &self.nested else { return Ok(binds) };
        binds
            .into_iter()
            .map(|b| {
                let source = nested.to_engine(&b.source).map_err(|e| (reason::EXECUTOR_ERROR, e))?;
                Ok(Bind { source, ..b })
            })
            .collect()
    }

    async fn create(&self, name: &str, spec: &ContainerSpec) -> Result<String, String> {
        let options = CreateContainerOptions { name: Some(name.to_owned()), ..Default::default() };
        let created = self
            .docker
            .create_container(Some(options), container::create_body(spec))
            .await
            .map_err(|e| e.to_string())?;
        Ok(created.id)
    }

    async fn start(&self, container: &str) -> Result<(), String> {
        self.docker.start_container(container, None::<StartContainerOptions>).await.map_err(|e| e.to_string())
    }

    /// `docker rm -f -v`; a container that is already gone is fine.
    async fn remove_container(&self, container: &str) -> Result<(), String> {
        let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
        match self.docker.remove_container(container, Some(options)).await {
            Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                Ok(())
            }
            Err(e) => Err(format!("cannot remove container {container}: {e}")),
        }
    }

    /// Creates and starts the container; a container that does not start is removed. On
    /// an NVIDIA host without `/dev/nvidia-modeset` the start is retried without the
    /// `display` capability (§1.6 step 8).
    async fn create_and_start(
        &self,
        shim: &Shim,
        id: &str,
        name: &str,
        spec: &mut ContainerSpec,
    ) -> Result<String, (&'static str, String)> {
        let mut retried = false;
        loop {
            let container = self
                .create(name, spec)
                .await
                .map_err(|e| (reason::CREATING_CONTAINER_ERROR, format!("createContainer error: {e}")))?;
            shim.store.update(id, |t| t.handle = Handle::Docker { container_id: container.clone() });
            let Err(e) = self.start(&container).await else { return Ok(container) };
            if let Err(e) = self.remove_container(&container).await {
                tracing::error!(%e, id, "cannot remove a container that did not start");
            }
            match &mut spec.gpus {
                Gpus::Nvidia { display, .. } if *display && !retried && e.contains("/dev/nvidia-modeset") => {
                    tracing::info!(
                        id,
                        "no /dev/nvidia-modeset: starting again without the display capability"
                    );
                    *display = false;
                    retried = true;
                }
                _ => return Err((reason::CONTAINER_EXITED_WITH_ERROR, format!("startContainer error: {e}"))),
            }
        }
    }

    /// The runner's host ports once the container runs.
    async fn ports(&self, container: &str, network: Network) -> Vec<PortMapping> {
        match network {
            Network::Host { http_port, ssh_port } => vec![
                PortMapping { host: http_port, container: dstack_agent_proto::RUNNER_HTTP_PORT },
                PortMapping { host: ssh_port, container: dstack_agent_proto::RUNNER_SSH_PORT },
            ],
            Network::Bridge => {
                match self.docker.inspect_container(container, None::<InspectContainerOptions>).await {
                    Ok(inspect) => container::published_ports(&inspect),
                    Err(e) => {
                        tracing::warn!(%e, container, "cannot inspect the container for its ports");
                        Vec::new()
                    }
                }
            }
        }
    }

    /// Every container labelled as a shim task, read back (§1.9). An engine that does not
    /// answer gives none (logged).
    pub(crate) async fn recover(&self) -> Vec<Recovered> {
        let filters = std::collections::HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{}=true", container::LABEL_IS_TASK),
                format!("{}={}", container::LABEL_SHIM_HOME, self.home),
            ],
        )]);
        let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        let list = match self.docker.list_containers(Some(options)).await {
            Ok(list) => list,
            Err(e) => {
                tracing::error!(%e, "cannot list task containers; none recovered");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for summary in list {
            let Some(id) = summary.id else { continue };
            match self.docker.inspect_container(&id, None::<InspectContainerOptions>).await {
                Ok(inspect) => out.extend(container::recover(&inspect, &self.home).map(|mut r| {
                    if let Some(nested) = &self.nested {
                        r.runner_dir = r.runner_dir.and_then(|d| nested.from_engine(&d));
                    }
                    r
                })),
                Err(e) => tracing::warn!(%e, container = %id, "cannot inspect a task container"),
            }
        }
        out
    }

    /// A recovered container that is not running: the task ends as if the shim had seen it
    /// exit.
    pub(crate) async fn finish_recovered(&self, shim: &Shim, r: &Recovered) {
        match (r.status.as_str(), r.exit_code) {
            ("exited", Some(0)) => drop(shim.store.terminate(&r.task_id, reason::DONE_BY_RUNNER, "")),
            ("exited" | "dead", _) => {
                let message = self.last_lines(&r.container_id, 5).await;
                shim.store.terminate(&r.task_id, reason::CONTAINER_EXITED_WITH_ERROR, &message);
            }
            _ => {
                shim.store.terminate(
                    &r.task_id,
                    reason::EXECUTOR_ERROR,
                    &format!("the shim restarted before the container started (state {:?})", r.status),
                );
            }
        }
    }
}

/// A task's network volumes (§1.6 step 4). dstack attaches, formats and mounts cloud disks
/// at `/mnt/disks/dstack-volumes/<name>`; this shim only binds volumes already mounted there.
fn volume_binds(root: &Path, config: &TaskConfig) -> Result<Vec<Bind>, String> {
    let mut names: Vec<&str> = config.volume_mounts.iter().map(|m| m.name.as_str()).collect();
    names.extend(config.volumes.iter().map(|v| v.name.as_str()));
    let mut seen = HashSet::new();
    for name in names.into_iter().filter(|n| seen.insert(*n)) {
        if name.is_empty() || name.contains('/') || name == ".." {
            return Err(format!("bad volume name {name:?}"));
        }
        let dir = devices::under(root, &format!("{VOLUMES_DIR}/{name}"));
        if !dir.is_dir() {
            return Err(format!(
                "volume {name} is not mounted at {}: this shim does not attach cloud disks; \
                 mount the volume there on the host, or remove it from the run's volumes",
                dir.display()
            ));
        }
    }
    Ok(config
        .volume_mounts
        .iter()
        .map(|m| Bind {
            source: devices::under(root, &format!("{VOLUMES_DIR}/{}", m.name)),
            target: m.path.clone(),
            read_only: false,
        })
        .collect())
}

/// An instance mount's host path, created if missing (parents 0755, the dir itself 0777, as
/// dstack's shim); an existing path is left as it is.
fn prepare_instance_path(path: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(path);
    if !path.is_absolute() {
        return Err(format!("instance_path must be absolute: {}", path.display()));
    }
    if path.exists() {
        return Ok(path);
    }
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    std::fs::create_dir(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
        .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
    Ok(path)
}

/// The runner's HTTP and SSH ports on the host network. With `fixed_first`, dstack's own
/// 10999 and 10022 when no other task of this shim holds them (`taken`) and nothing else
/// listens there, since clients that come through the host's sshd (the dstack CLI's attach)
/// expect them; otherwise, or when they are busy, two free ports.
fn host_ports(fixed_first: bool, taken: &HashSet<u16>) -> Result<(u16, u16), String> {
    let fixed = [dstack_agent_proto::RUNNER_HTTP_PORT, dstack_agent_proto::RUNNER_SSH_PORT];
    if fixed_first && fixed.iter().all(|p| !taken.contains(p)) {
        let free = fixed.map(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free.iter().all(|f| *f) {
            return Ok((fixed[0], fixed[1]));
        }
    }
    // Both listeners are open at once, so the two ports differ.
    let a = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let b = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = |l: &std::net::TcpListener| l.local_addr().map(|a| a.port()).map_err(|e| e.to_string());
    Ok((port(&a)?, port(&b)?))
}

impl Driver for DockerDriver {
    async fn run(&self, shim: Arc<Shim>, config: TaskConfig) {
        let id = config.id.clone();
        let Some(task) = shim.store.get(&id) else { return };
        let fail = |(reason, message): (&str, String)| {
            shim.store.terminate(&id, reason, &message);
        };
        if !shim.store.advance(&id, TaskStatus::Preparing) {
            return;
        }
        let gpu_ids = match shim.store.acquire_gpus(&id, config.gpu) {
            Ok(ids) => ids,
            Err(e) => return fail((reason::EXECUTOR_ERROR, e)),
        };
        if !config.host_ssh_user.is_empty() && !config.host_ssh_keys.is_empty() {
            let user = &config.host_ssh_user;
            let added = crate::host_keys::authorized_keys_path(user)
                .and_then(|path| shim.store.add_host_keys(&id, path, &config.host_ssh_keys));
            if let Err(e) = added {
                let message = format!("cannot add the run's SSH keys to the authorized keys of {user}: {e}");
                return fail((reason::EXECUTOR_ERROR, message));
            }
        }
        let binds = match self.binds(&task, &config).and_then(|b| self.engine_binds(b)) {
            Ok(binds) => binds,
            Err(e) => return fail(e),
        };
        if !shim.store.advance(&id, TaskStatus::Pulling) {
            return;
        }
        if let Err(e) = self.pull(&shim, &id, &config).await {
            return fail((reason::CREATING_CONTAINER_ERROR, format!("pullImage error: {e}")));
        }
        if !shim.store.advance(&id, TaskStatus::Creating) {
            return;
        }
        // Nested, every task shares the shim container's network: ports are picked, not
        // published (the engine would publish them on its own host).
        let mode = if self.nested.is_some() { "host" } else { config.network_mode.as_str() };
        let pick = || shim.store.claim_runner_ports(&id, |taken| host_ports(self.fixed_ports, taken));
        let network = match Network::parse(mode, pick) {
            Ok(n) => n,
            Err(e) => return fail((reason::CREATING_CONTAINER_ERROR, format!("createContainer error: {e}"))),
        };
        let mut spec = ContainerSpec {
            task_id: id.clone(),
            shim_home: self.home.clone(),
            image: config.image_name.clone(),
            user: config.container_user.clone(),
            runner: RunnerCommand {
                log_level: self.runner_log_level.clone(),
                network,
                authorized_keys: config.container_ssh_keys.clone(),
            },
            env: self.env.clone(),
            binds,
            shm_size: config.shm_size,
            cpu: config.cpu,
            memory: config.memory,
            privileged: config.privileged || self.privileged,
            gpus: Gpus::for_host(self.vendor, gpu_ids, &config.gpu_devices),
            device_root: self.device_root.clone(),
            join_network: self.nested.as_ref().map(|n| n.container.clone()),
            app_ports: config.app_ports.clone(),
        };
        let container = match self.create_and_start(&shim, &id, &task.container_name, &mut spec).await {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let ports = self.ports(&container, network).await;
        let running = shim.store.update(&id, |t| {
            let ok = t.status == TaskStatus::Creating;
            if ok {
                t.status = TaskStatus::Running;
                t.ports = Some(ports);
            }
            ok
        });
        if running != Some(true) {
            // Terminated while starting: the terminate call may have come before the start.
            let options = StopContainerOptions { t: Some(0), signal: None };
            let _ = self.docker.stop_container(&container, Some(options)).await;
            return;
        }
        self.wait(&shim, &id, &container).await;
    }

    async fn terminate(&self, task: &Task, timeout: Duration) {
        let Handle::Docker { container_id } = &task.handle else { return };
        let t = i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptions { t: Some(t), signal: None };
        if let Err(e) = self.docker.stop_container(container_id, Some(options)).await {
            tracing::warn!(%e, container_id, "docker stop failed");
        }
    }

    async fn remove(&self, task: &Task) -> Result<(), String> {
        let Handle::Docker { container_id } = &task.handle else { return Ok(()) };
        self.remove_container(container_id).await
    }

    async fn restore(&self, shim: Arc<Shim>, task: Task) {
        let Handle::Docker { container_id } = &task.handle else { return };
        self.wait(&shim, &task.id, container_id).await;
    }
}

#[cfg(test)]
mod nested_tests {
    use std::path::{Path, PathBuf};

    use super::Nested;

    fn nested() -> Nested {
        Nested::new(
            "host-1".to_owned(),
            vec![
                (PathBuf::from("/root"), PathBuf::from("/var/lib/docker/volumes/a/_data")),
                (PathBuf::from("/root/.dstack"), PathBuf::from("/var/lib/docker/volumes/b/_data")),
                (PathBuf::from("/usr/local/bin"), PathBuf::from("/srv/bin")),
            ],
        )
    }

    #[test]
    fn paths_go_through_the_deepest_mount_and_back() {
        let n = nested();
        let engine = n.to_engine(Path::new("/root/.dstack/runners/t-1")).unwrap();
        assert_eq!(engine, PathBuf::from("/var/lib/docker/volumes/b/_data/runners/t-1"));
        assert_eq!(n.from_engine(&engine), Some(PathBuf::from("/root/.dstack/runners/t-1")));
        assert_eq!(
            n.to_engine(Path::new("/usr/local/bin/dstack-runner")).unwrap(),
            PathBuf::from("/srv/bin/dstack-runner")
        );
        assert_eq!(
            n.to_engine(Path::new("/root/x")).unwrap(),
            PathBuf::from("/var/lib/docker/volumes/a/_data/x")
        );
    }

    #[test]
    fn a_path_on_no_mount_is_an_error_that_says_so() {
        let err = nested().to_engine(Path::new("/opt/data")).unwrap_err();
        assert!(err.contains("/opt/data is on no volume of the shim's container host-1"), "{err}");
        assert_eq!(nested().from_engine(Path::new("/elsewhere")), None);
    }
}
