//! `dstack-shim` as a real process, driving real `dstack-runner` processes.

mod docker;
mod process;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use dstack_agent_proto::ShimClient;
use dstack_agent_proto::shim::{TaskInfoResponse, TaskStatus};

/// The `dstack-runner` binary, built once per test run (cargo builds only this package's bins
/// for its tests).
pub(crate) fn runner_binary() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let exe = std::env::current_exe().expect("test exe");
        let bin_dir = exe.parent().and_then(Path::parent).expect("target/debug").to_owned();
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "dstack-runner", "--bin", "dstack-runner"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building dstack-runner");
        bin_dir.join("dstack-runner")
    })
}

/// A shim process on a free port; killed (not its runners) on drop.
pub(crate) struct Shim {
    pub(crate) child: Child,
    pub(crate) client: ShimClient,
}

impl Shim {
    pub(crate) fn start(home: &Path, extra: &[&str]) -> Shim {
        Shim::start_with_env(home, extra, &[])
    }

    /// [`Shim::start`] with extra environment variables (`PATH` with fake GPU tools, say).
    pub(crate) fn start_with_env(home: &Path, extra: &[&str], env: &[(&str, String)]) -> Shim {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dstack-shim"))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .args(["--shim-http-port", "0", "--shim-home"])
            .arg(home)
            .arg("--runner-binary-path")
            .arg(runner_binary())
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("shim starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("reads the port line");
        let addr = line.trim().strip_prefix("listening on ").expect("listening line").to_owned();
        Shim { child, client: ShimClient::new(&format!("http://{addr}")) }
    }

    pub(crate) async fn wait_status(
        &self,
        id: &str,
        status: TaskStatus,
        limit: Duration,
    ) -> TaskInfoResponse {
        let deadline = Instant::now() + limit;
        loop {
            let info = self.client.get_task(id).await.expect("get task");
            if info.status == status {
                return info;
            }
            assert!(Instant::now() < deadline, "task {id} did not become {status:?} in {limit:?}: {info:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fake GPU host: `bin/` with a GPU tool printing `output`, `root/` as the device root.
pub(crate) struct FakeHost {
    pub(crate) dir: tempfile::TempDir,
}

impl FakeHost {
    pub(crate) fn new(tool: &str, output: &str) -> FakeHost {
        let dir = tempfile::tempdir().expect("fake host");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).expect("bin");
        std::fs::write(dir.path().join("output"), output).expect("output");
        let script = format!("#!/bin/sh\ncat '{}'\n", dir.path().join("output").display());
        std::fs::write(bin.join(tool), script).expect("tool");
        std::fs::set_permissions(bin.join(tool), std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        std::fs::create_dir_all(dir.path().join("root/dev/dri")).expect("dev");
        FakeHost { dir }
    }

    pub(crate) fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("root")
    }

    /// A device file that is really `target` (Docker follows the link).
    pub(crate) fn device(&self, path: &str, target: &str) {
        std::os::unix::fs::symlink(target, self.root().join(path.trim_start_matches('/')))
            .expect("device link");
    }

    /// A shim on this host (Docker allowed).
    pub(crate) fn start(&self, home: &std::path::Path) -> Shim {
        self.start_with(home, &[])
    }

    /// [`FakeHost::start`] with more shim flags.
    pub(crate) fn start_with(&self, home: &std::path::Path, extra: &[&str]) -> Shim {
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let root = self.root().display().to_string();
        let mut args = vec!["--device-root", root.as_str()];
        args.extend_from_slice(extra);
        Shim::start_with_env(home, &args, &[("PATH", path)])
    }
}

/// Pulls the job's runner until the job is over (30 s at most); returns its output.
pub(crate) async fn job_output(runner: &dstack_agent_proto::RunnerClient) -> String {
    let mut cursor = 0;
    let mut out = Vec::new();
    for _ in 0..300 {
        let pull = runner.pull(cursor).await.expect("pull");
        cursor = pull.last_updated;
        for log in &pull.job_logs {
            out.extend_from_slice(&log.message);
        }
        if !pull.has_more {
            return String::from_utf8_lossy(&out).into_owned();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the job did not finish: {}", String::from_utf8_lossy(&out));
}
