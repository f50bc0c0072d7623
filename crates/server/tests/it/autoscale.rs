//! Autoscaling by our `scaling` extensions under real load, with the runs loop stepped by the
//! test, which plays the job loops' part (it makes submitted jobs run) and whose replicas are
//! real HTTP servers on loopback: a Prometheus gauge the replicas expose at `/metrics` scales
//! a service up and back down, and slow requests in flight at the in-server proxy, or slow
//! answers (p95 latency), scale it up.
//! Each step polls for the state it waits for (generous limits for a loaded machine).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::support::{TestServer, isolated_server, run_submitted, unique};

/// What a test's replicas share: the gauge their `/metrics` shows, how many `/slow` requests
/// arrived, and the switch that answers them.
#[derive(Clone)]
struct Knobs {
    gauge: Arc<AtomicU64>,
    slow_started: Arc<AtomicUsize>,
    release: watch::Sender<bool>,
}

impl Knobs {
    fn new() -> Knobs {
        Knobs {
            gauge: Arc::new(AtomicU64::new(0f64.to_bits())),
            slow_started: Arc::default(),
            release: watch::channel(false).0,
        }
    }

    fn set_gauge(&self, value: f64) {
        self.gauge.store(value.to_bits(), Ordering::SeqCst);
    }
}

/// A replica named `name`: `/whoami`, `/metrics` with the gauge `queue_depth` (Prometheus
/// text format), `/second`, which answers after a second, `/slow`, which answers once
/// released. Returns its port.
async fn replica(name: &'static str, knobs: &Knobs) -> u16 {
    let gauge = knobs.gauge.clone();
    let (started, release) = (knobs.slow_started.clone(), knobs.release.clone());
    let app = axum::Router::new()
        .route("/whoami", axum::routing::get(move || async move { name }))
        .route(
            "/metrics",
            axum::routing::get(move || {
                let value = f64::from_bits(gauge.load(Ordering::SeqCst));
                async move {
                    format!(
                        "# HELP queue_depth requests waiting\n# TYPE queue_depth gauge\n\
                         queue_depth{{model=\"m\"}} {value}\nother_gauge 1000\n"
                    )
                }
            }),
        )
        .route(
            "/second",
            axum::routing::get(move || async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                name
            }),
        )
        .route(
            "/slow",
            axum::routing::get(move || {
                let (started, mut released) = (started.clone(), release.subscribe());
                async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    let _ = released.wait_for(|r| *r).await;
                    name
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// Applies service `svc` in a new project with `scaling`, `replicas: 1..2`; the project.
async fn apply(s: &TestServer, scaling: Value) -> String {
    let p = unique("autoscale");
    s.admin("/api/projects/create", Some(json!({"project_name": p}))).await;
    let text = include_str!("../../../api/tests/fixtures/task.runs_apply.request.json");
    let mut body: Value = serde_json::from_str(text).expect("fixture");
    body["plan"]["run_spec"]["run_name"] = json!("svc");
    body["plan"]["run_spec"]["configuration"] = json!({
        "type": "service", "name": "svc", "port": 8000, "commands": ["serve"],
        "replicas": "1..2", "scaling": scaling,
    });
    s.admin(&format!("/api/project/{p}/runs/apply"), Some(body)).await;
    p
}

/// The latest submission of each replica: (replica number, status, termination reason).
async fn replicas(s: &TestServer, p: &str) -> Vec<(i64, String, String)> {
    let run = s.admin(&format!("/api/project/{p}/runs/get"), Some(json!({"run_name": "svc"}))).await;
    run["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            let sub = j["job_submissions"].as_array().unwrap().last().unwrap();
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (
                j["job_spec"]["replica_num"].as_i64().unwrap(),
                text(&sub["status"]),
                text(&sub["termination_reason"]),
            )
        })
        .collect()
}

/// Steps the runs loop until `done` holds for the replicas (at most `limit`); their last state.
async fn step_until(
    s: &TestServer,
    p: &str,
    what: &str,
    limit: Duration,
    done: impl Fn(&[(i64, String, String)]) -> bool,
) -> Vec<(i64, String, String)> {
    let deadline = Instant::now() + limit;
    loop {
        dstack_server::pipelines::runs_pass(&s.state).await.unwrap();
        let now = replicas(s, p).await;
        if done(&now) {
            return now;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {now:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn get(p: &str, path: &str, token: &str) -> Request<Body> {
    Request::get(format!("/proxy/services/{p}/svc/{path}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

/// Asks `/whoami` until the answers of `n` requests in a row are exactly `names` (any order,
/// each at least once); the proxy remembers a route for a second.
async fn serving(s: &TestServer, p: &str, names: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut seen = Vec::new();
        for _ in 0..4 * names.len() {
            let reply = s.send(get(p, "whoami", &s.admin_token)).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
            seen.push(reply.json.as_str().unwrap_or_default().to_owned());
        }
        seen.sort();
        seen.dedup();
        if seen == names {
            return;
        }
        assert!(Instant::now() < deadline, "served by {seen:?}, expected {names:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn running(rs: &[(i64, String, String)]) -> usize {
    rs.iter().filter(|(_, status, _)| status == "running").count()
}

/// `metric: prometheus`: the replicas' `queue_depth` (summed over its label sets, averaged over
/// the serving replicas) against `target` 10 scales 1 → 2 when it is 25, and back to 1 when it
/// drops to 2; the replica scaled down is drained, then stopped as `scaled_down`, while the
/// other serves on.
#[tokio::test]
async fn a_prometheus_gauge_scales_a_service_up_and_back_down() {
    let (s, _dir) = isolated_server().await;
    let knobs = Knobs::new();
    let (a_port, b_port) = (replica("a", &knobs).await, replica("b", &knobs).await);
    knobs.set_gauge(5.0);
    let p = apply(
        &s,
        json!({"metric": "prometheus", "prometheus_metric": "queue_depth", "target": 10,
               "scale_up_delay": "0s", "scale_down_delay": "1s"}),
    )
    .await;
    run_submitted(&s, a_port).await;
    serving(&s, &p, &["a"]).await;

    // Under the target: one replica, however many passes.
    for _ in 0..3 {
        dstack_server::pipelines::runs_pass(&s.state).await.unwrap();
    }
    assert_eq!(replicas(&s, &p).await, [(0, "running".to_owned(), String::new())]);

    // 25 > 10: a second replica, which serves once it runs.
    knobs.set_gauge(25.0);
    let rs = step_until(&s, &p, "a second replica", Duration::from_secs(30), |rs| rs.len() == 2).await;
    assert_eq!(rs[1], (1, "submitted".to_owned(), String::new()), "{rs:?}");
    run_submitted(&s, b_port).await;
    serving(&s, &p, &["a", "b"]).await;
    // At the most the range allows, it stays at two.
    for _ in 0..3 {
        dstack_server::pipelines::runs_pass(&s.state).await.unwrap();
    }
    assert_eq!(running(&replicas(&s, &p).await), 2);

    // 2 < 10 over two replicas: back to one, the other drained and stopped.
    knobs.set_gauge(2.0);
    let rs = step_until(&s, &p, "a replica scaled down", Duration::from_secs(30), |rs| {
        rs.iter().any(|(_, _, reason)| reason == "scaled_down")
    })
    .await;
    assert_eq!(running(&rs), 1, "{rs:?}");
    let (stopped, status, _) = rs.iter().find(|(_, _, reason)| reason == "scaled_down").unwrap().clone();
    assert!(matches!(status.as_str(), "terminating" | "terminated"), "{rs:?}");
    let left = if stopped == 0 { "b" } else { "a" };
    serving(&s, &p, &[left]).await;
}

/// A service scaling on `metric` toward `target` (30 s window, scaling up at once, down only
/// after 10 minutes) with replica "a" serving; quick requests and a few passes of the runs
/// loop leave it at one replica. Returns the project and the port of replica "b" (not
/// started yet).
async fn one_replica_scaling_on(s: &TestServer, knobs: &Knobs, metric: &str, target: f64) -> (String, u16) {
    let (a_port, b_port) = (replica("a", knobs).await, replica("b", knobs).await);
    let p = apply(
        s,
        json!({"metric": metric, "target": target, "window": "30s",
               "scale_up_delay": "0s", "scale_down_delay": "10m"}),
    )
    .await;
    run_submitted(s, a_port).await;
    serving(s, &p, &["a"]).await;
    for _ in 0..3 {
        dstack_server::pipelines::runs_pass(&s.state).await.unwrap();
    }
    assert_eq!(replicas(s, &p).await.len(), 1, "quick answers keep one replica");
    (p, b_port)
}

/// `metric: inflight`: slow requests held at a replica count as in flight at the proxy; their
/// average over the 30 s window passes `target` 0.5 and the service gets a second replica;
/// every held request is answered once released.
#[tokio::test]
async fn requests_in_flight_scale_a_service_up() {
    let (s, _dir) = isolated_server().await;
    let knobs = Knobs::new();
    let (p, b_port) = one_replica_scaling_on(&s, &knobs, "inflight", 0.5).await;

    // Eight slow requests at once, all held by the replica.
    const HELD: usize = 8;
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..HELD {
        let (router, req) = (s.router.clone(), get(&p, "slow", &s.admin_token));
        slow.spawn(async move {
            use tower::ServiceExt as _;
            let resp = router.oneshot(req).await.unwrap();
            let status = resp.status();
            let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        });
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while knobs.slow_started.load(Ordering::SeqCst) < HELD {
        assert!(Instant::now() < deadline, "the slow requests did not all reach the replica");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 8 in flight average over 0.5 in 30 s within about 2 s: a second replica.
    let held_since = Instant::now();
    let rs = step_until(&s, &p, "a second replica", Duration::from_secs(40), |rs| rs.len() == 2).await;
    assert_eq!(rs[1], (1, "submitted".to_owned(), String::new()), "{rs:?}");
    eprintln!("scaled up after {:?} of {HELD} requests in flight", held_since.elapsed());
    run_submitted(&s, b_port).await;
    serving(&s, &p, &["a", "b"]).await;

    knobs.release.send_replace(true);
    while let Some(done) = slow.join_next().await {
        assert_eq!(done.unwrap(), (StatusCode::OK, "a".to_owned()));
    }
    assert_eq!(running(&replicas(&s, &p).await), 2);
}

/// `metric: p95_latency`: requests that take a second each, against `target` 0.4 s, scale
/// the service up (proportionally: 1 × ~1 s / 0.4 s, at most the range's 2); quick ones
/// before do not.
#[tokio::test]
async fn slow_answers_scale_a_service_up_by_their_p95_latency() {
    let (s, _dir) = isolated_server().await;
    let knobs = Knobs::new();
    let (p, b_port) = one_replica_scaling_on(&s, &knobs, "p95_latency", 0.4).await;

    // Three slow answers, two at once and one after.
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let (router, req) = (s.router.clone(), get(&p, "second", &s.admin_token));
        slow.spawn(async move {
            use tower::ServiceExt as _;
            router.oneshot(req).await.unwrap().status()
        });
    }
    while let Some(status) = slow.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    let reply = s.send(get(&p, "second", &s.admin_token)).await;
    assert_eq!((reply.status, reply.json), (StatusCode::OK, json!("a")));

    let rs = step_until(&s, &p, "a second replica", Duration::from_secs(30), |rs| rs.len() == 2).await;
    assert_eq!(rs[1], (1, "submitted".to_owned(), String::new()), "{rs:?}");
    run_submitted(&s, b_port).await;
    serving(&s, &p, &["a", "b"]).await;
}
