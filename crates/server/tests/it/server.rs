use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;

use crate::support::server;

#[tokio::test]
async fn info_and_health_need_no_token() {
    let s = server().await;
    let info = s.post("/api/server/get_info", None, None).await;
    assert_eq!(info.status, StatusCode::OK);
    assert_eq!(info.json, json!({"server_version": "0.22.5"}));
    let health = s.send(Request::get("/healthcheck").body(Body::empty()).unwrap()).await;
    assert_eq!(health.json, json!({"status": "running"}));
    let root = s.send(Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(root.status, StatusCode::OK);
    assert_eq!(s.post("/api/auth/list_providers", None, None).await.json, json!([]));
}

#[tokio::test]
async fn client_version_is_checked() {
    let s = server().await;
    let newer = s
        .send(Request::post("/api/server/get_info").header("x-api-version", "0.23.0").body(Body::empty()).unwrap())
        .await;
    assert_eq!(newer.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        newer.json,
        json!({"detail": [{"msg": "The client/CLI version (0.23.0) is incompatible with the server version (0.22.5).", "code": "error"}]})
    );
    let garbage = s
        .send(Request::post("/api/server/get_info").header("x-api-version", "garbage").body(Body::empty()).unwrap())
        .await;
    assert_eq!(garbage.json, json!({"detail": [{"msg": "Invalid version: garbage", "code": null}]}));
    let patch = s
        .send(Request::post("/api/server/get_info").header("x-api-version", "0.22.9").body(Body::empty()).unwrap())
        .await;
    assert_eq!(patch.status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let s = server().await;
    let missing = s.post("/api/nope", Some(&s.admin_token), None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json, json!({"detail": "Not Found"}));
    let wrong_method = s.send(Request::get("/api/users/list").body(Body::empty()).unwrap()).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn malformed_bodies_are_422() {
    let s = server().await;
    let req = Request::post("/api/users/get_user")
        .header("authorization", format!("Bearer {}", s.admin_token))
        .header("content-type", "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let reply = s.send(req).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.json["detail"][0]["loc"], json!(["body"]));
    let wrong_type = s.post("/api/users/get_user", Some(&s.admin_token), Some(json!({"username": 5}))).await;
    assert_eq!(wrong_type.status, StatusCode::UNPROCESSABLE_ENTITY);
    let missing = s.post("/api/users/get_user", Some(&s.admin_token), None).await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
}
