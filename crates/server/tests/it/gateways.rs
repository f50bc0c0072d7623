//! `gateways/*`: dstack's shapes, checks and roles; `backend: local` is ours.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestServer, server, unique};

fn local(name: Option<&str>, domain: &str, port: u16) -> Value {
    let mut c = json!({
        "type": "gateway",
        "backend": "local",
        "domain": domain,
        "certificate": null,
        "local": {"http_port": port},
    });
    if let Some(name) = name {
        c["name"] = json!(name);
    }
    c
}

async fn project(s: &TestServer) -> String {
    let project = unique("gw");
    s.admin("/api/projects/create", Some(json!({"project_name": project}))).await;
    project
}

fn msg(v: &Value) -> &str {
    v["detail"][0]["msg"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn gateways_apply_list_get_update_and_delete() {
    let s = server().await;
    let p = project(&s).await;
    let base = format!("/api/project/{p}/gateways");
    assert_eq!(s.admin(&format!("{base}/list"), None).await, json!([]));

    let conf = local(Some("gw1"), "gw1.example", 18080);
    let plan = s.admin(&format!("{base}/get_plan"), Some(json!({"spec": {"configuration": conf}}))).await;
    assert_eq!(plan["action"], "create");
    assert_eq!(plan["project_name"], p.as_str());
    assert_eq!(plan["current_resource"], Value::Null);
    assert_eq!(plan["effective_spec"]["configuration"]["backend"], "local");

    let gw = s
        .admin(
            &format!("{base}/apply"),
            Some(json!({"plan": {"spec": plan["spec"], "current_resource": null}, "force": false})),
        )
        .await;
    assert_eq!(gw["name"], "gw1");
    assert_eq!(gw["status"], "submitted");
    assert_eq!(gw["default"], true, "the project's first gateway becomes the default");
    assert_eq!(gw["wildcard_domain"], "gw1.example");
    assert_eq!(gw["configuration"]["local"]["http_port"], 18080);
    assert_eq!(gw["configuration"]["region"], "local");
    assert_eq!(gw["replicas"][0]["replica_num"], 0);
    for key in ["hostname", "backend", "region", "ip_address", "instance_id", "status_message"] {
        assert!(gw.as_object().unwrap().contains_key(key), "{key} is in dstack's Gateway");
    }
    assert_eq!(s.admin(&format!("{base}/get"), Some(json!({"name": "gw1"}))).await, gw);
    assert_eq!(s.admin(&format!("{base}/list"), None).await, json!([gw.clone()]));

    // An in-place update: domain only.
    let mut changed = conf.clone();
    changed["domain"] = json!("new.example");
    let plan = s.admin(&format!("{base}/get_plan"), Some(json!({"spec": {"configuration": changed}}))).await;
    assert_eq!(plan["action"], "update");
    assert_eq!(plan["current_resource"]["id"], gw["id"]);
    let stale = s
        .post(
            &format!("{base}/apply"),
            Some(&s.admin_token),
            Some(json!({"plan": {"spec": plan["spec"], "current_resource": null}, "force": false})),
        )
        .await;
    assert_eq!(
        msg(&stale.json),
        "Failed to apply plan. Resource has been changed. Try again or use force apply."
    );
    let updated = s
        .admin(
            &format!("{base}/apply"),
            Some(json!({"plan": {"spec": plan["spec"], "current_resource": plan["current_resource"]}, "force": false})),
        )
        .await;
    assert_eq!(updated["id"], gw["id"]);
    assert_eq!(updated["wildcard_domain"], "new.example");

    // A port change cannot be applied in place.
    let mut moved = changed.clone();
    moved["local"]["http_port"] = json!(18081);
    let plan = s.admin(&format!("{base}/get_plan"), Some(json!({"spec": {"configuration": moved}}))).await;
    assert_eq!(plan["action"], "create");
    let refused = s
        .post(
            &format!("{base}/apply"),
            Some(&s.admin_token),
            Some(json!({"plan": {"spec": plan["spec"], "current_resource": plan["current_resource"]}, "force": true})),
        )
        .await;
    assert_eq!(msg(&refused.json), "Gateway 'gw1' cannot be updated in-place. Delete it and re-apply.");

    // A second gateway; set_default moves the default.
    let gw2 = s
        .admin(&format!("{base}/create"), Some(json!({"configuration": local(None, "b.example", 18082)})))
        .await;
    assert_eq!(gw2["default"], false);
    let name2 = gw2["name"].as_str().unwrap().to_owned();
    assert_eq!(s.admin(&format!("{base}/set_default"), Some(json!({"name": name2}))).await, Value::Null);
    let listed = s.admin(&format!("{base}/list"), None).await;
    let defaults: Vec<_> = listed.as_array().unwrap().iter().filter(|g| g["default"] == true).collect();
    assert_eq!(defaults.len(), 1);
    assert_eq!(defaults[0]["name"], name2.as_str());

    let wild = s
        .admin(
            &format!("{base}/set_wildcard_domain"),
            Some(json!({"name": name2, "wildcard_domain": "c.example"})),
        )
        .await;
    assert_eq!(wild["wildcard_domain"], "c.example");
    assert_eq!(wild["configuration"]["domain"], "c.example");

    // Deleting marks; a marked gateway is neither default nor updatable.
    assert_eq!(
        s.admin(&format!("{base}/delete"), Some(json!({"names": [name2, "nope"]}))).await,
        Value::Null
    );
    let again =
        s.post(&format!("{base}/set_default"), Some(&s.admin_token), Some(json!({"name": name2}))).await;
    assert_eq!(msg(&again.json), "Cannot set gateway marked for deletion as default");
    let missing = s.post(&format!("{base}/get"), Some(&s.admin_token), Some(json!({"name": "nope"}))).await;
    assert_eq!(
        missing.json,
        json!({"detail": [{"msg": "Resource not found", "code": "resource_not_exists"}]})
    );
}

#[tokio::test]
async fn gateway_configurations_are_checked_as_dstack_does() {
    let s = server().await;
    let p = project(&s).await;
    let base = format!("/api/project/{p}/gateways");
    let aws = json!({"type": "gateway", "name": "gw-aws", "backend": "aws", "region": "us-east-1"});
    let plan = s.admin(&format!("{base}/get_plan"), Some(json!({"spec": {"configuration": aws}}))).await;
    assert_eq!(plan["action"], "create", "planning an aws gateway passes dstack's checks");
    let create = s
        .post(
            &format!("{base}/apply"),
            Some(&s.admin_token),
            Some(json!({"plan": {"spec": {"configuration": aws}}, "force": false})),
        )
        .await;
    assert_eq!(
        create.json,
        json!({"detail": [{"msg": "Backend not available", "code": "backend_not_available"}]})
    );
    let lambda = json!({"type": "gateway", "backend": "lambda", "region": "r"});
    let refused =
        s.post(&format!("{base}/create"), Some(&s.admin_token), Some(json!({"configuration": lambda}))).await;
    assert_eq!(
        msg(&refused.json),
        "Gateways are not supported for lambda backend. Available backends with gateway support: ['aws', 'azure', 'gcp', 'kubernetes']."
    );
    let two = json!({"type": "gateway", "backend": "local", "replicas": 2, "local": {"http_port": 1}});
    let refused =
        s.post(&format!("{base}/create"), Some(&s.admin_token), Some(json!({"configuration": two}))).await;
    assert_eq!(msg(&refused.json), "A `local` gateway has exactly one replica");
    let bad = json!({"type": "gateway", "backend": "local"});
    let refused =
        s.post(&format!("{base}/create"), Some(&s.admin_token), Some(json!({"configuration": bad}))).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.json);
    let dup = local(Some("dup"), "d.example", 18090);
    s.admin(&format!("{base}/create"), Some(json!({"configuration": dup}))).await;
    let again =
        s.post(&format!("{base}/create"), Some(&s.admin_token), Some(json!({"configuration": dup}))).await;
    assert_eq!(again.json["detail"][0]["code"], "resource_exists", "{}", again.json);
}

#[tokio::test]
async fn members_list_gateways_and_only_project_admins_manage_them() {
    let s = server().await;
    let (owner, owner_token) = s.new_user("user").await;
    let (member, member_token) = s.new_user("user").await;
    let (_, outsider_token) = s.new_user("user").await;
    let p = unique("gwroles");
    s.post("/api/projects/create", Some(&owner_token), Some(json!({"project_name": p}))).await;
    let members = json!({"members": [
        {"username": owner, "project_role": "admin"},
        {"username": member, "project_role": "manager"},
    ]});
    s.post(&format!("/api/projects/{p}/set_members"), Some(&owner_token), Some(members)).await;
    let base = format!("/api/project/{p}/gateways");
    let conf = json!({"configuration": local(Some("gw-r"), "g.example", 18100)});
    let as_manager = s.post(&format!("{base}/create"), Some(&member_token), Some(conf.clone())).await;
    assert_eq!(as_manager.status, StatusCode::FORBIDDEN);
    let created = s.post(&format!("{base}/create"), Some(&owner_token), Some(conf)).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.json);
    let listed = s.post(&format!("{base}/list"), Some(&member_token), None).await;
    assert_eq!(listed.json.as_array().map(Vec::len), Some(1));
    let got = s.post(&format!("{base}/get"), Some(&member_token), Some(json!({"name": "gw-r"}))).await;
    assert_eq!(got.status, StatusCode::OK);
    let deleted =
        s.post(&format!("{base}/delete"), Some(&member_token), Some(json!({"names": ["gw-r"]}))).await;
    assert_eq!(deleted.status, StatusCode::FORBIDDEN);
    let outsider = s.post(&format!("{base}/list"), Some(&outsider_token), None).await;
    assert_eq!(outsider.status, StatusCode::FORBIDDEN);
}

/// `local.ssh` (ours): the private key the server connects with is required, must read as a
/// key, is stored encrypted and never shown; re-applying the same file is an in-place update.
#[tokio::test]
async fn a_gateway_on_an_ssh_host_keeps_its_key_to_itself() {
    let s = server().await;
    let p = project(&s).await;
    let base = format!("/api/project/{p}/gateways");
    let (public, private) = dstack_server::crypto::generate_ssh_keypair("gw").unwrap();
    let conf = |key: Value| {
        json!({
            "type": "gateway", "name": "ssh-gw", "backend": "local", "domain": "s.example",
            "certificate": null,
            "local": {"http_port": 8080, "ssh": {"hostname": "10.0.0.9", "user": "ubuntu", "ssh_key": key}},
        })
    };
    let no_private = s
        .post(
            &format!("{base}/create"),
            Some(&s.admin_token),
            Some(json!({"configuration": conf(json!({"public": public}))})),
        )
        .await;
    assert_eq!(no_private.status, StatusCode::BAD_REQUEST, "{}", no_private.json);
    assert!(msg(&no_private.json).starts_with("`local.ssh` needs `ssh_key.private`"), "{}", no_private.json);
    let garbage =
        "-----BEGIN OPENSSH PRIVATE KEY-----\nnot really a key\n-----END OPENSSH PRIVATE KEY-----\n";
    let bad = s
        .post(
            &format!("{base}/create"),
            Some(&s.admin_token),
            Some(json!({"configuration": conf(json!({"public": public, "private": garbage}))})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.json);
    assert!(!bad.json.to_string().contains("not really a key"), "the key is quoted: {}", bad.json);

    let with_key = conf(json!({"public": public, "private": private}));
    let gw = s.admin(&format!("{base}/create"), Some(json!({"configuration": with_key}))).await;
    assert_eq!(gw["configuration"]["local"]["ssh"]["ssh_key"], json!({"public": public, "private": null}));
    assert_eq!(gw["configuration"]["local"]["ssh"]["hostname"], "10.0.0.9");
    assert_eq!(gw["replicas"][0]["hostname"], "10.0.0.9");
    let listed = s.admin(&format!("{base}/list"), None).await;
    assert!(!listed.to_string().contains("PRIVATE KEY"), "{listed}");

    // The same file again (the CLI sends the key again): an in-place update that keeps the key.
    let mut changed = with_key.clone();
    changed["domain"] = json!("t.example");
    let plan = s.admin(&format!("{base}/get_plan"), Some(json!({"spec": {"configuration": changed}}))).await;
    assert_eq!(plan["action"], "update", "{plan:#}");
    assert!(!plan["current_resource"].to_string().contains("PRIVATE KEY"));
    let updated = s
        .admin(
            &format!("{base}/apply"),
            Some(json!({"plan": {"spec": plan["spec"], "current_resource": plan["current_resource"]}, "force": false})),
        )
        .await;
    assert_eq!(updated["wildcard_domain"], "t.example");
    let wild = s
        .admin(
            &format!("{base}/set_wildcard_domain"),
            Some(json!({"name": "ssh-gw", "wildcard_domain": "u.example"})),
        )
        .await;
    assert_eq!(wild["configuration"]["local"]["ssh"]["ssh_key"]["private"], Value::Null);
    // Stored encrypted: the database alone does not reveal the key, and the server reads it.
    let project_id = s.state.db.project_by_name(&p).await.unwrap().unwrap().id;
    let row = s.state.db.gateway_by_name(project_id, "ssh-gw").await.unwrap().unwrap();
    assert!(!row.configuration.contains("PRIVATE KEY"), "{}", row.configuration);
    let stored: Value = serde_json::from_str(&row.configuration).unwrap();
    let encrypted = stored["local"]["ssh"]["ssh_key"]["private"].as_str().unwrap();
    assert_eq!(s.state.cipher.decrypt(encrypted).as_deref(), Some(private.as_str()));
}
