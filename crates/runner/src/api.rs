//! The HTTP API (spec agents.md §2.3): plain-text errors, JSON answers.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Multipart, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use dstack_agent_proto::runner::{RunnerState, SubmitBody};
use dstack_agent_proto::{AGENT_VERSION, HealthcheckResponse};

use crate::job::{self, StopCause};
use crate::state::Shared;

const MAX_JSON_BYTES: usize = 1 << 20;

pub(crate) fn app(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/healthcheck", get(healthcheck))
        .route("/api/metrics", get(metrics))
        .route("/api/submit", post(submit))
        .route("/api/upload_archive", post(upload_archive))
        .route("/api/upload_code", post(upload_code))
        .route("/api/run", post(run))
        .route("/api/pull", get(pull))
        .route("/api/stop", post(stop))
        .route("/logs_ws", get(crate::ws::logs_ws))
        .layer(DefaultBodyLimit::disable())
        .with_state(shared)
}

/// Go's `http.Error`: a plain-text message and a newline.
fn plain(status: StatusCode, message: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{message}\n")).into_response()
}

fn ok() -> Response {
    plain(StatusCode::OK, "")
}

fn conflict(state: RunnerState) -> Response {
    plain(StatusCode::CONFLICT, &format!("not allowed in the runner state {state:?}"))
}

async fn healthcheck() -> Json<HealthcheckResponse> {
    Json(HealthcheckResponse { service: "dstack-runner".to_owned(), version: AGENT_VERSION.to_owned() })
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    match shared.metrics.sample(&shared.config.temp_dir).await {
        Some(sample) => Json(sample).into_response(),
        None => plain(StatusCode::NOT_FOUND, "Metrics collector is not available"),
    }
}

async fn submit(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    if body.len() > MAX_JSON_BYTES {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, "Request body must not be larger than 1MB");
    }
    if body.is_empty() {
        return plain(StatusCode::BAD_REQUEST, "Request body must not be empty");
    }
    let submit: SubmitBody = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => {
            return plain(StatusCode::BAD_REQUEST, &format!("Request body contains badly-formed JSON ({e})"));
        }
    };
    let mut inner = shared.lock();
    if !matches!(inner.state, RunnerState::WaitSubmit | RunnerState::WaitRun) {
        return conflict(inner.state);
    }
    inner.submit = Some(submit);
    shared.set_state(&mut inner, RunnerState::WaitRun);
    ok()
}

/// The 409 answer unless the runner waits for `/api/run`.
fn unless_wait_run(shared: &Shared) -> Option<Response> {
    let state = shared.lock().state;
    (state != RunnerState::WaitRun).then(|| conflict(state))
}

async fn upload_code(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    if let Some(r) = unless_wait_run(&shared) {
        return r;
    }
    let repo_id = match shared.lock().submit.as_ref() {
        Some(body) => job::repo_id(body),
        None => return conflict(RunnerState::WaitSubmit),
    };
    let dir = shared.config.temp_dir.join("repo_blobs");
    let written = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join(repo_id), &body));
    match written {
        Ok(()) => ok(),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot store the code: {e}")),
    }
}

async fn upload_archive(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    multipart: Option<Multipart>,
) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let Some(content_type) = content_type else {
        return plain(StatusCode::BAD_REQUEST, "missing content-type header");
    };
    if !content_type.starts_with("multipart/form-data") {
        return plain(StatusCode::BAD_REQUEST, &format!("multipart/form-data expected, got {content_type}"));
    }
    let Some(mut multipart) = multipart else {
        return plain(StatusCode::BAD_REQUEST, "missing boundary");
    };
    if let Some(r) = unless_wait_run(&shared) {
        return r;
    }
    let field = match multipart.next_field().await {
        Ok(Some(field)) => field,
        Ok(None) => return plain(StatusCode::BAD_REQUEST, "empty form"),
        Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("bad form: {e}")),
    };
    match field.name() {
        None | Some("") => return plain(StatusCode::BAD_REQUEST, "missing field name"),
        Some("archive") => {}
        Some(other) => return plain(StatusCode::BAD_REQUEST, &format!("unexpected field {other}")),
    }
    let id = match field.file_name() {
        None | Some("") => return plain(StatusCode::BAD_REQUEST, "missing file name"),
        Some(name) => name.to_owned(),
    };
    if id.contains('/') || id == "." || id == ".." {
        return plain(StatusCode::BAD_REQUEST, &format!("bad file name {id}"));
    }
    let bytes = match field.bytes().await {
        Ok(b) => b,
        Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("bad form: {e}")),
    };
    match multipart.next_field().await {
        Ok(None) => {}
        Ok(Some(_)) => return plain(StatusCode::BAD_REQUEST, "extra form field(s)"),
        Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("bad form: {e}")),
    }
    let dir = shared.config.temp_dir.join("file_archives");
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join(&id), &bytes)) {
        Ok(()) => ok(),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot store the archive: {e}")),
    }
}

async fn run(State(shared): State<Arc<Shared>>) -> Response {
    let body = {
        let mut inner = shared.lock();
        if inner.state != RunnerState::WaitRun {
            return conflict(inner.state);
        }
        let Some(body) = inner.submit.clone() else {
            return conflict(inner.state);
        };
        shared.set_state(&mut inner, RunnerState::ServeLogs);
        body
    };
    let prepared = match ssh_for_job(&shared, &body) {
        Err(e) => Ok(Err(e)),
        Ok(()) => {
            let shared = shared.clone();
            let body = body.clone();
            tokio::task::spawn_blocking(move || job::prepare(&shared, &body)).await
        }
    };
    {
        let shared = shared.clone();
        tokio::spawn(async move { shared.tracker.run().await });
    }
    match prepared {
        Ok(Ok(prepared)) => {
            let response = prepared.response();
            shared.runner_log(&format!("starting the job in {}", response.working_dir));
            tokio::spawn(job::execute(shared.clone(), body, prepared));
            Json(response).into_response()
        }
        Ok(Err(e)) => {
            shared.runner_log(&e.message);
            shared.job_state(dstack_agent_proto::runner::JobState::Failed, e.reason, &e.message, None);
            let mut inner = shared.lock();
            shared.set_state(&mut inner, RunnerState::WaitLogsFinished);
            ok()
        }
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("preparing the job: {e}")),
    }
}

/// Adds the job's cluster key to sshd's keys; a dev environment without a running sshd
/// fails, since nobody could connect to it.
fn ssh_for_job(shared: &Shared, body: &SubmitBody) -> Result<(), job::PrepareError> {
    let keys_file = shared.ssh_keys_file.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    if let (Some(file), Some(key)) = (&keys_file, &body.job_spec.ssh_key)
        && let Err(e) = crate::ssh::add_authorized_key(file, &key.public)
    {
        shared.runner_log(&format!("cannot add the job's SSH key: {e}"));
    }
    let dev =
        matches!(body.run.run_spec.configuration, dstack_api::runs::RunConfiguration::DevEnvironment(_));
    let unavailable =
        shared.ssh_unavailable.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    match unavailable {
        Some(why) if dev => Err(job::PrepareError {
            reason: dstack_agent_proto::runner::reason::EXECUTOR_ERROR,
            message: format!("A dev environment needs an SSH server: {why}"),
        }),
        _ => Ok(()),
    }
}

async fn pull(State(shared): State<Arc<Shared>>, Query(query): Query<HashMap<String, String>>) -> Response {
    let raw = query.get("timestamp").map(String::as_str).unwrap_or_default();
    let Ok(after) = raw.parse::<i64>() else {
        return plain(StatusCode::BAD_REQUEST, &format!("bad timestamp {raw:?}: an integer expected"));
    };
    let response = shared.pull(after);
    if !response.has_more {
        shared.pulled.notify_one();
    }
    Json(response).into_response()
}

async fn stop(State(shared): State<Arc<Shared>>) -> Response {
    let state = shared.lock().state;
    match state {
        RunnerState::ServeLogs => {
            shared.runner_log("stop requested");
            shared.stop(StopCause::Stop);
        }
        RunnerState::WaitSubmit | RunnerState::WaitRun => shared.stop_before_run(),
        RunnerState::WaitLogsFinished => {}
    }
    ok()
}
