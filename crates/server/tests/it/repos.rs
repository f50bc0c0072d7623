use axum::http::StatusCode;
use serde_json::json;

use crate::support::{server, unique};

#[tokio::test]
async fn repos_are_initialised_listed_fetched_and_deleted() {
    let s = server().await;
    let project = unique("repos");
    s.admin("/api/projects/create", Some(json!({"project_name": project}))).await;
    let base = format!("/api/project/{project}/repos");

    let virtual_repo = json!({"repo_id": "none", "repo_info": {"repo_type": "virtual"}, "repo_creds": null});
    assert_eq!(s.admin(&format!("{base}/init"), Some(virtual_repo)).await, serde_json::Value::Null);
    let creds = json!({"clone_url": "https://example.com/org/repo.git", "private_key": null, "oauth_token": "gho_secret"});
    let remote = json!({"repo_id": "repo-1", "repo_info": {"repo_type": "remote", "repo_name": "repo"}, "repo_creds": creds});
    s.admin(&format!("{base}/init"), Some(remote)).await;

    let listed = s.admin(&format!("{base}/list"), None).await;
    assert_eq!(
        listed,
        json!([
            {"repo_id": "none", "repo_info": {"repo_type": "virtual"}},
            {"repo_id": "repo-1", "repo_info": {"repo_type": "remote", "repo_name": "repo"}},
        ])
    );
    let without =
        s.admin(&format!("{base}/get"), Some(json!({"repo_id": "repo-1", "include_creds": false}))).await;
    assert_eq!(without["repo_creds"], serde_json::Value::Null);
    let with =
        s.admin(&format!("{base}/get"), Some(json!({"repo_id": "repo-1", "include_creds": true}))).await;
    assert_eq!(with["repo_creds"], creds);

    // Credentials are the caller's own and stored encrypted.
    let (member, member_token) = s.new_user("user").await;
    s.admin(
        &format!("/api/projects/{project}/add_members"),
        Some(json!({"members": [{"username": member, "project_role": "user"}]})),
    )
    .await;
    let theirs = s
        .post(
            &format!("{base}/get"),
            Some(&member_token),
            Some(json!({"repo_id": "repo-1", "include_creds": true})),
        )
        .await;
    assert_eq!(theirs.status, StatusCode::OK);
    assert_eq!(theirs.json["repo_creds"], serde_json::Value::Null);
    let project_row = s.state.db.project_by_name(&project).await.unwrap().unwrap();
    let repo = s.state.db.repo_by_name(project_row.id, "repo-1").await.unwrap().unwrap();
    let admin_row = s.state.db.user_by_name("admin").await.unwrap().unwrap();
    let stored = s.state.db.repo_creds(repo.id, admin_row.id).await.unwrap().unwrap();
    assert!(!stored.contains("gho_secret"), "{stored}");

    let missing = s
        .post(
            &format!("{base}/get"),
            Some(&s.admin_token),
            Some(json!({"repo_id": "nope", "include_creds": false})),
        )
        .await;
    assert_eq!(
        missing.json,
        json!({"detail": [{"msg": "Resource not found", "code": "resource_not_exists"}]})
    );
    let bad = s
        .post(
            &format!("{base}/init"),
            Some(&s.admin_token),
            Some(json!({"repo_id": "x", "repo_info": {"repo_type": "svn"}})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);

    s.admin(&format!("{base}/delete"), Some(json!({"repos_ids": ["repo-1", "never-existed"]}))).await;
    let listed = s.admin(&format!("{base}/list"), None).await;
    assert_eq!(listed, json!([{"repo_id": "none", "repo_info": {"repo_type": "virtual"}}]));
}
