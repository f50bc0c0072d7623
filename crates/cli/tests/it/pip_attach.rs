//! The real dstack 0.22.5 CLI (pip) attached to jobs on an SSH-fleet host. Needs
//! `DSTACK_TEST_DOCKER=1` and `DSTACK_ORACLE_VENV`, a venv with `dstack==0.22.5` (scripts/test
//! runs this module once it has made `.venv-dstack`); without them the test prints why it
//! skips.
//!
//! dstack's `attach --logs` and attached `apply` jump through the host's sshd (where the run's
//! key is let in by the shim's `host_ssh_keys`) to the job's sshd on `localhost:10022`, forward
//! the runner's `localhost:10999` and stream the job's output from its `/logs_ws`; `ssh <run>`
//! works with the host entries they write. A run that is stopped or ends leaves nothing: no
//! key line on the host, no container, no host entries.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dstack_hostssh::testkit::{HostKind, TestHosts, openssh_text};

use crate::devenv::{Attach, finished, wait_status};
use crate::local_fleet::agents_built;
use crate::server::{RemoveContainers, cli, start_env, stop};
use crate::ssh_fleet::{docker_tests, status, wait_for, write_key};

/// `$DSTACK_ORACLE_VENV/bin/dstack`, or why the test cannot run.
pub(crate) fn pip_dstack() -> Result<PathBuf, String> {
    let venv = std::env::var_os("DSTACK_ORACLE_VENV")
        .ok_or("DSTACK_ORACLE_VENV is not set (a venv with dstack==0.22.5)")?;
    let exe = PathBuf::from(venv).join("bin").join("dstack");
    if exe.exists() { Ok(exe) } else { Err(format!("{} does not exist", exe.display())) }
}

/// The pip CLI with `home` as its home (where our server wrote `~/.dstack/config.yml`).
pub(crate) fn pip(exe: &Path, home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args(args).current_dir(home).env("HOME", home);
    cmd.envs([("NO_COLOR", "1"), ("COLUMNS", "200"), ("TERM", "dumb"), ("PYTHONUNBUFFERED", "1")]);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("DSTACK_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// `ssh <host> <command>` with the host entries the pip CLI wrote; its stdout.
fn ssh(home: &Path, host: &str, command: &str) -> String {
    let out = Command::new("ssh")
        .arg("-F")
        .arg(home.join(".dstack/ssh/config"))
        .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", host, command])
        .output()
        .expect("ssh runs");
    assert!(out.status.success(), "ssh {host} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ssh_config(home: &Path) -> String {
    std::fs::read_to_string(home.join(".dstack/ssh/config")).unwrap_or_default()
}

/// Waits until the run's traces are gone: the host's authorized_keys is as before, no
/// container of the run is left on the engine, the pip CLI's host entries are removed.
fn assert_left_clean(hosts: &TestHosts, home: &Path, run: &str, keys_before: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let keys = hosts.sh(0, "cat /root/.ssh/authorized_keys");
        let left = Command::new("docker")
            .args(["ps", "-aq", "--filter", "label=ai.dstack.shim.is-task=true", "--filter"])
            .arg(format!("name={run}-0-0"))
            .output()
            .expect("docker ps");
        let containers = String::from_utf8_lossy(&left.stdout).trim().to_owned();
        let config = ssh_config(home);
        let entries =
            config.contains(&format!("Host {run}\n")) || config.contains(&format!("Host {run}-host\n"));
        if keys == keys_before && containers.is_empty() && !entries {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "run {run} left traces: keys changed {}, containers [{containers}], host entries {entries}\n{config}",
            keys != keys_before
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn the_dstack_cli_attaches_over_ssh_through_the_host_and_streams_logs() {
    if !docker_tests() {
        return;
    }
    let exe = match pip_dstack() {
        Ok(exe) => exe,
        Err(why) => {
            eprintln!("skipping the pip dstack attach test: {why}");
            return;
        }
    };
    agents_built();
    let image = dstack_hostssh::testkit::image();
    let pid = std::process::id();
    let _cleanup = RemoveContainers(format!("pip-{pid}-"));
    let hosts = TestHosts::start(&[HostKind::WithDocker]);
    let keys_before = hosts.sh(0, "cat /root/.ssh/authorized_keys");
    let home = tempfile::tempdir().expect("home");
    let home = home.path();
    let key = write_key(home, "fleet_key", &openssh_text(&hosts.key), &hosts.public_key);
    let fleet = crate::ssh_fleet::nested_fleet_file(home, &key, &hosts.hosts[0].ip);
    let server = start_env(home, &[]);
    let (code, out, err) = cli(home, &["apply", "-f", &fleet.display().to_string(), "-y", "-d"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_for(home, Duration::from_secs(180), "the host idle", |is| is.len() == 1 && status(&is[0]) == "idle");
    let task = |name: &str, commands: &[&str]| {
        let file = home.join(format!("{name}.dstack.yml"));
        let mut text = format!(
            "type: task\nname: {name}\nimage: {image}\nfleets: [hosts]\n\
             resources: {{cpu: 1.., memory: 0.5GB.., disk: 1GB..}}\ncommands:\n"
        );
        for c in commands {
            text.push_str(&format!("  - '{c}'\n"));
        }
        std::fs::write(&file, text).expect("write");
        file.display().to_string()
    };

    // `dstack attach --logs` of a running task, which the user then stops.
    let name = format!("pip-{pid}-attach");
    let file = task(&name, &["echo first-line-of-the-job", "while true; do sleep 1; done"]);
    let out = pip(&exe, home, &["apply", "-f", &file, "-y", "-d"]).output().expect("pip dstack apply");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    wait_status(home, &name, Duration::from_secs(120), |s| s == "running" || finished(s));
    let mut attach = Attach::spawn(pip(&exe, home, &["attach", "--logs", &name]));
    let text = attach.wait_for("first-line-of-the-job", Duration::from_secs(120));
    assert!(text.contains(&format!("To connect to the run via SSH, use `ssh {name}`.")), "{text}");
    let config = ssh_config(home);
    let ip = &hosts.hosts[0].ip;
    assert!(
        config.contains(&format!("Host {name}-host\n    HostName {ip}\n    Port 22\n    User root\n")),
        "{config}"
    );
    assert!(config.contains(&format!("Host {name}\n    HostName localhost\n    Port 10022\n")), "{config}");
    assert!(config.contains(&format!("    ProxyJump {name}-host\n")), "{config}");
    let keys = hosts.sh(0, "cat /root/.ssh/authorized_keys");
    assert_eq!(keys.lines().filter(|l| l.contains(" dstack-task=")).count(), 1, "{keys}");
    assert_eq!(ssh(home, &name, "echo through-the-host-$((6*7))").trim(), "through-the-host-42");
    let (code, out, err) = cli(home, &["stop", &name, "-y"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, text) = attach.wait_exit(Duration::from_secs(90));
    assert_eq!(code, 1, "a stopped run is not done: {text}");
    let run = wait_status(home, &name, Duration::from_secs(60), finished);
    assert_eq!(run["status"], "terminated", "{run}");
    assert_left_clean(&hosts, home, &name, &keys_before);

    // Attached `dstack apply`: the job waits for a file that `ssh <run>` creates, then ends.
    let name = format!("pip-{pid}-apply");
    let file = task(
        &name,
        &["echo waiting-for-ssh", "while [ ! -e /tmp/go ]; do sleep 0.2; done", "echo released-by-ssh"],
    );
    let mut apply = Attach::spawn(pip(&exe, home, &["apply", "-f", &file, "-y"]));
    apply.wait_for("waiting-for-ssh", Duration::from_secs(180));
    ssh(home, &name, "touch /tmp/go");
    let (code, text) = apply.wait_exit(Duration::from_secs(90));
    assert_eq!(code, 0, "{text}");
    let after = text.split("waiting-for-ssh").nth(1).unwrap_or_default();
    assert!(after.contains("released-by-ssh"), "{text}");
    let run = wait_status(home, &name, Duration::from_secs(60), finished);
    assert_eq!(run["status"], "done", "{run}");
    assert_left_clean(&hosts, home, &name, &keys_before);

    crate::fleets::delete_fleet_and_wait(home, "hosts", Duration::from_secs(60));
    assert_eq!(stop(server), 0);
}
