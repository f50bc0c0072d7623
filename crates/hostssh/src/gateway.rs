//! A dstack-rs gateway (`dstack gateway run`) on a host reached over SSH, as dstack runs its
//! gateway on a VM it reaches by SSH: the server's own `dstack` binary is uploaded (skipped
//! when the host already has the same bytes), configured by `gateway.env` and kept running as
//! a [`Daemon`] (a systemd unit, else a detached supervisor loop, so it outlives the SSH
//! session and the server), with its API on the host's loopback at [`GATEWAY_API_PORT`], which
//! the server reaches through a tunnel of its connection. [`uninstall_gateway`] stops it and
//! removes [`GATEWAY_HOME`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dstack_agent_proto::client::GatewayClient;
use sha2::Digest as _;

use crate::connection::{WriteAs, nonempty};
use crate::deploy::{Arch, Daemon, DeployError, Supervisor, check_host, env_file, start_daemon};
use crate::{Connection, shell_quote};

/// Everything of the gateway on the host: the binary, `gateway.env`, the supervisor's files,
/// and the gateway's state (`state/`, which holds project keys; mode 0700).
pub const GATEWAY_HOME: &str = "/root/.dstack-gateway";
/// The uploaded `dstack` binary.
pub const GATEWAY_BINARY: &str = "/root/.dstack-gateway/dstack";
/// The gateway API's port on the host's loopback (dstack's gateway uses 8000, which services
/// on the same host often take).
pub const GATEWAY_API_PORT: u16 = 10997;
/// The port on the host's loopback where the server's reverse tunnel listens
/// ([`Connection::reverse_forward`]): the gateway asks the server through it whether a caller
/// may use an `auth: true` service, as dstack's gateway reaches its server.
pub const GATEWAY_SERVER_PORT: u16 = 10998;

const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// The gateway as a daemon.
pub fn gateway_daemon() -> Daemon {
    Daemon {
        name: "dstack-gateway",
        home: GATEWAY_HOME,
        stem: "gateway",
        exec: format!("{GATEWAY_BINARY} gateway run"),
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct GatewayParams<'a> {
    /// The `dstack` binary (the server's own) and its arch.
    pub binary: &'a [u8],
    pub binary_arch: Arch,
    /// `DSTACK_GATEWAY_*` settings of `dstack gateway run` (listeners, certificates, server
    /// URL); the state dir and the API listener are this module's.
    pub env: Vec<(String, String)>,
    /// How long to wait for the API to answer through the tunnel.
    pub start_timeout: Duration,
}

/// A started gateway.
#[derive(Debug, Clone)]
pub struct GatewayDeployed {
    pub supervisor: Supervisor,
    /// The local end of the connection's tunnel to the gateway API.
    pub api_addr: SocketAddr,
}

/// The local end of the tunnel to the gateway API on `conn`'s host (nothing is checked).
pub async fn gateway_api(conn: &Connection) -> Result<SocketAddr, DeployError> {
    Ok(conn.forward(GATEWAY_API_PORT).await?)
}

/// Installs and (re)starts the gateway on `conn`'s host and waits for its API. A gateway
/// already running there is stopped first, so there is never more than one; what it had
/// registered survives in its state.
pub async fn deploy_gateway(
    conn: &Connection,
    params: &GatewayParams<'_>,
) -> Result<GatewayDeployed, DeployError> {
    let host = conn.target().host.clone();
    check_host(conn, params.binary_arch).await?;
    let step = |step: &'static str, out: crate::ExecOutput| DeployError::Step {
        host: host.clone(),
        step,
        detail: nonempty(out.stderr_text(), out.status),
    };
    let prepare = format!("mkdir -p {GATEWAY_HOME}/state && chmod 700 {GATEWAY_HOME} {GATEWAY_HOME}/state");
    let out = conn.exec(&conn.as_root_if(WriteAs::Root, &prepare), STEP_TIMEOUT).await?;
    if !out.success() {
        return Err(step("creating the gateway's home", out));
    }
    let sum: String = sha2::Sha256::digest(params.binary).iter().map(|b| format!("{b:02x}")).collect();
    let check = format!("sha256sum {} 2>/dev/null | cut -d' ' -f1", shell_quote(GATEWAY_BINARY));
    let out = conn.exec(&conn.as_root_if(WriteAs::Root, &check), STEP_TIMEOUT).await?;
    if out.stdout_text() != sum {
        conn.upload(params.binary, GATEWAY_BINARY, 0o755, WriteAs::Root, Duration::from_secs(600)).await?;
    }
    let state_dir = format!("{GATEWAY_HOME}/state");
    let api_listen = format!("127.0.0.1:{GATEWAY_API_PORT}");
    let mut vars: Vec<(&str, &str)> = vec![
        ("DSTACK_GATEWAY_STATE_DIR", state_dir.as_str()),
        ("DSTACK_GATEWAY_API_LISTEN", api_listen.as_str()),
    ];
    vars.extend(params.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let daemon = gateway_daemon();
    conn.upload(env_file(&vars).as_bytes(), &daemon.file(".env"), 0o600, WriteAs::Root, STEP_TIMEOUT).await?;
    let supervisor = start_daemon(conn, &daemon).await?;
    let api_addr = gateway_api(conn).await?;
    let client = GatewayClient::new(&format!("http://{api_addr}"));
    let started = Instant::now();
    loop {
        if client.info().await.is_ok() {
            return Ok(GatewayDeployed { supervisor, api_addr });
        }
        if started.elapsed() >= params.start_timeout {
            let log = daemon.log_tail(conn, supervisor).await;
            return Err(DeployError::GatewayUnhealthy { host, after: params.start_timeout, log });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Stops the gateway (unit or loop) and removes [`GATEWAY_HOME`]. Safe on a host without one.
pub async fn uninstall_gateway(conn: &Connection) -> Result<(), DeployError> {
    let daemon = gateway_daemon();
    let script = format!("{}\nrm -rf {GATEWAY_HOME}", daemon.stop_script());
    let out = conn.exec(&conn.as_root_if(WriteAs::Root, &script), STEP_TIMEOUT).await?;
    if !out.success() {
        return Err(DeployError::Step {
            host: conn.target().host.clone(),
            step: "removing the gateway",
            detail: nonempty(out.stderr_text(), out.status),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_daemon_runs_the_uploaded_binary_from_its_home() {
        let d = gateway_daemon();
        let unit = d.unit_file();
        assert!(unit.contains("ExecStart=/root/.dstack-gateway/dstack gateway run\n"), "{unit}");
        assert!(unit.contains("EnvironmentFile=/root/.dstack-gateway/gateway.env\n"), "{unit}");
        let script = d.supervisor_script();
        assert!(script.contains("echo $$ > /root/.dstack-gateway/gateway.pid\n"), "{script}");
        assert!(script.contains("  /root/.dstack-gateway/dstack gateway run\n"), "{script}");
        assert_eq!(d.unit_path(), "/etc/systemd/system/dstack-gateway.service");
    }
}
