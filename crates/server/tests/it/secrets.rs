use axum::http::StatusCode;
use serde_json::json;

use crate::support::{server, unique};

#[tokio::test]
async fn secrets_round_trip_encrypted_at_rest() {
    let s = server().await;
    let project = unique("sec");
    s.admin("/api/projects/create", Some(json!({"project_name": project}))).await;
    let base = format!("/api/project/{project}/secrets");

    let created = s
        .admin(&format!("{base}/create_or_update"), Some(json!({"name": "hf_token", "value": "hf_abc123"})))
        .await;
    assert_eq!(created["name"], "hf_token");
    assert_eq!(created["value"], "hf_abc123");
    let listed = s.admin(&format!("{base}/list"), None).await;
    assert_eq!(
        listed,
        json!([{"id": created["id"], "name": "hf_token", "value": null}]),
        "list hides values"
    );
    let got = s.admin(&format!("{base}/get"), Some(json!({"name": "hf_token"}))).await;
    assert_eq!(got["value"], "hf_abc123");

    let updated =
        s.admin(&format!("{base}/create_or_update"), Some(json!({"name": "hf_token", "value": "v2"}))).await;
    assert_eq!(updated["id"], created["id"], "an update keeps the secret's id");
    let project_row = s.state.db.project_by_name(&project).await.unwrap().unwrap();
    let row = s.state.db.secret_by_name(project_row.id, "hf_token").await.unwrap().unwrap();
    assert!(!row.value.contains("v2"), "the database holds only ciphertext: {}", row.value);

    let missing = s.post(&format!("{base}/get"), Some(&s.admin_token), Some(json!({"name": "nope"}))).await;
    assert_eq!(
        missing.json,
        json!({"detail": [{"msg": "Resource not found", "code": "resource_not_exists"}]})
    );
    let delete_missing = s
        .post(
            &format!("{base}/delete"),
            Some(&s.admin_token),
            Some(json!({"secrets_names": ["hf_token", "b", "a"]})),
        )
        .await;
    assert_eq!(delete_missing.json["detail"][0]["msg"], "Secrets not found: a, b");
    s.admin(&format!("{base}/delete"), Some(json!({"secrets_names": ["hf_token"]}))).await;
    assert_eq!(s.admin(&format!("{base}/list"), None).await, json!([]));
}

#[tokio::test]
async fn secret_names_and_values_are_checked() {
    let s = server().await;
    let base = "/api/project/main/secrets";
    let bad = s
        .post(
            &format!("{base}/create_or_update"),
            Some(&s.admin_token),
            Some(json!({"name": "a b", "value": "x"})),
        )
        .await;
    assert_eq!(bad.json["detail"][0]["msg"], "Secret name should match regex '^[A-Za-z0-9-_]{1,200}$");
    let long = "x".repeat(5001);
    let too_long = s
        .post(
            &format!("{base}/create_or_update"),
            Some(&s.admin_token),
            Some(json!({"name": "big", "value": long})),
        )
        .await;
    assert_eq!(too_long.json["detail"][0]["msg"], "Secret value length must not exceed 5000");
}

#[tokio::test]
async fn only_project_admins_manage_secrets() {
    let s = server().await;
    let (owner, owner_token) = s.new_user("user").await;
    let (manager, manager_token) = s.new_user("user").await;
    let (member, member_token) = s.new_user("user").await;
    let (_, outsider_token) = s.new_user("user").await;
    let project = unique("vault");
    s.post("/api/projects/create", Some(&owner_token), Some(json!({"project_name": project}))).await;
    let members = json!({"members": [
        {"username": owner, "project_role": "admin"},
        {"username": manager, "project_role": "manager"},
        {"username": member, "project_role": "user"},
    ]});
    s.post(&format!("/api/projects/{project}/set_members"), Some(&owner_token), Some(members)).await;
    let list = format!("/api/project/{project}/secrets/list");

    assert_eq!(s.post(&list, Some(&owner_token), None).await.status, StatusCode::OK);
    let as_manager = s.post(&list, Some(&manager_token), None).await;
    assert_eq!(as_manager.status, StatusCode::FORBIDDEN);
    assert_eq!(as_manager.json, json!({"msg": "Access denied", "code": null}), "refused inside the handler");
    let as_member = s.post(&list, Some(&member_token), None).await;
    assert_eq!(
        as_member.json,
        json!({"detail": {"msg": "Access denied", "code": null}}),
        "refused by the permission check"
    );
    assert_eq!(s.post(&list, Some(&outsider_token), None).await.status, StatusCode::FORBIDDEN);
}
