//! `/api/project/{p}/runs/*` and `/logs/poll`: run specs, plans, runs, jobs, submissions,
//! offers and logs, with dstack 0.22.5's field names and JSON shapes.
//!
//! The run configuration inside a [`RunSpec`] is a `dstack_model` type, so it is validated by
//! the same rules as the YAML. Every other field is declared here.
//!
//! Every struct refuses unknown fields, as dstack's `CoreModel` does: a `Run` is a response,
//! but the client sends it back as `plan.current_resource` in `runs/apply`. Fields that dstack
//! defaults are `#[serde(default)]` with dstack's default; every field is serialized, nulls
//! included, as the server does. What the *client* leaves out of its requests (for older
//! servers) is applied by [`GetRunPlanRequest::to_client_json`] and
//! [`ApplyRunPlanRequest::to_client_json`].
//!
//! The fixtures in `tests/fixtures` were captured from the real server; `tests/runs.rs`
//! round-trips every one of them.

use std::collections::BTreeMap;

use dstack_model::common::BackendType;
use dstack_model::profile::{BackendOptions, Profile, RetryEvent, UtilizationPolicy};
use dstack_model::resources::{CpuArch, GpuVendor, ResourcesSpec};
use dstack_model::run::{
    DevEnvironmentConfiguration, MountPoint, RegistryAuth, RepoExistsAction, ServiceConfiguration,
    TaskConfiguration,
};
use dstack_model::service::{HttpHeader, HttpMethod, ProbeType};
use dstack_model::string_enum;
use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

string_enum! {
    /// The status of a run.
    ///
    /// ```text
    ///            (submit)                      (submit with schedule)
    ///               |                                   |
    ///               v                                   v
    ///          SUBMITTED <------------------------- PENDING <-----------------+
    ///               |      retry backoff / cron fires  ^   ^                  |
    ///               v                                  |   | retryable        |
    ///         PROVISIONING <----> RUNNING              |   | replicas only    |
    ///               |               |                  |   |                  |
    ///               +-------+-------+------------------+---+                  |
    ///                       | job failed, retry limit, all done,              |
    ///                       | stop / abort by user, gateway error             |
    ///                       v                                                 |
    ///                  TERMINATING ----- scheduled, not stopped by user ------+
    ///                       |
    ///                       | all jobs finished: reason.to_status()
    ///                       v
    ///            DONE | FAILED | TERMINATED      (finished)
    /// ```
    ///
    /// Active runs derive their status from their jobs' latest submissions (priority
    /// FAILED > RUNNING > PROVISIONING > SUBMITTED > DONE); see scheduling.md §2.1.
    pub enum RunStatus {
        Pending = "pending",
        Submitted = "submitted",
        Provisioning = "provisioning",
        Running = "running",
        Terminating = "terminating",
        Terminated = "terminated",
        Failed = "failed",
        Done = "done",
    }
}

impl RunStatus {
    /// `terminated`, `failed` or `done`.
    pub fn is_finished(self) -> bool {
        matches!(self, RunStatus::Terminated | RunStatus::Failed | RunStatus::Done)
    }
}

string_enum! {
    /// The status of one job submission.
    ///
    /// ```text
    ///   SUBMITTED --(instance assigned / capacity created)--> PROVISIONING
    ///       |                                                   |      |
    ///       |                               shim accepted task  |      | container backend:
    ///       |                                                   v      | runner reachable
    ///       |                                                PULLING   |
    ///       |                                                   |      |
    ///       |                                                   v      v
    ///       |                                                   RUNNING
    ///       |                                                      |
    ///       +------ no capacity, volume error, stop, scale down ---+--- runner done/failed,
    ///       |       (any non-finished status)                      |    unreachable, limits
    ///       v                                                      v
    ///                                TERMINATING
    ///                                     |
    ///                                     | termination_reason.to_status() (FAILED if none)
    ///                                     v
    ///               TERMINATED | ABORTED | FAILED | DONE       (finished)
    /// ```
    ///
    /// See scheduling.md §2.2 for every trigger.
    pub enum JobStatus {
        Submitted = "submitted",
        Provisioning = "provisioning",
        Pulling = "pulling",
        Running = "running",
        Terminating = "terminating",
        Terminated = "terminated",
        Aborted = "aborted",
        Failed = "failed",
        Done = "done",
    }
}

impl JobStatus {
    /// `terminated`, `aborted`, `failed` or `done`.
    pub fn is_finished(self) -> bool {
        matches!(self, JobStatus::Terminated | JobStatus::Aborted | JobStatus::Failed | JobStatus::Done)
    }
}

string_enum! {
    /// Why a run finished (`Run.termination_reason`).
    pub enum RunTerminationReason {
        AllJobsDone = "all_jobs_done",
        JobFailed = "job_failed",
        RetryLimitExceeded = "retry_limit_exceeded",
        StoppedByUser = "stopped_by_user",
        AbortedByUser = "aborted_by_user",
        ServerError = "server_error",
        GatewayError = "gateway_error",
    }
}

impl RunTerminationReason {
    /// The status the run ends in.
    pub fn to_status(self) -> RunStatus {
        match self {
            RunTerminationReason::AllJobsDone => RunStatus::Done,
            RunTerminationReason::StoppedByUser | RunTerminationReason::AbortedByUser => {
                RunStatus::Terminated
            }
            RunTerminationReason::JobFailed
            | RunTerminationReason::RetryLimitExceeded
            | RunTerminationReason::ServerError
            | RunTerminationReason::GatewayError => RunStatus::Failed,
        }
    }

    /// The reason given to the run's jobs that are still active.
    pub fn to_job_termination_reason(self) -> JobTerminationReason {
        match self {
            RunTerminationReason::AllJobsDone => JobTerminationReason::DoneByRunner,
            RunTerminationReason::StoppedByUser => JobTerminationReason::TerminatedByUser,
            RunTerminationReason::AbortedByUser => JobTerminationReason::AbortedByUser,
            RunTerminationReason::JobFailed
            | RunTerminationReason::RetryLimitExceeded
            | RunTerminationReason::ServerError
            | RunTerminationReason::GatewayError => JobTerminationReason::TerminatedByServer,
        }
    }

    /// `Run.error`.
    pub fn to_error(self) -> Option<&'static str> {
        match self {
            RunTerminationReason::RetryLimitExceeded => Some("retry limit exceeded"),
            RunTerminationReason::ServerError => Some("server error"),
            RunTerminationReason::GatewayError => Some("gateway error"),
            _ => None,
        }
    }
}

string_enum! {
    /// Why a job submission finished (`JobSubmission.termination_reason`).
    pub enum JobTerminationReason {
        FailedToStartDueToNoCapacity = "failed_to_start_due_to_no_capacity",
        InterruptedByNoCapacity = "interrupted_by_no_capacity",
        InstanceUnreachable = "instance_unreachable",
        InstanceAccessRevoked = "instance_access_revoked",
        WaitingInstanceLimitExceeded = "waiting_instance_limit_exceeded",
        WaitingRunnerLimitExceeded = "waiting_runner_limit_exceeded",
        TerminatedByUser = "terminated_by_user",
        VolumeError = "volume_error",
        GatewayError = "gateway_error",
        ScaledDown = "scaled_down",
        DoneByRunner = "done_by_runner",
        AbortedByUser = "aborted_by_user",
        TerminatedByServer = "terminated_by_server",
        InactivityDurationExceeded = "inactivity_duration_exceeded",
        TerminatedDueToUtilizationPolicy = "terminated_due_to_utilization_policy",
        ContainerExitedWithError = "container_exited_with_error",
        PortsBindingFailed = "ports_binding_failed",
        CreatingContainerError = "creating_container_error",
        ExecutorError = "executor_error",
        MaxDurationExceeded = "max_duration_exceeded",
        LogQuotaExceeded = "log_quota_exceeded",
    }
}

impl JobTerminationReason {
    /// The status the job ends in.
    pub fn to_status(self) -> JobStatus {
        use JobTerminationReason::*;
        match self {
            TerminatedByUser
            | ScaledDown
            | TerminatedByServer
            | InactivityDurationExceeded
            | TerminatedDueToUtilizationPolicy
            | MaxDurationExceeded => JobStatus::Terminated,
            DoneByRunner => JobStatus::Done,
            AbortedByUser => JobStatus::Aborted,
            FailedToStartDueToNoCapacity
            | InterruptedByNoCapacity
            | InstanceUnreachable
            | InstanceAccessRevoked
            | WaitingInstanceLimitExceeded
            | WaitingRunnerLimitExceeded
            | VolumeError
            | GatewayError
            | ContainerExitedWithError
            | PortsBindingFailed
            | CreatingContainerError
            | ExecutorError
            | LogQuotaExceeded => JobStatus::Failed,
        }
    }

    /// The retry event this reason triggers, if any.
    pub fn to_retry_event(self) -> Option<RetryEvent> {
        match self {
            JobTerminationReason::FailedToStartDueToNoCapacity => Some(RetryEvent::NoCapacity),
            JobTerminationReason::InterruptedByNoCapacity => Some(RetryEvent::Interruption),
            other if other.to_status() == JobStatus::Failed => Some(RetryEvent::Error),
            _ => None,
        }
    }

    /// `JobSubmission.error`: a short phrase, or `None` where `status_message` says it.
    pub fn to_error(self) -> Option<&'static str> {
        use JobTerminationReason::*;
        Some(match self {
            InstanceUnreachable => "instance unreachable",
            InstanceAccessRevoked => "instance access revoked",
            WaitingInstanceLimitExceeded => "waiting instance limit exceeded",
            WaitingRunnerLimitExceeded => "waiting runner limit exceeded",
            VolumeError => "volume error",
            GatewayError => "gateway error",
            ScaledDown => "scaled down",
            InactivityDurationExceeded => "inactivity duration exceeded",
            TerminatedDueToUtilizationPolicy => "utilization policy",
            PortsBindingFailed => "ports binding failed",
            CreatingContainerError => "runner error",
            ExecutorError => "executor error",
            MaxDurationExceeded => "max duration exceeded",
            LogQuotaExceeded => "log quota exceeded",
            _ => return None,
        })
    }
}

string_enum! {
    /// What applying a plan does: create (or replace) the resource, or update it in place.
    pub enum ApplyAction {
        Create = "create",
        Update = "update",
    }
}

string_enum! {
    /// Whether an offer can be used now (`InstanceOfferWithAvailability.availability`).
    pub enum InstanceAvailability {
        Unknown = "unknown",
        Available = "available",
        NotAvailable = "not_available",
        NoQuota = "no_quota",
        NoBalance = "no_balance",
        Idle = "idle",
        Busy = "busy",
    }
}

impl InstanceAvailability {
    /// `unknown`, `available` or `idle`.
    pub fn is_available(self) -> bool {
        matches!(
            self,
            InstanceAvailability::Unknown | InstanceAvailability::Available | InstanceAvailability::Idle
        )
    }
}

string_enum! {
    /// The agent that runs on an instance.
    pub enum InstanceRuntime {
        Shim = "shim",
        Runner = "runner",
    }
}

string_enum! {
    /// A job's container network mode.
    pub enum NetworkMode {
        Host = "host",
        Bridge = "bridge",
    }
}

string_enum! {
    /// The stream a log line came from.
    pub enum LogEventSource {
        Stdout = "stdout",
        Stderr = "stderr",
    }
}

fn default_true() -> bool {
    true
}

fn default_one() -> i64 {
    1
}

fn default_group_name() -> String {
    "0".to_owned()
}

fn default_repo_dir() -> String {
    "/workflow".to_owned()
}

// ---------------------------------------------------------------------------------------------
// RunSpec
// ---------------------------------------------------------------------------------------------

/// A run's configuration: `type` is `dev-environment`, `task` or `service`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum RunConfiguration {
    DevEnvironment(Box<DevEnvironmentConfiguration>),
    Task(Box<TaskConfiguration>),
    Service(Box<ServiceConfiguration>),
}

impl RunConfiguration {
    /// The `type` value.
    pub fn type_name(&self) -> &'static str {
        match self {
            RunConfiguration::DevEnvironment(_) => "dev-environment",
            RunConfiguration::Task(_) => "task",
            RunConfiguration::Service(_) => "service",
        }
    }
}

impl<'de> Deserialize<'de> for RunConfiguration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let json = Value::deserialize(d)?;
        let kind = json.get("type").and_then(Value::as_str).unwrap_or_default();
        let config = match kind {
            "dev-environment" => {
                dstack_model::de::from_json(&json).map(|c| RunConfiguration::DevEnvironment(Box::new(c)))
            }
            "task" => dstack_model::de::from_json(&json).map(|c| RunConfiguration::Task(Box::new(c))),
            "service" => dstack_model::de::from_json(&json).map(|c| RunConfiguration::Service(Box::new(c))),
            _ => {
                return Err(D::Error::custom(format!(
                    "configuration: expected `type` to be one of `dev-environment`, `task`, `service`, found {}",
                    json.get("type").map_or_else(|| "nothing".to_owned(), Value::to_string)
                )));
            }
        };
        config.map_err(|e| D::Error::custom(format!("configuration: {e}")))
    }
}

/// A remote Git repo's state for a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteRunRepoData {
    pub repo_name: String,
    #[serde(default)]
    pub repo_branch: Option<String>,
    #[serde(default)]
    pub repo_hash: Option<String>,
    #[serde(default)]
    pub repo_config_name: Option<String>,
    #[serde(default)]
    pub repo_config_email: Option<String>,
}

/// A local directory uploaded as the repo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalRunRepoData {
    pub repo_dir: String,
}

/// `repo_data`, tagged by `repo_type`. `RemoteRunRepoData.repo_diff` is never on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "repo_type", rename_all = "lowercase")]
pub enum RepoData {
    Remote(RemoteRunRepoData),
    Local(LocalRunRepoData),
    /// No repo (`{"repo_type":"virtual"}`), what `--no-repo` runs and the server default use.
    Virtual,
}

/// An uploaded file archive and where it is unpacked in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileArchiveMapping {
    pub id: Uuid,
    pub path: String,
}

/// What the client submits: the configuration plus where the code is.
///
/// `merged_profile` (dstack's profile overlaid with the configuration's profile parameters) is
/// never on the wire; compute it where needed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// `None`: the server generates a name on apply.
    #[serde(default)]
    pub run_name: Option<String>,
    /// `None`: the server uses `"none"` (the virtual repo).
    #[serde(default)]
    pub repo_id: Option<String>,
    /// `None`: the server uses [`RepoData::Virtual`].
    #[serde(default)]
    pub repo_data: Option<RepoData>,
    /// sha256 of the uploaded repo diff.
    #[serde(default)]
    pub repo_code_hash: Option<String>,
    #[serde(default)]
    pub repo_dir: Option<String>,
    #[serde(default)]
    pub file_archives: Vec<FileArchiveMapping>,
    /// Legacy; sent by old clients and ignored (the server reads `configuration.working_dir`).
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub configuration_path: Option<String>,
    pub configuration: RunConfiguration,
    #[serde(default)]
    pub profile: Option<Profile>,
    /// `None` before submission: the server fills the user's `ssh_public_key`, byte for byte.
    #[serde(default)]
    pub ssh_key_pub: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Offers and instances (`core/models/instances.py`)
// ---------------------------------------------------------------------------------------------

/// One GPU of an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    pub name: String,
    pub memory_mib: i64,
    /// dstack always sets it (NVIDIA unless the name starts with `tpu-`).
    #[serde(default)]
    pub vendor: Option<GpuVendor>,
}

/// A disk; `size_mib: 0` means the size is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    pub size_mib: i64,
}

impl Default for Disk {
    /// 100 GB, dstack's default for data without a disk.
    fn default() -> Disk {
        Disk { size_mib: 102_400 }
    }
}

/// What an instance has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub cpus: i64,
    pub memory_mib: i64,
    pub gpus: Vec<Gpu>,
    pub spot: bool,
    #[serde(default)]
    pub disk: Disk,
    #[serde(default)]
    pub cpu_arch: Option<CpuArch>,
    /// Deprecated; the server always sends `""` and the client drops it from `runs/apply`.
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceType {
    pub name: String,
    pub resources: Resources,
}

/// An instance a backend can provide (or a fleet already has), with its availability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceOfferWithAvailability {
    pub backend: BackendType,
    pub instance: InstanceType,
    pub region: String,
    pub price: f64,
    /// Backend-specific, opaque to the client.
    #[serde(default)]
    pub backend_data: Map<String, Value>,
    pub availability: InstanceAvailability,
    #[serde(default)]
    pub availability_zones: Option<Vec<String>>,
    #[serde(default = "default_shim")]
    pub instance_runtime: InstanceRuntime,
    #[serde(default = "default_one")]
    pub blocks: i64,
    #[serde(default = "default_one")]
    pub total_blocks: i64,
}

fn default_shim() -> InstanceRuntime {
    InstanceRuntime::Shim
}

/// An SSH hop (`ssh_proxy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshConnectionParams {
    pub hostname: String,
    pub username: String,
    pub port: i64,
}

/// The accelerator driver on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuDriverInfo {
    #[serde(default)]
    pub vendor: Option<GpuVendor>,
    pub version: String,
}

// ---------------------------------------------------------------------------------------------
// JobSpec
// ---------------------------------------------------------------------------------------------

/// A port the CLI forwards when attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    pub port: i64,
    #[serde(default)]
    pub map_to_port: Option<i64>,
    pub app_name: String,
    #[serde(default)]
    pub url_path: Option<String>,
    #[serde(default)]
    pub url_query_params: Option<BTreeMap<String, String>>,
}

/// The OS user a job runs as.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnixUser {
    #[serde(default)]
    pub uid: Option<i64>,
    #[serde(default)]
    pub gid: Option<i64>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub groupname: Option<String>,
}

/// What an instance must have for a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirements {
    pub resources: ResourcesSpec,
    #[serde(default)]
    pub max_price: Option<f64>,
    /// `None`: spot or on-demand (`spot_policy: auto`).
    #[serde(default)]
    pub spot: Option<bool>,
    #[serde(default)]
    pub reservation: Option<String>,
    #[serde(default)]
    pub multinode: Option<bool>,
    #[serde(default)]
    pub backend_options: Option<Vec<BackendOptions>>,
}

/// A job's effective retry policy (the profile's `retry` resolved).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRetry {
    pub on_events: Vec<RetryEvent>,
    /// Seconds.
    pub duration: i64,
}

/// A job's SSH key pair; always stripped (`null`) in API responses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSshKey {
    pub private: String,
    pub public: String,
}

/// A resolved service probe (every default filled in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSpec {
    #[serde(rename = "type")]
    pub kind: ProbeType,
    pub url: String,
    #[serde(default = "default_probe_method")]
    pub method: HttpMethod,
    #[serde(default)]
    pub headers: Vec<HttpHeader>,
    #[serde(default)]
    pub body: Option<String>,
    pub timeout: i64,
    pub interval: i64,
    pub ready_after: i64,
    #[serde(default)]
    pub until_ready: bool,
}

fn default_probe_method() -> HttpMethod {
    HttpMethod::Get
}

/// What one job of a run runs, and on what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    #[serde(default)]
    pub replica_num: i64,
    pub job_num: i64,
    /// `<run>-<job_num>-<replica_num>`.
    pub job_name: String,
    #[serde(default = "default_one")]
    pub jobs_per_replica: i64,
    #[serde(default = "default_group_name")]
    pub replica_group: String,
    #[serde(default)]
    pub app_specs: Option<Vec<AppSpec>>,
    #[serde(default)]
    pub user: Option<UnixUser>,
    pub commands: Vec<String>,
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub home_dir: Option<String>,
    pub image_name: String,
    #[serde(default)]
    pub privileged: bool,
    #[serde(default)]
    pub single_branch: Option<bool>,
    #[serde(default)]
    pub max_duration: Option<i64>,
    #[serde(default)]
    pub stop_duration: Option<i64>,
    #[serde(default)]
    pub utilization_policy: Option<UtilizationPolicy>,
    #[serde(default)]
    pub registry_auth: Option<RegistryAuth>,
    pub requirements: Requirements,
    #[serde(default)]
    pub retry: Option<JobRetry>,
    #[serde(default)]
    pub volumes: Option<Vec<MountPoint>>,
    #[serde(default)]
    pub ssh_key: Option<JobSshKey>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub repo_data: Option<RepoData>,
    #[serde(default)]
    pub repo_code_hash: Option<String>,
    #[serde(default = "default_repo_dir")]
    pub repo_dir: String,
    #[serde(default)]
    pub repo_exists_action: Option<RepoExistsAction>,
    #[serde(default)]
    pub file_archives: Vec<FileArchiveMapping>,
    #[serde(default)]
    pub service_port: Option<i64>,
    #[serde(default)]
    pub probes: Vec<ProbeSpec>,
    #[serde(default)]
    pub node_group_index: i64,
    #[serde(default = "default_group_name")]
    pub node_group_name: String,
    #[serde(default)]
    pub node_group_job_index: i64,
}

// ---------------------------------------------------------------------------------------------
// Run, Job, JobSubmission
// ---------------------------------------------------------------------------------------------

/// Where a job runs: set once the instance is provisioned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobProvisioningData {
    pub backend: BackendType,
    #[serde(default)]
    pub base_backend: Option<BackendType>,
    pub instance_type: InstanceType,
    pub instance_id: String,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub internal_ip: Option<String>,
    #[serde(default = "default_true")]
    pub public_ip_enabled: bool,
    #[serde(default)]
    pub instance_network: Option<String>,
    pub region: String,
    #[serde(default)]
    pub availability_zone: Option<String>,
    #[serde(default)]
    pub reservation: Option<String>,
    pub price: f64,
    pub username: String,
    #[serde(default)]
    pub ssh_port: Option<i64>,
    /// The backend starts the shim (VMs, SSH fleets).
    pub dockerized: bool,
    #[serde(default)]
    pub ssh_proxy: Option<SshConnectionParams>,
    /// Backend-specific JSON, as a string.
    #[serde(default)]
    pub backend_data: Option<String>,
    #[serde(default)]
    pub gpu_driver: Option<GpuDriverInfo>,
}

/// What is known only after the job is submitted to an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRuntimeData {
    pub network_mode: NetworkMode,
    /// The GPU share; `None` means all.
    #[serde(default)]
    pub gpu: Option<i64>,
    #[serde(default)]
    pub cpu: Option<f64>,
    /// GB.
    #[serde(default)]
    pub memory: Option<f64>,
    /// Container port to host port, as the shim reports it (`{"10022": 32768}` on the wire).
    #[serde(default)]
    pub ports: Option<BTreeMap<i64, i64>>,
    #[serde(default)]
    pub volume_names: Option<Vec<String>>,
    #[serde(default)]
    pub offer: Option<InstanceOfferWithAvailability>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    pub success_streak: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagePullProgress {
    pub downloaded_bytes: i64,
    pub extracted_bytes: i64,
    pub total_bytes: i64,
    pub is_total_bytes_final: bool,
}

/// One attempt at running a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSubmission {
    pub id: Uuid,
    pub submission_num: i64,
    #[serde(default)]
    pub deployment_num: i64,
    #[serde(with = "crate::time::rfc3339")]
    pub submitted_at: Timestamp,
    #[serde(with = "crate::time::rfc3339")]
    pub last_processed_at: Timestamp,
    #[serde(with = "crate::time::rfc3339_opt", default)]
    pub finished_at: Option<Timestamp>,
    #[serde(default)]
    pub inactivity_secs: Option<i64>,
    pub status: JobStatus,
    /// What the CLI's STATUS column shows (`"no fleets"`, `"exited (1)"`, …).
    #[serde(default)]
    pub status_message: String,
    #[serde(default)]
    pub termination_reason: Option<JobTerminationReason>,
    #[serde(default)]
    pub termination_reason_message: Option<String>,
    #[serde(default)]
    pub exit_status: Option<i64>,
    #[serde(default)]
    pub job_provisioning_data: Option<JobProvisioningData>,
    #[serde(default)]
    pub job_runtime_data: Option<JobRuntimeData>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub probes: Vec<Probe>,
    #[serde(default)]
    pub image_pull_progress: Option<ImagePullProgress>,
}

/// How to connect to a job (informational; the client drops it from `runs/apply`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobConnectionInfo {
    pub ide_name: Option<String>,
    pub attached_ide_url: Option<String>,
    pub proxied_ide_url: Option<String>,
    pub attached_ssh_command: Option<Vec<String>>,
    pub proxied_ssh_command: Option<Vec<String>>,
    /// Keep `None` unless dstack-sshproxy is implemented: when set, the CLI attaches through it.
    pub sshproxy_hostname: Option<String>,
    pub sshproxy_port: Option<i64>,
    pub sshproxy_upstream_id: Option<String>,
}

/// A job and its submissions, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub job_spec: JobSpec,
    pub job_submissions: Vec<JobSubmission>,
    #[serde(default)]
    pub job_connection_info: Option<JobConnectionInfo>,
}

/// The fleet a run landed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunFleet {
    pub id: Uuid,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceModelSpec {
    pub name: String,
    /// A full URL, or a path relative to the server's URL.
    pub base_url: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// A service's endpoint (`Run.service`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// A full URL, or a path relative to the server's URL (`/proxy/services/<project>/<run>/`).
    pub url: String,
    #[serde(default)]
    pub model: Option<ServiceModelSpec>,
    /// Free-form per-feature options (`{"openai": {"model": …}}`).
    #[serde(default)]
    pub options: Map<String, Value>,
}

/// A run as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    pub id: Uuid,
    pub project_name: String,
    /// The submitting user's name.
    pub user: String,
    #[serde(default)]
    pub fleet: Option<RunFleet>,
    #[serde(with = "crate::time::rfc3339")]
    pub submitted_at: Timestamp,
    #[serde(with = "crate::time::rfc3339")]
    pub last_processed_at: Timestamp,
    pub status: RunStatus,
    #[serde(default)]
    pub status_message: String,
    #[serde(default)]
    pub termination_reason: Option<RunTerminationReason>,
    /// The stored spec, with the server's defaults filled in.
    pub run_spec: RunSpec,
    /// Ordered by `(replica_num, job_num)`.
    pub jobs: Vec<Job>,
    /// `jobs[0].job_submissions[-1]`.
    #[serde(default)]
    pub latest_job_submission: Option<JobSubmission>,
    #[serde(default)]
    pub cost: f64,
    #[serde(default)]
    pub service: Option<ServiceSpec>,
    #[serde(default)]
    pub deployment_num: i64,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub deleted: Option<bool>,
    /// Scheduled (cron) runs: the next start.
    #[serde(with = "crate::time::rfc3339_opt", default)]
    pub next_triggered_at: Option<Timestamp>,
}

// ---------------------------------------------------------------------------------------------
// Plans
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobPlan {
    pub job_spec: JobSpec,
    /// At most `max_offers`; `[]` makes the CLI check for fleets to word its warning.
    pub offers: Vec<InstanceOfferWithAvailability>,
    pub total_offers: i64,
    #[serde(default)]
    pub max_price: Option<f64>,
}

/// `runs/get_plan`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunPlan {
    pub project_name: String,
    pub user: String,
    /// The request's spec, echoed: the client sends it back in `runs/apply`.
    pub run_spec: RunSpec,
    /// After the server's defaults.
    #[serde(default)]
    pub effective_run_spec: Option<RunSpec>,
    pub job_plans: Vec<JobPlan>,
    /// The non-deleted run with the same name, in any status.
    #[serde(default)]
    pub current_resource: Option<Run>,
    pub action: ApplyAction,
}

/// `runs/get_plan`. `max_offers` is 1..=10000 when set (checked by the handler).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetRunPlanRequest {
    pub run_spec: RunSpec,
    #[serde(default)]
    pub max_offers: Option<i64>,
    /// Sent only when true.
    #[serde(default)]
    pub reverse_offers: bool,
    #[serde(default)]
    pub full_offers: bool,
    #[serde(default)]
    pub unallocated_resources: bool,
    #[serde(default)]
    pub for_offers_only: bool,
}

/// The plan turned back into input: the echoed `run_spec` and the `current_resource` seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyRunPlanInput {
    pub run_spec: RunSpec,
    /// The apply fails if the run changed since, unless `force`.
    #[serde(default)]
    pub current_resource: Option<Run>,
}

/// `runs/apply`; answered with the [`Run`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyRunPlanRequest {
    pub plan: ApplyRunPlanInput,
    pub force: bool,
}

impl GetRunPlanRequest {
    /// The body as dstack's client sends it: `reverse_offers` only when true, and the run
    /// spec without the fields it leaves out when unset (see [`strip_run_spec_for_client`]).
    pub fn to_client_json(&self) -> Value {
        let mut json = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(obj) = json.as_object_mut() {
            if !self.reverse_offers {
                obj.remove("reverse_offers");
            }
            if let Some(spec) = obj.get_mut("run_spec") {
                strip_run_spec_for_client(spec);
            }
        }
        json
    }
}

impl ApplyRunPlanRequest {
    /// The body as dstack's client sends it (`core/compatibility/runs.py`): the run specs
    /// stripped as in [`strip_run_spec_for_client`]; in `current_resource`, no
    /// `job_connection_info`, no `instance_type.resources.description` in provisioning data,
    /// and no `node_group_*` job spec fields when every job has the default.
    pub fn to_client_json(&self) -> Value {
        let mut json = serde_json::to_value(self).unwrap_or(Value::Null);
        let Some(plan) = json.get_mut("plan") else { return json };
        if let Some(spec) = plan.get_mut("run_spec") {
            strip_run_spec_for_client(spec);
        }
        let Some(run) = plan.get_mut("current_resource").filter(|r| r.is_object()) else { return json };
        if let Some(spec) = run.get_mut("run_spec") {
            strip_run_spec_for_client(spec);
        }
        let jobs = self.plan.current_resource.as_ref().map(|r| r.jobs.as_slice()).unwrap_or_default();
        let specs = || jobs.iter().map(|j| &j.job_spec);
        let mut drop = Vec::new();
        if specs().all(|s| s.node_group_index == 0) {
            drop.push("node_group_index");
        }
        if specs().all(|s| s.node_group_name == "0") {
            drop.push("node_group_name");
        }
        if specs().all(|s| s.node_group_job_index == 0) {
            drop.push("node_group_job_index");
        }
        if let Some(jobs) = run.get_mut("jobs").and_then(Value::as_array_mut) {
            for job in jobs {
                let Some(job) = job.as_object_mut() else { continue };
                job.remove("job_connection_info");
                if let Some(spec) = job.get_mut("job_spec").and_then(Value::as_object_mut) {
                    for key in &drop {
                        spec.remove(*key);
                    }
                }
                if let Some(subs) = job.get_mut("job_submissions").and_then(Value::as_array_mut) {
                    subs.iter_mut().for_each(strip_resources_description);
                }
            }
        }
        if let Some(latest) = run.get_mut("latest_job_submission") {
            strip_resources_description(latest);
        }
        json
    }
}

/// Removes what dstack's client leaves out of a run spec it sends: `configuration.nodes` and
/// `configuration.groups` of a task when null, `groups` of a service when null.
pub fn strip_run_spec_for_client(spec: &mut Value) {
    let Some(conf) = spec.get_mut("configuration").and_then(Value::as_object_mut) else { return };
    let kind = conf.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
    let keys: &[&str] = match kind.as_str() {
        "task" => &["nodes", "groups"],
        "service" => &["groups"],
        _ => &[],
    };
    for key in keys {
        if conf.get(*key).is_some_and(Value::is_null) {
            conf.remove(*key);
        }
    }
}

fn strip_resources_description(submission: &mut Value) {
    if let Some(resources) = submission
        .pointer_mut("/job_provisioning_data/instance_type/resources")
        .and_then(Value::as_object_mut)
    {
        resources.remove("description");
    }
}

// ---------------------------------------------------------------------------------------------
// list / get / stop / delete
// ---------------------------------------------------------------------------------------------

/// `POST /api/runs/list` (not project-scoped); answered with `[Run]`.
/// The handler checks `limit` in 0..=100 and `job_submissions_limit` in 0..=10.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListRunsRequest {
    pub project_name: Option<String>,
    pub repo_id: Option<String>,
    pub username: Option<String>,
    pub only_active: bool,
    pub include_jobs: bool,
    /// `None`: the maximum, 10.
    pub job_submissions_limit: Option<i64>,
    #[serde(with = "crate::time::rfc3339_opt")]
    pub prev_submitted_at: Option<Timestamp>,
    pub prev_run_id: Option<Uuid>,
    pub limit: i64,
    pub ascending: bool,
}

impl Default for ListRunsRequest {
    fn default() -> ListRunsRequest {
        ListRunsRequest {
            project_name: None,
            repo_id: None,
            username: None,
            only_active: false,
            include_jobs: true,
            job_submissions_limit: None,
            prev_submitted_at: None,
            prev_run_id: None,
            limit: 100,
            ascending: false,
        }
    }
}

/// The most job submissions per job `runs/list` returns.
pub const MAX_JOB_SUBMISSIONS_LIMIT: i64 = 10;

/// `runs/get`: by name or by id.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GetRunRequest {
    pub run_name: Option<String>,
    pub id: Option<Uuid>,
}

/// `runs/stop`; answered with `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopRunsRequest {
    pub runs_names: Vec<String>,
    /// Do not wait for a graceful shutdown.
    pub abort: bool,
}

/// `runs/delete` (finished runs only); answered with `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRunsRequest {
    pub runs_names: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------------

/// `logs/poll`. `start_time` and `end_time` are exclusive; `limit` is 0..=1000 (checked by
/// the handler); `diagnose` returns the runner's own log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollLogsRequest {
    pub run_name: String,
    pub job_submission_id: Uuid,
    #[serde(with = "crate::time::rfc3339_opt", default)]
    pub start_time: Option<Timestamp>,
    #[serde(with = "crate::time::rfc3339_opt", default)]
    pub end_time: Option<Timestamp>,
    #[serde(default)]
    pub descending: bool,
    #[serde(default)]
    pub next_token: Option<String>,
    #[serde(default = "default_logs_limit")]
    pub limit: i64,
    #[serde(default)]
    pub diagnose: bool,
}

fn default_logs_limit() -> i64 {
    100
}

/// One log chunk. `message` is base64 of the raw bytes (which carry their own newlines).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogEvent {
    #[serde(with = "crate::time::rfc3339")]
    pub timestamp: Timestamp,
    pub log_source: LogEventSource,
    pub message: String,
}

/// `logs/poll`'s answer; poll again with `next_token` until it is `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSubmissionLogs {
    pub logs: Vec<LogEvent>,
    #[serde(default)]
    pub external_url: Option<String>,
    #[serde(default)]
    pub next_token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_statuses_match_dstack() {
        let finished: Vec<_> = RunStatus::ALL
            .iter()
            .filter_map(|s| RunStatus::from_wire(s))
            .filter(|s| s.is_finished())
            .collect();
        assert_eq!(finished, [RunStatus::Terminated, RunStatus::Failed, RunStatus::Done]);
        let finished: Vec<_> = JobStatus::ALL
            .iter()
            .filter_map(|s| JobStatus::from_wire(s))
            .filter(|s| s.is_finished())
            .collect();
        assert_eq!(finished, [JobStatus::Terminated, JobStatus::Aborted, JobStatus::Failed, JobStatus::Done]);
    }

    #[test]
    fn termination_reasons_map_like_dstack() {
        assert_eq!(RunTerminationReason::StoppedByUser.to_status(), RunStatus::Terminated);
        assert_eq!(
            RunTerminationReason::AbortedByUser.to_job_termination_reason(),
            JobTerminationReason::AbortedByUser
        );
        assert_eq!(JobTerminationReason::MaxDurationExceeded.to_status(), JobStatus::Terminated);
        assert_eq!(JobTerminationReason::LogQuotaExceeded.to_retry_event(), Some(RetryEvent::Error));
        assert_eq!(JobTerminationReason::ScaledDown.to_retry_event(), None);
        assert_eq!(JobTerminationReason::CreatingContainerError.to_error(), Some("runner error"));
        assert_eq!(JobTerminationReason::ContainerExitedWithError.to_error(), None);
    }

    #[test]
    fn requests_default_like_dstack() {
        let req: ListRunsRequest = serde_json::from_str("{}").unwrap();
        assert!(req.include_jobs);
        assert_eq!(req.limit, 100);
        assert!(serde_json::from_str::<ListRunsRequest>(r#"{"bogus":1}"#).is_err());
        let req: PollLogsRequest = serde_json::from_str(
            r#"{"run_name":"t1","job_submission_id":"7ef49e01-efed-4d04-b4de-f2a586284611"}"#,
        )
        .unwrap();
        assert_eq!(req.limit, 100);
        let err = serde_json::from_str::<RunConfiguration>(r#"{"type":"fleet"}"#).unwrap_err();
        assert!(err.to_string().contains("`dev-environment`, `task`, `service`"), "{err}");
    }
}
