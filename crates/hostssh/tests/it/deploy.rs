//! Deploying the real shim to test hosts, polling it through one tunnel, reconnecting, and
//! uninstalling.

use std::time::{Duration, Instant};

use dstack_agent_proto::ShimClient;
use dstack_hostssh::testkit::{HostKind, TestHosts, keypair};
use dstack_hostssh::{Arch, Connection, DeployError, DeployParams, Supervisor, deploy, uninstall, unit_file};

use crate::{agent_binaries, enabled};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Every path on the host's root file system outside the volatile dirs, with the
/// authorized_keys contents (which we edit in place).
fn file_list(hosts: &TestHosts, idx: usize) -> String {
    hosts.sh(
        idx,
        "find / -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp -o -path /var/log \\) \
         -prune -o -print | sort; cat /root/.ssh/authorized_keys /home/dstack/.ssh/authorized_keys",
    )
}

fn params<'a>(shim: &'a [u8], runner: &'a [u8], project_key: &str) -> DeployParams<'a> {
    DeployParams {
        shim,
        shim_arch: Arch::current().expect("a supported build arch"),
        runner: Some(runner),
        authorized_keys: vec![project_key.to_owned()],
        env: vec![("HF_TOKEN".to_owned(), "secret \"value\"".to_owned())],
        start_timeout: Duration::from_secs(60),
    }
}

#[tokio::test]
async fn deploy_poll_through_one_tunnel_reconnect_and_uninstall() {
    if !enabled() {
        return;
    }
    let bin = agent_binaries();
    let shim = std::fs::read(bin.join("dstack-shim")).expect("dstack-shim built");
    let runner = std::fs::read(bin.join("dstack-runner")).expect("dstack-runner built");
    let hosts = TestHosts::start(&[HostKind::WithDocker, HostKind::Plain]);
    let (_, project_key) = keypair();
    let before = file_list(&hosts, 0);

    // Both hosts at once: the one with Docker comes up, the other is reported by name.
    let keys = [hosts.key.clone()];
    let (target0, target1) = (hosts.target(0, "dstack"), hosts.target(1, "root"));
    let (with_docker, without) = tokio::join!(
        Connection::connect(&target0, &keys, TIMEOUT),
        Connection::connect(&target1, &keys, TIMEOUT)
    );
    let (conn, plain) = (with_docker.expect("connects"), without.expect("connects"));
    let params = params(&shim, &runner, &project_key);
    let started = Instant::now();
    let (deployed, refused) = tokio::join!(deploy(&conn, &params), deploy(&plain, &params));
    let deployed = deployed.expect("deploys on the host with Docker");
    eprintln!("deploy took {:?}", started.elapsed());
    let err = refused.expect_err("no Docker");
    assert!(matches!(err, DeployError::DockerMissing { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: Docker is not installed; install Docker Engine on the host (dstack runs jobs in containers)",
            hosts.hosts[1].ip
        )
    );

    assert_eq!(deployed.supervisor, Supervisor::Detached);
    let info = &deployed.host_info;
    assert!(info.cpus >= 1 && info.memory > 0 && info.disk_size > 0, "{info:?}");
    assert_eq!(info.gpu_vendor, "none");
    assert!(info.addresses.iter().any(|a| a.starts_with(&format!("{}/", hosts.hosts[0].ip))), "{info:?}");
    let env = hosts.sh(0, "cat /root/.dstack/shim.env");
    assert!(env.contains("HF_TOKEN=\"secret \\\"value\\\"\"\n"), "{env}");
    assert!(
        hosts
            .sh(0, "cat /home/dstack/.ssh/authorized_keys")
            .contains(&format!("{project_key} # added by dstack"))
    );

    // 100 requests through one tunnel: one SSH login in all.
    let client = ShimClient::new(&format!("http://{}", deployed.shim_addr));
    for _ in 0..100 {
        let health = client.healthcheck().await.expect("healthy through the tunnel");
        assert_eq!(health.service, "dstack-shim");
    }
    assert_eq!(conn.forward(10998).await.expect("same tunnel"), deployed.shim_addr);
    assert_eq!(hosts.n_logins(0), 1);
    assert_eq!(conn.n_handshakes(), 1);
    // The pid file holds the process group of the loop and the shim.
    let groups = hosts.sh(0, "cat /root/.dstack/shim.pid; ps -o pgid= -C dstack-shim");
    let groups: Vec<&str> = groups.split_whitespace().collect();
    assert!(groups.len() == 2 && groups[0] == groups[1], "{groups:?}");

    // Kill our sshd session on the host: the tunnel's next connection logs in again.
    hosts.sh(0, "for p in $(pgrep -f '^sshd: dstack'); do kill -9 $p; done");
    let mut revived = false;
    for _ in 0..20 {
        if client.healthcheck().await.is_ok() {
            revived = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(revived, "the tunnel works again after the session was killed");
    assert_eq!(conn.n_handshakes(), 2);
    assert_eq!(hosts.n_logins(0), 2);

    // A second deploy is idempotent (same key not added twice, shim restarted).
    let again = deploy(&conn, &params).await.expect("deploys again");
    assert_eq!(again.shim_addr, deployed.shim_addr);
    assert_eq!(hosts.sh(0, "grep -c 'added by dstack' /home/dstack/.ssh/authorized_keys").trim(), "1");
    assert_eq!(hosts.sh(0, "pgrep -c -x dstack-shim || true").trim(), "1");

    uninstall(&conn).await.expect("uninstalls");
    let left = "pgrep -x dstack-shim; pgrep -x -f 'sh /root/.dstack/shim-supervisor.sh'; true";
    assert_eq!(hosts.sh(0, left).trim(), "", "no shim or supervisor is left");
    assert_eq!(file_list(&hosts, 0), before, "the host is as it was");
}

#[tokio::test]
async fn another_architecture_is_refused_by_name() {
    if !enabled() {
        return;
    }
    let hosts = TestHosts::start(&[HostKind::Plain]);
    let conn = Connection::connect(&hosts.target(0, "root"), hosts.keys(), TIMEOUT).await.expect("connects");
    let other = match Arch::current() {
        Some(Arch::Arm64) => Arch::Amd64,
        _ => Arch::Arm64,
    };
    let params = DeployParams { shim_arch: other, ..params(b"", b"", "") };
    let err = deploy(&conn, &params).await.expect_err("refused");
    assert!(matches!(err, DeployError::NoShimForArch { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with(&format!("{}: no dstack binaries built for", hosts.hosts[0].ip)), "{text}");
    // Nothing was installed.
    assert_eq!(hosts.sh(0, "ls /usr/local/bin; test -e /root/.dstack && echo home; true").trim(), "");
}

/// `systemctl show dstack-shim -p <property> --value` on host `idx`.
fn unit_property(hosts: &TestHosts, idx: usize, property: &str) -> String {
    hosts.sh(idx, &format!("systemctl show dstack-shim -p {property} --value")).trim().to_owned()
}

/// How many times systemd reloaded its units since the host booted.
fn n_daemon_reloads(hosts: &TestHosts, idx: usize) -> usize {
    hosts
        .sh(idx, "journalctl _PID=1 -o cat --no-pager | grep -c '^Reloading\\.$' || true")
        .trim()
        .parse()
        .unwrap_or(0)
}

#[tokio::test]
async fn deploy_as_a_systemd_unit_that_restarts_the_shim_and_uninstall() {
    if !enabled() {
        return;
    }
    let bin = agent_binaries();
    let shim = std::fs::read(bin.join("dstack-shim")).expect("dstack-shim built");
    let runner = std::fs::read(bin.join("dstack-runner")).expect("dstack-runner built");
    let hosts = TestHosts::start(&[HostKind::Systemd]);
    assert_eq!(hosts.sh(0, "cat /proc/1/comm").trim(), "systemd");
    assert_eq!(hosts.sh(0, "systemctl is-active ssh").trim(), "active", "sshd is systemd's service");
    let (_, project_key) = keypair();
    let before = file_list(&hosts, 0);

    let conn =
        Connection::connect(&hosts.target(0, "dstack"), hosts.keys(), TIMEOUT).await.expect("connects");
    let params = params(&shim, &runner, &project_key);
    let deployed = deploy(&conn, &params).await.expect("deploys");
    assert_eq!(deployed.supervisor, Supervisor::Systemd);
    assert_eq!(hosts.sh(0, "cat /etc/systemd/system/dstack-shim.service"), unit_file());
    assert_eq!(hosts.sh(0, "systemctl is-enabled dstack-shim").trim(), "enabled");
    assert_eq!(hosts.sh(0, "systemctl is-active dstack-shim").trim(), "active");
    // systemd runs the unit as written: restarted after any exit, 3 s later.
    let restart = unit_file().lines().find_map(|l| l.strip_prefix("Restart=")).expect("Restart=").to_owned();
    assert_eq!(unit_property(&hosts, 0, "Restart"), restart);
    assert_eq!(unit_property(&hosts, 0, "RestartUSec"), "3s");
    assert_eq!(unit_property(&hosts, 0, "EnvironmentFiles"), "/root/.dstack/shim.env (ignore_errors=no)");
    let main_pid = unit_property(&hosts, 0, "MainPID");
    assert_eq!(hosts.sh(0, "pgrep -x dstack-shim").trim(), main_pid, "the unit's main process is the shim");
    assert_eq!(
        hosts.sh(0, "test -e /root/.dstack/shim.pid && echo pid; true").trim(),
        "",
        "no detached loop"
    );
    let client = ShimClient::new(&format!("http://{}", deployed.shim_addr));
    assert_eq!(client.healthcheck().await.expect("healthy through the tunnel").service, "dstack-shim");
    assert!(deployed.host_info.cpus >= 1, "{:?}", deployed.host_info);

    // Kill the shim: systemd starts a new one, which answers through the same tunnel.
    hosts.sh(0, &format!("kill -9 {main_pid}"));
    let started = Instant::now();
    let new_pid = loop {
        let pid = unit_property(&hosts, 0, "MainPID");
        if pid != "0" && pid != main_pid && client.healthcheck().await.is_ok() {
            break pid;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "systemd did not restart the shim in 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(3), "restarted after RestartSec=3, not {waited:?}");
    assert_eq!(unit_property(&hosts, 0, "NRestarts"), "1");
    assert_eq!(hosts.sh(0, "pgrep -x dstack-shim").trim(), new_pid);
    assert_eq!(conn.n_handshakes(), 1, "the tunnel outlived the shim");

    // A second deploy restarts the unit in place.
    let again = deploy(&conn, &params).await.expect("deploys again");
    assert_eq!(again.supervisor, Supervisor::Systemd);
    assert_eq!(hosts.sh(0, "pgrep -c -x dstack-shim || true").trim(), "1");
    assert_ne!(unit_property(&hosts, 0, "MainPID"), new_pid);

    let reloads = n_daemon_reloads(&hosts, 0);
    uninstall(&conn).await.expect("uninstalls");
    assert_eq!(hosts.sh(0, "pgrep -x dstack-shim; true").trim(), "", "no shim is left");
    assert_eq!(unit_property(&hosts, 0, "LoadState"), "not-found");
    assert_eq!(
        hosts.sh(0, "systemctl is-enabled dstack-shim 2>&1; true").trim(),
        "Failed to get unit file state for dstack-shim.service: No such file or directory"
    );
    // Two reloads: `systemctl disable`'s own, with the unit file still there, and the one after
    // it was removed.
    assert_eq!(n_daemon_reloads(&hosts, 0), reloads + 2, "systemd reloaded its units");
    // The volumes at /usr/local/bin and /root/.dstack are emptied (file_list does not enter them).
    assert_eq!(
        hosts.sh(0, "ls -A /usr/local/bin /root/.dstack"),
        "/root/.dstack:\n\n/usr/local/bin:\ndocker\n"
    );
    assert_eq!(file_list(&hosts, 0), before, "the host is as it was");
}
