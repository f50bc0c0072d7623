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

/// A `multipart/form-data` body with one part `field`, file name `name`.
fn multipart(field: &str, name: &str, content: &[u8]) -> (String, Vec<u8>) {
    let boundary = "dstack-rs-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn upload(
    s: &crate::support::TestServer,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> crate::support::Reply {
    let req = axum::http::Request::post(path)
        .header("authorization", format!("Bearer {}", s.admin_token))
        .header("content-type", content_type)
        .body(axum::body::Body::from(body))
        .unwrap();
    s.send(req).await
}

#[tokio::test]
async fn code_and_file_archives_are_uploaded_once_by_hash() {
    let s = server().await;
    let (ct, body) = multipart("file", "abc123", b"tar bytes");
    let first = upload(&s, "/api/files/upload_archive", &ct, body.clone()).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.json);
    assert_eq!(first.json["hash"], "abc123");
    let again = upload(&s, "/api/files/upload_archive", &ct, body).await;
    assert_eq!(again.json["id"], first.json["id"], "one archive per user and hash");
    let by_hash = s.admin("/api/files/get_archive_by_hash", Some(json!({"hash": "abc123"}))).await;
    assert_eq!(by_hash, first.json);
    let id: uuid::Uuid = serde_json::from_value(first.json["id"].clone()).unwrap();
    let stored = s.state.db.file_archive(id).await.unwrap().unwrap();
    assert_eq!(stored, "dGFyIGJ5dGVz", "stored as base64 of the bytes");
    let missing =
        s.post("/api/files/get_archive_by_hash", Some(&s.admin_token), Some(json!({"hash": "nope"}))).await;
    assert_eq!(missing.json["detail"][0]["code"], "resource_not_exists");
    let (ct, body) = multipart("other", "x", b"y");
    let wrong = upload(&s, "/api/files/upload_archive", &ct, body).await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(wrong.json["detail"][0]["loc"], json!(["body", "file"]));

    let project = unique("code");
    s.admin("/api/projects/create", Some(json!({"project_name": project}))).await;
    let init = json!({"repo_id": "r1", "repo_info": {"repo_type": "local", "repo_dir": "/src"}});
    s.admin(&format!("/api/project/{project}/repos/init"), Some(init)).await;
    let (ct, body) = multipart("file", "h1", b"code");
    let ok =
        upload(&s, &format!("/api/project/{project}/repos/upload_code?repo_id=r1"), &ct, body.clone()).await;
    assert_eq!((ok.status, ok.json.clone()), (StatusCode::OK, serde_json::Value::Null));
    let repo = s.state.db.repo_by_name(s.state.db.project_by_name(&project).await.unwrap().unwrap().id, "r1");
    let repo = repo.await.unwrap().unwrap();
    assert_eq!(s.state.db.code(repo.id, "h1").await.unwrap().as_deref(), Some("Y29kZQ=="));
    let no_repo =
        upload(&s, &format!("/api/project/{project}/repos/upload_code?repo_id=r2"), &ct, body).await;
    assert_eq!(no_repo.json["detail"][0]["code"], "resource_not_exists");
    let (ct, big) = multipart("file", "big", &vec![b'x'; 3 * 1024 * 1024]);
    let too_big = upload(&s, &format!("/api/project/{project}/repos/upload_code?repo_id=r1"), &ct, big).await;
    assert!(too_big.json["detail"][0]["msg"].as_str().unwrap().contains("exceeds the limit of 2 MiB"));
}
