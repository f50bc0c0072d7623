use axum::http::StatusCode;
use serde_json::json;

use crate::support::{server, unique};

#[tokio::test]
async fn get_my_user_returns_the_callers_creds() {
    let s = server().await;
    let me = s.admin("/api/users/get_my_user", None).await;
    assert_eq!(me["username"], "admin");
    assert_eq!(me["global_role"], "admin");
    assert_eq!(me["active"], true);
    assert_eq!(me["creds"]["token"], s.admin_token.as_str());
    assert_eq!(me["permissions"], json!({"can_create_projects": true}));
    let created_at = me["created_at"].as_str().unwrap();
    assert!(created_at.ends_with('Z'), "{created_at}");
}

#[tokio::test]
async fn create_update_refresh_and_delete_a_user() {
    let s = server().await;
    let name = unique("alice");
    let created = s
        .admin("/api/users/create", Some(json!({"username": name, "global_role": "user", "email": "a@x.io"})))
        .await;
    assert_eq!(created["username"], name.as_str());
    assert_eq!(created["email"], "a@x.io");
    assert!(created.get("creds").is_none(), "create returns a User without creds");

    let again = s
        .post(
            "/api/users/create",
            Some(&s.admin_token),
            Some(json!({"username": name.to_uppercase(), "global_role": "user"})),
        )
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(again.json, json!({"detail": [{"msg": "Resource exists", "code": "resource_exists"}]}));

    let bad = s
        .post(
            "/api/users/create",
            Some(&s.admin_token),
            Some(json!({"username": "a b", "global_role": "user"})),
        )
        .await;
    assert_eq!(bad.json["detail"][0]["msg"], "Username should match regex '^[a-zA-Z0-9-_]{1,60}$'");

    let updated = s
        .admin("/api/users/update", Some(json!({"username": name, "global_role": "admin", "active": true})))
        .await;
    assert_eq!(updated["global_role"], "admin");
    assert_eq!(updated["email"], serde_json::Value::Null);

    let first = s.admin("/api/users/refresh_token", Some(json!({"username": name}))).await;
    let old = first["creds"]["token"].as_str().unwrap().to_owned();
    assert_eq!(s.post("/api/users/get_my_user", Some(&old), None).await.status, StatusCode::OK);
    let second = s.admin("/api/users/refresh_token", Some(json!({"username": name}))).await;
    let new = second["creds"]["token"].as_str().unwrap().to_owned();
    assert_ne!(old, new);
    assert_eq!(s.post("/api/users/get_my_user", Some(&old), None).await.status, StatusCode::FORBIDDEN);
    let seen_by_admin = s.admin("/api/users/get_user", Some(json!({"username": name}))).await;
    assert_eq!(seen_by_admin["creds"]["token"], new.as_str(), "an admin sees a user's token");

    s.admin("/api/users/delete", Some(json!({"users": [name]}))).await;
    assert_eq!(s.post("/api/users/get_my_user", Some(&new), None).await.status, StatusCode::FORBIDDEN);
    let gone = s.post("/api/users/get_user", Some(&s.admin_token), Some(json!({"username": name}))).await;
    assert_eq!(gone.json["detail"][0]["code"], "resource_not_exists");
}

#[tokio::test]
async fn users_see_only_themselves() {
    let s = server().await;
    let (name, token) = s.new_user("user").await;
    let listed = s.post("/api/users/list", Some(&token), None).await.json;
    let names: Vec<&str> =
        listed.as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert_eq!(names, vec![name.as_str()]);
    let other = s.post("/api/users/get_user", Some(&token), Some(json!({"username": "admin"}))).await;
    assert_eq!(other.status, StatusCode::BAD_REQUEST);
    assert_eq!(other.json["detail"][0]["code"], "resource_not_exists");
    let refresh_other =
        s.post("/api/users/refresh_token", Some(&token), Some(json!({"username": "admin"}))).await;
    assert_eq!(refresh_other.status, StatusCode::FORBIDDEN);
    let all = s.admin("/api/users/list", Some(json!({"return_total_count": true}))).await;
    assert!(all["total_count"].as_i64().unwrap() >= 2);
    assert!(all["users"].as_array().unwrap().iter().any(|u| u["username"] == name.as_str()));
}

#[tokio::test]
async fn admin_cannot_be_deleted_and_missing_users_are_reported() {
    let s = server().await;
    let reply = s.post("/api/users/delete", Some(&s.admin_token), Some(json!({"users": ["admin"]}))).await;
    assert_eq!(reply.json, json!({"detail": [{"msg": "User 'admin' cannot be deleted", "code": "error"}]}));
    let reply =
        s.post("/api/users/delete", Some(&s.admin_token), Some(json!({"users": [unique("ghost")]}))).await;
    assert_eq!(reply.json["detail"][0]["msg"], "Failed to delete non-existent users");
}

#[tokio::test]
async fn users_list_paginates_newest_first() {
    let s = server().await;
    let prefix = unique("page");
    for i in 0..3 {
        s.admin(
            "/api/users/create",
            Some(json!({"username": format!("{prefix}-{i}"), "global_role": "user"})),
        )
        .await;
    }
    let first = s.admin("/api/users/list", Some(json!({"name_pattern": prefix, "limit": 2}))).await;
    let first = first.as_array().unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(first[0]["username"], format!("{prefix}-2"));
    let last = &first[1];
    let rest = s
        .admin(
            "/api/users/list",
            Some(
                json!({"name_pattern": prefix, "prev_created_at": last["created_at"], "prev_id": last["id"]}),
            ),
        )
        .await;
    let rest: Vec<&str> = rest.as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert_eq!(rest, vec![format!("{prefix}-0").as_str()]);
}
