use axum::http::StatusCode;
use serde_json::json;

use crate::support::server;

/// Every API route but the public ones refuses a missing and a wrong token.
#[tokio::test]
async fn every_private_route_needs_a_valid_token() {
    let s = server().await;
    let private = [
        "/api/users/list",
        "/api/users/get_my_user",
        "/api/users/get_user",
        "/api/users/create",
        "/api/users/update",
        "/api/users/refresh_token",
        "/api/users/delete",
        "/api/projects/list",
        "/api/projects/create",
        "/api/projects/delete",
        "/api/projects/main/get",
        "/api/projects/main/update",
        "/api/projects/main/set_members",
        "/api/projects/main/add_members",
        "/api/projects/main/remove_members",
        "/api/project/main/secrets/list",
        "/api/project/main/secrets/get",
        "/api/project/main/secrets/create_or_update",
        "/api/project/main/secrets/delete",
        "/api/project/main/runs/get_plan",
        "/api/runs/list",
    ];
    for path in private {
        let none = s.post(path, None, Some(json!({}))).await;
        assert_eq!(none.status, StatusCode::UNAUTHORIZED, "{path} without a token");
        assert_eq!(none.json, json!({"detail": "Not authenticated"}), "{path}");
        let bad = s.post(path, Some("not-a-token"), Some(json!({}))).await;
        assert_eq!(bad.status, StatusCode::FORBIDDEN, "{path} with a bad token");
        assert_eq!(bad.json, json!({"detail": {"msg": "Invalid token", "code": null}}), "{path}");
    }
}

#[tokio::test]
async fn admin_only_routes_refuse_users() {
    let s = server().await;
    let (_, token) = s.new_user("user").await;
    for (path, body) in [
        ("/api/users/create", json!({"username": "x", "global_role": "user"})),
        ("/api/users/update", json!({"username": "admin", "global_role": "user"})),
        ("/api/users/delete", json!({"users": ["admin"]})),
    ] {
        let reply = s.post(path, Some(&token), Some(body)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(reply.json, json!({"detail": {"msg": "Access denied", "code": null}}));
    }
}

#[tokio::test]
async fn tokens_are_stored_hashed_and_encrypted() {
    let s = server().await;
    let (name, token) = s.new_user("user").await;
    let row = s.state.db.user_by_name(&name).await.unwrap().unwrap();
    assert_ne!(row.token_hash, token);
    assert_eq!(row.token_hash.len(), 64);
    let stored = row.token_encrypted.expect("an encrypted copy");
    assert!(!stored.contains(&token));
}
