//! Dev environments on the local fleet, in a container of the SSH test image (Debian with
//! OpenSSH, `scripts/build-ssh-test-image`), only with `DSTACK_TEST_DOCKER=1`: `apply -d`,
//! `dstack attach` writing the SSH config, the system `ssh` running a command in the
//! environment, a configured port forwarded to a server inside it, detach, `dstack stop`, and
//! `inactivity_duration` ending an environment nobody attached to.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::local_fleet::agents_built;
use crate::server::{cli, start_with_local_fleet, stop};

fn docker_tests() -> bool {
    std::env::var("DSTACK_TEST_DOCKER").as_deref() == Ok("1")
}

/// `ps -a --json`'s run named `name`.
fn run_json(home: &Path, name: &str) -> Option<Value> {
    crate::server::ps_find(home, name)
}

pub(crate) fn wait_status(home: &Path, name: &str, limit: Duration, pred: impl Fn(&str) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(run) = run_json(home, name).filter(|r| pred(r["status"].as_str().unwrap_or_default())) {
            return run;
        }
        assert!(Instant::now() < deadline, "run {name}: {:?}", run_json(home, name));
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Aborts the run if the test ends early, so that its container does not outlive the test.
struct AbortRun<'a>(&'a Path, String);

impl Drop for AbortRun<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = cli(self.0, &["stop", "-x", "-y", &self.1]);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline
                && run_json(self.0, &self.1)
                    .is_some_and(|r| !finished(r["status"].as_str().unwrap_or_default()))
            {
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    }
}

pub(crate) fn finished(status: &str) -> bool {
    matches!(status, "done" | "failed" | "terminated")
}

/// A tiny HTTP server (perl, which Debian always has) answering `hello-from-env` on `port`.
fn http_server(port: u16) -> String {
    format!(
        "perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(LocalAddr => \"127.0.0.1\", LocalPort => {port}, \
         Listen => 5, ReuseAddr => 1) or die; while ($c = $s->accept) {{ <$c>; print $c \"HTTP/1.0 200 OK\\r\\n\\r\\nhello-from-env\"; close $c }}' &"
    )
}

fn http_get(port: u16) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text)
}

/// A CLI command in the background (ours or dstack's), its stdout collected.
pub(crate) struct Attach {
    child: std::process::Child,
    output: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Attach {
    /// Our `dstack attach NAME`.
    fn start(home: &Path, name: &str) -> Attach {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dstack"));
        cmd.args(["attach", name])
            .env("HOME", home)
            .env("NO_COLOR", "1")
            .env_remove("DSTACK_PROJECT")
            .env_remove("DSTACK_SERVER_URL")
            .env_remove("DSTACK_TOKEN");
        Attach::spawn(cmd)
    }

    /// Starts `cmd` with its stdout collected (stderr goes to the test's).
    pub(crate) fn spawn(mut cmd: Command) -> Attach {
        let mut child =
            cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("the command starts");
        let mut stdout = child.stdout.take().expect("stdout");
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink = output.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("lock").extend_from_slice(&buf[..n]);
            }
        });
        Attach { child, output, reader: Some(reader) }
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().expect("lock")).into_owned()
    }

    /// The output once it contains `marker`; fails if the command exits first or after
    /// `limit`.
    pub(crate) fn wait_for(&mut self, marker: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let text = self.text();
            if text.contains(marker) {
                return text;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the command exited ({status}) before {marker:?}: {text}");
            }
            assert!(Instant::now() < deadline, "never saw {marker:?}: {text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The exit code and the whole output once the command exits; fails after `limit`.
    pub(crate) fn wait_exit(mut self, limit: Duration) -> (i32, String) {
        let deadline = Instant::now() + limit;
        let code = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "the command is still running: {}", self.text());
            std::thread::sleep(Duration::from_millis(200));
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        (code, self.text())
    }

    /// Ctrl-C; the exit code and the whole output.
    fn interrupt(mut self) -> (i32, String) {
        let status =
            Command::new("kill").args(["-INT", &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success());
        let code = self.child.wait().expect("wait").code().unwrap_or(-1);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        (code, self.text())
    }
}

impl Drop for Attach {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_dev_environment_is_attached_over_ssh_with_its_ports_and_stopped() {
    if !docker_tests() {
        return;
    }
    agents_built();
    let image = dstack_hostssh::testkit::image();
    let home = tempfile::tempdir().expect("home");
    let home = home.path();
    let server = start_with_local_fleet(home);
    let name = format!("devenv-{}", std::process::id());
    let app_port = crate::unused_port();
    let file = home.join("dev.dstack.yml");
    let config = format!(
        "type: dev-environment\nname: {name}\nimage: {image}\nports:\n  - {app_port}\ninit:\n  - >-\n    {}\n",
        http_server(app_port)
    );
    std::fs::write(&file, config).expect("write");
    let (code, out, err) = cli(home, &["apply", "-f", &file.display().to_string(), "-y", "-d"]);
    assert_eq!(code, 0, "{out}{err}");
    let _abort = AbortRun(home, name.clone());
    wait_status(home, &name, Duration::from_secs(120), |s| s == "running" || finished(s));

    let mut attach = Attach::start(home, &name);
    let text = attach.wait_for("Press Ctrl+C to detach...", Duration::from_secs(90));
    assert!(text.contains(&format!("To connect to the run via SSH, use `ssh {name}`.")), "{text}");
    let local: u16 = text
        .lines()
        .find_map(|l| {
            l.trim().strip_prefix("- localhost:")?.strip_suffix(&format!(" -> {app_port}"))?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no forwarded port for {app_port} in {text}"));

    // ~/.ssh/config includes dstack's config, which has the run's host entry.
    let user_config = std::fs::read_to_string(home.join(".ssh/config")).expect("~/.ssh/config");
    assert!(user_config.starts_with("Include ~/.dstack/ssh/config\n"), "{user_config}");
    let dstack_config = home.join(".dstack/ssh/config");
    let entries = std::fs::read_to_string(&dstack_config).expect("~/.dstack/ssh/config");
    assert!(entries.contains(&format!("Host {name}\n    HostName 127.0.0.1\n")), "{entries}");

    // The system ssh reaches the environment by the run's name.
    let out = Command::new("ssh")
        .arg("-F")
        .arg(&dstack_config)
        .args(["-o", "BatchMode=yes", &name, "echo hi"])
        .output()
        .expect("ssh runs");
    assert!(out.status.success(), "ssh failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hi");

    // The configured port answers through the tunnel's local port.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if http_get(local).is_some_and(|t| t.contains("hello-from-env")) {
            break;
        }
        assert!(Instant::now() < deadline, "nothing answered on the forwarded port {local}");
        std::thread::sleep(Duration::from_millis(300));
    }

    let (code, text) = attach.interrupt();
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&format!("To re-attach, run `dstack attach {name}`")), "{text}");
    let entries = std::fs::read_to_string(&dstack_config).expect("config");
    assert!(!entries.contains(&format!("Host {name}\n")), "detach removes the host entries: {entries}");

    let (code, out, err) = cli(home, &["stop", &name, "-y"]);
    assert_eq!(code, 0, "{out}{err}");
    let run = wait_status(home, &name, Duration::from_secs(60), finished);
    assert_eq!(run["status"], "terminated", "{run}");
    stop(server);
}

#[test]
fn inactivity_duration_ends_a_dev_environment_nobody_attached_to() {
    if !docker_tests() {
        return;
    }
    agents_built();
    let image = dstack_hostssh::testkit::image();
    let home = tempfile::tempdir().expect("home");
    let home = home.path();
    let server = start_with_local_fleet(home);
    let name = format!("idle-{}", std::process::id());
    let file = home.join("idle.dstack.yml");
    std::fs::write(
        &file,
        format!("type: dev-environment\nname: {name}\nimage: {image}\ninactivity_duration: 3s\n"),
    )
    .expect("write");
    let (code, out, err) = cli(home, &["apply", "-f", &file.display().to_string(), "-y", "-d"]);
    assert_eq!(code, 0, "{out}{err}");
    let _abort = AbortRun(home, name.clone());
    let run = wait_status(home, &name, Duration::from_secs(120), finished);
    let sub = &run["jobs"][0]["job_submissions"][0];
    assert_eq!(sub["termination_reason"], "inactivity_duration_exceeded", "{run}");
    let message = sub["termination_reason_message"].as_str().unwrap_or_default();
    assert!(message.starts_with("The job was inactive for "), "{message}");
    assert!(message.ends_with(" seconds, exceeding the inactivity_duration of 3 seconds"), "{message}");
    // dstack's run reading: a job ended by the server without a retry event fails the run.
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(sub["status"], "terminated", "{run}");
    stop(server);
}
