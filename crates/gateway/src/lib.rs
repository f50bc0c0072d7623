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
//! Not done yet: ACME (certificates must be files), the server connection of dstack (the
//! server's `-R` socket; the server's URL is [`Config::server_url`] or `POST /api/config`'s
//! `server_url`), HTTP/2.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use dstack_proxy::Options as ProxyOptions;
use dstack_proxy::Proxy;
use dstack_proxy::load::LoadTracker;
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
}

/// What every request handler shares.
pub(crate) struct Shared {
    pub(crate) registry: registry::Registry,
    pub(crate) proxy: Arc<Proxy>,
    pub(crate) load: Arc<LoadTracker>,
    pub(crate) auth: auth::Auth,
}

/// A running gateway; dropping it stops its listeners.
pub struct Gateway {
    pub api_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    pub https_addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
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
    let mut tasks = Vec::new();
    let api_listener = bind(config.api_listen, "api").await?;
    let api_addr = local_addr(&api_listener, config.api_listen);
    let router = api::router(shared.clone());
    tasks.push(tokio::spawn(async move {
        if let Err(e) = axum::serve(api_listener, router).await {
            tracing::error!(error = %e, "the gateway API stopped");
        }
    }));
    let mut http_addr = None;
    if let Some(addr) = config.http_listen {
        let listener = bind(addr, "http").await?;
        http_addr = Some(local_addr(&listener, addr));
        tasks.push(tokio::spawn(serve::serve(listener, None, shared.clone())));
    }
    let mut https_addr = None;
    if let (Some(addr), Some(certs)) = (config.https_listen, certs) {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(certs)?));
        let listener = bind(addr, "https").await?;
        https_addr = Some(local_addr(&listener, addr));
        tasks.push(tokio::spawn(serve::serve(listener, Some(acceptor), shared.clone())));
    }
    let reconnect = shared.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            reconnect.registry.connect_missing().await;
            tokio::time::sleep(RECONNECT_INTERVAL).await;
        }
    }));
    tracing::info!(api = %api_addr, http = ?http_addr, https = ?https_addr, "gateway started");
    Ok(Gateway { api_addr, http_addr, https_addr, tasks })
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
