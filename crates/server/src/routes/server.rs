//! Server information and the non-API routes.

use axum::response::Html;
use dstack_api::DSTACK_VERSION;
use dstack_api::server::{Healthcheck, ServerInfo};

use super::Json;

/// `GET /`: answers 200 (dstack's `login` follows redirects from here).
pub(super) async fn root() -> Html<&'static str> {
    Html("<!doctype html><title>dstack</title><p>dstack-rs server. The API is under <code>/api</code>.</p>")
}

pub(super) async fn healthcheck() -> Json<Healthcheck> {
    Json(Healthcheck { status: "running".to_owned() })
}

pub(super) async fn get_info() -> Json<ServerInfo> {
    Json(ServerInfo { server_version: DSTACK_VERSION.to_owned() })
}

/// No SSO providers: `dstack login` then says so and exits.
pub(super) async fn list_auth_providers() -> Json<Vec<serde_json::Value>> {
    Json(Vec::new())
}

/// Backend types this server can configure (none yet; runs use the local fleet).
pub(super) async fn list_backend_types() -> Json<Vec<String>> {
    Json(Vec::new())
}
