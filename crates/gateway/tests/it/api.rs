//! The gateway API: dstack's bodies, error texts, the service list and persistence.

use axum::http::StatusCode;
use serde_json::json;

use crate::harness::{TestGateway, eventually, replica, serve};

#[tokio::test]
async fn info_and_config() {
    let gw = TestGateway::start().await;
    assert_eq!(gw.get("/").await, (StatusCode::OK, json!({"version": "0.22.5"})));
    let (status, body) = gw
        .post(
            "/api/config",
            json!({"acme_server": null, "acme_eab_kid": null, "acme_eab_hmac_key": "secret-hmac"}),
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    let (status, body) = gw.get("/api/nothing").await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, json!({"detail": "Not Found"})));
}

#[tokio::test]
async fn registrations_refuse_duplicates_with_dstacks_texts() {
    let gw = TestGateway::start().await;
    let a = serve(replica("a")).await;
    gw.register_service("Main", "Svc", "svc.gw.example.com", json!({})).await;

    // Names are lower-cased: the same service again, in another case, is a duplicate.
    let body = json!({"run_name": "svc", "domain": "other.gw.example.com", "https": false, "auth": false,
                      "client_max_body_size": 1, "options": {}, "ssh_private_key": "k"});
    let (status, resp) = gw.post("/api/registry/MAIN/services/register", body).await;
    assert_eq!(
        (status, resp),
        (StatusCode::BAD_REQUEST, json!({"detail": "Service main/svc is already registered"}))
    );

    let body = json!({"run_name": "svc2", "domain": "SVC.gw.example.com", "https": false, "auth": false,
                      "client_max_body_size": 1, "options": {}, "ssh_private_key": "k"});
    let (status, resp) = gw.post("/api/registry/main/services/register", body).await;
    assert_eq!(
        (status, resp),
        (
            StatusCode::BAD_REQUEST,
            json!({"detail": "Domain name 'svc.gw.example.com' is already taken by another service"})
        )
    );

    gw.register_replica("main", "svc", "job1", a).await;
    let (status, resp) = gw
        .post(
            "/api/registry/main/services/svc/replicas/register",
            json!({"job_id": "job1", "app_port": a.port(), "internal_ip": "127.0.0.1"}),
        )
        .await;
    assert_eq!(
        (status, resp),
        (StatusCode::BAD_REQUEST, json!({"detail": "Replica job1 already exists in service main/svc"}))
    );
    let (status, resp) = gw
        .post("/api/registry/main/services/nope/replicas/register", json!({"job_id": "j", "app_port": 80}))
        .await;
    assert_eq!(
        (status, resp),
        (
            StatusCode::BAD_REQUEST,
            json!({"detail": "Service main/nope does not exist, cannot register replica"})
        )
    );
    let (status, resp) = gw
        .post("/api/registry/main/services/svc/replicas/register", json!({"job_id": "j2", "app_port": 80}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        resp["detail"],
        "Cannot register replica j2 in service main/svc: no SSH destination (ssh_host, ssh_port) and no internal_ip"
    );

    // A bad key is refused without quoting it.
    let (status, resp) = gw
        .post(
            "/api/registry/main/services/svc/replicas/register",
            json!({"job_id": "j3", "app_port": 80, "ssh_host": "root@localhost", "ssh_port": 10022,
                   "ssh_proxy": {"hostname": "127.0.0.1", "username": "ubuntu", "port": 1},
                   "ssh_proxy_private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nsecretbytes\n"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let detail = resp["detail"].as_str().unwrap();
    assert!(detail.starts_with("Cannot register replica j3 in service main/svc: "), "{detail}");
    assert!(!detail.contains("secretbytes") && !detail.contains("BEGIN"), "{detail}");

    let (status, resp) =
        gw.post("/api/registry/main/services/svc/replicas/nope/unregister", json!(null)).await;
    assert_eq!(
        (status, resp),
        (
            StatusCode::BAD_REQUEST,
            json!({"detail": "Replica nope does not exist in service main/svc, cannot unregister"})
        )
    );
    let (status, resp) = gw.post("/api/registry/main/services/nope/unregister", json!(null)).await;
    assert_eq!(
        (status, resp),
        (
            StatusCode::BAD_REQUEST,
            json!({"detail": "Service main/nope is not registered, cannot unregister"})
        )
    );
    let (status, resp) = gw.post("/api/registry/main/services/svc/set_id", json!({"id": "x"})).await;
    assert_eq!(
        (status, resp),
        (StatusCode::BAD_REQUEST, json!({"detail": "Service main/svc already has an ID"}))
    );

    // Bodies that do not decode: 422, and the values are not quoted.
    let (status, resp) = gw
        .post(
            "/api/registry/main/services/register",
            json!({"run_name": "x", "ssh_private_key": "-----BEGIN"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!resp["detail"].as_str().unwrap().contains("BEGIN"), "{resp}");

    // An https service needs a certificate; this gateway serves no HTTPS.
    let body = json!({"run_name": "tls", "domain": "tls.gw.example.com", "https": true, "auth": false,
                      "client_max_body_size": 1, "options": {}, "ssh_private_key": "k"});
    let (status, resp) = gw.post("/api/registry/main/services/register", body).await;
    assert_eq!(
        (status, resp),
        (
            StatusCode::BAD_REQUEST,
            json!({"detail": "Error obtaining tls.gw.example.com TLS certificate: this gateway serves no HTTPS"})
        )
    );
}

#[tokio::test]
async fn the_list_and_the_routes_survive_a_restart() {
    let gw = TestGateway::start().await;
    let a = serve(replica("a")).await;
    let b = serve(replica("b")).await;
    gw.register_service("main", "svc", "svc.gw.example.com", json!({})).await;
    gw.register_service("main", "empty", "empty.gw.example.com", json!({"id": null})).await;
    gw.register_replica("main", "svc", "ja", a).await;
    gw.register_replica("main", "svc", "jb", b).await;
    let (status, resp) = gw.post("/api/registry/main/services/svc/replicas/jb/unregister", json!(null)).await;
    assert_eq!((status, resp), (StatusCode::OK, json!({"status": "ok"})));
    let expected = json!({"services": [
        {"id": null, "project_name": "main", "run_name": "empty", "replicas": []},
        {"id": "svc-id", "project_name": "main", "run_name": "svc", "replicas": [{"id": "ja"}]},
    ]});
    assert_eq!(gw.get("/api/services/list").await, (StatusCode::OK, expected.clone()));

    // The state file holds the keys: only its owner may read it.
    let state_file = gw.state_dir().join("state.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&state_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let gw = gw.restart().await;
    assert_eq!(gw.get("/api/services/list").await, (StatusCode::OK, expected));
    eventually("the restarted gateway to serve svc again", async || {
        let (client, url) = gw.http("svc.gw.example.com", "/whoami");
        let resp = client.get(url).send().await.unwrap();
        resp.status() == StatusCode::OK && resp.text().await.unwrap() == "a"
    })
    .await;

    let (status, _) = gw.post("/api/registry/main/services/svc/unregister", json!(null)).await;
    assert_eq!(status, StatusCode::OK);
    let (client, url) = gw.http("svc.gw.example.com", "/whoami");
    assert_eq!(client.get(url).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    let gw = gw.restart().await;
    assert_eq!(gw.get("/api/services/list").await.1["services"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_broken_state_file_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    std::fs::create_dir_all(&state_dir).unwrap();
    std::fs::write(state_dir.join("state.json"), "{\"services\": [\"-----BEGIN").unwrap();
    let err = dstack_gateway::start(dstack_gateway::Config::local(state_dir)).await.err().unwrap();
    let text = err.to_string();
    assert!(text.contains("state.json is invalid") && !text.contains("BEGIN"), "{text}");
}

#[tokio::test]
async fn concurrent_registrations_of_one_replica_are_serialized() {
    let gw = TestGateway::start().await;
    let a = serve(replica("a")).await;
    gw.register_service("main", "svc", "svc.gw.example.com", json!({})).await;
    let body = json!({"job_id": "job1", "app_port": a.port(), "internal_ip": "127.0.0.1"});
    let tries = (0..10).map(|_| gw.post("/api/registry/main/services/svc/replicas/register", body.clone()));
    let results = futures_util::future::join_all(tries).await;
    let n_ok = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!(n_ok, 1, "{results:?}");
    assert!(results.iter().all(
        |(s, r)| *s == StatusCode::OK || r["detail"] == "Replica job1 already exists in service main/svc"
    ));
    let (_, list) = gw.get("/api/services/list").await;
    assert_eq!(list["services"][0]["replicas"], json!([{"id": "job1"}]));
}

/// The server's client of the gateway API (`dstack_agent_proto::GatewayClient`) against the
/// gateway: the typed bodies round-trip and errors carry dstack's `detail`.
#[tokio::test]
async fn the_gateway_client_speaks_the_api() {
    use dstack_agent_proto::GatewayClient;
    use dstack_agent_proto::gateway::{
        ChatModel, ModelFormat, OpenAiOptions, RegisterEntrypointRequest, RegisterReplicaRequest,
        RegisterServiceRequest, Secret, ServiceOptions,
    };
    let gw = TestGateway::start().await;
    let a = serve(replica("a")).await;
    let client = GatewayClient::new(&gw.api_url(""));
    assert_eq!(client.info().await.unwrap().version, "0.22.5");
    let service = RegisterServiceRequest {
        id: Some("run-id".into()),
        run_name: "llm".into(),
        domain: "llm.gw.example.com".into(),
        https: false,
        auth: false,
        client_max_body_size: 64 << 20,
        options: ServiceOptions {
            openai: Some(OpenAiOptions {
                model: ChatModel {
                    kind: "chat".into(),
                    name: "llama".into(),
                    format: ModelFormat::Openai { prefix: "/v1".into() },
                },
            }),
        },
        ssh_private_key: Secret("k".into()),
        rate_limits: Vec::new(),
        has_router_replica: false,
        read_timeout: 300,
    };
    client.register_service("main", &service).await.unwrap();
    let err = client.register_service("main", &service).await.unwrap_err();
    assert_eq!(
        (err.status(), err.to_string().ends_with(": Service main/llm is already registered")),
        (Some(400), true)
    );
    let replica = RegisterReplicaRequest {
        job_id: "job1".into(),
        app_port: a.port(),
        ssh_host: String::new(),
        ssh_port: 0,
        ssh_proxy: None,
        ssh_proxy_private_key: None,
        ssh_head_proxy: None,
        ssh_head_proxy_private_key: None,
        internal_ip: Some("127.0.0.1".into()),
        ssh_private_key: None,
    };
    client.register_replica("main", "llm", &replica).await.unwrap();
    match client.register_replica("main", "llm", &replica).await.unwrap_err() {
        dstack_agent_proto::AgentError::Status { status, message, .. } => {
            assert_eq!((status, message.as_str()), (400, "Replica job1 already exists in service main/llm"));
        }
        other => panic!("{other}"),
    }
    client
        .register_entrypoint(
            "main",
            &RegisterEntrypointRequest {
                domain: "gateway.gw.example.com".into(),
                https: false,
                read_timeout: 300,
            },
        )
        .await
        .unwrap();
    let list = client.list_services().await.unwrap();
    assert_eq!(list.services[0].replicas[0].id, "job1");
    let stats = client.collect_stats().await.unwrap();
    assert_eq!(stats[0].stats.keys().copied().collect::<Vec<_>>(), [30, 60, 300]);
    client.unregister_replica("main", "llm", "job1").await.unwrap();
    client.unregister_service("main", "llm").await.unwrap();
    assert!(client.list_services().await.unwrap().services.is_empty());
}

#[tokio::test]
async fn a_failed_state_write_changes_nothing() {
    let gw = TestGateway::start().await;
    gw.register_service("main", "kept", "kept.gw.example.com", json!({})).await;
    // The temp file's name taken by a directory: the write fails (also for root).
    let blocker = gw.state_dir().join("state.json.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let body = json!({"run_name": "lost", "domain": "lost.gw.example.com", "https": false, "auth": false,
                      "client_max_body_size": 1, "options": {}, "ssh_private_key": "k"});
    let (status, resp) = gw.post("/api/registry/main/services/register", body.clone()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(resp["detail"].as_str().unwrap().starts_with("Cannot write the gateway state"), "{resp}");
    let (_, list) = gw.get("/api/services/list").await;
    assert_eq!(list["services"].as_array().unwrap().len(), 1, "{list}");
    let (client, url) = gw.http("lost.gw.example.com", "/");
    assert_eq!(client.get(url).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    std::fs::remove_dir(&blocker).unwrap();
    let (status, _) = gw.post("/api/registry/main/services/register", body).await;
    assert_eq!(status, StatusCode::OK);
}
