//! Services: where a service run is published (`Run.service`) and the in-server proxy at
//! `/proxy/services/{project}/{run}/…` that sends requests to its ready replicas (running and
//! registered by the probes loop, [`crate::pipelines::probes`]: its probes ready or, with no
//! probes, its app listening on its service port, [`replica_listens`]).
//!
//! Without gateways (#5 point 6) every service is published on the server itself, as dstack
//! does for a project without a default gateway. A replica is reached at the host port its
//! shim published for the service port (bridge mode, [`dstack_agent_proto::shim::TaskConfig`]'s
//! `app_ports`), or at the service port itself (the host network, process mode); on an SSH
//! host through the host's one SSH connection ([`crate::ssh_hosts::agent_base_url`]).

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use dstack_api::runs::{
    JobProvisioningData, JobRuntimeData, JobSpec, JobStatus, RunConfiguration, RunSpec, ServiceModelSpec,
    ServiceSpec,
};
use dstack_db::{JobRow, ProjectRow};

use dstack_model::service::{ServiceGateway, ServiceHttps, ServiceModel};
use dstack_proxy::{ProxyError, Upstream};
use tokio::io::AsyncReadExt as _;

use crate::crypto::token_hash;
use crate::state::{AppState, lock};

/// `Run.service` of a service submitted to `project`: its URL on this server and, with a
/// `model`, the OpenAI-compatible base URL (dstack's `_assign_service_to_in_server_proxy`).
/// `Ok(None)` for the other run types; `Err` says why the service cannot be published.
///
/// With `gateway` (what [`service_gateway`] picked), dstack's `_assign_service_to_gateway`:
/// `http(s)://<run>.<domain>`, plus `:<port>` when the local gateway listens on a port other
/// than the scheme's (ours: a local gateway need not own ports 80 and 443).
pub(crate) fn service_spec(
    project: &str,
    run_name: &str,
    spec: &RunSpec,
    gateway: Option<&dstack_db::GatewayRow>,
) -> Result<Option<ServiceSpec>, String> {
    let RunConfiguration::Service(c) = &spec.configuration else { return Ok(None) };
    if let Some(gateway) = gateway {
        return gateway_service_spec(project, run_name, c, gateway).map(Some);
    }
    match &c.gateway {
        Some(ServiceGateway::Ref(reference)) => {
            return Err(format!("Gateway {} does not exist in project {project}", reference_text(reference)));
        }
        Some(ServiceGateway::Bool(true)) => {
            return Err(
                "The service requires a gateway, but there is no default gateway in the project".to_owned()
            );
        }
        Some(ServiceGateway::Bool(false)) | None => {}
    }
    if c.https == Some(ServiceHttps::Bool(false)) {
        return Err("Setting `https: False` is not allowed without a gateway. Please configure a gateway \
                    or remove the `https` property from the service configuration"
            .to_owned());
    }
    let url = format!("/proxy/services/{project}/{run_name}/");
    let (model, options) = match &c.model {
        None => (None, serde_json::Map::new()),
        Some(model) => {
            let (name, base_url) = match model {
                ServiceModel::OpenAi(m) => {
                    (m.name.clone(), format!("{}{}", url.trim_end_matches('/'), m.prefix))
                }
                ServiceModel::Tgi(m) => (m.name.clone(), format!("/proxy/models/{project}/")),
            };
            let dump = serde_json::to_value(model).map_err(|e| e.to_string())?;
            let options =
                serde_json::Map::from_iter([("openai".to_owned(), serde_json::json!({ "model": dump }))]);
            (Some(ServiceModelSpec { name, base_url, kind: "chat".to_owned() }), options)
        }
    };
    Ok(Some(ServiceSpec { url, model, options }))
}

/// The gateway a service is published on (dstack's `assign_service`): the named one, else
/// (unless `gateway: false`) the project's default; `None` means the in-server proxy.
pub(crate) async fn service_gateway(
    state: &AppState,
    project: &ProjectRow,
    spec: &RunSpec,
) -> Result<Option<dstack_db::GatewayRow>, String> {
    let RunConfiguration::Service(c) = &spec.configuration else { return Ok(None) };
    let db = |e: dstack_db::DbError| e.to_string();
    match &c.gateway {
        Some(ServiceGateway::Ref(reference)) => {
            let own = reference.project.as_deref().is_none_or(|p| p == project.name);
            let row = if own {
                state.db.gateway_by_name(project.id, &reference.name).await.map_err(db)?
            } else {
                None
            };
            match row {
                None => Err(format!(
                    "Gateway {} does not exist in project {}",
                    reference_text(reference),
                    project.name
                )),
                Some(row) if row.to_be_deleted => {
                    Err(format!("Gateway {} was marked for deletion", reference_text(reference)))
                }
                Some(row) => Ok(Some(row)),
            }
        }
        Some(ServiceGateway::Bool(false)) => Ok(None),
        other => {
            let default = state.db.default_gateway(project.id).await.map_err(db)?;
            if default.is_none() && matches!(other, Some(ServiceGateway::Bool(true))) {
                return Err("The service requires a gateway, but there is no default gateway in the project"
                    .to_owned());
            }
            Ok(default)
        }
    }
}

fn gateway_service_spec(
    project: &str,
    run_name: &str,
    c: &dstack_model::run::ServiceConfiguration,
    gateway: &dstack_db::GatewayRow,
) -> Result<ServiceSpec, String> {
    use dstack_model::gateway::GatewayConfiguration;
    if gateway.status != "running" {
        return Err("Gateway status is not running".to_owned());
    }
    let conf: GatewayConfiguration =
        serde_json::from_str(&gateway.configuration).map_err(|e| e.to_string())?;
    let https = match &c.https {
        None => true,
        Some(ServiceHttps::Bool(b)) => *b,
        Some(_) => conf.certificate.is_some(),
    };
    if https && conf.certificate.is_none() {
        return Err("Cannot run HTTPS service on gateway with no SSL certificates configured".to_owned());
    }
    let domain =
        gateway.wildcard_domain.as_deref().map(|d| d.trim_start_matches("*.")).filter(|d| !d.is_empty());
    let Some(domain) = domain else { return Err("Domain is required for gateway".to_owned()) };
    let domain = domain.replace("${{ run.project_name }}", project);
    let port_suffix = |scheme_https: bool| {
        let port =
            conf.local.as_ref().and_then(|l| if scheme_https { l.https_port } else { Some(l.http_port) });
        match port {
            Some(p) if p != if scheme_https { 443 } else { 80 } => format!(":{p}"),
            _ => String::new(),
        }
    };
    let scheme = if https { "https" } else { "http" };
    let url = format!("{scheme}://{run_name}.{domain}{}", port_suffix(https));
    let (model, options) = match &c.model {
        None => (None, serde_json::Map::new()),
        Some(model) => {
            let (name, base_url) = match model {
                ServiceModel::OpenAi(m) => (m.name.clone(), format!("{url}{}", m.prefix)),
                ServiceModel::Tgi(m) => {
                    let gw_https = conf.certificate.is_some();
                    let scheme = if gw_https { "https" } else { "http" };
                    (m.name.clone(), format!("{scheme}://gateway.{domain}{}", port_suffix(gw_https)))
                }
            };
            let dump = serde_json::to_value(model).map_err(|e| e.to_string())?;
            let options =
                serde_json::Map::from_iter([("openai".to_owned(), serde_json::json!({ "model": dump }))]);
            (Some(ServiceModelSpec { name, base_url, kind: "chat".to_owned() }), options)
        }
    };
    Ok(ServiceSpec { url, model, options })
}

fn reference_text(reference: &dstack_model::common::EntityReference) -> String {
    match &reference.project {
        Some(project) => format!("{project}/{}", reference.name),
        None => reference.name.clone(),
    }
}

/// `/proxy/services/{project}/{run}`: the service root is the path with a slash.
pub(crate) async fn redirect_to_root(req: Request) -> Response {
    let uri = req.uri();
    let target = match uri.query() {
        Some(q) => format!("{}/?{q}", uri.path()),
        None => format!("{}/", uri.path()),
    };
    Redirect::permanent(&target).into_response()
}

/// `/proxy/services/{project}/{run}/` (any method).
pub(crate) async fn proxy_root(
    State(state): State<AppState>,
    Path((project, run)): Path<(String, String)>,
    req: Request,
) -> Response {
    proxy(&state, &project, &run, "", req).await
}

/// `/proxy/services/{project}/{run}/{path}` (any method).
pub(crate) async fn proxy_path(
    State(state): State<AppState>,
    Path((project, run, path)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    proxy(&state, &project, &run, &path, req).await
}

/// The `(project, run, path)` of a request to `/proxy/services/{project}/{run}/{path}` that
/// [`proxy`] can take as it is, before (and instead of) the router: segments that need no
/// percent-decoding, any method but `HEAD`. `None` for the rest (the root without its slash,
/// encoded names, anything else), which the router's routes above answer: the same answers,
/// the fast path only skips routing and extractors.
pub(crate) fn fast_route<'a>(
    method: &axum::http::Method,
    path: &'a str,
) -> Option<(&'a str, &'a str, &'a str)> {
    // Byte searches, not `contains`/`split_once` with a char: this runs twice per request.
    let rest = path.strip_prefix("/proxy/services/")?;
    if *method == axum::http::Method::HEAD || rest.as_bytes().contains(&b'%') {
        return None;
    }
    let split = |s: &'a str| s.bytes().position(|b| b == b'/').map(|i| (&s[..i], &s[i + 1..]));
    let (project, rest) = split(rest)?;
    let (run, path) = split(rest)?;
    (!project.is_empty() && !run.is_empty()).then_some((project, run, path))
}

/// [`fast_route`]'s requests: what [`proxy_root`] and [`proxy_path`] would answer.
pub(crate) async fn proxy_fast(state: AppState, req: Request) -> Response {
    let uri = req.uri().clone();
    match fast_route(req.method(), uri.path()) {
        Some((project, run, path)) => proxy(&state, project, run, path, req).await,
        None => internal("a request off the fast path reached it").into_response(),
    }
}

async fn proxy(state: &AppState, project: &str, run: &str, path: &str, req: Request) -> Response {
    let mut target = match target(state, project, run, req.headers()).await {
        Ok(target) => target,
        Err(e) => return e.into_response(),
    };
    // The request is load from now on: a service scaled to zero scales up for it.
    let guard = state.load.begin(&target.load_key);
    if target.upstreams.is_empty() {
        // Boxed, as every path a busy service does not take: the future of each request is
        // then small, and so is the copy of it that starts the request.
        target = match Box::pin(wait_for_replica(state, project, run, req.headers())).await {
            Ok(target) => target,
            Err(e) => return e.into_response(),
        };
    }
    let path_and_query = if target.strip_prefix {
        // The raw path after the prefix, as the client wrote it (still %-encoded).
        let raw = req.uri().path();
        let rest = raw
            .strip_prefix("/proxy/services/")
            .and_then(|r| r.strip_prefix(project))
            .and_then(|r| r.strip_prefix('/'))
            .and_then(|r| r.strip_prefix(run))
            .and_then(|r| r.strip_prefix('/'))
            .unwrap_or(path);
        with_query("/", rest, req.uri().query())
    } else {
        with_query(req.uri().path(), "", req.uri().query())
    };
    let drop: &[HeaderName] = if target.auth { &[header::AUTHORIZATION] } else { &[] };
    let resp = state.proxy.forward(req, &target.upstreams, &path_and_query, drop).await;
    dstack_proxy::load::guard_response(resp, guard)
}

/// How often a request held for a service scaled to zero looks for a ready replica.
const WAKE_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// Holds a request to a service with no ready replica that scales from zero (its load makes
/// the runs loop submit a replica at once) until a replica is ready, at most
/// [`AppState::service_wake_timeout`]; a 504 after that, a 404 if the service went away.
async fn wait_for_replica(
    state: &AppState,
    project: &str,
    run: &str,
    headers: &HeaderMap,
) -> Result<Arc<Target>, ProxyError> {
    state.hints.wake_all();
    let deadline = tokio::time::Instant::now() + state.service_wake_timeout;
    loop {
        if tokio::time::Instant::now() + WAKE_POLL > deadline {
            return Err(ProxyError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("Timed out waiting for a replica of service {project}/{run} to be ready"),
            ));
        }
        tokio::time::sleep(WAKE_POLL).await;
        let target = target(state, project, run, headers).await?;
        // Ready replicas listen (the probes loop registers none before).
        if !target.upstreams.is_empty() {
            return Ok(target);
        }
    }
}

/// `{path}{rest}` and `?{query}` if there is one, in one allocation.
fn with_query(path: &str, rest: &str, query: Option<&str>) -> String {
    let mut out = String::with_capacity(path.len() + rest.len() + query.map_or(0, |q| q.len() + 1));
    out.push_str(path);
    out.push_str(rest);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Where a request to a service goes.
struct Target {
    /// The run id as text: the service's key in [`AppState::load`].
    load_key: String,
    /// Empty only for a service that scales from zero (see [`wait_for_replica`]).
    upstreams: Vec<Upstream>,
    auth: bool,
    strip_prefix: bool,
    project: ProjectRow,
}

fn not_found(project: &str, run: &str) -> ProxyError {
    ProxyError::new(StatusCode::NOT_FOUND, format!("Service {project}/{run} not found"))
}

pub(crate) fn internal(e: impl std::fmt::Display) -> ProxyError {
    tracing::error!(error = %e, "service proxy");
    ProxyError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
}

/// How long a looked-up route and a granted token stay good without asking the database again:
/// a replica that became ready (or a run that stopped) is seen within this, and a refused
/// connection to a replica gone meanwhile moves on to the next one.
const ROUTE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// How long past [`ROUTE_TTL`] a route or a grant is still used while one refresh of it runs
/// on the main runtime, so that a busy service's requests neither wait for the database when
/// its entry ages nor all look it up at once (dozens of lookups a second at 30k requests/s).
/// Past it (a service with no recent requests) the request looks it up itself. Their sum
/// stays below [`dstack_decide::run::DRAIN_GRACE`]: a drained replica gets no new request once
/// the grace is over.
const STALE_FOR: std::time::Duration = std::time::Duration::from_millis(500);

/// Recent answers of [`target`], so that a busy service costs no queries per request. Lost on
/// a restart with nothing lost: the database stays the truth.
///
/// Deliberately not `Debug`: it holds the tokens granted in the last [`ROUTE_TTL`] (and
/// [`STALE_FOR`]).
#[derive(Default)]
pub struct Routes {
    /// By project, then run (looked up by `&str`, no allocation).
    /// foldhash: looked up on every request, and only names that were found in the database
    /// are kept.
    targets: std::sync::Mutex<RouteMap>,
    /// Tokens allowed into a project, by a keyed hash of the token (`token_keys`) and the
    /// project id; a hit is confirmed by comparing the token itself in constant time, so a
    /// hash collision only costs a database check. Cheaper per request than the SHA-256 the
    /// database lookup needs; tokens are kept in memory only, never logged.
    granted: std::sync::Mutex<GrantMap>,
    /// Random per process: an outsider cannot aim for a bucket in `granted`.
    token_keys: std::hash::RandomState,
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Routes by project name, then run name.
type RouteMap = FastMap<String, FastMap<String, Cached<Arc<Target>>>>;

/// Granted tokens by (keyed hash of the token, project id).
type GrantMap = FastMap<(u64, uuid::Uuid), Cached<Box<[u8]>>>;

/// A route or a granted token, as of `at`.
struct Cached<T> {
    value: T,
    /// When the lookup that found it began.
    at: std::time::Instant,
    /// A refresh is under way ([`STALE_FOR`]): no other request starts one.
    refreshing: bool,
}

impl<T> Cached<T> {
    fn new(value: T, at: std::time::Instant) -> Cached<T> {
        Cached { value, at, refreshing: false }
    }

    /// Whether the entry may be used `now`, and whether the caller is the one to refresh it
    /// (the first to find it stale).
    fn usable(&mut self, now: std::time::Instant) -> Usable {
        let age = now.saturating_duration_since(self.at);
        if age < ROUTE_TTL {
            Usable::Fresh
        } else if age < ROUTE_TTL + STALE_FOR {
            Usable::Stale { refresh: !std::mem::replace(&mut self.refreshing, true) }
        } else {
            Usable::Expired
        }
    }

    fn expired(&self, now: std::time::Instant) -> bool {
        now.saturating_duration_since(self.at) >= ROUTE_TTL + STALE_FOR
    }
}

enum Usable {
    Fresh,
    Stale { refresh: bool },
    Expired,
}

/// `a == b` in a time that depends only on the lengths.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

async fn target(
    state: &AppState,
    project_name: &str,
    run_name: &str,
    headers: &HeaderMap,
) -> Result<Arc<Target>, ProxyError> {
    let now = std::time::Instant::now();
    let mut refresh = false;
    let cached = {
        let mut targets = lock(&state.routes.targets);
        targets.get_mut(project_name).and_then(|runs| runs.get_mut(run_name)).and_then(|c| {
            match c.usable(now) {
                Usable::Fresh => Some(c.value.clone()),
                Usable::Stale { refresh: first } => {
                    refresh = first;
                    Some(c.value.clone())
                }
                Usable::Expired => None,
            }
        })
    };
    if refresh {
        refresh_route(state, project_name, run_name);
    }
    let target = match cached {
        Some(target) => target,
        None => {
            // On the main runtime: the database's and SSH connections' (this may be a worker
            // thread of the listener). Boxed: a cache miss is rare, and the database's
            // futures would make every request's future (copied once per request) several
            // kilobytes larger.
            let (main, project, run) = (state.clone(), project_name.to_owned(), run_name.to_owned());
            let looked_up = state.on_main(async move { lookup(&main, &project, &run).await });
            let target = Arc::new(Box::pin(looked_up).await.map_err(internal)??);
            let mut targets = lock(&state.routes.targets);
            targets.retain(|_, runs| {
                runs.retain(|_, c| !c.expired(now));
                !runs.is_empty()
            });
            targets
                .entry(project_name.to_owned())
                .or_default()
                .insert(run_name.to_owned(), Cached::new(target.clone(), now));
            target
        }
    };
    if target.auth {
        authorize_cached(state, &target.project, headers, now).await?;
    }
    Ok(target)
}

/// Looks the route of a stale entry up again on the main runtime, while requests go on using
/// the entry. A service gone (or a failed lookup) leaves no entry: the next request looks it
/// up itself and gets the answer.
fn refresh_route(state: &AppState, project: &str, run: &str) {
    let (main, project, run) = (state.clone(), project.to_owned(), run.to_owned());
    state.main.spawn(async move {
        let began = std::time::Instant::now();
        let looked_up = lookup(&main, &project, &run).await;
        let mut targets = lock(&main.routes.targets);
        match looked_up {
            Ok(target) => {
                targets.entry(project).or_default().insert(run, Cached::new(Arc::new(target), began));
            }
            Err(_) => {
                if let Some(runs) = targets.get_mut(&project) {
                    runs.remove(&run);
                }
            }
        }
    });
}

/// [`authorize`], remembering a granted token for [`ROUTE_TTL`] (and [`STALE_FOR`] while it
/// is checked again).
async fn authorize_cached(
    state: &AppState,
    project: &ProjectRow,
    headers: &HeaderMap,
    now: std::time::Instant,
) -> Result<(), ProxyError> {
    let Some(token) = bearer(headers) else { return authorize_on_main(state, project, headers).await };
    let token = token.as_bytes();
    let key = (state.routes.token_keys.hash_one(token), project.id);
    let mut refresh = false;
    let hit = {
        let mut granted = lock(&state.routes.granted);
        match granted.get_mut(&key) {
            Some(grant) if same_bytes(&grant.value, token) => match grant.usable(now) {
                Usable::Fresh => true,
                Usable::Stale { refresh: first } => {
                    refresh = first;
                    true
                }
                Usable::Expired => false,
            },
            _ => false,
        }
    };
    if hit {
        if refresh {
            recheck_grant(state, project, headers, key, token.into());
        }
        return Ok(());
    }
    authorize_on_main(state, project, headers).await?;
    let mut granted = lock(&state.routes.granted);
    granted.retain(|_, grant| !grant.expired(now));
    granted.insert(key, Cached::new(token.into(), now));
    Ok(())
}

/// Checks a stale grant again on the main runtime; a token no longer allowed (or a failed
/// check) loses its grant, so the next request is checked itself.
fn recheck_grant(
    state: &AppState,
    project: &ProjectRow,
    headers: &HeaderMap,
    key: (u64, uuid::Uuid),
    token: Box<[u8]>,
) {
    let (main, project, headers) = (state.clone(), project.clone(), headers.clone());
    state.main.spawn(async move {
        let began = std::time::Instant::now();
        let allowed = authorize(&main, &project, &headers).await.is_ok();
        let mut granted = lock(&main.routes.granted);
        if allowed {
            granted.insert(key, Cached::new(token, began));
        } else {
            granted.remove(&key);
        }
    });
}

/// [`authorize`] on the main runtime, as [`target`]'s lookups; boxed for the same reason.
async fn authorize_on_main(
    state: &AppState,
    project: &ProjectRow,
    headers: &HeaderMap,
) -> Result<(), ProxyError> {
    let (main, project, headers) = (state.clone(), project.clone(), headers.clone());
    let authorized = state.on_main(async move { authorize(&main, &project, &headers).await });
    Box::pin(authorized).await.map_err(internal)?
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    // Bytes, not `split_once(' ')`: this runs for every request.
    let space = value.bytes().position(|b| b == b' ')?;
    let (scheme, token) = (&value[..space], value[space + 1..].trim());
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The route of a service from the database.
async fn lookup(state: &AppState, project_name: &str, run_name: &str) -> Result<Target, ProxyError> {
    let project = state.db.project_by_name(project_name).await.map_err(internal)?;
    let Some(project) = project else { return Err(not_found(project_name, run_name)) };
    let run = state.db.run_by_name(project.id, run_name).await.map_err(internal)?;
    let Some(run) = run.filter(|r| r.service_spec.is_some()) else {
        return Err(not_found(project_name, run_name));
    };
    let spec: RunSpec = serde_json::from_str(&run.run_spec).map_err(internal)?;
    let RunConfiguration::Service(conf) = &spec.configuration else {
        return Err(not_found(project_name, run_name));
    };
    let upstreams = ready_upstreams(state, run.id, conf.port.container_port).await?;
    use dstack_api::runs::RunStatus;
    let active = matches!(
        RunStatus::from_wire(&run.status),
        Some(RunStatus::Pending | RunStatus::Submitted | RunStatus::Provisioning | RunStatus::Running)
    );
    if upstreams.is_empty() && !(active && scales_from_zero(conf)) {
        return Err(not_found(project_name, run_name));
    }
    Ok(Target {
        load_key: run.id.to_string(),
        upstreams,
        auth: conf.auth,
        strip_prefix: conf.strip_prefix,
        project,
    })
}

/// A service with a replica group that may have no replicas (`replicas.min` 0 with
/// `scaling`): a request waits for a replica instead of a 404.
fn scales_from_zero(conf: &dstack_model::run::ServiceConfiguration) -> bool {
    dstack_decide::jobspec::replica_groups(conf)
        .iter()
        .any(|g| g.replicas.min == Some(0) && g.scaling.is_some())
}

/// Where the ready replicas of run `run_id` serve `service_port`. A replica whose address
/// cannot be found is left out (and logged).
pub(crate) async fn ready_upstreams(
    state: &AppState,
    run_id: uuid::Uuid,
    service_port: i64,
) -> Result<Vec<Upstream>, ProxyError> {
    let ready = ready_replicas(state, run_id).await?;
    let mut upstreams = Vec::with_capacity(ready.len());
    for job in &ready {
        match replica_addr(state, job, Some(service_port)).await {
            Ok(addr) => upstreams.push(Upstream { id: job.id.to_string(), addr }),
            Err(e) => tracing::warn!(job = %job.job_name, error = %e, "replica address unknown"),
        }
    }
    Ok(upstreams)
}

/// The replicas of run `run_id` that receive traffic: running, ready, not draining (a replica
/// being drained, which a rolling deployment replaces, gets no new requests).
pub(crate) async fn ready_replicas(state: &AppState, run_id: uuid::Uuid) -> Result<Vec<JobRow>, ProxyError> {
    let jobs = state.db.jobs_of_runs(&[run_id]).await.map_err(internal)?;
    let running = running_replicas(&jobs);
    let ids: Vec<uuid::Uuid> = running.iter().map(|j| j.id).collect();
    let registered = state.db.registered_jobs(&ids).await.map_err(internal)?;
    Ok(running
        .into_iter()
        .filter(|j| is_ready(j, &registered) && j.drain_started_at.is_none())
        .cloned()
        .collect())
}

/// The port on the replica's host where its service port is published (the service port
/// itself when the job runs on the host network).
pub(crate) fn published_port(job: &JobRow, service_port: Option<i64>) -> Result<u16, String> {
    let spec: JobSpec = serde_json::from_str(&job.job_spec).map_err(|e| e.to_string())?;
    let port = spec.service_port.or(service_port).ok_or_else(|| "the job has no service port".to_owned())?;
    let port = u16::try_from(port).map_err(|_| "the service port is out of range".to_owned())?;
    let jrd: Option<JobRuntimeData> =
        job.job_runtime_data.as_deref().map(serde_json::from_str).transpose().map_err(|e| e.to_string())?;
    Ok(jrd
        .and_then(|r| r.ports)
        .and_then(|p| p.get(&i64::from(port)).copied())
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(port))
}

/// The latest submission of every replica's first job, if it runs.
pub(crate) fn running_replicas(jobs: &[JobRow]) -> Vec<&JobRow> {
    let mut latest: std::collections::BTreeMap<i64, &JobRow> = std::collections::BTreeMap::new();
    for job in jobs.iter().filter(|j| j.job_num == 0) {
        let entry = latest.entry(job.replica_num).or_insert(job);
        if job.submission_num > entry.submission_num {
            *entry = job;
        }
    }
    latest.into_values().filter(|j| j.status == JobStatus::Running.as_str()).collect()
}

/// The replica group of a job (its spec's `replica_group`; `"0"` if it cannot be read).
pub(crate) fn replica_group(job: &JobRow) -> String {
    #[derive(serde::Deserialize)]
    struct Group {
        #[serde(default)]
        replica_group: Option<String>,
    }
    serde_json::from_str::<Group>(&job.job_spec)
        .ok()
        .and_then(|g| g.replica_group)
        .unwrap_or_else(|| "0".to_owned())
}

/// Whether a running replica receives traffic: once registered by the probes loop, which
/// registers it when every probe is ready or, without probes, when its app listens on its
/// service port (dstack registers such a replica as soon as it runs, before it may listen).
pub(crate) fn is_ready(job: &JobRow, registered: &[uuid::Uuid]) -> bool {
    registered.contains(&job.id)
}

/// For the `metric: prometheus` groups of a service (our extension of `scaling`), each
/// gauge's average over the group's serving replicas that answered `GET /metrics` on the
/// service port in time (2 s), keyed by (group, metric name).
pub(crate) async fn scrape_gauges(
    state: &AppState,
    spec: &RunSpec,
    jobs: &[JobRow],
    registered: &[uuid::Uuid],
) -> std::collections::BTreeMap<(String, String), f64> {
    let mut out = std::collections::BTreeMap::new();
    let RunConfiguration::Service(conf) = &spec.configuration else { return out };
    let wanted: Vec<(String, String)> = dstack_decide::jobspec::replica_groups(conf)
        .into_iter()
        .filter_map(|g| {
            let scaling = g.scaling?;
            (scaling.metric == dstack_model::service::ScalingMetric::Prometheus)
                .then_some((g.name, scaling.prometheus_metric?))
        })
        .collect();
    if wanted.is_empty() {
        return out;
    }
    let mut scrapes = tokio::task::JoinSet::new();
    for job in running_replicas(jobs).into_iter().filter(|j| is_ready(j, registered)) {
        let group = replica_group(job);
        let Some((_, name)) = wanted.iter().find(|(g, _)| *g == group) else { continue };
        let addr = match replica_addr(state, job, Some(conf.port.container_port)).await {
            Ok(addr) => addr,
            Err(e) => {
                tracing::debug!(job = %job.job_name, error = %e, "replica address unknown");
                continue;
            }
        };
        let (client, name) = (state.agent_http.clone(), name.clone());
        scrapes.spawn(async move {
            let text = async {
                let resp = client
                    .get(format!("http://{addr}/metrics"))
                    .timeout(std::time::Duration::from_secs(2))
                    .send()
                    .await
                    .ok()?;
                resp.error_for_status().ok()?.text().await.ok()
            }
            .await;
            (group, name.clone(), text.and_then(|t| gauge_value(&t, &name)))
        });
    }
    let mut sums: std::collections::BTreeMap<(String, String), (f64, u32)> =
        std::collections::BTreeMap::new();
    while let Some(done) = scrapes.join_next().await {
        if let Ok((group, name, Some(value))) = done {
            let entry = sums.entry((group, name)).or_default();
            entry.0 += value;
            entry.1 += 1;
        }
    }
    for (key, (sum, n)) in sums {
        out.insert(key, sum / f64::from(n));
    }
    out
}

/// The byte just after the `}` closing the label set `labels` starts with (quoted values
/// may hold braces and escaped quotes).
fn labels_end(labels: &str) -> Option<usize> {
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in labels.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(i + 1),
            _ => {}
        }
    }
    None
}

/// The value of gauge `name` in a Prometheus text exposition, summed over its label sets;
/// `None` if it is not there.
pub(crate) fn gauge_value(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let rest = match rest.chars().next() {
            Some('{') => match labels_end(rest) {
                Some(end) => &rest[end..],
                None => continue,
            },
            Some(' ' | '\t') => rest,
            _ => continue,
        };
        let Some(value) = rest.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        if value.is_finite() {
            total = Some(total.unwrap_or(0.0) + value);
        }
    }
    total
}

/// A member of the project (or a global admin) with a valid token (dstack's proxy auth).
pub(crate) async fn authorize(
    state: &AppState,
    project: &ProjectRow,
    headers: &HeaderMap,
) -> Result<(), ProxyError> {
    let denied = || {
        ProxyError::new(
            StatusCode::FORBIDDEN,
            format!("Unauthenticated or unauthorized to access project {}", project.name),
        )
    };
    let token = bearer(headers).ok_or_else(denied)?;
    let user = state.db.user_by_token_hash(&token_hash(token)).await.map_err(internal)?;
    let Some(user) = user.filter(|u| u.active) else { return Err(denied()) };
    if user.global_role == "admin" {
        return Ok(());
    }
    match state.db.member_role(project.id, user.id).await.map_err(internal)? {
        Some(_) => Ok(()),
        None => Err(denied()),
    }
}

/// How the server reaches a replica's service port: through its SSH instance's connection,
/// or directly.
enum Reach {
    Ssh { instance: Box<dstack_db::InstanceRow>, port: u16 },
    Direct { host: String, port: u16 },
}

/// How the replica's service port (the job spec's, else `service_port`) is reached (see
/// [`published_port`]).
async fn reach(state: &AppState, job: &JobRow, service_port: Option<i64>) -> Result<Reach, String> {
    let host_port = published_port(job, service_port)?;
    if let Some(instance_id) = job.instance_id
        && let Some(instance) = state.db.instance_by_id(instance_id).await.map_err(|e| e.to_string())?
        && crate::ssh_hosts::is_ssh(&instance)
    {
        return Ok(Reach::Ssh { instance: Box::new(instance), port: host_port });
    }
    let jpd: Option<JobProvisioningData> = job
        .job_provisioning_data
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| e.to_string())?;
    let host = jpd.and_then(|p| p.hostname).unwrap_or_else(|| "127.0.0.1".to_owned());
    Ok(Reach::Direct { host, port: host_port })
}

/// Where the replica's service port (the job spec's, else `service_port`) is reachable from
/// the server: a local tunnel for a replica on an SSH instance.
pub(crate) async fn replica_addr(
    state: &AppState,
    job: &JobRow,
    service_port: Option<i64>,
) -> Result<SocketAddr, String> {
    match reach(state, job, service_port).await? {
        Reach::Ssh { instance, port } => {
            let url = crate::ssh_hosts::agent_base_url(state, &instance, port).await?;
            url.trim_start_matches("http://").parse().map_err(|e| format!("tunnel address {url}: {e}"))
        }
        Reach::Direct { host, port } => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("{host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host}: no address")),
    }
}

/// How long a connection to a replica's port must stay open, with nothing read, for the
/// replica to count as listening: a port proxy in front of it (Docker's `docker-proxy` for a
/// published port, the host's sshd for an SSH instance) accepts for it and closes at once
/// when the app does not listen.
const LISTEN_QUIET: std::time::Duration = std::time::Duration::from_millis(500);

/// Whether the app of a replica listens on its service port (its job spec's): a TCP
/// connection to it is accepted and kept [`LISTEN_QUIET`] without being closed (or the app
/// speaks first), all within `timeout`. On an SSH instance the host itself connects.
pub(crate) async fn replica_listens(state: &AppState, job: &JobRow, timeout: std::time::Duration) -> bool {
    let check = async {
        match reach(state, job, None).await? {
            Reach::Ssh { instance, port } => {
                crate::ssh_hosts::accepts(state, &instance, port, LISTEN_QUIET).await
            }
            Reach::Direct { host, port } => {
                let Ok(mut stream) = tokio::net::TcpStream::connect((host.as_str(), port)).await else {
                    return Ok(false);
                };
                let mut byte = [0u8; 1];
                Ok(match tokio::time::timeout(LISTEN_QUIET, stream.read(&mut byte)).await {
                    // Closed (or reset) by the other end: nothing behind the port.
                    Ok(Ok(0) | Err(_)) => false,
                    // The app speaks first, or keeps the connection open quietly.
                    Ok(Ok(_)) | Err(_) => true,
                })
            }
        }
    };
    match tokio::time::timeout(timeout, check).await {
        Ok(Ok(listens)) => listens,
        Ok(Err(e)) => {
            tracing::debug!(job = %job.job_name, error = %e, "replica port check");
            false
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(configuration: serde_json::Value) -> RunSpec {
        serde_json::from_value(serde_json::json!({"run_name": "svc", "configuration": configuration}))
            .expect("a run spec")
    }

    #[test]
    fn a_service_is_published_on_the_server_with_its_model() {
        let plain = service_spec(
            "main",
            "svc",
            &spec(serde_json::json!({"type": "service", "port": 8000, "commands": ["x"]})),
            None,
        );
        let plain = plain.expect("publishable").expect("a service");
        assert_eq!(plain.url, "/proxy/services/main/svc/");
        assert_eq!((plain.model, plain.options.len()), (None, 0));

        let llm =
            spec(serde_json::json!({"type": "service", "port": 8000, "commands": ["x"], "model": "llama"}));
        let llm = service_spec("main", "svc", &llm, None).expect("publishable").expect("a service");
        let model = llm.model.expect("a model");
        assert_eq!(
            (model.name.as_str(), model.base_url.as_str(), model.kind.as_str()),
            ("llama", "/proxy/services/main/svc/v1", "chat")
        );
        assert_eq!(
            serde_json::Value::Object(llm.options),
            serde_json::json!({"openai": {"model": {"type": "chat", "name": "llama", "format": "openai", "prefix": "/v1"}}})
        );

        let task = spec(serde_json::json!({"type": "task", "commands": ["x"]}));
        assert_eq!(service_spec("main", "t", &task, None), Ok(None));
    }

    fn gateway_row(
        status: &str,
        configuration: serde_json::Value,
        domain: Option<&str>,
    ) -> dstack_db::GatewayRow {
        dstack_db::GatewayRow {
            id: uuid::Uuid::new_v4(),
            project_id: uuid::Uuid::new_v4(),
            name: "gw".to_owned(),
            status: status.to_owned(),
            status_message: None,
            is_default: true,
            wildcard_domain: domain.map(str::to_owned),
            configuration: configuration.to_string(),
            api_address: None,
            to_be_deleted: false,
            created_at: jiff::Timestamp::UNIX_EPOCH,
            last_processed_at: jiff::Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_service_on_a_gateway_gets_its_domain_with_dstacks_checks() {
        let local = |cert: serde_json::Value| {
            serde_json::json!({"type": "gateway", "name": "gw", "backend": "local", "region": "local",
                "certificate": cert, "local": {"host": "0.0.0.0", "http_port": 80, "https_port": 8443}})
        };
        let svc = |extra: serde_json::Value| {
            let mut c = serde_json::json!({"type": "service", "port": 8000, "commands": ["x"]});
            c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            spec(c)
        };
        let plain = gateway_row("running", local(serde_json::Value::Null), Some("*.gw.example"));
        let url = |s: &RunSpec, g: &dstack_db::GatewayRow| {
            service_spec("main", "svc", s, Some(g)).map(|s| s.unwrap().url)
        };
        assert_eq!(url(&svc(serde_json::json!({"https": false})), &plain).unwrap(), "http://svc.gw.example");
        assert_eq!(url(&svc(serde_json::json!({"https": "auto"})), &plain).unwrap(), "http://svc.gw.example");
        assert_eq!(
            url(&svc(serde_json::json!({})), &plain).unwrap_err(),
            "Cannot run HTTPS service on gateway with no SSL certificates configured"
        );
        let tls =
            gateway_row("running", local(serde_json::json!({"type": "lets-encrypt"})), Some("gw.example"));
        assert_eq!(url(&svc(serde_json::json!({})), &tls).unwrap(), "https://svc.gw.example:8443");
        let starting = gateway_row("provisioning", local(serde_json::Value::Null), Some("gw.example"));
        assert_eq!(
            url(&svc(serde_json::json!({"https": false})), &starting).unwrap_err(),
            "Gateway status is not running"
        );
        let no_domain = gateway_row("running", local(serde_json::Value::Null), None);
        assert_eq!(
            url(&svc(serde_json::json!({"https": false})), &no_domain).unwrap_err(),
            "Domain is required for gateway"
        );
    }

    #[test]
    fn what_needs_a_gateway_is_refused_with_dstacks_messages() {
        let with = |extra: serde_json::Value| {
            let mut conf = serde_json::json!({"type": "service", "port": 8000, "commands": ["x"]});
            conf.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            service_spec("main", "svc", &spec(conf), None).expect_err("refused")
        };
        assert_eq!(with(serde_json::json!({"gateway": "gw"})), "Gateway gw does not exist in project main");
        assert_eq!(
            with(serde_json::json!({"gateway": true})),
            "The service requires a gateway, but there is no default gateway in the project"
        );
        assert!(
            with(serde_json::json!({"https": false})).starts_with("Setting `https: False` is not allowed")
        );
    }

    #[test]
    fn an_aged_route_is_used_while_one_request_refreshes_it() {
        use std::time::{Duration, Instant};
        let at = Instant::now();
        let ms = Duration::from_millis;
        let mut cached = Cached::new((), at);
        assert!(matches!(cached.usable(at), Usable::Fresh));
        assert!(matches!(cached.usable(at + ROUTE_TTL - ms(1)), Usable::Fresh));
        assert!(
            matches!(cached.usable(at + ROUTE_TTL), Usable::Stale { refresh: true }),
            "the first refreshes"
        );
        assert!(
            matches!(cached.usable(at + ROUTE_TTL + ms(1)), Usable::Stale { refresh: false }),
            "only one"
        );
        assert!(!cached.expired(at + ROUTE_TTL + STALE_FOR - ms(1)));
        assert!(matches!(cached.usable(at + ROUTE_TTL + STALE_FOR), Usable::Expired));
        assert!(cached.expired(at + ROUTE_TTL + STALE_FOR));
        // A refreshed entry starts over.
        let mut refreshed = Cached::new((), at + ROUTE_TTL + ms(5));
        assert!(matches!(refreshed.usable(at + ROUTE_TTL + ms(10)), Usable::Fresh));
        // A drained replica's route is gone from every entry before the drain's grace ends.
        let longest = (ROUTE_TTL + STALE_FOR).as_millis();
        assert!(longest < dstack_decide::run::DRAIN_GRACE.as_millis() as u128, "{longest} ms");
    }

    #[test]
    fn only_plain_service_requests_take_the_fast_path() {
        use axum::http::Method;
        fn fast(method: Method, path: &str) -> Option<(&str, &str, &str)> {
            fast_route(&method, path)
        }
        assert_eq!(fast(Method::GET, "/proxy/services/main/svc/"), Some(("main", "svc", "")));
        assert_eq!(fast(Method::POST, "/proxy/services/main/svc/v1/a/b"), Some(("main", "svc", "v1/a/b")));
        assert_eq!(fast(Method::GET, "/proxy/services/main/svc//x"), Some(("main", "svc", "/x")));
        // The router answers these: the redirect to the root, decoding, HEAD, no such route.
        assert_eq!(fast(Method::GET, "/proxy/services/main/svc"), None);
        assert_eq!(fast(Method::GET, "/proxy/services/main/s%20vc/"), None);
        assert_eq!(fast(Method::GET, "/proxy/services/main/svc/a%2Fb"), None);
        assert_eq!(fast(Method::HEAD, "/proxy/services/main/svc/"), None);
        assert_eq!(fast(Method::GET, "/proxy/services//svc/"), None);
        assert_eq!(fast(Method::GET, "/proxy/services/main//"), None);
        assert_eq!(fast(Method::GET, "/proxy/services/main/"), None);
        assert_eq!(fast(Method::GET, "/proxy/models/main/svc/"), None);
    }

    #[test]
    fn gauges_are_read_from_the_prometheus_text_format() {
        let text = "# HELP vllm:num_requests_waiting Requests waiting.\n\
                    # TYPE vllm:num_requests_waiting gauge\n\
                    vllm:num_requests_waiting{model_name=\"a\"} 3.0\n\
                    vllm:num_requests_waiting{model_name=\"b\",x=\"}\"} 2\n\
                    vllm:num_requests_waiting_total 100\n\
                    queue 7 1700000000000\n";
        assert_eq!(gauge_value(text, "vllm:num_requests_waiting"), Some(5.0));
        assert_eq!(gauge_value(text, "queue"), Some(7.0));
        assert_eq!(gauge_value(text, "missing"), None);
    }

    #[test]
    fn the_latest_running_submission_of_each_replica_serves() {
        let row = |replica: i64, submission: i64, job_num: i64, status: &str| {
            let now = jiff::Timestamp::UNIX_EPOCH;
            JobRow {
                id: uuid::Uuid::new_v4(),
                project_id: uuid::Uuid::nil(),
                run_id: uuid::Uuid::nil(),
                run_name: "svc".to_owned(),
                job_num,
                replica_num: replica,
                submission_num: submission,
                deployment_num: 0,
                job_name: format!("svc-{job_num}-{replica}"),
                submitted_at: now,
                last_processed_at: now,
                finished_at: None,
                status: status.to_owned(),
                termination_reason: None,
                termination_reason_message: None,
                exit_status: None,
                job_spec: "{}".to_owned(),
                job_provisioning_data: None,
                job_runtime_data: None,
                instance_id: None,
                runner_timestamp: None,
                remove_at: None,
                graceful_termination_attempts: None,
                image_pull_progress: None,
                inactivity_secs: None,
                drain_started_at: None,
            }
        };
        let jobs = [
            row(0, 0, 0, "failed"),
            row(0, 1, 0, "running"),
            row(1, 0, 0, "running"),
            row(1, 1, 0, "provisioning"),
            row(2, 0, 0, "running"),
            row(2, 0, 1, "running"),
        ];
        let serving: Vec<(i64, i64)> =
            running_replicas(&jobs).iter().map(|j| (j.replica_num, j.submission_num)).collect();
        assert_eq!(serving, [(0, 1), (2, 0)]);
    }
}
