//! Runs through the API, with the background loops stepped by the test: plans, submission,
//! the "no fleets" failure, stop, delete, listing and logs, and the errors dstack gives.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestServer, isolated_server, server, unique};

/// The body the dstack 0.22.5 CLI sends for `runs/apply` of `task.yml` (a captured fixture),
/// renamed to `name`, with `commands`.
fn apply_body(name: &str, commands: &[&str]) -> Value {
    let text = include_str!("../../../api/tests/fixtures/task.runs_apply.request.json");
    let mut body: Value = serde_json::from_str(text).expect("fixture");
    let spec = &mut body["plan"]["run_spec"];
    spec["run_name"] = json!(name);
    spec["configuration"]["name"] = json!(name);
    spec["configuration"]["commands"] = json!(commands);
    body
}

fn assert_same_as_typed_run(run: &Value) {
    let typed: dstack_api::runs::Run = serde_json::from_value(run.clone()).expect("a dstack Run");
    assert_eq!(serde_json::to_string(&typed).unwrap(), serde_json::to_string(run).unwrap());
}

fn plan_body(name: &str) -> Value {
    json!({"run_spec": apply_body(name, &["echo hi"])["plan"]["run_spec"].clone()})
}

async fn project(s: &TestServer) -> String {
    let name = unique("runs");
    s.admin("/api/projects/create", Some(json!({"project_name": name}))).await;
    name
}

/// Steps the loops until `done(run)` holds (at most 50 passes).
async fn step_until(s: &TestServer, project: &str, run: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..50 {
        dstack_server::pipelines::step(&s.state).await.expect("a pass");
        let got = s.admin(&format!("/api/project/{project}/runs/get"), Some(json!({"run_name": run}))).await;
        if done(&got) {
            return got;
        }
    }
    panic!("run {run} did not get there");
}

#[tokio::test]
async fn without_fleets_the_plan_has_no_offers_and_the_run_fails_with_no_fleets() {
    let (s, _dir) = isolated_server().await;
    let p = project(&s).await;
    let plan = s.admin(&format!("/api/project/{p}/runs/get_plan"), Some(plan_body("nf"))).await;
    assert_eq!(plan["action"], "create");
    assert_eq!(plan["current_resource"], Value::Null);
    assert_eq!(plan["job_plans"][0]["offers"], json!([]));
    assert_eq!(plan["job_plans"][0]["total_offers"], 0);
    assert_eq!(plan["job_plans"][0]["job_spec"]["job_name"], "nf-0-0");
    let me = s.admin("/api/users/get_my_user", None).await;
    assert_eq!(
        plan["effective_run_spec"]["ssh_key_pub"], me["ssh_public_key"],
        "the user's key, byte for byte"
    );

    let run = s.admin(&format!("/api/project/{p}/runs/apply"), Some(apply_body("nf", &["echo hi"]))).await;
    assert_eq!(run["status"], "submitted");
    assert_eq!(run["jobs"][0]["job_submissions"][0]["status"], "submitted");
    let run = step_until(&s, &p, "nf", |r| r["status"] == "failed").await;
    assert_eq!(run["termination_reason"], "job_failed");
    let sub = &run["jobs"][0]["job_submissions"][0];
    assert_eq!(sub["status"], "failed");
    assert_eq!(sub["status_message"], "no fleets");
    assert_eq!(sub["termination_reason"], "failed_to_start_due_to_no_capacity");
    assert!(sub["termination_reason_message"].as_str().unwrap().contains("No matching fleet found"), "{sub}");
    // The run is dstack's Run, byte for byte as the typed Run writes it (the server passes
    // stored specs through without parsing them).
    assert_same_as_typed_run(&run);
    let listed = s.admin("/api/runs/list", Some(json!({"project_name": p}))).await;
    assert_same_as_typed_run(&listed[0]);
    assert_eq!(listed[0], run);
}

#[tokio::test]
async fn names_clash_only_with_live_runs_and_stop_then_delete() {
    let (s, _dir) = isolated_server().await;
    let p = project(&s).await;
    let base = format!("/api/project/{p}/runs");
    let first = s.admin(&format!("{base}/apply"), Some(apply_body("clash", &["sleep 100"]))).await;

    // The same spec without the current run in the plan: the resource has changed.
    let again = s
        .post(&format!("{base}/apply"), Some(&s.admin_token), Some(apply_body("clash", &["sleep 100"])))
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        again.json["detail"][0]["msg"],
        "Failed to apply plan. Resource has been changed. Try again or use force apply."
    );
    let other =
        s.post(&format!("{base}/apply"), Some(&s.admin_token), Some(apply_body("clash", &["true"]))).await;
    assert_eq!(other.json["detail"][0]["msg"], "Cannot override active run. Stop the run first.");
    let del =
        s.post(&format!("{base}/delete"), Some(&s.admin_token), Some(json!({"runs_names": ["clash"]}))).await;
    assert_eq!(del.json, json!({"detail": [{"msg": "Cannot delete active runs", "code": "error"}]}));

    s.admin(&format!("{base}/stop"), Some(json!({"runs_names": ["clash"], "abort": false}))).await;
    let stopped = step_until(&s, &p, "clash", |r| r["status"] == "terminated").await;
    assert_eq!(stopped["termination_reason"], "stopped_by_user");
    assert_eq!(stopped["jobs"][0]["job_submissions"][0]["status_message"], "stopped");

    // A finished run's name is free again: a new run replaces it.
    let second = s.admin(&format!("{base}/apply"), Some(apply_body("clash", &["true"]))).await;
    assert_ne!(second["id"], first["id"]);
    let by_id = s.admin(&format!("{base}/get"), Some(json!({"id": first["id"]}))).await;
    assert_eq!(by_id["deleted"], true, "the old run is kept, deleted");
    s.admin(&format!("{base}/stop"), Some(json!({"runs_names": ["clash"], "abort": true}))).await;
    let aborted = step_until(&s, &p, "clash", |r| r["status"] == "terminated").await;
    assert_eq!(aborted["termination_reason"], "aborted_by_user");
    s.admin(&format!("{base}/delete"), Some(json!({"runs_names": ["clash"]}))).await;
    let gone = s.post(&format!("{base}/get"), Some(&s.admin_token), Some(json!({"run_name": "clash"}))).await;
    assert_eq!(gone.json, json!({"detail": [{"msg": "Run not found", "code": "resource_not_exists"}]}));
}

#[tokio::test]
async fn list_pages_newest_first_and_filters() {
    let (s, _dir) = isolated_server().await;
    let p = project(&s).await;
    let mut names = Vec::new();
    for i in 0..5 {
        let name = format!("page-{i}");
        s.admin(&format!("/api/project/{p}/runs/apply"), Some(apply_body(&name, &["true"]))).await;
        names.push(name);
    }
    let list = |body: Value| async { s.admin("/api/runs/list", Some(body)).await };
    let names_of = |runs: &Value| -> Vec<String> {
        runs.as_array()
            .unwrap()
            .iter()
            .map(|r| r["run_spec"]["run_name"].as_str().unwrap().to_owned())
            .collect()
    };
    let page1 = list(json!({"project_name": p, "limit": 2})).await;
    assert_eq!(names_of(&page1), ["page-4", "page-3"]);
    let last = &page1[1];
    let page2 = list(json!({"project_name": p, "limit": 2, "prev_submitted_at": last["submitted_at"], "prev_run_id": last["id"]})).await;
    assert_eq!(names_of(&page2), ["page-2", "page-1"]);
    let asc = list(json!({"project_name": p, "limit": 3, "ascending": true})).await;
    assert_eq!(names_of(&asc), ["page-0", "page-1", "page-2"]);
    let no_jobs = list(json!({"project_name": p, "limit": 1, "include_jobs": false})).await;
    assert_eq!(no_jobs[0]["jobs"], json!([]));
    assert_eq!(names_of(&list(json!({"project_name": p, "only_active": true})).await).len(), 5);

    s.admin(&format!("/api/project/{p}/runs/stop"), Some(json!({"runs_names": ["page-0"], "abort": true})))
        .await;
    step_until(&s, &p, "page-0", |r| r["status"] == "terminated").await;
    let active = names_of(&list(json!({"project_name": p, "only_active": true})).await);
    assert!(!active.contains(&"page-0".to_owned()), "{active:?}");

    // Another user sees nothing of a project they are not in; an unknown user is an error.
    let (_, token) = s.new_user("user").await;
    let theirs = s.post("/api/runs/list", Some(&token), Some(json!({"project_name": p}))).await;
    assert_eq!(theirs.json, json!([]));
    let bad_user =
        s.post("/api/runs/list", Some(&s.admin_token), Some(json!({"username": unique("nobody")}))).await;
    assert_eq!(bad_user.json, json!({"detail": [{"msg": "User not found", "code": "resource_not_exists"}]}));
    let foreign = s
        .post(&format!("/api/project/{p}/runs/get"), Some(&token), Some(json!({"run_name": "page-1"})))
        .await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn bad_requests_get_dstack_errors_and_write_nothing() {
    let s = server().await;
    let p = project(&s).await;
    let base = format!("/api/project/{p}/runs");
    let mut bad_name = apply_body("Bad_Name", &["true"]);
    bad_name["plan"]["run_spec"]["configuration"]["name"] = json!(null);
    let r = s.post(&format!("{base}/apply"), Some(&s.admin_token), Some(bad_name)).await;
    assert_eq!(r.json["detail"][0]["msg"], "Resource name should match regex '^[a-z][a-z0-9-]{1,40}$'");
    let r = s.post(&format!("{base}/apply"), Some(&s.admin_token), Some(json!({"plan": {}}))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json["detail"][0]["type"], "missing");
    let r = s.post(&format!("{base}/get"), Some(&s.admin_token), Some(json!({"run_name": "nope"}))).await;
    assert_eq!(r.json["detail"][0]["code"], "resource_not_exists");
    let r = s
        .post(
            &format!("/api/project/{p}/logs/poll"),
            Some(&s.admin_token),
            Some(json!({"run_name": "nope", "job_submission_id": uuid::Uuid::new_v4()})),
        )
        .await;
    assert_eq!(r.json["detail"][0]["code"], "resource_not_exists");
    let r = s.post(&format!("{base}/stop"), None, Some(json!({"runs_names": [], "abort": false}))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let listed = s.admin("/api/runs/list", Some(json!({"project_name": p}))).await;
    assert_eq!(listed, json!([]), "nothing was written");
}

/// A run placed on an instance belongs to that instance's fleet from then on: `fleet` on the
/// wire is `{id, name}` (dstack's runs pipeline sets `fleet_id` from the jobs' instances,
/// `_detect_fleet_id_from_jobs`), and stays after the run finishes.
#[tokio::test]
async fn a_run_placed_on_a_fleet_instance_reports_the_fleet() {
    let (s, _dir) = isolated_server().await;
    let p = project(&s).await;
    let project = s.state.db.project_by_name(&p).await.expect("db").expect("the project");
    dstack_server::local_fleet::create(&s.state, &project).await.expect("the local fleet");
    // A shim address nobody answers on: the job is placed, then fails to reach it.
    for i in s.state.db.list_instances(project.id).await.expect("db") {
        s.state
            .db
            .update_instance_agent(
                i.id,
                "http://127.0.0.1:9",
                i.offer.as_deref().unwrap(),
                i.job_provisioning_data.as_deref().unwrap(),
            )
            .await
            .expect("db");
    }
    let fleet = s.state.db.list_fleets(project.id).await.expect("db").remove(0);
    let mut body = apply_body("placed", &["true"]);
    body["plan"]["run_spec"]["configuration"]["resources"] = json!({
        "cpu": {"min": 1}, "memory": {"min": 0.5}, "disk": {"size": {"min": 1.0}}, "gpu": {"count": 0}
    });
    let run = s.admin(&format!("/api/project/{p}/runs/apply"), Some(body)).await;
    assert_eq!(run["fleet"], Value::Null, "not placed yet");
    let placed = step_until(&s, &p, "placed", |r| r["fleet"] != Value::Null).await;
    assert_eq!(placed["fleet"], json!({"id": fleet.id.to_string(), "name": "local"}));
    s.admin(&format!("/api/project/{p}/runs/stop"), Some(json!({"runs_names": ["placed"], "abort": true})))
        .await;
    let done = step_until(&s, &p, "placed", |r| r["status"] == "terminated" || r["status"] == "failed").await;
    assert_eq!(done["fleet"], placed["fleet"], "the fleet stays on the finished run");
}

#[tokio::test]
async fn the_local_fleet_is_listed_offered_and_deleted() {
    let s = server().await;
    let p = project(&s).await;
    let row = s.state.db.project_by_name(&p).await.unwrap().unwrap();
    dstack_server::local_fleet::create(&s.state, &row).await.expect("the local fleet");

    let fleets =
        s.admin(&format!("/api/project/{p}/fleets/list"), Some(json!({"include_imported": true}))).await;
    assert_eq!(fleets.as_array().unwrap().len(), 1, "{fleets}");
    let fleet = &fleets[0];
    assert_eq!((fleet["name"].as_str(), fleet["status"].as_str()), (Some("local"), Some("active")));
    assert_eq!(fleet["spec"]["configuration"]["nodes"], json!({"min": 1, "max": 1}));
    let instance = &fleet["instances"][0];
    assert_eq!(instance["name"], "local-0");
    assert_eq!(instance["backend"], "remote");
    assert_eq!(instance["hostname"], "127.0.0.1");
    assert_eq!(instance["unreachable"], true, "no shim in this test");
    serde_json::from_value::<Vec<dstack_api::fleets::Fleet>>(fleets.clone()).expect("dstack Fleets");

    let got = s.admin(&format!("/api/project/{p}/fleets/get"), Some(json!({"name": "local"}))).await;
    assert_eq!(got["id"], fleet["id"]);
    let missing = s
        .post(&format!("/api/project/{p}/fleets/get"), Some(&s.admin_token), Some(json!({"name": "nope"})))
        .await;
    assert_eq!(
        missing.json,
        json!({"detail": [{"msg": "Resource not found", "code": "resource_not_exists"}]})
    );
    let instances = s.admin("/api/instances/list", Some(json!({"project_names": [p]}))).await;
    assert_eq!(instances.as_array().unwrap().len(), 1);
    assert_eq!(instances[0]["id"], instance["id"]);

    // The instance is offered to runs that fit it (here busy: its shim is not up).
    let plan = s.admin(&format!("/api/project/{p}/runs/get_plan"), Some(plan_body("fits"))).await;
    let offers = &plan["job_plans"][0]["offers"];
    let cpus = instance["instance_type"]["resources"]["cpus"].as_i64().unwrap();
    if cpus >= 2 {
        assert_eq!(offers[0]["instance"]["name"], "local", "{plan}");
        assert_eq!(offers[0]["availability"], "busy");
    }
    let gpus = s
        .admin(&format!("/api/project/{p}/gpus/list"), Some(json!({"run_spec": plan_body("g")["run_spec"]})))
        .await;
    let expected_gpus = instance["instance_type"]["resources"]["gpus"].as_array().unwrap().len().min(1);
    assert_eq!(gpus["gpus"].as_array().unwrap().len(), expected_gpus, "{gpus}");

    // Deleting: the fleet is terminating until the fleets loop has terminated its instance.
    s.admin(&format!("/api/project/{p}/fleets/delete"), Some(json!({"names": ["local"]}))).await;
    let got = s.admin(&format!("/api/project/{p}/fleets/get"), Some(json!({"name": "local"}))).await;
    assert_eq!(got["status"], "terminating");
    assert_eq!(got["instances"][0]["status"], "terminating");
    assert_eq!(got["instances"][0]["termination_reason"], "terminated_by_user");
    for _ in 0..5 {
        dstack_server::pipelines::step(&s.state).await.expect("a pass");
    }
    assert_eq!(s.admin(&format!("/api/project/{p}/fleets/list"), None).await, json!([]));
}

#[tokio::test]
async fn replanning_an_unchanged_active_run_is_an_update() {
    let (s, _dir) = isolated_server().await;
    let p = project(&s).await;
    let run = s.admin(&format!("/api/project/{p}/runs/apply"), Some(apply_body("same", &["echo hi"]))).await;
    let plan = s.admin(&format!("/api/project/{p}/runs/get_plan"), Some(plan_body("same"))).await;
    assert_eq!(plan["action"], "update");
    assert_eq!(plan["current_resource"]["id"], run["id"]);
    let mut changed = plan_body("same");
    changed["run_spec"]["configuration"]["commands"] = json!(["echo other"]);
    let plan = s.admin(&format!("/api/project/{p}/runs/get_plan"), Some(changed)).await;
    assert_eq!(plan["action"], "create");
    // Applying the unchanged spec with the current run in the plan returns that run.
    let mut body = apply_body("same", &["echo hi"]);
    body["plan"]["current_resource"] = run.clone();
    let again = s.admin(&format!("/api/project/{p}/runs/apply"), Some(body)).await;
    assert_eq!(again["id"], run["id"]);
}

#[tokio::test]
async fn a_run_that_retries_on_no_capacity_waits_pending() {
    let (s, _dir) = isolated_server().await;
    let p = project(&s).await;
    let mut body = apply_body("patient", &["true"]);
    body["plan"]["run_spec"]["configuration"]["retry"] =
        json!({"on_events": ["no-capacity"], "duration": 3600});
    s.admin(&format!("/api/project/{p}/runs/apply"), Some(body)).await;
    let run = step_until(&s, &p, "patient", |r| r["status"] == "pending").await;
    assert_eq!(run["status_message"], "retrying");
    assert_eq!(run["jobs"][0]["job_submissions"][0]["status_message"], "no fleets");
    assert_eq!(run["jobs"][0]["job_spec"]["retry"], json!({"on_events": ["no-capacity"], "duration": 3600}));
    // The backoff holds it back (15 s on the first attempt): more passes change nothing.
    dstack_server::pipelines::step(&s.state).await.unwrap();
    let again = s.admin(&format!("/api/project/{p}/runs/get"), Some(json!({"run_name": "patient"}))).await;
    assert_eq!(again["status"], "pending");
    assert_eq!(again["jobs"][0]["job_submissions"].as_array().unwrap().len(), 1);
}

/// The run's `next_triggered_at` on the wire.
fn next_trigger_of(run: &Value) -> jiff::Timestamp {
    let typed: dstack_api::runs::Run = serde_json::from_value(run.clone()).expect("a dstack Run");
    typed.next_triggered_at.expect("a next trigger time")
}

/// Moves a pending run's trigger time into the past, as the loops would find it once its
/// time has come (through the loops' own lease, so no test-only database function).
async fn make_due(s: &TestServer, run: &str) {
    let now = jiff::Timestamp::now();
    let (leased, token) =
        s.state.db.lease_runs(&["pending"], 100, now, jiff::SignedDuration::from_secs(20)).await.unwrap();
    let mut row = leased.into_iter().find(|r| r.run_name == run).expect("the run is pending and free");
    row.next_triggered_at = Some(now - jiff::SignedDuration::from_secs(1));
    assert!(s.state.db.save_run(&row, token, &[], &[]).await.unwrap());
    s.state.db.release_runs(token, now).await.unwrap();
}

#[tokio::test]
async fn a_scheduled_run_waits_for_its_time_runs_then_waits_again_until_stopped() {
    let (s, _dir) = isolated_server().await;
    let p = project(&s).await;
    let crons = ["0 0 * * *", "30 12 * * sat"];
    let mut body = apply_body("cron", &["true"]);
    body["plan"]["run_spec"]["configuration"]["schedule"] = json!({"cron": crons});
    let before = jiff::Timestamp::now();
    let run = s.admin(&format!("/api/project/{p}/runs/apply"), Some(body)).await;
    let after = jiff::Timestamp::now();
    assert_eq!(run["status"], "pending");
    assert_eq!(run["jobs"], json!([]));
    let first = next_trigger_of(&run);
    assert!(first > after, "{first} is in the future");
    let expected = [before, after].map(|t| dstack_decide::schedule::next_trigger(&crons, t).unwrap());
    assert!(expected.contains(&first), "{first} is the cron's next time ({expected:?})");
    assert_same_as_typed_run(&run);

    // Not yet its time: passes leave it alone.
    dstack_server::pipelines::step(&s.state).await.unwrap();
    let got = s.admin(&format!("/api/project/{p}/runs/get"), Some(json!({"run_name": "cron"}))).await;
    assert_eq!((got["status"].as_str(), &got["jobs"]), (Some("pending"), &json!([])));
    assert_eq!(next_trigger_of(&got), first);

    // Its time comes: it gets its jobs and runs (and, with no fleets, fails to start).
    make_due(&s, "cron").await;
    dstack_server::pipelines::step(&s.state).await.unwrap();
    let got = s.admin(&format!("/api/project/{p}/runs/get"), Some(json!({"run_name": "cron"}))).await;
    assert_ne!(got["status"], "pending", "{got}");
    assert_eq!(got["jobs"][0]["job_spec"]["job_name"], "cron-0-0");
    let subs = got["jobs"][0]["job_submissions"].as_array().unwrap();
    assert_eq!(subs[0]["submission_num"], 0);

    // The jobs finish (no capacity): back to pending, with the next time.
    let got = step_until(&s, &p, "cron", |r| r["status"] == "pending").await;
    let second = next_trigger_of(&got);
    assert!(second > jiff::Timestamp::now(), "{second}");
    assert_eq!(got["fleet"], Value::Null);
    assert_eq!(got["termination_reason"], "job_failed", "kept, as dstack does");
    let subs = got["jobs"][0]["job_submissions"].as_array().unwrap();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0]["status"], "failed");
    assert_same_as_typed_run(&got);

    // The next time: the job's next submission.
    make_due(&s, "cron").await;
    dstack_server::pipelines::step(&s.state).await.unwrap();
    let got = s.admin(&format!("/api/project/{p}/runs/get"), Some(json!({"run_name": "cron"}))).await;
    let subs = got["jobs"][0]["job_submissions"].as_array().unwrap();
    assert_eq!(subs.len(), 2, "{got}");
    assert_eq!(subs[1]["submission_num"], 1);
    let got = step_until(&s, &p, "cron", |r| r["status"] == "pending").await;
    assert!(next_trigger_of(&got) > jiff::Timestamp::now());

    // A user stop ends it for good.
    s.admin(&format!("/api/project/{p}/runs/stop"), Some(json!({"runs_names": ["cron"], "abort": false})))
        .await;
    let got = step_until(&s, &p, "cron", |r| r["status"] == "terminated").await;
    assert_eq!(got["termination_reason"], "stopped_by_user");
    assert_eq!(got["next_triggered_at"], Value::Null);
    for _ in 0..3 {
        dstack_server::pipelines::step(&s.state).await.unwrap();
    }
    let got = s.admin(&format!("/api/project/{p}/runs/get"), Some(json!({"run_name": "cron"}))).await;
    assert_eq!(got["status"], "terminated");
    assert_eq!(got["jobs"][0]["job_submissions"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_second_run_finds_the_one_local_instance_busy() {
    let (s, _dir) = isolated_server().await;
    let p = project(&s).await;
    let row = s.state.db.project_by_name(&p).await.unwrap().unwrap();
    dstack_server::local_fleet::create(&s.state, &row).await.expect("the local fleet");
    let instance = s.state.db.list_instances(row.id).await.unwrap().remove(0);
    // A shim address that refuses connections: the instance takes jobs, which then wait.
    let (offer, jpd) =
        (instance.offer.as_deref().unwrap(), instance.job_provisioning_data.as_deref().unwrap());
    s.state.db.update_instance_agent(instance.id, "http://127.0.0.1:9", offer, jpd).await.unwrap();
    let small = |name: &str| {
        let mut body = apply_body(name, &["true"]);
        let resources = &mut body["plan"]["run_spec"]["configuration"]["resources"];
        resources["cpu"]["count"]["min"] = json!(1);
        resources["memory"]["min"] = json!(0.5);
        resources["disk"]["size"]["min"] = json!(1.0);
        body
    };
    s.admin(&format!("/api/project/{p}/runs/apply"), Some(small("first"))).await;
    s.admin(&format!("/api/project/{p}/runs/apply"), Some(small("second"))).await;
    let second = step_until(&s, &p, "second", |r| r["status"] == "failed").await;
    let sub = &second["jobs"][0]["job_submissions"][0];
    assert_eq!(sub["status_message"], "no capacity");
    let message = sub["termination_reason_message"].as_str().unwrap();
    assert!(message.starts_with("All instances that fit the run are busy (fleet 'local')"), "{message}");
    let first = s.admin(&format!("/api/project/{p}/runs/get"), Some(json!({"run_name": "first"}))).await;
    let sub = &first["jobs"][0]["job_submissions"][0];
    assert_eq!(sub["status"], "provisioning", "{first}");
    assert_eq!(sub["job_provisioning_data"]["hostname"], "127.0.0.1");
    assert_eq!(first["fleet"]["name"], "local");
}

/// A host split into 4 blocks (8 CPUs, 64 GB, 4 GPUs) takes jobs side by side, each on the
/// fewest blocks that fit it, until its blocks are gone; a stopped job gives its blocks back.
#[tokio::test]
async fn jobs_share_a_host_split_into_blocks() {
    let (s, _dir) = isolated_server().await;
    let p = project(&s).await;
    let row = s.state.db.project_by_name(&p).await.unwrap().unwrap();
    dstack_server::local_fleet::create(&s.state, &row).await.expect("the local fleet");
    let instance = s.state.db.list_instances(row.id).await.unwrap().remove(0);
    let mut offer: Value = serde_json::from_str(instance.offer.as_deref().unwrap()).unwrap();
    let gpu = json!({"name": "A100", "memory_mib": 81920, "vendor": "nvidia"});
    offer["instance"]["resources"] = json!({"cpus": 8, "memory_mib": 65536, "gpus": [gpu, gpu, gpu, gpu],
        "spot": false, "disk": {"size_mib": 204800}, "cpu_arch": "x86", "description": ""});
    let jpd = instance.job_provisioning_data.as_deref().unwrap();
    // A shim address that refuses connections: placed jobs wait in `provisioning`.
    s.state
        .db
        .update_instance_agent(instance.id, "http://127.0.0.1:9", &offer.to_string(), jpd)
        .await
        .unwrap();
    assert!(s.state.db.set_instance_total_blocks(instance.id, 4).await.unwrap());
    let with_gpus = |name: &str, n: i64| {
        let mut body = apply_body(name, &["true"]);
        body["plan"]["run_spec"]["configuration"]["resources"] = json!({
            "cpu": {"min": 1}, "memory": {"min": 0.5}, "disk": {"size": {"min": 1.0}},
            "gpu": {"count": {"min": n, "max": n}}
        });
        body
    };
    let busy_blocks = || async { s.state.db.instance_by_id(instance.id).await.unwrap().unwrap().busy_blocks };

    // The plan offers the share: 2 of 4 blocks for 2 GPUs.
    let plan_body = json!({"run_spec": with_gpus("plan", 2)["plan"]["run_spec"].clone()});
    let plan = s.admin(&format!("/api/project/{p}/runs/get_plan"), Some(plan_body)).await;
    let offer0 = &plan["job_plans"][0]["offers"][0];
    assert_eq!((offer0["blocks"].as_i64(), offer0["total_blocks"].as_i64()), (Some(2), Some(4)), "{plan}");
    assert_eq!(offer0["instance"]["resources"]["cpus"], 4);
    assert_eq!(offer0["availability"], "idle");

    let provisioning = |r: &Value| r["jobs"][0]["job_submissions"][0]["status"] == "provisioning";
    s.admin(&format!("/api/project/{p}/runs/apply"), Some(with_gpus("two", 2))).await;
    let two = step_until(&s, &p, "two", provisioning).await;
    let jrd = &two["jobs"][0]["job_submissions"][0]["job_runtime_data"];
    assert_eq!(jrd["network_mode"], "bridge", "{jrd}");
    assert_eq!(
        (jrd["cpu"].as_f64(), jrd["gpu"].as_i64(), jrd["memory"].as_f64()),
        (Some(4.0), Some(2), Some(32.0))
    );
    assert_eq!((jrd["offer"]["blocks"].as_i64(), jrd["offer"]["total_blocks"].as_i64()), (Some(2), Some(4)));
    assert_eq!(jrd["offer"]["instance"]["resources"]["gpus"].as_array().unwrap().len(), 2);
    assert_eq!(busy_blocks().await, 2);
    for name in ["one-a", "one-b"] {
        s.admin(&format!("/api/project/{p}/runs/apply"), Some(with_gpus(name, 1))).await;
        let got = step_until(&s, &p, name, provisioning).await;
        let jrd = &got["jobs"][0]["job_submissions"][0]["job_runtime_data"];
        assert_eq!((jrd["gpu"].as_i64(), jrd["cpu"].as_f64()), (Some(1), Some(2.0)), "{jrd}");
    }
    assert_eq!(busy_blocks().await, 4, "three jobs, four blocks");
    let row = s.state.db.instance_by_id(instance.id).await.unwrap().unwrap();
    assert_eq!(row.status, "busy");
    let fleets = s.admin(&format!("/api/project/{p}/fleets/list"), Some(json!({}))).await;
    assert_eq!(fleets[0]["instances"][0]["busy_blocks"], 4, "{fleets}");

    // No block is left: the next job fails with no capacity (and would wait with `retry`).
    s.admin(&format!("/api/project/{p}/runs/apply"), Some(with_gpus("fifth", 1))).await;
    let fifth = step_until(&s, &p, "fifth", |r| r["status"] == "failed").await;
    let sub = &fifth["jobs"][0]["job_submissions"][0];
    assert_eq!(sub["status_message"], "no capacity");
    assert_eq!(sub["termination_reason"], "failed_to_start_due_to_no_capacity");
    let message = sub["termination_reason_message"].as_str().unwrap();
    assert!(message.starts_with("All instances that fit the run are busy (fleet 'local')"), "{message}");
    assert_eq!(busy_blocks().await, 4);

    // The 2-block job ends: its two blocks come back, and two 1-GPU jobs take them: four
    // jobs on the host at once.
    s.admin(&format!("/api/project/{p}/runs/stop"), Some(json!({"runs_names": ["two"], "abort": true})))
        .await;
    step_until(&s, &p, "two", |r| r["status"] == "terminated" || r["status"] == "failed").await;
    assert_eq!(busy_blocks().await, 2);
    for name in ["one-c", "one-d"] {
        s.admin(&format!("/api/project/{p}/runs/apply"), Some(with_gpus(name, 1))).await;
        step_until(&s, &p, name, provisioning).await;
    }
    assert_eq!(busy_blocks().await, 4);
    for name in ["one-a", "one-b", "one-c", "one-d"] {
        s.admin(&format!("/api/project/{p}/runs/stop"), Some(json!({"runs_names": [name], "abort": true})))
            .await;
        step_until(&s, &p, name, |r| r["status"] == "terminated" || r["status"] == "failed").await;
    }
    assert_eq!(busy_blocks().await, 0);
    let row = s.state.db.instance_by_id(instance.id).await.unwrap().unwrap();
    assert_eq!(row.status, "idle");
}

/// The body the dstack 0.22.5 CLI sends for `runs/apply` of a service (a captured fixture),
/// renamed to `name`.
fn service_apply_body(name: &str) -> Value {
    let text = include_str!("../../../api/tests/fixtures/service.runs_apply.request.json");
    let mut body: Value = serde_json::from_str(text).expect("fixture");
    body["plan"]["run_spec"]["run_name"] = json!(name);
    body["plan"]["run_spec"]["configuration"]["name"] = json!(name);
    body
}

/// dstack's update semantics of `get_plan` and `apply` against an active service: what a
/// rolling deployment can roll out plans as an update and applies in place with the next
/// `deployment_num`, only against the run as it is now (or with `force`); anything else must
/// be stopped first.
#[tokio::test]
async fn an_active_service_is_updated_in_place_with_the_next_deployment() {
    let (s, _dir) = isolated_server().await;
    let p = project(&s).await;
    let base = format!("/api/project/{p}/runs");
    let first = s.admin(&format!("{base}/apply"), Some(service_apply_body("upd"))).await;
    assert_eq!(first["deployment_num"], 0);

    let with = |edit: &dyn Fn(&mut Value)| {
        let mut body = service_apply_body("upd");
        edit(&mut body["plan"]["run_spec"]);
        body
    };
    let env_v2 = |spec: &mut Value| spec["configuration"]["env"] = json!({"VERSION": "v2"});
    // Plans: an env change is an update of the current run; `auth` is not.
    let plan = s
        .admin(&format!("{base}/get_plan"), Some(json!({"run_spec": with(&env_v2)["plan"]["run_spec"]})))
        .await;
    assert_eq!(plan["action"], "update");
    assert_eq!(plan["current_resource"]["id"], first["id"]);
    let no_auth = |spec: &mut Value| spec["configuration"]["auth"] = json!(false);
    let plan = s
        .admin(&format!("{base}/get_plan"), Some(json!({"run_spec": with(&no_auth)["plan"]["run_spec"]})))
        .await;
    assert_eq!(plan["action"], "create");
    assert_eq!(plan["current_resource"]["id"], first["id"]);

    // Without the current run in the plan, or with a stale one, the resource has changed.
    let changed = "Failed to apply plan. Resource has been changed. Try again or use force apply.";
    let stale = s.post(&format!("{base}/apply"), Some(&s.admin_token), Some(with(&env_v2))).await;
    assert_eq!(stale.status, StatusCode::BAD_REQUEST);
    assert_eq!(stale.json["detail"][0]["msg"], changed);
    let refused = s.post(&format!("{base}/apply"), Some(&s.admin_token), Some(with(&no_auth))).await;
    assert_eq!(refused.json["detail"][0]["msg"], "Cannot override active run. Stop the run first.");

    // With the current run: updated in place, deployment 1, the new spec stored.
    let mut body = with(&env_v2);
    body["plan"]["current_resource"] = first.clone();
    let updated = s.admin(&format!("{base}/apply"), Some(body.clone())).await;
    assert_eq!(updated["id"], first["id"], "the same run");
    assert_eq!(updated["deployment_num"], 1);
    assert_eq!(updated["run_spec"]["configuration"]["env"], json!({"VERSION": "v2"}));
    assert_eq!(updated["jobs"][0]["job_submissions"][0]["deployment_num"], 0, "the job rolls later");
    assert_eq!(updated["service"], first["service"]);
    // The plan made against deployment 0 is stale now.
    let again = s.post(&format!("{base}/apply"), Some(&s.admin_token), Some(body)).await;
    assert_eq!(again.json["detail"][0]["msg"], changed);
    // `force` needs no current run; a replicas change is in place too.
    let mut forced = with(&|spec: &mut Value| {
        env_v2(spec);
        spec["configuration"]["replicas"] = json!({"min": 2, "max": 2});
    });
    forced["force"] = json!(true);
    let forced = s.admin(&format!("{base}/apply"), Some(forced)).await;
    assert_eq!(forced["deployment_num"], 2);
    assert_eq!(forced["run_spec"]["configuration"]["replicas"], json!({"min": 2, "max": 2}));
    let got = s.admin(&format!("{base}/get"), Some(json!({"run_name": "upd"}))).await;
    assert_eq!(got["deployment_num"], 2);
    assert_eq!(got["id"], first["id"]);
}

/// A task changes in place only its priority: other changes need a new run.
#[tokio::test]
async fn an_active_task_is_updated_only_in_its_priority() {
    let (s, _dir) = isolated_server().await;
    let p = project(&s).await;
    let base = format!("/api/project/{p}/runs");
    let run = s.admin(&format!("{base}/apply"), Some(apply_body("tprio", &["sleep 100"]))).await;
    let mut body = apply_body("tprio", &["sleep 100"]);
    body["plan"]["run_spec"]["configuration"]["priority"] = json!(7);
    let plan =
        s.admin(&format!("{base}/get_plan"), Some(json!({"run_spec": body["plan"]["run_spec"]}))).await;
    assert_eq!(plan["action"], "update");
    body["plan"]["current_resource"] = run.clone();
    let updated = s.admin(&format!("{base}/apply"), Some(body)).await;
    assert_eq!((updated["id"].clone(), updated["deployment_num"].clone()), (run["id"].clone(), json!(1)));
    assert_eq!(updated["run_spec"]["configuration"]["priority"], 7);
    let mut env = apply_body("tprio", &["sleep 100"]);
    env["plan"]["run_spec"]["configuration"]["env"] = json!({"A": "1"});
    let plan = s.admin(&format!("{base}/get_plan"), Some(json!({"run_spec": env["plan"]["run_spec"]}))).await;
    assert_eq!(plan["action"], "create");
    env["plan"]["current_resource"] = updated;
    let refused = s.post(&format!("{base}/apply"), Some(&s.admin_token), Some(env)).await;
    assert_eq!(refused.json["detail"][0]["msg"], "Cannot override active run. Stop the run first.");
}
