//! SSH fleets on real hosts (`DSTACK_TEST_DOCKER=1`): OpenSSH containers of the hostssh test
//! kit, a `dstack server` process, and our CLI's `dstack apply -f fleet.yml -y -d`. Hosts are
//! deployed (idle, with their CPUs, memory and disk), reached only through the server's one
//! SSH connection per host (sshd counts one login per host for many health checks), found
//! again after a `kill -9` of the server without a second deploy, and left clean by
//! `dstack fleet delete`. Hosts that cannot be added say why, naming the host. A re-applied
//! fleet adds and removes hosts in place, leaving the others (and their jobs) alone. On a host
//! whose PID 1 is systemd the shim is a unit that systemd restarts.

use std::path::Path;
use std::time::{Duration, Instant};

use dstack_hostssh::testkit::{HostKind, TestHosts, keypair, openssh_text};
use serde_json::Value;
use tempfile::TempDir;

use crate::local_fleet::agents_built;
use crate::server::{Server, cli, start_env, stop};

pub(crate) fn docker_tests() -> bool {
    std::env::var("DSTACK_TEST_DOCKER").as_deref() == Ok("1")
}

/// Writes a key pair as `<name>` and `<name>.pub` under `home`; returns the private key's path.
pub(crate) fn write_key(home: &Path, name: &str, private: &str, public: &str) -> String {
    let path = home.join(name);
    std::fs::write(&path, format!("{}\n", private.trim_end())).unwrap();
    std::fs::write(home.join(format!("{name}.pub")), format!("{public}\n")).unwrap();
    path.display().to_string()
}

fn fleet(home: &Path) -> Value {
    let (code, out, err) = cli(home, &["fleet", "get", "hosts"]);
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str(&out).unwrap()
}

/// `fleet.yml` in `home`: fleet `hosts` of the one test host at `ip` (as root with `key`),
/// whose shim runs task containers in the host's network namespace.
pub(crate) fn nested_fleet_file(home: &Path, key: &str, ip: &str) -> std::path::PathBuf {
    hosts_fleet_file(home, key, &[ip]).into()
}

/// Polls the fleet until `done` holds for its instances, or fails after `within`.
pub(crate) fn wait_for(
    home: &Path,
    within: Duration,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let f = fleet(home);
        let instances = f["instances"].as_array().cloned().unwrap_or_default();
        if done(&instances) {
            return instances;
        }
        let log = std::fs::read_to_string(home.join("server.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "{what}: {f:#}\nserver log:\n{log}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

pub(crate) fn status(i: &Value) -> &str {
    i["status"].as_str().unwrap_or_default()
}

fn by_host<'a>(instances: &'a [Value], host: &str) -> &'a Value {
    instances.iter().find(|i| i["hostname"] == host).unwrap_or_else(|| panic!("no instance for {host}"))
}

/// What a host looks like from the outside: our processes, files and its authorized keys.
fn host_state(hosts: &TestHosts, idx: usize) -> (String, String, String) {
    let procs = hosts.sh(idx, "ps -eo args | grep '[d]stack-shim' || true");
    let files = hosts.sh(
        idx,
        "ls -d /usr/local/bin/dstack-shim /usr/local/bin/dstack-runner /root/.dstack 2>/dev/null || true",
    );
    let keys = hosts.sh(idx, "cat /root/.ssh/authorized_keys");
    (procs, files, keys)
}

fn shim_pid(hosts: &TestHosts, idx: usize) -> String {
    hosts.sh(idx, "cat /root/.dstack/shim.pid").trim().to_owned()
}

#[test]
fn ssh_hosts_come_up_survive_a_server_kill_and_are_left_clean() {
    if !docker_tests() {
        return;
    }
    agents_built();
    let hosts = TestHosts::start(&[HostKind::WithDocker, HostKind::WithDocker]);
    let before: Vec<_> = (0..2).map(|i| host_state(&hosts, i)).collect();
    let home = TempDir::new().unwrap();
    let key = write_key(home.path(), "fleet_key", &openssh_text(&hosts.key), &hosts.public_key);
    let file = home.path().join("fleet.yml");
    std::fs::write(
        &file,
        format!(
            "type: fleet\nname: hosts\nssh_config:\n  user: root\n  identity_file: {key}\n  hosts:\n    - {}\n    - {}\n",
            hosts.hosts[0].ip, hosts.hosts[1].ip
        ),
    )
    .unwrap();
    // Health checks every 0.1 s, so that a few seconds make a hundred polls.
    let env = [("DSTACK_SERVER_INSTANCE_CHECK_INTERVAL", "0.1")];
    let server = start_env(home.path(), &env);

    let started = Instant::now();
    let (code, out, err) = cli(home.path(), &["apply", "-f", &file.display().to_string(), "-y", "-d"]);
    assert_eq!(code, 0, "{out}{err}");
    let instances = wait_for(home.path(), Duration::from_secs(180), "both hosts idle", |is| {
        is.len() == 2 && is.iter().all(|i| status(i) == "idle")
    });
    let deploy_secs = started.elapsed().as_secs_f64();
    eprintln!("two hosts deployed (concurrently) in {deploy_secs:.1} s");
    for (idx, host) in hosts.hosts.iter().enumerate() {
        let i = by_host(&instances, &host.ip);
        let r = &i["instance_type"]["resources"];
        assert!(r["cpus"].as_i64().unwrap() >= 1, "{i:#}");
        assert!(r["memory_mib"].as_i64().unwrap() > 100, "{i:#}");
        assert!(r["disk"]["size_mib"].as_i64().unwrap() > 0, "{i:#}");
        assert_eq!(i["backend"], "remote");
        assert_eq!(i["price"], 0.0);
        assert_eq!(i["unreachable"], false);
        assert!(i["total_blocks"].as_i64().unwrap() >= 1, "{i:#}");
        assert_eq!(i["termination_reason_message"], Value::Null, "{i:#}");
        assert!(!shim_pid(&hosts, idx).is_empty(), "the shim runs on {}", host.ip);
    }
    // No private key in any answer, nor in the database file (stored encrypted).
    let (_, out, _) = cli(home.path(), &["fleet", "list", "--json"]);
    assert!(!out.contains("PRIVATE KEY"), "{out}");
    let db = std::fs::read(home.path().join("server/data/sqlite.db")).unwrap();
    assert!(!String::from_utf8_lossy(&db).contains("PRIVATE KEY"), "the database holds a clear-text key");
    let (code, table, err) = cli(home.path(), &["fleet", "list", "-v"]);
    assert_eq!(code, 0, "{err}");
    assert!(table.contains("instance=0") && table.contains("idle") && table.contains("cpu="), "{table}");

    // Many health checks later: still one SSH login per host (the deploy's).
    std::thread::sleep(Duration::from_secs(12));
    for idx in 0..2 {
        assert_eq!(hosts.n_logins(idx), 1, "host {idx}: {}", hosts.sshd_log(idx));
    }

    // kill -9: after a restart the hosts are still idle, reached again through a new tunnel
    // (one more login each), and not deployed again (the same shim process).
    let pids: Vec<String> = (0..2).map(|i| shim_pid(&hosts, i)).collect();
    drop(server);
    let server: Server = start_env(home.path(), &env);
    let deadline = Instant::now() + Duration::from_secs(30);
    while (0..2).any(|i| hosts.n_logins(i) < 2) {
        assert!(Instant::now() < deadline, "the restarted server did not reach the hosts again");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    let instances = fleet(home.path())["instances"].as_array().cloned().unwrap();
    for i in &instances {
        assert_eq!((status(i), &i["unreachable"]), ("idle", &Value::Bool(false)), "{i:#}");
    }
    for (idx, pid) in pids.iter().enumerate() {
        assert_eq!(hosts.n_logins(idx), 2, "host {idx}: one new session after the restart");
        assert_eq!(&shim_pid(&hosts, idx), pid, "host {idx} was deployed again");
    }

    // Delete: the hosts are as they were, the fleet is gone.
    crate::fleets::delete_fleet_and_wait(home.path(), "hosts", Duration::from_secs(60));
    for (idx, b) in before.iter().enumerate() {
        assert_eq!(&host_state(&hosts, idx), b, "host {idx} is not as it was");
    }
    assert_eq!(stop(server), 0);
}

#[test]
fn hosts_that_cannot_be_added_say_why() {
    if !docker_tests() {
        return;
    }
    agents_built();
    let hosts = TestHosts::start(&[HostKind::WithDocker, HostKind::WithDocker, HostKind::Plain]);
    let home = TempDir::new().unwrap();
    let key = write_key(home.path(), "fleet_key", &openssh_text(&hosts.key), &hosts.public_key);
    let (wrong, wrong_pub) = keypair();
    let wrong = write_key(home.path(), "wrong_key", &openssh_text(&wrong), &wrong_pub);
    let [good, refused, no_docker] = [0, 1, 2].map(|i| hosts.hosts[i].ip.clone());
    let file = home.path().join("fleet.yml");
    std::fs::write(
        &file,
        format!(
            "type: fleet\nname: hosts\nssh_config:\n  user: root\n  identity_file: {key}\n  hosts:\n    - {good}\n    - hostname: {refused}\n      identity_file: {wrong}\n    - {no_docker}\n"
        ),
    )
    .unwrap();
    let server = start_env(home.path(), &[]);
    let (code, out, err) = cli(home.path(), &["apply", "-f", &file.display().to_string(), "-y", "-d"]);
    assert_eq!(code, 0, "{out}{err}");
    let message = |i: &Value| i["termination_reason_message"].as_str().unwrap_or_default().to_owned();
    let instances = wait_for(home.path(), Duration::from_secs(180), "one idle host, two errors", |is| {
        is.len() == 3
            && status(by_host(is, &good)) == "idle"
            && !message(by_host(is, &refused)).is_empty()
            && !message(by_host(is, &no_docker)).is_empty()
    });
    let refused_msg = message(by_host(&instances, &refused));
    assert!(refused_msg.contains(&refused) && refused_msg.contains("refused the key"), "{refused_msg}");
    assert_eq!(status(by_host(&instances, &refused)), "pending");
    let no_docker_msg = message(by_host(&instances, &no_docker));
    assert!(
        no_docker_msg.contains(&no_docker) && no_docker_msg.contains("Docker is not installed"),
        "{no_docker_msg}"
    );
    assert!(!refused_msg.contains("PRIVATE KEY") && !no_docker_msg.contains("PRIVATE KEY"));
    let (code, table, err) = cli(home.path(), &["fleet", "list", "-v"]);
    assert_eq!(code, 0, "{err}");
    assert!(table.contains("refused the key") && table.contains("Docker is not installed"), "{table}");

    crate::fleets::delete_fleet_and_wait(home.path(), "hosts", Duration::from_secs(60));
    assert!(hosts.sh(0, "ls /usr/local/bin/dstack-shim 2>/dev/null || true").is_empty(), "host 0 is clean");
    assert_eq!(stop(server), 0);
}

/// A task with an image runs on an SSH-fleet host: the host's shim (in its test container,
/// sharing this machine's Docker engine with `DSTACK_SHIM_DOCKER_SELF: auto`) starts the job's
/// container on the host's network, the server reaches the runner only through its SSH tunnel,
/// and `dstack apply` streams the output back and exits 0.
#[test]
fn a_task_runs_in_a_container_on_an_ssh_host() {
    if !docker_tests() {
        return;
    }
    crate::local_fleet::runner_image();
    let hosts = TestHosts::start(&[HostKind::WithDocker]);
    let home = TempDir::new().unwrap();
    let key = write_key(home.path(), "fleet_key", &openssh_text(&hosts.key), &hosts.public_key);
    let file = nested_fleet_file(home.path(), &key, &hosts.hosts[0].ip);
    let server = start_env(home.path(), &[]);
    let (code, out, err) = cli(home.path(), &["apply", "-f", &file.display().to_string(), "-y", "-d"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_for(home.path(), Duration::from_secs(180), "the host idle", |is| {
        is.len() == 1 && status(&is[0]) == "idle"
    });

    let task = home.path().join("task.yml");
    std::fs::write(
        &task,
        "type: task\nname: remote\nimage: dstack-rs-runner-test:1\nfleets: [hosts]\n\
         resources: {cpu: 1.., memory: 0.5GB.., disk: 1GB..}\ncommands:\n  \
         - 'echo \"on the host: $DSTACK_NODES_NUM node(s), master $DSTACK_MASTER_NODE_IP\"'\n",
    )
    .unwrap();
    let started = Instant::now();
    let (code, out, err) = cli(home.path(), &["apply", "-f", &task.display().to_string(), "-y"]);
    let log = std::fs::read_to_string(home.path().join("server.log")).unwrap_or_default();
    assert_eq!(code, 0, "{out}{err}\nserver log:\n{log}");
    eprintln!("apply to the end of the task on an SSH host: {:.2} s", started.elapsed().as_secs_f64());
    let expected = format!("on the host: 1 node(s), master {}", hosts.hosts[0].ip);
    assert!(out.contains(&expected), "{out}");

    let (code, out, err) = cli(home.path(), &["ps", "-a", "--json"]);
    assert_eq!(code, 0, "{err}");
    let runs: Value = serde_json::from_str(&out).unwrap();
    let jpd = &runs["runs"][0]["jobs"][0]["job_submissions"][0]["job_provisioning_data"];
    assert_eq!(jpd["hostname"], hosts.hosts[0].ip.as_str(), "{jpd:#}");
    assert_eq!(jpd["backend"], "remote");
    // The job's container is gone from the shared engine once the run is over.
    let left = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=ai.dstack.shim.is-task=true", "--filter", "name=remote-0-0"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&left.stdout).trim().is_empty(), "a task container is left");
    let (code, _, _) = cli(home.path(), &["fleet", "delete", "hosts", "-y"]);
    assert_eq!(code, 0);
    assert_eq!(stop(server), 0);
}

/// `fleet.yml` in `home`: fleet `hosts` of the test hosts at `ips` (as root with `key`), whose
/// shims run task containers in the hosts' network namespaces.
fn hosts_fleet_file(home: &Path, key: &str, ips: &[&str]) -> String {
    let file = home.join("fleet.yml");
    let hosts: String = ips.iter().map(|ip| format!("    - {ip}\n")).collect();
    std::fs::write(
        &file,
        format!(
            "type: fleet\nname: hosts\nenv:\n  DSTACK_SHIM_DOCKER_SELF: auto\nssh_config:\n  user: root\n  \
             identity_file: {key}\n  hosts:\n{hosts}"
        ),
    )
    .unwrap();
    file.display().to_string()
}

/// Re-applying a changed fleet updates it in place (issue #4): `dstack apply -f fleet.yml -y`
/// of host A, then of A and B (the plan says the change can be updated in place, as dstack
/// words it; B is deployed, A keeps its instance, its shim and its SSH session, and the job
/// running on A goes on), then of B alone (refused while A's job runs, as dstack refuses it;
/// once A is idle, A is released and left as it was, B untouched), A added back and at once
/// removed and added again (the new instance waits for the old one's release, then comes up),
/// then `fleet delete` leaves both hosts as they were.
#[test]
fn re_applying_a_fleet_adds_and_removes_hosts_in_place() {
    if !docker_tests() {
        return;
    }
    crate::local_fleet::runner_image();
    let hosts = TestHosts::start(&[HostKind::WithDocker, HostKind::WithDocker]);
    let before: Vec<_> = (0..2).map(|i| host_state(&hosts, i)).collect();
    let home = TempDir::new().unwrap();
    let home = home.path();
    let key = write_key(home, "fleet_key", &openssh_text(&hosts.key), &hosts.public_key);
    let [a, b] = [0, 1].map(|i| hosts.hosts[i].ip.clone());
    let server = start_env(home, &[]);
    let apply = |ips: &[&str]| {
        let file = hosts_fleet_file(home, &key, ips);
        let (code, out, err) = cli(home, &["apply", "-f", &file, "-y"]);
        (code, format!("{out}{err}"))
    };
    let in_place = "Found fleet hosts. Detected changes that can be updated in-place:\n\
                    - Configuration properties:\n  - ssh_config\n";

    // 1. Host A alone: `apply` waits for it.
    let (code, out) = apply(&[&a]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Fleet hosts does not exist yet."), "{out}");
    let instances =
        wait_for(home, Duration::from_secs(60), "A idle", |is| is.len() == 1 && status(&is[0]) == "idle");
    let a_instance = by_host(&instances, &a).clone();
    assert_eq!(a_instance["instance_num"], 0, "{a_instance:#}");
    assert_eq!(hosts.n_logins(0), 1, "{}", hosts.sshd_log(0));

    // A job keeps A busy.
    let task = home.join("task.yml");
    std::fs::write(
        &task,
        "type: task\nname: on-a\nimage: dstack-rs-runner-test:1\nfleets: [hosts]\n\
         resources: {cpu: 1.., memory: 0.5GB.., disk: 1GB..}\ncommands:\n  \
         - 'i=1; while true; do echo \"line $i\"; sleep 0.5; i=$((i+1)); done'\n",
    )
    .unwrap();
    let (code, out, err) = cli(home, &["apply", "-f", &task.display().to_string(), "-y", "-d"]);
    assert_eq!(code, 0, "{out}{err}");
    let running = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let run = crate::server::ps_run(home, "on-a");
            if run["status"] == "running" {
                return run;
            }
            let log = std::fs::read_to_string(home.join("server.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "{what}: {run:#}\nserver log:\n{log}");
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let run = running("the job runs on A");
    let submission = run["jobs"][0]["job_submissions"][0].clone();
    assert_eq!(submission["job_provisioning_data"]["hostname"], a.as_str(), "{submission:#}");
    wait_for(home, Duration::from_secs(30), "A busy", |is| status(&is[0]) == "busy");

    // 2. A and B: an in-place update; B is deployed, A is not touched.
    let (a_pid, a_logins) = (shim_pid(&hosts, 0), hosts.n_logins(0));
    let (code, out) = apply(&[&a, &b]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(in_place), "{out}");
    let instances = wait_for(home, Duration::from_secs(60), "B idle, A busy", |is| {
        is.len() == 2 && status(by_host(is, &b)) == "idle" && status(by_host(is, &a)) == "busy"
    });
    let a_now = by_host(&instances, &a);
    assert_eq!((&a_now["id"], &a_now["instance_num"]), (&a_instance["id"], &a_instance["instance_num"]));
    let b_instance = by_host(&instances, &b).clone();
    assert_eq!(b_instance["instance_num"], 1, "{b_instance:#}");
    assert_eq!(shim_pid(&hosts, 0), a_pid, "A was deployed again");
    assert_eq!(hosts.n_logins(0), a_logins, "a new SSH login on A: {}", hosts.sshd_log(0));
    let (b_pid, b_logins) = (shim_pid(&hosts, 1), hosts.n_logins(1));
    assert!(!b_pid.is_empty(), "the shim runs on B");
    // The job goes on: the same submission, still running, still logging.
    let lines = |home: &Path| {
        let (code, out, err) = cli(home, &["logs", "on-a"]);
        assert_eq!(code, 0, "{out}{err}");
        out.lines().filter(|l| l.trim().starts_with("line ")).count()
    };
    let n_lines = lines(home);
    std::thread::sleep(Duration::from_secs(2));
    let run = running("the job still runs");
    let submissions = run["jobs"][0]["job_submissions"].as_array().unwrap();
    assert_eq!(submissions.len(), 1, "{run:#}");
    assert_eq!(submissions[0]["id"], submission["id"]);
    assert!(lines(home) > n_lines, "the job stopped logging");

    // 3. B alone while A's job runs: refused, as dstack refuses it; nothing changes.
    let (code, out) = apply(&[&b]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains(in_place), "{out}");
    assert!(out.contains("Failed to delete fleet hosts instances [0]. Fleet instances are in use."), "{out}");
    let instances = fleet(home)["instances"].as_array().cloned().unwrap();
    assert_eq!(instances.len(), 2, "{instances:#?}");
    running("the job runs after the refused update");

    // Once A is idle, B alone: A is released and left as it was, B is untouched.
    let (code, out, err) = cli(home, &["stop", "on-a", "-y"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_for(home, Duration::from_secs(60), "A idle again", |is| status(by_host(is, &a)) == "idle");
    let (code, out) = apply(&[&b]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(in_place), "{out}");
    let instances = wait_for(home, Duration::from_secs(60), "A gone", |is| {
        is.iter().all(|i| i["hostname"] != a.as_str() || status(i) == "terminated")
    });
    let live: Vec<&Value> = instances.iter().filter(|i| status(i) != "terminated").collect();
    assert_eq!(live.len(), 1, "{instances:#?}");
    assert_eq!((&live[0]["id"], status(live[0])), (&b_instance["id"], "idle"));
    assert_eq!(&host_state(&hosts, 0), &before[0], "A is not as it was");
    assert_eq!(shim_pid(&hosts, 1), b_pid, "B was deployed again");
    assert_eq!(hosts.n_logins(1), b_logins, "a new SSH login on B: {}", hosts.sshd_log(1));

    // A removed and added back at once, while its release may still be under way: in the
    // end A has one instance, idle, with its shim running and answering health checks.
    let detached = |ips: &[&str]| {
        let file = hosts_fleet_file(home, &key, ips);
        let (code, out, err) = cli(home, &["apply", "-f", &file, "-y", "-d"]);
        assert_eq!(code, 0, "{ips:?}: {out}{err}");
    };
    let (code, out) = apply(&[&a, &b]);
    assert_eq!(code, 0, "{out}");
    let instances = fleet(home)["instances"].as_array().cloned().unwrap();
    let a_again = by_host(&instances, &a);
    assert_eq!((status(a_again), &a_again["instance_num"]), ("idle", &Value::from(0)), "{a_again:#}");
    assert_ne!(a_again["id"], a_instance["id"], "A added back is a new instance");
    detached(&[&b]);
    detached(&[&a, &b]);
    let settled = |is: &[Value]| {
        is.iter().filter(|i| i["hostname"] == a.as_str()).map(status).collect::<Vec<_>>() == ["idle"]
    };
    wait_for(home, Duration::from_secs(120), "A back", settled);
    std::thread::sleep(Duration::from_secs(8));
    let instances = wait_for(home, Duration::from_secs(1), "A still back", settled);
    let a_back = by_host(&instances, &a);
    assert_eq!(a_back["unreachable"], false, "{a_back:#}");
    assert!(!shim_pid(&hosts, 0).is_empty(), "no shim on A");
    let alive = hosts.sh(0, "kill -0 \"$(cat /root/.dstack/shim.pid)\" && echo alive || true");
    assert_eq!(alive.trim(), "alive", "A's shim is not running");

    // 5. Delete: both hosts as they were.
    crate::fleets::delete_fleet_and_wait(home, "hosts", Duration::from_secs(60));
    for (idx, b) in before.iter().enumerate() {
        assert_eq!(&host_state(&hosts, idx), b, "host {idx} is not as it was");
    }
    assert_eq!(stop(server), 0);
}

/// A host whose PID 1 is systemd (issue #4): `dstack apply -f fleet.yml` installs the shim as
/// the `dstack-shim` unit (enabled, active) and the host goes idle; a killed shim is started
/// again by systemd and the instance is idle again; `dstack fleet delete` disables and removes
/// the unit and leaves the host as it was.
#[test]
fn a_systemd_host_runs_the_shim_as_a_unit_that_outlives_a_kill() {
    if !docker_tests() {
        return;
    }
    agents_built();
    let hosts = TestHosts::start(&[HostKind::Systemd]);
    let before = host_state(&hosts, 0);
    let home = TempDir::new().unwrap();
    let key = write_key(home.path(), "fleet_key", &openssh_text(&hosts.key), &hosts.public_key);
    let file = hosts_fleet_file(home.path(), &key, &[&hosts.hosts[0].ip]);
    let server = start_env(home.path(), &[("DSTACK_SERVER_INSTANCE_CHECK_INTERVAL", "0.1")]);
    let unit = |property: &str| {
        hosts.sh(0, &format!("systemctl show dstack-shim -p {property} --value")).trim().to_owned()
    };

    let (code, out, err) = cli(home.path(), &["apply", "-f", &file, "-y", "-d"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_for(home.path(), Duration::from_secs(180), "the host idle", |is| {
        is.len() == 1 && status(&is[0]) == "idle"
    });
    assert_eq!(
        hosts.sh(0, "systemctl is-enabled dstack-shim; systemctl is-active dstack-shim"),
        "enabled\nactive\n"
    );
    assert_eq!(unit("Restart"), "always");
    assert_eq!(
        hosts.sh(0, "test -e /root/.dstack/shim.pid && echo pid; true").trim(),
        "",
        "no detached loop"
    );
    let pid = unit("MainPID");
    assert_eq!(hosts.sh(0, "pgrep -x dstack-shim").trim(), pid);

    // kill -9 the shim: systemd starts another, and the server finds the host idle again.
    hosts.sh(0, &format!("kill -9 {pid}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while unit("NRestarts") != "1" || unit("ActiveState") != "active" {
        assert!(Instant::now() < deadline, "systemd did not restart the shim");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_ne!(unit("MainPID"), pid);
    std::thread::sleep(Duration::from_secs(2));
    let instances = wait_for(home.path(), Duration::from_secs(30), "the host idle again", |is| {
        is.len() == 1 && status(&is[0]) == "idle" && is[0]["unreachable"] == false
    });
    assert_eq!(instances[0]["termination_reason_message"], Value::Null, "{:#}", instances[0]);

    crate::fleets::delete_fleet_and_wait(home.path(), "hosts", Duration::from_secs(60));
    assert_eq!(host_state(&hosts, 0), before, "the host is not as it was");
    assert_eq!(unit("LoadState"), "not-found");
    assert_eq!(hosts.sh(0, "find /etc/systemd -name 'dstack*'; pgrep -x dstack-shim; true"), "");
    assert_eq!(stop(server), 0);
}
