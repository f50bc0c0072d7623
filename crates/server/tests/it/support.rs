//! `TestServer`: the router over the test binary's one database, plus request helpers.
//!
//! Every test gets its own `AppState` (a pool on its own tokio runtime; a pool must not
//! outlive the runtime it was made on) over the shared server directory and database.

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use dstack_server::{AppState, ServerConfig, app, bootstrap};
use http_body_util::BodyExt;
use serde_json::Value;

pub(crate) struct TestServer {
    pub(crate) router: dstack_server::routes::App,
    pub(crate) state: AppState,
    pub(crate) admin_token: String,
}

/// The server directory (encryption key, SQLite file) all tests of this binary share.
static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
/// Serializes opening and bootstrapping so two tests do not both create the admin.
static BOOTSTRAP: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A server over the shared database, for the calling test's runtime.
pub(crate) async fn server() -> TestServer {
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"));
    let mut config = ServerConfig::for_dir(dir.path().to_path_buf());
    config.database_url = std::env::var("DSTACK_TEST_POSTGRES").ok().filter(|u| !u.is_empty());
    let _first = BOOTSTRAP.lock().await;
    let state = AppState::open(&config).await.expect("the server state opens");
    let admin_token =
        bootstrap::first_start(&state, &config, "http://127.0.0.1:3000").await.expect("bootstrap");
    TestServer { router: app(state.clone()), state, admin_token }
}

/// A server over a database of its own, for tests whose background passes must not see (or
/// be seen by) other tests' runs: a fresh SQLite file, or a fresh database on the
/// `DSTACK_TEST_POSTGRES` server. The returned dir must outlive the server.
pub(crate) async fn isolated_server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = ServerConfig::for_dir(dir.path().to_path_buf());
    if let Some(url) = std::env::var("DSTACK_TEST_POSTGRES").ok().filter(|u| !u.is_empty()) {
        use sqlx::Connection as _;
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&url).await.expect("the test PostgreSQL answers");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("a database for the test");
        let base = url.rsplit_once('/').map_or(url.as_str(), |(base, _)| base);
        config.database_url = Some(format!("{base}/{name}"));
    }
    let state = AppState::open(&config).await.expect("the server state opens");
    let admin_token =
        bootstrap::first_start(&state, &config, "http://127.0.0.1:3000").await.expect("bootstrap");
    (TestServer { router: app(state.clone()), state, admin_token }, dir)
}

/// A name no other test uses.
pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) json: Value,
}

impl TestServer {
    /// POSTs `body` (JSON, or no body for `None`) with `token`.
    pub(crate) async fn post(&self, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        let mut req = Request::post(path).header("x-api-version", "0.22.5");
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let body = match body {
            Some(json) => {
                req = req.header("content-type", "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        self.send(req.body(body).expect("request")).await
    }

    pub(crate) async fn send(&self, req: Request<Body>) -> Reply {
        use tower::ServiceExt as _;
        let resp = self.router.clone().oneshot(req).await.expect("the router answers");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Reply { status, json }
    }

    /// POSTs as the admin and expects 200.
    pub(crate) async fn admin(&self, path: &str, body: Option<Value>) -> Value {
        let reply = self.post(path, Some(&self.admin_token), body).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.json);
        reply.json
    }

    /// Creates a user; returns (name, token).
    pub(crate) async fn new_user(&self, role: &str) -> (String, String) {
        let name = unique("user");
        self.admin("/api/users/create", Some(serde_json::json!({"username": name, "global_role": role})))
            .await;
        let creds = self.admin("/api/users/refresh_token", Some(serde_json::json!({"username": name}))).await;
        let token = creds["creds"]["token"].as_str().expect("a token").to_owned();
        (name, token)
    }
}

/// Makes the one submitted job run on this machine, as the job loops would, its service port
/// 8000 published at `port` (a loopback server of the test's), and ready: registered by a pass
/// of the probes loop, which finds its port accepting connections.
pub(crate) async fn run_submitted(s: &TestServer, port: u16) -> uuid::Uuid {
    let id = start_submitted(s, port).await;
    let mut executions = tokio::task::JoinSet::new();
    let client = dstack_server::pipelines::probes::http_client();
    dstack_server::pipelines::probes::pass(&s.state, &client, &mut executions).await.unwrap();
    assert!(s.state.db.registered_jobs(&[id]).await.unwrap().contains(&id), "registered");
    id
}

/// [`run_submitted`] without the probes loop's pass: the job runs, not registered yet.
pub(crate) async fn start_submitted(s: &TestServer, port: u16) -> uuid::Uuid {
    let db = &s.state.db;
    let (mut jobs, token) = db
        .lease_jobs(&["submitted"], 10, jiff::Timestamp::now(), jiff::SignedDuration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1, "one submitted job: {jobs:?}");
    let mut job = jobs.remove(0);
    run_here(&mut job, Some(port));
    db.save_job(&job, token, &[], None).await.unwrap();
    db.release_jobs(token).await.unwrap();
    job.id
}

/// Makes `job` what the job loops leave of one running on this machine (a 4-CPU host at
/// 127.0.0.1), its service port 8000 published at `port` if given.
pub(crate) fn run_here(job: &mut dstack_db::JobRow, port: Option<u16>) {
    job.status = "running".to_owned();
    job.job_provisioning_data = Some(
        serde_json::json!({
            "backend": "remote", "instance_type": {"name": "local", "resources": {
                "cpus": 4, "memory_mib": 16384, "gpus": [], "spot": false,
                "disk": {"size_mib": 102400}, "description": ""}},
            "instance_id": "local-0", "hostname": "127.0.0.1", "region": "local", "price": 0.0,
            "username": "root", "dockerized": false
        })
        .to_string(),
    );
    if let Some(port) = port {
        job.job_runtime_data =
            Some(serde_json::json!({"network_mode": "bridge", "ports": {"8000": port}}).to_string());
    }
}
