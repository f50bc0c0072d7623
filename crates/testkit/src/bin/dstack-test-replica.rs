//! A service replica for the end-to-end tests: a real HTTP server that the test image runs as
//! a service's command. `dstack-test-replica PORT` serves on all interfaces:
//!
//! - `GET /whoami`: the job id the runner gave it (`DSTACK_JOB_ID`), to tell replicas apart;
//! - `GET /sse`: three server-sent events, 200 ms apart;
//! - `GET /ready`: 503 until a `POST /ready` (which a test sends straight to the replica's
//!   published port), then 200: a readiness probe's target;
//! - `GET /health`: 200 (a probe that passes);
//! - `GET /version`: the `VERSION` environment variable, to tell a service's versions apart;
//! - `GET /slow?ms=N`: `VERSION` after N milliseconds (a request in flight during an update);
//! - anything else: `<METHOD> <path and query>`, then a space and the request body if it has
//!   one, so tests see what the proxy forwarded.

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let port: u16 = match std::env::args().nth(1).and_then(|p| p.parse().ok()) {
        Some(port) => port,
        None => {
            eprintln!("usage: dstack-test-replica PORT");
            std::process::exit(2);
        }
    };
    let job = std::env::var("DSTACK_JOB_ID").unwrap_or_default();
    let version = std::env::var("VERSION").unwrap_or_default();
    let slow_version = version.clone();
    let ready = Arc::new(AtomicBool::new(false));
    let made_ready = ready.clone();
    let app = Router::new()
        .route("/whoami", get(move || async move { job }))
        .route("/health", get(|| async { "ok" }))
        .route("/version", get(move || async move { version }))
        .route(
            "/slow",
            get(move |req: Request| async move {
                let ms: u64 = req
                    .uri()
                    .query()
                    .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("ms=")))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1000);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                slow_version
            }),
        )
        .route(
            "/ready",
            get(move || async move {
                if ready.load(Ordering::SeqCst) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            })
            .post(move || async move {
                made_ready.store(true, Ordering::SeqCst);
                "ready"
            }),
        )
        .route(
            "/sse",
            get(|| async {
                let events = futures_util::stream::unfold(0, |i| async move {
                    if i == 3 {
                        return None;
                    }
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Some((Ok::<_, std::io::Error>(format!("data: {i}\n\n")), i + 1))
                });
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(Body::from_stream(events))
                    .expect("a response")
            }),
        )
        .fallback(|req: Request| async move {
            let target = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
            let method = req.method().clone();
            let body = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap_or_default();
            if body.is_empty() {
                format!("{method} {target}")
            } else {
                format!("{method} {target} {}", String::from_utf8_lossy(&body))
            }
        });
    let listener = match tokio::net::TcpListener::bind(("0.0.0.0", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {port}: {e}");
            std::process::exit(1);
        }
    };
    println!("replica listening on {port}");
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("serving: {e}");
        std::process::exit(1);
    }
}
