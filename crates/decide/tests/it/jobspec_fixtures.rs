//! Every `runs/get_plan` captured from dstack 0.22.5: the effective run spec and the job specs
//! we compute from the request's run spec equal the server's, field for field.

use std::path::{Path, PathBuf};

use dstack_api::runs::RunSpec;
use dstack_decide::jobspec::{ImageConfigs, effective_run_spec, plan_job_specs};
use serde_json::Value;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/tests/fixtures")
}

fn read(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The first difference between two JSON values, as `path: ours != theirs`.
pub(crate) fn first_difference(path: &str, ours: &Value, theirs: &Value) -> Option<String> {
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            for key in a.keys().chain(b.keys()) {
                let (x, y) = (a.get(key).unwrap_or(&Value::Null), b.get(key).unwrap_or(&Value::Null));
                if a.contains_key(key) != b.contains_key(key) {
                    return Some(format!("{path}.{key}: present in only one ({x} vs {y})"));
                }
                if let Some(d) = first_difference(&format!("{path}.{key}"), x, y) {
                    return Some(d);
                }
            }
            None
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| first_difference(&format!("{path}[{i}]"), x, y)),
        _ if ours == theirs => None,
        _ => Some(format!("{path}: ours {ours} != dstack's {theirs}")),
    }
}

#[test]
fn get_plan_fixtures_are_rebuilt_exactly() {
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(fixtures_dir()).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for response_path in entries {
        let name = response_path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(case) = name.strip_suffix(".runs_get_plan.response.json") else { continue };
        let request = read(&fixtures_dir().join(format!("{case}.runs_get_plan.request.json")));
        let response = read(&response_path);
        let run_spec: RunSpec = serde_json::from_value(request["run_spec"].clone()).unwrap();
        let key = response["effective_run_spec"]["ssh_key_pub"].as_str();
        let effective = effective_run_spec(&run_spec, key, false).unwrap();
        let ours = serde_json::to_value(&effective).unwrap();
        if let Some(d) = first_difference("effective_run_spec", &ours, &response["effective_run_spec"]) {
            failures.push(format!("{case}: {d}"));
        }
        let jobs = plan_job_specs(&effective, &ImageConfigs::new()).unwrap();
        let ours = Value::Array(jobs.iter().map(|j| serde_json::to_value(j).unwrap()).collect());
        let theirs: Vec<Value> =
            response["job_plans"].as_array().unwrap().iter().map(|p| p["job_spec"].clone()).collect();
        if let Some(d) = first_difference("job_specs", &ours, &Value::Array(theirs)) {
            failures.push(format!("{case}: {d}"));
        }
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} get_plan fixtures found");
    assert!(failures.is_empty(), "{} of {checked} fixtures differ:\n{}", failures.len(), failures.join("\n"));
}

/// A service starts `replicas.min` replicas of each group, numbered across groups; a scheduled
/// one starts none; a task starts replica 0.
#[test]
fn services_are_submitted_with_their_minimum_replicas() {
    let spec = |configuration: Value| -> RunSpec {
        let raw: RunSpec =
            serde_json::from_value(serde_json::json!({"run_name": "svc", "configuration": configuration}))
                .unwrap();
        effective_run_spec(&raw, Some("ssh-ed25519 AAAA k"), false).unwrap()
    };
    let images: ImageConfigs =
        [("img".to_owned(), dstack_decide::jobspec::ImageConfig::default())].into_iter().collect();
    let groups = spec(serde_json::json!({
        "type": "service", "port": 8000, "image": "img",
        "groups": [
            {"name": "a", "replicas": 2, "commands": ["serve a"]},
            {"name": "b", "replicas": {"min": 1, "max": 3}, "commands": ["serve b"],
             "scaling": {"metric": "rps", "target": 10}},
            {"name": "c", "replicas": {"min": 0, "max": 2}, "commands": ["serve c"],
             "scaling": {"metric": "rps", "target": 10}}
        ]
    }));
    let jobs = dstack_decide::jobspec::submission_job_specs(&groups, &images).unwrap();
    let got: Vec<(i64, &str, &str)> =
        jobs.iter().map(|j| (j.replica_num, j.replica_group.as_str(), j.job_name.as_str())).collect();
    assert_eq!(got, [(0, "a", "svc-0-0"), (1, "a", "svc-0-1"), (2, "b", "svc-0-2")]);
    assert!(jobs.iter().all(|j| j.service_port == Some(8000)));

    let scheduled = spec(serde_json::json!({
        "type": "service", "port": 8000, "image": "img", "commands": ["serve"], "replicas": 2,
        "schedule": {"cron": "0 * * * *"}
    }));
    assert!(dstack_decide::jobspec::submission_job_specs(&scheduled, &images).unwrap().is_empty());

    let task = spec(serde_json::json!({"type": "task", "commands": ["x"], "nodes": 1}));
    let jobs = dstack_decide::jobspec::submission_job_specs(&task, &images).unwrap();
    assert_eq!(jobs.iter().map(|j| j.replica_num).collect::<Vec<_>>(), [0]);
}
