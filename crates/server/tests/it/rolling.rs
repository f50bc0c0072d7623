//! A service's rolling update with the runs loop stepped by the test, which plays the job
//! loops' part (it makes jobs run) and whose replicas are real HTTP servers on loopback,
//! reached through the in-server proxy: the new replica serves before the old one is drained,
//! the drained one gets no new requests, and it is stopped only once its request in flight
//! has been answered.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::support::{TestServer, isolated_server, run_submitted, start_submitted, unique};

/// A replica: `/whoami` answers `name`; `/slow` counts itself in `started` and answers once
/// `release` is notified.
async fn replica(name: &'static str, started: Arc<AtomicUsize>, release: Arc<Notify>) -> u16 {
    let app = axum::Router::new().route("/whoami", axum::routing::get(move || async move { name })).route(
        "/slow",
        axum::routing::get(move || {
            let (started, release) = (started.clone(), release.clone());
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                release.notified().await;
                name
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

fn get(p: &str, path: &str, token: &str) -> Request<Body> {
    Request::get(format!("/proxy/services/{p}/svc/{path}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

async fn jobs(s: &TestServer, p: &str) -> Vec<Value> {
    let run = s.admin(&format!("/api/project/{p}/runs/get"), Some(json!({"run_name": "svc"}))).await;
    run["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_submissions"].as_array().unwrap().last().unwrap().clone())
        .collect()
}

/// Applies service "svc" (port 8000, `V=1` in its env) in project `p`: the apply request
/// (for the next version to change) and the run it returned.
async fn apply_version_1(s: &TestServer, p: &str) -> (Value, Value) {
    let text = include_str!("../../../api/tests/fixtures/task.runs_apply.request.json");
    let mut body: Value = serde_json::from_str(text).expect("fixture");
    body["plan"]["run_spec"]["run_name"] = json!("svc");
    body["plan"]["run_spec"]["configuration"] =
        json!({"type": "service", "name": "svc", "port": 8000, "commands": ["serve"], "env": {"V": "1"}});
    let first = s.admin(&format!("/api/project/{p}/runs/apply"), Some(body.clone())).await;
    (body, first)
}

#[tokio::test]
async fn the_old_replica_is_drained_before_it_stops() {
    let (s, _dir) = isolated_server().await;
    let p = unique("rolling");
    s.admin("/api/projects/create", Some(json!({"project_name": p}))).await;
    let (a_started, a_release) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
    let a_port = replica("a", a_started.clone(), a_release.clone()).await;
    let b_release = Arc::new(Notify::new());
    let b_port = replica("b", Arc::new(AtomicUsize::new(0)), b_release.clone()).await;
    let (mut body, first) = apply_version_1(&s, &p).await;
    let a = run_submitted(&s, a_port).await;
    assert_eq!(s.send(get(&p, "whoami", &s.admin_token)).await.json, json!("a"));

    // The update: deployment 1; the runs loop submits one new replica, the old one serves on.
    body["plan"]["run_spec"]["configuration"]["env"] = json!({"V": "2"});
    body["plan"]["current_resource"] = first;
    let updated = s.admin(&format!("/api/project/{p}/runs/apply"), Some(body)).await;
    assert_eq!(updated["deployment_num"], 1);
    dstack_server::pipelines::runs_pass(&s.state).await.unwrap();
    let subs = jobs(&s, &p).await;
    assert_eq!(subs.len(), 2, "{subs:?}");
    assert_eq!(
        (subs[1]["status"].clone(), subs[1]["deployment_num"].clone()),
        (json!("submitted"), json!(1))
    );
    let b = run_submitted(&s, b_port).await;

    // A slow request reaches the old replica and waits there.
    let mut slow = tokio::task::JoinSet::new();
    while a_started.load(Ordering::SeqCst) == 0 {
        let router = s.router.clone();
        let req = get(&p, "slow", &s.admin_token);
        slow.spawn(async move {
            use tower::ServiceExt as _;
            let resp = router.oneshot(req).await.unwrap();
            let status = resp.status();
            let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Both serve: the old one is drained (still running, out of routing), not stopped.
    dstack_server::pipelines::runs_pass(&s.state).await.unwrap();
    let old = s.state.db.job_by_id(a).await.unwrap().unwrap();
    assert!(old.drain_started_at.is_some(), "{old:?}");
    assert_eq!(old.status, "running");
    // The proxy's route cache: a route is used for 1 s, then for 0.5 s more while it is refreshed.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    for _ in 0..4 {
        assert_eq!(s.send(get(&p, "whoami", &s.admin_token)).await.json, json!("b"), "only the new one");
    }
    // Past the grace, with its request still in flight: it keeps running.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    dstack_server::pipelines::runs_pass(&s.state).await.unwrap();
    assert_eq!(s.state.db.job_by_id(a).await.unwrap().unwrap().status, "running");

    // The request is answered by the old replica; then it is stopped, as `scaled_down`.
    a_release.notify_waiters();
    b_release.notify_waiters(); // a slow request round-robin gave the new one
    while let Some(done) = slow.join_next().await {
        let (status, body) = done.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    dstack_server::pipelines::runs_pass(&s.state).await.unwrap();
    let old = s.state.db.job_by_id(a).await.unwrap().unwrap();
    assert_eq!(
        (old.status.as_str(), old.termination_reason.as_deref()),
        ("terminating", Some("scaled_down"))
    );
    let new = s.state.db.job_by_id(b).await.unwrap().unwrap();
    assert_eq!((new.status.as_str(), new.deployment_num, new.drain_started_at), ("running", 1, None));
    let run = s.admin(&format!("/api/project/{p}/runs/get"), Some(json!({"run_name": "svc"}))).await;
    assert_eq!((run["status"].clone(), run["status_message"].clone()), (json!("running"), json!("running")));
}

/// A new replica without probes whose app does not listen yet holds the update, and the run
/// says so (`update waiting: … not listening on port 8000`); the old replica serves on. Once
/// the app listens it is registered, the message goes and the update goes on.
#[tokio::test]
async fn an_update_waits_for_a_new_replica_to_listen_and_says_so() {
    let (s, _dir) = isolated_server().await;
    let p = unique("rolling");
    s.admin("/api/projects/create", Some(json!({"project_name": p}))).await;
    let a_port = replica("a", Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new())).await;
    // A port nothing listens on yet (taken by the new version below).
    let b_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (mut body, first) = apply_version_1(&s, &p).await;
    let a = run_submitted(&s, a_port).await;
    body["plan"]["run_spec"]["configuration"]["env"] = json!({"V": "2"});
    body["plan"]["current_resource"] = first;
    s.admin(&format!("/api/project/{p}/runs/apply"), Some(body)).await;
    dstack_server::pipelines::runs_pass(&s.state).await.unwrap();
    let b = start_submitted(&s, b_port).await;

    let message = || async {
        let run = s.admin(&format!("/api/project/{p}/runs/get"), Some(json!({"run_name": "svc"}))).await;
        run["status_message"].clone()
    };
    for _ in 0..2 {
        let mut executions = tokio::task::JoinSet::new();
        let client = dstack_server::pipelines::probes::http_client();
        dstack_server::pipelines::probes::pass(&s.state, &client, &mut executions).await.unwrap();
        dstack_server::pipelines::runs_pass(&s.state).await.unwrap();
        assert_eq!(message().await, json!("update waiting: replica 1 not listening on port 8000"));
        assert_eq!(s.send(get(&p, "whoami", &s.admin_token)).await.json, json!("a"), "the old one serves");
        let old = s.state.db.job_by_id(a).await.unwrap().unwrap();
        assert_eq!((old.status.as_str(), old.drain_started_at), ("running", None), "not drained yet");
    }

    // It listens: registered, the message goes, and the old replica is drained.
    let app = axum::Router::new().route("/whoami", axum::routing::get(|| async { "b" }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", b_port)).await.unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut executions = tokio::task::JoinSet::new();
    let client = dstack_server::pipelines::probes::http_client();
    dstack_server::pipelines::probes::pass(&s.state, &client, &mut executions).await.unwrap();
    assert_eq!(s.state.db.registered_jobs(&[b]).await.unwrap(), [b]);
    assert_eq!(message().await, json!("running"));
    dstack_server::pipelines::runs_pass(&s.state).await.unwrap();
    let old = s.state.db.job_by_id(a).await.unwrap().unwrap();
    assert!(old.drain_started_at.is_some(), "the old one is drained once the new one serves: {old:?}");
}
