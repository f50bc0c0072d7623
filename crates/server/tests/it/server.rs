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
        .send(
            Request::post("/api/server/get_info")
                .header("x-api-version", "0.23.0")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(newer.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        newer.json,
        json!({"detail": [{"msg": "The client/CLI version (0.23.0) is incompatible with the server version (0.22.5).", "code": "error"}]})
    );
    let garbage = s
        .send(
            Request::post("/api/server/get_info")
                .header("x-api-version", "garbage")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(garbage.json, json!({"detail": [{"msg": "Invalid version: garbage", "code": null}]}));
    let patch = s
        .send(
            Request::post("/api/server/get_info")
                .header("x-api-version", "0.22.9")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(patch.status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let s = server().await;
    // As dstack with its UI mounted: an unknown POST is a 405, any unknown GET a 404, and a GET
    // to a POST-only API route a 404 too.
    let post = s.post("/api/nope", Some(&s.admin_token), None).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.json, json!({"detail": "Method Not Allowed"}));
    let get = s.send(Request::get("/api/nope").body(Body::empty()).unwrap()).await;
    assert_eq!(get.status, StatusCode::NOT_FOUND);
    assert_eq!(get.json, json!({"detail": "Not Found"}));
    let get_post_route = s.send(Request::get("/api/users/list").body(Body::empty()).unwrap()).await;
    assert_eq!(get_post_route.status, StatusCode::NOT_FOUND);
    let post_health = s.send(Request::post("/healthcheck").body(Body::empty()).unwrap()).await;
    assert_eq!(post_health.status, StatusCode::METHOD_NOT_ALLOWED);
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
    assert_eq!(reply.json["detail"][0]["type"], "json_invalid");
    assert_eq!(reply.json["detail"][0]["loc"], json!(["body", 1]));
    assert_eq!(
        reply.json["detail"][0]["ctx"],
        json!({"error": "Expecting property name enclosed in double quotes"})
    );
    let wrong_type = s.post("/api/users/get_user", Some(&s.admin_token), Some(json!({"username": 5}))).await;
    assert_eq!(wrong_type.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        wrong_type.json,
        json!({"detail": [{"type": "string_type", "loc": ["body", "username"], "msg": "Input should be a valid string", "input": 5}]})
    );
    let extra = s
        .post("/api/users/get_user", Some(&s.admin_token), Some(json!({"username": "a", "bogus": [1]})))
        .await;
    assert_eq!(
        extra.json,
        json!({"detail": [{"type": "extra_forbidden", "loc": ["body", "bogus"], "msg": "Extra inputs are not permitted", "input": [1]}]})
    );
    let nested = s
        .post(
            "/api/projects/main/set_members",
            Some(&s.admin_token),
            Some(json!({"members": [{"username": "a", "project_role": "owner"}]})),
        )
        .await;
    assert_eq!(nested.json["detail"][0]["loc"], json!(["body", "members", 0, "project_role"]));
    assert_eq!(nested.json["detail"][0]["msg"], "Input should be 'admin', 'manager' or 'user'");
    let missing = s.post("/api/users/get_user", Some(&s.admin_token), None).await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let s = server().await;
    let body = vec![b' '; dstack_server::routes::MAX_BODY_BYTES + 1];
    let req = Request::post("/api/users/get_user")
        .header("authorization", format!("Bearer {}", s.admin_token))
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let reply = s.send(req).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.json, json!({"detail": "Request body is larger than 67108864 bytes"}));
}
