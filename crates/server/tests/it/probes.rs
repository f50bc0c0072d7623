//! The probes loop against a real HTTP replica on loopback: a service replica whose job runs
//! gets its probes, is probed as dstack probes (method, headers, body, `Host: dstack`), and
//! receives proxy traffic only once every probe passed `ready_after` times; registration then
//! stays, an `until_ready` probe stops, and a job that stops running stops its probes.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use serde_json::{Value, json};

use crate::support::{TestServer, isolated_server, unique};

/// What `/ready` was sent: method, `Host`, `X-Probe` and body.
type Seen = Arc<Mutex<Vec<(String, String, String, String)>>>;

/// A replica: `/ready` answers with the status in `ready` and records what it was sent.
struct Replica {
    port: u16,
    ready: Arc<AtomicU16>,
    seen: Seen,
}

async fn replica() -> Replica {
    let ready = Arc::new(AtomicU16::new(503));
    let seen: Seen = Arc::default();
    let (r, s) = (ready.clone(), seen.clone());
    let app = axum::Router::new()
        .route(
            "/ready",
            axum::routing::any(move |method: Method, headers: HeaderMap, body: String| async move {
                let header = |name: &str| {
                    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
                };
                s.lock().unwrap().push((method.to_string(), header("host"), header("x-probe"), body));
                StatusCode::from_u16(r.load(Ordering::SeqCst)).unwrap()
            }),
        )
        .route("/whoami", axum::routing::get(|| async { "replica" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Replica { port, ready, seen }
}

async fn pass(s: &TestServer) {
    let mut executions = tokio::task::JoinSet::new();
    let client = dstack_server::pipelines::probes::http_client();
    dstack_server::pipelines::probes::pass(&s.state, &client, &mut executions).await.expect("a pass");
    executions.join_all().await;
}

/// The probes of the run's first job, as `runs/get` shows them; `runs/list` shows the same.
async fn streaks(s: &TestServer, p: &str, run: &str) -> Value {
    let got = s.admin(&format!("/api/project/{p}/runs/get"), Some(json!({"run_name": run}))).await;
    let probes = got["jobs"][0]["job_submissions"][0]["probes"].clone();
    let listed = s.admin("/api/runs/list", Some(json!({"project_name": p, "include_jobs": true}))).await;
    let listed =
        listed.as_array().expect("a list").iter().find(|r| r["run_spec"]["run_name"] == run).cloned();
    assert_eq!(listed.map(|r| r["jobs"][0]["job_submissions"][0]["probes"].clone()), Some(probes.clone()));
    probes
}

async fn whoami(s: &TestServer, p: &str, run: &str) -> (StatusCode, Value) {
    let req = Request::get(format!("/proxy/services/{p}/{run}/whoami"))
        .header("authorization", format!("Bearer {}", s.admin_token))
        .body(Body::empty())
        .unwrap();
    let reply = s.send(req).await;
    (reply.status, reply.json)
}

/// Lets the probes' 1 s interval pass.
async fn next_due() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

#[tokio::test]
async fn replicas_get_traffic_once_their_probes_are_ready() {
    let (s, _dir) = isolated_server().await;
    let r = replica().await;
    let p = unique("probes");
    s.admin("/api/projects/create", Some(json!({"project_name": p}))).await;
    let text = include_str!("../../../api/tests/fixtures/task.runs_apply.request.json");
    let mut body: Value = serde_json::from_str(text).expect("fixture");
    body["plan"]["run_spec"]["run_name"] = json!("svc");
    body["plan"]["run_spec"]["configuration"] = json!({
        "type": "service", "name": "svc", "port": r.port, "commands": ["serve"],
        "probes": [
            {"type": "http", "url": "/ready", "method": "post", "headers": [{"name": "X-Probe", "value": "1"}],
             "body": "ping", "interval": 1, "ready_after": 2},
            {"type": "http", "url": "/ready", "interval": 1, "ready_after": 1, "until_ready": true},
        ],
    });
    s.admin(&format!("/api/project/{p}/runs/apply"), Some(body)).await;

    // The job runs on this machine; the replica serves on its service port.
    let db = &s.state.db;
    let lease = |status: &'static str| async move {
        db.lease_jobs(&[status], 10, jiff::Timestamp::now(), jiff::SignedDuration::from_secs(20))
            .await
            .expect("db")
    };
    let (mut jobs, token) = lease("submitted").await;
    let mut job = jobs.remove(0);
    crate::support::run_here(&mut job, None);
    db.save_job(&job, token, &[], None).await.expect("db");
    assert_eq!(streaks(&s, &p, "svc").await, json!([]), "no probes before the first pass");

    // First pass: the probes start and fail (503); no traffic.
    pass(&s).await;
    assert_eq!(streaks(&s, &p, "svc").await, json!([{"success_streak": 0}, {"success_streak": 0}]));
    let (status, reply) = whoami(&s, &p, "svc").await;
    assert_eq!(
        (status, reply),
        (StatusCode::NOT_FOUND, json!({"detail": format!("Service {p}/svc not found")}))
    );
    {
        let seen = r.seen.lock().unwrap();
        assert!(
            seen.contains(&("POST".into(), "dstack".into(), "1".into(), "ping".into())),
            "the probe as configured: {seen:?}"
        );
        assert!(seen.contains(&("GET".into(), "dstack".into(), String::new(), String::new())), "{seen:?}");
    }

    // The replica answers 200: one success is not enough for `ready_after: 2`.
    r.ready.store(200, Ordering::SeqCst);
    next_due().await;
    pass(&s).await;
    assert_eq!(streaks(&s, &p, "svc").await, json!([{"success_streak": 1}, {"success_streak": 1}]));
    assert_eq!(whoami(&s, &p, "svc").await.0, StatusCode::NOT_FOUND);

    // Two successes: ready, registered, served. The satisfied `until_ready` probe stops.
    next_due().await;
    pass(&s).await;
    assert_eq!(streaks(&s, &p, "svc").await, json!([{"success_streak": 2}, {"success_streak": 1}]));
    let (status, reply) = whoami(&s, &p, "svc").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let stored = db.probes_of_jobs(&[job.id]).await.expect("db");
    assert_eq!(stored.iter().map(|p| p.active).collect::<Vec<_>>(), [true, false]);

    // A failing probe later resets its streak, but the replica stays registered (as dstack's).
    r.ready.store(500, Ordering::SeqCst);
    next_due().await;
    pass(&s).await;
    assert_eq!(streaks(&s, &p, "svc").await, json!([{"success_streak": 0}, {"success_streak": 1}]));
    assert_eq!(whoami(&s, &p, "svc").await.0, StatusCode::OK);

    // The job stops running: no traffic, and its probes stop when next due.
    let (mut jobs, token) = lease("running").await;
    let mut job = jobs.remove(0);
    job.status = "terminating".to_owned();
    db.save_job(&job, token, &[], None).await.expect("db");
    // The proxy remembers a route for a second (`services::Routes`): the stop shows after that.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while whoami(&s, &p, "svc").await.0 != StatusCode::NOT_FOUND {
        assert!(std::time::Instant::now() < deadline, "the stopped replica still gets traffic");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let before = r.seen.lock().unwrap().len();
    next_due().await;
    pass(&s).await;
    assert_eq!(r.seen.lock().unwrap().len(), before, "no probe of a job that does not run");
    let stored = db.probes_of_jobs(&[job.id]).await.expect("db");
    assert!(stored.iter().all(|p| !p.active), "{stored:?}");
}

/// A replica without probes is registered only once its app listens on its service port
/// (dstack registers it when its job runs, before the app may listen): not while nothing
/// listens there, nor while a port proxy accepts and closes each connection; until then the
/// proxy has no replica for the service (dstack's 404) and the loop keeps checking it soon.
#[tokio::test]
async fn a_replica_without_probes_gets_traffic_once_it_listens() {
    let (s, _dir) = isolated_server().await;
    // A port that nothing listens on yet (taken again below).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let p = unique("listen");
    s.admin("/api/projects/create", Some(json!({"project_name": p}))).await;
    let text = include_str!("../../../api/tests/fixtures/task.runs_apply.request.json");
    let mut body: Value = serde_json::from_str(text).expect("fixture");
    body["plan"]["run_spec"]["run_name"] = json!("late");
    body["plan"]["run_spec"]["configuration"] =
        json!({"type": "service", "name": "late", "port": 8000, "commands": ["serve"]});
    s.admin(&format!("/api/project/{p}/runs/apply"), Some(body)).await;
    let db = &s.state.db;
    let (mut jobs, token) = db
        .lease_jobs(&["submitted"], 10, jiff::Timestamp::now(), jiff::SignedDuration::from_secs(20))
        .await
        .expect("db");
    let mut job = jobs.remove(0);
    crate::support::run_here(&mut job, Some(port));
    db.save_job(&job, token, &[], None).await.expect("db");

    let step = || async {
        let mut executions = tokio::task::JoinSet::new();
        let client = dstack_server::pipelines::probes::http_client();
        let pass = dstack_server::pipelines::probes::pass(&s.state, &client, &mut executions).await;
        executions.join_all().await;
        pass.expect("a pass")
    };
    // Running, not listening: not registered, no traffic, checked again soon.
    for _ in 0..2 {
        assert_eq!(step().await.waiting_for_port, 1);
        assert!(db.registered_jobs(&[job.id]).await.expect("db").is_empty());
        assert_eq!(
            whoami(&s, &p, "late").await,
            (StatusCode::NOT_FOUND, json!({"detail": format!("Service {p}/late not found")}))
        );
    }
    assert_eq!(streaks(&s, &p, "late").await, json!([]), "no probes are made up for it");

    // A port proxy in front of it (Docker's for a published port) accepts for it and closes
    // each connection at once, since the app does not listen yet: still not registered.
    let proxy = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let closer = tokio::spawn(async move {
        let mut accepted = 0;
        while let Ok((conn, _)) = proxy.accept().await {
            drop(conn);
            accepted += 1;
        }
        accepted
    });
    for _ in 0..2 {
        assert_eq!(step().await.waiting_for_port, 1);
        assert!(
            db.registered_jobs(&[job.id]).await.expect("db").is_empty(),
            "registered behind a port proxy"
        );
    }
    closer.abort();
    assert!(closer.await.is_err(), "the port proxy ran until stopped");

    // It listens: registered by the next pass, and served.
    let app = axum::Router::new().route("/whoami", axum::routing::get(|| async { "late" }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    assert_eq!(step().await.waiting_for_port, 0);
    assert_eq!(db.registered_jobs(&[job.id]).await.expect("db"), [job.id]);
    // The proxy remembers a route for a second (`services::Routes`).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, reply) = whoami(&s, &p, "late").await;
        if status == StatusCode::OK {
            assert_eq!(reply, json!("late"));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never served: {status} {reply}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(step().await, dstack_server::pipelines::probes::Pass::default(), "nothing waits any more");
}
