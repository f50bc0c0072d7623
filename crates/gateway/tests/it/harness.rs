//! Test gateways, replicas and a stand-in for the server's `projects/get`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::{any, get, post};
use dstack_gateway::{Config, Gateway};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};

/// Serves `router` on a free loopback port, with upgrades.
pub(crate) async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let svc = hyper_util::service::TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// A replica named `name`: `/whoami` answers its name; `/headers` the Host, X-Real-IP and
/// whether Authorization came; `/sse` three events 300 ms apart; `/ws` a WebSocket echo;
/// `/slow` answers after 200 ms; `/v1/chat/completions` echoes the body's model.
pub(crate) fn replica(name: &'static str) -> Router {
    Router::new()
        .route("/whoami", get(move || async move { name }))
        .route(
            "/slow",
            get(move || async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                name
            }),
        )
        .route(
            "/slower",
            get(move || async move {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                name
            }),
        )
        .route(
            "/headers",
            any(|req: Request| async move {
                let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                axum::Json(json!({
                    "host": h("host"),
                    "x_real_ip": h("x-real-ip"),
                    "authorization": h("authorization"),
                    "uri": req.uri().to_string(),
                }))
            }),
        )
        .route(
            "/sse",
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
                    .header("access-control-allow-origin", "https://replica.example")
                    .body(Body::from_stream(chunks))
                    .unwrap()
            }),
        )
        .route("/ws", get(websocket_echo))
        .route("/generate", post(|body: axum::body::Bytes| async move { body.len().to_string() }))
        .route(
            "/v1/chat/completions",
            post(move |body: axum::body::Bytes| async move {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                axum::Json(json!({"replica": name, "model": v["model"]}))
            }),
        )
}

async fn websocket_echo(mut req: Request) -> Response {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let Some(key) = req.headers().get("sec-websocket-key").map(|k| derive_accept_key(k.as_bytes())) else {
        return Response::builder().status(400).body(Body::from("not a websocket")).unwrap();
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() {
                let reply = format!("echo: {}", msg.to_text().unwrap());
                if ws.send(reply.into()).await.is_err() {
                    return;
                }
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header("sec-websocket-accept", key)
        .body(Body::empty())
        .unwrap()
}

/// A stand-in for the dstack server's `POST /api/projects/{project}/get`: the token `good`
/// is a member of every project, `broken` makes it answer 500, anything else 403.
pub(crate) struct FakeServer {
    pub(crate) url: String,
    pub(crate) calls: Arc<AtomicUsize>,
}

pub(crate) async fn fake_server() -> FakeServer {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let router = Router::new().route(
        "/api/projects/{project}/get",
        post(move |req: Request| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
                match auth {
                    "Bearer good" => (StatusCode::OK, "{}"),
                    "Bearer broken" => (StatusCode::INTERNAL_SERVER_ERROR, "{}"),
                    _ => (StatusCode::FORBIDDEN, r#"{"detail":[{"msg":"denied"}]}"#),
                }
            }
        }),
    );
    let addr = serve(router).await;
    FakeServer { url: format!("http://{addr}"), calls }
}

/// A gateway on loopback ports with its state in a temp dir (kept for restarts).
pub(crate) struct TestGateway {
    pub(crate) gw: Option<Gateway>,
    pub(crate) config: Config,
    pub(crate) _dir: Arc<tempfile::TempDir>,
    pub(crate) client: reqwest::Client,
}

impl TestGateway {
    pub(crate) async fn start() -> TestGateway {
        TestGateway::start_with(|_| {}).await
    }

    /// A gateway whose configuration `change` adjusts first.
    pub(crate) async fn start_with(change: impl FnOnce(&mut Config)) -> TestGateway {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let mut config = Config::local(dir.path().join("state"));
        change(&mut config);
        let gw = dstack_gateway::start(config.clone()).await.unwrap();
        TestGateway { gw: Some(gw), config, _dir: dir, client: reqwest::Client::new() }
    }

    /// Stops the gateway and starts it again on the same state dir (and new ports).
    pub(crate) async fn restart(mut self) -> TestGateway {
        drop(self.gw.take());
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.gw = Some(dstack_gateway::start(self.config.clone()).await.unwrap());
        self
    }

    fn gw(&self) -> &Gateway {
        self.gw.as_ref().unwrap()
    }

    pub(crate) fn state_dir(&self) -> &Path {
        &self.config.state_dir
    }

    pub(crate) fn cert_dir(&self) -> PathBuf {
        self.config.cert_dir.clone()
    }

    pub(crate) fn api_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gw().api_addr)
    }

    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Value) {
        let resp = self.client.get(self.api_url(path)).send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let resp = self.client.post(self.api_url(path)).json(&body).send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Registers `project/run` on `domain` (no auth, no https unless `extra` says so) and
    /// asserts it worked.
    pub(crate) async fn register_service(&self, project: &str, run: &str, domain: &str, extra: Value) {
        let mut body = json!({
            "id": format!("{run}-id"),
            "run_name": run,
            "domain": domain,
            "https": false,
            "auth": false,
            "client_max_body_size": 67108864,
            "options": {},
            "ssh_private_key": "not a key: direct replicas need none",
        });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                body.insert(k.clone(), v.clone());
            }
        }
        let (status, resp) = self.post(&format!("/api/registry/{project}/services/register"), body).await;
        assert_eq!((status, &resp), (StatusCode::OK, &json!({"status": "ok"})));
    }

    /// Registers a replica reached directly at `addr`.
    pub(crate) async fn register_replica(&self, project: &str, run: &str, job: &str, addr: SocketAddr) {
        let (status, resp) = self
            .post(
                &format!("/api/registry/{project}/services/{run}/replicas/register"),
                json!({"job_id": job, "app_port": addr.port(), "internal_ip": addr.ip().to_string()}),
            )
            .await;
        assert_eq!((status, &resp), (StatusCode::OK, &json!({"status": "ok"})), "registering {job}");
    }

    pub(crate) fn http_addr(&self) -> SocketAddr {
        self.gw().http_addr.unwrap()
    }

    pub(crate) fn https_addr(&self) -> SocketAddr {
        self.gw().https_addr.unwrap()
    }

    /// `http://<domain>:<http port><path>`, with a client that resolves `domain` to the gateway.
    pub(crate) fn http(&self, domain: &str, path: &str) -> (reqwest::Client, String) {
        let client = reqwest::Client::builder()
            .resolve(domain, SocketAddr::from(([127, 0, 0, 1], 0)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        (client, format!("http://{domain}:{}{path}", self.http_addr().port()))
    }
}

/// Polls `f` until it is true, up to 10 s.
pub(crate) async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}
