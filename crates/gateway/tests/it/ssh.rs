//! Replicas behind SSH, as dstack registers them: `root@localhost:<port>` through the host
//! (`ssh_proxy`), the tunnel to `localhost:<app_port>`. The host is a Docker test host (real
//! OpenSSH, `DSTACK_TEST_DOCKER=1`) running a tiny HTTP server on its loopback, which only the
//! tunnel can reach. Also our extension: a replica with its own key for `ssh_host`.

use axum::http::StatusCode;
use dstack_hostssh::testkit::{HostKind, TestHosts, openssh_text};
use serde_json::json;

use crate::harness::TestGateway;

fn docker_tests() -> bool {
    std::env::var("DSTACK_TEST_DOCKER").is_ok_and(|v| v == "1")
}

/// An HTTP server on the host's 127.0.0.1:8080 answering `replica-in-host` (perl is in every
/// Debian base system).
const REPLICA: &str = r#"nohup perl -MIO::Socket::INET -e '
my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 8080, Listen => 10, ReuseAddr => 1) or die;
while (my $c = $s->accept) {
  while (my $l = <$c>) { last if $l =~ /^\r?\n$/ }
  my $b = "replica-in-host";
  print $c "HTTP/1.1 200 OK\r\nContent-Length: " . length($b) . "\r\nConnection: close\r\n\r\n$b";
  close $c;
}' > /dev/null 2>&1 &
sleep 0.5"#;

#[tokio::test]
async fn replicas_are_reached_through_ssh_tunnels() {
    if !docker_tests() {
        eprintln!("skipped: set DSTACK_TEST_DOCKER=1 to run the SSH replica test");
        return;
    }
    let hosts = tokio::task::spawn_blocking(|| TestHosts::start(&[HostKind::Plain])).await.unwrap();
    hosts.sh(0, REPLICA);
    let key = openssh_text(&hosts.key);
    let gw = TestGateway::start().await;
    gw.register_service("main", "svc", "svc.gw.example.com", json!({"ssh_private_key": key})).await;
    let replica = |job: &str| {
        json!({"job_id": job, "app_port": 8080, "ssh_host": "root@localhost", "ssh_port": 22,
               "ssh_proxy": {"hostname": hosts.hosts[0].ip, "username": "root", "port": 22},
               "ssh_proxy_private_key": null, "ssh_head_proxy": null, "ssh_head_proxy_private_key": null,
               "internal_ip": "10.255.255.1"})
    };
    let (status, resp) = gw.post("/api/registry/main/services/svc/replicas/register", replica("j1")).await;
    assert_eq!((status, resp), (StatusCode::OK, json!({"status": "ok"})));
    let (client, url) = gw.http("svc.gw.example.com", "/");
    for _ in 0..5 {
        let resp = client.get(&url).send().await.unwrap();
        assert_eq!(
            (resp.status(), resp.text().await.unwrap()),
            (StatusCode::OK, "replica-in-host".to_owned())
        );
    }

    // A host nobody answers on: the registration fails and names the problem, not the key.
    let mut bad = replica("j2");
    bad["ssh_proxy"]["port"] = json!(2222);
    let (status, resp) = gw.post("/api/registry/main/services/svc/replicas/register", bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let detail = resp["detail"].as_str().unwrap();
    assert!(detail.starts_with("Cannot register replica j2 in service main/svc: "), "{detail}");
    assert!(!detail.contains("PRIVATE KEY"), "{detail}");

    // After a restart the tunnel is opened again from the saved registration.
    let gw = gw.restart().await;
    crate::harness::eventually("the tunnel to come back after a restart", async || {
        let (client, url) = gw.http("svc.gw.example.com", "/");
        let resp = client.get(&url).send().await.unwrap();
        resp.status() == StatusCode::OK
    })
    .await;
}

/// Our extension: a replica with a key of its own for `ssh_host` (an SSH-fleet host, whose
/// sshd knows the fleet's key, not the project's), reached on the host's loopback directly.
#[tokio::test]
async fn a_replica_with_its_own_key_is_reached_with_it() {
    if !docker_tests() {
        eprintln!("skipped: set DSTACK_TEST_DOCKER=1 to run the SSH replica test");
        return;
    }
    let (hosts, (project_key, _)) = tokio::task::spawn_blocking(|| {
        (TestHosts::start(&[HostKind::Plain]), dstack_hostssh::testkit::keypair())
    })
    .await
    .unwrap();
    hosts.sh(0, REPLICA);
    let gw = TestGateway::start().await;
    let project_key = openssh_text(&project_key);
    gw.register_service("main", "own", "own.gw.example.com", json!({"ssh_private_key": project_key})).await;
    let replica = |job: &str, key: Option<String>| {
        json!({"job_id": job, "app_port": 8080, "ssh_host": format!("dstack@{}", hosts.hosts[0].ip),
               "ssh_port": 22, "ssh_proxy": null, "ssh_proxy_private_key": null, "ssh_head_proxy": null,
               "ssh_head_proxy_private_key": null, "internal_ip": null, "ssh_private_key": key})
    };
    // The project's key is not authorized on the host.
    let (status, resp) =
        gw.post("/api/registry/main/services/own/replicas/register", replica("j1", None)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
    assert!(resp["detail"].as_str().unwrap().contains("refused the key for user `dstack`"), "{resp}");
    let own = Some(openssh_text(&hosts.key));
    let (status, resp) =
        gw.post("/api/registry/main/services/own/replicas/register", replica("j2", own)).await;
    assert_eq!((status, resp), (StatusCode::OK, json!({"status": "ok"})));
    let (client, url) = gw.http("own.gw.example.com", "/");
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!((resp.status(), resp.text().await.unwrap()), (StatusCode::OK, "replica-in-host".to_owned()));
    // The key is saved with the registration: a restarted gateway connects with it again.
    let gw = gw.restart().await;
    crate::harness::eventually("the replica's tunnel after a restart", async || {
        let (client, url) = gw.http("own.gw.example.com", "/");
        let resp = client.get(&url).send().await.unwrap();
        resp.status() == StatusCode::OK
    })
    .await;
}
