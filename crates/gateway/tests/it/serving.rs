//! Requests through the HTTP listener: Host routing, round-robin, 503 without replicas,
//! WebSockets, SSE, auth through the server, rate limits, CORS, the model API and stats.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::harness::{TestGateway, fake_server, replica, serve};

#[tokio::test]
async fn hosts_route_to_their_replicas_round_robin() {
    let gw = TestGateway::start().await;
    let (a, b, c) = (serve(replica("a")).await, serve(replica("b")).await, serve(replica("c")).await);
    gw.register_service("main", "one", "one.gw.example.com", json!({})).await;
    gw.register_service("main", "two", "two.gw.example.com", json!({})).await;
    gw.register_replica("main", "one", "ja", a).await;
    gw.register_replica("main", "one", "jb", b).await;
    gw.register_replica("main", "two", "jc", c).await;

    let mut seen = BTreeMap::new();
    for _ in 0..10 {
        let (client, url) = gw.http("ONE.gw.example.com", "/whoami");
        let resp = client.get(url).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        *seen.entry(resp.text().await.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(seen, BTreeMap::from([("a".to_owned(), 5), ("b".to_owned(), 5)]));
    let (client, url) = gw.http("two.gw.example.com", "/whoami");
    assert_eq!(client.get(url).send().await.unwrap().text().await.unwrap(), "c");

    // The replica sees the Host, the client's address and its own headers; the path and
    // query are kept.
    let (client, url) = gw.http("two.gw.example.com", "/headers?x=1");
    let headers: Value =
        client.get(url).bearer_auth("user-token").send().await.unwrap().json().await.unwrap();
    assert_eq!(headers["host"], "two.gw.example.com", "nginx's $host: no port");
    assert_eq!(headers["x_real_ip"], "127.0.0.1");
    assert_eq!(headers["authorization"], "Bearer user-token");
    assert_eq!(headers["uri"], "/headers?x=1");

    // Unknown hosts: 404.
    let (client, url) = gw.http("three.gw.example.com", "/whoami");
    let resp = client.get(url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"detail": "No service at three.gw.example.com"}));
}

#[tokio::test]
async fn a_service_without_replicas_answers_503_and_counts_the_demand() {
    let gw = TestGateway::start().await;
    gw.register_service("main", "zero", "zero.gw.example.com", json!({})).await;
    for _ in 0..3 {
        let (client, url) = gw.http("zero.gw.example.com", "/whoami");
        assert_eq!(client.get(url).send().await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let (_, stats) = gw.get("/api/stats/collect").await;
    assert_eq!(stats[0]["run_name"], "zero");
    assert_eq!(stats[0]["stats"]["30"]["requests"], 3, "{stats}");

    // A replica arrives: served.
    let a = serve(replica("a")).await;
    gw.register_replica("main", "zero", "ja", a).await;
    let (client, url) = gw.http("zero.gw.example.com", "/whoami");
    assert_eq!(client.get(url).send().await.unwrap().text().await.unwrap(), "a");
}

#[tokio::test]
async fn websockets_and_server_sent_events_pass_through() {
    let gw = TestGateway::start().await;
    let a = serve(replica("a")).await;
    gw.register_service("main", "live", "live.gw.example.com", json!({})).await;
    gw.register_replica("main", "live", "ja", a).await;

    let mut request = format!("ws://{}/ws", gw.http_addr()).into_client_request().unwrap();
    request.headers_mut().insert("host", "live.gw.example.com".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for i in 0..3 {
        ws.send(format!("hello {i}").into()).await.unwrap();
        let reply = ws.next().await.unwrap().unwrap();
        assert_eq!(reply.to_text().unwrap(), format!("echo: hello {i}"));
    }
    ws.close(None).await.unwrap();

    // Events arrive as the replica writes them, not at the end.
    let (client, url) = gw.http("live.gw.example.com", "/sse");
    let started = Instant::now();
    let mut stream = client.get(url).send().await.unwrap().bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(&first[..], b"data: 0\n\n");
    assert!(started.elapsed() < Duration::from_millis(500), "the first event came late");
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(rest, b"data: 1\n\ndata: 2\n\n");
    assert!(started.elapsed() >= Duration::from_millis(500));
}

#[tokio::test]
async fn auth_asks_the_server_and_caches_its_answer() {
    let server = fake_server().await;
    let url = server.url.clone();
    let gw = TestGateway::start_with(|c| c.server_url = Some(url)).await;
    let a = serve(replica("a")).await;
    gw.register_service("main", "private", "private.gw.example.com", json!({"auth": true})).await;
    gw.register_replica("main", "private", "ja", a).await;

    let (client, url) = gw.http("private.gw.example.com", "/whoami");
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"detail": "Unauthenticated or unauthorized to access project main"})
    );
    assert_eq!(server.calls.load(Ordering::SeqCst), 0, "no token: the server is not asked");
    assert_eq!(client.get(&url).bearer_auth("bad").send().await.unwrap().status(), StatusCode::FORBIDDEN);
    for _ in 0..3 {
        let resp = client.get(&url).bearer_auth("good").send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.text().await.unwrap(), "a");
    }
    assert_eq!(client.get(&url).bearer_auth("bad").send().await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(server.calls.load(Ordering::SeqCst), 2, "one call per token, then the cache");
    let resp = client.get(&url).bearer_auth("broken").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);

    // The API's auth route answers the same way.
    let check = |token: &'static str| {
        let client = gw.client.clone();
        let url = gw.api_url("/api/auth/main");
        async move { client.get(url).bearer_auth(token).send().await.unwrap().status() }
    };
    assert_eq!(check("good").await, StatusCode::OK);
    assert_eq!(check("bad").await, StatusCode::FORBIDDEN);

    // Denied requests are not a service's load.
    let (_, stats) = gw.get("/api/stats/collect").await;
    assert_eq!(stats[0]["stats"]["60"]["requests"], 3, "{stats}");
}

/// The server's URL can come with `POST /api/config` (dstack-rs's extension) and is kept
/// across restarts and across a later config without it.
#[tokio::test]
async fn the_server_url_comes_with_the_config() {
    let server = fake_server().await;
    let gw = TestGateway::start().await;
    let a = serve(replica("a")).await;
    gw.register_service("main", "private", "private.gw.example.com", json!({"auth": true})).await;
    gw.register_replica("main", "private", "ja", a).await;
    let get = async |gw: &TestGateway| {
        let (client, url) = gw.http("private.gw.example.com", "/whoami");
        client.get(&url).bearer_auth("good").send().await.unwrap().status()
    };
    assert_eq!(get(&gw).await, StatusCode::INTERNAL_SERVER_ERROR, "no server to ask yet");
    let (status, _) = gw.post("/api/config", json!({"server_url": server.url})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(get(&gw).await, StatusCode::OK);
    let (status, _) = gw.post("/api/config", json!({"acme_server": null})).await;
    assert_eq!(status, StatusCode::OK);
    let gw = gw.restart().await;
    crate::harness::eventually("the restarted gateway to serve with auth", async || {
        get(&gw).await == StatusCode::OK
    })
    .await;
}

/// The same against our real server: the admin is a member of `main`; a bad token and an
/// unknown project are denied.
#[tokio::test]
async fn auth_against_the_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = dstack_server::ServerConfig::for_dir(dir.path().to_owned());
    config.admin_token = Some("admin-token".to_owned());
    config.background = false;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(dstack_server::run(
        config,
        move |started| {
            let _ = tx.send(started.url.clone());
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let url = rx.await.unwrap();
    let gw = TestGateway::start_with(|c| c.server_url = Some(url)).await;
    let a = serve(replica("a")).await;
    gw.register_service("main", "private", "private.gw.example.com", json!({"auth": true})).await;
    gw.register_service("nope", "other", "other.gw.example.com", json!({"auth": true})).await;
    gw.register_replica("main", "private", "ja", a).await;
    let (client, url) = gw.http("private.gw.example.com", "/whoami");
    let resp = client.get(&url).bearer_auth("admin-token").send().await.unwrap();
    assert_eq!((resp.status(), resp.text().await.unwrap()), (StatusCode::OK, "a".to_owned()));
    assert_eq!(client.get(&url).bearer_auth("wrong").send().await.unwrap().status(), StatusCode::FORBIDDEN);
    let (client, url) = gw.http("other.gw.example.com", "/whoami");
    assert_eq!(
        client.get(&url).bearer_auth("admin-token").send().await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn rate_limits_answer_429_per_key_with_the_longest_prefix() {
    let gw = TestGateway::start().await;
    let a = serve(replica("a")).await;
    let limits = json!({"rate_limits": [
        {"prefix": "/", "key": {"type": "ip_address"}, "rps": 0.1, "burst": 2},
        {"prefix": "/headers", "key": {"type": "header", "header": "X-Key"}, "rps": 0.1, "burst": 0},
    ]});
    gw.register_service("main", "limited", "limited.gw.example.com", limits).await;
    gw.register_replica("main", "limited", "ja", a).await;

    let (client, url) = gw.http("limited.gw.example.com", "/whoami");
    let statuses: Vec<u16> = {
        let mut out = Vec::new();
        for _ in 0..4 {
            out.push(client.get(&url).send().await.unwrap().status().as_u16());
        }
        out
    };
    assert_eq!(statuses, [200, 200, 200, 429], "the burst is 2 beyond the first");

    // `/headers` has its own limit, by header: one request per key, none without a key.
    let (client, url) = gw.http("limited.gw.example.com", "/headers");
    let get = |key: Option<&'static str>| {
        let req = client.get(&url);
        let req = match key {
            Some(k) => req.header("x-key", k),
            None => req,
        };
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get(Some("k1")).await, 200);
    assert_eq!(get(Some("k1")).await, 429);
    assert_eq!(get(Some("k2")).await, 200);
    assert_eq!(get(None).await, 200);
    assert_eq!(get(None).await, 200);

    // Limited requests are not counted in the stats.
    let (_, stats) = gw.get("/api/stats/collect").await;
    assert_eq!(stats[0]["stats"]["30"]["requests"], 7, "{stats}");

    let bad = json!({"run_name": "bad", "domain": "bad.gw.example.com", "https": false, "auth": false,
        "client_max_body_size": 1, "options": {}, "ssh_private_key": "k",
        "rate_limits": [{"prefix": "/ {", "key": {"type": "ip_address"}, "rps": 1.0, "burst": 0}]});
    let (status, _) = gw.post("/api/registry/main/services/register", bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn https_services_redirect_plain_http() {
    // An https service on a gateway with HTTPS but no request over it: the 301 is enough.
    let gw = TestGateway::start_with(|c| c.https_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    crate::tls::write_cert(&gw.cert_dir(), "sec.gw.example.com", &["sec.gw.example.com"]);
    gw.register_service("main", "sec", "sec.gw.example.com", json!({"https": true})).await;
    let (client, url) = gw.http("sec.gw.example.com", "/a/b?c=d");
    let resp = client.get(url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(resp.headers()["location"], "https://sec.gw.example.com/a/b?c=d");
}

#[tokio::test]
async fn openai_models_get_cors_and_the_model_api() {
    let server = fake_server().await;
    let url = server.url.clone();
    let gw = TestGateway::start_with(|c| c.server_url = Some(url)).await;
    let a = serve(replica("a")).await;
    let model = json!({"options": {"openai": {"model": {"type": "chat", "name": "llama", "format": "openai", "prefix": "/v1"}}}});
    gw.register_service("main", "llm", "llm.gw.example.com", model).await;
    gw.register_replica("main", "llm", "ja", a).await;
    let (status, _) = gw
        .post(
            "/api/registry/main/entrypoints/register",
            json!({"domain": "gateway.gw.example.com", "https": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // CORS: the preflight is answered by the gateway, responses get `*`.
    let (client, url) = gw.http("llm.gw.example.com", "/sse");
    let resp = client.request(reqwest::Method::OPTIONS, &url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    assert_eq!(resp.headers()["access-control-max-age"], "600");
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.headers()["access-control-allow-origin"], "*", "the replica's value is replaced");
    assert_eq!(resp.headers()["access-control-allow-headers"], "*");

    // The model API: on the API listener and on the entrypoint domain; auth always.
    let models =
        gw.client.get(gw.api_url("/api/models/main/models")).bearer_auth("good").send().await.unwrap();
    let models: Value = models.json().await.unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "llama");
    assert_eq!(models["data"][0]["owned_by"], "main");
    let (client, url) = gw.http("gateway.gw.example.com", "/chat/completions");
    let body = json!({"model": "llama", "messages": [{"role": "user", "content": "hi"}]});
    let resp = client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = client.post(&url).bearer_auth("good").json(&body).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"replica": "a", "model": "llama"}));
    let resp = client
        .post(&url)
        .bearer_auth("good")
        .json(&json!({"model": "nope", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"detail": "Model nope not found in project main"})
    );

    // Unregistering the service drops its model.
    gw.post("/api/registry/main/services/llm/unregister", json!(null)).await;
    let models =
        gw.client.get(gw.api_url("/api/models/main/models")).bearer_auth("good").send().await.unwrap();
    assert_eq!(models.json::<Value>().await.unwrap()["data"], json!([]));
}

#[tokio::test]
async fn stats_count_requests_and_their_time_per_window() {
    let gw = TestGateway::start().await;
    let a = serve(replica("a")).await;
    gw.register_service("main", "busy", "busy.gw.example.com", json!({})).await;
    gw.register_service("main", "idle", "idle.gw.example.com", json!({})).await;
    gw.register_replica("main", "busy", "ja", a).await;
    let (client, url) = gw.http("busy.gw.example.com", "/slow");
    for _ in 0..5 {
        assert_eq!(client.get(&url).send().await.unwrap().text().await.unwrap(), "a");
    }
    let (status, stats) = gw.get("/api/stats/collect").await;
    assert_eq!(status, StatusCode::OK);
    let busy = stats.as_array().unwrap().iter().find(|s| s["run_name"] == "busy").unwrap();
    for w in ["30", "60", "300"] {
        assert_eq!(busy["stats"][w]["requests"], 5, "{stats}");
        let t = busy["stats"][w]["request_time"].as_f64().unwrap();
        assert!((0.2..0.5).contains(&t), "{stats}");
    }
    let idle = stats.as_array().unwrap().iter().find(|s| s["run_name"] == "idle").unwrap();
    assert_eq!(
        idle["stats"],
        json!({"30": {"requests": 0, "request_time": 0.0}, "60": {"requests": 0, "request_time": 0.0},
               "300": {"requests": 0, "request_time": 0.0}})
    );
}

#[tokio::test]
async fn router_services_serve_only_the_inference_paths_and_bodies_are_limited() {
    let gw = TestGateway::start().await;
    let a = serve(replica("a")).await;
    let extra = json!({"has_router_replica": true, "client_max_body_size": 1000,
        "rate_limits": [{"prefix": "/v1", "key": {"type": "ip_address"}, "rps": 0.1, "burst": 0}]});
    gw.register_service("main", "routed", "routed.gw.example.com", extra).await;
    gw.register_replica("main", "routed", "ja", a).await;
    let (client, base) = gw.http("routed.gw.example.com", "");
    let resp = client.get(format!("{base}/whoami")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"detail": "Path is not allowed for this service"})
    );
    let chat = format!("{base}/v1/chat/completions");
    let resp = client.post(&chat).json(&json!({"model": "m"})).send().await.unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"replica": "a", "model": "m"}));
    // `/v1` limits `/v1/…`: the next request within 10 s is refused.
    let resp = client.post(&chat).json(&json!({"model": "m"})).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let resp = client.post(format!("{base}/generate")).body(vec![b'x'; 2000]).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // A chunked body is cut at the limit instead.
    let chunks = futures_util::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 500])));
    let body = reqwest::Body::wrap_stream(chunks);
    let resp = client.post(format!("{base}/generate")).body(body).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let chunks = futures_util::stream::iter((0..1).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 500])));
    let resp = client
        .post(format!("{base}/generate"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "500");
}

#[tokio::test]
async fn a_slow_replica_times_out_after_the_services_read_timeout() {
    let gw = TestGateway::start().await;
    let a = serve(replica("a")).await;
    gw.register_service("main", "quick", "quick.gw.example.com", json!({"read_timeout": 1})).await;
    gw.register_replica("main", "quick", "ja", a).await;
    let (client, base) = gw.http("quick.gw.example.com", "");
    let resp = client.get(format!("{base}/slower")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"detail": "Timed out requesting upstream"}));
    assert_eq!(client.get(format!("{base}/slow")).send().await.unwrap().text().await.unwrap(), "a");
}

/// The threads of this process whose name starts with `prefix` (Linux: /proc/self/task).
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

#[tokio::test]
async fn worker_threads_serve_the_listener_and_stop_with_the_gateway() {
    let mut gw = TestGateway::start_with(|c| c.workers = 3).await;
    let addr = gw.http_addr();
    let prefix = format!("gw-{}-", addr.port());
    assert_eq!(threads_named(&prefix), 3, "one thread per worker");
    let replica_addr = serve(replica("a")).await;
    gw.register_service("main", "one", "one.gw.example.com", json!({})).await;
    gw.register_replica("main", "one", "ja", replica_addr).await;

    // Each client is a new connection, taken by whichever worker accepts it first; a
    // connection's requests, and the replica connections they open, stay with that worker.
    let mut clients = Vec::new();
    for _ in 0..12 {
        let (client, url) = gw.http("one.gw.example.com", "/whoami");
        for _ in 0..3 {
            let resp = client.get(&url).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.text().await.unwrap(), "a");
        }
        clients.push(client);
    }
    // The workers count into the one load tracker the server collects.
    let (status, stats) = gw.get("/api/stats/collect").await;
    assert_eq!(status, StatusCode::OK);
    let one = stats.as_array().unwrap().iter().find(|s| s["run_name"] == "one").unwrap();
    assert_eq!(one["stats"]["30"]["requests"], 36, "{stats}");

    // Dropping the gateway stops its workers before it returns, and closes the port.
    drop(gw.gw.take());
    assert_eq!(threads_named(&prefix), 0);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener is closed");
}
