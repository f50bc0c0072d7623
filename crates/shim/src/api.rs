//! The HTTP API (spec agents.md §1.3–1.4): plain-text errors, JSON answers.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dstack_agent_proto::shim::{
    InstanceHealthResponse, ShutdownBody, TaskConfig, TaskListResponse, TaskStatus, TerminateBody,
};
use dstack_agent_proto::{AGENT_VERSION, HealthcheckResponse};
use serde::de::DeserializeOwned;

use crate::tasks::{Handle, Task};
use crate::{Driver, Shim};

const MAX_JSON_BYTES: usize = 1 << 20;

pub(crate) fn app(shim: Arc<Shim>) -> Router {
    Router::new()
        .route("/api/healthcheck", get(healthcheck))
        .route("/api/shutdown", post(shutdown))
        .route("/api/instance/health", get(instance_health))
        .route("/api/instance/info", get(instance_info))
        .route("/api/components", get(components))
        .route("/api/components/install", post(install_component))
        .route("/api/tasks", get(list_tasks).post(submit_task))
        .route("/api/tasks/{id}", get(get_task))
        .route("/api/tasks/{id}/terminate", post(terminate_task))
        .route("/api/tasks/{id}/remove", post(remove_task))
        .route("/metrics/tasks/{id}", get(task_metrics))
        .with_state(shim)
}

fn plain(status: StatusCode, message: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{message}\n")).into_response()
}

/// Go's JSON body rules: at most 1 MiB, not empty, well-formed; unknown fields accepted.
fn json_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, Box<Response>> {
    if body.len() > MAX_JSON_BYTES {
        return Err(Box::new(plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request body must not be larger than 1MB",
        )));
    }
    if body.is_empty() {
        return Err(Box::new(plain(StatusCode::BAD_REQUEST, "Request body must not be empty")));
    }
    serde_json::from_slice(body).map_err(|e| {
        Box::new(plain(StatusCode::BAD_REQUEST, &format!("Request body contains badly-formed JSON ({e})")))
    })
}

fn not_found() -> Response {
    plain(StatusCode::NOT_FOUND, "Not Found")
}

async fn healthcheck() -> Json<HealthcheckResponse> {
    Json(HealthcheckResponse { service: "dstack-shim".to_owned(), version: AGENT_VERSION.to_owned() })
}

async fn shutdown(State(shim): State<Arc<Shim>>, body: Bytes) -> Response {
    if !body.is_empty()
        && let Err(r) = json_body::<ShutdownBody>(&body)
    {
        return *r;
    }
    shim.shutdown.notify_one();
    plain(StatusCode::OK, "")
}

async fn instance_health() -> Json<InstanceHealthResponse> {
    Json(InstanceHealthResponse { dcgm: None })
}

async fn instance_info(State(shim): State<Arc<Shim>>) -> Response {
    Json(crate::host::instance_info(&shim.gpus)).into_response()
}

async fn components(State(shim): State<Arc<Shim>>) -> Response {
    Json(crate::host::components(&shim.config.runner_binary).await).into_response()
}

async fn install_component() -> Response {
    plain(StatusCode::BAD_REQUEST, "installing components is not supported by this shim")
}

async fn list_tasks(State(shim): State<Arc<Shim>>) -> Json<TaskListResponse> {
    Json(TaskListResponse { tasks: shim.store.list() })
}

async fn get_task(State(shim): State<Arc<Shim>>, Path(id): Path<String>) -> Response {
    match shim.store.get(&id) {
        Some(task) => Json(task.info()).into_response(),
        None => not_found(),
    }
}

async fn submit_task(State(shim): State<Arc<Shim>>, body: Bytes) -> Response {
    let config: TaskConfig = match json_body(&body) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    if config.id.is_empty() {
        return plain(StatusCode::BAD_REQUEST, "empty id");
    }
    if config.name.is_empty() {
        return plain(StatusCode::BAD_REQUEST, "empty name");
    }
    if config.id.contains('/') {
        return plain(StatusCode::BAD_REQUEST, "bad id");
    }
    let container_name = Shim::container_name(&config.name, &config.id);
    let task = Task {
        id: config.id.clone(),
        status: TaskStatus::Pending,
        termination_reason: String::new(),
        termination_message: String::new(),
        ports: None,
        image_pull_progress: None,
        runner_dir: shim.runner_dir(&container_name),
        container_name,
        handle: Handle::None,
        gpu_ids: Vec::new(),
        host_keys: None,
    };
    let info = task.info();
    if !shim.store.insert(task) {
        return plain(StatusCode::CONFLICT, &format!("task {} already exists", config.id));
    }
    let use_docker = !config.image_name.is_empty() && shim.docker.is_some();
    let shim2 = shim.clone();
    tokio::spawn(async move {
        match (&shim2.docker, use_docker) {
            (Some(docker), true) => docker.run(shim2.clone(), config).await,
            _ => shim2.process.run(shim2.clone(), config).await,
        }
    });
    Json(info).into_response()
}

async fn terminate_task(State(shim): State<Arc<Shim>>, Path(id): Path<String>, body: Bytes) -> Response {
    let body: TerminateBody = if body.is_empty() {
        TerminateBody::default()
    } else {
        match json_body(&body) {
            Ok(b) => b,
            Err(r) => return *r,
        }
    };
    let Some(task) = shim.store.terminate(&id, &body.termination_reason, &body.termination_message) else {
        return not_found();
    };
    shim.terminate(&task, Duration::from_secs(body.timeout)).await;
    match shim.store.get(&id) {
        Some(task) => Json(task.info()).into_response(),
        None => not_found(),
    }
}

async fn remove_task(State(shim): State<Arc<Shim>>, Path(id): Path<String>) -> Response {
    let Some(task) = shim.store.get(&id) else { return not_found() };
    if task.status != TaskStatus::Terminated {
        return plain(StatusCode::CONFLICT, &format!("task {id} is not terminated"));
    }
    if let Err(e) = shim.remove(&task).await {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, &e);
    }
    shim.store.remove(&id);
    plain(StatusCode::OK, "")
}

async fn task_metrics() -> Response {
    plain(StatusCode::NOT_FOUND, "DCGM Exporter is not available")
}
