//! The server's listener, served by worker threads ([`dstack_proxy::workers`]): each accepts
//! connections on a single-thread runtime of its own. A request to a service
//! (`/proxy/services/…`, see [`crate::services::fast_route`]) is proxied on the worker that
//! read it, so its connection, the replica connection and the request's work stay on one
//! thread; every other request is handed to the main runtime ([`AppState::on_main`]), where
//! the API's handlers, the background loops, the SSH connections and the database's
//! connections live.
//!
//! [`AppState::on_main`]: crate::state::AppState::on_main

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use dstack_proxy::workers::{Stop, StopSignal, stopped};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::routes::App;

/// Serves the connections `listener` accepts until `stop` asks for a graceful stop, then
/// stops accepting and waits for the open connections to finish their requests (an idle
/// keep-alive connection is closed at once), as `axum::serve`'s graceful shutdown does.
pub(crate) async fn connections(listener: TcpListener, app: App, stop: StopSignal) {
    // Every connection's task holds a sender; `recv` returns `None` once all have ended.
    let (open, mut all_closed) = tokio::sync::mpsc::channel::<Infallible>(1);
    let mut accepting = stop.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&mut accepting, Stop::Graceful) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // No Nagle delay: proxied responses go out in several writes (headers, then body).
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let app = app.clone();
            async move { Ok::<Response, Infallible>(app.dispatch(req.map(Body::new)).await) }
        });
        let (mut stop, open) = (stop.clone(), open.clone());
        tokio::spawn(async move {
            let _open = open;
            let mut builder = hyper::server::conn::http1::Builder::new();
            // Slow clients get 30 s for their headers (hyper's default, which needs a timer).
            builder.timer(TokioTimer::new());
            let connection = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stopped(&mut stop, Stop::Graceful) => {
                    // The request being served finishes; an idle connection closes now.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
    drop((listener, open));
    let _ = all_closed.recv().await;
}
