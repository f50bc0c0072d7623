//! Whether an applied run spec updates an active run in place: dstack's
//! `check_can_update_run_spec` (`server/services/runs/spec.py`).
//!
//! Both specs are compared field by field as dstack's `diff_models` compares pydantic models:
//! the top-level fields of the run spec, then the fields of the configuration. An absent field
//! and `null` are the same (pydantic fills `None`). A run may change its configuration path,
//! its configuration's `priority` and a few fields per type; a service may change what a
//! rolling deployment can roll out (its code, image, commands, env, resources, probes, …) and,
//! in place, its replicas and scaling. Anything else is refused with dstack's message, which
//! the server turns into "Cannot override active run. Stop the run first.".

use dstack_api::runs::RunSpec;
use serde_json::{Map, Value};

/// Run spec fields any run may change.
const UPDATABLE_SPEC_FIELDS: &[&str] = &["configuration_path", "configuration"];

/// Run spec fields a service may change too (a rolling deployment rolls them out).
const SERVICE_UPDATABLE_SPEC_FIELDS: &[&str] =
    &["repo_data", "repo_code_hash", "file_archives", "working_dir"];

/// Configuration fields any run may change.
const CONF_UPDATABLE_FIELDS: &[&str] = &["priority"];

/// Configuration fields of a dev environment that change in place.
const DEV_ENVIRONMENT_CONF_UPDATABLE_FIELDS: &[&str] = &["inactivity_duration"];

/// Configuration fields of a service that change in place (the first four) or by a rolling
/// deployment (the rest); dstack keeps this list with its docs' "Rolling deployment" section.
pub const SERVICE_CONF_UPDATABLE_FIELDS: &[&str] = &[
    "replicas",
    "groups",
    "scaling",
    "gateway",
    "port",
    "probes",
    "resources",
    "volumes",
    "docker",
    "files",
    "image",
    "user",
    "privileged",
    "entrypoint",
    "working_dir",
    "python",
    "nvcc",
    "single_branch",
    "env",
    "shell",
    "commands",
];

/// What an in-place update changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecChanges {
    /// The changed top-level fields of the run spec, in the spec's field order.
    pub fields: Vec<String>,
    /// The changed fields of the configuration.
    pub configuration: Vec<String>,
}

impl SpecChanges {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// dstack's `check_can_update_run_spec`: the changes if `new` can update the run that has
/// `current` in place, else dstack's message saying which fields cannot change.
pub fn check_can_update_run_spec(current: &RunSpec, new: &RunSpec) -> Result<SpecChanges, String> {
    let (old_v, new_v) = (to_value(current), to_value(new));
    let fields = changed_keys(&old_v, &new_v);
    let conf_type = type_of(&new_v["configuration"]);
    let mut updatable: Vec<&str> = UPDATABLE_SPEC_FIELDS.to_vec();
    if conf_type == "service" {
        updatable.extend(SERVICE_UPDATABLE_SPEC_FIELDS);
    }
    if fields.iter().any(|f| !updatable.contains(&f.as_str())) {
        return Err(format!(
            "Failed to update fields {}. Can only update {}.",
            py_list(&fields),
            py_list(&updatable)
        ));
    }
    // A different order of the same archives unpacks differently: `files` then counts.
    let ignore_files = old_v["file_archives"] == new_v["file_archives"];
    let configuration =
        check_can_update_configuration(&old_v["configuration"], &new_v["configuration"], ignore_files)?;
    Ok(SpecChanges { fields, configuration })
}

/// dstack's `can_update_run_spec`.
pub fn can_update_run_spec(current: &RunSpec, new: &RunSpec) -> bool {
    check_can_update_run_spec(current, new).is_ok()
}

fn check_can_update_configuration(
    old: &Value,
    new: &Value,
    ignore_files: bool,
) -> Result<Vec<String>, String> {
    let (old_type, new_type) = (type_of(old), type_of(new));
    if old_type != new_type {
        return Err(format!("Configuration type changed from {old_type} to {new_type}, cannot update"));
    }
    let mut updatable: Vec<&str> = CONF_UPDATABLE_FIELDS.to_vec();
    match new_type {
        "dev-environment" => updatable.extend(DEV_ENVIRONMENT_CONF_UPDATABLE_FIELDS),
        "service" => updatable.extend(SERVICE_CONF_UPDATABLE_FIELDS),
        _ => {}
    }
    if ignore_files {
        updatable.push("files");
    }
    // `https: true` (the default) and no `https` are the same.
    let https_default = |v: &Value| v.is_null() || *v == Value::Bool(true);
    if new_type == "service" && https_default(&old["https"]) && https_default(&new["https"]) {
        updatable.push("https");
    }
    // Other types may only widen `resources.cpu.arch` to any architecture, which a job that
    // runs already satisfies.
    if !updatable.contains(&"resources") && compatible_resources(&old["resources"], &new["resources"]) {
        updatable.push("resources");
    }
    let changed = changed_keys(old, new);
    if changed.iter().any(|f| !updatable.contains(&f.as_str())) {
        return Err(format!(
            "Failed to update fields {}. Can only update {}",
            py_list(&changed),
            py_list(&updatable)
        ));
    }
    Ok(changed)
}

/// dstack's `_is_compatible_resources_update`: equal, or only `cpu.arch` changed to unset.
fn compatible_resources(old: &Value, new: &Value) -> bool {
    let changed = changed_keys(old, new);
    if changed.is_empty() {
        return true;
    }
    if changed != ["cpu"] {
        return false;
    }
    changed_keys(&old["cpu"], &new["cpu"]) == ["arch"] && new["cpu"]["arch"].is_null()
}

fn to_value(spec: &RunSpec) -> Value {
    serde_json::to_value(spec).unwrap_or(Value::Null)
}

fn type_of(conf: &Value) -> &str {
    conf["type"].as_str().unwrap_or("")
}

/// The keys of two JSON objects whose values differ: `old`'s order, then the keys only `new`
/// has (an absent key and `null` are the same, as pydantic's `None` default).
pub fn changed_keys(old: &Value, new: &Value) -> Vec<String> {
    let empty = Map::new();
    let (old, new) = (old.as_object().unwrap_or(&empty), new.as_object().unwrap_or(&empty));
    let get = |map: &Map<String, Value>, k: &str| map.get(k).cloned().unwrap_or(Value::Null);
    let mut keys: Vec<&String> = old.keys().collect();
    keys.extend(new.keys().filter(|k| !old.contains_key(*k)));
    keys.into_iter().filter(|k| get(old, k) != get(new, k)).cloned().collect()
}

/// A list of strings as Python prints it: `['a', 'b']`.
fn py_list<S: AsRef<str>>(items: &[S]) -> String {
    let inner: Vec<String> = items.iter().map(|s| format!("'{}'", s.as_ref())).collect();
    format!("[{}]", inner.join(", "))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(conf: Value) -> RunSpec {
        serde_json::from_value(json!({
            "run_name": "r",
            "repo_id": "none",
            "repo_data": {"repo_type": "virtual"},
            "configuration": conf,
            "ssh_key_pub": "ssh-rsa AAAA",
        }))
        .expect("a run spec")
    }

    fn service(extra: Value) -> RunSpec {
        let mut conf = json!({"type": "service", "port": 8000, "commands": ["serve"]});
        for (k, v) in extra.as_object().expect("an object") {
            conf[k] = v.clone();
        }
        spec(conf)
    }

    fn task(extra: Value) -> RunSpec {
        let mut conf = json!({"type": "task", "commands": ["run"]});
        for (k, v) in extra.as_object().expect("an object") {
            conf[k] = v.clone();
        }
        spec(conf)
    }

    #[test]
    fn service_changes_that_update_in_place_or_roll() {
        let base = service(json!({}));
        for (extra, changed) in [
            (json!({}), vec![]),
            (json!({"env": {"VERSION": "2"}}), vec!["env"]),
            (json!({"commands": ["serve --v2"]}), vec!["commands"]),
            (json!({"replicas": 2}), vec!["replicas"]),
            (json!({"image": "nginx", "port": 80}), vec!["port", "image"]),
            (json!({"probes": [{"type": "http", "url": "/health"}]}), vec!["probes"]),
            (json!({"priority": 5}), vec!["priority"]),
            (json!({"https": true}), vec!["https"]),
        ] {
            let new = service(extra.clone());
            let changes = check_can_update_run_spec(&base, &new).unwrap_or_else(|e| panic!("{extra}: {e}"));
            let mut got = changes.configuration.clone();
            got.sort();
            let mut want: Vec<String> = changed.iter().map(|s| s.to_string()).collect();
            want.sort();
            assert_eq!(got, want, "{extra}");
            assert_eq!(changes.is_empty(), want.is_empty(), "{extra}");
        }
    }

    #[test]
    fn service_changes_that_need_a_new_run() {
        let base = service(json!({}));
        for (extra, message) in [
            (
                json!({"https": false}),
                "Failed to update fields ['https']. Can only update ['priority', 'replicas', 'groups', 'scaling', \
                 'gateway', 'port', 'probes', 'resources', 'volumes', 'docker', 'files', 'image', 'user', \
                 'privileged', 'entrypoint', 'working_dir', 'python', 'nvcc', 'single_branch', 'env', 'shell', \
                 'commands', 'files']",
            ),
            (json!({"auth": false}), "Failed to update fields ['auth']."),
            (json!({"model": "m"}), "Failed to update fields ['model']."),
        ] {
            let err = check_can_update_run_spec(&base, &service(extra.clone())).expect_err("refused");
            assert!(err.starts_with(message), "{extra}: {err}");
            assert!(!can_update_run_spec(&base, &service(extra)));
        }
    }

    #[test]
    fn the_type_and_top_level_fields() {
        let err = check_can_update_run_spec(&service(json!({})), &task(json!({}))).expect_err("refused");
        assert_eq!(err, "Configuration type changed from service to task, cannot update");
        let mut other_key = service(json!({}));
        other_key.ssh_key_pub = Some("ssh-rsa BBBB".to_owned());
        let err = check_can_update_run_spec(&service(json!({})), &other_key).expect_err("refused");
        assert_eq!(
            err,
            "Failed to update fields ['ssh_key_pub']. Can only update ['configuration_path', 'configuration', \
             'repo_data', 'repo_code_hash', 'file_archives', 'working_dir']."
        );
        // A task may not change its code.
        let mut hashed = task(json!({}));
        hashed.repo_code_hash = Some("abc".to_owned());
        let err = check_can_update_run_spec(&task(json!({})), &hashed).expect_err("refused");
        assert_eq!(
            err,
            "Failed to update fields ['repo_code_hash']. Can only update ['configuration_path', 'configuration']."
        );
        // A service may.
        let mut hashed = service(json!({}));
        hashed.repo_code_hash = Some("abc".to_owned());
        let changes = check_can_update_run_spec(&service(json!({})), &hashed).expect("updatable");
        assert_eq!(changes.fields, ["repo_code_hash"]);
        assert!(changes.configuration.is_empty());
    }

    #[test]
    fn tasks_and_dev_environments_change_little() {
        assert!(can_update_run_spec(&task(json!({})), &task(json!({"priority": 3}))));
        let err =
            check_can_update_run_spec(&task(json!({})), &task(json!({"env": {"A": "1"}}))).expect_err("no");
        assert_eq!(
            err,
            "Failed to update fields ['env']. Can only update ['priority', 'files', 'resources']"
        );
        let dev = |extra: Value| {
            let mut conf = json!({"type": "dev-environment", "ide": "vscode"});
            for (k, v) in extra.as_object().expect("an object") {
                conf[k] = v.clone();
            }
            spec(conf)
        };
        assert!(can_update_run_spec(&dev(json!({})), &dev(json!({"inactivity_duration": 600}))));
        assert!(!can_update_run_spec(&dev(json!({})), &dev(json!({"ide": "cursor"}))));
    }

    #[test]
    fn resources_widening_the_cpu_arch_is_compatible() {
        let old = json!({"cpu": {"arch": "x86", "count": {"min": 2}}, "memory": {"min": 8.0}});
        let wider = json!({"cpu": {"arch": null, "count": {"min": 2}}, "memory": {"min": 8.0}});
        let narrower = json!({"cpu": {"arch": "arm", "count": {"min": 2}}, "memory": {"min": 8.0}});
        assert!(compatible_resources(&old, &old));
        assert!(compatible_resources(&old, &wider));
        assert!(!compatible_resources(&old, &narrower));
        assert!(!compatible_resources(&old, &json!({"cpu": {"arch": null, "count": {"min": 4}}})));
    }
}
