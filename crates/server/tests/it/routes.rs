//! What the in-server proxy remembers (`services::Routes`): a service's route and a token it
//! granted are used for a second without asking the database, then for half a second more
//! while one request's refresh runs on the side. A token revoked meanwhile is refused, and a
//! replica stopped meanwhile gets no traffic, once that refresh is done: within 1.5 s.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use crate::support::{TestServer, isolated_server, run_submitted, unique};

async fn whoami(s: &TestServer, p: &str, token: &str) -> StatusCode {
    let req = Request::get(format!("/proxy/services/{p}/svc/whoami"))
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    s.send(req).await.status
}

/// Polls `whoami` with `token` until it answers `want`; how long after `since` that was.
async fn answers_within(s: &TestServer, p: &str, token: &str, want: StatusCode, since: Instant) -> Duration {
    loop {
        let got = whoami(s, p, token).await;
        if got == want {
            return since.elapsed();
        }
        assert!(since.elapsed() < Duration::from_secs(10), "still {got}, not {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_revoked_token_and_a_stopped_replica_are_seen_within_the_routes_memory() {
    let (s, _dir) = isolated_server().await;
    let app = axum::Router::new().route("/whoami", axum::routing::get(|| async { "replica" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let p = unique("routes");
    s.admin("/api/projects/create", Some(json!({"project_name": p}))).await;
    let text = include_str!("../../../api/tests/fixtures/task.runs_apply.request.json");
    let mut body: Value = serde_json::from_str(text).expect("fixture");
    body["plan"]["run_spec"]["run_name"] = json!("svc");
    body["plan"]["run_spec"]["configuration"] =
        json!({"type": "service", "name": "svc", "port": 8000, "commands": ["serve"]});
    s.admin(&format!("/api/project/{p}/runs/apply"), Some(body)).await;
    let job = run_submitted(&s, port).await;
    let (name, token) = s.new_user("user").await;
    let members = json!({"members": [{"username": name, "project_role": "user"}]});
    s.admin(&format!("/api/projects/{p}/add_members"), Some(members)).await;

    // Served; the route and the grant are remembered from now.
    let granted = Instant::now();
    assert_eq!(whoami(&s, &p, &token).await, StatusCode::OK);
    // The user's token is replaced: the old one is refused once its grant has been checked
    // again, which the first request after a second starts (and which that request does not
    // wait for).
    s.admin("/api/users/refresh_token", Some(json!({"username": name}))).await;
    let refused = answers_within(&s, &p, &token, StatusCode::FORBIDDEN, granted).await;
    assert!(refused >= Duration::from_millis(900), "refused after {refused:?}: the grant was not remembered");
    assert!(
        refused < Duration::from_millis(1500) + Duration::from_millis(500),
        "refused only after {refused:?}"
    );
    // Refused from then on, and the admin is still served.
    assert_eq!(whoami(&s, &p, &token).await, StatusCode::FORBIDDEN);
    assert_eq!(whoami(&s, &p, &s.admin_token).await, StatusCode::OK);

    // The replica stops running: the service's route goes (dstack's 404) once refreshed.
    let stopped = Instant::now();
    let db = &s.state.db;
    let (mut jobs, lock) = db
        .lease_jobs(&["running"], 10, jiff::Timestamp::now(), jiff::SignedDuration::from_secs(20))
        .await
        .expect("db");
    assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [job]);
    jobs[0].status = "terminating".to_owned();
    db.save_job(&jobs[0], lock, &[], None).await.expect("db");
    let gone = answers_within(&s, &p, &s.admin_token, StatusCode::NOT_FOUND, stopped).await;
    assert!(gone < Duration::from_millis(1500) + Duration::from_millis(500), "still routed after {gone:?}");
}
