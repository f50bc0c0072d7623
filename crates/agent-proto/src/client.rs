//! Async clients of the two agents and of the gateway; one method per route.

use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::HealthcheckResponse;
use crate::gateway as gw;
use crate::runner::{MetricsResponse, PullResponse, RunResponse, SubmitBody};
use crate::shim::{
    ComponentsResponse, InstanceHealthResponse, InstanceInfo, ShutdownBody, TaskConfig, TaskInfoResponse,
    TaskListResponse, TerminateBody,
};

/// Why a call to an agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The agent could not be reached, or the connection broke.
    #[error("cannot reach the agent at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The agent answered with an error status; `message` is its plain-text body, trimmed.
    #[error("the agent answered {status} to {url}: {message}")]
    Status { url: String, status: u16, message: String },
    /// The agent answered 2xx with a body that is not the expected JSON.
    #[error("unexpected answer from {url}: {source}")]
    Decode {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

impl AgentError {
    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            AgentError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The HTTP plumbing both clients share.
#[derive(Debug, Clone)]
struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    fn new(base_url: &str) -> Http {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Http::with_client(base_url, client)
    }

    fn with_client(base_url: &str, client: reqwest::Client) -> Http {
        Http { base: base_url.trim_end_matches('/').to_owned(), client }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(
        &self,
        url: String,
        req: reqwest::RequestBuilder,
    ) -> Result<(String, Response), AgentError> {
        let resp = req.send().await.map_err(|source| AgentError::Unreachable { url: url.clone(), source })?;
        let status = resp.status();
        if status.is_success() {
            return Ok((url, resp));
        }
        let message = resp.text().await.unwrap_or_default().trim().to_owned();
        Err(AgentError::Status { url, status: status.as_u16(), message })
    }

    async fn json<T: DeserializeOwned>(
        &self,
        url: String,
        req: reqwest::RequestBuilder,
    ) -> Result<T, AgentError> {
        let (url, resp) = self.send(url, req).await?;
        let bytes =
            resp.bytes().await.map_err(|source| AgentError::Unreachable { url: url.clone(), source })?;
        serde_json::from_slice(&bytes).map_err(|source| AgentError::Decode { url, source })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, AgentError> {
        let url = self.url(path);
        self.json(url.clone(), self.client.get(url)).await
    }

    async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, AgentError> {
        let url = self.url(path);
        self.json(url.clone(), self.client.post(url).json(body)).await
    }

    async fn post_plain(
        &self,
        path: &str,
        req: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<(), AgentError> {
        let url = self.url(path);
        let (url, resp) = self.send(url.clone(), req(self.client.post(url))).await?;
        resp.bytes().await.map_err(|source| AgentError::Unreachable { url, source })?;
        Ok(())
    }
}

/// A client of one `dstack-shim`, e.g. `ShimClient::new("http://127.0.0.1:10998")`.
#[derive(Debug, Clone)]
pub struct ShimClient {
    http: Http,
}

impl ShimClient {
    pub fn new(base_url: &str) -> ShimClient {
        ShimClient { http: Http::new(base_url) }
    }

    /// A client that shares `client` (its connection pool and timeouts).
    pub fn with_client(base_url: &str, client: reqwest::Client) -> ShimClient {
        ShimClient { http: Http::with_client(base_url, client) }
    }

    pub async fn healthcheck(&self) -> Result<HealthcheckResponse, AgentError> {
        self.http.get("/api/healthcheck").await
    }

    pub async fn instance_health(&self) -> Result<InstanceHealthResponse, AgentError> {
        self.http.get("/api/instance/health").await
    }

    pub async fn instance_info(&self) -> Result<InstanceInfo, AgentError> {
        self.http.get("/api/instance/info").await
    }

    pub async fn components(&self) -> Result<ComponentsResponse, AgentError> {
        self.http.get("/api/components").await
    }

    /// Submits and starts a task. The answer's body is ignored (the Go shim's is untagged).
    pub async fn submit_task(&self, config: &TaskConfig) -> Result<(), AgentError> {
        self.http.post_plain("/api/tasks", |r| r.json(config)).await
    }

    pub async fn get_task(&self, id: &str) -> Result<TaskInfoResponse, AgentError> {
        self.http.get(&format!("/api/tasks/{id}")).await
    }

    pub async fn list_tasks(&self) -> Result<TaskListResponse, AgentError> {
        self.http.get("/api/tasks").await
    }

    pub async fn terminate_task(
        &self,
        id: &str,
        body: &TerminateBody,
    ) -> Result<TaskInfoResponse, AgentError> {
        self.http.post_json(&format!("/api/tasks/{id}/terminate"), body).await
    }

    /// Removes a terminated task and its files; 409 if it is not terminated.
    pub async fn remove_task(&self, id: &str) -> Result<(), AgentError> {
        self.http.post_plain(&format!("/api/tasks/{id}/remove"), |r| r).await
    }

    pub async fn shutdown(&self, force: bool) -> Result<(), AgentError> {
        self.http.post_plain("/api/shutdown", |r| r.json(&ShutdownBody { force })).await
    }
}

/// A client of one `dstack-runner`, e.g. `RunnerClient::new("http://127.0.0.1:10999")`.
#[derive(Debug, Clone)]
pub struct RunnerClient {
    http: Http,
}

impl RunnerClient {
    pub fn new(base_url: &str) -> RunnerClient {
        RunnerClient { http: Http::new(base_url) }
    }

    /// A client that shares `client` (its connection pool and timeouts).
    pub fn with_client(base_url: &str, client: reqwest::Client) -> RunnerClient {
        RunnerClient { http: Http::with_client(base_url, client) }
    }

    pub async fn healthcheck(&self) -> Result<HealthcheckResponse, AgentError> {
        self.http.get("/api/healthcheck").await
    }

    pub async fn submit(&self, body: &SubmitBody) -> Result<(), AgentError> {
        self.http.post_plain("/api/submit", |r| r.json(body)).await
    }

    /// Uploads the repo blob (a tar of a local or virtual repo, or a git diff).
    pub async fn upload_code(&self, blob: Vec<u8>) -> Result<(), AgentError> {
        self.http.post_plain("/api/upload_code", |r| r.body(blob)).await
    }

    /// Uploads one file archive (a tar) as multipart field `archive`, file name = its id.
    pub async fn upload_archive(&self, id: Uuid, archive: Vec<u8>) -> Result<(), AgentError> {
        let part = reqwest::multipart::Part::bytes(archive).file_name(id.to_string());
        let form = reqwest::multipart::Form::new().part("archive", part);
        self.http.post_plain("/api/upload_archive", |r| r.multipart(form)).await
    }

    /// Starts the job. `None`: the runner answered without a body because setting up the user
    /// or the working dir failed; a `failed` state event says why.
    pub async fn run(&self) -> Result<Option<RunResponse>, AgentError> {
        let url = self.http.url("/api/run");
        let (url, resp) = self.http.send(url.clone(), self.http.client.post(url)).await?;
        let bytes =
            resp.bytes().await.map_err(|source| AgentError::Unreachable { url: url.clone(), source })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&bytes).map(Some).map_err(|source| AgentError::Decode { url, source })
    }

    /// Everything newer than `timestamp` (the previous answer's `last_updated`; 0 at first).
    pub async fn pull(&self, timestamp: i64) -> Result<PullResponse, AgentError> {
        self.http.get(&format!("/api/pull?timestamp={timestamp}")).await
    }

    pub async fn stop(&self) -> Result<(), AgentError> {
        self.http.post_plain("/api/stop", |r| r).await
    }

    /// `None` when the runner has no metrics collector (404).
    pub async fn metrics(&self) -> Result<Option<MetricsResponse>, AgentError> {
        match self.http.get("/api/metrics").await {
            Ok(m) => Ok(Some(m)),
            Err(AgentError::Status { status, .. }) if status == StatusCode::NOT_FOUND.as_u16() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The gateway API (spec agents.md §4.6), what the server calls on `dstack-gateway`. An error
/// answer is [`AgentError::Status`] whose `message` is dstack's `detail` (e.g.
/// [`crate::gateway::replica_already_exists`]'s text, which callers match).
#[derive(Debug, Clone)]
pub struct GatewayClient {
    http: Http,
}

impl GatewayClient {
    /// A client with dstack's gateway timeout (120 s).
    pub fn new(base_url: &str) -> GatewayClient {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        GatewayClient::with_client(base_url, client)
    }

    /// A client that shares `client` (its connection pool and timeouts).
    pub fn with_client(base_url: &str, client: reqwest::Client) -> GatewayClient {
        GatewayClient { http: Http::with_client(base_url, client) }
    }

    pub async fn info(&self) -> Result<gw::InfoResponse, AgentError> {
        self.http.get("/").await.map_err(detail)
    }

    pub async fn set_config(&self, body: &gw::ConfigRequest) -> Result<(), AgentError> {
        self.ok("/api/config", body).await
    }

    pub async fn register_service(
        &self,
        project: &str,
        body: &gw::RegisterServiceRequest,
    ) -> Result<(), AgentError> {
        self.ok(&format!("/api/registry/{project}/services/register"), body).await
    }

    pub async fn unregister_service(&self, project: &str, run: &str) -> Result<(), AgentError> {
        self.ok(&format!("/api/registry/{project}/services/{run}/unregister"), &()).await
    }

    pub async fn register_replica(
        &self,
        project: &str,
        run: &str,
        body: &gw::RegisterReplicaRequest,
    ) -> Result<(), AgentError> {
        self.ok(&format!("/api/registry/{project}/services/{run}/replicas/register"), body).await
    }

    pub async fn unregister_replica(&self, project: &str, run: &str, job_id: &str) -> Result<(), AgentError> {
        self.ok(&format!("/api/registry/{project}/services/{run}/replicas/{job_id}/unregister"), &()).await
    }

    pub async fn register_entrypoint(
        &self,
        project: &str,
        body: &gw::RegisterEntrypointRequest,
    ) -> Result<(), AgentError> {
        self.ok(&format!("/api/registry/{project}/entrypoints/register"), body).await
    }

    pub async fn list_services(&self) -> Result<gw::ServiceListResponse, AgentError> {
        self.http.get("/api/services/list").await.map_err(detail)
    }

    pub async fn collect_stats(&self) -> Result<Vec<gw::ServiceStats>, AgentError> {
        self.http.get("/api/stats/collect").await.map_err(detail)
    }

    async fn ok<B: Serialize>(&self, path: &str, body: &B) -> Result<(), AgentError> {
        let _: gw::OkResponse = self.http.post_json(path, body).await.map_err(detail)?;
        Ok(())
    }
}

/// An error answer's message as dstack's `detail` when the body is `{"detail": "…"}`.
fn detail(e: AgentError) -> AgentError {
    match e {
        AgentError::Status { url, status, message } => {
            let detail = serde_json::from_str::<serde_json::Value>(&message)
                .ok()
                .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned));
            AgentError::Status { url, status, message: detail.unwrap_or(message) }
        }
        other => other,
    }
}
