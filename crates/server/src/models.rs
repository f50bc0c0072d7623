//! The OpenAI-compatible model proxy at `/proxy/models/{project}/…`: every running service of
//! the project with a `model` is one model, and requests go to a ready replica of the service
//! whose model the body names.
//!
//! dstack serves `models` and `chat/completions` there (re-encoding bodies through its own
//! schema); we serve those, `completions`, and the same three under `v1/`, and pass bodies
//! through unchanged, so streaming (`"stream": true`) reaches the client as the replica writes
//! it and fields dstack's schema does not know survive. A model in `tgi` format is sent to
//! TGI's OpenAI-compatible Messages API (`/v1/chat/completions`) instead of being translated
//! to TGI's native API as dstack does.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use dstack_api::runs::{RunConfiguration, RunSpec, RunStatus, ServiceSpec};
use dstack_db::{RunFilter, RunRow};
use dstack_proxy::ProxyError;
use serde_json::json;

use crate::services::{authorize, internal, ready_upstreams};
use crate::state::AppState;

/// Request bodies larger than this are refused (dstack's default client body limit).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// One model: a running service with a `model`.
struct Model {
    name: String,
    run: RunRow,
    /// Where the replica serves the OpenAI API (`/v1` by default).
    prefix: String,
}

/// The project's models, newest service first (the one a name picks when several share it).
async fn models(state: &AppState, project_id: uuid::Uuid) -> Result<Vec<Model>, ProxyError> {
    let filter = RunFilter { project_id, only_active: true, limit: 1000, ..RunFilter::default() };
    let runs = state.db.list_runs(&filter).await.map_err(internal)?;
    let mut out = Vec::new();
    for listing in runs {
        let run = listing.run;
        if run.status != RunStatus::Running.as_str() {
            continue;
        }
        let Some(spec) = run.service_spec.as_deref() else { continue };
        let spec: ServiceSpec = serde_json::from_str(spec).map_err(internal)?;
        let Some(model) = spec.model else { continue };
        let options = spec.options.get("openai").and_then(|o| o.get("model"));
        let prefix = match options.and_then(|m| m.get("format")).and_then(|f| f.as_str()) {
            Some("openai") => {
                options.and_then(|m| m.get("prefix")).and_then(|p| p.as_str()).unwrap_or("/v1").to_owned()
            }
            _ => "/v1".to_owned(),
        };
        out.push(Model { name: model.name, run, prefix });
    }
    out.sort_by_key(|m| std::cmp::Reverse(m.run.submitted_at));
    Ok(out)
}

async fn project_for(
    state: &AppState,
    project_name: &str,
    headers: &axum::http::HeaderMap,
) -> Result<dstack_db::ProjectRow, ProxyError> {
    let denied = || {
        ProxyError::new(
            StatusCode::FORBIDDEN,
            format!("Unauthenticated or unauthorized to access project {project_name}"),
        )
    };
    let project = state.db.project_by_name(project_name).await.map_err(internal)?.ok_or_else(denied)?;
    authorize(state, &project, headers).await?;
    Ok(project)
}

/// `GET /proxy/models/{project}/models` (and `v1/models`): OpenAI's model list.
pub(crate) async fn list(
    State(state): State<AppState>,
    Path(project_name): Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    let result = async {
        let project = project_for(&state, &project_name, &headers).await?;
        let data: Vec<serde_json::Value> = models(&state, project.id)
            .await?
            .into_iter()
            .map(|m| {
                json!({"object": "model", "id": m.name, "created": m.run.submitted_at.as_second(), "owned_by": project_name})
            })
            .collect();
        Ok::<_, ProxyError>(axum::Json(json!({"object": "list", "data": data})).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /proxy/models/{project}/chat/completions` and `completions` (also under `v1/`): to a
/// ready replica of the model the body names, at the model's prefix.
pub(crate) async fn complete(
    State(state): State<AppState>,
    Path((project_name, endpoint)): Path<(String, String)>,
    req: Request,
) -> Response {
    match forward(&state, &project_name, &endpoint, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn forward(
    state: &AppState,
    project_name: &str,
    endpoint: &str,
    req: Request,
) -> Result<Response, ProxyError> {
    let endpoint = endpoint.trim_start_matches("v1/");
    if endpoint != "chat/completions" && endpoint != "completions" {
        return Err(ProxyError::new(StatusCode::NOT_FOUND, "Not Found"));
    }
    let project = project_for(state, project_name, req.headers()).await?;
    let (mut parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ProxyError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("The request body is larger than {MAX_BODY} bytes"),
        )
    })?;
    let name = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("model").and_then(|m| m.as_str()).map(str::to_owned))
        .ok_or_else(|| {
            ProxyError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "The body must be a JSON object with a string `model`",
            )
        })?;
    let model = models(state, project.id).await?.into_iter().find(|m| m.name == name).ok_or_else(|| {
        ProxyError::new(StatusCode::NOT_FOUND, format!("Model {name} not found in project {project_name}"))
    })?;
    let spec: RunSpec = serde_json::from_str(&model.run.run_spec).map_err(internal)?;
    let RunConfiguration::Service(conf) = &spec.configuration else {
        return Err(internal(format!("run {} with a model is no service", model.run.run_name)));
    };
    let upstreams = ready_upstreams(state, model.run.id, conf.port.container_port).await?;
    let path = format!("{}/{endpoint}", model.prefix.trim_end_matches('/'));
    parts.headers.remove(header::CONTENT_LENGTH);
    let req = Request::from_parts(parts, Body::from(bytes));
    Ok(state.proxy.forward(req, &upstreams, &path, &[header::AUTHORIZATION]).await)
}
