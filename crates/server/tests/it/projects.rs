use axum::http::StatusCode;
use serde_json::json;

use crate::support::{server, unique};

#[tokio::test]
async fn main_project_exists_with_the_admin() {
    let s = server().await;
    let main = s.admin("/api/projects/main/get", None).await;
    assert_eq!(main["project_name"], "main");
    assert_eq!(main["owner"]["username"], "admin");
    assert_eq!(main["members"][0]["user"]["username"], "admin");
    assert_eq!(main["members"][0]["project_role"], "admin");
    assert_eq!(
        main["members"][0]["permissions"],
        json!({"can_manage_ssh_fleets": true, "can_manage_secrets": true})
    );
    assert_eq!(main["backends"], json!([]));
    assert_eq!(main["is_public"], false);
}

#[tokio::test]
async fn unknown_and_existing_projects() {
    let s = server().await;
    let missing = s.post(&format!("/api/projects/{}/get", unique("nope")), Some(&s.admin_token), None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json, json!({"detail": {"msg": "Not found", "code": null}}));
    let dup =
        s.post("/api/projects/create", Some(&s.admin_token), Some(json!({"project_name": "main"}))).await;
    assert_eq!(dup.json, json!({"detail": [{"msg": "Resource exists", "code": "resource_exists"}]}));
    let bad =
        s.post("/api/projects/create", Some(&s.admin_token), Some(json!({"project_name": "a/b"}))).await;
    assert_eq!(bad.json["detail"][0]["msg"], "Project name should match regex '^[a-zA-Z0-9-_]{1,50}$'");
}

#[tokio::test]
async fn users_see_only_their_projects() {
    let s = server().await;
    let (alice, alice_token) = s.new_user("user").await;
    let (_bob, bob_token) = s.new_user("user").await;
    let project = unique("proj");
    let created =
        s.post("/api/projects/create", Some(&alice_token), Some(json!({"project_name": project}))).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.json);
    assert_eq!(created.json["owner"]["username"], alice.as_str());

    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().unwrap().iter().map(|p| p["project_name"].as_str().unwrap().to_owned()).collect()
    };
    let alice_sees = names(&s.post("/api/projects/list", Some(&alice_token), None).await.json);
    assert!(alice_sees.contains(&project) && !alice_sees.contains(&"main".to_owned()), "{alice_sees:?}");
    let bob_sees = names(&s.post("/api/projects/list", Some(&bob_token), None).await.json);
    assert!(!bob_sees.contains(&project));
    let admin_sees = names(&s.admin("/api/projects/list", None).await);
    assert!(admin_sees.contains(&project) && admin_sees.contains(&"main".to_owned()));

    let path = format!("/api/projects/{project}/get");
    let denied = s.post(&path, Some(&bob_token), None).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.json, json!({"detail": {"msg": "Access denied", "code": null}}));
}

#[tokio::test]
async fn members_are_set_added_and_removed() {
    let s = server().await;
    let (owner, owner_token) = s.new_user("user").await;
    let (member, member_token) = s.new_user("user").await;
    let project = unique("team");
    s.post("/api/projects/create", Some(&owner_token), Some(json!({"project_name": project}))).await;
    let base = format!("/api/projects/{project}");

    let added = s
        .post(
            &format!("{base}/add_members"),
            Some(&owner_token),
            Some(json!({"members": [{"username": member, "project_role": "user"}]})),
        )
        .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.json);
    assert_eq!(added.json["members"].as_array().unwrap().len(), 2);
    assert_eq!(s.post(&format!("{base}/get"), Some(&member_token), None).await.status, StatusCode::OK);

    let not_manager =
        s.post(&format!("{base}/set_members"), Some(&member_token), Some(json!({"members": []}))).await;
    assert_eq!(not_manager.status, StatusCode::FORBIDDEN);

    let dup = s
        .post(
            &format!("{base}/add_members"),
            Some(&owner_token),
            Some(json!({"members": [{"username": member, "project_role": "user"}, {"username": member, "project_role": "user"}]})),
        )
        .await;
    assert_eq!(dup.json["detail"][0]["msg"], "Cannot add same user multiple times");

    let unknown = s
        .post(
            &format!("{base}/add_members"),
            Some(&owner_token),
            Some(json!({"members": [{"username": "ghost-x", "project_role": "user"}]})),
        )
        .await;
    assert_eq!(unknown.json["detail"][0]["msg"], "User not found: ghost-x");

    let left = s
        .post(&format!("{base}/remove_members"), Some(&member_token), Some(json!({"usernames": [member]})))
        .await;
    assert_eq!(left.status, StatusCode::OK, "a member may leave");
    assert_eq!(s.post(&format!("{base}/get"), Some(&member_token), None).await.status, StatusCode::FORBIDDEN);

    let last_admin = s
        .post(&format!("{base}/remove_members"), Some(&owner_token), Some(json!({"usernames": [owner]})))
        .await;
    assert_eq!(last_admin.json["detail"][0]["msg"], "Cannot leave project: you are the last admin");

    let set = s
        .post(
            &format!("{base}/set_members"),
            Some(&owner_token),
            Some(json!({"members": [{"username": owner, "project_role": "admin"}, {"username": member, "project_role": "manager"}]})),
        )
        .await;
    let roles: Vec<(String, String)> = set.json["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["user"]["username"].as_str().unwrap().to_owned(),
                m["project_role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(roles.contains(&(member.clone(), "manager".to_owned())), "{roles:?}");
}

#[tokio::test]
async fn public_projects_can_be_joined_and_deleted_by_admins() {
    let s = server().await;
    let (_, owner_token) = s.new_user("user").await;
    let (joiner, joiner_token) = s.new_user("user").await;
    let project = unique("open");
    s.post(
        "/api/projects/create",
        Some(&owner_token),
        Some(json!({"project_name": project, "is_public": true})),
    )
    .await;
    let base = format!("/api/projects/{project}");
    assert_eq!(s.post(&format!("{base}/get"), Some(&joiner_token), None).await.status, StatusCode::OK);
    let as_admin = s
        .post(
            &format!("{base}/add_members"),
            Some(&joiner_token),
            Some(json!({"members": [{"username": joiner, "project_role": "admin"}]})),
        )
        .await;
    assert_eq!(as_admin.status, StatusCode::FORBIDDEN);
    assert_eq!(
        as_admin.json,
        json!({"msg": "Access denied: can only join public projects as user role", "code": null})
    );
    let joined = s
        .post(
            &format!("{base}/add_members"),
            Some(&joiner_token),
            Some(json!({"members": [{"username": joiner, "project_role": "user"}]})),
        )
        .await;
    assert_eq!(joined.status, StatusCode::OK);

    let not_admin =
        s.post("/api/projects/delete", Some(&joiner_token), Some(json!({"projects_names": [project]}))).await;
    assert_eq!(not_admin.status, StatusCode::FORBIDDEN);
    let deleted =
        s.post("/api/projects/delete", Some(&owner_token), Some(json!({"projects_names": [project]}))).await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(deleted.json, serde_json::Value::Null);
    assert_eq!(s.post(&format!("{base}/get"), Some(&owner_token), None).await.status, StatusCode::NOT_FOUND);
}
