//! `dstack-shim`'s API (spec agents.md §1.4): tasks, instance info and health, components.
//!
//! Requests accept unknown fields and missing optional ones, as the Go shim does.

use dstack_api::runs::ImagePullProgress;
use serde::{Deserialize, Serialize};

/// The state of a shim task.
///
/// ```text
/// pending → preparing → pulling → creating → running → terminated
///    └──────────┴──────────┴──────────┴─────────────→ terminated
/// ```
///
/// `running → running` is allowed (to commit the port mapping) and `→ terminated` is allowed
/// from every state, `terminated` included; see [`TaskStatus::can_become`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Pending,
    Preparing,
    Pulling,
    Creating,
    Running,
    Terminated,
}

impl TaskStatus {
    /// Whether the state machine allows `self → next`.
    pub fn can_become(self, next: TaskStatus) -> bool {
        use TaskStatus::*;
        matches!(
            (self, next),
            (_, Terminated)
                | (Pending, Preparing)
                | (Preparing, Pulling)
                | (Pulling, Creating)
                | (Creating, Running)
                | (Running, Running)
        )
    }
}

/// Termination reasons the shim sets itself. On `/terminate` the server passes any string
/// (its `JobTerminationReason`), so reasons travel as strings.
pub mod reason {
    pub const EXECUTOR_ERROR: &str = "executor_error";
    pub const CREATING_CONTAINER_ERROR: &str = "creating_container_error";
    pub const CONTAINER_EXITED_WITH_ERROR: &str = "container_exited_with_error";
    pub const DONE_BY_RUNNER: &str = "done_by_runner";
}

/// A volume to attach and mount (`TaskConfig.volumes[]`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeInfo {
    pub backend: String,
    pub name: String,
    pub volume_id: String,
    pub init_fs: bool,
    pub device_name: Option<String>,
}

/// `TaskConfig.volume_mounts[]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeMountPoint {
    pub name: String,
    pub path: String,
}

/// `TaskConfig.instance_mounts[]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct InstanceMountPoint {
    pub instance_path: String,
    pub path: String,
    pub optional: bool,
}

/// `TaskConfig.gpu_devices[]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GpuDevice {
    pub path_on_host: String,
    pub path_in_container: String,
}

/// The body of `POST /api/tasks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskConfig {
    /// The job (submission) id.
    pub id: String,
    /// `<run>-<job_num>-<replica_num>`.
    pub name: String,
    pub registry_username: String,
    pub registry_password: String,
    /// Empty: run the runner as a process on the host (dstack-rs's process mode).
    pub image_name: String,
    pub container_user: String,
    pub privileged: bool,
    /// -1: all free GPUs; 0: none; N: exactly N.
    pub gpu: i64,
    /// Cores; 0 means unlimited.
    pub cpu: f64,
    /// Bytes; 0 means unlimited.
    pub memory: i64,
    /// Bytes; 0 means Docker's default.
    pub shm_size: i64,
    /// `host` or `bridge`.
    pub network_mode: String,
    pub volumes: Vec<VolumeInfo>,
    pub volume_mounts: Vec<VolumeMountPoint>,
    pub instance_mounts: Vec<InstanceMountPoint>,
    pub gpu_devices: Vec<GpuDevice>,
    pub host_ssh_user: String,
    pub host_ssh_keys: Vec<String>,
    pub container_ssh_keys: Vec<String>,
    /// dstack-rs: the job's own ports (a service's `port`) that bridge mode publishes on
    /// ephemeral 127.0.0.1 ports too, so that replicas on one host never collide. dstack's
    /// server never sends it; left out of the JSON when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub app_ports: Vec<u16>,
}

impl Default for TaskConfig {
    fn default() -> Self {
        TaskConfig {
            id: String::new(),
            name: String::new(),
            registry_username: String::new(),
            registry_password: String::new(),
            image_name: String::new(),
            container_user: "root".to_owned(),
            privileged: false,
            gpu: 0,
            cpu: 0.0,
            memory: 0,
            shm_size: 0,
            network_mode: "host".to_owned(),
            volumes: Vec::new(),
            volume_mounts: Vec::new(),
            instance_mounts: Vec::new(),
            gpu_devices: Vec::new(),
            host_ssh_user: String::new(),
            host_ssh_keys: Vec::new(),
            container_ssh_keys: Vec::new(),
            app_ports: Vec::new(),
        }
    }
}

/// A published port: `host` on 127.0.0.1 reaches `container` in the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host: u16,
    pub container: u16,
}

/// `GET /api/tasks/{id}` and the answer of `/terminate` (and, in dstack-rs, of `POST /api/tasks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInfoResponse {
    pub id: String,
    pub status: TaskStatus,
    #[serde(default)]
    pub termination_reason: String,
    #[serde(default)]
    pub termination_message: String,
    /// `None` until the task started; `[]` in host network mode; in process mode
    /// `[{"host":<runner port>,"container":10999}]`.
    #[serde(default)]
    pub ports: Option<Vec<PortMapping>>,
    /// `None` until the first image layer was seen.
    #[serde(default)]
    pub image_pull_progress: Option<ImagePullProgress>,
    #[serde(default)]
    pub container_name: String,
    #[serde(default)]
    pub container_id: String,
    /// **[quirk]** spelt `gpus_ids` on the wire.
    #[serde(default)]
    pub gpus_ids: Vec<String>,
}

impl TaskInfoResponse {
    /// The host port that reaches `container_port` (the runner: [`crate::RUNNER_HTTP_PORT`]).
    pub fn host_port(&self, container_port: u16) -> Option<u16> {
        self.ports.as_ref()?.iter().find(|p| p.container == container_port).map(|p| p.host)
    }
}

/// One entry of `GET /api/tasks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskListItem {
    pub id: String,
    pub status: TaskStatus,
}

/// `GET /api/tasks`: every task the shim knows, terminated ones included, in no order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskListResponse {
    pub tasks: Vec<TaskListItem>,
}

/// The body of `POST /api/tasks/{id}/terminate`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TerminateBody {
    pub termination_reason: String,
    pub termination_message: String,
    /// Seconds between SIGTERM and SIGKILL; the server sends 0 (kill at once).
    pub timeout: u64,
}

/// The body of `POST /api/shutdown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ShutdownBody {
    pub force: bool,
}

/// `GET /api/instance/health`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InstanceHealthResponse {
    pub dcgm: Option<DcgmHealth>,
}

/// DCGM's health check result; `overall_health`/`health`: 0 pass, 10 warn, 20 fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DcgmHealth {
    pub overall_health: i64,
    pub incidents: Vec<DcgmIncident>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DcgmIncident {
    pub system: i64,
    pub health: i64,
    pub error_message: String,
    pub error_code: i64,
    pub entity_group_id: i64,
    pub entity_id: i64,
}

/// `GET /api/instance/info`; both fields are absent on a host without GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InstanceInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_vendor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_driver_version: Option<String>,
}

/// The install state of an agent binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ComponentStatus {
    NotInstalled,
    Installed,
    Installing,
    Error,
}

/// One entry of `GET /api/components`; `version` is `""` unless installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentInfo {
    pub name: String,
    pub version: String,
    pub status: ComponentStatus,
}

/// `GET /api/components`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ComponentsResponse {
    pub components: Vec<ComponentInfo>,
}

/// `<home>/host_info.json`, written by the shim in service mode (spec agents.md §1.12) and read by
/// the server when it deploys an SSH-fleet host. Only the first GPU's name and memory are kept.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostInfo {
    /// `nvidia`, `amd`, or `none` without GPUs.
    pub gpu_vendor: String,
    #[serde(default)]
    pub gpu_name: String,
    /// MiB.
    #[serde(default)]
    pub gpu_memory: u64,
    #[serde(default)]
    pub gpu_count: u32,
    /// Every non-loopback interface address in CIDR form (`10.0.0.5/24`, IPv6 included).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Bytes available (not total) on the file system of Docker's root dir.
    pub disk_size: u64,
    pub cpus: u32,
    /// Bytes of RAM.
    pub memory: u64,
}
