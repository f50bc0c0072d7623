//! The gateway's HTTP API (spec agents.md §4.6): what the server calls on `dstack-gateway`
//! (`server/services/gateways/client.py` in dstack 0.22.5).
//!
//! Errors are `400 {"detail": "…"}`; the server relies on two texts, built by
//! [`service_already_registered`] and [`replica_already_exists`].
//!
//! Request bodies accept unknown fields and default what dstack defaults. Private keys travel
//! as [`Secret`], whose `Debug` shows nothing of the key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The scaling windows of `/api/stats/collect`, in seconds.
pub const STATS_WINDOWS: [u64; 3] = [30, 60, 300];

/// dstack's `DEFAULT_SERVICE_READ_TIMEOUT`: seconds between two reads from a replica.
pub const DEFAULT_READ_TIMEOUT: u64 = 300;

/// The text of the error for a duplicate service (`SERVICE_ALREADY_REGISTERED_ERROR_TEMPLATE`).
pub fn service_already_registered(project: &str, run: &str) -> String {
    format!("Service {project}/{run} is already registered")
}

/// The text of the error for a duplicate replica; dstack's server matches it exactly.
pub fn replica_already_exists(replica: &str, project: &str, run: &str) -> String {
    format!("Replica {replica} already exists in service {project}/{run}")
}

/// A string that must never be logged (an SSH private key).
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "Secret(empty)" } else { "Secret(…)" })
    }
}

/// `GET /`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfoResponse {
    pub version: String,
}

/// The answer of every mutation: `{"status": "ok"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OkResponse {
    pub status: String,
}

impl Default for OkResponse {
    fn default() -> Self {
        OkResponse { status: "ok".to_owned() }
    }
}

/// `POST /api/config`: the ACME settings (`DSTACK_ACME_SERVER`, `DSTACK_ACME_EAB_KID`,
/// `DSTACK_ACME_EAB_HMAC_KEY` on the server).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConfigRequest {
    #[serde(default)]
    pub acme_server: Option<String>,
    #[serde(default)]
    pub acme_eab_kid: Option<String>,
    #[serde(default)]
    pub acme_eab_hmac_key: Option<Secret>,
    /// dstack-rs's extension: the URL the gateway asks for project membership
    /// (`POST <url>/api/projects/<project>/get`); overrides the gateway's `--server-url`.
    /// dstack's gateway reaches the server through the server's reverse SSH tunnel instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_url: Option<String>,
}

/// What a rate limit counts by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RateLimitKey {
    /// The client's IP address.
    IpAddress,
    /// The value of a request header (requests without it are not limited, as in nginx).
    Header { header: String },
}

/// One `rate_limits` entry of a service: `rps` requests per second per key, `burst` more at
/// once, for paths under `prefix` (the longest matching prefix wins).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    pub prefix: String,
    pub key: RateLimitKey,
    pub rps: f64,
    pub burst: u64,
}

/// How a model's replicas speak.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "lowercase")]
pub enum ModelFormat {
    /// The OpenAI API under `prefix` (`/v1` by default).
    Openai { prefix: String },
    /// Text Generation Inference.
    Tgi { chat_template: String, eos_token: String },
}

/// `options.openai.model` of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatModel {
    /// Always `chat` in dstack 0.22.
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(flatten)]
    pub format: ModelFormat,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAiOptions {
    pub model: ChatModel,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServiceOptions {
    #[serde(default)]
    pub openai: Option<OpenAiOptions>,
}

fn default_read_timeout() -> u64 {
    DEFAULT_READ_TIMEOUT
}

/// `POST /api/registry/{project}/services/register`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterServiceRequest {
    /// The run id (hex); optional only for pre-0.21 callers.
    #[serde(default)]
    pub id: Option<String>,
    pub run_name: String,
    pub domain: String,
    pub https: bool,
    pub auth: bool,
    pub client_max_body_size: u64,
    #[serde(default)]
    pub options: ServiceOptions,
    /// The project's SSH key, for the tunnels to the replicas.
    pub ssh_private_key: Secret,
    #[serde(default)]
    pub rate_limits: Vec<RateLimit>,
    #[serde(default)]
    pub has_router_replica: bool,
    #[serde(default = "default_read_timeout")]
    pub read_timeout: u64,
}

/// `POST …/services/{run}/set_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetServiceIdRequest {
    pub id: String,
}

/// An SSH hop (dstack's `SSHConnectionParams`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshConnectionParams {
    pub hostname: String,
    pub username: String,
    pub port: u16,
}

/// `POST …/services/{run}/replicas/register`.
///
/// dstack always sends `ssh_host` (`root@localhost`, the job's container) and `ssh_port`;
/// dstack-rs also accepts a replica without them (or with `ssh_port` 0), which the gateway
/// reaches directly at `internal_ip:app_port`, and `ssh_private_key`, the key of `ssh_host`
/// when it is not the project's (an SSH-fleet host, whose sshd knows the fleet's key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterReplicaRequest {
    pub job_id: String,
    pub app_port: u16,
    #[serde(default)]
    pub ssh_host: String,
    #[serde(default)]
    pub ssh_port: u16,
    #[serde(default)]
    pub ssh_proxy: Option<SshConnectionParams>,
    /// `None`: the project's key.
    #[serde(default)]
    pub ssh_proxy_private_key: Option<Secret>,
    #[serde(default)]
    pub ssh_head_proxy: Option<SshConnectionParams>,
    #[serde(default)]
    pub ssh_head_proxy_private_key: Option<Secret>,
    #[serde(default)]
    pub internal_ip: Option<String>,
    /// dstack-rs: the key of `ssh_host`; `None`: the project's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_private_key: Option<Secret>,
}

/// `POST /api/registry/{project}/entrypoints/register`: `gateway.<domain>` serves the
/// project's model API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterEntrypointRequest {
    pub domain: String,
    pub https: bool,
    #[serde(default = "default_read_timeout")]
    pub read_timeout: u64,
}

/// `GET /api/services/list`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServiceListResponse {
    pub services: Vec<ServiceListItem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceListItem {
    pub id: Option<String>,
    pub project_name: String,
    pub run_name: String,
    pub replicas: Vec<ServiceListReplicaItem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceListReplicaItem {
    pub id: String,
}

/// One window of `/api/stats/collect`: requests, and their average duration in seconds
/// (rounded to milliseconds; 0 without requests).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Stat {
    pub requests: u64,
    pub request_time: f64,
}

/// One service of `GET /api/stats/collect`; `stats` is keyed by the window in seconds (JSON
/// object keys `"30"`, `"60"`, `"300"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStats {
    pub project_name: String,
    pub run_name: String,
    pub stats: BTreeMap<u64, Stat>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dstacks_bodies_decode() {
        let svc: RegisterServiceRequest = serde_json::from_str(
            r#"{"id":"abc","run_name":"Svc","domain":"svc.gw.example.com","https":true,"auth":true,
                "client_max_body_size":67108864,
                "options":{"openai":{"model":{"type":"chat","name":"llama","format":"openai","prefix":"/v1"}}},
                "rate_limits":[{"prefix":"/","key":{"type":"ip_address"},"rps":10.0,"burst":5},
                               {"prefix":"/api","key":{"type":"header","header":"X-Key"},"rps":0.5,"burst":0}],
                "ssh_private_key":"-----BEGIN OPENSSH PRIVATE KEY-----","has_router_replica":false}"#,
        )
        .expect("decodes");
        assert_eq!(svc.read_timeout, 300);
        assert_eq!(svc.rate_limits[1].key, RateLimitKey::Header { header: "X-Key".into() });
        let model = &svc.options.openai.as_ref().expect("openai").model;
        assert_eq!(model.format, ModelFormat::Openai { prefix: "/v1".into() });
        assert!(!format!("{svc:?}").contains("BEGIN"), "keys never in Debug");

        let replica: RegisterReplicaRequest = serde_json::from_str(
            r#"{"job_id":"j1","app_port":8000,"ssh_host":"root@localhost","ssh_port":10022,
                "ssh_proxy":{"hostname":"1.2.3.4","username":"ubuntu","port":22},
                "ssh_proxy_private_key":null,"ssh_head_proxy":null,"ssh_head_proxy_private_key":null,
                "internal_ip":"10.0.0.2"}"#,
        )
        .expect("decodes");
        assert_eq!(replica.ssh_proxy.as_ref().map(|p| p.port), Some(22));
        assert_eq!(replica.ssh_private_key, None, "dstack sends no key of its own for a replica");

        let stats = ServiceStats {
            project_name: "p".into(),
            run_name: "r".into(),
            stats: STATS_WINDOWS.iter().map(|&w| (w, Stat::default())).collect(),
        };
        assert_eq!(
            serde_json::to_string(&stats).expect("encodes"),
            r#"{"project_name":"p","run_name":"r","stats":{"30":{"requests":0,"request_time":0.0},"60":{"requests":0,"request_time":0.0},"300":{"requests":0,"request_time":0.0}}}"#
        );
    }
}
