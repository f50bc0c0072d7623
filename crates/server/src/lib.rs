//! The dstack server: dstack 0.22's HTTP API over SQLite or PostgreSQL.
//!
//! [`routes::app`] builds the HTTP service from an [`AppState`] (so tests drive exactly what ships
//! with `tower::ServiceExt::oneshot`); [`run`] binds, bootstraps the first start and serves
//! until SIGTERM or Ctrl-C, with the listener's worker threads of [`serve`].

pub mod auth;
pub mod bootstrap;
pub mod config;
mod convert;
pub mod crypto;
pub mod fleets;
pub mod local_fleet;
mod models;
pub mod pipelines;
pub mod routes;
mod runs;
mod serve;
pub mod services;
pub mod ssh_hosts;
pub mod state;

use std::future::Future;
use std::net::SocketAddr;

pub use config::ServerConfig;
pub use routes::app;
pub use state::AppState;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("database: {0}")]
    Db(#[from] dstack_db::DbError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("encryption key: {0}")]
    Crypto(String),
    #[error("{0}")]
    Config(String),
}

/// What a started server tells its caller.
#[derive(Debug, Clone)]
pub struct Started {
    pub addr: SocketAddr,
    pub url: String,
    pub admin_token: String,
}

/// Opens the database, bootstraps the first start, binds and serves until `shutdown`
/// resolves; `on_started` learns the address and admin token once the socket is bound.
pub async fn run(
    config: ServerConfig,
    on_started: impl FnOnce(&Started),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let state = AppState::open(&config).await?;
    let addr = format!("{}:{}", config.host, config.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| ServerError::Bind { addr: addr.clone(), source })?;
    let local =
        listener.local_addr().map_err(|source| ServerError::Io { what: "local address".into(), source })?;
    let url = config.public_url(local);
    let admin_token = bootstrap::first_start(&state, &config, &url).await?;
    let shim_binary = config.shim_binary.clone().unwrap_or_else(local_fleet::default_shim_binary);
    if let Err(e) = local_fleet::attach_shim(&state, &config, &shim_binary).await {
        // The server still serves; the local instance takes no jobs until its shim is up.
        tracing::error!(error = %e, "local fleet");
    }
    let mut loops = config.background.then(|| pipelines::spawn(state.clone()));
    if let Some(loops) = &mut loops {
        let launch = pipelines::gateways::GatewayLaunch::new(&config.server_dir, &url, local);
        loops.spawn(pipelines::gateways::run(state.clone(), launch));
    }
    // The admin's SSH keys are made on first use; make them now, off the start-up path.
    let keys = state.clone();
    tokio::spawn(async move {
        if let Ok(Some(admin)) = keys.db.user_by_name(routes::users::ADMIN_USERNAME).await
            && let Err(e) = routes::users::ensure_ssh_keys(&keys, admin).await
        {
            tracing::warn!(error = ?e.0, "making the admin's SSH keys");
        }
    });
    let db = state.db.clone();
    let listener =
        listener.into_std().map_err(|source| ServerError::Io { what: "listening socket".into(), source })?;
    let served = serve(state, listener, config.workers, async move {
        on_started(&Started { addr: local, url, admin_token });
        shutdown.await;
    });
    served.await?;
    if let Some(mut loops) = loops {
        loops.shutdown().await;
    }
    db.close().await;
    Ok(())
}

/// Serves `listener` with `workers` threads (0: one per CPU; see [`serve`](mod@serve)) until
/// `shutdown` resolves, then lets the requests in flight finish and closes the connections.
/// `shutdown` is first polled once the workers are started.
pub async fn serve(
    state: AppState,
    listener: std::net::TcpListener,
    workers: usize,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let port = listener.local_addr().map_or(0, |a| a.port());
    let app = app(state);
    let mut threads = dstack_proxy::workers::Workers::new();
    threads
        .start(
            &listener,
            dstack_proxy::workers::Workers::count(workers),
            &format!("srv-{port}"),
            move |l, stop| serve::connections(l, app.clone(), stop),
        )
        .map_err(|source| ServerError::Io { what: "starting the listener's threads".into(), source })?;
    drop(listener);
    shutdown.await;
    tracing::info!("shutting down: waiting for the requests in flight");
    threads.shut_down().await;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT). The handlers are installed right away, so a
/// signal that arrives before the future is first polled is not lost; call it inside the
/// runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(term) => {}
                () = wait(int) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
