//! A typed, blocking client for the dstack 0.22 HTTP API (what our CLI uses), and the CLI's
//! configuration file, `~/.dstack/config.yml`.
//!
//! The client speaks exactly what dstack's own client speaks: POST with JSON, `Authorization:
//! Bearer`, `X-API-VERSION`, and dstack's error bodies turned back into messages.

pub mod config;

use dstack_api::DSTACK_VERSION;
use dstack_api::fleets::{
    ApplyFleetPlanRequest, DeleteFleetInstancesRequest, DeleteFleetsRequest, Fleet, FleetPlan,
    GetFleetPlanRequest, GetFleetRequest, Instance, ListInstancesRequest, ListProjectFleetsRequest,
};
use dstack_api::gpus::{ListGpusRequest, ListGpusResponse};
use dstack_api::repos::SaveRepoCredsRequest;
use dstack_api::runs::{
    ApplyRunPlanRequest, DeleteRunsRequest, GetRunPlanRequest, GetRunRequest, JobSubmissionLogs,
    ListRunsRequest, PollLogsRequest, Run, RunPlan, StopRunsRequest,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// What went wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error; `message` is what dstack's CLI would show.
    #[error("{message}")]
    Api { status: u16, code: Option<String>, message: String },
    #[error("cannot reach {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("unexpected answer from {url}: {reason}")]
    Decode { url: String, reason: String },
}

impl ClientError {
    /// A 400 with code `resource_not_exists` (a missing run, secret, …).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Api { code: Some(code), .. } if code == "resource_not_exists")
    }
}

/// A connection to one server as one user.
#[derive(Debug, Clone)]
pub struct Client {
    base_url: String,
    token: String,
    http: reqwest::blocking::Client,
}

impl Client {
    pub fn new(base_url: &str, token: &str) -> Result<Client, ClientError> {
        let http = reqwest::blocking::Client::builder()
            .build()
            .map_err(|e| ClientError::Transport { url: base_url.to_owned(), reason: e.to_string() })?;
        Ok(Client { base_url: base_url.trim_end_matches('/').to_owned(), token: token.to_owned(), http })
    }

    /// The server's URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// POSTs `body` (or nothing) to `path` and reads the JSON answer as `T`.
    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let url = format!("{}/{}", self.base_url, path.trim_start_matches('/'));
        let mut req = self.http.post(&url).bearer_auth(&self.token).header("X-API-VERSION", DSTACK_VERSION);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp =
            req.send().map_err(|e| ClientError::Transport { url: url.clone(), reason: e.to_string() })?;
        let status = resp.status().as_u16();
        let bytes =
            resp.bytes().map_err(|e| ClientError::Transport { url: url.clone(), reason: e.to_string() })?;
        if status != 200 {
            return Err(api_error(&url, status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode { url, reason: e.to_string() })
    }

    /// Uploads a `files:` archive (`/api/files/upload_archive`, multipart field `file` named by
    /// the archive's sha256).
    pub fn upload_archive(
        &self,
        hash: &str,
        archive: Vec<u8>,
    ) -> Result<dstack_api::repos::FileArchive, ClientError> {
        let url = format!("{}/api/files/upload_archive", self.base_url);
        let bytes = self.post_file(&url, hash, archive)?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode { url, reason: e.to_string() })
    }

    pub fn get_project(&self, project: &str) -> Result<dstack_api::projects::Project, ClientError> {
        self.post::<(), _>(&format!("/api/projects/{project}/get"), None)
    }

    pub fn get_my_user(&self) -> Result<dstack_api::users::UserWithCreds, ClientError> {
        self.post::<(), _>("/api/users/get_my_user", None)
    }

    pub fn list_secrets(&self, project: &str) -> Result<Vec<dstack_api::secrets::Secret>, ClientError> {
        self.post::<(), _>(&format!("/api/project/{project}/secrets/list"), None)
    }

    pub fn get_secret(&self, project: &str, name: &str) -> Result<dstack_api::secrets::Secret, ClientError> {
        self.post(&format!("/api/project/{project}/secrets/get"), Some(&serde_json::json!({"name": name})))
    }

    pub fn set_secret(
        &self,
        project: &str,
        name: &str,
        value: &str,
    ) -> Result<dstack_api::secrets::Secret, ClientError> {
        let body = serde_json::json!({"name": name, "value": value});
        self.post(&format!("/api/project/{project}/secrets/create_or_update"), Some(&body))
    }

    pub fn delete_secrets(&self, project: &str, names: &[String]) -> Result<(), ClientError> {
        let body = serde_json::json!({"secrets_names": names});
        self.post::<_, serde_json::Value>(&format!("/api/project/{project}/secrets/delete"), Some(&body))
            .map(|_| ())
    }
}

/// Runs, logs, repos, fleets, instances and GPUs: what `dstack apply`, `ps`, `logs`, `stop`,
/// `delete`, `offer` and `fleet` send (api.md §4).
impl Client {
    fn project_path(project: &str, rest: &str) -> String {
        format!("/api/project/{project}/{rest}")
    }

    /// `repos/get`; a repo that does not exist is a 400 `resource_not_exists`.
    pub fn get_repo(
        &self,
        project: &str,
        repo_id: &str,
        include_creds: bool,
    ) -> Result<dstack_api::repos::RepoHeadWithCreds, ClientError> {
        let body = dstack_api::repos::GetRepoRequest { repo_id: repo_id.to_owned(), include_creds };
        self.post(&Self::project_path(project, "repos/get"), Some(&body))
    }

    /// `repos/upload_code?repo_id=`: the repo's code blob, multipart field `file` named by its
    /// sha256; answered with `null`.
    pub fn upload_code(
        &self,
        project: &str,
        repo_id: &str,
        hash: &str,
        code: Vec<u8>,
    ) -> Result<(), ClientError> {
        let base = format!("{}{}", self.base_url, Self::project_path(project, "repos/upload_code"));
        let url = reqwest::Url::parse_with_params(&base, &[("repo_id", repo_id)])
            .map_err(|e| ClientError::Transport { url: base.clone(), reason: e.to_string() })?
            .to_string();
        self.post_file(&url, hash, code).map(|_| ())
    }

    /// A multipart POST of one part `file` named `file_name` (dstack's upload shape); the
    /// answer's body on 200.
    fn post_file(&self, url: &str, file_name: &str, data: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        let part = reqwest::blocking::multipart::Part::bytes(data).file_name(file_name.to_owned());
        let form = reqwest::blocking::multipart::Form::new().part("file", part);
        let transport =
            |e: reqwest::Error| ClientError::Transport { url: url.to_owned(), reason: e.to_string() };
        let resp = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .header("X-API-VERSION", DSTACK_VERSION)
            .multipart(form)
            .send()
            .map_err(transport)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().map_err(transport)?.to_vec();
        if status != 200 {
            return Err(api_error(url, status, &bytes));
        }
        Ok(bytes)
    }

    /// `repos/init`; answered with `null`.
    pub fn init_repo(&self, project: &str, req: &SaveRepoCredsRequest) -> Result<(), ClientError> {
        self.post::<_, Value>(&Self::project_path(project, "repos/init"), Some(req)).map(|_| ())
    }

    /// `runs/get_plan`, with the body dstack's client sends.
    pub fn get_run_plan(&self, project: &str, req: &GetRunPlanRequest) -> Result<RunPlan, ClientError> {
        self.post(&Self::project_path(project, "runs/get_plan"), Some(&req.to_client_json()))
    }

    /// `runs/apply`, with the body dstack's client sends.
    pub fn apply_run_plan(&self, project: &str, req: &ApplyRunPlanRequest) -> Result<Run, ClientError> {
        self.post(&Self::project_path(project, "runs/apply"), Some(&req.to_client_json()))
    }

    /// `POST /api/runs/list` (not project-scoped).
    pub fn list_runs(&self, req: &ListRunsRequest) -> Result<Vec<Run>, ClientError> {
        self.post("/api/runs/list", Some(req))
    }

    /// `runs/get` by name.
    pub fn get_run(&self, project: &str, run_name: &str) -> Result<Run, ClientError> {
        let req = GetRunRequest { run_name: Some(run_name.to_owned()), id: None };
        self.post(&Self::project_path(project, "runs/get"), Some(&req))
    }

    /// `runs/stop`; the runs go `terminating` (the call does not wait).
    pub fn stop_runs(&self, project: &str, names: &[String], abort: bool) -> Result<(), ClientError> {
        let req = StopRunsRequest { runs_names: names.to_vec(), abort };
        self.post::<_, Value>(&Self::project_path(project, "runs/stop"), Some(&req)).map(|_| ())
    }

    /// `runs/delete` (finished runs only).
    pub fn delete_runs(&self, project: &str, names: &[String]) -> Result<(), ClientError> {
        let req = DeleteRunsRequest { runs_names: names.to_vec() };
        self.post::<_, Value>(&Self::project_path(project, "runs/delete"), Some(&req)).map(|_| ())
    }

    /// `logs/poll`: one page; poll again with `next_token` until it is `None`.
    pub fn poll_logs(&self, project: &str, req: &PollLogsRequest) -> Result<JobSubmissionLogs, ClientError> {
        self.post(&Self::project_path(project, "logs/poll"), Some(req))
    }

    /// `fleets/list {"include_imported": true}`, as the CLI sends it.
    pub fn list_fleets(&self, project: &str) -> Result<Vec<Fleet>, ClientError> {
        let req = ListProjectFleetsRequest { include_imported: true };
        self.post(&Self::project_path(project, "fleets/list"), Some(&req))
    }

    /// `fleets/get` by name.
    pub fn get_fleet(&self, project: &str, name: &str) -> Result<Fleet, ClientError> {
        let req = GetFleetRequest { name: Some(name.to_owned()), id: None };
        self.post(&Self::project_path(project, "fleets/get"), Some(&req))
    }

    /// `fleets/get_plan`, without `spec.autocreated` (as dstack's client sends it).
    pub fn get_fleet_plan(&self, project: &str, req: &GetFleetPlanRequest) -> Result<FleetPlan, ClientError> {
        let mut body = serde_json::to_value(req).unwrap_or(Value::Null);
        if let Some(spec) = body.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("autocreated");
        }
        self.post(&Self::project_path(project, "fleets/get_plan"), Some(&body))
    }

    /// `fleets/apply`: the plan's echoed spec (with the SSH keys), without `autocreated`.
    pub fn apply_fleet_plan(&self, project: &str, req: &ApplyFleetPlanRequest) -> Result<Fleet, ClientError> {
        let mut body = serde_json::to_value(req).unwrap_or(Value::Null);
        if let Some(spec) = body.pointer_mut("/plan/spec").and_then(Value::as_object_mut) {
            spec.remove("autocreated");
        }
        self.post(&Self::project_path(project, "fleets/apply"), Some(&body))
    }

    /// `fleets/delete`; the fleets go `terminating` (the call does not wait).
    pub fn delete_fleets(&self, project: &str, names: &[String]) -> Result<(), ClientError> {
        let req = DeleteFleetsRequest { names: names.to_vec() };
        self.post::<_, Value>(&Self::project_path(project, "fleets/delete"), Some(&req)).map(|_| ())
    }

    /// `fleets/delete_instances`: those instances of the fleet go `terminating`.
    pub fn delete_fleet_instances(&self, project: &str, name: &str, nums: &[i64]) -> Result<(), ClientError> {
        let req = DeleteFleetInstancesRequest { name: name.to_owned(), instance_nums: nums.to_vec() };
        self.post::<_, Value>(&Self::project_path(project, "fleets/delete_instances"), Some(&req)).map(|_| ())
    }

    /// `POST /api/instances/list` (not project-scoped).
    pub fn list_instances(&self, req: &ListInstancesRequest) -> Result<Vec<Instance>, ClientError> {
        self.post("/api/instances/list", Some(req))
    }

    /// `gpus/list` (`dstack offer --group-by`).
    pub fn list_gpus(&self, project: &str, req: &ListGpusRequest) -> Result<ListGpusResponse, ClientError> {
        let mut body = serde_json::to_value(req).unwrap_or(Value::Null);
        if let Some(spec) = body.get_mut("run_spec") {
            dstack_api::runs::strip_run_spec_for_client(spec);
        }
        self.post(&Self::project_path(project, "gpus/list"), Some(&body))
    }
}

/// Turns dstack's error bodies into the message its CLI shows.
fn api_error(url: &str, status: u16, bytes: &[u8]) -> ClientError {
    let body: serde_json::Value = serde_json::from_slice(bytes).unwrap_or(serde_json::Value::Null);
    let detail = &body["detail"];
    let (code, message) = match status {
        400 if detail.as_array().is_some_and(|d| d.len() == 1) => {
            let d = &detail[0];
            (d["code"].as_str().map(str::to_owned), d["msg"].as_str().unwrap_or("error").to_owned())
        }
        401 | 403 => (None, format!("Access to {url} is denied. Please check your access token")),
        404 => (None, format!("Not found: {url}")),
        422 => (None, format!("Server validation error: {detail}")),
        _ => (None, format!("Unexpected error: status code {status} when requesting {url}: {body}")),
    };
    ClientError::Api { status, code, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_become_messages() {
        let e = api_error("u", 400, br#"{"detail":[{"msg":"Run not found","code":"resource_not_exists"}]}"#);
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "Run not found");
        let e = api_error("http://s/api/x", 403, br#"{"detail":{"msg":"Invalid token","code":null}}"#);
        assert_eq!(e.to_string(), "Access to http://s/api/x is denied. Please check your access token");
        assert!(!e.is_not_found());
    }
}
