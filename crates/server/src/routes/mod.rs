//! The route table: `app(state)` builds the whole HTTP surface.
//!
//! Every `/api` route is a POST with a JSON body (dstack's client sends nothing else), checked
//! for the client version first. Handlers are thin: authorization comes from the extractor
//! types in [`crate::auth`], bodies from [`Body`]/[`OptBody`], and errors leave as dstack's
//! error shapes through [`Failure`].

mod files;
mod fleets;
pub(crate) mod gateways;
mod logs;
mod metrics;
mod projects;
mod repos;
mod runs;
mod secrets;
mod server;
pub(crate) mod users;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use dstack_api::{ApiError, DSTACK_VERSION, ValidationDetail};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::state::AppState;

/// The largest request body accepted (dstack's code uploads are capped well below this).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// The whole HTTP surface: [`router`], with the service proxy's common requests taken
/// before routing (see [`App`]).
pub fn app(state: AppState) -> App {
    App { router: router(state.clone()), state }
}

/// The server's service: a request to a service (`/proxy/services/{project}/{run}/…`, see
/// [`crate::services::fast_route`]) goes straight to the service proxy, where the cost per
/// request is the proxy's overhead; every other request, and the proxy's unusual ones, go
/// through the router, which answers them the same way.
#[derive(Clone)]
pub struct App {
    router: Router,
    state: AppState,
}

impl tower::Service<Request> for App {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response, std::convert::Infallible>> + Send>,
    >;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if crate::services::fast_route(req.method(), req.uri().path()).is_some() {
            let state = self.state.clone();
            return Box::pin(async move { Ok(crate::services::proxy_fast(state, req).await) });
        }
        let router = self.router.clone();
        Box::pin(async move { tower::ServiceExt::oneshot(router, req).await })
    }
}

impl App {
    /// What a worker thread of the listener ([`crate::serve`]) does with a request: a
    /// request to a service is proxied right there; every other one goes to the router on the
    /// main runtime.
    pub(crate) async fn dispatch(&self, req: Request) -> Response {
        if crate::services::fast_route(req.method(), req.uri().path()).is_some() {
            return crate::services::proxy_fast(self.state.clone(), req).await;
        }
        let router = self.router.clone();
        match self.state.on_main(tower::ServiceExt::oneshot(router, req)).await {
            Ok(Ok(response)) => response,
            Ok(Err(never)) => match never {},
            Err(e) => {
                if e.is_panic() {
                    tracing::error!(error = %e, "a request handler panicked");
                }
                Failure(ApiError::Internal).into_response()
            }
        }
    }
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
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
        .route("/api/users/refresh_ssh_key", post(users::refresh_ssh_key))
        .route("/api/users/delete", post(users::delete))
        .route("/api/projects/list", post(projects::list))
        .route("/api/projects/create", post(projects::create))
        .route("/api/projects/delete", post(projects::delete))
        .route("/api/projects/{project_name}/get", post(projects::get))
        .route("/api/projects/{project_name}/update", post(projects::update))
        .route("/api/projects/{project_name}/set_members", post(projects::set_members))
        .route("/api/projects/{project_name}/add_members", post(projects::add_members))
        .route("/api/projects/{project_name}/remove_members", post(projects::remove_members))
        .route("/api/project/{project_name}/repos/list", post(repos::list))
        .route("/api/project/{project_name}/repos/get", post(repos::get))
        .route("/api/project/{project_name}/repos/init", post(repos::init))
        .route("/api/project/{project_name}/repos/delete", post(repos::delete))
        .route("/api/runs/list", post(runs::list))
        .route("/api/fleets/list", post(fleets::list_all))
        .route("/api/files/upload_archive", post(files::upload_archive))
        .route("/api/files/get_archive_by_hash", post(files::get_archive_by_hash))
        .route("/api/project/{project_name}/repos/upload_code", post(files::upload_code))
        .route("/api/instances/list", post(fleets::list_instances))
        .route("/api/project/{project_name}/fleets/list", post(fleets::list))
        .route("/api/project/{project_name}/fleets/get", post(fleets::get))
        .route("/api/project/{project_name}/fleets/delete", post(fleets::delete))
        .route("/api/project/{project_name}/fleets/get_plan", post(fleets::get_plan))
        .route("/api/project/{project_name}/fleets/apply", post(fleets::apply))
        .route("/api/project/{project_name}/fleets/delete_instances", post(fleets::delete_instances))
        .route("/api/project/{project_name}/gpus/list", post(fleets::list_gpus))
        .route("/api/project/{project_name}/gateways/list", post(gateways::list))
        .route("/api/project/{project_name}/gateways/get", post(gateways::get))
        .route("/api/project/{project_name}/gateways/get_plan", post(gateways::get_plan))
        .route("/api/project/{project_name}/gateways/apply", post(gateways::apply))
        .route("/api/project/{project_name}/gateways/create", post(gateways::create_route))
        .route("/api/project/{project_name}/gateways/delete", post(gateways::delete))
        .route("/api/project/{project_name}/gateways/set_default", post(gateways::set_default))
        .route(
            "/api/project/{project_name}/gateways/set_wildcard_domain",
            post(gateways::set_wildcard_domain),
        )
        .route("/api/project/{project_name}/runs/get_plan", post(runs::get_plan))
        .route("/api/project/{project_name}/runs/apply", post(runs::apply))
        .route("/api/project/{project_name}/runs/get", post(runs::get))
        .route("/api/project/{project_name}/runs/stop", post(runs::stop))
        .route("/api/project/{project_name}/runs/delete", post(runs::delete))
        .route("/api/project/{project_name}/logs/poll", post(logs::poll))
        .route("/api/project/{project_name}/metrics/job/{run_name}", get(metrics::job))
        .route("/api/project/{project_name}/secrets/list", post(secrets::list))
        .route("/api/project/{project_name}/secrets/get", post(secrets::get))
        .route("/api/project/{project_name}/secrets/create_or_update", post(secrets::create_or_update))
        .route("/api/project/{project_name}/secrets/delete", post(secrets::delete))
        .merge(not_yet_routes())
        .layer(middleware::from_fn(check_client_version));
    Router::new()
        .route("/", get(server::root))
        .route("/healthcheck", get(server::healthcheck))
        .route("/proxy/services/{project_name}/{run_name}", any(crate::services::redirect_to_root))
        .route("/proxy/services/{project_name}/{run_name}/", any(crate::services::proxy_root))
        .route("/proxy/services/{project_name}/{run_name}/{*path}", any(crate::services::proxy_path))
        .route("/proxy/models/{project_name}/models", get(crate::models::list))
        .route("/proxy/models/{project_name}/v1/models", get(crate::models::list))
        .route("/proxy/models/{project_name}/{*endpoint}", post(crate::models::complete))
        .merge(api)
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// dstack (with its UI mounted) answers an unknown POST with 405 and an unknown GET with 404.
/// dstack 0.22 routes this server does not serve yet. They authenticate and check the
/// project like the real ones, then answer a 400 that says so (never a crash, never a 405
/// that would read as "no such route").
const NOT_YET_PROJECT_ROUTES: &[&str] = &[
    "backends/create",
    "backends/update",
    "backends/delete",
    "backends/create_yaml",
    "backends/update_yaml",
    "instances/get",
    "instances/get_instance_health_checks",
    "volumes/list",
    "volumes/get",
    "volumes/create",
    "volumes/delete",
    "exports/create",
    "exports/update",
    "exports/delete",
    "exports/list",
    "imports/list",
    "imports/delete",
    "templates/list",
];

const NOT_YET_GLOBAL_ROUTES: &[&str] = &[
    "/api/volumes/list",
    "/api/events/list",
    "/api/projects/list_only_no_fleets",
    "/api/users/public_keys/list",
    "/api/users/public_keys/add",
    "/api/users/public_keys/delete",
];

fn not_yet_routes() -> Router<AppState> {
    let mut router = Router::new();
    for route in NOT_YET_PROJECT_ROUTES {
        router = router.route(&format!("/api/project/{{project_name}}/{route}"), post(not_yet_project));
    }
    for route in NOT_YET_GLOBAL_ROUTES {
        router = router.route(route, post(not_yet_global));
    }
    router
}

async fn not_yet_project(
    access: crate::auth::ProjectAccess<crate::auth::Member>,
    uri: axum::http::Uri,
) -> Failure {
    let _ = access;
    not_yet(uri.path())
}

async fn not_yet_global(caller: crate::auth::Caller, uri: axum::http::Uri) -> Failure {
    let _ = caller;
    not_yet(uri.path())
}

fn not_yet(path: &str) -> Failure {
    ApiError::error(format!("{path} is not supported by this dstack-rs server yet")).into()
}

async fn no_route(method: Method) -> Failure {
    if method == Method::GET || method == Method::HEAD {
        ApiError::NoRoute.into()
    } else {
        ApiError::MethodNotAllowed.into()
    }
}

/// A GET to a POST-only API route is a 404 in dstack; other mismatches are 405.
async fn method_not_allowed(method: Method) -> Failure {
    if method == Method::GET || method == Method::HEAD {
        ApiError::NoRoute.into()
    } else {
        ApiError::MethodNotAllowed.into()
    }
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
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"detail":"Internal Server Error"}"#,
            )
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
    Bytes::from_request(req, state)
        .await
        .map_err(|_| Failure(ApiError::PayloadTooLarge { limit_bytes: MAX_BODY_BYTES }))
}

fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Failure> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| json_error(bytes, &e))?;
    serde_path_to_error::deserialize(&value)
        .map_err(|e| Failure(ApiError::Validation(Box::new(shape_error(&value, &e)))))
}

fn validation(
    kind: &str,
    loc: Vec<serde_json::Value>,
    msg: &str,
    input: serde_json::Value,
) -> ValidationDetail {
    ValidationDetail { kind: kind.to_owned(), loc, msg: msg.to_owned(), input, ctx: None }
}

/// A body that is not JSON: `json_invalid` at the character offset, as FastAPI reports it.
fn json_error(bytes: &[u8], e: &serde_json::Error) -> Failure {
    let text = String::from_utf8_lossy(bytes);
    let offset: usize =
        text.lines().take(e.line().saturating_sub(1)).map(|l| l.chars().count() + 1).sum::<usize>()
            + e.column().saturating_sub(1);
    let message = e.to_string();
    let python = if message.starts_with("key must be a string") {
        "Expecting property name enclosed in double quotes".to_owned()
    } else if message.starts_with("expected value") || message.starts_with("EOF while parsing a value") {
        "Expecting value".to_owned()
    } else {
        message.split(" at line ").next().unwrap_or(&message).to_owned()
    };
    let mut detail =
        validation("json_invalid", vec!["body".into(), offset.into()], "JSON decode error", json!({}));
    detail.ctx = Some(json!({"error": python}));
    Failure(ApiError::Validation(Box::new(detail)))
}

/// A JSON body of the wrong shape, mapped to pydantic's error types.
fn shape_error(
    body: &serde_json::Value,
    e: &serde_path_to_error::Error<serde_json::Error>,
) -> ValidationDetail {
    let mut loc: Vec<serde_json::Value> = vec!["body".into()];
    let mut at = body;
    for seg in e.path().iter() {
        match seg {
            serde_path_to_error::Segment::Seq { index } => {
                loc.push((*index).into());
                at = at.get(index).unwrap_or(&serde_json::Value::Null);
            }
            serde_path_to_error::Segment::Map { key }
            | serde_path_to_error::Segment::Enum { variant: key } => {
                loc.push(key.as_str().into());
                at = at.get(key.as_str()).unwrap_or(&serde_json::Value::Null);
            }
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    let message = e.inner().to_string();
    let message = message.split(" at line ").next().unwrap_or(&message).to_owned();
    let quoted = |m: &str| m.split('`').nth(1).unwrap_or_default().to_owned();
    if message.starts_with("missing field") {
        let field = quoted(&message);
        let input = at.clone();
        loc.push(field.into());
        return validation("missing", loc, "Field required", input);
    }
    if message.starts_with("unknown field") {
        // The path already ends at the unknown key.
        let field = quoted(&message);
        let input = if loc.last().and_then(|l| l.as_str()) == Some(field.as_str()) {
            at.clone()
        } else {
            let input = at.get(&field).cloned().unwrap_or_default();
            loc.push(field.into());
            input
        };
        return validation("extra_forbidden", loc, "Extra inputs are not permitted", input);
    }
    let input = at.clone();
    if message.starts_with("unknown variant") {
        let allowed: Vec<String> = message
            .split("expected ")
            .nth(1)
            .unwrap_or_default()
            .split(['`', ',', ' '])
            .filter(|s| !s.is_empty() && *s != "one" && *s != "of" && *s != "or")
            .map(|s| format!("'{s}'"))
            .collect();
        let msg = match allowed.split_last() {
            Some((last, rest)) if !rest.is_empty() => {
                format!("Input should be {} or {last}", rest.join(", "))
            }
            Some((last, _)) => format!("Input should be {last}"),
            None => message.clone(),
        };
        return validation("enum", loc, &msg, input);
    }
    let (kind, msg) = if message.contains("expected a string") {
        ("string_type", "Input should be a valid string")
    } else if message.contains("expected a boolean") {
        ("bool_type", "Input should be a valid boolean")
    } else if message.contains("expected i64")
        || message.contains("expected u")
        || message.contains("integer")
    {
        ("int_type", "Input should be a valid integer")
    } else if message.contains("expected a sequence") {
        ("list_type", "Input should be a valid list")
    } else if message.contains("expected struct") || message.contains("expected a map") {
        ("model_attributes_type", "Input should be a valid dictionary or object to extract fields from")
    } else {
        ("value_error", message.as_str())
    };
    validation(kind, loc, msg, input)
}

impl<T: DeserializeOwned> FromRequest<AppState> for Body<T> {
    type Rejection = Failure;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(Failure(ApiError::Validation(Box::new(validation(
                "missing",
                vec!["body".into()],
                "Field required",
                serde_json::Value::Null,
            )))));
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
    // PEP 440-ish: `0.22.6rc1` and `0.22.5.post1` are fine; only the release numbers count.
    let parse = |v: &str| -> Option<(u64, u64, u64)> {
        let release_end = v.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(v.len());
        let (release, rest) = v.split_at(release_end);
        let rest_ok = rest.is_empty()
            || ["a", "b", "rc", "c", "pre", "dev", "post", "+", "-", "alpha", "beta"]
                .iter()
                .any(|p| rest.trim_start_matches(['.', '-', '_']).starts_with(p));
        let release = release.trim_end_matches('.');
        if release.is_empty() || !rest_ok || release.split('.').any(str::is_empty) {
            return None;
        }
        let nums: Vec<u64> = release.split('.').map(|n| n.parse().ok()).collect::<Option<_>>()?;
        Some((nums[0], nums.get(1).copied().unwrap_or(0), nums.get(2).copied().unwrap_or(0)))
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
        assert!(client_version_ok("0.22.6rc1").is_ok());
        assert_eq!(client_version_ok("1").unwrap_err().status(), 400);
        assert_eq!(client_version_ok("").unwrap_err().message(), "Invalid version: ");
        assert_eq!(client_version_ok("0.23.0").unwrap_err().status(), 400);
        assert_eq!(
            client_version_ok("garbage").unwrap_err().body().to_string(),
            r#"{"detail":[{"msg":"Invalid version: garbage","code":null}]}"#
        );
    }
}
