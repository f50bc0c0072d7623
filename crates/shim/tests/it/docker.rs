//! Docker mode, only with `DSTACK_TEST_DOCKER=1` (needs a Docker engine and builds a local
//! image with `scripts/build-runner-test-image`).

use std::time::Duration;

use dstack_agent_proto::RUNNER_HTTP_PORT;
use dstack_agent_proto::shim::{TaskConfig, TaskStatus, reason};

use crate::{Shim, runner_binary};

#[tokio::test]
async fn a_docker_task_runs_the_runner_in_a_container() {
    if std::env::var("DSTACK_TEST_DOCKER").as_deref() != Ok("1") {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/build-runner-test-image");
    let status = std::process::Command::new(script).arg(runner_binary()).status().expect("script runs");
    assert!(status.success(), "building the test image");
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
