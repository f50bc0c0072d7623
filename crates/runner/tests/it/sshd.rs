//! The runner's sshd, connection tracker and `/logs_ws`, in a container of the SSH test image
//! (`scripts/build-ssh-test-image`: Debian with OpenSSH), only with `DSTACK_TEST_DOCKER=1`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dstack_agent_proto::RunnerClient;
use futures_util::StreamExt as _;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::submit_body;

fn docker_tests() -> bool {
    std::env::var("DSTACK_TEST_DOCKER").as_deref() == Ok("1")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A container running the runner (host network), removed on drop.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).stdout(Stdio::null()).status();
    }
}

/// `ssh` with the test key to root@127.0.0.1:`port`.
fn ssh(key: &std::path::Path, port: u16) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.arg("-i").arg(key).args(["-p", &port.to_string()]);
    cmd.args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"]);
    cmd.args(["-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", "root@127.0.0.1"]);
    cmd
}

async fn no_connections_secs(runner: &RunnerClient) -> i64 {
    runner.pull(0).await.expect("pull").no_connections_secs.expect("the runner reports no_connections_secs")
}

#[tokio::test]
async fn sshd_accepts_the_key_tracks_connections_and_logs_ws_streams() {
    if !docker_tests() {
        return;
    }
    let image = dstack_hostssh::testkit::image();
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("id_ed25519");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-t", "ed25519", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("public key");
    let (http_port, ssh_port) = (free_port(), free_port());
    let name = format!("dstack-runner-sshd-{}", std::process::id());
    let runner_bin = env!("CARGO_BIN_EXE_dstack-runner");
    let status = Command::new("docker")
        .args(["run", "-d", "--name", &name, "--network", "host"])
        .arg("-v")
        .arg(format!("{runner_bin}:/usr/local/bin/dstack-runner:ro"))
        .args(["--entrypoint", "/usr/local/bin/dstack-runner", image, "start", "--temp-dir", "/tmp/runner"])
        .args(["--http-address", "127.0.0.1", "--http-port", &http_port.to_string()])
        .args(["--ssh-port", &ssh_port.to_string(), "--ssh-address", "127.0.0.1"])
        .args(["--ssh-authorized-key", public.trim()])
        .args(["--ssh-tracker-interval-ms", "200", "--ssh-min-connection-ms", "1000"])
        .stdout(Stdio::null())
        .status()
        .expect("docker run");
    assert!(status.success(), "the container starts");
    let _container = Container(name.clone());
    let runner = RunnerClient::new(&format!("http://127.0.0.1:{http_port}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while runner.healthcheck().await.is_err() {
        assert!(Instant::now() < deadline, "the runner in the container never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut body = submit_body("echo first line; sleep 600", json!({}));
    body.run.run_spec.configuration =
        serde_json::from_value(json!({"type": "dev-environment"})).expect("conf");
    runner.submit(&body).await.expect("submit");
    let started_at = jiff::Timestamp::now();
    runner.run().await.expect("run");

    // Logged in with the given key, a command runs as root in the container.
    let out = ssh(&key, ssh_port).arg("echo hi from $(whoami)").output().expect("ssh runs");
    assert!(out.status.success(), "ssh failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hi from root");
    let conf = Command::new("docker")
        .args(["exec", &name, "cat", "/dstack/ssh/conf/sshd_config"])
        .output()
        .expect("docker exec");
    let conf = String::from_utf8_lossy(&conf.stdout);
    assert!(conf.starts_with("LogLevel INFO\nPort "), "{conf}");
    assert!(conf.contains("AuthorizedKeysFile /dstack/ssh/conf/authorized_keys .ssh/authorized_keys"));

    // Nobody connected for long: the count grows; a held connection resets it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while no_connections_secs(&runner).await < 2 {
        assert!(Instant::now() < deadline, "no_connections_secs never grew");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut held = ssh(&key, ssh_port).arg("sleep 4").spawn().expect("ssh runs");
    let deadline = Instant::now() + Duration::from_secs(4);
    while no_connections_secs(&runner).await != 0 {
        assert!(Instant::now() < deadline, "a connection held > min age did not count as a user");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = held.kill();
    let _ = held.wait();

    // /logs_ws from the job's start: the first line, then the close once the job is stopped.
    let start = jiff::Timestamp::from_second(started_at.as_second() - 1).expect("ts");
    let url = format!("ws://127.0.0.1:{http_port}/logs_ws?start_time={start}");
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("websocket");
    let mut text = String::new();
    while !text.contains("first line") {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => text.push_str(&String::from_utf8_lossy(&b)),
            other => panic!("expected the job's output, got {other:?}"),
        }
    }
    runner.stop().await.expect("stop");
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(msg) = ws.next().await {
            if matches!(msg, Ok(Message::Close(_)) | Err(_)) {
                return true;
            }
        }
        true
    })
    .await;
    assert_eq!(closed, Ok(true), "the stream closes when the job has ended");

    // A start_time that is not RFC 3339: close code 1003.
    let url = format!("ws://127.0.0.1:{http_port}/logs_ws?start_time=yesterday");
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("websocket");
    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        Ok(Some(Ok(Message::Close(Some(frame))))) => {
            assert_eq!(u16::from(frame.code), 1003);
            assert_eq!(frame.reason.as_str(), "failed to parse start_time value");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn a_dev_environment_without_sshd_fails_with_the_reason() {
    // The runner on this host has no sshd to find when PATH has none and /usr/sbin/sshd is
    // absent; skip where the host has one.
    if std::path::Path::new("/usr/sbin/sshd").exists() {
        return;
    }
    let runner = crate::Runner::start_with_env(&[("DSTACK_RUNNER_SSH_PORT", "10022")]);
    let mut body = submit_body("echo never", json!({}));
    body.run.run_spec.configuration =
        serde_json::from_value(json!({"type": "dev-environment"})).expect("conf");
    runner.client.submit(&body).await.expect("submit");
    runner.client.run().await.expect("run");
    let all = runner.pull_to_end(Duration::from_secs(30)).await;
    let last = crate::last_state(&all);
    assert_eq!(last.termination_reason, "executor_error");
    assert!(
        last.termination_message
            .starts_with("A dev environment needs an SSH server: the image has no OpenSSH server"),
        "{last:?}"
    );
}
