//! Docker mode: the task is a container of `image_name` running the bind-mounted runner
//! (spec agents.md §1.6–1.8, simplified): host network with a port the shim picks, the runner
//! dir mounted at `/tmp/runner`. The image is pulled (with `registry_auth` when given, progress
//! in the task's `image_pull_progress`) unless present with a tag other than `:latest`; unlike
//! dstack, `host:5000/img` gets its `:latest` too (dstack would ask the engine for every tag).
//!
//! The runner's sshd listens on a second free port, on 127.0.0.1 only, with
//! `container_ssh_keys` authorized; both ports are reported in `ports` (as 10999 and 10022).
//!
//! Not done yet: GPUs, volumes, instance mounts, shm/cpu/memory limits, bridge mode.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, LogsOptions, RemoveContainerOptions, StopContainerOptions,
    WaitContainerOptions,
};
use dstack_agent_proto::shim::{PortMapping, TaskConfig, TaskStatus, reason};
use dstack_agent_proto::{RUNNER_HTTP_PORT, RUNNER_SSH_PORT};
use futures_util::StreamExt;

use crate::pull;
use crate::tasks::{Handle, Task};
use crate::{Config, Driver, Shim};

pub struct DockerDriver {
    docker: Docker,
    runner_binary: std::path::PathBuf,
}

impl DockerDriver {
    /// A driver if a Docker engine answers, else `None` (process mode only).
    pub(crate) async fn connect(config: &Config) -> Option<DockerDriver> {
        let docker = Docker::connect_with_local_defaults().ok()?;
        match docker.ping().await {
            Ok(_) => Some(DockerDriver { docker, runner_binary: config.runner_binary.clone() }),
            Err(e) => {
                tracing::info!(%e, "no Docker engine; tasks run as processes");
                None
            }
        }
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

    async fn create(
        &self,
        task: &Task,
        config: &TaskConfig,
        port: u16,
        ssh_port: u16,
    ) -> Result<String, String> {
        std::fs::create_dir_all(&task.runner_dir).map_err(|e| e.to_string())?;
        let port = port.to_string();
        let ssh_port = ssh_port.to_string();
        let mut cmd = vec![
            "/usr/local/bin/dstack-runner",
            "start",
            "--temp-dir",
            "/tmp/runner",
            "--http-address",
            "127.0.0.1",
            "--http-port",
            &port,
            "--workflow-dir",
            "/workflow",
            "--ssh-port",
            &ssh_port,
            "--ssh-address",
            "127.0.0.1",
        ];
        for key in &config.container_ssh_keys {
            cmd.extend(["--ssh-authorized-key", key.as_str()]);
        }
        let labels = HashMap::from([
            ("ai.dstack.shim.is-task".to_owned(), "true".to_owned()),
            ("ai.dstack.shim.task-id".to_owned(), config.id.clone()),
        ]);
        let binds = vec![
            format!("{}:/tmp/runner", task.runner_dir.display()),
            format!("{}:/usr/local/bin/dstack-runner:ro", self.runner_binary.display()),
        ];
        let body = ContainerCreateBody {
            image: Some(config.image_name.clone()),
            cmd: Some(cmd.iter().map(|s| (*s).to_owned()).collect()),
            user: Some(config.container_user.clone()).filter(|u| !u.is_empty()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some("host".to_owned()),
                binds: Some(binds),
                privileged: Some(config.privileged),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options =
            CreateContainerOptions { name: Some(task.container_name.clone()), ..Default::default() };
        let created = self.docker.create_container(Some(options), body).await.map_err(|e| e.to_string())?;
        Ok(created.id)
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
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

impl Driver for DockerDriver {
    async fn run(&self, shim: Arc<Shim>, config: TaskConfig) {
        let id = config.id.clone();
        let Some(task) = shim.store.get(&id) else { return };
        if !shim.store.advance(&id, TaskStatus::Preparing) || !shim.store.advance(&id, TaskStatus::Pulling) {
            return;
        }
        if let Err(e) = self.pull(&shim, &id, &config).await {
            shim.store.terminate(&id, reason::CREATING_CONTAINER_ERROR, &format!("pullImage error: {e}"));
            return;
        }
        if !shim.store.advance(&id, TaskStatus::Creating) {
            return;
        }
        let created = match (free_port(), free_port()) {
            (Ok(port), Ok(ssh_port)) if port != ssh_port => {
                self.create(&task, &config, port, ssh_port).await.map(|c| (c, port, ssh_port))
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
            _ => Err("no two free ports for the runner's API and sshd".to_owned()),
        };
        let (container, port, ssh_port) = match created {
            Ok(c) => c,
            Err(e) => {
                shim.store.terminate(
                    &id,
                    reason::CREATING_CONTAINER_ERROR,
                    &format!("createContainer error: {e}"),
                );
                return;
            }
        };
        shim.store.update(&id, |t| t.handle = Handle::Docker { container_id: container.clone() });
        if let Err(e) = self
            .docker
            .start_container(&container, None::<bollard::query_parameters::StartContainerOptions>)
            .await
        {
            shim.store.terminate(&id, reason::CONTAINER_EXITED_WITH_ERROR, &e.to_string());
            return;
        }
        let running = shim.store.update(&id, |t| {
            let ok = t.status == TaskStatus::Creating;
            if ok {
                t.status = TaskStatus::Running;
                t.ports = Some(vec![
                    PortMapping { host: port, container: RUNNER_HTTP_PORT },
                    PortMapping { host: ssh_port, container: RUNNER_SSH_PORT },
                ]);
            }
            ok
        });
        if running == Some(true) {
            self.wait(&shim, &id, &container).await;
        }
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
        let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
        match self.docker.remove_container(container_id, Some(options)).await {
            Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    async fn restore(&self, shim: Arc<Shim>, task: Task) {
        let Handle::Docker { container_id } = &task.handle else { return };
        self.wait(&shim, &task.id, container_id).await;
    }
}
