//! `TestServer`: one router over one database per test binary, plus request helpers.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use dstack_server::{AppState, ServerConfig, app, bootstrap};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::sync::OnceCell;

pub struct TestServer {
    pub router: Router,
    pub state: AppState,
    pub admin_token: String,
    _dir: tempfile::TempDir,
}

static SERVER: OnceCell<TestServer> = OnceCell::const_new();

/// The shared server (created on first use).
pub async fn server() -> &'static TestServer {
    SERVER
        .get_or_init(|| async {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut config = ServerConfig::for_dir(dir.path().to_path_buf());
            config.database_url = std::env::var("DSTACK_TEST_POSTGRES").ok().filter(|u| !u.is_empty());
            let state = AppState::open(&config).await.expect("the server state opens");
            let admin_token = bootstrap::first_start(&state, &config, "http://127.0.0.1:3000").await.expect("bootstrap");
            TestServer { router: app(state.clone()), state, admin_token, _dir: dir }
        })
        .await
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

pub struct Reply {
    pub status: StatusCode,
    pub json: Value,
}

impl TestServer {
    /// POSTs `body` (JSON, or no body for `None`) with `token`.
    pub async fn post(&self, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
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

    pub async fn send(&self, req: Request<Body>) -> Reply {
        use tower::ServiceExt as _;
        let resp = self.router.clone().oneshot(req).await.expect("the router answers");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let json = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned())) };
        Reply { status, json }
    }

    /// POSTs as the admin and expects 200.
    pub async fn admin(&self, path: &str, body: Option<Value>) -> Value {
        let reply = self.post(path, Some(&self.admin_token), body).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.json);
        reply.json
    }

    /// Creates a user; returns (name, token).
    pub async fn new_user(&self, role: &str) -> (String, String) {
        let name = unique("user");
        self.admin("/api/users/create", Some(serde_json::json!({"username": name, "global_role": role}))).await;
        let creds = self.admin("/api/users/refresh_token", Some(serde_json::json!({"username": name}))).await;
        let token = creds["creds"]["token"].as_str().expect("a token").to_owned();
        (name, token)
    }
}
