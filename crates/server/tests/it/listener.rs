//! The listener as `dstack server` serves it (`dstack_server::serve`): worker threads that
//! proxy service requests themselves and hand API requests to the main runtime, over real TCP,
//! and a graceful stop that lets a request in flight finish.

use std::time::Duration;

use serde_json::json;

use crate::support::{isolated_server, run_submitted, unique};

/// A replica: `/whoami` answers `r`, `/second` answers `slow` after a second, `/echo` is a
/// WebSocket that echoes text. Its port.
async fn replica() -> u16 {
    let app = axum::Router::new()
        .route("/whoami", axum::routing::get(|| async { "r" }))
        .route(
            "/second",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                "slow"
            }),
        )
        .route("/echo", axum::routing::get(echo));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// Accepts a WebSocket upgrade and echoes each text message back as `echo: …`.
async fn echo(mut req: axum::extract::Request) -> axum::response::Response {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::{handshake::derive_accept_key, protocol::Role};
    let key = req.headers().get("sec-websocket-key").map(|k| derive_accept_key(k.as_bytes())).unwrap();
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = hyper_util::rt::TokioIo::new(upgrade.await.unwrap());
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() {
                ws.send(format!("echo: {}", msg.to_text().unwrap()).into()).await.unwrap();
            }
        }
    });
    axum::response::Response::builder()
        .status(101)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", key)
        .body(axum::body::Body::empty())
        .unwrap()
}

/// The names of this process's threads that start with `prefix`.
fn threads_named(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| name.starts_with(prefix))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn worker_threads_serve_the_api_and_the_proxy_and_stop_gracefully() {
    let (s, _dir) = isolated_server().await;
    let p = unique("listener");
    s.admin("/api/projects/create", Some(json!({"project_name": p}))).await;
    let text = include_str!("../../../api/tests/fixtures/task.runs_apply.request.json");
    let mut body: serde_json::Value = serde_json::from_str(text).expect("fixture");
    body["plan"]["run_spec"]["run_name"] = json!("svc");
    body["plan"]["run_spec"]["configuration"] =
        json!({"type": "service", "name": "svc", "port": 8000, "commands": ["serve"]});
    s.admin(&format!("/api/project/{p}/runs/apply"), Some(body)).await;
    run_submitted(&s, replica().await).await;

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let prefix = format!("srv-{}-", addr.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(dstack_server::serve(s.state.clone(), listener, 3, async move {
        let _ = stopped.await;
    }));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while threads_named(&prefix).len() < 3 {
        assert!(std::time::Instant::now() < deadline, "threads: {:?}", threads_named(&prefix));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(threads_named(&prefix), [0, 1, 2].map(|i| format!("{prefix}{i}")));

    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let token = s.admin_token.clone();
    // An API request, answered by the router on the main runtime.
    let me = client.post(format!("{base}/api/users/get_my_user")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(me.status(), 200);
    let me: serde_json::Value = serde_json::from_str(&me.text().await.unwrap()).unwrap();
    assert_eq!(me["username"], "admin");
    let denied =
        client.post(format!("{base}/api/users/get_my_user")).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(denied.status(), 403);
    // Service requests, proxied by the workers (their route and grant looked up on the main
    // runtime), over several connections.
    let service = format!("{base}/proxy/services/{p}/svc");
    for i in 0..12 {
        let client = if i % 3 == 0 { reqwest::Client::new() } else { client.clone() };
        let resp = client.get(format!("{service}/whoami")).bearer_auth(&token).send().await.unwrap();
        assert_eq!((resp.status().as_u16(), resp.text().await.unwrap()), (200, "r".to_owned()));
    }
    let nobody = client.get(format!("{service}/whoami")).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(nobody.status(), 403);
    let unknown = client
        .get(format!("{base}/proxy/services/{p}/nope/whoami"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&unknown.text().await.unwrap()).unwrap(),
        json!({"detail": format!("Service {p}/nope not found")})
    );

    // A WebSocket through the proxy: the upgrade and the spliced connections on a worker.
    let mut ws_req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{addr}/proxy/services/{p}/svc/echo"
    ))
    .unwrap();
    ws_req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(ws_req).await.unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..3 {
        use futures_util::{SinkExt as _, StreamExt as _};
        ws.send(format!("hello {i}").into()).await.unwrap();
        let reply = ws.next().await.unwrap().unwrap();
        assert_eq!(reply.to_text().unwrap(), format!("echo: hello {i}"));
    }
    drop(ws);

    // A graceful stop: the request in flight gets its answer, then the port closes and the
    // threads end.
    let slow = tokio::spawn(client.get(format!("{service}/second")).bearer_auth(&token).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(()).unwrap();
    let resp = slow.await.unwrap().expect("the request in flight is answered");
    assert_eq!((resp.status().as_u16(), resp.text().await.unwrap()), (200, "slow".to_owned()));
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("stopped in time").unwrap().unwrap();
    assert_eq!(threads_named(&prefix), Vec::<String>::new());
    assert!(std::net::TcpStream::connect(addr).is_err(), "the port is closed");
}
