//! Multi-node tasks on a `placement: cluster` SSH fleet of two real hosts
//! (`DSTACK_TEST_DOCKER=1`): OpenSSH containers of the hostssh test kit whose shims run their
//! task containers on this machine's Docker engine, each on its own host's network
//! (`DSTACK_SHIM_DOCKER_SELF: auto`). One fleet serves three runs in turn: a `nodes: 2`
//! task whose nodes see their cluster and reach each other, a `nodes: 2` task whose node 1
//! fails (the whole run ends `failed`, node 0 is stopped, no container is left), and a
//! `nodes: 3` task the fleet cannot hold (no capacity, nothing left claimed).

use std::path::Path;
use std::time::{Duration, Instant};

use dstack_hostssh::testkit::{HostKind, TestHosts, openssh_text};
use serde_json::Value;
use tempfile::TempDir;

use crate::server::{cli, start_env, stop};

fn docker_tests() -> bool {
    std::env::var("DSTACK_TEST_DOCKER").as_deref() == Ok("1")
}

fn server_log(home: &Path) -> String {
    std::fs::read_to_string(home.join("server.log")).unwrap_or_default()
}

fn instances(home: &Path) -> Vec<Value> {
    let (code, out, err) = cli(home, &["fleet", "get", "cluster"]);
    assert_eq!(code, 0, "{out}{err}");
    let fleet: Value = serde_json::from_str(&out).unwrap();
    fleet["instances"].as_array().cloned().unwrap_or_default()
}

/// Waits until both hosts are idle with no block taken.
fn wait_idle(home: &Path, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let is = instances(home);
        if is.len() == 2 && is.iter().all(|i| i["status"] == "idle" && i["busy_blocks"] == 0) {
            return;
        }
        assert!(Instant::now() < deadline, "hosts not idle: {is:#?}\nserver log:\n{}", server_log(home));
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Waits until run `name` has finished; returns it.
fn wait_finished(home: &Path, name: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (code, out, err) = cli(home, &["ps", "-a", "--json"]);
        assert_eq!(code, 0, "{err}");
        let runs: Value = serde_json::from_str(&out).unwrap();
        let run = runs["runs"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["run_spec"]["run_name"] == name))
            .cloned()
            .unwrap_or(Value::Null);
        if ["done", "failed", "terminated"].contains(&run["status"].as_str().unwrap_or_default()) {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "run {name} not finished: {run:#}\nserver log:\n{}",
            server_log(home)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The latest submission of job `job_num`.
fn submission(run: &Value, job_num: i64) -> &Value {
    let job = run["jobs"]
        .as_array()
        .and_then(|js| js.iter().find(|j| j["job_spec"]["job_num"] == job_num))
        .unwrap_or_else(|| panic!("no job {job_num}: {run:#}"));
    job["job_submissions"].as_array().and_then(|s| s.last()).unwrap()
}

fn logs(home: &Path, run: &str, job: &str) -> String {
    let (code, out, err) = cli(home, &["logs", run, "--job", job]);
    assert_eq!(code, 0, "{out}{err}");
    out
}

fn task_containers(run: &str) -> String {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            "label=ai.dstack.shim.is-task=true",
            "--filter",
            &format!("name={run}-"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn apply_task(home: &Path, name: &str, body: &str) {
    let file = home.join(format!("{name}.yml"));
    std::fs::write(
        &file,
        format!(
            "type: task\nname: {name}\nimage: dstack-rs-runner-test:1\nfleets: [cluster]\n\
             resources: {{cpu: 1.., memory: 0.5GB.., disk: 1GB..}}\n{body}"
        ),
    )
    .unwrap();
    let (code, out, err) = cli(home, &["apply", "-f", &file.display().to_string(), "-y", "-d"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn multi_node_tasks_on_a_cluster_fleet() {
    if !docker_tests() {
        return;
    }
    crate::local_fleet::runner_image();
    let hosts = TestHosts::start(&[HostKind::WithDocker, HostKind::WithDocker]);
    let (ip0, ip1) = (hosts.hosts[0].ip.clone(), hosts.hosts[1].ip.clone());
    let home = TempDir::new().unwrap();
    let home = home.path();
    let key = home.join("fleet_key");
    std::fs::write(&key, format!("{}\n", openssh_text(&hosts.key).trim_end())).unwrap();
    std::fs::write(home.join("fleet_key.pub"), format!("{}\n", hosts.public_key)).unwrap();
    let fleet = home.join("fleet.yml");
    std::fs::write(
        &fleet,
        format!(
            "type: fleet\nname: cluster\nplacement: cluster\nenv:\n  DSTACK_SHIM_DOCKER_SELF: auto\n\
             ssh_config:\n  user: root\n  identity_file: {}\n  hosts:\n    - {ip0}\n    - {ip1}\n",
            key.display()
        ),
    )
    .unwrap();
    let server = start_env(home, &[]);
    let (code, out, err) = cli(home, &["apply", "-f", &fleet.display().to_string(), "-y", "-d"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_idle(home, Duration::from_secs(240));

    // (a) Two nodes see their cluster; node 1 reaches the master's host over the fleet network.
    apply_task(
        home,
        "mn",
        "nodes: 2\ncommands:\n  \
         - 'echo \"rank=$DSTACK_NODE_RANK nodes=$DSTACK_NODES_NUM master=$DSTACK_MASTER_NODE_IP\"'\n  \
         - 'echo \"ips=$(echo $DSTACK_NODES_IPS) gpus=$DSTACK_GPUS_PER_NODE/$DSTACK_GPUS_NUM\"'\n  \
         - 'echo \"hostfile=$DSTACK_MPI_HOSTFILE\"; cat $DSTACK_MPI_HOSTFILE'\n  \
         - 'echo \"ssh: $(echo $(ls ~/.ssh))\"'\n  \
         - 'if [ \"$DSTACK_NODE_RANK\" = 1 ]; then bash -c \"exec 3<>/dev/tcp/$DSTACK_MASTER_NODE_IP/22 && \
           read -t 10 b <&3 && echo reached the master: \\${b:0:7}\"; fi'\n",
    );
    let run = wait_finished(home, "mn", Duration::from_secs(180));
    let (log0, log1) = (logs(home, "mn", "0"), logs(home, "mn", "1"));
    assert_eq!(run["status"], "done", "{run:#}\n{log0}\n{log1}\nserver log:\n{}", server_log(home));
    assert_eq!(
        submission(&run, 0)["job_provisioning_data"]["hostname"],
        ip0.as_str(),
        "the master on host 0"
    );
    assert_eq!(submission(&run, 1)["job_provisioning_data"]["hostname"], ip1.as_str());
    for (rank, log) in [(0, &log0), (1, &log1)] {
        assert!(log.contains(&format!("rank={rank} nodes=2 master={ip0}")), "{log}");
        assert!(log.contains(&format!("ips={ip0} {ip1} gpus=0/0")), "{log}");
        assert!(log.contains(&format!("hostfile=/dstack/mpi/hostfile\n{ip0}\n{ip1}\n")), "{log}");
        assert!(log.contains("ssh: config dstack_job\n"), "{log}");
    }
    assert!(log1.contains("reached the master: SSH-2.0"), "{log1}");
    wait_idle(home, Duration::from_secs(60));

    // (b) Node 1 fails while node 0 sleeps: the run fails at once, node 0 is stopped.
    apply_task(
        home,
        "mn-fail",
        "nodes: 2\ncommands:\n  \
         - 'if [ \"$DSTACK_NODE_RANK\" = 1 ]; then sleep 3; echo failing; exit 1; fi; sleep 600'\n",
    );
    let started = Instant::now();
    let run = wait_finished(home, "mn-fail", Duration::from_secs(120));
    eprintln!("nodes: 2 with a failing node, apply to failed: {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(run["status"], "failed", "{run:#}");
    assert_eq!(run["termination_reason"], "job_failed", "{run:#}");
    let (node0, node1) = (submission(&run, 0), submission(&run, 1));
    assert_eq!(node1["termination_reason"], "container_exited_with_error", "{node1:#}");
    assert_eq!(node1["exit_status"], 1, "{node1:#}");
    assert_eq!(node0["status"], "terminated", "{node0:#}");
    assert_eq!(node0["termination_reason"], "terminated_by_server", "{node0:#}");
    assert!(started.elapsed() < Duration::from_secs(60), "the run took {:?} to fail", started.elapsed());
    assert!(task_containers("mn-fail").is_empty(), "a task container is left");
    wait_idle(home, Duration::from_secs(60));

    // (c) Three nodes on two hosts: no capacity, dstack's message, nothing claimed.
    apply_task(home, "mn-three", "nodes: 3\ncommands:\n  - 'echo never'\n");
    let run = wait_finished(home, "mn-three", Duration::from_secs(60));
    assert_eq!(run["status"], "failed", "{run:#}");
    let master = submission(&run, 0);
    assert_eq!(master["termination_reason"], "failed_to_start_due_to_no_capacity", "{master:#}");
    assert_eq!(
        master["termination_reason_message"],
        "No matching fleet found. Possible reasons: https://dstack.ai/docs/guides/troubleshooting/#no-fleets"
    );
    for job in run["jobs"].as_array().unwrap() {
        let sub = job["job_submissions"].as_array().and_then(|s| s.last()).unwrap();
        assert!(sub["job_provisioning_data"].is_null(), "no node was placed: {sub:#}");
    }
    wait_idle(home, Duration::from_secs(10));

    let (code, _, _) = cli(home, &["fleet", "delete", "cluster", "-y"]);
    assert_eq!(code, 0);
    assert_eq!(stop(server), 0);
}
