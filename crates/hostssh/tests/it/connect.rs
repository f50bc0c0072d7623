//! Connections: exec, upload, jump hosts, refused keys, unreachable hosts, the pool.

use std::time::Duration;

use dstack_hostssh::testkit::{HostKind, TestHosts, keypair};
use dstack_hostssh::{Connection, HostTarget, Pool, SshError, WriteAs};

use crate::enabled;

const TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn exec_and_upload_as_root_and_through_sudo() {
    if !enabled() {
        return;
    }
    let hosts = TestHosts::start(&[HostKind::Plain]);
    let conn = Connection::connect(&hosts.target(0, "root"), hosts.keys(), TIMEOUT).await.expect("connects");
    let out = conn.exec("echo out; echo err >&2; exit 3", TIMEOUT).await.expect("runs");
    assert_eq!(out.status, Some(3));
    assert_eq!(out.stdout_text(), "out");
    assert_eq!(out.stderr_text(), "err");

    // 3 MiB that are not all the same byte, written as the SSH user.
    let data: Vec<u8> =
        (0..3 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    conn.upload(&data, "/tmp/blob", 0o640, WriteAs::User, TIMEOUT).await.expect("uploads");
    let remote = hosts.sh(0, "stat -c '%a %U %s' /tmp/blob; ls -a /tmp | grep -c dstack-upload || true");
    assert_eq!(remote.lines().collect::<Vec<_>>(), [format!("640 root {}", data.len()).as_str(), "0"]);
    let local = sha256_hex(&data);
    assert!(hosts.sh(0, "sha256sum /tmp/blob").starts_with(&local));

    // A non-root user writes root's files through sudo, and stdin is read to the end.
    let user = Connection::connect(&hosts.target(0, "dstack"), hosts.keys(), TIMEOUT).await.expect("dstack");
    user.upload(b"#!/bin/sh\necho ok\n", "/usr/local/bin/probe", 0o755, WriteAs::Root, TIMEOUT)
        .await
        .expect("uploads through sudo");
    assert_eq!(hosts.sh(0, "stat -c '%a %U' /usr/local/bin/probe; probe").trim(), "755 root\nok");
    let out = user.exec("id -un", TIMEOUT).await.expect("runs");
    assert_eq!(out.stdout_text(), "dstack");
}

fn sha256_hex(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().expect("stdin").write_all(data).expect("writes");
    let out = child.wait_with_output().expect("sha256sum ends");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn proxy_jump_reaches_the_target_through_the_jump_host() {
    if !enabled() {
        return;
    }
    let hosts = TestHosts::start(&[HostKind::Plain, HostKind::Plain]);
    let mut target = hosts.target(1, "root");
    target.proxy_jumps = vec![hosts.jump(0)];
    let conn = Connection::connect(&target, hosts.keys(), TIMEOUT).await.expect("connects via the jump");
    let out = conn.exec("cat /etc/hostname", TIMEOUT).await.expect("runs");
    assert_eq!(out.stdout_text(), hosts.sh(1, "cat /etc/hostname").trim());
    // The target saw the jump host's address, not ours.
    let log = hosts.sshd_log(1);
    assert!(log.contains(&format!("Accepted publickey for root from {} ", hosts.hosts[0].ip)), "{log}");
    assert_eq!(hosts.n_logins(0), 1);

    // A jump host that cannot reach the next hop says so, naming both.
    let mut nowhere = hosts.target(1, "root");
    nowhere.port = 1;
    nowhere.proxy_jumps = vec![hosts.jump(0)];
    let err = Connection::connect(&nowhere, hosts.keys(), TIMEOUT).await.err().expect("fails");
    assert!(matches!(err, SshError::JumpFailed { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&hosts.hosts[0].ip) && text.contains(&format!("{}:1", hosts.hosts[1].ip)),
        "{text}"
    );
}

#[tokio::test]
async fn a_refused_key_names_the_host_and_the_user() {
    if !enabled() {
        return;
    }
    let hosts = TestHosts::start(&[HostKind::Plain]);
    let (other, _) = keypair();
    let err = Connection::connect(&hosts.target(0, "dstack"), std::slice::from_ref(&other), TIMEOUT)
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, SshError::AuthRefused { n_keys: 1, .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&hosts.hosts[0].ip) && text.contains("refused the key for user `dstack`"),
        "{text}"
    );
    assert_eq!(err.host(), hosts.hosts[0].ip);
    // The second key is tried after the first is refused.
    let conn = Connection::connect(&hosts.target(0, "dstack"), &[other, hosts.key.clone()], TIMEOUT).await;
    assert!(conn.is_ok(), "the second key is accepted");
}

#[tokio::test]
async fn unreachable_hosts_are_named() {
    if !enabled() {
        return;
    }
    let hosts = TestHosts::start(&[HostKind::Plain]);
    let mut refused = hosts.target(0, "root");
    refused.port = 1;
    let err = Connection::connect(&refused, hosts.keys(), TIMEOUT).await.err().expect("refused");
    assert!(matches!(err, SshError::Unreachable { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!("cannot reach {}:1: connection refused", hosts.hosts[0].ip)),
        "{err}"
    );

    // A port that accepts and then says nothing times out; one that hangs up at once is a
    // closed connection, not an SSH server. Both are local listeners, so no network decides.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let silent_port = silent.local_addr().expect("addr").port();
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp);
        }
    });
    let target = HostTarget {
        host: "127.0.0.1".to_owned(),
        port: silent_port,
        user: "root".to_owned(),
        proxy_jumps: vec![],
    };
    let err =
        Connection::connect(&target, hosts.keys(), Duration::from_secs(1)).await.err().expect("times out");
    assert_eq!(
        err.to_string(),
        format!(
            "cannot reach 127.0.0.1:{silent_port}: no SSH handshake within 1s; check the host name, the SSH port and firewalls"
        )
    );
    let hangup = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let hangup_port = hangup.local_addr().expect("addr").port();
    let _closer = tokio::spawn(async move {
        while let Ok((tcp, _)) = hangup.accept().await {
            drop(tcp);
        }
    });
    let target = HostTarget {
        host: "127.0.0.1".to_owned(),
        port: hangup_port,
        user: "root".to_owned(),
        proxy_jumps: vec![],
    };
    let err = Connection::connect(&target, hosts.keys(), TIMEOUT).await.err().expect("closed");
    assert!(matches!(err, SshError::Closed { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with(&format!("127.0.0.1:{hangup_port} closed the SSH connection")),
        "{err}"
    );

    let unknown = HostTarget {
        host: "no-such-host.invalid".to_owned(),
        port: 22,
        user: "root".to_owned(),
        proxy_jumps: vec![],
    };
    let err = Connection::connect(&unknown, hosts.keys(), TIMEOUT).await.err().expect("fails");
    assert!(err.to_string().contains("no-such-host.invalid:22: cannot resolve the name"), "{err}");
}

#[tokio::test]
async fn the_pool_keeps_one_connection_per_key() {
    if !enabled() {
        return;
    }
    let hosts = TestHosts::start(&[HostKind::Plain]);
    let pool: Pool<&str> = Pool::new(TIMEOUT);
    let target = hosts.target(0, "root");
    for _ in 0..5 {
        let conn = pool.get(&"instance-1", &target, hosts.keys()).await.expect("connects");
        assert!(conn.exec("true", TIMEOUT).await.expect("runs").success());
    }
    assert_eq!(hosts.n_logins(0), 1);
    assert_eq!(pool.len().await, 1);
    let conn = pool.remove(&"instance-1").await.expect("pooled");
    assert_eq!(conn.n_handshakes(), 1);
}

/// `accepts` asks the host itself: true for a port something listens on (its sshd, which
/// also sends its banner at once; a quiet server too), false for one nothing listens on,
/// where a `forward` listener still accepts locally, and false for a port whose listener
/// closes each connection at once (what a port proxy does when its backend does not listen).
#[tokio::test]
async fn accepts_tells_whether_an_app_on_the_host_keeps_a_connection() {
    if !enabled() {
        return;
    }
    let hosts = TestHosts::start(&[HostKind::Plain]);
    let conn = Connection::connect(&hosts.target(0, "root"), hosts.keys(), TIMEOUT).await.expect("connects");
    let quiet = Duration::from_millis(500);
    assert!(conn.accepts(22, quiet).await.expect("asks"), "sshd listens on 22");
    assert!(!conn.accepts(1, quiet).await.expect("asks"), "nothing listens on 1");
    let local = conn.forward(1).await.expect("a tunnel");
    assert!(tokio::net::TcpStream::connect(local).await.is_ok(), "a tunnel's local end accepts regardless");
    // On the host: 7001 accepts and closes each connection, 7002 accepts and keeps quiet.
    let listen = |port: u16, on_accept: &str| {
        format!(
            "setsid perl -MIO::Socket::INET -e 'my $s = IO::Socket::INET->new(LocalAddr => \"127.0.0.1\", \
             LocalPort => {port}, Listen => 5, ReuseAddr => 1) or die; my @kept; \
             while (my $c = $s->accept) {{ {on_accept} }}' > /dev/null 2>&1 < /dev/null &"
        )
    };
    hosts.sh(0, &format!("{} {}", listen(7001, "close $c;"), listen(7002, "push @kept, $c;")));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !conn.accepts(7002, quiet).await.expect("asks") {
        assert!(std::time::Instant::now() < deadline, "the quiet listener never kept a connection");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!conn.accepts(7001, quiet).await.expect("asks"), "a connection closed at once is not accepted");
    assert!(conn.accepts(22, quiet).await.expect("asks"), "the session is still usable");
    assert_eq!(hosts.n_logins(0), 1, "one session for all of it");
}

/// A local server the test hosts cannot reach by themselves: it writes `greeting` and echoes
/// a line.
async fn greeter(greeting: &'static str) -> std::net::SocketAddr {
    let local = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = local.local_addr().expect("addr");
    tokio::spawn(async move {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
        while let Ok((tcp, _)) = local.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = tcp.into_split();
                let mut line = String::new();
                let _ = write.write_all(format!("{greeting}\n").as_bytes()).await;
                let _ = tokio::io::BufReader::new(read).read_line(&mut line).await;
                let _ = write.write_all(format!("echo {line}").as_bytes()).await;
            });
        }
    });
    addr
}

/// What the host gets from its `127.0.0.1:<port>`, sending `ping`.
async fn talk(conn: &Connection, port: u16) -> String {
    let script =
        format!("bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port} && echo ping >&3 && head -n 2 <&3' 2>&1");
    conn.exec(&script, TIMEOUT).await.expect("runs").stdout_text()
}

/// `reverse_forward` brings the host's connections to its `127.0.0.1:<port>` to a local
/// address (`ssh -R`), again after the session dropped and was opened anew; a port the host
/// cannot listen on is refused, naming the host and the port. `reverse_forward_any` lets the
/// host pick the port and keeps it across sessions; `retain_reverse` closes tunnels.
#[tokio::test]
async fn a_reverse_tunnel_brings_the_hosts_connections_here_and_outlives_a_reconnect() {
    if !enabled() {
        return;
    }
    let hosts = TestHosts::start(&[HostKind::Plain]);
    let conn =
        Connection::connect(&hosts.target(0, "dstack"), hosts.keys(), TIMEOUT).await.expect("connects");
    let server = greeter("hello from the server").await;
    let replica = greeter("hello from a replica").await;
    conn.reverse_forward(15000, server).await.expect("the host listens");
    conn.reverse_forward(15000, server).await.expect("asking twice changes nothing");
    assert_eq!(talk(&conn, 15000).await, "hello from the server\necho ping");
    let picked = conn.reverse_forward_any(replica).await.expect("the host picks a port");
    assert_ne!(picked, 15000);
    assert_eq!(conn.reverse_forward_any(replica).await.expect("the same"), picked);
    assert_eq!(talk(&conn, picked).await, "hello from a replica\necho ping");

    conn.disconnect().await;
    assert_eq!(talk(&conn, 15000).await, "hello from the server\necho ping", "again on a new session");
    assert_eq!(conn.n_handshakes(), 2);
    assert_eq!(talk(&conn, picked).await, "hello from a replica\necho ping", "the picked port too");

    conn.retain_reverse(|port| port == 15000).await;
    assert!(!talk(&conn, picked).await.contains("hello"), "the replica's tunnel is closed");
    assert_eq!(talk(&conn, 15000).await, "hello from the server\necho ping", "the other one stays");

    // sshd listens on port 22 of every address, so the host cannot listen there again.
    let err = conn.reverse_forward(22, server).await.expect_err("refused");
    let text = err.to_string();
    assert!(text.contains(&hosts.hosts[0].ip) && text.contains("127.0.0.1:22"), "{text}");
    // The refused port is not asked for again on the next session.
    conn.disconnect().await;
    assert!(conn.exec("true", TIMEOUT).await.expect("reconnects").success());
}
