//! The route table: `app(state)` builds the whole HTTP surface.
//!
//! Every `/api` route is a POST with a JSON body (dstack's client sends nothing else), checked
//! for the client version first. Handlers are thin: authorization comes from the extractor
//! types in [`crate::auth`], bodies from [`Body`]/[`OptBody`], and errors leave as dstack's
//! error shapes through [`Failure`].

mod projects;
mod server;
mod users;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use dstack_api::{ApiError, DSTACK_VERSION};
use serde::de::DeserializeOwned;

use crate::state::AppState;

/// The largest request body accepted (dstack's code uploads are capped well below this).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Builds the router.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/server/get_info", post(server::get_info))
        .route("/api/auth/list_providers", post(server::list_auth_providers))
        .route("/api/backends/list_types", post(server::list_backend_types))
        .route("/api/users/list", post(users::list))
        .route("/api/users/get_my_user", post(users::get_my_user))
        .route("/api/users/get_user", post(users::get_user))
        .route("/api/users/create", post(users::create))
        .route("/api/users/update", post(users::update))
        .route("/api/users/refresh_token", post(users::refresh_token))
        .route("/api/users/delete", post(users::delete))
        .route("/api/projects/list", post(projects::list))
        .route("/api/projects/create", post(projects::create))
        .route("/api/projects/delete", post(projects::delete))
        .route("/api/projects/{project_name}/get", post(projects::get))
        .route("/api/projects/{project_name}/update", post(projects::update))
        .route("/api/projects/{project_name}/set_members", post(projects::set_members))
        .route("/api/projects/{project_name}/add_members", post(projects::add_members))
        .route("/api/projects/{project_name}/remove_members", post(projects::remove_members))
        .layer(middleware::from_fn(check_client_version));
    Router::new()
        .route("/", get(server::root))
        .route("/healthcheck", get(server::healthcheck))
        .merge(api)
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn no_route() -> Failure {
    ApiError::NoRoute.into()
}

async fn method_not_allowed() -> Failure {
    ApiError::MethodNotAllowed.into()
}

/// An error on its way out as dstack's JSON error shape.
#[derive(Debug)]
pub struct Failure(pub ApiError);

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Failure {
        Failure(e)
    }
}

impl From<dstack_db::DbError> for Failure {
    fn from(e: dstack_db::DbError) -> Failure {
        match e {
            dstack_db::DbError::Conflict { .. } => Failure(ApiError::resource_exists()),
            other => {
                tracing::error!(error = %other, "database error");
                Failure(ApiError::Internal)
            }
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(status, &self.0.body())
    }
}

/// A JSON response with dstack's content type.
pub(crate) fn json_response<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "serializing a response");
            (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "application/json")], r#"{"detail":"Internal Server Error"}"#)
                .into_response()
        }
    }
}

/// A 200 JSON answer.
pub(crate) struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        json_response(StatusCode::OK, &self.0)
    }
}

/// The `null` answer of routes that return nothing.
pub(crate) fn null() -> Json<serde_json::Value> {
    Json(serde_json::Value::Null)
}

/// A required JSON body; a missing or malformed one is a 422 in FastAPI's shape.
pub(crate) struct Body<T>(pub T);

/// An optional JSON body: no body (or `null`) means `T::default()`.
pub(crate) struct OptBody<T>(pub T);

async fn read_body(req: Request, state: &AppState) -> Result<Bytes, Failure> {
    Bytes::from_request(req, state).await.map_err(|_| Failure(ApiError::PayloadTooLarge { limit_bytes: MAX_BODY_BYTES }))
}

fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(bytes).map_err(|e| {
        let kind = if e.is_data() { "value_error" } else { "json_invalid" };
        Failure(ApiError::Validation { loc: vec!["body".to_owned()], msg: e.to_string(), kind })
    })
}

impl<T: DeserializeOwned> FromRequest<AppState> for Body<T> {
    type Rejection = Failure;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(Failure(ApiError::Validation {
                loc: vec!["body".to_owned()],
                msg: "Field required".to_owned(),
                kind: "missing",
            }));
        }
        parse_body(&bytes).map(Body)
    }
}

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptBody<T> {
    type Rejection = Failure;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptBody(T::default()));
        }
        let value: Option<T> = parse_body(&bytes)?;
        Ok(OptBody(value.unwrap_or_default()))
    }
}

/// Keyset pagination as dstack does it: newest first (`created_at` desc, then `id` asc), or
/// oldest first with `ascending` (`created_at` asc, then `id` desc); the page starts after
/// `(prev_created_at, prev_id)`.
pub(crate) fn paginate<T>(
    mut items: Vec<T>,
    key: impl Fn(&T) -> (jiff::Timestamp, uuid::Uuid),
    prev_created_at: Option<jiff::Timestamp>,
    prev_id: Option<uuid::Uuid>,
    limit: Option<i64>,
    ascending: bool,
) -> Vec<T> {
    items.sort_by(|a, b| {
        let (ta, ia) = key(a);
        let (tb, ib) = key(b);
        if ascending { ta.cmp(&tb).then(ib.cmp(&ia)) } else { tb.cmp(&ta).then(ia.cmp(&ib)) }
    });
    if let Some(prev_at) = prev_created_at {
        items.retain(|item| {
            let (at, id) = key(item);
            match (ascending, prev_id) {
                (true, None) => at > prev_at,
                (true, Some(prev)) => at > prev_at || (at == prev_at && id < prev),
                (false, None) => at < prev_at,
                (false, Some(prev)) => at < prev_at || (at == prev_at && id > prev),
            }
        });
    }
    let limit = limit.unwrap_or(i64::MAX).max(0);
    items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    items
}

/// dstack's client-version check: a newer client (by major or minor) is refused; `latest`
/// and `0.0.0*` are development versions and always pass; no header passes.
async fn check_client_version(headers: HeaderMap, req: Request, next: Next) -> Response {
    if let Some(value) = headers.get("x-api-version") {
        let text = value.to_str().unwrap_or("").trim();
        if let Err(e) = client_version_ok(text) {
            return Failure(e).into_response();
        }
    }
    next.run(req).await
}

pub(crate) fn client_version_ok(client: &str) -> Result<(), ApiError> {
    if client == "latest" || client.starts_with("0.0.0") {
        return Ok(());
    }
    let parse = |v: &str| -> Option<(u64, u64, u64)> {
        let core = v.split(['-', '+']).next()?;
        let mut parts = core.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next().unwrap_or("0").parse().ok()?;
        let patch = parts.next().unwrap_or("0").parse().ok()?;
        parts.next().is_none().then_some((major, minor, patch))
    };
    let Some(theirs) = parse(client) else {
        return Err(ApiError::BadVersionHeader { msg: format!("Invalid version: {client}") });
    };
    let ours = parse(DSTACK_VERSION).unwrap_or((0, 0, 0));
    if (theirs.0, theirs.1) > (ours.0, ours.1) {
        return Err(ApiError::error(format!(
            "The client/CLI version ({client}) is incompatible with the server version ({DSTACK_VERSION})."
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_versions() {
        assert!(client_version_ok("0.22.5").is_ok());
        assert!(client_version_ok("0.22.9").is_ok());
        assert!(client_version_ok("0.21.0").is_ok());
        assert!(client_version_ok("latest").is_ok());
        assert!(client_version_ok("0.0.0.dev1").is_ok());
        assert_eq!(client_version_ok("0.23.0").unwrap_err().status(), 400);
        assert_eq!(
            client_version_ok("garbage").unwrap_err().body().to_string(),
            r#"{"detail":[{"msg":"Invalid version: garbage","code":null}]}"#
        );
    }
}
