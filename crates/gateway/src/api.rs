//! The gateway's HTTP API (spec agents.md §4.6), what the server calls. Only the server
//! should reach it: it listens on 127.0.0.1 by default (dstack: 127.0.0.1:8000, reached
//! through the server's SSH tunnel).
//!
//! Errors are dstack's `{"detail": "…"}`, 400 for refused registrations; a body that does not
//! decode is 422, as FastAPI answers, with a message that quotes none of the body's values
//! (it may hold private keys). Project and run names are lower-cased.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{any, get, post};
use dstack_agent_proto::gateway::{
    ConfigRequest, InfoResponse, OkResponse, RegisterEntrypointRequest, RegisterReplicaRequest,
    RegisterServiceRequest, STATS_WINDOWS, ServiceListResponse, ServiceStats, SetServiceIdRequest, Stat,
};
use dstack_proxy::ProxyError;
use serde::de::DeserializeOwned;

use crate::Shared;
use crate::registry::stats_key;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(info))
        .route("/api/config", post(config))
        .route("/api/registry/{project}/services/register", post(register_service))
        .route("/api/registry/{project}/services/{run}/unregister", post(unregister_service))
        .route("/api/registry/{project}/services/{run}/set_id", post(set_id))
        .route("/api/registry/{project}/services/{run}/replicas/register", post(register_replica))
        .route("/api/registry/{project}/services/{run}/replicas/{job}/unregister", post(unregister_replica))
        .route("/api/registry/{project}/entrypoints/register", post(register_entrypoint))
        .route("/api/services/list", get(list_services))
        .route("/api/stats/collect", get(collect_stats))
        .route("/api/auth/{project}", get(auth))
        .route("/api/models/{project}/{*path}", any(models))
        .fallback(|| async { ProxyError::new(StatusCode::NOT_FOUND, "Not Found") })
        .with_state(shared)
}

type Result<T> = std::result::Result<T, ProxyError>;

fn ok() -> Json<OkResponse> {
    Json(OkResponse::default())
}

/// A JSON body; errors name the field and the problem, never a value.
fn decode<T: DeserializeOwned>(body: &Bytes) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| {
        ProxyError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Invalid request body: {}", redact(&e.to_string())),
        )
    })
}

/// `text` with every double-quoted part replaced by `"…"`: serde's messages quote values.
fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut inside = false;
    for c in text.chars() {
        if c == '"' {
            if !inside {
                out.push_str("\"…\"");
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    out
}

async fn info() -> Json<InfoResponse> {
    Json(InfoResponse { version: crate::VERSION.to_owned() })
}

async fn config(State(shared): State<Arc<Shared>>, body: Bytes) -> Result<Json<OkResponse>> {
    let body: ConfigRequest = decode(&body)?;
    if let Some(url) = body.server_url.as_deref().filter(|u| !u.is_empty()) {
        shared.auth.set_server_url(url);
    }
    shared.registry.set_config(body).await?;
    Ok(ok())
}

async fn register_service(
    State(shared): State<Arc<Shared>>,
    Path(project): Path<String>,
    body: Bytes,
) -> Result<Json<OkResponse>> {
    let body: RegisterServiceRequest = decode(&body)?;
    shared.registry.register_service(&project.to_lowercase(), body).await?;
    Ok(ok())
}

async fn unregister_service(
    State(shared): State<Arc<Shared>>,
    Path((project, run)): Path<(String, String)>,
) -> Result<Json<OkResponse>> {
    shared.registry.unregister_service(&project.to_lowercase(), &run.to_lowercase()).await?;
    Ok(ok())
}

async fn set_id(
    State(shared): State<Arc<Shared>>,
    Path((project, run)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<OkResponse>> {
    let body: SetServiceIdRequest = decode(&body)?;
    shared.registry.set_service_id(&project.to_lowercase(), &run.to_lowercase(), body.id).await?;
    Ok(ok())
}

async fn register_replica(
    State(shared): State<Arc<Shared>>,
    Path((project, run)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<OkResponse>> {
    let body: RegisterReplicaRequest = decode(&body)?;
    shared.registry.register_replica(&project.to_lowercase(), &run.to_lowercase(), body).await?;
    Ok(ok())
}

async fn unregister_replica(
    State(shared): State<Arc<Shared>>,
    Path((project, run, job)): Path<(String, String, String)>,
) -> Result<Json<OkResponse>> {
    shared.registry.unregister_replica(&project.to_lowercase(), &run.to_lowercase(), &job).await?;
    Ok(ok())
}

async fn register_entrypoint(
    State(shared): State<Arc<Shared>>,
    Path(project): Path<String>,
    body: Bytes,
) -> Result<Json<OkResponse>> {
    let body: RegisterEntrypointRequest = decode(&body)?;
    shared.registry.register_entrypoint(&project.to_lowercase(), body).await?;
    Ok(ok())
}

async fn list_services(State(shared): State<Arc<Shared>>) -> Json<ServiceListResponse> {
    Json(shared.registry.list_services().await)
}

/// Every registered service with its load over 30, 60 and 300 s; services without traffic
/// get zeros.
async fn collect_stats(State(shared): State<Arc<Shared>>) -> Json<Vec<ServiceStats>> {
    let names = shared.registry.service_names().await;
    let keys: Vec<String> = names.iter().map(|(p, r)| stats_key(p, r)).collect();
    shared.load.retain(&keys);
    let stats = names
        .into_iter()
        .zip(keys)
        .map(|((project_name, run_name), key)| {
            let windows = shared.load.windows(&key, &STATS_WINDOWS);
            let stats = STATS_WINDOWS
                .iter()
                .zip(windows)
                .map(|(&w, load)| {
                    let request_time = load.mean_latency.map_or(0.0, |t| (t * 1000.0).round() / 1000.0);
                    (w, Stat { requests: load.requests, request_time })
                })
                .collect();
            ServiceStats { project_name, run_name, stats }
        })
        .collect();
    Json(stats)
}

/// `GET /api/auth/{project}`: what nginx's `auth_request` asks in dstack.
async fn auth(
    State(shared): State<Arc<Shared>>,
    Path(project): Path<String>,
    req: Request,
) -> Result<Response> {
    shared.auth.check(&project.to_lowercase(), req.headers()).await?;
    Ok(Json(serde_json::json!({"status": "ok"})).into_response())
}

async fn models(
    State(shared): State<Arc<Shared>>,
    Path((project, path)): Path<(String, String)>,
    req: Request<Body>,
) -> Response {
    crate::models::handle(&shared, &project.to_lowercase(), &path, req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_errors_quote_no_values() {
        let err = decode::<RegisterReplicaRequest>(&Bytes::from_static(
            br#"{"job_id":"j","app_port":"-----BEGIN OPENSSH PRIVATE KEY-----"}"#,
        ))
        .expect_err("app_port is a number");
        assert!(!err.detail.contains("BEGIN"), "{}", err.detail);
        assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
    }
}
