//! A gateway on a host reached over SSH (`backend: local` with `local.ssh`, ours;
//! `DSTACK_TEST_DOCKER=1`): two OpenSSH containers of the hostssh test kit, one an SSH fleet
//! that runs a service's replica in a container, the other the gateway's host, where the
//! server deploys its own `dstack` binary as `dstack gateway run` over SSH (as the `dstack`
//! user, through sudo). Real HTTP requests to `<run>.<domain>` at the gateway host's address
//! reach the replica through the gateway's SSH tunnel to the fleet host, and only with a
//! member's token (`auth: true`: the gateway asks the server, which listens on this
//! machine's loopback, through the server's reverse tunnel to the gateway host); a replica
//! on the server's own machine (the local fleet) is served there too, through a reverse
//! tunnel of its own; a restarted server
//! finds the gateway again without starting a second one, and registers the local replica
//! again with its new tunnel; a gateway killed with its
//! supervisor is deployed again and serves what it had; deleting the gateway leaves nothing
//! on its host; a gateway whose host refuses the key, or does not answer, fails, saying why,
//! without the key.

use std::path::Path;
use std::time::{Duration, Instant};

use dstack_hostssh::testkit::{HostKind, TestHosts, keypair, openssh_text};
use serde_json::Value;
use tempfile::TempDir;

use crate::server::{cli, ps_run, start_with_local_fleet_env, stop, stop_keeping_jobs};
use crate::services::get_with_host;
use crate::ssh_fleet::{docker_tests, nested_fleet_file, status, wait_for, write_key};

fn wait<T>(home: &Path, what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        let log = std::fs::read_to_string(home.join("server.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "timed out waiting for {what}\nserver log:\n{log}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn gateways(home: &Path) -> Vec<Value> {
    let (code, out, err) = cli(home, &["gateway", "list", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str::<Value>(&out).unwrap().as_array().cloned().unwrap_or_default()
}

fn gateway(home: &Path, name: &str) -> Option<Value> {
    gateways(home).into_iter().find(|g| g["name"] == name)
}

/// The gateway processes on host `idx` (their command lines).
fn gateway_processes(hosts: &TestHosts, idx: usize) -> Vec<String> {
    hosts.sh(idx, "ps -eo args | grep '[g]ateway run' || true").lines().map(str::to_owned).collect()
}

#[test]
fn a_gateway_on_an_ssh_host_serves_a_service_and_is_removed_cleanly() {
    if !docker_tests() {
        eprintln!("skipped: set DSTACK_TEST_DOCKER=1 to run the Docker tests");
        return;
    }
    crate::local_fleet::agents_built();
    crate::services::service_image();
    let _containers = crate::server::RemoveContainers("sshgwsvc-".to_owned());
    let hosts = TestHosts::start(&[HostKind::WithDocker, HostKind::Plain]);
    let (fleet_ip, gw_ip) = (hosts.hosts[0].ip.clone(), hosts.hosts[1].ip.clone());
    let dir = TempDir::new().unwrap();
    let home = dir.path();
    let key = write_key(home, "key", &openssh_text(&hosts.key), &hosts.public_key);
    let mut server = start_with_local_fleet_env(home, &[]);
    let token = server.token.clone();

    // The fleet whose host runs the replica.
    let fleet = nested_fleet_file(home, &key, &fleet_ip);
    let (code, out, err) = cli(home, &["apply", "-f", &fleet.display().to_string(), "-y", "-d"]);
    assert_eq!(code, 0, "{out}{err}");

    // The gateway, on the other host, as a sudo user.
    let http_port = 8080;
    let gw_file = home.join("gw.yml");
    std::fs::write(
        &gw_file,
        format!(
            "type: gateway\nname: ssh-gw\nbackend: local\ndomain: gw.test\ncertificate: null\n\
             local:\n  http_port: {http_port}\n  ssh:\n    hostname: {gw_ip}\n    user: dstack\n    \
             identity_file: {key}\n"
        ),
    )
    .unwrap();
    let (code, out, err) = cli(home, &["apply", "-f", &gw_file.display().to_string(), "-y"]);
    assert_eq!(code, 0, "{out}{err}");
    let gw = wait(home, "the gateway running", Duration::from_secs(180), || {
        gateway(home, "ssh-gw").filter(|g| g["status"] == "running")
    });
    assert_eq!(gw["replicas"][0]["hostname"], gw_ip.as_str(), "{gw:#}");
    assert_eq!(gw["configuration"]["local"]["ssh"]["ssh_key"]["private"], Value::Null, "{gw:#}");
    assert_eq!(gateway_processes(&hosts, 1).len(), 1, "one gateway process on its host");
    assert!(
        hosts.sh(1, "cat /root/.dstack-gateway/gateway.env").contains(&format!("0.0.0.0:{http_port}")),
        "the gateway listens where its configuration says"
    );
    wait_for(home, Duration::from_secs(180), "the fleet host idle", |is| {
        is.len() == 1 && status(&is[0]) == "idle"
    });

    // A service on the fleet, published on the gateway.
    let svc_file = home.join("svc.yml");
    std::fs::write(
        &svc_file,
        "type: service\nname: sshgwsvc\nimage: dstack-rs-service-test:1\nport: 8000\ngateway: ssh-gw\n\
         https: false\nauth: true\nfleets: [hosts]\nresources: {cpu: 1.., memory: 0.5GB.., disk: 1GB..}\n\
         commands: [dstack-test-replica 8000]\n",
    )
    .unwrap();
    let (code, out, err) = cli(home, &["apply", "-f", &svc_file.display().to_string(), "-y", "-d"]);
    assert_eq!(code, 0, "{out}{err}");
    let run = wait(home, "the replica running", Duration::from_secs(180), || {
        let run = ps_run(home, "sshgwsvc");
        (crate::services::running_jobs(&run).len() == 1).then_some(run)
    });
    assert_eq!(run["service"]["url"], format!("http://sshgwsvc.gw.test:{http_port}"), "{run:#}");
    let job = crate::services::running_jobs(&run).remove(0);
    let addr = format!("{gw_ip}:{http_port}");
    let domain = format!("sshgwsvc.gw.test:{http_port}");
    let body = wait(home, "the gateway to serve the replica", Duration::from_secs(90), || {
        let (status, body) = get_with_host(&addr, &domain, "/whoami", Some(&token));
        (status == 200).then_some(body)
    });
    assert_eq!(body, job, "the replica answers through the gateway on the other host");
    // `auth: true`: the gateway asks this server, which listens on this machine's loopback
    // only, through the server's reverse tunnel on the gateway host.
    let (status, _) = get_with_host(&addr, &domain, "/whoami", None);
    assert_eq!(status, 403, "no token, no access");
    let (status, _) = get_with_host(&addr, &domain, "/whoami", Some("not-a-token"));
    assert_eq!(status, 403, "an unknown token, no access");

    // A service on the server's own machine (the local fleet), published on the same gateway:
    // the gateway reaches its replica through a reverse tunnel of the server's connection.
    let local_file = home.join("local-svc.yml");
    std::fs::write(
        &local_file,
        "type: service\nname: sshgwlocal\nimage: dstack-rs-service-test:1\nport: 8000\ngateway: ssh-gw\n\
         https: false\nauth: false\nfleets: [local]\ncommands: [dstack-test-replica 8000]\n",
    )
    .unwrap();
    let (code, out, err) = cli(home, &["apply", "-f", &local_file.display().to_string(), "-y", "-d"]);
    assert_eq!(code, 0, "{out}{err}");
    let local_job = wait(home, "the local replica running", Duration::from_secs(180), || {
        crate::services::running_jobs(&ps_run(home, "sshgwlocal")).into_iter().next()
    });
    let local_domain = format!("sshgwlocal.gw.test:{http_port}");
    let body = wait(home, "the gateway to serve the local replica", Duration::from_secs(90), || {
        let (status, body) = get_with_host(&addr, &local_domain, "/whoami", None);
        (status == 200).then_some(body)
    });
    assert_eq!(body, local_job, "the local replica answers through the gateway on the other host");
    let (status, _) = get_with_host(&addr, "other.gw.test", "/whoami", Some(&token));
    assert_ne!(status, 200, "an unknown service is not served");

    // A restarted server finds the gateway again: the same process, still serving.
    let pid = hosts.sh(1, "cat /root/.dstack-gateway/gateway.pid").trim().to_owned();
    assert_eq!(stop_keeping_jobs(server), 0);
    server = start_with_local_fleet_env(home, &[]);
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        assert_eq!(gateway(home, "ssh-gw").map(|g| g["status"].clone()), Some("running".into()));
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(hosts.sh(1, "cat /root/.dstack-gateway/gateway.pid").trim(), pid, "not started again");
    assert_eq!(gateway_processes(&hosts, 1).len(), 1, "{:?}", gateway_processes(&hosts, 1));
    assert_eq!(get_with_host(&addr, &domain, "/whoami", Some(&token)), (200, job.clone()));
    // A token the gateway has not cached is asked about through the new server's tunnel (a
    // 500 would say the gateway could not ask).
    wait(home, "the gateway asking the restarted server", Duration::from_secs(30), || {
        (get_with_host(&addr, &domain, "/whoami", Some("asked-after-restart")).0 == 403).then_some(())
    });

    // The local replica, still running, is served again: through a new reverse tunnel (the
    // old one closed with the old server's connection), registered again on the gateway.
    let body = wait(home, "the local replica served after the restart", Duration::from_secs(60), || {
        let (status, body) = get_with_host(&addr, &local_domain, "/whoami", None);
        (status == 200).then_some(body)
    });
    assert_eq!(body, local_job, "the local replica answers after the restart");
    let (code, out, err) = cli(home, &["stop", "sshgwlocal", "-x", "-y"]);
    assert_eq!(code, 0, "{out}{err}");
    wait(home, "the stopped local service gone from the gateway", Duration::from_secs(60), || {
        (get_with_host(&addr, &local_domain, "/whoami", None).0 != 200).then_some(())
    });

    // A gateway killed with its supervisor is deployed again, with what it had registered.
    hosts.sh(1, "kill -9 -$(cat /root/.dstack-gateway/gateway.pid)");
    wait(home, "the gateway deployed again", Duration::from_secs(120), || {
        let now = hosts.sh(1, "cat /root/.dstack-gateway/gateway.pid 2>/dev/null || true");
        let serving = get_with_host(&addr, &domain, "/whoami", Some(&token)) == (200, job.clone());
        (serving && !now.trim().is_empty() && now.trim() != pid).then_some(())
    });
    assert_eq!(gateway_processes(&hosts, 1).len(), 1, "{:?}", gateway_processes(&hosts, 1));

    // A gateway whose host refuses the key fails, saying why, and shows no key.
    let (_, other_public) = keypair();
    let (other_key, _) = keypair();
    let bad_key = write_key(home, "bad_key", &openssh_text(&other_key), &other_public);
    let bad_file = home.join("bad.yml");
    std::fs::write(
        &bad_file,
        format!(
            "type: gateway\nname: bad-gw\nbackend: local\ndomain: bad.test\ncertificate: null\n\
             local:\n  http_port: 8081\n  ssh: {{hostname: {gw_ip}, user: root, identity_file: {bad_key}}}\n"
        ),
    )
    .unwrap();
    let (code, out, err) = cli(home, &["apply", "-f", &bad_file.display().to_string(), "-y"]);
    assert_eq!(code, 0, "{out}{err}");
    let bad = wait(home, "the gateway with a bad key failed", Duration::from_secs(60), || {
        gateway(home, "bad-gw").filter(|g| g["status"] == "failed")
    });
    let message = bad["status_message"].as_str().unwrap_or_default();
    assert!(message.contains(&format!("{gw_ip} refused the key for user `root`")), "{message}");
    // One whose host does not answer on its SSH port fails too, naming host and port.
    let far_file = home.join("far.yml");
    std::fs::write(
        &far_file,
        format!(
            "type: gateway\nname: far-gw\nbackend: local\ndomain: far.test\ncertificate: null\n\
             local:\n  http_port: 8082\n  ssh: {{hostname: {gw_ip}, port: 2, user: root, identity_file: {key}}}\n"
        ),
    )
    .unwrap();
    let (code, out, err) = cli(home, &["apply", "-f", &far_file.display().to_string(), "-y"]);
    assert_eq!(code, 0, "{out}{err}");
    let far = wait(home, "the unreachable gateway failed", Duration::from_secs(60), || {
        gateway(home, "far-gw").filter(|g| g["status"] == "failed")
    });
    let message = far["status_message"].as_str().unwrap_or_default();
    assert!(message.starts_with(&format!("cannot reach {gw_ip}:2")), "{message}");
    let (_, listed, _) = cli(home, &["gateway", "list", "--json"]);
    let log = std::fs::read_to_string(home.join("server.log")).unwrap_or_default();
    for text in [&listed, &log] {
        assert!(!text.contains("PRIVATE KEY"), "a private key is shown: {text}");
    }

    // Deleting the gateway stops it and leaves nothing on its host.
    let (code, out, err) = cli(home, &["stop", "sshgwsvc", "-x", "-y"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = cli(home, &["gateway", "delete", "ssh-gw", "bad-gw", "far-gw", "-y"]);
    assert_eq!(code, 0, "{out}{err}");
    wait(home, "the gateways gone", Duration::from_secs(60), || gateways(home).is_empty().then_some(()));
    assert_eq!(gateway_processes(&hosts, 1), Vec::<String>::new(), "no gateway process is left");
    assert_eq!(hosts.sh(1, "ls -d /root/.dstack-gateway 2>/dev/null || true").trim(), "");
    assert_eq!(
        get_with_host(&addr, &domain, "/whoami", Some(&token)).0,
        0,
        "nothing listens on the gateway's port"
    );

    // The fleet goes once the stopped service has released its host.
    wait(home, "the fleet deleted", Duration::from_secs(60), || {
        (cli(home, &["fleet", "delete", "hosts", "-y"]).0 == 0).then_some(())
    });
    assert_eq!(stop(server), 0);
}
