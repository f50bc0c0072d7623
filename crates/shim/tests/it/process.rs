use std::time::Duration;

use dstack_agent_proto::runner::{JobState, SubmitBody};
use dstack_agent_proto::shim::{TaskConfig, TaskStatus, TerminateBody, reason};
use dstack_agent_proto::{RUNNER_HTTP_PORT, RunnerClient};
use serde_json::json;

use crate::{Shim, job_output};

fn task(id: &str) -> TaskConfig {
    TaskConfig { id: id.to_owned(), name: "my-run-0-0".to_owned(), ..TaskConfig::default() }
}

fn job(script: &str) -> SubmitBody {
    serde_json::from_value(json!({
        "run": {"id": "5f0c3d52-8a4e-4d3c-9b1e-0f4f5a6b7c8d", "run_spec": {
            "run_name": "my-run", "configuration": {"type": "task", "commands": ["true"]}}},
        "job_spec": {"job_num": 0, "job_name": "my-run-0-0", "commands": ["/bin/sh", "-c", script],
            "env": {}, "image_name": "", "requirements": {"resources": {}}},
        "job_submission": {"id": "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"}
    }))
    .expect("a valid submit body")
}

/// Runs `script` on the task's runner and returns the runner client.
async fn run_job(shim: &Shim, id: &str, script: &str) -> RunnerClient {
    let info = shim.wait_status(id, TaskStatus::Running, Duration::from_secs(20)).await;
    let port = info.host_port(RUNNER_HTTP_PORT).expect("the runner port is reported");
    let runner = RunnerClient::new(&format!("http://127.0.0.1:{port}"));
    runner.healthcheck().await.expect("the runner answers");
    runner.submit(&job(script)).await.expect("submit");
    runner.run().await.expect("run").expect("run response");
    runner
}

async fn pull_to_end(runner: &RunnerClient) -> Vec<JobState> {
    let mut cursor = 0;
    let mut states = Vec::new();
    for _ in 0..200 {
        let pull = runner.pull(cursor).await.expect("pull");
        cursor = pull.last_updated;
        states.extend(pull.job_states.iter().map(|s| s.state));
        if !pull.has_more {
            return states;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the job did not finish: {states:?}");
}

#[tokio::test]
async fn a_process_task_runs_a_job_and_is_removed() {
    let home = tempfile::tempdir().expect("home");
    let shim = Shim::start(home.path(), &["--no-docker"]);
    let health = shim.client.healthcheck().await.expect("healthcheck");
    assert_eq!((health.service.as_str(), health.version.as_str()), ("dstack-shim", "0.22.5"));
    assert_eq!(shim.client.instance_health().await.expect("health").dcgm, None);
    let components = shim.client.components().await.expect("components");
    assert_eq!(components.components[0].version, "0.22.5", "{components:?}");

    shim.client.submit_task(&task("t1")).await.expect("submit");
    let runner = run_job(&shim, "t1", "echo hello").await;
    assert_eq!(pull_to_end(&runner).await, [JobState::Running, JobState::Done]);
    let done = shim.wait_status("t1", TaskStatus::Terminated, Duration::from_secs(20)).await;
    assert_eq!(done.termination_reason, reason::DONE_BY_RUNNER, "{done:?}");
    let dir = home.path().join("runners").join(&done.container_name);
    assert!(dir.is_dir(), "the runner dir stays until remove");
    shim.client.remove_task("t1").await.expect("remove");
    assert!(!dir.exists());
    assert!(shim.client.list_tasks().await.expect("list").tasks.is_empty());
    assert_eq!(shim.client.get_task("t1").await.expect_err("gone").status(), Some(404));
}

#[tokio::test]
async fn terminate_kills_a_running_task() {
    let home = tempfile::tempdir().expect("home");
    let shim = Shim::start(home.path(), &["--no-docker"]);
    shim.client.submit_task(&task("t2")).await.expect("submit");
    let runner = run_job(&shim, "t2", "sleep 1000").await;
    assert_eq!(shim.client.remove_task("t2").await.expect_err("running").status(), Some(409));
    let body = TerminateBody {
        termination_reason: "terminated_by_user".to_owned(),
        termination_message: "bye".to_owned(),
        timeout: 0,
    };
    let info = shim.client.terminate_task("t2", &body).await.expect("terminate");
    assert_eq!(
        (info.status, info.termination_reason.as_str()),
        (TaskStatus::Terminated, "terminated_by_user")
    );
    assert!(runner.healthcheck().await.is_err(), "the runner is gone");
    // Terminating again keeps the first reason.
    let again = TerminateBody { termination_reason: "other".to_owned(), ..TerminateBody::default() };
    let info = shim.client.terminate_task("t2", &again).await.expect("terminate again");
    assert_eq!(info.termination_reason, "terminated_by_user");
    shim.client.remove_task("t2").await.expect("remove");
}

#[tokio::test]
async fn a_restarted_shim_still_knows_its_running_task() {
    let home = tempfile::tempdir().expect("home");
    let mut shim = Shim::start(home.path(), &["--no-docker"]);
    shim.client.submit_task(&task("t3")).await.expect("submit");
    let runner = run_job(&shim, "t3", "sleep 2; echo late").await;
    shim.child.kill().expect("kill -9 the shim");
    let _ = shim.child.wait();
    drop(shim);
    let shim = Shim::start(home.path(), &["--no-docker"]);
    let listed = shim.client.list_tasks().await.expect("list");
    assert_eq!(listed.tasks.len(), 1);
    assert_eq!((listed.tasks[0].id.as_str(), listed.tasks[0].status), ("t3", TaskStatus::Running));
    assert_eq!(pull_to_end(&runner).await.last(), Some(&JobState::Done));
    let done = shim.wait_status("t3", TaskStatus::Terminated, Duration::from_secs(20)).await;
    assert_eq!(done.termination_reason, reason::DONE_BY_RUNNER);
}

#[tokio::test]
async fn bad_requests_are_refused() {
    let home = tempfile::tempdir().expect("home");
    let shim = Shim::start(home.path(), &["--no-docker"]);
    assert_eq!(shim.client.submit_task(&task("")).await.expect_err("empty id").status(), Some(400));
    let nameless = TaskConfig { id: "x".to_owned(), ..TaskConfig::default() };
    assert_eq!(shim.client.submit_task(&nameless).await.expect_err("empty name").status(), Some(400));
    assert_eq!(shim.client.get_task("nope").await.expect_err("unknown").status(), Some(404));
    let body = TerminateBody::default();
    assert_eq!(shim.client.terminate_task("nope", &body).await.expect_err("unknown").status(), Some(404));
    assert_eq!(shim.client.remove_task("nope").await.expect_err("unknown").status(), Some(404));
    shim.client.submit_task(&task("dup")).await.expect("submit");
    assert_eq!(shim.client.submit_task(&task("dup")).await.expect_err("duplicate").status(), Some(409));
    shim.wait_status("dup", TaskStatus::Running, Duration::from_secs(20)).await;
    shim.client.terminate_task("dup", &body).await.expect("terminate");
    shim.client.remove_task("dup").await.expect("remove");
    shim.client.healthcheck().await.expect("still serving");
}

/// Two host-process tasks with `gpu: 2` on a fake 4-GPU NVIDIA host hold disjoint GPUs at
/// the same time, and each job sees only its own through `CUDA_VISIBLE_DEVICES`; a third
/// finds none free; a finished task's GPUs go back.
#[tokio::test]
async fn concurrent_process_tasks_see_only_their_gpus() {
    let uuids: Vec<String> = (0..4).map(|i| format!("GPU-0000000{i}-aaaa-bbbb-cccc-dddddddddddd")).collect();
    let csv: String =
        uuids.iter().map(|u| format!("NVIDIA H100 80GB HBM3, 81559, {u}, 570.86.15\n")).collect();
    let fake = crate::FakeHost::new("nvidia-smi", &csv);
    fake.device("/dev/nvidiactl", "/dev/null");
    let home = tempfile::tempdir().expect("home");
    let shim = fake.start_with(home.path(), &["--no-docker"]);
    let with_gpus = |id: &str, gpu: i64| TaskConfig { gpu, ..task(id) };
    shim.client.submit_task(&with_gpus("a", 2)).await.expect("submit");
    shim.client.submit_task(&with_gpus("b", 2)).await.expect("submit");
    let script = "echo \"visible=$CUDA_VISIBLE_DEVICES\"; sleep 1";
    // b holds its GPUs well after a has given its back.
    let long = "echo \"visible=$CUDA_VISIBLE_DEVICES\"; sleep 8";
    let (ra, rb) = (run_job(&shim, "a", script).await, run_job(&shim, "b", long).await);
    let a = shim.client.get_task("a").await.expect("a");
    let b = shim.client.get_task("b").await.expect("b");
    assert_eq!((a.gpus_ids.len(), b.gpus_ids.len()), (2, 2), "{a:?} {b:?}");
    assert!(a.gpus_ids.iter().all(|id| !b.gpus_ids.contains(id)), "disjoint: {a:?} {b:?}");
    shim.client.submit_task(&with_gpus("c", 1)).await.expect("submit");
    let c = shim.wait_status("c", TaskStatus::Terminated, Duration::from_secs(20)).await;
    assert_eq!(
        (c.termination_reason.as_str(), c.termination_message.as_str()),
        (reason::EXECUTOR_ERROR, "no capacity: 1 GPUs requested, 0 available")
    );
    let out = job_output(&ra).await;
    assert_eq!(out.trim(), format!("visible={}", a.gpus_ids.join(",")), "{a:?}");
    shim.wait_status("a", TaskStatus::Terminated, Duration::from_secs(20)).await;
    shim.client.submit_task(&with_gpus("d", 2)).await.expect("submit");
    let d = shim.wait_status("d", TaskStatus::Running, Duration::from_secs(20)).await;
    let a_after = shim.client.get_task("a").await.expect("a");
    assert_eq!(d.gpus_ids, a_after.gpus_ids, "a's GPUs went back and d got them (b still holds its own)");
    let out = job_output(&rb).await;
    assert_eq!(out.trim(), format!("visible={}", b.gpus_ids.join(",")), "{b:?}");
    let kill =
        TerminateBody { termination_reason: "terminated_by_user".to_owned(), ..TerminateBody::default() };
    shim.client.terminate_task("d", &kill).await.expect("terminate");
}
