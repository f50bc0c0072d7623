//! Hosts that fail under a running job (`DSTACK_TEST_DOCKER=1`), on real parts: OpenSSH test
//! hosts running our shim, jobs in containers of the shared Docker engine, a `dstack server`
//! process that reaches each host only through its one SSH connection.
//!
//! - A host killed mid-run: its instance is marked `unreachable` within seconds, the job ends
//!   with dstack's `instance_unreachable` once the disconnected timeout is over (shortened here
//!   with `DSTACK_SERVER_JOB_DISCONNECTED_TIMEOUT`; dstack's is 2 minutes), a run without
//!   `retry` fails, one with `retry: {on_events: [error, interruption]}` is resubmitted (a lost
//!   host is an `error`) and then fails with no capacity (its only host is unreachable, and
//!   `no-capacity` is not among its events). The logs pulled before the kill are all there,
//!   once. A host that comes back is reachable and idle again, and the task its lost job left
//!   on it is removed (dstack's dangling-task cleanup).
//! - A network partition that heals, then a `kill -9` of the host's shim: the job goes on and
//!   ends `done` with every line of its output, once and in order; the instance went
//!   `unreachable` and came back; the server used at most one more SSH login.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dstack_hostssh::testkit::{HostKind, TestHosts, openssh_text};
use serde_json::Value;
use tempfile::TempDir;

use crate::local_fleet::runner_image;
use crate::server::{cli, start_env, stop};

fn docker_tests() -> bool {
    std::env::var("DSTACK_TEST_DOCKER").as_deref() == Ok("1")
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("the docker CLI runs");
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Applies a fleet `name` of host `idx`, whose shim runs its job containers on the shared
/// engine (in the host's network namespace).
fn apply_fleet(home: &Path, hosts: &TestHosts, idx: usize, name: &str) {
    let key = home.join("fleet_key");
    if !key.exists() {
        std::fs::write(&key, format!("{}\n", openssh_text(&hosts.key).trim_end())).unwrap();
        std::fs::write(home.join("fleet_key.pub"), format!("{}\n", hosts.public_key)).unwrap();
    }
    let file = home.join(format!("{name}.yml"));
    std::fs::write(
        &file,
        format!(
            "type: fleet\nname: {name}\nenv:\n  DSTACK_SHIM_DOCKER_SELF: {}\nssh_config:\n  user: root\n  \
             identity_file: {}\n  hosts:\n    - {}\n",
            hosts.hosts[idx].container,
            key.display(),
            hosts.hosts[idx].ip
        ),
    )
    .unwrap();
    let (code, out, err) = cli(home, &["apply", "-f", &file.display().to_string(), "-y", "-d"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// The one instance of fleet `name`.
fn instance(home: &Path, name: &str) -> Value {
    let (code, out, err) = cli(home, &["fleet", "get", name]);
    assert_eq!(code, 0, "{out}{err}");
    let fleet: Value = serde_json::from_str(&out).unwrap();
    fleet["instances"][0].clone()
}

fn server_log(home: &Path) -> String {
    std::fs::read_to_string(home.join("server.log")).unwrap_or_default()
}

/// Polls `probe` every 0.3 s until it gives `Some`, or fails after `within`.
fn wait<T>(home: &Path, within: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(out) = probe() {
            return out;
        }
        assert!(Instant::now() < deadline, "{what} within {within:?}\nserver log:\n{}", server_log(home));
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The run as `dstack ps -a --json` shows it.
fn run(home: &Path, name: &str) -> Value {
    crate::server::ps_run(home, name)
}

fn submissions(run: &Value) -> Vec<Value> {
    run["jobs"][0]["job_submissions"].as_array().cloned().unwrap_or_default()
}

/// Submits a task on fleet `fleet` printing `line 1` … `line <n>`, one every 0.5 s.
fn submit_task(home: &Path, name: &str, fleet: &str, n: usize, extra: &str) {
    let file = home.join(format!("{name}.task.yml"));
    std::fs::write(
        &file,
        format!(
            "type: task\nname: {name}\nimage: dstack-rs-runner-test:1\nfleets: [{fleet}]\n{extra}\
             resources: {{cpu: 1.., memory: 0.5GB.., disk: 1GB..}}\ncommands:\n  \
             - 'i=1; while [ $i -le {n} ]; do echo \"line $i\"; sleep 0.5; i=$((i+1)); done'\n"
        ),
    )
    .unwrap();
    let (code, out, err) = cli(home, &["apply", "-f", &file.display().to_string(), "-y", "-d"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// The numbers of the `line N` lines the server stored for the run's latest submission, in
/// the order it serves them.
fn logged_lines(home: &Path, name: &str) -> Vec<usize> {
    let (code, out, err) = cli(home, &["logs", name]);
    assert_eq!(code, 0, "{out}{err}");
    out.lines().filter_map(|l| l.trim().strip_prefix("line ")?.parse().ok()).collect()
}

/// `1..=n` exactly: nothing lost, nothing twice, in order.
fn assert_complete(lines: &[usize], what: &str) {
    let expected: Vec<usize> = (1..=lines.len()).collect();
    assert_eq!(lines, expected.as_slice(), "{what}: the logs have gaps, repeats or are out of order");
}

/// The task containers of a job left on the shared engine, running or not.
fn task_containers(job: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-aq",
        "--filter",
        "label=ai.dstack.shim.is-task=true",
        "--filter",
        &format!("name={job}"),
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}

/// The running task container of a job (earlier runs of a test may have left stopped ones).
fn running_task_container(job: &str) -> Option<String> {
    task_containers(job).into_iter().find(|id| docker(&["inspect", "-f", "{{.State.Running}}", id]) == "true")
}

/// Removes job containers a dead host left on the shared engine (no shim will come back for
/// them), also when the test fails.
struct RemoveOnDrop(Vec<String>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for id in &self.0 {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
    }
}

fn ip_of(container: &str) -> String {
    docker(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container])
}

#[test]
fn a_killed_host_ends_its_job_and_comes_back_clean() {
    if !docker_tests() {
        return;
    }
    runner_image();
    let hosts = TestHosts::start(&[HostKind::WithDocker, HostKind::WithDocker]);
    let home = TempDir::new().unwrap();
    let home = home.path();
    let env =
        [("DSTACK_SERVER_INSTANCE_CHECK_INTERVAL", "1"), ("DSTACK_SERVER_JOB_DISCONNECTED_TIMEOUT", "10")];
    let server = start_env(home, &env);
    // One fleet per host, so that each run has exactly one host to lose.
    apply_fleet(home, &hosts, 0, "lost");
    apply_fleet(home, &hosts, 1, "lost-retry");
    for name in ["lost", "lost-retry"] {
        wait(home, Duration::from_secs(180), &format!("fleet {name} idle"), || {
            (instance(home, name)["status"] == "idle").then_some(())
        });
    }
    submit_task(home, "plain", "lost", 600, "");
    submit_task(
        home,
        "again",
        "lost-retry",
        600,
        "retry:\n  on_events: [error, interruption]\n  duration: 10m\n",
    );
    for name in ["plain", "again"] {
        wait(home, Duration::from_secs(120), &format!("{name} printing"), || {
            (logged_lines(home, name).len() >= 6).then_some(())
        });
    }

    // The hosts die. A job container joined its host's network namespace, but the engine
    // keeps it running when the host container is killed (the namespace lives while a process
    // holds it); a host that dies takes its jobs with it, so they are killed too.
    let jobs: Vec<String> = ["plain-0-0", "again-0-0"]
        .iter()
        .map(|job| running_task_container(job).unwrap_or_else(|| panic!("no running container for {job}")))
        .collect();
    let _cleanup = RemoveOnDrop(jobs.clone());
    let killed = Instant::now();
    for (idx, id) in jobs.iter().enumerate() {
        docker(&["kill", &hosts.hosts[idx].container]);
        let running = docker(&["inspect", "-f", "{{.State.Running}}", id]);
        eprintln!("job container {id} after its host was killed: running={running}");
        if running == "true" {
            docker(&["kill", id]);
        }
    }
    let before_kill = logged_lines(home, "plain");

    wait(home, Duration::from_secs(30), "the instance marked unreachable", || {
        (instance(home, "lost")["unreachable"] == true).then_some(())
    });
    eprintln!("instance unreachable {:.1} s after the kill", killed.elapsed().as_secs_f64());
    let ended = wait(home, Duration::from_secs(90), "the run without retry failed", || {
        let r = run(home, "plain");
        (r["status"] == "failed").then_some(r)
    });
    eprintln!(
        "run failed {:.1} s after the kill (disconnected timeout 10 s)",
        killed.elapsed().as_secs_f64()
    );
    let subs = submissions(&ended);
    assert_eq!(subs.len(), 1, "no retry: {ended:#}");
    assert_eq!(subs[0]["termination_reason"], "instance_unreachable", "{ended:#}");
    assert_eq!(subs[0]["status"], "failed", "{ended:#}");
    let lines = logged_lines(home, "plain");
    assert_complete(&lines, "plain");
    assert!(lines.len() >= before_kill.len(), "logs were lost: {} < {}", lines.len(), before_kill.len());
    let i = instance(home, "lost");
    assert_eq!(i["busy_blocks"], 0, "the lost job still holds its block: {i:#}");

    // With `retry` on errors: resubmitted, then no capacity (the one host is unreachable), and
    // `no-capacity` is not an event it retries on.
    let retried = wait(home, Duration::from_secs(120), "the retried run failed", || {
        let r = run(home, "again");
        (r["status"] == "failed").then_some(r)
    });
    eprintln!("retried run failed {:.1} s after the kill", killed.elapsed().as_secs_f64());
    // `ps` shows the latest submission: the second one, which found no capacity.
    let latest = submissions(&retried).pop().expect("a submission");
    assert_eq!(latest["submission_num"], 1, "not resubmitted: {retried:#}");
    assert_eq!(latest["termination_reason"], "failed_to_start_due_to_no_capacity", "{retried:#}");
    assert_eq!(retried["termination_reason"], "job_failed", "{retried:#}");

    // The first host comes back (a reboot: the same container, its shim started as the boot
    // would). It is reachable and idle again, and the task the lost job left on it is removed.
    let back = Instant::now();
    let ip = hosts.hosts[0].ip.clone();
    docker(&["start", &hosts.hosts[0].container]);
    assert_eq!(ip_of(&hosts.hosts[0].container), ip, "the host came back with another address");
    hosts.sh(
        0,
        "cd / && setsid -f sh /root/.dstack/shim-supervisor.sh >> /root/.dstack/shim.log 2>&1 < /dev/null",
    );
    wait(home, Duration::from_secs(60), "the host reachable and idle again", || {
        let i = instance(home, "lost");
        (i["unreachable"] == false && i["status"] == "idle" && i["busy_blocks"] == 0).then_some(())
    });
    wait(home, Duration::from_secs(60), "the lost job's container removed", || {
        docker(&["ps", "-aq", "--filter", &format!("id={}", jobs[0])]).is_empty().then_some(())
    });
    eprintln!("host back and clean {:.1} s after its restart", back.elapsed().as_secs_f64());
    assert!(server_log(home).contains("removing a task no job stands for"), "removed by someone else");

    for name in ["lost", "lost-retry"] {
        crate::fleets::delete_fleet(home, name, Duration::from_secs(30));
    }
    assert_eq!(stop(server), 0);
}

#[test]
fn a_job_outlives_a_network_partition_and_a_shim_restart() {
    if !docker_tests() {
        return;
    }
    runner_image();
    let hosts = TestHosts::start(&[HostKind::WithDocker]);
    let home = TempDir::new().unwrap();
    let home = home.path();
    // dstack's 2-minute disconnected timeout: a partition of seconds must not end the job.
    let server = start_env(home, &[("DSTACK_SERVER_INSTANCE_CHECK_INTERVAL", "1")]);
    apply_fleet(home, &hosts, 0, "flaky");
    wait(home, Duration::from_secs(180), "the host idle", || {
        (instance(home, "flaky")["status"] == "idle").then_some(())
    });
    let n_lines = 120;
    submit_task(home, "steady", "flaky", n_lines, "");
    wait(home, Duration::from_secs(120), "the job printing", || {
        (logged_lines(home, "steady").len() >= 4).then_some(())
    });
    let logins = hosts.n_logins(0);

    // A partition: the host is cut off from the server's network for ~10 s, then comes back
    // with the same address. The instance is seen unreachable meanwhile.
    let container = hosts.hosts[0].container.as_str();
    let cut = Instant::now();
    docker(&["network", "disconnect", &hosts.network, container]);
    let mut seen_unreachable = false;
    while cut.elapsed() < Duration::from_secs(10) {
        seen_unreachable |= instance(home, "flaky")["unreachable"] == true;
        std::thread::sleep(Duration::from_millis(300));
    }
    docker(&["network", "connect", &hosts.network, container]);
    assert_eq!(ip_of(container), hosts.hosts[0].ip, "the host came back with another address");
    let seen_unreachable = seen_unreachable || instance(home, "flaky")["unreachable"] == true;
    assert!(seen_unreachable, "the instance was never marked unreachable during the partition");
    wait(home, Duration::from_secs(60), "the instance reachable again", || {
        (instance(home, "flaky")["unreachable"] == false).then_some(())
    });
    eprintln!("partition healed; reachable again {:.1} s after the cut", cut.elapsed().as_secs_f64());
    let r = run(home, "steady");
    assert_eq!(r["status"], "running", "the job did not survive the partition: {r:#}");

    // The shim dies (kill -9); its supervisor starts it again 3 s later, it finds the job's
    // container and the job goes on.
    let shim_before = hosts.sh(0, "ps -eo pid,comm | awk '$2==\"dstack-shim\"{print $1}'");
    assert!(!shim_before.is_empty(), "no shim on the host");
    hosts.sh(0, &format!("kill -9 {}", shim_before.split_whitespace().collect::<Vec<_>>().join(" ")));
    let shim_after = wait(home, Duration::from_secs(30), "the shim restarted", || {
        let pids = hosts.sh(0, "ps -eo pid,comm | awk '$2==\"dstack-shim\"{print $1}'");
        (!pids.is_empty() && pids != shim_before).then_some(pids)
    });
    eprintln!("shim restarted: {} -> {}", shim_before.trim(), shim_after.trim());
    let r = run(home, "steady");
    assert_eq!(r["status"], "running", "the job did not survive the shim restart: {r:#}");

    let done = wait(home, Duration::from_secs(180), "the run done", || {
        let r = run(home, "steady");
        matches!(r["status"].as_str(), Some("done" | "failed" | "terminated")).then_some(r)
    });
    let subs = submissions(&done);
    assert_eq!((done["status"].as_str(), subs.len()), (Some("done"), 1), "{done:#}");
    assert_eq!(subs[0]["termination_reason"], "done_by_runner", "{done:#}");
    let lines = logged_lines(home, "steady");
    assert_complete(&lines, "steady");
    assert_eq!(lines.len(), n_lines, "lines lost");
    // The session survived the partition or was made once more; never one per poll.
    let extra = hosts.n_logins(0).saturating_sub(logins);
    eprintln!("SSH logins during the partition and the shim restart: {extra}");
    assert!(extra <= 1, "{extra} new SSH logins: {}", hosts.sshd_log(0));
    wait(home, Duration::from_secs(30), "the instance idle", || {
        let i = instance(home, "flaky");
        (i["status"] == "idle" && i["busy_blocks"] == 0 && i["unreachable"] == false).then_some(())
    });
    assert!(task_containers("steady-0-0").is_empty(), "the job's container is left");
    let (code, _, _) = cli(home, &["fleet", "delete", "flaky", "-y"]);
    assert_eq!(code, 0);
    assert_eq!(stop(server), 0);
}
