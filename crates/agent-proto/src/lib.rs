//! The HTTP APIs of dstack's host agents, as dstack 0.22.5 speaks them: wire types and small
//! async clients.
//!
//! - [`shim`]: `dstack-shim`, the host agent (port 10998). It runs *tasks*: one
//!   `dstack-runner` per job, in a Docker container or, in dstack-rs's process mode, as a plain
//!   child process.
//! - [`runner`]: `dstack-runner`, the in-container agent (port 10999). It runs exactly one job
//!   and serves its state events and logs to the server's `/api/pull` polls.
//! - [`gateway`]: `dstack-gateway`'s API, what the server calls to register services and
//!   replicas on a gateway and to collect their stats.
//! - [`client`]: [`ShimClient`] and [`RunnerClient`], what the server calls them with.
//!
//! Both agents answer errors as plain text (`<msg>\n`) with the HTTP status, and bodiless
//! successes as `200 text/plain` with the body `"\n"`; the clients turn a non-2xx answer into
//! [`AgentError::Status`] carrying the text.
//!
//! **API Boundary:** these types are the wire format between the server and the agents, shared
//! by `dstack-server`, `dstack-shim`, `dstack-runner` and tests; the job and run specs inside
//! [`runner::SubmitBody`] are `dstack-api`'s types, not copies.

pub mod client;
pub mod gateway;
pub mod runner;
pub mod shim;

pub use client::{AgentError, GatewayClient, RunnerClient, ShimClient};

/// The dstack release whose agent APIs these are; what `/api/healthcheck` reports.
pub const AGENT_VERSION: &str = "0.22.5";

/// The runner's HTTP port inside a container, and the `container` side of a task port mapping.
pub const RUNNER_HTTP_PORT: u16 = 10999;
/// The port of the job's sshd inside the container (`DSTACK_RUNNER_SSH_PORT`).
pub const RUNNER_SSH_PORT: u16 = 10022;

/// The shim's default HTTP port.
pub const SHIM_HTTP_PORT: u16 = 10998;

/// A `--log-level` value as a `tracing` filter: the agents accept dstack's logrus numbers
/// (1–6) as well as level names.
pub fn log_level_name(name: &str) -> &str {
    match name {
        "1" | "2" => "error",
        "3" => "warn",
        "4" => "info",
        "5" => "debug",
        "6" => "trace",
        other => other,
    }
}

/// `GET /api/healthcheck` of both agents.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HealthcheckResponse {
    /// `dstack-shim` or `dstack-runner`.
    pub service: String,
    pub version: String,
}

/// Files a runner writes into its temp dir for a supervisor on the same host (the shim's
/// process mode), which may outlive or restart independently of it.
pub mod runner_files {
    /// The job's process group id while the job runs.
    pub const JOB_PID: &str = "job.pid";
    /// The runner's exit code (0: the job ran and its logs were pulled), once it exits.
    pub const EXIT_STATUS: &str = "runner.exit";
}

#[cfg(test)]
mod tests {
    #[test]
    fn logrus_levels_map_to_names() {
        assert_eq!(super::log_level_name("5"), "debug");
        assert_eq!(super::log_level_name("2"), "error");
        assert_eq!(super::log_level_name("warn"), "warn");
    }
}
