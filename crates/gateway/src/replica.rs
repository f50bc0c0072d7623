//! How the gateway reaches a replica: an SSH tunnel described by the replica's registration
//! (what dstack's `ServiceConnection` opens), or, for dstack-rs's direct replicas, the
//! replica's address itself.
//!
//! A tunnel is one [`dstack_hostssh::Connection`] to `ssh_host:ssh_port` (the job's container,
//! `root@localhost` behind the host's sshd) through the optional head proxy and the host
//! (`ssh_proxy`), with [`Connection::forward`] to `localhost:<app_port>`: a listener on
//! `127.0.0.1:0` whose connections are direct-tcpip channels of that one session. The
//! connection reconnects by itself when its session drops.

use std::net::SocketAddr;
use std::time::Duration;

use dstack_agent_proto::gateway::{RegisterReplicaRequest, Secret, SshConnectionParams};
use dstack_hostssh::{Connection, HostTarget, JumpHost, parse_private_key};

/// dstack's `OPEN_TUNNEL_TIMEOUT`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A replica the gateway can send to.
#[derive(Clone)]
pub(crate) enum ReplicaConn {
    /// `internal_ip:app_port`, reached without SSH.
    Direct(SocketAddr),
    /// A tunnel: `local` leads to the replica's `app_port`; it lives as long as the
    /// connection, held here.
    Ssh { _conn: Connection, local: SocketAddr },
}

impl ReplicaConn {
    pub(crate) fn addr(&self) -> SocketAddr {
        match self {
            ReplicaConn::Direct(addr) => *addr,
            ReplicaConn::Ssh { local, .. } => *local,
        }
    }
}

/// Whether the registration asks for a direct connection: no `ssh_host` or `ssh_port` 0.
pub(crate) fn is_direct(replica: &RegisterReplicaRequest) -> bool {
    replica.ssh_host.is_empty() || replica.ssh_port == 0
}

/// Connects to `replica` with the project's key. The error says what failed, never a key.
pub(crate) async fn connect(
    project_key: &Secret,
    replica: &RegisterReplicaRequest,
) -> Result<ReplicaConn, String> {
    if is_direct(replica) {
        let Some(ip) = replica.internal_ip.as_deref().filter(|ip| !ip.is_empty()) else {
            return Err("no SSH destination (ssh_host, ssh_port) and no internal_ip".to_owned());
        };
        let addr = tokio::net::lookup_host((ip, replica.app_port))
            .await
            .map_err(|e| format!("cannot resolve {ip}: {e}"))?
            .next()
            .ok_or_else(|| format!("{ip} has no address"))?;
        return Ok(ReplicaConn::Direct(addr));
    }
    let (target, keys) = ssh_target(project_key, replica)?;
    let conn = Connection::connect(&target, &keys, CONNECT_TIMEOUT).await.map_err(|e| e.to_string())?;
    let local = conn.forward(replica.app_port).await.map_err(|e| e.to_string())?;
    Ok(ReplicaConn::Ssh { _conn: conn, local })
}

/// The SSH destination and its keys: jumps through the head proxy, then `ssh_proxy` (with its
/// own key, or the project's), to `ssh_host:ssh_port` with the project's key.
fn ssh_target(
    project_key: &Secret,
    replica: &RegisterReplicaRequest,
) -> Result<(HostTarget, Vec<dstack_hostssh::PrivateKey>), String> {
    let key = match &replica.ssh_private_key {
        Some(own) => parse_private_key(&own.0, "the replica's key").map_err(|e| e.to_string())?,
        None => parse_private_key(&project_key.0, "the project key").map_err(|e| e.to_string())?,
    };
    let mut proxy_jumps = Vec::new();
    if let Some(head) = &replica.ssh_head_proxy {
        let Some(head_key) = &replica.ssh_head_proxy_private_key else {
            return Err("ssh_head_proxy without ssh_head_proxy_private_key".to_owned());
        };
        let head_key = parse_private_key(&head_key.0, "the head proxy key").map_err(|e| e.to_string())?;
        proxy_jumps.push(jump(head, head_key));
    }
    if let Some(proxy) = &replica.ssh_proxy {
        let proxy_key = match &replica.ssh_proxy_private_key {
            Some(k) => parse_private_key(&k.0, "the proxy key").map_err(|e| e.to_string())?,
            None => key.clone(),
        };
        proxy_jumps.push(jump(proxy, proxy_key));
    }
    let (user, host) = match replica.ssh_host.split_once('@') {
        Some((user, host)) => (user.to_owned(), host.to_owned()),
        None => ("root".to_owned(), replica.ssh_host.clone()),
    };
    Ok((HostTarget { host, port: replica.ssh_port, user, proxy_jumps }, vec![key]))
}

fn jump(params: &SshConnectionParams, key: dstack_hostssh::PrivateKey) -> JumpHost {
    JumpHost { host: params.hostname.clone(), port: params.port, user: params.username.clone(), key }
}
