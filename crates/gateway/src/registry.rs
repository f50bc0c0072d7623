//! The registry: services, replicas, models and entrypoints, as the server registers them.
//!
//! Mutations are serialized by one lock (the state's mutex, dstack's asyncio `lock`), which is
//! held across the SSH connect of a new replica, as dstack holds it across `apply_service`.
//! Each mutation changes a copy of the state, writes it to disk, and only then makes it the
//! state and publishes a new [`Routes`] snapshot, which requests read without the lock; a
//! failed write changes nothing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use axum::http::StatusCode;
use dstack_agent_proto::gateway::{
    self as wire, ConfigRequest, ModelFormat, RateLimitKey, RegisterEntrypointRequest,
    RegisterReplicaRequest, RegisterServiceRequest, ServiceListItem, ServiceListReplicaItem,
    ServiceListResponse,
};
use dstack_proxy::{Proxy, ProxyError, Upstream};

use crate::ratelimit::Limiter;
use crate::replica::{self, ReplicaConn};
use crate::state::{Entrypoint, Model, Project, Service, State};
use crate::tls::CertStore;

/// What requests read: one immutable snapshot, replaced after every change.
#[derive(Default)]
pub(crate) struct Routes {
    /// Service domain → service.
    pub(crate) services: HashMap<String, Arc<Route>>,
    /// Entrypoint domain → project.
    pub(crate) entrypoints: HashMap<String, Arc<Entrypoint>>,
    /// Project → its models, newest first.
    pub(crate) models: HashMap<String, Vec<ModelRoute>>,
}

/// One service as requests see it.
pub(crate) struct Route {
    pub(crate) project: String,
    pub(crate) https: bool,
    pub(crate) auth: bool,
    pub(crate) client_max_body_size: u64,
    pub(crate) cors: bool,
    pub(crate) has_router_replica: bool,
    /// The rate limits with their buckets, in registration order.
    pub(crate) limits: Vec<(wire::RateLimit, Arc<Limiter>)>,
    /// The replicas that are connected, by job id.
    pub(crate) upstreams: Vec<Upstream>,
    /// How long a replica may take to answer (dstack's `read_timeout`, nginx's
    /// `proxy_read_timeout`; here: until the response headers).
    pub(crate) read_timeout: std::time::Duration,
    /// The key of the service's load stats ([`stats_key`]), made once per snapshot.
    stats_key: String,
    /// The service's domain as the `Host` header the replica gets (nginx's
    /// `proxy_set_header Host $host`), made once per snapshot.
    pub(crate) host_header: Option<axum::http::HeaderValue>,
}

impl Route {
    /// The key of the service's load stats.
    pub(crate) fn stats_key(&self) -> &str {
        &self.stats_key
    }
}

pub(crate) fn stats_key(project: &str, run: &str) -> String {
    format!("{project}/{run}")
}

#[derive(Clone)]
pub(crate) struct ModelRoute {
    pub(crate) name: String,
    pub(crate) created: i64,
    pub(crate) format: ModelFormat,
    pub(crate) route: Arc<Route>,
}

pub(crate) struct Registry {
    state_file: PathBuf,
    state: tokio::sync::Mutex<State>,
    routes: RwLock<Arc<Routes>>,
    /// Connected replicas by `project/run/job id`.
    conns: Mutex<HashMap<String, ReplicaConn>>,
    /// Rate limit buckets by service domain, kept while the service is registered.
    limiters: Mutex<HashMap<String, Vec<Arc<Limiter>>>>,
    certs: Option<Arc<CertStore>>,
    /// Told which replicas are live after each change, so it drops the pools of the others.
    proxy: Arc<Proxy>,
}

fn bad(detail: impl Into<String>) -> ProxyError {
    ProxyError::new(StatusCode::BAD_REQUEST, detail)
}

fn conn_key(project: &str, run: &str, job: &str) -> String {
    format!("{project}/{run}/{job}")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Registry {
    pub(crate) fn new(
        state_file: PathBuf,
        state: State,
        certs: Option<Arc<CertStore>>,
        proxy: Arc<Proxy>,
    ) -> Registry {
        let snapshot = state.clone();
        let registry = Registry {
            state_file,
            state: tokio::sync::Mutex::new(state),
            routes: RwLock::new(Arc::new(Routes::default())),
            conns: Mutex::new(HashMap::new()),
            limiters: Mutex::new(HashMap::new()),
            certs,
            proxy,
        };
        registry.publish(&snapshot);
        registry
    }

    pub(crate) fn routes(&self) -> Arc<Routes> {
        self.routes.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Builds and publishes the routes of `state` with the replicas connected now.
    fn publish(&self, state: &State) {
        let conns = lock(&self.conns);
        let mut limiters = lock(&self.limiters);
        limiters.retain(|domain, _| state.all_services().any(|s| &s.domain == domain));
        let mut routes = Routes::default();
        let mut by_run = HashMap::new();
        for s in state.all_services() {
            let buckets = limiters.entry(s.domain.clone()).or_insert_with(|| {
                s.rate_limits.iter().map(|l| Arc::new(Limiter::new(l.rps, l.burst))).collect()
            });
            let mut upstreams: Vec<Upstream> = s
                .replicas
                .iter()
                .filter_map(|r| {
                    let conn = conns.get(&conn_key(&s.project_name, &s.run_name, &r.job_id))?;
                    Some(Upstream { id: r.job_id.clone(), addr: conn.addr() })
                })
                .collect();
            upstreams.sort_by(|a, b| a.id.cmp(&b.id));
            let route = Arc::new(Route {
                project: s.project_name.clone(),
                https: s.https,
                auth: s.auth,
                client_max_body_size: s.client_max_body_size,
                cors: s.cors_enabled,
                has_router_replica: s.has_router_replica,
                limits: s.rate_limits.iter().cloned().zip(buckets.iter().cloned()).collect(),
                upstreams,
                read_timeout: std::time::Duration::from_secs(s.read_timeout.max(1)),
                stats_key: stats_key(&s.project_name, &s.run_name),
                host_header: axum::http::HeaderValue::from_str(&s.domain).ok(),
            });
            by_run.insert((s.project_name.clone(), s.run_name.clone()), route.clone());
            routes.services.insert(s.domain.clone(), route);
        }
        for e in state.entrypoints.values() {
            routes.entrypoints.insert(e.domain.clone(), Arc::new(e.clone()));
        }
        for (project, models) in &state.models {
            let mut list: Vec<ModelRoute> = models
                .values()
                .filter_map(|m| {
                    let route = by_run.get(&(project.clone(), m.run_name.clone()))?;
                    Some(ModelRoute {
                        name: m.name.clone(),
                        created: m.created,
                        format: m.format.clone(),
                        route: route.clone(),
                    })
                })
                .collect();
            list.sort_by_key(|m| std::cmp::Reverse(m.created));
            routes.models.insert(project.clone(), list);
        }
        let live: Vec<Upstream> =
            routes.services.values().flat_map(|r| r.upstreams.iter().cloned()).collect();
        self.proxy.retain(&live);
        *self.routes.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(routes);
    }

    /// Writes `state` to disk (on a blocking thread: it fsyncs) and publishes it.
    async fn commit(&self, state: &State) -> Result<(), ProxyError> {
        let (copy, path) = (state.clone(), self.state_file.clone());
        let saved = tokio::task::spawn_blocking(move || copy.save(&path))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        if let Err(e) = saved {
            tracing::error!(path = %self.state_file.display(), error = %e, "cannot write the gateway state");
            return Err(ProxyError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Cannot write the gateway state {}: {e}", self.state_file.display()),
            ));
        }
        self.publish(state);
        Ok(())
    }

    /// An https domain needs a certificate (dstack runs certbot here; ACME is not done yet).
    fn check_certificate(&self, domain: &str) -> Result<(), ProxyError> {
        match &self.certs {
            None => {
                Err(bad(format!("Error obtaining {domain} TLS certificate: this gateway serves no HTTPS")))
            }
            Some(certs) => certs
                .certified_key(domain)
                .map(drop)
                .map_err(|e| bad(format!("Error obtaining {domain} TLS certificate: {e}"))),
        }
    }

    /// Stores the ACME settings; a `server_url` is kept until another one is sent (dstack's
    /// server sends none).
    pub(crate) async fn set_config(&self, mut config: ConfigRequest) -> Result<(), ProxyError> {
        let mut guard = self.state.lock().await;
        let mut state = guard.clone();
        if config.server_url.as_deref().is_none_or(str::is_empty) {
            config.server_url = state.config.server_url.take();
        }
        state.config = config;
        self.commit(&state).await?;
        *guard = state;
        Ok(())
    }

    pub(crate) async fn register_service(
        &self,
        project: &str,
        body: RegisterServiceRequest,
    ) -> Result<(), ProxyError> {
        let run = body.run_name.to_lowercase();
        let domain = body.domain.to_lowercase();
        validate_rate_limits(&body.rate_limits)?;
        let mut guard = self.state.lock().await;
        let mut state = guard.clone();
        if state.service(project, &run).is_some() {
            return Err(bad(wire::service_already_registered(project, &run)));
        }
        if state.all_services().any(|s| s.domain == domain) {
            return Err(bad(format!("Domain name '{domain}' is already taken by another service")));
        }
        if body.https {
            self.check_certificate(&domain)?;
        }
        let model = body.options.openai.map(|o| o.model);
        let service = Service {
            id: body.id,
            project_name: project.to_owned(),
            run_name: run.clone(),
            domain,
            https: body.https,
            auth: body.auth,
            client_max_body_size: body.client_max_body_size,
            rate_limits: body.rate_limits,
            has_router_replica: body.has_router_replica,
            cors_enabled: matches!(&model, Some(m) if matches!(m.format, ModelFormat::Openai { .. })),
            read_timeout: body.read_timeout,
            replicas: Vec::new(),
        };
        if let Some(old) = state.projects.get(project)
            && old.ssh_private_key != body.ssh_private_key
        {
            tracing::warn!(service = %service.fmt(), "the project's SSH key differs from the previous one");
        }
        state.projects.insert(
            project.to_owned(),
            Project { name: project.to_owned(), ssh_private_key: body.ssh_private_key },
        );
        tracing::info!(service = %service.fmt(), domain = %service.domain, "service registered");
        state.services.entry(project.to_owned()).or_default().insert(run.clone(), service);
        if let Some(model) = model {
            let created = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            state.models.entry(project.to_owned()).or_default().insert(
                model.name.clone(),
                Model { name: model.name, run_name: run, created, format: model.format },
            );
        }
        self.commit(&state).await?;
        *guard = state;
        Ok(())
    }

    pub(crate) async fn unregister_service(&self, project: &str, run: &str) -> Result<(), ProxyError> {
        let mut guard = self.state.lock().await;
        let mut state = guard.clone();
        let Some(service) = state.services.get_mut(project).and_then(|runs| runs.remove(run)) else {
            return Err(bad(format!("Service {project}/{run} is not registered, cannot unregister")));
        };
        if state.services.get(project).is_some_and(|runs| runs.is_empty()) {
            state.services.remove(project);
        }
        if let Some(models) = state.models.get_mut(project) {
            models.retain(|_, m| m.run_name != run);
            if models.is_empty() {
                state.models.remove(project);
            }
        }
        {
            let mut conns = lock(&self.conns);
            for r in &service.replicas {
                conns.remove(&conn_key(project, run, &r.job_id));
            }
        }
        tracing::info!(service = %service.fmt(), "service unregistered");
        self.commit(&state).await?;
        *guard = state;
        Ok(())
    }

    pub(crate) async fn set_service_id(
        &self,
        project: &str,
        run: &str,
        id: String,
    ) -> Result<(), ProxyError> {
        let mut guard = self.state.lock().await;
        let mut state = guard.clone();
        let Some(service) = state.service_mut(project, run) else {
            return Err(bad(format!("Service {project}/{run} does not exist, cannot set ID")));
        };
        if service.id.is_some() {
            return Err(bad(format!("Service {project}/{run} already has an ID")));
        }
        service.id = Some(id);
        self.commit(&state).await?;
        *guard = state;
        Ok(())
    }

    pub(crate) async fn register_replica(
        &self,
        project: &str,
        run: &str,
        body: RegisterReplicaRequest,
    ) -> Result<(), ProxyError> {
        let mut guard = self.state.lock().await;
        let mut state = guard.clone();
        let Some(service) = state.service(project, run) else {
            return Err(bad(format!("Service {project}/{run} does not exist, cannot register replica")));
        };
        if service.replicas.iter().any(|r| r.job_id == body.job_id) {
            return Err(bad(wire::replica_already_exists(&body.job_id, project, run)));
        }
        let key = state.projects.get(project).map(|p| p.ssh_private_key.clone()).unwrap_or_default();
        let conn = replica::connect(&key, &body).await.map_err(|e| {
            tracing::warn!(service = %format!("{project}/{run}"), replica = %body.job_id, error = %e, "cannot connect to a replica");
            bad(format!("Cannot register replica {} in service {project}/{run}: {e}", body.job_id))
        })?;
        let key = conn_key(project, run, &body.job_id);
        lock(&self.conns).insert(key.clone(), conn);
        tracing::info!(service = %format!("{project}/{run}"), replica = %body.job_id, "replica registered");
        if let Some(service) = state.service_mut(project, run) {
            service.replicas.push(body);
        }
        if let Err(e) = self.commit(&state).await {
            lock(&self.conns).remove(&key);
            return Err(e);
        }
        *guard = state;
        Ok(())
    }

    pub(crate) async fn unregister_replica(
        &self,
        project: &str,
        run: &str,
        job_id: &str,
    ) -> Result<(), ProxyError> {
        let mut guard = self.state.lock().await;
        let mut state = guard.clone();
        let Some(service) = state.service_mut(project, run) else {
            return Err(bad(format!("Service {project}/{run} does not exist, cannot unregister replica")));
        };
        let Some(idx) = service.replicas.iter().position(|r| r.job_id == job_id) else {
            return Err(bad(format!(
                "Replica {job_id} does not exist in service {project}/{run}, cannot unregister"
            )));
        };
        service.replicas.remove(idx);
        lock(&self.conns).remove(&conn_key(project, run, job_id));
        tracing::info!(service = %format!("{project}/{run}"), replica = %job_id, "replica unregistered");
        self.commit(&state).await?;
        *guard = state;
        Ok(())
    }

    pub(crate) async fn register_entrypoint(
        &self,
        project: &str,
        body: RegisterEntrypointRequest,
    ) -> Result<(), ProxyError> {
        let domain = body.domain.to_lowercase();
        let mut guard = self.state.lock().await;
        let mut state = guard.clone();
        if body.https {
            self.check_certificate(&domain)?;
        }
        state.entrypoints.insert(
            project.to_owned(),
            Entrypoint {
                project_name: project.to_owned(),
                domain,
                https: body.https,
                read_timeout: body.read_timeout,
            },
        );
        self.commit(&state).await?;
        *guard = state;
        Ok(())
    }

    pub(crate) async fn list_services(&self) -> ServiceListResponse {
        let state = self.state.lock().await;
        ServiceListResponse {
            services: state
                .all_services()
                .map(|s| ServiceListItem {
                    id: s.id.clone(),
                    project_name: s.project_name.clone(),
                    run_name: s.run_name.clone(),
                    replicas: s
                        .replicas
                        .iter()
                        .map(|r| ServiceListReplicaItem { id: r.job_id.clone() })
                        .collect(),
                })
                .collect(),
        }
    }

    /// `(project, run)` of every registered service.
    pub(crate) async fn service_names(&self) -> Vec<(String, String)> {
        let state = self.state.lock().await;
        state.all_services().map(|s| (s.project_name.clone(), s.run_name.clone())).collect()
    }

    /// Connects the registered replicas that have no connection (after a restart, or when the
    /// first try failed) and publishes the ones that succeeded. The lock is not held while
    /// connecting; a replica unregistered meanwhile is dropped.
    pub(crate) async fn connect_missing(&self) {
        let missing: Vec<(String, String, crate::state::Project, RegisterReplicaRequest)> = {
            let state = self.state.lock().await;
            let conns = lock(&self.conns);
            state
                .all_services()
                .flat_map(|s| s.replicas.iter().map(move |r| (s, r)))
                .filter(|(s, r)| !conns.contains_key(&conn_key(&s.project_name, &s.run_name, &r.job_id)))
                .filter_map(|(s, r)| {
                    let project = state.projects.get(&s.project_name)?.clone();
                    Some((s.project_name.clone(), s.run_name.clone(), project, r.clone()))
                })
                .collect()
        };
        if missing.is_empty() {
            return;
        }
        let mut connected = Vec::new();
        for (project, run, p, r) in missing {
            match replica::connect(&p.ssh_private_key, &r).await {
                Ok(conn) => {
                    connected.push((conn_key(&project, &run, &r.job_id), project, run, r.job_id, conn))
                }
                Err(e) => {
                    tracing::warn!(service = %format!("{project}/{run}"), replica = %r.job_id, error = %e, "cannot connect to a replica; will retry")
                }
            }
        }
        let state = self.state.lock().await;
        {
            let mut conns = lock(&self.conns);
            for (key, project, run, job, conn) in connected {
                let still =
                    state.service(&project, &run).is_some_and(|s| s.replicas.iter().any(|r| r.job_id == job));
                if still {
                    conns.insert(key, conn);
                }
            }
        }
        self.publish(&state);
    }
}

/// dstack's checks of `rate_limits` (its model patterns keep nginx's config safe; we keep them
/// so the same bodies are refused), plus a rate nginx accepts.
fn validate_rate_limits(limits: &[wire::RateLimit]) -> Result<(), ProxyError> {
    for l in limits {
        let prefix_ok = l.prefix.starts_with('/')
            && !l.prefix.chars().any(|c| c.is_whitespace() || matches!(c, '\\' | '{' | '}'));
        if !prefix_ok {
            return Err(ProxyError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "Invalid rate limit prefix {:?}: it must start with / and hold no spaces, \\, {{ or }}",
                    l.prefix
                ),
            ));
        }
        if let RateLimitKey::Header { header } = &l.key
            && (header.is_empty()
                || !header.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return Err(ProxyError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("Invalid rate limit header {header:?}: only letters, digits, - and _ are allowed"),
            ));
        }
        if !l.rps.is_finite() || l.rps * 60.0 < 0.5 {
            return Err(bad(format!(
                "Invalid rate limit rps {} for prefix {}: at least one request a minute is needed",
                l.rps, l.prefix
            )));
        }
    }
    Ok(())
}
