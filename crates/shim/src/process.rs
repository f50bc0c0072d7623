//! Process mode: a task is a `dstack-runner start` child process on the host, in its own
//! process group, with its own temp dir and a free port. It takes its GPUs from the lock as a
//! container does, and the runner (so the job) gets `CUDA_VISIBLE_DEVICES` or
//! `ROCR_VISIBLE_DEVICES` naming only those. CPU and memory limits are not applied to host
//! processes (containers get them).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dstack_agent_proto::RUNNER_HTTP_PORT;
use dstack_agent_proto::runner_files;
use dstack_agent_proto::shim::{PortMapping, TaskConfig, TaskStatus, reason};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::gpu::Vendor;
use crate::tasks::{Handle, Task};
use crate::{Driver, Shim, devices};

const PORT_FILE: &str = "runner.port";
const OUTPUT_FILE: &str = "runner-output.log";

pub(crate) struct ProcessDriver {
    pub(crate) runner_binary: PathBuf,
    /// The host's GPU vendor and every GPU ID the lock hands out, for the runner's
    /// `CUDA_VISIBLE_DEVICES` / `ROCR_VISIBLE_DEVICES`.
    pub(crate) vendor: Option<Vendor>,
    pub(crate) gpu_ids: Vec<String>,
}

impl Driver for ProcessDriver {
    async fn run(&self, shim: Arc<Shim>, config: TaskConfig) {
        let id = config.id.clone();
        let Some(task) = shim.store.get(&id) else { return };
        let dir = task.runner_dir.clone();
        if !shim.store.advance(&id, TaskStatus::Preparing) {
            return;
        }
        // The task's GPUs, as a container's (§1.6 step 2): the runner and its job see only them.
        let held = match shim.store.acquire_gpus(&id, config.gpu) {
            Ok(ids) => ids,
            Err(e) => {
                shim.store.terminate(&id, reason::EXECUTOR_ERROR, &e);
                return;
            }
        };
        for status in [TaskStatus::Pulling, TaskStatus::Creating] {
            if !shim.store.advance(&id, status) {
                return;
            }
        }
        let env = devices::visible_devices_env(self.vendor, &held, &self.gpu_ids);
        let child = match self.spawn(&dir, &env) {
            Ok(child) => child,
            Err(message) => {
                shim.store.terminate(&id, reason::CREATING_CONTAINER_ERROR, &message);
                return;
            }
        };
        let Some(pid) = child.id().map(|p| p as i32) else {
            shim.store.terminate(&id, reason::CREATING_CONTAINER_ERROR, "the runner exited at once");
            return;
        };
        let recorded = shim.store.update(&id, |t| {
            t.handle = Handle::Process { pid };
            t.status != TaskStatus::Terminated
        });
        if recorded != Some(true) {
            // Terminated (or removed) while starting.
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            return;
        }
        let waiter = tokio::spawn(wait_child(shim.clone(), id.clone(), dir.clone(), child));
        match wait_port(&dir, Duration::from_secs(20)).await {
            Some(port) => {
                shim.store.update(&id, |t| {
                    if t.status == TaskStatus::Creating {
                        t.status = TaskStatus::Running;
                        t.ports = Some(vec![PortMapping { host: port, container: RUNNER_HTTP_PORT }]);
                    }
                });
            }
            None => {
                let message = format!("the runner reported no port\n{}", last_lines(&dir, 5));
                shim.store.terminate(&id, reason::CONTAINER_EXITED_WITH_ERROR, &message);
                kill_task(&dir, pid);
            }
        }
        let _ = waiter.await;
    }

    async fn terminate(&self, task: &Task, timeout: Duration) {
        let Handle::Process { pid } = task.handle else { return };
        if !is_our_runner(pid, &task.runner_dir) {
            return;
        }
        if !timeout.is_zero() {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline && is_our_runner(pid, &task.runner_dir) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        kill_task(&task.runner_dir, pid);
    }

    async fn remove(&self, task: &Task) -> Result<(), String> {
        match std::fs::remove_dir_all(&task.runner_dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("cannot remove {}: {e}", task.runner_dir.display())),
        }
    }

    async fn restore(&self, shim: Arc<Shim>, task: Task) {
        let Handle::Process { pid } = task.handle else {
            shim.store.terminate(
                &task.id,
                reason::EXECUTOR_ERROR,
                "the shim restarted while the task was starting",
            );
            return;
        };
        // Not our child any more: poll until the process is gone.
        while is_our_runner(pid, &task.runner_dir) {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let code = std::fs::read_to_string(task.runner_dir.join(runner_files::EXIT_STATUS))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        finish(&shim, &task.id, &task.runner_dir, code);
    }
}

impl ProcessDriver {
    fn spawn(&self, dir: &Path, env: &[(String, String)]) -> Result<tokio::process::Child, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let _ = std::fs::remove_file(dir.join(PORT_FILE));
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(OUTPUT_FILE))
            .map_err(|e| format!("cannot open the runner output file: {e}"))?;
        let stderr = output.try_clone().map_err(|e| e.to_string())?;
        tokio::process::Command::new(&self.runner_binary)
            .arg("start")
            .arg("--temp-dir")
            .arg(dir)
            // No sshd for host processes: it would be the host's, as the shim's user.
            .args(["--ssh-port", "0", "--http-address", "127.0.0.1", "--http-port", "0", "--port-file"])
            .arg(dir.join(PORT_FILE))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.runner_binary.display()))
    }
}

async fn wait_child(shim: Arc<Shim>, id: String, dir: PathBuf, mut child: tokio::process::Child) {
    let code = child.wait().await.ok().map(|s| s.code().unwrap_or(-1));
    finish(&shim, &id, &dir, code);
}

/// The runner exited: `done_by_runner` on 0, else the last lines of its output.
fn finish(shim: &Shim, id: &str, dir: &Path, code: Option<i32>) {
    if code == Some(0) {
        shim.store.terminate(id, reason::DONE_BY_RUNNER, "");
    } else {
        shim.store.terminate(id, reason::CONTAINER_EXITED_WITH_ERROR, &last_lines(dir, 5));
    }
}

async fn wait_port(dir: &Path, limit: Duration) -> Option<u16> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(port) =
            std::fs::read_to_string(dir.join(PORT_FILE)).ok().and_then(|s| s.trim().parse().ok())
        {
            return Some(port);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Whether `pid` is alive and still the runner of `dir` (not a recycled pid).
pub(crate) fn is_our_runner(pid: i32, dir: &Path) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let needle = dir.as_os_str().as_encoded_bytes();
    // A zombie has an empty cmdline: it is gone for our purposes.
    !cmdline.is_empty() && cmdline.windows(needle.len()).any(|w| w == needle)
}

/// SIGKILL to the job's process group (it has its own) and the runner's.
fn kill_task(dir: &Path, pid: i32) {
    if let Some(job) =
        std::fs::read_to_string(dir.join(runner_files::JOB_PID)).ok().and_then(|s| s.trim().parse().ok())
    {
        let _ = killpg(Pid::from_raw(job), Signal::SIGKILL);
    }
    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
}

fn last_lines(dir: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(dir.join(OUTPUT_FILE)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
