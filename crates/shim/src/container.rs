//! What a task's container is made of (spec agents.md §1.7), as pure functions of the task
//! and the host: the runner's command line, mounts, limits, ports and GPU devices. The Docker
//! driver ([`crate::docker`]) sends the result; restart recovery reads it back from `inspect`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, DeviceMapping, DeviceRequest, HostConfig, Mount,
    MountTypeEnum, PortBinding, ResourcesUlimits,
};
use dstack_agent_proto::shim::{GpuDevice, PortMapping};
use dstack_agent_proto::{RUNNER_HTTP_PORT, RUNNER_SSH_PORT};

use crate::gpu::Vendor;

/// Marks every container the shim created; restart recovery lists containers by it.
pub const LABEL_IS_TASK: &str = "ai.dstack.shim.is-task";
pub const LABEL_TASK_ID: &str = "ai.dstack.shim.task-id";
/// dstack-rs: the home of the shim that created the container. A restarted shim recovers only
/// its own containers, so several shims (tests, one per user) can share a Docker engine.
pub const LABEL_SHIM_HOME: &str = "ai.dstack.rs.shim-home";
/// dstack-rs: the runner's HTTP and SSH ports in host network mode (the shim picks them), so
/// a restarted shim can report them again.
pub const LABEL_RUNNER_HTTP_PORT: &str = "ai.dstack.rs.runner-http-port";
pub const LABEL_RUNNER_SSH_PORT: &str = "ai.dstack.rs.runner-ssh-port";

/// Where the runner binary is mounted, and its temp dir.
pub const RUNNER_PATH: &str = "/usr/local/bin/dstack-runner";
pub const RUNNER_TEMP_DIR: &str = "/tmp/runner";
/// NVIDIA driver capabilities a job gets; `display` is dropped when the host lacks
/// `/dev/nvidia-modeset` (the retry in [`crate::docker`]).
pub const NVIDIA_CAPABILITIES: [&str; 7] =
    ["gpu", "utility", "compute", "graphics", "video", "display", "compat32"];

/// The container's network: `host` shares the host's, the runner listening on 127.0.0.1 on
/// ports the shim picked; `bridge` gets its own, with the runner's 10999 and 10022 published
/// on ephemeral 127.0.0.1 ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    Host { http_port: u16, ssh_port: u16 },
    Bridge,
}

impl Network {
    /// `network_mode` of the TaskConfig (`""` is dstack's default, host).
    pub fn parse(
        mode: &str,
        pick_ports: impl FnOnce() -> Result<(u16, u16), String>,
    ) -> Result<Network, String> {
        match mode {
            "" | "host" => {
                let (http_port, ssh_port) = pick_ports()?;
                Ok(Network::Host { http_port, ssh_port })
            }
            "bridge" => Ok(Network::Bridge),
            other => Err(format!("unknown network_mode {other:?}: use \"host\" or \"bridge\"")),
        }
    }
}

/// `dstack-runner … start …` as the container's command. On the host network both the runner's
/// API and its sshd listen on 127.0.0.1 only (the server and the CLI come through the host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerCommand {
    pub log_level: String,
    pub network: Network,
    /// `container_ssh_keys`: one `--ssh-authorized-key` each.
    pub authorized_keys: Vec<String>,
}

impl RunnerCommand {
    pub fn args(&self) -> Vec<String> {
        let (address, http_port, ssh_port) = match self.network {
            Network::Host { http_port, ssh_port } => (Some("127.0.0.1"), http_port, ssh_port),
            Network::Bridge => (None, RUNNER_HTTP_PORT, RUNNER_SSH_PORT),
        };
        let mut args = vec!["--log-level".to_owned(), self.log_level.clone(), "start".to_owned()];
        args.extend(["--temp-dir", RUNNER_TEMP_DIR, "--workflow-dir", "/workflow"].map(str::to_owned));
        if let Some(address) = address {
            args.extend(["--http-address".to_owned(), address.to_owned()]);
        }
        args.extend(["--http-port".to_owned(), http_port.to_string()]);
        args.extend(["--ssh-port".to_owned(), ssh_port.to_string()]);
        if let Some(address) = address {
            args.extend(["--ssh-address".to_owned(), address.to_owned()]);
        }
        for key in &self.authorized_keys {
            args.extend(["--ssh-authorized-key".to_owned(), key.trim().to_owned()]);
        }
        args
    }
}

/// A bind mount of a host path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

/// The GPUs a container gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gpus {
    None,
    /// `gpu_devices` given by the server: mapped as they are, whatever the vendor.
    Explicit(Vec<GpuDevice>),
    /// GPU UUIDs through the NVIDIA container toolkit.
    Nvidia {
        uuids: Vec<String>,
        display: bool,
    },
    /// Render nodes (`/dev/dri/renderD128`) plus `/dev/kfd`, found under the device root.
    Amd {
        render_nodes: Vec<String>,
    },
}

impl Gpus {
    /// What the locked `ids` mean on a host of `vendor`.
    pub fn for_host(vendor: Option<Vendor>, ids: Vec<String>, explicit: &[GpuDevice]) -> Gpus {
        if !explicit.is_empty() {
            return Gpus::Explicit(explicit.to_vec());
        }
        match vendor {
            _ if ids.is_empty() => Gpus::None,
            Some(Vendor::Nvidia) => Gpus::Nvidia { uuids: ids, display: true },
            Some(Vendor::Amd) => Gpus::Amd { render_nodes: ids },
            None => Gpus::None,
        }
    }
}

/// Everything the container is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    pub task_id: String,
    /// The shim's home, as a label ([`LABEL_SHIM_HOME`]).
    pub shim_home: String,
    pub image: String,
    /// Empty: the image's user.
    pub user: String,
    pub runner: RunnerCommand,
    /// `K=V`, on top of the image's ENV.
    pub env: Vec<String>,
    /// The runner dir, the runner binary, volumes and instance mounts.
    pub binds: Vec<Bind>,
    /// Bytes; 0 keeps Docker's 64 MiB.
    pub shm_size: i64,
    /// Cores; 0 is unlimited.
    pub cpu: f64,
    /// Bytes; 0 is unlimited.
    pub memory: i64,
    pub privileged: bool,
    pub gpus: Gpus,
    /// Paths are looked up here (see [`crate::devices`]).
    pub device_root: PathBuf,
    /// On the host network, join this container's network instead of the engine host's (a
    /// shim that itself runs in a container of the engine).
    pub join_network: Option<String>,
    /// The job's own ports, published like the runner's in bridge mode (`TaskConfig.app_ports`).
    pub app_ports: Vec<u16>,
}

/// The `docker create` body of `spec`.
pub fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let mut labels = HashMap::from([
        (LABEL_IS_TASK.to_owned(), "true".to_owned()),
        (LABEL_TASK_ID.to_owned(), spec.task_id.clone()),
        (LABEL_SHIM_HOME.to_owned(), spec.shim_home.clone()),
    ]);
    let exposed: Vec<u16> = match spec.runner.network {
        Network::Host { http_port, ssh_port } => {
            labels.insert(LABEL_RUNNER_HTTP_PORT.to_owned(), http_port.to_string());
            labels.insert(LABEL_RUNNER_SSH_PORT.to_owned(), ssh_port.to_string());
            vec![http_port, ssh_port]
        }
        Network::Bridge => {
            let mut ports = vec![RUNNER_HTTP_PORT, RUNNER_SSH_PORT];
            for port in &spec.app_ports {
                if !ports.contains(port) {
                    ports.push(*port);
                }
            }
            ports
        }
    };
    let exposed_ports = exposed.iter().map(|p| (format!("{p}/tcp"), HashMap::new())).collect();
    let mut host = HostConfig {
        privileged: Some(spec.privileged),
        network_mode: Some(match (spec.runner.network, &spec.join_network) {
            (Network::Host { .. }, Some(container)) => format!("container:{container}"),
            (Network::Host { .. }, None) => "host".to_owned(),
            (Network::Bridge, _) => "bridge".to_owned(),
        }),
        mounts: Some(spec.binds.iter().map(mount).collect()),
        ..Default::default()
    };
    if spec.runner.network == Network::Bridge {
        let local = || Some(vec![PortBinding { host_ip: Some("127.0.0.1".to_owned()), host_port: None }]);
        host.port_bindings = Some(exposed.iter().map(|p| (format!("{p}/tcp"), local())).collect());
    }
    if spec.shm_size > 0 {
        host.shm_size = Some(spec.shm_size);
        // Docker mounts /dev/shm noexec; jobs (e.g. NCCL, Triton) may need exec.
        host.tmpfs = Some(HashMap::from([("/dev/shm".to_owned(), format!("exec,size={}", spec.shm_size))]));
    }
    if spec.cpu > 0.0 {
        host.nano_cpus = Some((spec.cpu * 1e9).round() as i64);
    }
    if spec.memory > 0 {
        host.memory = Some(spec.memory);
    }
    apply_gpus(&mut host, &spec.gpus, &spec.device_root);
    let infiniband = crate::devices::under(&spec.device_root, "/dev/infiniband");
    if infiniband.exists() {
        host.devices.get_or_insert_with(Vec::new).push(device(&infiniband, "/dev/infiniband"));
        host.ulimits =
            Some(vec![ResourcesUlimits { name: Some("memlock".to_owned()), soft: Some(-1), hard: Some(-1) }]);
    }
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: Some(vec![RUNNER_PATH.to_owned()]),
        cmd: Some(spec.runner.args()),
        user: Some(spec.user.clone()).filter(|u| !u.is_empty()),
        env: Some(spec.env.clone()),
        labels: Some(labels),
        // The engine refuses exposed ports on another container's network.
        exposed_ports: spec.join_network.is_none().then_some(exposed_ports),
        host_config: Some(host),
        ..Default::default()
    }
}

fn mount(bind: &Bind) -> Mount {
    Mount {
        typ: Some(MountTypeEnum::BIND),
        source: Some(bind.source.display().to_string()),
        target: Some(bind.target.clone()),
        read_only: Some(bind.read_only),
        ..Default::default()
    }
}

fn device(on_host: &Path, in_container: &str) -> DeviceMapping {
    DeviceMapping {
        path_on_host: Some(on_host.display().to_string()),
        path_in_container: Some(in_container.to_owned()),
        cgroup_permissions: Some("rwm".to_owned()),
    }
}

/// §1.7.1: DeviceRequests for NVIDIA; Devices, host IPC, SYS_PTRACE and no seccomp for AMD.
fn apply_gpus(host: &mut HostConfig, gpus: &Gpus, root: &Path) {
    match gpus {
        Gpus::None => {}
        Gpus::Explicit(devices) => {
            host.devices = Some(
                devices.iter().map(|d| device(Path::new(&d.path_on_host), &d.path_in_container)).collect(),
            );
        }
        Gpus::Nvidia { uuids, display } => {
            let capabilities =
                NVIDIA_CAPABILITIES.iter().filter(|c| *display || **c != "display").map(|c| (*c).to_owned());
            host.device_requests = Some(vec![DeviceRequest {
                device_ids: Some(uuids.clone()),
                capabilities: Some(vec![capabilities.collect()]),
                ..Default::default()
            }]);
        }
        Gpus::Amd { render_nodes } => {
            let mut devices = vec![device(&crate::devices::under(root, "/dev/kfd"), "/dev/kfd")];
            devices.extend(render_nodes.iter().map(|n| device(&crate::devices::under(root, n), n)));
            host.devices = Some(devices);
            host.ipc_mode = Some("host".to_owned());
            host.cap_add = Some(vec!["SYS_PTRACE".to_owned()]);
            host.security_opt = Some(vec!["seccomp=unconfined".to_owned()]);
        }
    }
}

/// What a restarted shim reads back from one of its containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub task_id: String,
    pub container_id: String,
    pub container_name: String,
    /// The source of the `/tmp/runner` mount.
    pub runner_dir: Option<PathBuf>,
    /// Docker's state: `running`, `exited`, `created` (never started), ….
    pub status: String,
    /// Still running (anything but `exited`, `dead` or `created`).
    pub running: bool,
    pub exit_code: Option<i64>,
    pub ports: Vec<PortMapping>,
    /// NVIDIA UUIDs of the device request, or the AMD render nodes mapped in.
    pub gpu_ids: Vec<String>,
}

/// Reads a task back from `docker inspect`; `None` if the container is not a task of the shim
/// whose home is `shim_home`.
pub fn recover(inspect: &ContainerInspectResponse, shim_home: &str) -> Option<Recovered> {
    let config = inspect.config.as_ref()?;
    let labels = config.labels.as_ref()?;
    if labels.get(LABEL_IS_TASK).map(String::as_str) != Some("true")
        || labels.get(LABEL_SHIM_HOME).map(String::as_str) != Some(shim_home)
    {
        return None;
    }
    let task_id = labels.get(LABEL_TASK_ID)?.clone();
    let state = inspect.state.as_ref();
    let status = state.and_then(|s| s.status).map(|s| s.to_string()).unwrap_or_default();
    let running = !matches!(status.as_str(), "exited" | "dead" | "created" | "");
    let label_port = |key: &str| labels.get(key).and_then(|p| p.parse::<u16>().ok());
    let ports = match (label_port(LABEL_RUNNER_HTTP_PORT), label_port(LABEL_RUNNER_SSH_PORT)) {
        (Some(http), ssh) => {
            let mut ports = vec![PortMapping { host: http, container: RUNNER_HTTP_PORT }];
            ports.extend(ssh.map(|host| PortMapping { host, container: RUNNER_SSH_PORT }));
            ports
        }
        (None, _) => published_ports(inspect),
    };
    let runner_dir = inspect.mounts.iter().flatten().find_map(|m| {
        (m.destination.as_deref() == Some(RUNNER_TEMP_DIR)).then(|| m.source.clone().map(PathBuf::from))?
    });
    let host = inspect.host_config.as_ref();
    let nvidia = host
        .and_then(|h| h.device_requests.as_ref())
        .and_then(|r| r.first())
        .and_then(|r| r.device_ids.clone())
        .unwrap_or_default();
    let gpu_ids = if nvidia.is_empty() {
        host.and_then(|h| h.devices.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|d| d.path_in_container.clone())
            .filter(|p| p.starts_with("/dev/dri/renderD"))
            .collect()
    } else {
        nvidia
    };
    Some(Recovered {
        task_id,
        container_id: inspect.id.clone().unwrap_or_default(),
        container_name: inspect.name.as_deref().unwrap_or_default().trim_start_matches('/').to_owned(),
        runner_dir,
        running,
        status,
        exit_code: state.and_then(|s| s.exit_code),
        ports,
        gpu_ids,
    })
}

/// The host ports Docker published (bridge mode): the runner's 10999 and 10022 and the job's
/// app ports, in container port order.
pub fn published_ports(inspect: &ContainerInspectResponse) -> Vec<PortMapping> {
    let Some(ports) = inspect.network_settings.as_ref().and_then(|n| n.ports.as_ref()) else {
        return Vec::new();
    };
    let mut mapped: Vec<PortMapping> = ports
        .iter()
        .filter_map(|(key, bindings)| {
            let container = key.strip_suffix("/tcp")?.parse::<u16>().ok()?;
            let host = bindings.as_ref()?.iter().find_map(|b| b.host_port.as_deref()?.parse::<u16>().ok())?;
            Some(PortMapping { host, container })
        })
        .collect();
    mapped.sort_by_key(|m| m.container);
    mapped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(network: Network, gpus: Gpus) -> ContainerSpec {
        ContainerSpec {
            task_id: "t1".to_owned(),
            shim_home: "/home/shim".to_owned(),
            image: "img:1".to_owned(),
            user: "root".to_owned(),
            runner: RunnerCommand {
                log_level: "info".to_owned(),
                network,
                authorized_keys: vec!["ssh-ed25519 AAAA user\n".to_owned()],
            },
            env: vec!["http_proxy=http://proxy:3128".to_owned()],
            binds: vec![Bind {
                source: PathBuf::from("/home/shim/runners/r-0-0-abcd"),
                target: RUNNER_TEMP_DIR.to_owned(),
                read_only: false,
            }],
            shm_size: 1 << 30,
            cpu: 1.5,
            memory: 2 << 30,
            privileged: false,
            gpus,
            device_root: PathBuf::from("/nonexistent-device-root"),
            join_network: None,
            app_ports: Vec::new(),
        }
    }

    fn host(body: &ContainerCreateBody) -> &HostConfig {
        body.host_config.as_ref().expect("host config")
    }

    #[test]
    fn bridge_mode_publishes_the_runner_ports_on_localhost() {
        let body = create_body(&spec(Network::Bridge, Gpus::None));
        let args = body.cmd.clone().expect("cmd");
        assert_eq!(
            args.join(" "),
            "--log-level info start --temp-dir /tmp/runner --workflow-dir /workflow \
             --http-port 10999 --ssh-port 10022 --ssh-authorized-key ssh-ed25519 AAAA user"
        );
        assert_eq!(body.entrypoint, Some(vec![RUNNER_PATH.to_owned()]));
        let h = host(&body);
        assert_eq!(h.network_mode.as_deref(), Some("bridge"));
        let bindings = h.port_bindings.as_ref().expect("bindings");
        let http = bindings["10999/tcp"].as_ref().expect("10999");
        assert_eq!(http[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(http[0].host_port, None, "an ephemeral port");
        assert!(bindings.contains_key("10022/tcp"));
        let mut exposed: Vec<_> = body.exposed_ports.as_ref().expect("exposed").keys().cloned().collect();
        exposed.sort();
        assert_eq!(exposed, ["10022/tcp", "10999/tcp"]);
    }

    #[test]
    fn bridge_mode_publishes_app_ports_too_and_host_mode_none() {
        let mut s = spec(Network::Bridge, Gpus::None);
        s.app_ports = vec![8000, 10999];
        let body = create_body(&s);
        let mut published: Vec<_> =
            host(&body).port_bindings.as_ref().expect("bindings").keys().cloned().collect();
        published.sort();
        assert_eq!(published, ["10022/tcp", "10999/tcp", "8000/tcp"], "each port once");
        let mut exposed: Vec<_> = body.exposed_ports.as_ref().expect("exposed").keys().cloned().collect();
        exposed.sort();
        assert_eq!(exposed, published);

        let mut s = spec(Network::Host { http_port: 41000, ssh_port: 41001 }, Gpus::None);
        s.app_ports = vec![8000];
        let body = create_body(&s);
        assert_eq!(host(&body).port_bindings, None, "the host network publishes nothing");
    }

    #[test]
    fn host_mode_labels_the_picked_ports() {
        let body = create_body(&spec(Network::Host { http_port: 41000, ssh_port: 41001 }, Gpus::None));
        let args = body.cmd.clone().expect("cmd").join(" ");
        assert!(
            args.contains(
                "--http-address 127.0.0.1 --http-port 41000 --ssh-port 41001 --ssh-address 127.0.0.1"
            ),
            "{args}"
        );
        let labels = body.labels.as_ref().expect("labels");
        assert_eq!(labels[LABEL_RUNNER_HTTP_PORT], "41000");
        assert_eq!(labels[LABEL_TASK_ID], "t1");
        assert_eq!(labels[LABEL_IS_TASK], "true");
        let h = host(&body);
        assert_eq!(h.network_mode.as_deref(), Some("host"));
        assert_eq!(h.port_bindings, None);

        let mut nested = spec(Network::Host { http_port: 41000, ssh_port: 41001 }, Gpus::None);
        nested.join_network = Some("testhost-1".to_owned());
        let body = create_body(&nested);
        assert_eq!(host(&body).network_mode.as_deref(), Some("container:testhost-1"));
        assert_eq!(body.exposed_ports, None);
    }

    #[test]
    fn limits_and_shm() {
        let body = create_body(&spec(Network::Bridge, Gpus::None));
        let h = host(&body);
        assert_eq!(h.nano_cpus, Some(1_500_000_000));
        assert_eq!(h.memory, Some(2 << 30));
        assert_eq!(h.shm_size, Some(1 << 30));
        assert_eq!(h.tmpfs.as_ref().expect("tmpfs")["/dev/shm"], "exec,size=1073741824");
        let mut unlimited = spec(Network::Bridge, Gpus::None);
        (unlimited.cpu, unlimited.memory, unlimited.shm_size) = (0.0, 0, 0);
        let body = create_body(&unlimited);
        let h = host(&body);
        assert_eq!((h.nano_cpus, h.memory, h.shm_size, h.tmpfs.clone()), (None, None, None, None));
        assert_eq!(body.user.as_deref(), Some("root"));
    }

    #[test]
    fn nvidia_gpus_are_a_device_request() {
        let uuids = vec!["GPU-a".to_owned(), "GPU-b".to_owned()];
        let body = create_body(&spec(Network::Bridge, Gpus::Nvidia { uuids: uuids.clone(), display: true }));
        let request = &host(&body).device_requests.as_ref().expect("requests")[0];
        assert_eq!(request.device_ids.as_ref(), Some(&uuids));
        assert_eq!(request.capabilities, Some(vec![NVIDIA_CAPABILITIES.map(str::to_owned).to_vec()]));
        assert_eq!(host(&body).devices, None);
        let body = create_body(&spec(Network::Bridge, Gpus::Nvidia { uuids, display: false }));
        let caps = host(&body).device_requests.as_ref().expect("requests")[0].capabilities.clone();
        assert_eq!(
            caps,
            Some(vec![
                ["gpu", "utility", "compute", "graphics", "video", "compat32"].map(str::to_owned).to_vec()
            ])
        );
    }

    #[test]
    fn amd_gpus_are_devices_with_host_ipc() {
        let mut s = spec(Network::Bridge, Gpus::Amd { render_nodes: vec!["/dev/dri/renderD128".to_owned()] });
        s.device_root = PathBuf::from("/fake");
        let body = create_body(&s);
        let h = host(&body);
        let devices: Vec<_> = h
            .devices
            .iter()
            .flatten()
            .map(|d| {
                (d.path_on_host.clone().unwrap_or_default(), d.path_in_container.clone().unwrap_or_default())
            })
            .collect();
        assert_eq!(
            devices,
            [
                ("/fake/dev/kfd".to_owned(), "/dev/kfd".to_owned()),
                ("/fake/dev/dri/renderD128".to_owned(), "/dev/dri/renderD128".to_owned())
            ]
        );
        assert!(h.devices.iter().flatten().all(|d| d.cgroup_permissions.as_deref() == Some("rwm")));
        assert_eq!(h.ipc_mode.as_deref(), Some("host"));
        assert_eq!(h.cap_add, Some(vec!["SYS_PTRACE".to_owned()]));
        assert_eq!(h.security_opt, Some(vec!["seccomp=unconfined".to_owned()]));
        assert_eq!(h.device_requests, None);
    }

    #[test]
    fn explicit_devices_win_over_the_vendor() {
        let explicit = vec![GpuDevice {
            path_on_host: "/dev/nvidia0".to_owned(),
            path_in_container: "/dev/nvidia0".to_owned(),
        }];
        let gpus = Gpus::for_host(Some(Vendor::Nvidia), vec!["GPU-a".to_owned()], &explicit);
        assert_eq!(gpus, Gpus::Explicit(explicit));
        assert_eq!(Gpus::for_host(Some(Vendor::Amd), vec![], &[]), Gpus::None);
        assert_eq!(
            Gpus::for_host(Some(Vendor::Nvidia), vec!["GPU-a".to_owned()], &[]),
            Gpus::Nvidia { uuids: vec!["GPU-a".to_owned()], display: true }
        );
    }

    #[test]
    fn recovery_reads_back_what_was_created() {
        let body = create_body(&spec(
            Network::Host { http_port: 41000, ssh_port: 41001 },
            Gpus::Nvidia { uuids: vec!["GPU-a".to_owned()], display: true },
        ));
        let inspect = ContainerInspectResponse {
            id: Some("c0ffee".to_owned()),
            name: Some("/r-0-0-abcd".to_owned()),
            config: Some(bollard::models::ContainerConfig {
                labels: body.labels.clone(),
                ..Default::default()
            }),
            state: Some(bollard::models::ContainerState {
                status: Some(bollard::models::ContainerStateStatusEnum::RUNNING),
                ..Default::default()
            }),
            host_config: body.host_config.clone(),
            mounts: Some(vec![bollard::models::MountPoint {
                source: Some("/home/shim/runners/r-0-0-abcd".to_owned()),
                destination: Some(RUNNER_TEMP_DIR.to_owned()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(recover(&inspect, "/other/shim"), None, "another shim's container");
        let r = recover(&inspect, "/home/shim").expect("ours");
        assert_eq!(r.task_id, "t1");
        assert_eq!(r.container_name, "r-0-0-abcd");
        assert!(r.running);
        assert_eq!(r.runner_dir, Some(PathBuf::from("/home/shim/runners/r-0-0-abcd")));
        assert_eq!(
            r.ports,
            [PortMapping { host: 41000, container: 10999 }, PortMapping { host: 41001, container: 10022 }]
        );
        assert_eq!(r.gpu_ids, ["GPU-a"]);
        let foreign = ContainerInspectResponse {
            config: Some(bollard::models::ContainerConfig::default()),
            ..Default::default()
        };
        assert_eq!(recover(&foreign, "/home/shim"), None);
    }

    #[test]
    fn unknown_network_modes_are_refused() {
        let ports = || Ok((1, 2));
        assert_eq!(Network::parse("", ports), Ok(Network::Host { http_port: 1, ssh_port: 2 }));
        assert_eq!(Network::parse("bridge", ports), Ok(Network::Bridge));
        assert!(Network::parse("none", ports).expect_err("refused").contains("use \"host\" or \"bridge\""));
    }
}
