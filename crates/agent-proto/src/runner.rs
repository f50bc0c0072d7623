//! `dstack-runner`'s API (spec agents.md §2.3–2.6): submit a job, upload its code and files,
//! run it, pull its states and logs, stop it.

use std::collections::BTreeMap;

use dstack_api::runs::{JobSpec, RunSpec};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The runner's own state.
///
/// ```text
/// wait_submit ──submit──▶ wait_run ──run──▶ serve_logs ──job ends / stop──▶ wait_logs_finished ──▶ exit
///                 ▲   └─submit─┘                                              (one pull, or a timeout)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunnerState {
    WaitSubmit,
    WaitRun,
    ServeLogs,
    WaitLogsFinished,
}

/// `run` of a [`SubmitBody`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitRun {
    pub id: Uuid,
    pub run_spec: RunSpec,
}

/// `job_submission` of a [`SubmitBody`]; its id is `DSTACK_JOB_ID`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitJobSubmission {
    pub id: Uuid,
}

/// Where the other nodes of a multi-node job are.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterInfo {
    pub job_ips: Vec<String>,
    pub master_job_ip: String,
    pub gpus_per_job: i64,
    pub gpus_per_node: Vec<i64>,
}

/// How the runner clones a remote repo.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RepoCredentials {
    pub clone_url: Option<String>,
    pub private_key: Option<String>,
    pub oauth_token: Option<String>,
}

/// The body of `POST /api/submit`.
///
/// dstack's server restricts `job_spec` and `run_spec` to the fields the runner reads
/// (`_SUBMIT_BODY_INCLUDE`); dstack-rs sends them whole, so both are the `dstack-api` types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitBody {
    pub run: SubmitRun,
    pub job_spec: JobSpec,
    pub job_submission: SubmitJobSubmission,
    #[serde(default)]
    pub cluster_info: ClusterInfo,
    /// Always `{}`: the server interpolates secrets into `job_spec.env`.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    #[serde(default)]
    pub repo_credentials: Option<RepoCredentials>,
    /// Bytes of job output per hour; `None` or 0: unlimited.
    #[serde(default)]
    pub log_quota_hour: Option<u64>,
    #[serde(default)]
    pub run_spec: Option<RunSpec>,
}

/// The answer of `POST /api/run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunResponse {
    pub working_dir: String,
    pub username: String,
}

/// A job state the runner reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    /// In dstack's enum but never emitted.
    Terminating,
    Terminated,
    Failed,
    Done,
}

impl JobState {
    /// The wire name (`running`, `done`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Terminating => "terminating",
            JobState::Terminated => "terminated",
            JobState::Failed => "failed",
            JobState::Done => "done",
        }
    }
}

/// Termination reasons the runner sets.
pub mod reason {
    pub const EXECUTOR_ERROR: &str = "executor_error";
    pub const CONTAINER_EXITED_WITH_ERROR: &str = "container_exited_with_error";
    pub const MAX_DURATION_EXCEEDED: &str = "max_duration_exceeded";
    pub const LOG_QUOTA_EXCEEDED: &str = "log_quota_exceeded";
}

/// One job state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStateEvent {
    pub state: JobState,
    /// Unix milliseconds, strictly increasing across states and logs.
    pub timestamp: i64,
    #[serde(default)]
    pub termination_reason: String,
    #[serde(default)]
    pub termination_message: String,
    /// Set for `done` and `failed`; -1 if the process was killed by a signal.
    #[serde(default)]
    pub exit_status: Option<i32>,
}

/// One chunk of output (not a line); `message` is base64 on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEvent {
    #[serde(with = "base64_bytes")]
    pub message: Vec<u8>,
    pub timestamp: i64,
}

/// `GET /api/pull?timestamp=<ms>`: everything after `timestamp`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PullResponse {
    pub job_states: Vec<JobStateEvent>,
    pub job_logs: Vec<LogEvent>,
    pub runner_logs: Vec<LogEvent>,
    /// The latest timestamp issued; the next pull's `timestamp`.
    pub last_updated: i64,
    #[serde(default)]
    pub no_connections_secs: Option<i64>,
    /// False once the runner is in `wait_logs_finished`: this answer holds everything.
    pub has_more: bool,
}

/// `GET /api/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MetricsResponse {
    pub timestamp_micro: i64,
    pub cpu_usage_micro: u64,
    pub memory_usage_bytes: u64,
    pub memory_working_set_bytes: u64,
    #[serde(default)]
    pub gpus: Vec<GpuMetrics>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GpuMetrics {
    pub gpu_memory_usage_bytes: u64,
    pub gpu_util_percent: u64,
}

mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        // Go encodes a nil []byte as null.
        let text = Option::<String>::deserialize(d)?.unwrap_or_default();
        STANDARD.decode(text.as_bytes()).map_err(serde::de::Error::custom)
    }
}
