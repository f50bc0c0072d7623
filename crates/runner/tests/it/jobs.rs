use std::time::{Duration, Instant};

use dstack_agent_proto::runner::{JobState, reason};
use serde_json::json;

use crate::{Runner, job_output, last_state, submit_body, tar_of};

#[tokio::test]
async fn a_job_runs_with_its_code_env_and_logs_in_order() {
    let mut runner = Runner::start();
    let health = runner.client.healthcheck().await.expect("healthcheck");
    assert_eq!((health.service.as_str(), health.version.as_str()), ("dstack-runner", "0.22.5"));
    let script = "cat hello.txt; echo run=$DSTACK_RUN_NAME rank=$DSTACK_NODE_RANK nodes=$DSTACK_NODES_NUM \
                  gpus=$DSTACK_GPUS_NUM repo=$DSTACK_REPO_ID my=$MY_VAR; echo \"wd=$PWD\"; \
                  for i in $(seq 1 200); do echo line-$i; done; echo err >&2";
    runner.client.submit(&submit_body(script, json!({}))).await.expect("submit");
    runner.client.upload_code(tar_of(&[("hello.txt", "hello from the repo\n")])).await.expect("upload_code");
    let run = runner.client.run().await.expect("run").expect("a run response");
    assert!(run.working_dir.ends_with("/workflow"), "{run:?}");
    let pull = runner.pull_to_end(Duration::from_secs(20)).await;
    let states: Vec<_> = pull.job_states.iter().map(|s| s.state).collect();
    assert_eq!(states, [JobState::Running, JobState::Done]);
    assert_eq!(last_state(&pull).exit_status, Some(0));
    let out = job_output(&pull);
    assert!(out.contains("hello from the repo\n"), "{out}");
    assert!(out.contains("run=my-run rank=1 nodes=2 gpus=2 repo=my-repo my=from-env"), "{out}");
    assert!(out.contains(&format!("wd={}", run.working_dir)), "{out}");
    assert!(out.contains("err\n"), "{out}");
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("line-")).collect();
    let expected: Vec<String> = (1..=200).map(|i| format!("line-{i}")).collect();
    assert_eq!(lines, expected);
    let stamps: Vec<i64> = pull.job_logs.iter().map(|e| e.timestamp).collect();
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "timestamps strictly increase");
    // One pull in wait_logs_finished, and the runner exits.
    assert!(runner.wait_exit(Duration::from_secs(10)).success());
}

/// stdout and stderr reach the log in the order the job wrote them, as on a terminal, also when
/// a line is written in pieces (as bash writes its own warnings) with the other stream between.
#[tokio::test]
async fn stdout_and_stderr_interleave_as_written() {
    let runner = Runner::start();
    let script = "for i in $(seq 1 50); do printf 'w-'; printf \"$i \" >&2; printf 'x\\n'; done; printf 'bash: ' >&2; \
                  echo 'line 1'; echo 'cannot set terminal process group' >&2";
    runner.client.submit(&submit_body(script, json!({}))).await.expect("submit");
    runner.client.run().await.expect("run");
    let pull = runner.pull_to_end(Duration::from_secs(20)).await;
    let expected: String = (1..=50)
        .map(|i| format!("w-{i} x\n"))
        .chain(["bash: line 1\ncannot set terminal process group\n".into()])
        .collect();
    assert_eq!(job_output(&pull), expected);
}

#[tokio::test]
async fn a_failing_job_reports_its_exit_status() {
    let runner = Runner::start();
    runner.client.submit(&submit_body("echo bye; exit 3", json!({}))).await.expect("submit");
    runner.client.run().await.expect("run");
    let pull = runner.pull_to_end(Duration::from_secs(20)).await;
    let last = last_state(&pull);
    assert_eq!((last.state, last.exit_status), (JobState::Failed, Some(3)));
}

#[tokio::test]
async fn stop_kills_the_whole_job_quickly() {
    let runner = Runner::start();
    runner.client.submit(&submit_body("sleep 1000 & sleep 1000", json!({}))).await.expect("submit");
    runner.client.run().await.expect("run");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    runner.client.stop().await.expect("stop");
    let pull = runner.pull_to_end(Duration::from_secs(10)).await;
    assert!(started.elapsed() < Duration::from_secs(5), "stopped in {:?}", started.elapsed());
    assert_eq!(last_state(&pull).state, JobState::Terminated);
    assert_eq!(last_state(&pull).termination_reason, "");
    let pgid_file = runner.dir.path().join("runner/job.pid");
    assert!(!pgid_file.exists(), "the job pid file is removed");
}

#[tokio::test]
async fn max_duration_terminates_the_job() {
    let runner = Runner::start();
    runner.client.submit(&submit_body("sleep 1000", json!({"max_duration": 1}))).await.expect("submit");
    runner.client.run().await.expect("run");
    let pull = runner.pull_to_end(Duration::from_secs(10)).await;
    let last = last_state(&pull);
    assert_eq!(
        (last.state, last.termination_reason.as_str()),
        (JobState::Terminated, reason::MAX_DURATION_EXCEEDED)
    );
    assert_eq!(last.termination_message, "Max duration exceeded");
}

#[tokio::test]
async fn file_archives_land_at_their_paths() {
    let runner = Runner::start();
    let id = uuid::Uuid::new_v4();
    let dest = runner.dir.path().join("files/config.txt");
    let body = submit_body(
        &format!("cat {}", dest.display()),
        json!({"file_archives": [{"id": id, "path": dest.display().to_string()}]}),
    );
    runner.client.submit(&body).await.expect("submit");
    runner.client.upload_archive(id, tar_of(&[("original-name.txt", "archived\n")])).await.expect("upload");
    runner.client.run().await.expect("run");
    let pull = runner.pull_to_end(Duration::from_secs(10)).await;
    assert_eq!(job_output(&pull), "archived\n");
    assert_eq!(last_state(&pull).state, JobState::Done);
}

#[tokio::test]
async fn a_bad_working_dir_fails_without_running() {
    let runner = Runner::start();
    let body = submit_body("echo never", json!({"working_dir": "/proc/forbidden/dir"}));
    runner.client.submit(&body).await.expect("submit");
    assert_eq!(runner.client.run().await.expect("run"), None);
    let pull = runner.pull_to_end(Duration::from_secs(10)).await;
    let last = last_state(&pull);
    assert_eq!((last.state, last.termination_reason.as_str()), (JobState::Failed, reason::EXECUTOR_ERROR));
    assert!(job_output(&pull).is_empty());
}

#[tokio::test]
async fn metrics_follow_a_busy_job() {
    let runner = Runner::start();
    let before = runner.client.metrics().await.expect("metrics").expect("a collector");
    assert!(before.timestamp_micro > 0);
    // A busy loop that also holds some memory.
    let script = "x=$(head -c 4000000 /dev/zero | tr '\\0' a); while :; do :; done";
    runner.client.submit(&submit_body(script, json!({}))).await.expect("submit");
    runner.client.run().await.expect("run");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first = runner.client.metrics().await.expect("metrics").expect("a sample");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = runner.client.metrics().await.expect("metrics").expect("a sample");
    assert!(second.timestamp_micro > first.timestamp_micro, "{first:?} {second:?}");
    let cpu = second.cpu_usage_micro - first.cpu_usage_micro;
    let wall = (second.timestamp_micro - first.timestamp_micro) as u64;
    // A busy loop burns about one core; leave room for a loaded machine.
    assert!(cpu > wall / 10, "cpu {cpu} µs in {wall} µs: {first:?} {second:?}");
    assert!(second.memory_usage_bytes > 1_000_000, "{second:?}");
    assert!(second.memory_working_set_bytes > 0, "{second:?}");
    runner.client.stop().await.expect("stop");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The job is gone; the CPU counter does not go back.
    let after = runner.client.metrics().await.expect("metrics").expect("a sample");
    assert!(after.cpu_usage_micro >= second.cpu_usage_micro, "{after:?} {second:?}");
    let pull = runner.pull_to_end(Duration::from_secs(10)).await;
    assert_eq!(last_state(&pull).state, JobState::Terminated);
}
