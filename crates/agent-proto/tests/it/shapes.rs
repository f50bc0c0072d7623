use dstack_agent_proto::runner::{JobState, LogEvent, PullResponse, SubmitBody};
use dstack_agent_proto::shim::{
    InstanceHealthResponse, InstanceInfo, PortMapping, TaskConfig, TaskInfoResponse, TaskListResponse,
    TaskStatus, TerminateBody,
};
use serde_json::{Value, json};

fn roundtrip<T: serde::Serialize + serde::de::DeserializeOwned>(value: &Value) -> T {
    let typed: T = serde_json::from_value(value.clone()).expect("decodes");
    assert_eq!(&serde_json::to_value(&typed).expect("encodes"), value);
    typed
}

#[test]
fn task_info_keeps_the_gpus_ids_quirk() {
    let info: TaskInfoResponse = roundtrip(&json!({
        "id":"6c0f","status":"pulling","termination_reason":"","termination_message":"",
        "ports":[{"host":32770,"container":10999},{"host":32771,"container":10022}],
        "image_pull_progress":{"downloaded_bytes":1,"extracted_bytes":0,"total_bytes":9,"is_total_bytes_final":false},
        "container_name":"myrun-0-0-1a2b3c4d","container_id":"abc","gpus_ids":["GPU-1"]
    }));
    assert_eq!(info.status, TaskStatus::Pulling);
    assert_eq!(info.host_port(10999), Some(32770));
    let pending: TaskInfoResponse = roundtrip(&json!({
        "id":"x","status":"terminated","termination_reason":"done_by_runner","termination_message":"",
        "ports":null,"image_pull_progress":null,"container_name":"","container_id":"","gpus_ids":[]
    }));
    assert_eq!(pending.host_port(10999), None);
}

#[test]
fn task_config_from_the_server() {
    let config: TaskConfig = serde_json::from_value(json!({
        "id":"j","name":"r-0-0","registry_username":"","registry_password":"",
        "image_name":"dstackai/base:0.10-base-ubuntu22.04","container_user":"root","privileged":false,
        "gpu":-1,"cpu":0,"memory":0,"shm_size":0,"network_mode":"host",
        "volumes":[{"backend":"aws","name":"vol","volume_id":"vol-1","init_fs":true,"device_name":"/dev/sdf"}],
        "volume_mounts":[{"name":"vol","path":"/data"}],
        "instance_mounts":[{"instance_path":"/mnt/cache","path":"/cache","optional":false}],
        "gpu_devices":[{"path_on_host":"/dev/nvidia0","path_in_container":"/dev/nvidia0"}],
        "host_ssh_user":"ubuntu","host_ssh_keys":["ssh-ed25519 k user"],
        "container_ssh_keys":["ssh-rsa k project"],"some_future_field":1
    }))
    .expect("decodes");
    assert_eq!(config.gpu, -1);
    assert_eq!(config.volumes[0].device_name.as_deref(), Some("/dev/sdf"));
    // What the shim defaults when the server leaves fields out.
    let minimal: TaskConfig = serde_json::from_value(json!({"id":"j","name":"n"})).expect("decodes");
    assert_eq!((minimal.container_user.as_str(), minimal.network_mode.as_str()), ("root", "host"));
}

#[test]
fn task_list_terminate_and_instance_shapes() {
    let list: TaskListResponse = roundtrip(&json!({"tasks":[{"id":"a","status":"running"}]}));
    assert_eq!(list.tasks[0].status, TaskStatus::Running);
    let _: TerminateBody =
        roundtrip(&json!({"termination_reason":"terminated_by_user","termination_message":"","timeout":0}));
    let _: InstanceHealthResponse = roundtrip(&json!({"dcgm": null}));
    let _: InstanceHealthResponse = roundtrip(&json!({"dcgm":{"overall_health":10,"incidents":[
        {"system":1,"health":10,"error_message":"m","error_code":3,"entity_group_id":1,"entity_id":0}]}}));
    let _: InstanceInfo = roundtrip(&json!({"gpu_vendor":"nvidia","gpu_driver_version":"570.86.15"}));
    let _: InstanceInfo = roundtrip(&json!({}));
    let _: PortMapping = roundtrip(&json!({"host":1,"container":10999}));
}

#[test]
fn pull_response_has_base64_messages() {
    let pull: PullResponse = roundtrip(&json!({
        "job_states":[{"state":"running","timestamp":1755780000001_i64,"termination_reason":"","termination_message":"","exit_status":null},
                      {"state":"failed","timestamp":1755780042000_i64,"termination_reason":"","termination_message":"","exit_status":2}],
        "job_logs":[{"message":"aGVsbG8K","timestamp":1755780000002_i64}],
        "runner_logs":[],
        "last_updated":1755780042000_i64,"no_connections_secs":37,"has_more":true
    }));
    assert_eq!(pull.job_logs[0].message, b"hello\n");
    assert_eq!(pull.job_states[1].state, JobState::Failed);
    assert_eq!(pull.job_states[1].exit_status, Some(2));
    // Go writes a nil []byte as null.
    let empty: LogEvent = serde_json::from_value(json!({"message":null,"timestamp":1})).expect("decodes");
    assert!(empty.message.is_empty());
}

#[test]
fn submit_body_of_the_spec() {
    let text = include_str!("../fixtures/submit_body.json");
    let body: SubmitBody = serde_json::from_str(text).expect("decodes");
    assert_eq!(body.job_spec.commands, ["/bin/bash", "-i", "-c", "cmd1 && cmd2"]);
    assert_eq!(body.cluster_info.gpus_per_node, [8, 8]);
    assert_eq!(body.log_quota_hour, Some(52_428_800));
    let again: SubmitBody =
        serde_json::from_value(serde_json::to_value(&body).expect("encodes")).expect("decodes again");
    assert_eq!(again, body);
}

#[test]
fn host_info_is_the_spec_example() {
    let info: dstack_agent_proto::shim::HostInfo = roundtrip(&json!({
        "gpu_vendor":"nvidia","gpu_name":"NVIDIA H100 80GB HBM3","gpu_memory":81559,"gpu_count":8,
        "addresses":["10.0.0.5/24","fe80::1/64"],"disk_size":483183820800u64,"cpus":96,"memory":2163720945664u64
    }));
    assert_eq!(info.gpu_count, 8);
}
