//! The OpenAI-compatible model API of a project (spec agents.md §4.5): `GET models` and
//! `POST chat/completions`, at `/api/models/{project}/…` on the API listener and at `/…` on the
//! project's entrypoint domain (`gateway.<domain>`). Auth is always enforced.
//!
//! As in dstack-rs's in-server model proxy (not dstack's), bodies pass through unchanged, so
//! streaming reaches the client as the replica writes it; a `tgi` model is sent to TGI's
//! OpenAI-compatible `/v1/chat/completions`. Requests count in the service's stats.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use dstack_agent_proto::gateway::ModelFormat;
use dstack_proxy::ProxyError;
use serde_json::json;

use crate::Shared;

/// Request bodies larger than this are refused (dstack's default client body limit).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Serves `path` (relative, e.g. `chat/completions`) of `project`'s model API.
pub(crate) async fn handle(
    shared: &Arc<Shared>,
    project: &str,
    path: &str,
    req: Request<Body>,
) -> Response<Body> {
    match serve(shared, project, path, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn serve(
    shared: &Arc<Shared>,
    project: &str,
    path: &str,
    req: Request<Body>,
) -> Result<Response<Body>, ProxyError> {
    let path = path.trim_end_matches('/');
    let method = req.method().clone();
    if !matches!((&method, path), (&Method::GET, "models") | (&Method::POST, "chat/completions")) {
        return Err(ProxyError::new(StatusCode::NOT_FOUND, "Not Found"));
    }
    shared.auth.check(project, req.headers()).await?;
    let routes = shared.registry.routes();
    let models = routes.models.get(project).cloned().unwrap_or_default();
    if method == Method::GET {
        let data: Vec<_> = models
            .iter()
            .map(|m| json!({"object": "model", "id": m.name, "created": m.created, "owned_by": project}))
            .collect();
        let body = json!({"object": "list", "data": data}).to_string();
        return Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response());
    }
    let (mut parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ProxyError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large"))?;
    let name = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("model").and_then(|m| m.as_str()).map(str::to_owned))
        .ok_or_else(|| {
            ProxyError::new(StatusCode::UNPROCESSABLE_ENTITY, "The body must be JSON with a \"model\"")
        })?;
    let Some(model) = models.iter().find(|m| m.name == name) else {
        return Err(ProxyError::new(
            StatusCode::NOT_FOUND,
            format!("Model {name} not found in project {project}"),
        ));
    };
    let target = match &model.format {
        ModelFormat::Openai { prefix } => format!("{}/chat/completions", prefix.trim_end_matches('/')),
        ModelFormat::Tgi { .. } => "/v1/chat/completions".to_owned(),
    };
    parts.headers.remove(header::AUTHORIZATION);
    parts.headers.remove(header::COOKIE);
    if let Some(host) = &model.route.host_header {
        parts.headers.insert(header::HOST, host.clone());
    }
    let req = Request::from_parts(parts, Body::from(bytes));
    let route = model.route.clone();
    let guard = shared.load.begin(route.stats_key());
    let resp =
        shared.proxy.forward_with_timeout(req, &route.upstreams, &target, &[], route.read_timeout).await;
    Ok(dstack_proxy::load::guard_response(resp, guard))
}
