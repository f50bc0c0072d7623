//! Whole tables compared with what dstack 0.22.5's CLI prints for the same JSON (captured by
//! running its `get_runs_table`, `print_offers_table` and `print_run_plan` at 250 columns,
//! without colour, at the same `now`).

use dstack_api::fleets::Fleet;
use dstack_api::runs::{InstanceOfferWithAvailability, Run, RunPlan};
use jiff::Timestamp;
use serde_json::{Value, json};

use super::*;

fn fixture(name: &str) -> Value {
    let path = format!("{}/../api/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn now() -> Timestamp {
    "2026-11-24T12:20:00Z".parse().unwrap()
}

fn ps_runs() -> Vec<Run> {
    serde_json::from_value(fixture("ps.runs_list.response")).unwrap()
}

fn provisioning_data() -> Value {
    json!({"backend":"aws","base_backend":null,"instance_type":{"name":"g5.xlarge","resources":{"cpus":4,
    "memory_mib":16384,"gpus":[{"name":"A10G","memory_mib":24576,"vendor":"nvidia"}],"spot":true,
    "disk":{"size_mib":102400},"cpu_arch":null,"description":""}},"instance_id":"i-1","hostname":"1.2.3.4",
    "internal_ip":null,"public_ip_enabled":true,"instance_network":null,"region":"us-east-1",
    "availability_zone":null,"reservation":null,"price":0.4567,"username":"ubuntu","ssh_port":22,
    "dockerized":true,"ssh_proxy":null,"backend_data":null,"gpu_driver":null})
}

/// The captured failed run `t1`, turned into a running one on an AWS spot instance.
fn running_run() -> Run {
    let mut run = fixture("logs.runs_get.response");
    run["status"] = json!("running");
    run["status_message"] = json!("running");
    let patch = |sub: &mut Value| {
        sub["status"] = json!("running");
        sub["status_message"] = json!("running");
        sub["job_provisioning_data"] = provisioning_data();
        sub["termination_reason"] = Value::Null;
        sub["termination_reason_message"] = Value::Null;
        sub["finished_at"] = Value::Null;
        sub["error"] = Value::Null;
    };
    patch(run["jobs"][0]["job_submissions"].as_array_mut().unwrap().last_mut().unwrap());
    patch(&mut run["latest_job_submission"]);
    serde_json::from_value(run).unwrap()
}

fn check(actual: String, expected: &str) {
    let expected = expected.strip_prefix('\n').unwrap_or(expected).trim_end();
    assert_eq!(actual, expected, "\nactual:\n{actual}\nexpected:\n{expected}");
}

#[test]
fn runs_table_as_dstack_prints_the_captured_listing() {
    check(
        runs_table(&ps_runs(), false, now(), false),
        "
 NAME   BACKEND  GPU  PRICE  STATUS     SUBMITTED
 cron1           -    -      pending    4 mins ago
 d1              -    -      no fleets  4 mins ago
 s1              -    -      no fleets  4 mins ago
 t2              -    -      no fleets  4 mins ago
 t1              -    -      no fleets  4 mins ago",
    );
}

#[test]
fn verbose_runs_table_splits_services_by_deployment() {
    check(
        runs_table(&ps_runs(), true, now(), false),
        "
 NAME              BACKEND  RESOURCES  INSTANCE TYPE  PRICE  STATUS       PROBES  SUBMITTED   ERROR
 cron1                      -                         -      pending              4 mins ago
 d1                         -                         -      no fleets            4 mins ago
 s1 deployment=0            -                         -      terminating          4 mins ago
     deployment=0           -                         -      no fleets            4 mins ago
 t2                         -                         -      no fleets            4 mins ago
 t1                         -                         -      no fleets            4 mins ago",
    );
}

#[test]
fn runs_table_shows_the_instance_of_a_provisioned_job() {
    check(
        runs_table(&[running_run()], false, now(), false),
        "
 NAME  BACKEND          GPU              PRICE           STATUS   SUBMITTED
 t1    aws (us-east-1)  gpu=A10G:24GB:1  $0.4567 (spot)  running  4 mins ago",
    );
    check(
        runs_table(&[running_run()], true, now(), false),
        "
 NAME  BACKEND          RESOURCES                                  INSTANCE TYPE  PRICE           STATUS   PROBES  SUBMITTED   ERROR
 t1    aws (us-east-1)  cpu=4 mem=16GB disk=100GB gpu=A10G:24GB:1  g5.xlarge      $0.4567 (spot)  running          4 mins ago",
    );
}

#[test]
fn status_colours_only_when_asked() {
    let plain = runs_table(&[running_run()], false, now(), false);
    assert!(!plain.contains('\u{1b}'));
    let coloured = runs_table(&[running_run()], false, now(), true);
    // sea_green3 (ANSI 78), bold, for a running run.
    assert!(coloured.contains("\u{1b}[38;5;78m"), "{coloured:?}");
    let stripped: Vec<_> =
        console::strip_ansi_codes(&coloured).lines().map(|l| l.trim_end().to_owned()).collect();
    assert_eq!(stripped.join("\n"), plain);
}

fn offers() -> Vec<InstanceOfferWithAvailability> {
    serde_json::from_value(json!([
        {"backend":"aws","instance":{"name":"g5.xlarge","resources":{"cpus":4,"memory_mib":16384,
        "gpus":[{"name":"A10G","memory_mib":24576,"vendor":"nvidia"}],"spot":true,"disk":{"size_mib":102400},
        "cpu_arch":null,"description":""}},"region":"us-east-1","price":0.4567,"backend_data":{},
        "availability":"available","availability_zones":null,"instance_runtime":"shim","blocks":1,"total_blocks":1},
        {"backend":"remote","instance":{"name":"ssh","resources":{"cpus":2,"memory_mib":8,"gpus":[],"spot":false,
        "disk":{"size_mib":102400},"cpu_arch":null,"description":""}},"region":"remote","price":0.0,
        "backend_data":{},"availability":"busy","availability_zones":null,"instance_runtime":"shim","blocks":1,
        "total_blocks":2}
    ]))
    .unwrap()
}

#[test]
fn offers_table_as_dstack_prints_it() {
    // dstack prints `$1.25max`; we put the space in.
    check(
        offers_table(&offers(), 5, Some(1.25), false),
        "
 #  BACKEND          RESOURCES                                         INSTANCE TYPE  PRICE
 1  aws (us-east-1)  cpu=4 mem=16GB disk=100GB gpu=A10G:24GB:1 (spot)  g5.xlarge      $0.4567
 2  ssh (remote)     cpu=2 mem=0GB disk=100GB                          ssh (1/2)      $0       busy
    ...
 Shown 2 of 5 offers, $1.25 max",
    );
    check(
        offers_table(&offers()[..1], 1, Some(0.4567), false),
        "
 #  BACKEND          RESOURCES                                         INSTANCE TYPE  PRICE
 1  aws (us-east-1)  cpu=4 mem=16GB disk=100GB gpu=A10G:24GB:1 (spot)  g5.xlarge      $0.4567",
    );
}

#[test]
fn plan_properties_of_the_captured_task_plan() {
    let plan: RunPlan = serde_json::from_value(fixture("task.runs_get_plan.response")).unwrap();
    check(
        plan_properties(&plan, false, false),
        "
 Project        main
 User           admin
 Configuration  task.yml
 Type           task (nodes=1)
 Resources      cpu=x86:2.. mem=8GB.. disk=100GB.. gpu=0
 Spot policy    on-demand
 Max price      off
 Retry policy   off
 Idle duration  5m
 Max duration   off",
    );
    check(
        plan_properties(&plan, true, false),
        "
 Project          main
 User             admin
 Configuration    task.yml
 Type             task (nodes=1)
 Resources        cpu=x86:2.. mem=8GB.. disk=100GB.. gpu=0
 Spot policy      on-demand
 Max price        off
 Retry policy     off
 Creation policy  reuse-or-create
 Idle duration    5m
 Max duration     off
 Reservation      no",
    );
}

#[test]
fn fleets_table_shows_fleets_and_instances() {
    let fleet: Fleet = serde_json::from_value(json!({"id":"b9769d0a-7d8e-4b8e-9a55-0d7c2f1c3a10","name":"sshf",
    "project_name":"main","spec":{"configuration":{"type":"fleet","name":"sshf","ssh_config":{"user":"ubuntu",
    "hosts":["127.0.0.1","127.0.0.2"]}},"configuration_path":"fleet.yml","profile":{"name":"default","default":false},
    "autocreated":false},"created_at":"2026-11-24T12:10:00Z","status":"active","status_message":null,
    "instances":[{"id":"eda286bb-1111-4222-8333-444455556666","project_name":"main","backend":"remote",
    "instance_type":{"name":"ssh","resources":{"cpus":2,"memory_mib":8,"gpus":[],"spot":false}},"name":"sshf-0",
    "fleet_id":"b9769d0a-7d8e-4b8e-9a55-0d7c2f1c3a10","fleet_name":"sshf","instance_num":0,"hostname":"127.0.0.1",
    "status":"idle","created":"2026-11-24T12:19:30Z","region":"remote","price":0.0,"total_blocks":1}]}))
    .unwrap();
    check(
        fleets_table(&[fleet], "main", now(), false, false),
        "
 NAME           NODES  GPU  SPOT  BACKEND       PRICE  STATUS  CREATED
 sshf           2                 ssh                  active  10 mins ago
    instance=0         -          ssh (remote)         idle    30 sec ago",
    );
}

#[test]
fn small_formats_match_dstack() {
    assert_eq!(pretty_date(now(), "2026-11-24T12:19:55Z".parse().unwrap()), "now");
    assert_eq!(pretty_date(now(), "2026-11-23T12:00:00Z".parse().unwrap()), "yesterday");
    assert_eq!(pretty_date(now(), "2026-11-01T12:00:00Z".parse().unwrap()), "3 weeks ago");
    assert_eq!(pretty_date(now(), "2026-12-01T12:00:00Z".parse().unwrap()), "");
    assert_eq!(format_price(2.5), "$2.5");
    assert_eq!(format_price(0.0), "$0");
    assert_eq!(format_mib_as_gb(1536), "1.5GB");
    assert_eq!(format_pretty_duration(86_400), "1d");
    assert_eq!(format_pretty_duration(90), "90s");
    let p = ImagePullProgress {
        downloaded_bytes: 300 << 20,
        extracted_bytes: 100 << 20,
        total_bytes: 500 << 20,
        is_total_bytes_final: false,
    };
    assert_eq!(format_pull_progress(&p), "100/300/≥500MB");
}

#[test]
fn finished_messages_say_why() {
    let runs = ps_runs();
    let t1 = runs.iter().find(|r| r.run_spec.run_name.as_deref() == Some("t1")).unwrap();
    let (lines, ok) = finished_message(t1);
    assert!(!ok);
    assert_eq!(lines[0], "No fleets");
    let (lines, ok) = finished_message(&running_run());
    assert!(!ok);
    assert_eq!(lines, ["Running"]);
}
