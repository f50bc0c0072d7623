//! Docker mode, only with `DSTACK_TEST_DOCKER=1` (needs a Docker engine and builds a local
//! image with `scripts/build-runner-test-image`).

use std::time::Duration;

use dstack_agent_proto::RUNNER_HTTP_PORT;
use dstack_agent_proto::shim::{TaskConfig, TaskStatus, TerminateBody, reason};

use dstack_testkit::registry::TestRegistry;

use crate::{Shim, runner_binary};

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
