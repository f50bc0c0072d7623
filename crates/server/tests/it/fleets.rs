//! Fleets through the API: plans, creation, update in place, re-creation, deletion of
//! instances and of fleets (stepped through the fleets loop), and dstack's errors. The test
//! keys are throwaway keys made for these tests.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestServer, isolated_server, server, unique};

const PRIVATE: &str = include_str!("../fixtures/test_ed25519");
const PUBLIC: &str = include_str!("../fixtures/test_ed25519.pub");
const PASSPHRASE: &str = include_str!("../fixtures/test_ed25519_passphrase");

/// A fleet spec as the dstack CLI sends it: keys read from `identity_file`, the default profile.
fn spec(configuration: Value) -> Value {
    json!({
        "configuration": configuration,
        "configuration_path": "fleet.yml",
        "profile": {"name": "default", "default": false},
    })
}

fn ssh_spec(name: &str, hosts: Value) -> Value {
    spec(json!({
        "type": "fleet",
        "name": name,
        "ssh_config": {
            "user": "ubuntu",
            "identity_file": "~/.ssh/id",
            "ssh_key": {"public": PUBLIC, "private": PRIVATE},
            "hosts": hosts,
        },
    }))
}

async fn project(s: &TestServer) -> String {
    let name = unique("fleets");
    s.admin("/api/projects/create", Some(json!({"project_name": name}))).await;
    name
}

/// `get_plan`, then `apply` of the plan's echo, as the CLI does; returns (plan, fleet).
async fn plan_and_apply(s: &TestServer, p: &str, spec: Value) -> (Value, Value) {
    let plan = s.admin(&format!("/api/project/{p}/fleets/get_plan"), Some(json!({"spec": spec}))).await;
    let body =
        json!({"plan": {"spec": plan["spec"], "current_resource": plan["current_resource"]}, "force": false});
    let fleet = s.admin(&format!("/api/project/{p}/fleets/apply"), Some(body)).await;
    (plan, fleet)
}

async fn error(s: &TestServer, path: &str, body: Value) -> String {
    let reply = s.post(path, Some(&s.admin_token), Some(body)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}: {}", reply.json);
    reply.json["detail"][0]["msg"].as_str().unwrap_or_default().to_owned()
}

fn statuses(fleet: &Value) -> Vec<(i64, String, String)> {
    fleet["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["instance_num"].as_i64().unwrap(),
                i["hostname"].as_str().unwrap_or_default().to_owned(),
                i["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn step(s: &TestServer, n: usize) {
    for _ in 0..n {
        dstack_server::pipelines::step(&s.state).await.expect("a pass");
    }
}

#[tokio::test]
async fn an_ssh_fleet_is_planned_created_updated_and_deleted() {
    let (s, _dir) = isolated_server().await;
    let p = project(&s).await;
    let name = unique("ssh");
    let (plan, fleet) = plan_and_apply(&s, &p, ssh_spec(&name, json!(["127.0.0.11", "127.0.0.12"]))).await;
    serde_json::from_value::<dstack_api::fleets::FleetPlan>(plan.clone()).expect("a dstack FleetPlan");
    assert_eq!(plan["action"], "create");
    assert_eq!((plan["offers"].clone(), plan["total_offers"].clone()), (json!([]), json!(0)));
    assert_eq!(plan["max_offer_price"], Value::Null);
    assert_eq!(plan["current_resource"], Value::Null);
    assert_eq!(
        plan["spec"]["configuration"]["ssh_config"]["ssh_key"]["private"], PRIVATE,
        "the echo keeps the key"
    );
    assert_eq!(plan["effective_spec"]["configuration"]["ssh_config"]["ssh_key"], Value::Null);

    serde_json::from_value::<dstack_api::fleets::Fleet>(fleet.clone()).expect("a dstack Fleet");
    assert_eq!(fleet["status"], "active");
    assert_eq!(fleet["spec"]["configuration"]["ssh_config"]["ssh_key"], Value::Null);
    let i0 = &fleet["instances"][0];
    assert_eq!(i0["name"], format!("{name}-0"));
    assert_eq!((i0["backend"].as_str(), i0["region"].as_str()), (Some("remote"), Some("remote")));
    assert_eq!(i0["instance_type"]["resources"]["cpus"], 2);
    assert_eq!(i0["instance_type"]["resources"]["memory_mib"], 8);
    assert_eq!((i0["price"].as_f64(), i0["total_blocks"].as_i64()), (Some(0.0), Some(1)));
    assert_eq!(i0["unreachable"], false);
    assert_eq!(
        statuses(&fleet),
        [(0, "127.0.0.11".into(), "pending".into()), (1, "127.0.0.12".into(), "pending".into())]
    );
    // The private key is nowhere in what clients see.
    let list = s.admin(&format!("/api/project/{p}/fleets/list"), None).await;
    let instances = s.admin("/api/instances/list", Some(json!({"project_names": [p]}))).await;
    for shown in [&fleet, &list, &instances] {
        assert!(!shown.to_string().contains("PRIVATE KEY"), "{shown}");
    }
    // ... nor in the database in the clear.
    let rows =
        s.state.db.list_instances(s.state.db.project_by_name(&p).await.unwrap().unwrap().id).await.unwrap();
    let rci = rows[0].remote_connection_info.as_deref().expect("connection data");
    assert!(!rci.contains("PRIVATE KEY") && !rci.contains("127.0.0.11"));
    let info = dstack_server::fleets::remote_connection_info(&rows[0], &s.state.cipher).expect("decrypts");
    assert_eq!((info.host.as_str(), info.port, info.ssh_user.as_str()), ("127.0.0.11", 22, "ubuntu"));
    assert_eq!(info.ssh_keys[0].private.as_deref(), Some(PRIVATE));

    // Pending SSH hosts that cannot be deployed (nothing listens there) stay pending.
    step(&s, 2).await;
    let got = s.admin(&format!("/api/project/{p}/fleets/get"), Some(json!({"name": name}))).await;
    assert_eq!(statuses(&got), statuses(&fleet));

    // The same spec again: an update that changes nothing.
    let (plan, same) = plan_and_apply(&s, &p, ssh_spec(&name, json!(["127.0.0.11", "127.0.0.12"]))).await;
    assert_eq!(plan["action"], "update");
    assert_eq!(plan["current_resource"]["id"], fleet["id"]);
    assert_eq!(plan["current_resource"]["spec"]["configuration"]["ssh_config"]["ssh_key"], Value::Null);
    assert_eq!(same["id"], fleet["id"]);

    // A host removed and one added: in place, the new one takes the free number.
    let (plan, updated) = plan_and_apply(&s, &p, ssh_spec(&name, json!(["127.0.0.12", "127.0.0.13"]))).await;
    assert_eq!(plan["action"], "update");
    assert_eq!(updated["id"], fleet["id"]);
    assert_eq!(
        statuses(&updated),
        [
            (0, "127.0.0.11".into(), "terminating".into()),
            (1, "127.0.0.12".into(), "pending".into()),
            (2, "127.0.0.13".into(), "pending".into()),
        ]
    );
    step(&s, 1).await;
    let got = s.admin(&format!("/api/project/{p}/fleets/get"), Some(json!({"name": name}))).await;
    assert_eq!(
        statuses(&got),
        [(1, "127.0.0.12".into(), "pending".into()), (2, "127.0.0.13".into(), "pending".into())]
    );
    let all = s.admin("/api/instances/list", Some(json!({"project_names": [p]}))).await;
    assert_eq!(all.as_array().unwrap().len(), 2, "terminated instances are not listed");

    // A host's parameters changed: the plan says create (the CLI deletes first); applying
    // over the live fleet is refused with dstack's reason.
    let changed = ssh_spec(&name, json!(["127.0.0.12", {"hostname": "127.0.0.13", "port": 2222}]));
    let plan = s.admin(&format!("/api/project/{p}/fleets/get_plan"), Some(json!({"spec": changed}))).await;
    assert_eq!(plan["action"], "create");
    assert_eq!(plan["current_resource"]["id"], fleet["id"]);
    let body =
        json!({"plan": {"spec": plan["spec"], "current_resource": plan["current_resource"]}, "force": false});
    let msg = error(&s, &format!("/api/project/{p}/fleets/apply"), body).await;
    assert_eq!(msg, "Hosts configuration changed, cannot update: ['127.0.0.13']");
    // A stale plan is refused unless forced.
    let stale = json!({"plan": {"spec": ssh_spec(&name, json!(["127.0.0.12"])), "current_resource": fleet}, "force": false});
    let msg = error(&s, &format!("/api/project/{p}/fleets/apply"), stale).await;
    assert_eq!(msg, "Failed to apply plan. Resource has been changed. Try again or use force apply.");

    // delete_instances: unknown numbers are skipped, known ones terminate.
    s.admin(
        &format!("/api/project/{p}/fleets/delete_instances"),
        Some(json!({"name": name, "instance_nums": [1, 7]})),
    )
    .await;
    let got = s.admin(&format!("/api/project/{p}/fleets/get"), Some(json!({"name": name}))).await;
    assert_eq!(got["status"], "active");
    assert_eq!(got["instances"][0]["status"], "terminating");
    assert_eq!(got["instances"][0]["termination_reason"], "terminated_by_user");
    step(&s, 1).await;

    // Re-create: delete, wait until gone, create again with the changed host.
    s.admin(&format!("/api/project/{p}/fleets/delete"), Some(json!({"names": [name]}))).await;
    let got = s.admin(&format!("/api/project/{p}/fleets/get"), Some(json!({"name": name}))).await;
    assert_eq!(got["status"], "terminating");
    step(&s, 1).await;
    let gone = s
        .post(&format!("/api/project/{p}/fleets/get"), Some(&s.admin_token), Some(json!({"name": name})))
        .await;
    assert_eq!(gone.json, json!({"detail": [{"msg": "Resource not found", "code": "resource_not_exists"}]}));
    let (plan, again) = plan_and_apply(&s, &p, changed).await;
    assert_eq!(plan["action"], "create");
    assert_ne!(again["id"], fleet["id"]);
    assert_eq!(again["instances"][1]["hostname"], "127.0.0.13");
}

#[tokio::test]
async fn a_backend_fleet_without_backends_ends_with_no_offers() {
    let (s, _dir) = isolated_server().await;
    let p = project(&s).await;
    let (plan, fleet) =
        plan_and_apply(&s, &p, spec(json!({"type": "fleet", "name": "cloud", "nodes": 2}))).await;
    assert_eq!((plan["action"].as_str(), plan["total_offers"].as_i64()), (Some("create"), Some(0)));
    assert_eq!(
        statuses(&fleet),
        [(0, String::new(), "pending".into()), (1, String::new(), "pending".into())]
    );
    assert_eq!(fleet["instances"][0]["backend"], Value::Null);
    step(&s, 1).await;
    let got = s.admin(&format!("/api/project/{p}/fleets/get"), Some(json!({"name": "cloud"}))).await;
    let i0 = &got["instances"][0];
    assert_eq!(i0["status"], "terminated");
    assert_eq!(i0["termination_reason"], "no_offers");
    assert_eq!(i0["termination_reason_message"], "No offers found");
    assert!(i0["finished_at"].is_string());
    // nodes changes are updated in place.
    let (plan, _) =
        plan_and_apply(&s, &p, spec(json!({"type": "fleet", "name": "cloud", "nodes": "0..3"}))).await;
    assert_eq!(plan["action"], "update");
    // An elastic fleet starts empty and stays.
    let (_, elastic) =
        plan_and_apply(&s, &p, spec(json!({"type": "fleet", "name": "elastic", "nodes": "0.."}))).await;
    assert_eq!(elastic["instances"], json!([]));
    step(&s, 1).await;
    s.admin(&format!("/api/project/{p}/fleets/get"), Some(json!({"name": "elastic"}))).await;
    // Deleting both: gone after a pass.
    s.admin(&format!("/api/project/{p}/fleets/delete"), Some(json!({"names": ["cloud", "elastic", "nope"]})))
        .await;
    step(&s, 1).await;
    assert_eq!(s.admin(&format!("/api/project/{p}/fleets/list"), None).await, json!([]));
}

#[tokio::test]
async fn bad_fleet_specs_get_dstacks_errors() {
    let s = server().await;
    let p = project(&s).await;
    let plan = format!("/api/project/{p}/fleets/get_plan");
    let cases = [
        (
            spec(json!({"type": "fleet", "name": "X_1", "nodes": 1})),
            "Resource name should match regex '^[a-z][a-z0-9-]{1,40}$'",
        ),
        (spec(json!({"type": "fleet", "name": "xx"})), "No ssh_config or nodes specified"),
        (
            spec(json!({"type": "fleet", "name": "xx", "nodes": 1, "env": {"A": "1"}})),
            "Backend fleet configuration does not support the following fields: ['env']",
        ),
        (
            spec(json!({"type": "fleet", "name": "xx", "nodes": 1, "ssh_config": {"hosts": ["h"]}})),
            "ssh_config and nodes are mutually exclusive",
        ),
        (
            spec(json!({"type": "fleet", "name": "xx", "ssh_config": {"user": "u", "hosts": ["h"]}})),
            "No ssh key specified for host h",
        ),
        (
            spec(
                json!({"type": "fleet", "name": "xx", "ssh_config": {"user": "u", "ssh_key": {"public": PUBLIC}, "hosts": ["h"]}}),
            ),
            "Private key not provided",
        ),
        (
            spec(
                json!({"type": "fleet", "name": "xx", "ssh_config": {"user": "u", "ssh_key": {"public": PUBLIC, "private": PASSPHRASE}, "hosts": ["h"]}}),
            ),
            "Unsupported key type. The key type should be RSA, ECDSA, or Ed25519 and should not be encrypted with passphrase.",
        ),
        (
            spec(
                json!({"type": "fleet", "name": "xx", "ssh_config": {"ssh_key": {"public": PUBLIC, "private": PRIVATE}, "hosts": ["h"]}}),
            ),
            "No ssh user specified for host h",
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(error(&s, &plan, json!({"spec": body.clone()})).await, expected, "{body}");
        let apply = json!({"plan": {"spec": body}, "force": false});
        assert_eq!(error(&s, &format!("/api/project/{p}/fleets/apply"), apply).await, expected);
    }
    // Malformed: FastAPI's 422.
    let reply = s
        .post(
            &plan,
            Some(&s.admin_token),
            Some(json!({"spec": {"configuration": {"type": "fleet", "nodes": "x"}}})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reply.json);
    // A host of another fleet (in any project) is refused at plan time.
    let taken = unique("taken");
    plan_and_apply(&s, &p, ssh_spec(&taken, json!(["127.0.1.1"]))).await;
    let other = project(&s).await;
    let msg = error(
        &s,
        &format!("/api/project/{other}/fleets/get_plan"),
        json!({"spec": ssh_spec("dup", json!(["127.0.1.1", "127.0.1.2"]))}),
    )
    .await;
    assert_eq!(msg, "Instances [127.0.1.1] are already assigned to a fleet.");
    // A second fleet of the same name can only come through an update.
    let reply = s
        .post(
            &format!("/api/project/{p}/fleets/apply"),
            Some(&s.admin_token),
            Some(json!({"plan": {"spec": ssh_spec(&taken, json!(["127.0.1.1"]))}, "force": false})),
        )
        .await;
    assert_eq!(
        reply.json["detail"][0]["msg"],
        "Failed to apply plan. Resource has been changed. Try again or use force apply."
    );
    // Non-members get dstack's 403.
    let (_, token) = s.new_user("user").await;
    let reply = s.post(&plan, Some(&token), Some(json!({"spec": ssh_spec("y", json!(["127.0.1.9"]))}))).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = s
        .post(
            &format!("/api/project/{p}/fleets/delete_instances"),
            Some(&token),
            Some(json!({"name": taken, "instance_nums": [0]})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    // Unknown fleets are skipped by delete and delete_instances, as dstack does.
    s.admin(
        &format!("/api/project/{p}/fleets/delete_instances"),
        Some(json!({"name": "nope", "instance_nums": [0]})),
    )
    .await;
    s.admin(&format!("/api/project/{p}/fleets/delete"), Some(json!({"names": ["nope"]}))).await;
    s.admin(&format!("/api/project/{p}/fleets/delete"), Some(json!({"names": [taken]}))).await;
}
