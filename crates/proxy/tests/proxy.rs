//! The proxy between real HTTP servers on loopback: a front axum server whose one handler
//! calls [`Proxy::forward`], and replicas that are axum servers (or raw TCP for WebSockets).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::response::Response;
use axum::routing::{any, get, post};
use dstack_proxy::{Options, Proxy, Upstream};
use futures_util::{SinkExt, StreamExt};

/// Serves `router` on a free loopback port; counts accepted connections.
async fn serve(router: Router) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            let svc = hyper_util::service::TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (addr, accepted)
}

/// A replica named `name`: `/who` answers its name, `/echo` its request's path, headers and
/// body size, `/stream` three chunks 300 ms apart, `/slow` after 2 s.
fn replica(name: &'static str) -> Router {
    Router::new()
        .route("/who", get(move || async move { name }))
        .route(
            "/echo/{*rest}",
            any(|req: Request| async move {
                let uri = req.uri().to_string();
                let auth = req.headers().get("authorization").is_some();
                let custom =
                    req.headers().get("x-custom").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                let body = axum::body::to_bytes(req.into_body(), usize::MAX).await.unwrap();
                format!("uri={uri} auth={auth} custom={custom} bytes={}", body.len())
            }),
        )
        .route(
            "/stream",
            get(|| async {
                let chunks = futures_util::stream::unfold(0, |i| async move {
                    if i == 3 {
                        return None;
                    }
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    Some((Ok::<_, std::io::Error>(format!("data: {i}\n\n")), i + 1))
                });
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(Body::from_stream(chunks))
                    .unwrap()
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                "late"
            }),
        )
        .route("/upload", post(|body: axum::body::Bytes| async move { body.len().to_string() }))
        .route("/empty", get(|| async { "" }))
        .route("/no-content", get(|| async { StatusCode::NO_CONTENT }))
}

/// A front server that proxies every request under `/p/` to `upstreams`, dropping
/// `Authorization`.
async fn front(proxy: Arc<Proxy>, upstreams: Vec<Upstream>) -> SocketAddr {
    let state = (proxy, Arc::new(upstreams));
    let router = Router::new()
        .route(
            "/p/{*rest}",
            any(|State((proxy, ups)): State<(Arc<Proxy>, Arc<Vec<Upstream>>)>, req: Request| async move {
                let pq = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
                let path = format!("/{}", pq.trim_start_matches("/p/"));
                proxy.forward(req, &ups, &path, &[HeaderName::from_static("authorization")]).await
            }),
        )
        .with_state(state);
    serve(router).await.0
}

/// A front server like the gateway's: a bare hyper service (no axum around it) that proxies
/// every request to `upstreams` as it is.
async fn bare_front(proxy: Arc<Proxy>, upstreams: Vec<Upstream>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstreams = Arc::new(upstreams);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (proxy, upstreams) = (proxy.clone(), upstreams.clone());
            let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (proxy, upstreams) = (proxy.clone(), upstreams.clone());
                async move {
                    let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
                    let resp = proxy.forward(req.map(Body::new), &upstreams, &path, &[]).await;
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn upstream(id: &str, addr: SocketAddr) -> Upstream {
    Upstream { id: id.to_owned(), addr }
}

/// A loopback address nobody listens on.
async fn dead_addr() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn requests_spread_over_replicas_skip_a_dead_one_and_reuse_connections() {
    let (a, a_conns) = serve(replica("a")).await;
    let (b, b_conns) = serve(replica("b")).await;
    let dead = dead_addr().await;
    let proxy = Proxy::new(Options::default());
    let front = front(proxy.clone(), vec![upstream("a", a), upstream("dead", dead), upstream("b", b)]).await;
    let client = reqwest::Client::new();
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..30 {
        let resp = client.get(format!("http://{front}/p/who")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        *seen.entry(resp.text().await.unwrap()).or_insert(0) += 1;
    }
    // Each try of the dead replica moved on to the next one: b.
    assert_eq!(seen.get("a"), Some(&10), "{seen:?}");
    assert_eq!(seen.get("b"), Some(&20), "{seen:?}");
    let stats = proxy.stats("dead").expect("dead replica stats");
    assert_eq!((stats.failures, stats.in_flight), (10, 0));
    assert_eq!(proxy.stats("a").map(|s| (s.requests, s.failures, s.in_flight)), Some((10, 0, 0)));
    // Sequential requests reuse pooled connections.
    assert_eq!(a_conns.load(Ordering::SeqCst), 1);
    assert_eq!(b_conns.load(Ordering::SeqCst), 1);
}

/// Responses without a body (an empty one, 204, an answer to HEAD) end before anyone reads
/// them; their connections go back to the pool all the same, whichever server writes them.
#[tokio::test]
async fn connections_of_bodiless_responses_are_reused() {
    let (a, a_conns) = serve(replica("a")).await;
    let proxy = Proxy::new(Options::default());
    let fronts =
        [bare_front(proxy.clone(), vec![upstream("a", a)]).await, front(proxy, vec![upstream("a", a)]).await];
    let client = reqwest::Client::new();
    for (front, prefix) in fronts.iter().zip(["", "/p"]) {
        for _ in 0..3 {
            let resp = client.get(format!("http://{front}{prefix}/empty")).send().await.unwrap();
            assert_eq!((resp.status(), resp.text().await.unwrap()), (StatusCode::OK, String::new()));
            let resp = client.get(format!("http://{front}{prefix}/no-content")).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::NO_CONTENT);
            let resp = client.head(format!("http://{front}{prefix}/who")).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let resp = client.get(format!("http://{front}{prefix}/who")).send().await.unwrap();
            assert_eq!(resp.text().await.unwrap(), "a");
        }
    }
    assert_eq!(a_conns.load(Ordering::SeqCst), 1, "one upstream connection for 24 sequential requests");
}

#[tokio::test]
async fn paths_queries_headers_and_bodies_pass_through_without_the_token() {
    let (a, _) = serve(replica("a")).await;
    let front = front(Proxy::new(Options::default()), vec![upstream("a", a)]).await;
    let client = reqwest::Client::new();
    let text = client
        .put(format!("http://{front}/p/echo/x%20y/z?q=1&r=%2F"))
        .header("authorization", "Bearer dstack-token")
        .header("x-custom", "kept")
        .body(vec![7u8; 3_000_000])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, "uri=/echo/x%20y/z?q=1&r=%2F auth=false custom=kept bytes=3000000");
    // A streamed upload of unknown length (chunked) arrives whole.
    let chunks = futures_util::stream::iter((0..50).map(|_| Ok::<_, std::io::Error>(vec![1u8; 10_000])));
    let n = client
        .post(format!("http://{front}/p/upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(n, "500000");
}

#[tokio::test]
async fn responses_stream_as_the_replica_writes_them() {
    let (a, _) = serve(replica("a")).await;
    let front = front(Proxy::new(Options::default()), vec![upstream("a", a)]).await;
    let started = Instant::now();
    let resp = reqwest::get(format!("http://{front}/p/stream")).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    let first_at = started.elapsed();
    assert_eq!(&first[..], b"data: 0\n\n");
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    let all_at = started.elapsed();
    assert_eq!(rest, b"data: 1\n\ndata: 2\n\n");
    // The first event came before the replica wrote the others (600 ms later), not all at once.
    assert!(all_at - first_at >= Duration::from_millis(500), "first at {first_at:?}, all at {all_at:?}");
}

#[tokio::test]
async fn websockets_are_passed_through() {
    // A WebSocket echo replica on raw TCP.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() {
                        ws.send(format!("echo: {}", msg.to_text().unwrap()).into()).await.unwrap();
                    }
                }
            });
        }
    });
    let proxy = Proxy::new(Options::default());
    let front = front(proxy.clone(), vec![upstream("ws", ws_addr)]).await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{front}/p/socket")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for i in 0..3 {
        ws.send(format!("hello {i}").into()).await.unwrap();
        let reply = ws.next().await.unwrap().unwrap();
        assert_eq!(reply.to_text().unwrap(), format!("echo: hello {i}"));
    }
    assert_eq!(proxy.stats("ws").map(|s| s.in_flight), Some(1), "an open socket is in flight");
    ws.close(None).await.unwrap();
    drop(ws);
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.stats("ws").map(|s| s.in_flight) != Some(0) {
        assert!(Instant::now() < deadline, "the closed socket stays in flight");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn no_replica_slow_replica_and_all_dead_get_clear_errors() {
    let front_none = front(Proxy::new(Options::default()), Vec::new()).await;
    let resp = reqwest::get(format!("http://{front_none}/p/who")).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.text().await.unwrap(), r#"{"detail":"No ready replicas"}"#);

    let dead = dead_addr().await;
    let front_dead = front(Proxy::new(Options::default()), vec![upstream("d", dead)]).await;
    let resp = reqwest::get(format!("http://{front_dead}/p/who")).await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.text().await.unwrap(), r#"{"detail":"Error requesting upstream"}"#);

    let (a, _) = serve(replica("a")).await;
    let options = Options { response_timeout: Duration::from_millis(300), ..Options::default() };
    let front_slow = front(Proxy::new(options), vec![upstream("a", a)]).await;
    let resp = reqwest::get(format!("http://{front_slow}/p/slow")).await.unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(resp.text().await.unwrap(), r#"{"detail":"Timed out requesting upstream"}"#);
}

/// A request counts in flight from the moment it is sent, also while the replica has not
/// answered yet (what a drain waits for), until its body has been read.
#[tokio::test]
async fn a_request_counts_in_flight_before_its_answer() {
    let (a, _) = serve(replica("a")).await;
    let proxy = Proxy::new(Options::default());
    let front = front(proxy.clone(), vec![upstream("a", a)]).await;
    let slow =
        tokio::spawn(
            async move { reqwest::get(format!("http://{front}/p/slow")).await.unwrap().text().await },
        );
    let deadline = Instant::now() + Duration::from_secs(1);
    while proxy.stats("a").map(|s| s.in_flight) != Some(1) {
        assert!(Instant::now() < deadline, "the waiting request is in flight");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(slow.await.unwrap().unwrap(), "late");
    assert_eq!(proxy.stats("a").map(|s| s.in_flight), Some(0));
}
