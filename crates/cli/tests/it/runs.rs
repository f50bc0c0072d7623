//! The run verbs against a real `dstack server` process: `apply -d`, `ps --json`, `logs`,
//! `stop`, `delete`, and attached `apply` streaming a task's output.
//!
//! Runs that need a machine use the server's `local` fleet (the agents are built first, as in
//! `local_fleet.rs`).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::server::{Server, cli, start, start_with_local_fleet};

/// A server and its home; stops the server (and its local shim) when dropped.
struct Env {
    home: TempDir,
    server: Option<Server>,
}

impl Env {
    fn new(local_fleet: bool) -> Env {
        let home = TempDir::new().unwrap();
        let server = if local_fleet { start_with_local_fleet(home.path()) } else { start(home.path(), &[]) };
        Env { home, server: Some(server) }
    }

    fn path(&self) -> &Path {
        self.home.path()
    }

    fn write(&self, name: &str, text: &str) -> String {
        std::fs::write(self.path().join(name), text).unwrap();
        self.path().join(name).display().to_string()
    }

    fn dstack(&self, args: &[&str]) -> (i32, String, String) {
        cli(self.path(), args)
    }

    /// `ps -a --json`'s run named `name`.
    fn run(&self, name: &str) -> Option<Value> {
        let (code, out, err) = self.dstack(&["ps", "-a", "--json"]);
        assert_eq!(code, 0, "{err}");
        let json: Value = serde_json::from_str(&out).unwrap();
        json["runs"].as_array().unwrap().iter().find(|r| r["run_spec"]["run_name"] == name).cloned()
    }

    /// Waits until `pred` holds for the run's status (at most 60 s).
    fn wait_status(&self, name: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.run(name).map(|r| r["status"].as_str().unwrap_or_default().to_owned());
            if let Some(status) = status.filter(|s| pred(s)) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "run {name} stayed {:?}",
                self.run(name).map(|r| r["status"].clone())
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Env {
    /// Ends the server and all it started (`Server`'s drop), without asserting: this may run
    /// while a failed test unwinds.
    fn drop(&mut self) {
        drop(self.server.take());
    }
}

fn finished(status: &str) -> bool {
    matches!(status, "done" | "failed" | "terminated")
}

const TASK: &str = "type: task\nname: t1\ncommands:\n  - echo hello\n";

#[test]
fn runs_without_fleets() {
    let env = Env::new(false);
    let file = env.write("task.yml", TASK);

    let (code, out, err) = env.dstack(&["apply", "-f", &file, "-y", "-d"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(" Project        main\n User           admin\n"), "{out}");
    assert!(out.contains("The project has no fleets. Create one before submitting a run."), "{out}");
    assert!(out.trim_end().ends_with("Run t1 submitted, detaching..."), "{out}");

    // ps --json: dstack's shape, the run as the API returns it.
    let run = env.run("t1").expect("t1 is listed");
    assert_eq!(run["project_name"], "main");
    assert_eq!(run["run_spec"]["configuration_path"], file.as_str());
    let status = env.wait_status("t1", finished);
    assert_eq!(status, "failed", "no fleet, no capacity");

    // Nothing active: `ps` shows the last run (dstack's fallback call).
    let (code, out, _) = env.dstack(&["ps"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with(" NAME  BACKEND  GPU  PRICE  STATUS"), "{out}");
    assert!(lines[1].starts_with(" t1 "), "{out}");

    // A run that never started has no logs; that is not an error.
    let (code, out, err) = env.dstack(&["logs", "t1"]);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");

    let (code, _, err) = env.dstack(&["logs", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("Run nope not found"), "{err}");
    let (code, _, err) = env.dstack(&["stop", "nope", "-y"]);
    assert_eq!(code, 1);
    assert!(err.contains("Run nope not found"), "{err}");

    let (code, out, err) = env.dstack(&["delete", "t1", "-y"]);
    assert_eq!((code, out.trim()), (0, "Run t1 deleted"), "{err}");
    let (code, out, _) = env.dstack(&["delete", "t1", "-y"]);
    assert_eq!((code, out.trim()), (1, "Run t1 does not exist"));
    assert!(env.run("t1").is_none());
}

#[test]
fn runs_on_the_local_fleet() {
    crate::local_fleet::agents_built();
    let env = Env::new(true);
    let resources = "resources:\n  cpu: 1..\n  memory: 0GB..\n  disk: null\n";

    // Attached: the plan, then the job's own output, then the verdict; exit 0 when done.
    let hello = env.write(
        "hello.yml",
        &format!("type: task\nname: hello\ncommands:\n  - echo hello-from-dstack\n  - echo second line\n{resources}"),
    );
    let (code, out, err) = env.dstack(&["apply", "-f", &hello, "-y"]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains(" #  BACKEND      RESOURCES"), "{out}");
    assert!(out.contains("hello-from-dstack\nsecond line\n"), "{out}");
    let (code, out, _) = env.dstack(&["logs", "hello"]);
    assert_eq!((code, out.as_str()), (0, "hello-from-dstack\nsecond line\n"));

    // `files:` are packed (ignore files respected), uploaded and unpacked for the job.
    std::fs::create_dir_all(env.path().join("data/sub")).unwrap();
    std::fs::write(env.path().join("data/hello.txt"), "hello-from-a-file\n").unwrap();
    std::fs::write(env.path().join("data/sub/skip.log"), "ignored\n").unwrap();
    std::fs::write(env.path().join("data/.dstackignore"), "*.log\n").unwrap();
    let files = env.write(
        "files.yml",
        &format!(
            "type: task\nname: files\ncommands:\n  - cat in-job/hello.txt\n  - ls in-job/sub | wc -l\n\
             files:\n  - data:in-job\n{resources}"
        ),
    );
    let (code, out, err) = env.dstack(&["apply", "-f", &files, "-y"]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("hello-from-a-file\n0\n"), "{out}");

    // A failing job: its output, why it failed, exit 1.
    let bad = env.write(
        "bad.yml",
        &format!("type: task\nname: bad\ncommands:\n  - echo failing\n  - exit 3\n{resources}"),
    );
    let (code, out, err) = env.dstack(&["apply", "-f", &bad, "-y"]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("failing\n"), "{out}");
    assert!(out.contains("Exited (3)"), "{out}");

    // Detached, then stop and delete.
    let sleeper = env.write(
        "sleep.yml",
        &format!("type: task\nname: sleeper\ncommands:\n  - echo sleeping\n  - sleep 300\n{resources}"),
    );
    let (code, out, err) = env.dstack(&["apply", "-f", &sleeper, "-y", "-d"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.trim_end().ends_with("Run sleeper submitted, detaching..."), "{out}");
    env.wait_status("sleeper", |s| s == "running");
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.dstack(&["logs", "sleeper"]).1 != "sleeping\n" {
        assert!(Instant::now() < deadline, "no logs from sleeper");
        std::thread::sleep(Duration::from_millis(300));
    }
    let (code, out, _) = env.dstack(&["ps"]);
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l.starts_with(" sleeper  ssh (local)") && l.contains("running")), "{out}");

    let (code, out, err) = env.dstack(&["stop", "sleeper", "-y"]);
    assert_eq!((code, out.trim()), (0, "Stopped"), "{err}");
    assert_eq!(env.wait_status("sleeper", finished), "terminated");
    let (code, out, err) = env.dstack(&["delete", "sleeper", "-y"]);
    assert_eq!((code, out.trim()), (0, "Run sleeper deleted"), "{err}");

    // Attached, Ctrl-C detaches: exit 0, how to follow and stop, and the run goes on.
    let sleeper2 = env.write(
        "sleep2.yml",
        &format!("type: task\nname: sleeper2\ncommands:\n  - echo sleeping\n  - sleep 300\n{resources}"),
    );
    let (code, out) = interrupt_when(env.path(), &["apply", "-f", &sleeper2, "-y"], "sleeping\n");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("dstack logs -f sleeper2"), "{out}");
    assert!(out.contains("dstack stop sleeper2"), "{out}");
    assert_eq!(env.run("sleeper2").unwrap()["status"], "running");
    let (code, out, err) = env.dstack(&["stop", "sleeper2", "-x", "-y"]);
    assert_eq!((code, out.trim()), (0, "Aborted"), "{err}");
    env.wait_status("sleeper2", finished);
}

/// Runs the CLI, sends SIGINT once its output contains `marker`, and returns its exit code
/// and whole output.
fn interrupt_when(home: &Path, args: &[&str], marker: &str) -> (i32, String) {
    use std::io::Read;
    use std::process::{Command, Stdio};
    use std::sync::{Arc, Mutex};

    let mut child = Command::new(env!("CARGO_BIN_EXE_dstack"))
        .args(args)
        .env("HOME", home)
        .env("NO_COLOR", "1")
        .env_remove("DSTACK_PROJECT")
        .env_remove("DSTACK_SERVER_URL")
        .env_remove("DSTACK_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let output = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().unwrap();
    let sink = output.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !String::from_utf8_lossy(&output.lock().unwrap()).contains(marker) {
        assert!(Instant::now() < deadline, "never saw {marker:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let code = child.wait().unwrap().code().unwrap_or(-1);
    reader.join().unwrap();
    let out = String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
    (code, out)
}
