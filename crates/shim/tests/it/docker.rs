//! Docker mode, only with `DSTACK_TEST_DOCKER=1` (needs a Docker engine and builds a local
//! image with `scripts/build-runner-test-image`).

use std::time::Duration;

use dstack_agent_proto::runner::SubmitBody;
use dstack_agent_proto::shim::{
    InstanceMountPoint, TaskConfig, TaskInfoResponse, TaskStatus, TerminateBody, VolumeMountPoint, reason,
};
use dstack_agent_proto::{RUNNER_HTTP_PORT, RunnerClient};
use serde_json::json;

use dstack_testkit::registry::TestRegistry;

use crate::{FakeHost, Shim, job_output, runner_binary};

fn docker_tests() -> bool {
    std::env::var("DSTACK_TEST_DOCKER").as_deref() == Ok("1")
}

fn build_test_image() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/build-runner-test-image");
    let status = std::process::Command::new(script).arg(runner_binary()).status().expect("script runs");
    assert!(status.success(), "building the test image");
}

#[tokio::test]
async fn a_docker_task_runs_the_runner_in_a_container() {
    if !docker_tests() {
        return;
    }
    build_test_image();
    let home = tempfile::tempdir().expect("home");
    let shim = Shim::start(home.path(), &[]);
    let config = TaskConfig {
        id: format!("docker-{}", std::process::id()),
        name: "docker-run-0-0".to_owned(),
        image_name: "dstack-rs-runner-test:1".to_owned(),
        ..TaskConfig::default()
    };
    shim.client.submit_task(&config).await.expect("submit");
    let info = shim.wait_status(&config.id, TaskStatus::Running, Duration::from_secs(60)).await;
    assert!(!info.container_id.is_empty());
    let port = info.host_port(RUNNER_HTTP_PORT).expect("runner port");
    let runner = dstack_agent_proto::RunnerClient::new(&format!("http://127.0.0.1:{port}"));
    let mut healthy = false;
    for _ in 0..100 {
        if runner.healthcheck().await.is_ok() {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "the runner in the container answers");
    runner.stop().await.expect("stop before run");
    runner.pull(0).await.expect("the final pull");
    let done = shim.wait_status(&config.id, TaskStatus::Terminated, Duration::from_secs(30)).await;
    assert_eq!(done.termination_reason, reason::DONE_BY_RUNNER, "{done:?}");
    shim.client.remove_task(&config.id).await.expect("remove");
}

/// Removes a pulled image when the test ends, however it ends.
struct RemoveImage(String);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}

#[tokio::test]
async fn a_missing_image_is_pulled_with_credentials_and_progress() {
    if !docker_tests() {
        return;
    }
    build_test_image();
    let registry = TestRegistry::serve("dstack-rs-runner-test:1", Some(("puller", "s3cret")));
    let image = format!("127.0.0.1:{}/team/pulled:{}", registry.addr.port(), std::process::id());
    let _cleanup = RemoveImage(image.clone());
    let home = tempfile::tempdir().expect("home");
    let shim = Shim::start(home.path(), &[]);

    // Wrong credentials: the task ends with the registry's refusal, nothing is left running.
    let refused = TaskConfig {
        id: format!("pull-refused-{}", std::process::id()),
        name: "pull-refused-0-0".to_owned(),
        image_name: image.clone(),
        registry_username: "puller".to_owned(),
        registry_password: "wrong".to_owned(),
        ..TaskConfig::default()
    };
    shim.client.submit_task(&refused).await.expect("submit");
    let info = shim.wait_status(&refused.id, TaskStatus::Terminated, Duration::from_secs(60)).await;
    assert_eq!(info.termination_reason, reason::CREATING_CONTAINER_ERROR, "{info:?}");
    assert!(info.termination_message.contains("failed pulling"), "{}", info.termination_message);
    assert!(!info.termination_message.contains("wrong"), "no password in messages");
    shim.client.remove_task(&refused.id).await.expect("remove");

    let config = TaskConfig {
        id: format!("pull-{}", std::process::id()),
        name: "pull-run-0-0".to_owned(),
        image_name: image.clone(),
        registry_username: "puller".to_owned(),
        registry_password: "s3cret".to_owned(),
        ..TaskConfig::default()
    };
    shim.client.submit_task(&config).await.expect("submit");
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let running = loop {
        let info = shim.client.get_task(&config.id).await.expect("task info");
        if let Some(p) = &info.image_pull_progress {
            seen.push(p.clone());
        }
        if info.status == TaskStatus::Running || info.status == TaskStatus::Terminated {
            break info;
        }
        assert!(std::time::Instant::now() < deadline, "still {:?} after 120 s", info.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(running.status, TaskStatus::Running, "{running:?}");
    let partial = seen.iter().find(|p| p.downloaded_bytes > 0 && p.downloaded_bytes < p.total_bytes);
    assert!(partial.is_some(), "a pull in progress was reported: {seen:?}");
    let last = seen.last().expect("progress reported");
    assert!(last.total_bytes > 0 && last.downloaded_bytes == last.total_bytes, "{last:?}");
    assert!(
        seen.windows(2).all(|w| w[1].downloaded_bytes >= w[0].downloaded_bytes),
        "progress only grows: {seen:?}"
    );
    let stop = TerminateBody {
        termination_reason: "terminated_by_server".to_owned(),
        termination_message: String::new(),
        timeout: 0,
    };
    shim.client.terminate_task(&config.id, &stop).await.expect("terminate");
    shim.wait_status(&config.id, TaskStatus::Terminated, Duration::from_secs(30)).await;
    shim.client.remove_task(&config.id).await.expect("remove");
}

/// `docker inspect` of a container, as JSON.
fn inspect(container: &str) -> serde_json::Value {
    let out =
        std::process::Command::new("docker").args(["inspect", container]).output().expect("docker runs");
    assert!(out.status.success(), "inspect {container}: {}", String::from_utf8_lossy(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect JSON");
    list[0].clone()
}

/// The containers (any state) labelled with this task id.
fn containers_of(task_id: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=ai.dstack.shim.task-id={task_id}")])
        .output()
        .expect("docker runs");
    String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned).collect()
}

/// Removes the task's containers when a test ends, however it ends.
struct RemoveContainers(Vec<String>);

impl Drop for RemoveContainers {
    fn drop(&mut self) {
        for id in &self.0 {
            for c in containers_of(id) {
                let _ = std::process::Command::new("docker").args(["rm", "-f", "-v", &c]).output();
            }
        }
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple())
}

fn job_body(script: &str, env: serde_json::Value, working_dir: &str) -> SubmitBody {
    serde_json::from_value(json!({
        "run": {"id": "5f0c3d52-8a4e-4d3c-9b1e-0f4f5a6b7c8d", "run_spec": {
            "run_name": "box", "configuration": {"type": "task", "commands": ["true"]}}},
        "job_spec": {"job_num": 0, "job_name": "box-0-0", "commands": ["/bin/sh", "-c", script],
            "env": env, "image_name": "dstack-rs-runner-test:1", "working_dir": working_dir,
            "requirements": {"resources": {}}},
        "job_submission": {"id": "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"}
    }))
    .expect("a valid submit body")
}

async fn runner_at(info: &TaskInfoResponse) -> RunnerClient {
    let port = info.host_port(RUNNER_HTTP_PORT).expect("runner port");
    let runner = RunnerClient::new(&format!("http://127.0.0.1:{port}"));
    for _ in 0..100 {
        if runner.healthcheck().await.is_ok() {
            return runner;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the runner at {port} does not answer: {info:?}");
}

#[tokio::test]
async fn a_container_is_made_as_the_task_says() {
    if !docker_tests() {
        return;
    }
    build_test_image();
    let home = tempfile::tempdir().expect("home");
    let instance = tempfile::tempdir().expect("instance dir");
    let cache = instance.path().join("cache/models");
    let shim = Shim::start_with_env(home.path(), &[], &[("http_proxy", "http://proxy.test:3128".to_owned())]);
    let config = TaskConfig {
        id: unique("made"),
        name: "made-0-0".to_owned(),
        image_name: "dstack-rs-runner-test:1".to_owned(),
        container_user: "root".to_owned(),
        cpu: 0.5,
        memory: 512 << 20,
        shm_size: 256 << 20,
        network_mode: "bridge".to_owned(),
        instance_mounts: vec![InstanceMountPoint {
            instance_path: cache.display().to_string(),
            path: "/cache".to_owned(),
            optional: false,
        }],
        container_ssh_keys: vec!["ssh-ed25519 AAAAC3Nza project".to_owned()],
        ..TaskConfig::default()
    };
    let _cleanup = RemoveContainers(vec![config.id.clone()]);
    shim.client.submit_task(&config).await.expect("submit");
    let info = shim.wait_status(&config.id, TaskStatus::Running, Duration::from_secs(60)).await;
    // The missing instance path was created, world-writable.
    let mode = std::fs::metadata(&cache).expect("created").permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o777);
    std::fs::write(cache.join("hello.txt"), "from the host\n").expect("write");

    let c = inspect(&info.container_id);
    let host = &c["HostConfig"];
    assert_eq!(c["Config"]["User"], "root");
    assert_eq!(c["Config"]["Labels"]["ai.dstack.shim.task-id"], config.id.as_str());
    assert_eq!(c["Config"]["Labels"]["ai.dstack.shim.is-task"], "true");
    let env: Vec<&str> =
        c["Config"]["Env"].as_array().expect("env").iter().filter_map(|v| v.as_str()).collect();
    assert!(env.contains(&"http_proxy=http://proxy.test:3128"), "{env:?}");
    assert_eq!(c["Config"]["Entrypoint"], json!(["/usr/local/bin/dstack-runner"]));
    let cmd = c["Config"]["Cmd"].to_string();
    assert!(cmd.contains(r#""--ssh-authorized-key","ssh-ed25519 AAAAC3Nza project""#), "{cmd}");
    assert!(c["Config"]["ExposedPorts"].get("10999/tcp").is_some());
    assert_eq!(host["NetworkMode"], "bridge");
    assert_eq!(host["NanoCpus"], 500_000_000);
    assert_eq!(host["Memory"], 512 << 20);
    assert_eq!(host["ShmSize"], 256 << 20);
    assert_eq!(host["Tmpfs"]["/dev/shm"], format!("exec,size={}", 256 << 20));
    assert_eq!(host["Privileged"], false);
    assert_eq!(host["PortBindings"]["10999/tcp"][0]["HostIp"], "127.0.0.1");
    let mounts = c["Mounts"].to_string();
    assert!(mounts.contains(r#""Destination":"/cache""#), "{mounts}");
    assert!(mounts.contains(r#""Destination":"/tmp/runner""#), "{mounts}");
    // Bridge mode: the runner's ports are published on ephemeral localhost ports.
    let ports = info.ports.clone().expect("ports");
    assert_eq!(ports.len(), 2, "{ports:?}");
    assert!(ports.iter().all(|p| p.host != p.container), "{ports:?}");

    let runner = runner_at(&info).await;
    let script = r#"echo "proxy=$http_proxy foo=$FOO pwd=$(pwd)"; cat /cache/hello.txt;
        while read -r l; do case "$l" in *" /dev/shm "*) echo "shm: $l";; esac; done < /proc/mounts"#;
    runner.submit(&job_body(script, json!({"FOO": "bar"}), "/opt/work")).await.expect("submit job");
    runner.run().await.expect("run");
    let out = job_output(&runner).await;
    assert!(out.contains("proxy=http://proxy.test:3128 foo=bar pwd=/opt/work"), "{out}");
    assert!(out.contains("from the host"), "{out}");
    assert!(out.contains("size=262144k"), "/dev/shm is 256 MiB: {out}");
    assert!(!out.lines().any(|l| l.starts_with("shm:") && l.contains("noexec")), "/dev/shm is exec: {out}");
    let done = shim.wait_status(&config.id, TaskStatus::Terminated, Duration::from_secs(30)).await;
    assert_eq!(done.termination_reason, reason::DONE_BY_RUNNER, "{done:?}");
    shim.client.remove_task(&config.id).await.expect("remove");
    assert!(containers_of(&config.id).is_empty(), "the container is removed");
    assert!(!home.path().join("runners").join(&done.container_name).exists(), "the runner dir too");
}

#[tokio::test]
async fn a_container_that_does_not_start_is_removed() {
    if !docker_tests() {
        return;
    }
    build_test_image();
    // An image without a dynamic loader: the runner binary cannot be executed in it.
    let image = "dstack-rs-empty-test:1";
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("mkdir -p /tmp/dstack-rs-empty/etc && tar -C /tmp/dstack-rs-empty -c etc | docker import - {image} >/dev/null")])
        .status()
        .expect("sh runs");
    assert!(status.success(), "building the empty image");
    let home = tempfile::tempdir().expect("home");
    let shim = Shim::start(home.path(), &[]);
    let broken = TaskConfig {
        id: unique("nostart"),
        name: "nostart-0-0".to_owned(),
        image_name: image.to_owned(),
        ..TaskConfig::default()
    };
    // Privileged containers cannot start on some hosts (no capabilities to apply); either way
    // the task says privileged to Docker.
    let privileged = TaskConfig {
        id: unique("priv"),
        name: "priv-0-0".to_owned(),
        image_name: "dstack-rs-runner-test:1".to_owned(),
        privileged: true,
        ..TaskConfig::default()
    };
    let _cleanup = RemoveContainers(vec![broken.id.clone(), privileged.id.clone()]);
    shim.client.submit_task(&broken).await.expect("submit");
    let info = shim.wait_status(&broken.id, TaskStatus::Terminated, Duration::from_secs(60)).await;
    assert_eq!(info.termination_reason, reason::CONTAINER_EXITED_WITH_ERROR, "{info:?}");
    assert!(info.termination_message.contains("startContainer error"), "{info:?}");
    assert!(containers_of(&broken.id).is_empty(), "a container that did not start is removed");
    shim.client.remove_task(&broken.id).await.expect("remove");

    shim.client.submit_task(&privileged).await.expect("submit");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let info = shim.client.get_task(&privileged.id).await.expect("task");
        if info.status == TaskStatus::Running {
            assert_eq!(inspect(&info.container_id)["HostConfig"]["Privileged"], true);
            break;
        }
        if info.status == TaskStatus::Terminated {
            assert!(info.termination_message.contains("startContainer error"), "{info:?}");
            assert!(containers_of(&privileged.id).is_empty(), "removed after the failed start");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{info:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stop = TerminateBody { timeout: 0, ..TerminateBody::default() };
    shim.client.terminate_task(&privileged.id, &stop).await.expect("terminate");
    shim.client.remove_task(&privileged.id).await.expect("remove");

    // A volume that is not mounted on the host ends the task with what to do.
    let volume = TaskConfig {
        id: unique("vol"),
        name: "vol-0-0".to_owned(),
        image_name: "dstack-rs-runner-test:1".to_owned(),
        volume_mounts: vec![VolumeMountPoint { name: "no-such-volume".to_owned(), path: "/data".to_owned() }],
        ..TaskConfig::default()
    };
    shim.client.submit_task(&volume).await.expect("submit");
    let info = shim.wait_status(&volume.id, TaskStatus::Terminated, Duration::from_secs(30)).await;
    assert_eq!(info.termination_reason, reason::EXECUTOR_ERROR, "{info:?}");
    assert!(
        info.termination_message.starts_with("prepareVolumes error: volume no-such-volume is not mounted"),
        "{info:?}"
    );
    assert!(containers_of(&volume.id).is_empty());
}

#[tokio::test]
async fn gpus_of_a_fake_nvidia_host_are_requested_by_uuid() {
    if !docker_tests() {
        return;
    }
    build_test_image();
    let uuids: Vec<String> = (0..4).map(|i| format!("GPU-0000000{i}-aaaa-bbbb-cccc-dddddddddddd")).collect();
    let csv: String =
        uuids.iter().map(|u| format!("NVIDIA H100 80GB HBM3, 81559, {u}, 570.86.15\n")).collect();
    let fake = FakeHost::new("nvidia-smi", &csv);
    fake.device("/dev/nvidiactl", "/dev/null");
    let home = tempfile::tempdir().expect("home");
    let shim = fake.start(home.path());
    let task = |name: &str, gpu: i64| TaskConfig {
        id: unique(name),
        name: format!("{name}-0-0"),
        image_name: "dstack-rs-runner-test:1".to_owned(),
        gpu,
        ..TaskConfig::default()
    };
    let (two, five) = (task("two", 2), task("five", 5));
    let _cleanup = RemoveContainers(vec![two.id.clone(), five.id.clone()]);
    shim.client.submit_task(&five).await.expect("submit");
    let info = shim.wait_status(&five.id, TaskStatus::Terminated, Duration::from_secs(30)).await;
    assert_eq!(info.termination_reason, reason::EXECUTOR_ERROR);
    assert_eq!(info.termination_message, "no capacity: 5 GPUs requested, 4 available");

    // Docker takes the request; without the NVIDIA runtime here the start fails, the container
    // is removed and the GPUs go back.
    shim.client.submit_task(&two).await.expect("submit");
    let info = shim.wait_status(&two.id, TaskStatus::Terminated, Duration::from_secs(60)).await;
    assert_eq!(info.gpus_ids, uuids[..2], "{info:?}");
    assert_eq!(info.termination_reason, reason::CONTAINER_EXITED_WITH_ERROR, "{info:?}");
    assert!(info.termination_message.contains("startContainer error"), "{info:?}");
    assert!(info.termination_message.contains("gpu"), "the device request reached Docker: {info:?}");
    assert!(containers_of(&two.id).is_empty());
    let all = task("all", 4);
    let _cleanup_all = RemoveContainers(vec![all.id.clone()]);
    shim.client.submit_task(&all).await.expect("submit");
    let info = shim.wait_status(&all.id, TaskStatus::Terminated, Duration::from_secs(60)).await;
    assert_eq!(info.gpus_ids, uuids, "all four were free again: {info:?}");
}

/// A fake host with four MI300X (amd-smi output, `/dev/kfd`, render nodes `renderD128..131`
/// found through sysfs), its devices links to `/dev/null` so that containers can run.
fn fake_amd_host() -> FakeHost {
    let bdfs = ["0000:0c:00.0", "0000:22:00.0", "0000:38:00.0", "0000:5c:00.0"];
    let gpus: Vec<serde_json::Value> = bdfs
        .iter()
        .map(|bdf| {
            json!({"asic": {"market_name": "AMD Instinct MI300X"}, "vram": {"size": {"value": 196592}},
                          "bus": {"bdf": bdf}, "driver": {"version": "6.10.5"}})
        })
        .collect();
    let fake = FakeHost::new("amd-smi", &serde_json::to_string(&gpus).expect("json"));
    fake.device("/dev/kfd", "/dev/null");
    for (i, bdf) in bdfs.iter().enumerate() {
        let node = format!("renderD{}", 128 + i);
        std::fs::create_dir_all(fake.root().join(format!("sys/bus/pci/devices/{bdf}/drm/{node}")))
            .expect("sysfs");
        fake.device(&format!("/dev/dri/{node}"), "/dev/null");
    }
    fake
}

#[tokio::test]
async fn gpus_of_a_fake_amd_host_are_locked_and_recovered_after_a_restart() {
    if !docker_tests() {
        return;
    }
    build_test_image();
    let fake = fake_amd_host();
    let home = tempfile::tempdir().expect("home");
    let mut shim = fake.start(home.path());
    assert_eq!(shim.client.instance_info().await.expect("info").gpu_vendor.as_deref(), Some("amd"));
    let task = |name: &str, gpu: i64| TaskConfig {
        id: unique(name),
        name: format!("{name}-0-0"),
        image_name: "dstack-rs-runner-test:1".to_owned(),
        gpu,
        ..TaskConfig::default()
    };
    let (two, three) = (task("amd2", 2), task("amd3", 3));
    let _cleanup = RemoveContainers(vec![two.id.clone(), three.id.clone()]);
    shim.client.submit_task(&two).await.expect("submit");
    let info = shim.wait_status(&two.id, TaskStatus::Running, Duration::from_secs(60)).await;
    assert_eq!(info.gpus_ids, ["/dev/dri/renderD128", "/dev/dri/renderD129"]);
    let host = inspect(&info.container_id)["HostConfig"].clone();
    let devices: Vec<&str> = host["Devices"]
        .as_array()
        .expect("devices")
        .iter()
        .filter_map(|d| d["PathInContainer"].as_str())
        .collect();
    assert_eq!(devices, ["/dev/kfd", "/dev/dri/renderD128", "/dev/dri/renderD129"]);
    assert_eq!(host["IpcMode"], "host");
    assert_eq!(host["CapAdd"], json!(["SYS_PTRACE"]));
    // Docker adds `label=disable` to host-IPC containers.
    let security = host["SecurityOpt"].as_array().expect("security options");
    assert!(security.contains(&json!("seccomp=unconfined")), "{security:?}");
    shim.client.submit_task(&three).await.expect("submit");
    let refused = shim.wait_status(&three.id, TaskStatus::Terminated, Duration::from_secs(30)).await;
    assert_eq!(refused.termination_message, "no capacity: 3 GPUs requested, 2 available");

    // kill -9 the shim, lose tasks.json: the container is the truth.
    shim.child.kill().expect("kill the shim");
    let _ = shim.child.wait();
    drop(shim);
    std::fs::remove_file(home.path().join("tasks.json")).expect("tasks.json existed");
    let shim = fake.start(home.path());
    let recovered = shim.client.get_task(&two.id).await.expect("recovered");
    assert_eq!(recovered.status, TaskStatus::Running, "{recovered:?}");
    assert_eq!(recovered.ports, info.ports, "the same runner port");
    assert_eq!(recovered.gpus_ids, info.gpus_ids);
    assert_eq!(recovered.container_name, info.container_name);
    let again = task("amd3b", 3);
    let _cleanup_again = RemoveContainers(vec![again.id.clone()]);
    shim.client.submit_task(&again).await.expect("submit");
    let refused = shim.wait_status(&again.id, TaskStatus::Terminated, Duration::from_secs(30)).await;
    assert_eq!(refused.termination_message, "no capacity: 3 GPUs requested, 2 available", "GPUs re-locked");

    // The recovered task still ends cleanly when its runner does.
    let runner = runner_at(&recovered).await;
    runner.stop().await.expect("stop before run");
    runner.pull(0).await.expect("the final pull");
    let done = shim.wait_status(&two.id, TaskStatus::Terminated, Duration::from_secs(30)).await;
    assert_eq!(done.termination_reason, reason::DONE_BY_RUNNER, "{done:?}");
    shim.client.remove_task(&two.id).await.expect("remove");
    assert!(containers_of(&two.id).is_empty());
    let four = task("amd4", 4);
    let _cleanup_four = RemoveContainers(vec![four.id.clone()]);
    shim.client.submit_task(&four).await.expect("submit");
    let info = shim.wait_status(&four.id, TaskStatus::Running, Duration::from_secs(60)).await;
    assert_eq!(info.gpus_ids.len(), 4, "released on exit: {info:?}");
    shim.client.terminate_task(&four.id, &TerminateBody::default()).await.expect("terminate");
    shim.client.remove_task(&four.id).await.expect("remove");
}

/// Two half-host blocks of a fake 4-GPU AMD host run side by side, as the server asks for
/// blocks (`gpu: 2`, a CPU and memory share, bridge networking): disjoint render nodes, and
/// each container limited to its share.
#[tokio::test]
async fn two_blocks_of_a_fake_amd_host_run_side_by_side() {
    if !docker_tests() {
        return;
    }
    build_test_image();
    let fake = fake_amd_host();
    let home = tempfile::tempdir().expect("home");
    let shim = fake.start(home.path());
    let block = |name: &str| TaskConfig {
        id: unique(name),
        name: format!("{name}-0-0"),
        image_name: "dstack-rs-runner-test:1".to_owned(),
        gpu: 2,
        cpu: 1.0,
        memory: 512 << 20,
        network_mode: "bridge".to_owned(),
        ..TaskConfig::default()
    };
    let (a, b) = (block("blk-a"), block("blk-b"));
    let _cleanup = RemoveContainers(vec![a.id.clone(), b.id.clone()]);
    shim.client.submit_task(&a).await.expect("submit");
    shim.client.submit_task(&b).await.expect("submit");
    let ia = shim.wait_status(&a.id, TaskStatus::Running, Duration::from_secs(60)).await;
    let ib = shim.wait_status(&b.id, TaskStatus::Running, Duration::from_secs(60)).await;
    assert_eq!(ia.gpus_ids.len() + ib.gpus_ids.len(), 4, "{ia:?} {ib:?}");
    assert!(ia.gpus_ids.iter().all(|id| !ib.gpus_ids.contains(id)), "disjoint: {ia:?} {ib:?}");
    for info in [&ia, &ib] {
        let host = inspect(&info.container_id)["HostConfig"].clone();
        assert_eq!(host["NanoCpus"], 1_000_000_000i64);
        assert_eq!(host["Memory"], 512i64 << 20);
        assert_eq!(host["NetworkMode"], "bridge");
        let devices: Vec<&str> = host["Devices"]
            .as_array()
            .expect("devices")
            .iter()
            .filter_map(|d| d["PathInContainer"].as_str())
            .filter(|p| p.starts_with("/dev/dri/"))
            .collect();
        assert_eq!(devices, info.gpus_ids, "the container gets only its render nodes");
    }
    for id in [&a.id, &b.id] {
        shim.client.terminate_task(id, &TerminateBody::default()).await.expect("terminate");
        shim.client.remove_task(id).await.expect("remove");
    }
}

#[tokio::test]
async fn a_shim_asked_to_clean_up_removes_its_containers_on_shutdown() {
    if !docker_tests() {
        return;
    }
    build_test_image();
    let home = tempfile::tempdir().expect("home");
    let mut shim = Shim::start(home.path(), &["--remove-tasks-on-shutdown"]);
    let config = TaskConfig {
        id: unique("bye"),
        name: "bye-0-0".to_owned(),
        image_name: "dstack-rs-runner-test:1".to_owned(),
        ..TaskConfig::default()
    };
    let _cleanup = RemoveContainers(vec![config.id.clone()]);
    shim.client.submit_task(&config).await.expect("submit");
    let info = shim.wait_status(&config.id, TaskStatus::Running, Duration::from_secs(60)).await;
    assert_eq!(containers_of(&config.id).len(), 1);
    shim.client.shutdown(false).await.expect("shutdown");
    let status = shim.child.wait().expect("the shim exits");
    assert!(status.success(), "{status}");
    assert!(containers_of(&config.id).is_empty(), "the container is removed");
    assert!(!home.path().join("runners").join(&info.container_name).exists(), "and its runner dir");
}
