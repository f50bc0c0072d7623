//! `dstack-gateway`: serves services on their own domains (`<run>.<gateway domain>`), over HTTP
//! and HTTPS, as dstack's gateway VM does with nginx and its FastAPI app (spec agents.md
//! §4.6–4.10), in one process: `dstack gateway` runs [`run`].
//!
//! - [`api`](crate::api): the gateway API the server calls (register services, replicas and
//!   entrypoints, list services, collect stats, check auth, the model API), on
//!   [`Config::api_listen`] (127.0.0.1:8000 by default, like dstack's).
//! - the public listeners ([`Config::http_listen`], [`Config::https_listen`]): requests are
//!   routed by `Host` through [`dstack_proxy::Proxy`] to the service's replicas; TLS from
//!   certificate files chosen by SNI (`<cert-dir>/<domain>/fullchain.pem`, `privkey.pem`, or a
//!   `*.<parent>` wildcard's); auth by asking the server; nginx's rate limits; CORS for
//!   openai-format models; `gateway.<domain>` for a project's model API.
//! - replicas are reached through SSH tunnels ([`dstack_hostssh`], as dstack's
//!   `ServiceConnection`), or directly at `internal_ip:app_port` when the registration has no
//!   SSH destination (dstack-rs only).
//! - the state is one JSON file in [`Config::state_dir`], rewritten atomically on every
//!   change and read at start, so a restarted gateway serves its services again.
//!
//! - the public listeners are served by [`Config::workers`] threads, each with a runtime of
//!   its own, as nginx's worker processes: a request and its replica connection stay on one
//!   thread.
//!
//! The server is reached at [`Config::server_url`] or `POST /api/config`'s `server_url` (on an
//! SSH host, the server's reverse tunnel to it). Not done yet: ACME (certificates must be
//! files), HTTP/2.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use dstack_proxy::Options as ProxyOptions;
use dstack_proxy::Proxy;
use dstack_proxy::load::LoadTracker;
use dstack_proxy::workers::Workers;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

mod api;
mod auth;
mod models;
mod ratelimit;
mod registry;
mod replica;
mod serve;
mod state;
mod tls;

/// What `GET /` reports: the dstack release whose gateway API this is.
pub const VERSION: &str = "0.22.5";

/// How often replicas that could not be connected are tried again.
const RECONNECT_INTERVAL: Duration = Duration::from_secs(15);

/// How a gateway runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where `state.json` lives (created if missing).
    pub state_dir: PathBuf,
    /// The gateway API (only the server should reach it).
    pub api_listen: SocketAddr,
    /// Plain HTTP for the services (dstack: port 80); `None`: not served.
    pub http_listen: Option<SocketAddr>,
    /// HTTPS for the services (dstack: port 443); `None`: not served, and `https` services
    /// cannot be registered.
    pub https_listen: Option<SocketAddr>,
    /// Certificates: `<cert_dir>/<domain>/{fullchain,privkey}.pem`, or `<cert_dir>/*.<parent>/`.
    pub cert_dir: PathBuf,
    /// The dstack server, asked whether a token belongs to a project member
    /// (`POST <url>/api/projects/<project>/get`); a `server_url` sent to `POST /api/config`
    /// (saved in the state) takes its place.
    pub server_url: Option<String>,
    /// Timeouts of the proxy to the replicas.
    pub proxy: ProxyOptions,
    /// Threads serving the public listeners, each with a single-thread runtime of its own
    /// that accepts from the shared listening sockets, as nginx's worker processes do; 0: one
    /// per CPU. A request and its replica connection stay on one thread.
    pub workers: usize,
}

impl Config {
    /// A gateway on ephemeral loopback ports with its state in `state_dir` (tests, local use).
    pub fn local(state_dir: PathBuf) -> Config {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Config {
            cert_dir: state_dir.join("certs"),
            state_dir,
            api_listen: any,
            http_listen: Some(any),
            https_listen: None,
            server_url: None,
            proxy: dstack_proxy::Options::default(),
            workers: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot create the state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the gateway state {path}: {source}")]
    ReadState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the gateway state {path} is invalid ({cause}); fix or move it away to start empty")]
    BadState { path: PathBuf, cause: String },
    #[error("cannot listen on {addr} ({what}): {source}; choose another address with --{what}-listen")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    #[error("cannot start the {what} worker threads: {source}")]
    Workers {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// What every request handler shares.
pub(crate) struct Shared {
    pub(crate) registry: registry::Registry,
    pub(crate) proxy: Arc<Proxy>,
    pub(crate) load: Arc<LoadTracker>,
    pub(crate) auth: auth::Auth,
}

/// A running gateway; dropping it stops its listeners (and waits for the worker threads).
pub struct Gateway {
    pub api_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    pub https_addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
    workers: Workers,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Serves `listener` with `count` worker threads of `workers` (see [`dstack_proxy::workers`]),
/// named `gw-<port>-<i>`.
fn start_workers(
    workers: &mut Workers,
    listener: TcpListener,
    count: usize,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: &Arc<Shared>,
    what: &'static str,
) -> Result<(), GatewayError> {
    let failed = |source| GatewayError::Workers { what, source };
    let port = listener.local_addr().map_err(failed)?.port();
    let listener = listener.into_std().map_err(failed)?;
    let shared = shared.clone();
    workers
        .start(&listener, count, &format!("gw-{port}"), move |listener, _stop| {
            serve::serve(listener, tls.clone(), shared.clone())
        })
        .map_err(failed)
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, GatewayError> {
    TcpListener::bind(addr).await.map_err(|source| GatewayError::Bind { addr, what, source })
}

/// Loads the state, binds the listeners and starts serving; replicas are connected in the
/// background (and again every 15 s while some cannot be).
pub async fn start(config: Config) -> Result<Gateway, GatewayError> {
    std::fs::create_dir_all(&config.state_dir)
        .map_err(|source| GatewayError::StateDir { path: config.state_dir.clone(), source })?;
    let state_file = config.state_dir.join(state::STATE_FILE);
    let state = state::State::load(&state_file)?;
    let certs = config.https_listen.map(|_| Arc::new(tls::CertStore::new(config.cert_dir.clone())));
    let server_url = state.config.server_url.clone().filter(|u| !u.is_empty()).or(config.server_url.clone());
    let proxy = Proxy::new(config.proxy);
    let shared = Arc::new(Shared {
        registry: registry::Registry::new(state_file, state, certs.clone(), proxy.clone()),
        proxy,
        load: Arc::new(LoadTracker::default()),
        auth: auth::Auth::new(server_url),
    });
    let api_listener = bind(config.api_listen, "api").await?;
    let api_addr = local_addr(&api_listener, config.api_listen);
    let router = api::router(shared.clone());
    // From here on, an error drops `gateway`, which stops what was started.
    let mut gateway =
        Gateway { api_addr, http_addr: None, https_addr: None, tasks: Vec::new(), workers: Workers::new() };
    gateway.tasks.push(tokio::spawn(async move {
        if let Err(e) = axum::serve(api_listener, router).await {
            tracing::error!(error = %e, "the gateway API stopped");
        }
    }));
    let count = Workers::count(config.workers);
    if let Some(addr) = config.http_listen {
        let listener = bind(addr, "http").await?;
        gateway.http_addr = Some(local_addr(&listener, addr));
        start_workers(&mut gateway.workers, listener, count, None, &shared, "http")?;
    }
    if let (Some(addr), Some(certs)) = (config.https_listen, certs) {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(certs)?));
        let listener = bind(addr, "https").await?;
        gateway.https_addr = Some(local_addr(&listener, addr));
        start_workers(&mut gateway.workers, listener, count, Some(acceptor), &shared, "https")?;
    }
    let reconnect = shared.clone();
    gateway.tasks.push(tokio::spawn(async move {
        loop {
            reconnect.registry.connect_missing().await;
            tokio::time::sleep(RECONNECT_INTERVAL).await;
        }
    }));
    tracing::info!(
        api = %api_addr, http = ?gateway.http_addr, https = ?gateway.https_addr, workers = count,
        "gateway started"
    );
    Ok(gateway)
}

fn local_addr(listener: &TcpListener, asked: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(asked)
}

/// Runs a gateway until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), GatewayError> {
    let gateway = start(config).await?;
    shutdown.await;
    drop(gateway);
    Ok(())
}
