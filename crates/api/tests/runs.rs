//! Round trip of the run bodies captured from the real dstack 0.22.5 server
//! (`tests/api_fixtures/capture.py` writes `tests/fixtures/<step>.<route>.<request|response>.json`).
//!
//! Every response must deserialize and serialize back to the same JSON (key order aside), and
//! every request must come back exactly as dstack's client sent it
//! (`to_client_json` for the plan requests). With `DSTACK_CHECK_PY=/path/to/python` (a venv
//! with dstack 0.22.5), our serializations are also validated by dstack's own pydantic models.

use std::path::{Path, PathBuf};

use dstack_api::runs::{
    ApplyRunPlanRequest, DeleteRunsRequest, GetRunPlanRequest, GetRunRequest, JobSubmission,
    JobSubmissionLogs, ListRunsRequest, PollLogsRequest, Run, RunPlan, StopRunsRequest,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

fn load(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn parse<T: DeserializeOwned>(path: &Path, json: &Value) -> T {
    serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn round_trip<T: DeserializeOwned + Serialize>(path: &Path, json: &Value) -> Value {
    serde_json::to_value(parse::<T>(path, json)).unwrap()
}

/// The first difference between two JSON values, as a JSON pointer and both sides.
fn diff(a: &Value, b: &Value, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for key in x.keys().chain(y.keys()) {
                let here = format!("{at}/{key}");
                match (x.get(key), y.get(key)) {
                    (Some(p), Some(q)) => {
                        if let Some(d) = diff(p, q, &here) {
                            return Some(d);
                        }
                    }
                    (p, q) => return Some(format!("{here}: {p:?} != {q:?}")),
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (p, q))| diff(p, q, &format!("{at}/{i}")))
        }
        _ if a == b => None,
        _ => Some(format!("{at}: {a} != {b}")),
    }
}

/// What our types make of one fixture, and the kind of body it is.
fn ours(path: &Path, json: &Value) -> (Value, &'static str) {
    let name = path.file_name().unwrap().to_str().unwrap();
    let (route, part) = {
        let mut it = name.rsplitn(3, '.').skip(1);
        let part = it.next().unwrap();
        let route = it.next().unwrap().rsplit('.').next().unwrap();
        (route, part)
    };
    match (route, part) {
        ("runs_get_plan", "request") => {
            (parse::<GetRunPlanRequest>(path, json).to_client_json(), "GetRunPlanRequest")
        }
        ("runs_get_plan", "response") => (round_trip::<RunPlan>(path, json), "RunPlan"),
        ("runs_apply", "request") => {
            (parse::<ApplyRunPlanRequest>(path, json).to_client_json(), "ApplyRunPlanRequest")
        }
        ("runs_apply" | "runs_get", "response") => (round_trip::<Run>(path, json), "Run"),
        ("runs_get", "request") => (round_trip::<GetRunRequest>(path, json), "GetRunRequest"),
        ("runs_list", "request") => (round_trip::<ListRunsRequest>(path, json), "ListRunsRequest"),
        ("runs_list", "response") => (round_trip::<Vec<Run>>(path, json), "list[Run]"),
        ("runs_stop", "request") => (round_trip::<StopRunsRequest>(path, json), "StopRunsRequest"),
        ("runs_delete", "request") => (round_trip::<DeleteRunsRequest>(path, json), "DeleteRunsRequest"),
        ("runs_stop" | "runs_delete", "response") => (round_trip::<()>(path, json), "None"),
        ("logs_poll", "request") => (round_trip::<PollLogsRequest>(path, json), "PollLogsRequest"),
        ("logs_poll", "response") => (round_trip::<JobSubmissionLogs>(path, json), "JobSubmissionLogs"),
        _ => panic!("{name}: no type for route {route:?} {part:?}"),
    }
}

#[test]
fn captured_bodies_round_trip_exactly() {
    let files = fixtures();
    assert!(files.len() >= 30, "expected the captured fixtures, found {}", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let json = load(path);
        let (ours, _) = ours(path, &json);
        if let Some(d) = diff(&json, &ours, "") {
            failures.push(format!("{}: {d}", path.file_name().unwrap().to_string_lossy()));
        }
    }
    assert!(failures.is_empty(), "round trip changed the JSON:\n{}", failures.join("\n"));
}

#[test]
fn covers_every_route_and_configuration_type() {
    let names: Vec<String> =
        fixtures().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for route in
        ["runs_get_plan", "runs_apply", "runs_list", "runs_get", "runs_stop", "runs_delete", "logs_poll"]
    {
        assert!(names.iter().any(|n| n.contains(route)), "no fixture for {route}");
    }
    let mut kinds: Vec<&'static str> = fixtures()
        .iter()
        .filter(|p| p.to_string_lossy().ends_with("runs_apply.response.json"))
        .map(|p| parse::<Run>(p, &load(p)).run_spec.configuration.type_name())
        .collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(kinds, ["dev-environment", "service", "task"]);
    // The re-apply sends the old run back inside the request.
    let path = fixtures().into_iter().find(|p| p.ends_with("reapply.runs_apply.request.json")).unwrap();
    assert!(parse::<ApplyRunPlanRequest>(&path, &load(&path)).plan.current_resource.is_some());
}

/// The running-job example from api.md §3.4 (SSH fleet host), which no offline capture reaches.
fn running_submission() -> Value {
    json!({
        "id": "276451cd-0b6f-4b52-8a4c-2b1d1a4c7e01", "submission_num": 0, "deployment_num": 0,
        "submitted_at": "2026-11-23T08:24:50.915536Z", "last_processed_at": "2026-11-23T08:25:00Z",
        "finished_at": null, "inactivity_secs": null, "status": "running", "status_message": "running",
        "termination_reason": null, "termination_reason_message": null, "exit_status": null,
        "job_provisioning_data": {"backend":"remote","base_backend":null,"instance_type":{"name":"ssh","resources":{"cpus":16,
          "memory_mib":65536,"gpus":[{"name":"A100","memory_mib":81920,"vendor":"nvidia"}],"spot":false,"disk":{"size_mib":512000},
          "cpu_arch":"x86","description":""}},"instance_id":"instance_id","hostname":"10.0.0.5","internal_ip":"10.0.0.5",
          "public_ip_enabled":true,"instance_network":null,"region":"remote","availability_zone":null,"reservation":null,
          "price":0.0,"username":"ubuntu","ssh_port":22,"dockerized":true,"ssh_proxy":null,"backend_data":null,
          "gpu_driver":{"vendor":"nvidia","version":"570.124.06"}},
        "job_runtime_data": {"network_mode":"bridge","gpu":1,"cpu":4.0,"memory":16.0,"ports":{"10022":32768},"volume_names":[],
          "offer":{"backend":"remote","instance":{"name":"ssh","resources":{"cpus":2,"memory_mib":8,"gpus":[],"spot":false,
            "disk":{"size_mib":102400},"cpu_arch":null,"description":""}},"region":"remote","price":0.0,"backend_data":{},
            "availability":"busy","availability_zones":null,"instance_runtime":"shim","blocks":1,"total_blocks":1},
          "working_dir":"/workflow","username":"root"},
        "error": null, "probes": [{"success_streak": 2}],
        "image_pull_progress": {"downloaded_bytes": 1, "extracted_bytes": 1, "total_bytes": 2, "is_total_bytes_final": false}
    })
}

#[test]
fn running_submission_round_trips() {
    let json = running_submission();
    let ours = round_trip::<JobSubmission>(Path::new("running_submission"), &json);
    assert_eq!(diff(&json, &ours, ""), None);
}

/// With `DSTACK_CHECK_PY` set, dstack's pydantic models validate what we serialize: every
/// fixture after our round trip, and a running run built from the example submission.
#[test]
fn real_models_accept_our_json() {
    let Some(python) = std::env::var_os("DSTACK_CHECK_PY") else {
        eprintln!("skipped: set DSTACK_CHECK_PY to a python with dstack 0.22.5");
        return;
    };
    let dir = std::env::temp_dir().join(format!("dstack-api-runs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cases = Vec::new();
    let mut running = None;
    for (i, path) in fixtures().iter().enumerate() {
        let (value, model) = ours(path, &load(path));
        if model == "Run" && running.is_none() {
            let mut run: Run = serde_json::from_value(value.clone()).unwrap();
            if let Some(job) = run.jobs.first_mut() {
                job.job_submissions = vec![serde_json::from_value(running_submission()).unwrap()];
                run.latest_job_submission = job.job_submissions.last().cloned();
                running = Some(serde_json::to_value(&run).unwrap());
            }
        }
        let file = dir.join(format!("{i}.json"));
        std::fs::write(&file, serde_json::to_string(&value).unwrap()).unwrap();
        cases
            .push(json!({"model": model, "file": file, "name": path.file_name().unwrap().to_string_lossy()}));
    }
    let file = dir.join("running.json");
    std::fs::write(&file, serde_json::to_string(&running.expect("a Run fixture with jobs")).unwrap())
        .unwrap();
    cases.push(json!({"model": "Run", "file": file, "name": "running (api.md example submission)"}));
    let manifest = dir.join("cases.json");
    std::fs::write(&manifest, serde_json::to_string(&cases).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/api_fixtures/check_models.py");
    let out = std::process::Command::new(python).arg(&script).arg(&manifest).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "dstack's models refused our JSON:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
