//! The gateways loop: a `local` gateway is a `dstack gateway run` child process of the server,
//! in its own process group (it outlives a killed server, like the local fleet's shim), with
//! its state under `<server dir>/gateways/<gateway id>/` (`state.json`, `gateway.log`, `pid`).
//!
//! submitted → provisioning (process started; its API address recorded) → running (its API
//! answers). A running gateway whose API stops answering is started again (provisioning); one
//! that cannot be started, or whose process exits before its API answers, is `failed` (with
//! the last line of its log). `to_be_deleted` → process stopped (its group gets
//! SIGTERM), row removed. A restarted server finds the process again at the recorded address.
//!
//! A `local` gateway with `local.ssh` runs the same way on that host instead
//! ([`dstack_hostssh::deploy_gateway`]: this executable uploaded, a systemd unit or detached
//! supervisor loop, its API on the host's loopback, reached through a tunnel of one pooled SSH
//! connection per gateway), each pass of such a gateway in a task of its own (one at a time
//! per gateway). Each pass asks its API first, so a gateway that runs (after a server restart
//! too) is found again and never started twice: submitted → provisioning (deploying) →
//! running once the deploy's health check passed, failed when the deploy fails (the
//! error names the host, never the key). A running one whose host cannot be reached stays
//! running with the error as its status message and is tried again; one whose host answers but
//! its API does not is deployed again. `to_be_deleted` → stopped and its files removed
//! ([`dstack_hostssh::uninstall_gateway`]); a host that cannot be reached then is logged and the
//! row removed anyway.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dstack_agent_proto::client::GatewayClient;
use dstack_api::gateways::GatewayStatus;
use dstack_db::GatewayRow;
use dstack_model::gateway::{GatewayConfiguration, GatewaySshHost, LocalGateway};

use crate::state::{AppState, lock};

/// How local gateways are started.
#[derive(Debug, Clone)]
pub struct GatewayLaunch {
    /// The `dstack` binary (`DSTACK_GATEWAY_BINARY`, else this executable).
    pub binary: PathBuf,
    /// Under it: `gateways/<id>/`.
    pub server_dir: PathBuf,
    /// This server's URL, for the gateway's `auth: true` checks.
    pub server_url: String,
    /// Where this server listens, as this machine reaches it: a `local.ssh` gateway reaches it
    /// through a reverse tunnel to this address.
    pub server_addr: std::net::SocketAddr,
}

impl GatewayLaunch {
    pub fn new(server_dir: &Path, server_url: &str, server_addr: std::net::SocketAddr) -> GatewayLaunch {
        let binary = match std::env::var_os("DSTACK_GATEWAY_BINARY") {
            Some(path) => PathBuf::from(path),
            None => std::env::current_exe().unwrap_or_else(|_| PathBuf::from("dstack")),
        };
        let mut server_addr = server_addr;
        if server_addr.ip().is_unspecified() {
            server_addr.set_ip(match server_addr {
                std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        GatewayLaunch {
            binary,
            server_dir: server_dir.to_path_buf(),
            server_url: server_url.to_owned(),
            server_addr,
        }
    }

    fn dir(&self, row: &GatewayRow) -> PathBuf {
        self.server_dir.join("gateways").join(row.id.to_string())
    }
}

/// Runs the loop until aborted.
pub async fn run(state: AppState, launch: GatewayLaunch) {
    loop {
        if let Err(e) = pass(&state, &launch).await {
            tracing::error!(error = %e, "gateways loop");
        }
        let _ = super::wait(&state.hints.gateways, Duration::from_secs(2)).await;
    }
}

/// One pass over every gateway.
pub async fn pass(state: &AppState, launch: &GatewayLaunch) -> Result<(), dstack_db::DbError> {
    for row in state.db.all_gateways().await? {
        if let Some((local, ssh)) = remote(&row) {
            spawn_remote(state, launch, row, local, ssh);
            continue;
        }
        if row.to_be_deleted {
            stop(launch, &row);
            state.db.delete_gateway_row(row.id).await?;
            tracing::info!(gateway = %row.name, "gateway deleted");
            continue;
        }
        if row.status == GatewayStatus::Failed.as_str() {
            continue;
        }
        let answers = match &row.api_address {
            Some(addr) => client(state, addr).info().await.is_ok(),
            None => false,
        };
        let now = jiff::Timestamp::now();
        if answers {
            if row.status != GatewayStatus::Running.as_str() {
                state.db.set_gateway_status(row.id, "running", None, row.api_address.as_deref(), now).await?;
                tracing::info!(gateway = %row.name, "gateway running");
            } else if let Some(addr) = &row.api_address {
                super::gateway_sync::sync(state, &row, &client(state, addr), None).await;
            }
            continue;
        }
        // Started and not answering yet: give it time, unless it exited (a port in use, a bad
        // certificate directory): then it failed, with the last line of its log.
        if row.status == GatewayStatus::Provisioning.as_str() && row.api_address.is_some() {
            let dir = launch.dir(&row);
            if !pid_alive(&dir) {
                let msg = format!("the gateway process exited: {}", last_log_line(&dir));
                tracing::error!(gateway = %row.name, error = %msg, "gateway failed");
                state.db.set_gateway_status(row.id, "failed", Some(&msg), None, now).await?;
                continue;
            }
            if now.duration_since(row.last_processed_at) < jiff::SignedDuration::from_secs(30) {
                continue;
            }
        }
        match start(launch, &row) {
            Ok(addr) => {
                state.db.set_gateway_status(row.id, "provisioning", None, Some(&addr), now).await?;
                tracing::info!(gateway = %row.name, api = %addr, "gateway process started");
            }
            Err(msg) => {
                tracing::error!(gateway = %row.name, error = %msg, "gateway failed");
                state.db.set_gateway_status(row.id, "failed", Some(&msg), None, now).await?;
            }
        }
    }
    Ok(())
}

fn client(state: &AppState, addr: &str) -> GatewayClient {
    GatewayClient::with_client(&format!("http://{addr}"), state.agent_http.clone())
}

/// How long a deployed gateway may take to answer.
const REMOTE_START_TIMEOUT: Duration = Duration::from_secs(60);

/// The `local` and `local.ssh` settings of a gateway that runs on an SSH host.
fn remote(row: &GatewayRow) -> Option<(LocalGateway, GatewaySshHost)> {
    let conf: GatewayConfiguration = serde_json::from_str(&row.configuration).ok()?;
    let local = conf.local?;
    let ssh = local.ssh.clone()?;
    Some((local, ssh))
}

/// The pooled connection to a `local.ssh` gateway's host, with its stored key decrypted.
async fn connect(
    state: &AppState,
    row: &GatewayRow,
    ssh: &GatewaySshHost,
) -> Result<dstack_hostssh::Connection, String> {
    let encrypted = ssh.ssh_key.as_ref().and_then(|k| k.private.as_deref()).unwrap_or_default();
    let text = state
        .cipher
        .decrypt(encrypted)
        .ok_or_else(|| format!("{}: the stored SSH key cannot be read", ssh.hostname))?;
    let key = dstack_hostssh::parse_private_key(&text, &format!("for {}", ssh.hostname))
        .map_err(|e| e.to_string())?;
    let port = crate::ssh_hosts::port(ssh.port.unwrap_or(22), &ssh.hostname)?;
    let target = dstack_hostssh::HostTarget {
        host: ssh.hostname.clone(),
        port,
        user: ssh.user.clone(),
        proxy_jumps: Vec::new(),
    };
    state.ssh.gateways.get(&row.id, &target, &[key]).await.map_err(|e| e.to_string())
}

/// The gateway API through the tunnel, if it answers.
async fn remote_api(state: &AppState, conn: &dstack_hostssh::Connection) -> Result<GatewayClient, String> {
    let addr = dstack_hostssh::gateway_api(conn).await.map_err(|e| e.to_string())?;
    let client = client(state, &addr.to_string());
    client.info().await.map_err(|e| e.to_string())?;
    Ok(client)
}

/// `dstack gateway run`'s settings for a `local.ssh` gateway: it reaches this server through
/// the reverse tunnel on its host's loopback.
fn remote_env(local: &LocalGateway) -> Vec<(String, String)> {
    let host = bracket(&local.host);
    let server_url = format!("http://127.0.0.1:{}", dstack_hostssh::GATEWAY_SERVER_PORT);
    let mut env = vec![
        ("DSTACK_GATEWAY_HTTP_LISTEN".to_owned(), format!("{host}:{}", local.http_port)),
        ("DSTACK_GATEWAY_SERVER_URL".to_owned(), server_url),
    ];
    if let Some(port) = local.https_port {
        env.push(("DSTACK_GATEWAY_HTTPS_LISTEN".to_owned(), format!("{host}:{port}")));
    }
    if let Some(dir) = &local.cert_dir {
        env.push(("DSTACK_GATEWAY_CERT_DIR".to_owned(), dir.clone()));
    }
    env
}

/// Runs [`remote_pass`] for a `local.ssh` gateway in a task of its own, so that a slow host (a
/// connect timeout, a deploy's upload) holds neither this loop nor the other gateways; a
/// gateway whose task still runs is left alone by the next passes.
fn spawn_remote(
    state: &AppState,
    launch: &GatewayLaunch,
    row: GatewayRow,
    local: LocalGateway,
    ssh: GatewaySshHost,
) {
    let busy = state.ssh.busy_gateways.clone();
    if !lock(&busy).insert(row.id) {
        return;
    }
    /// Takes the gateway out of the busy set when its task ends, even by a panic.
    struct Done(std::sync::Arc<std::sync::Mutex<std::collections::HashSet<uuid::Uuid>>>, uuid::Uuid);
    impl Drop for Done {
        fn drop(&mut self) {
            lock(&self.0).remove(&self.1);
        }
    }
    let (state, launch) = (state.clone(), launch.clone());
    tokio::spawn(async move {
        let _done = Done(busy, row.id);
        if let Err(e) = remote_pass(&state, &launch, &row, &local, &ssh).await {
            tracing::error!(gateway = %row.name, error = %e, "gateways loop");
        }
    });
}

async fn remote_pass(
    state: &AppState,
    launch: &GatewayLaunch,
    row: &GatewayRow,
    local: &LocalGateway,
    ssh: &GatewaySshHost,
) -> Result<(), dstack_db::DbError> {
    let now = jiff::Timestamp::now();
    let remote_addr = format!("{}:{}", ssh.hostname, dstack_hostssh::GATEWAY_API_PORT);
    if row.to_be_deleted {
        let removed = match connect(state, row, ssh).await {
            Ok(conn) => dstack_hostssh::uninstall_gateway(&conn).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        if let Err(e) = removed {
            tracing::warn!(gateway = %row.name, error = %e, "the gateway could not be removed from its host");
        }
        state.ssh.gateways.remove(&row.id).await;
        lock(&state.ssh.tunneled_replicas).remove(&row.id);
        state.db.delete_gateway_row(row.id).await?;
        tracing::info!(gateway = %row.name, "gateway deleted");
        return Ok(());
    }
    if row.status == GatewayStatus::Failed.as_str() {
        return Ok(());
    }
    let running = row.status == GatewayStatus::Running.as_str();
    let conn = match connect(state, row, ssh).await {
        Ok(conn) => conn,
        Err(e) => {
            state.ssh.gateways.remove(&row.id).await;
            let status = if running { "running" } else { "failed" };
            tracing::warn!(gateway = %row.name, error = %e, status, "gateway host unreachable");
            let at = if running { row.last_processed_at } else { now };
            state.db.set_gateway_status(row.id, status, Some(&e), row.api_address.as_deref(), at).await?;
            return Ok(());
        }
    };
    // The gateway's way back to this server, for `auth: true` checks (kept by the connection
    // across reconnects; asking again changes nothing). Without it the gateway still serves
    // services without auth, and denies the others with a 500 that says it cannot ask.
    let key = format!("server tunnel of gateway {}", row.id);
    match conn.reverse_forward(dstack_hostssh::GATEWAY_SERVER_PORT, launch.server_addr).await {
        Ok(()) => state.ssh.repeats.clear(&key),
        Err(e) if state.ssh.repeats.is_new(&key, &e.to_string()) => {
            tracing::warn!(gateway = %row.name, error = %e, "no tunnel from the gateway back to the server");
        }
        Err(e) => {
            tracing::debug!(gateway = %row.name, error = %e, "still no tunnel from the gateway back to the server")
        }
    }
    if let Ok(client) = remote_api(state, &conn).await {
        if !running || row.status_message.is_some() {
            state.db.set_gateway_status(row.id, "running", None, Some(&remote_addr), now).await?;
            tracing::info!(gateway = %row.name, host = %ssh.hostname, "gateway running");
        } else {
            super::gateway_sync::sync(state, row, &client, Some(&conn)).await;
        }
        return Ok(());
    }
    let binary = match tokio::fs::read(&launch.binary).await {
        Ok(b) => b,
        Err(e) => {
            let msg = format!("cannot read {} to deploy: {e}", launch.binary.display());
            state.db.set_gateway_status(row.id, "failed", Some(&msg), None, now).await?;
            return Ok(());
        }
    };
    let Some(arch) = dstack_hostssh::Arch::current() else {
        let msg = format!("this server's architecture ({}) cannot run a gateway", std::env::consts::ARCH);
        state.db.set_gateway_status(row.id, "failed", Some(&msg), None, now).await?;
        return Ok(());
    };
    state.db.set_gateway_status(row.id, "provisioning", None, Some(&remote_addr), now).await?;
    tracing::info!(gateway = %row.name, host = %ssh.hostname, "deploying the gateway");
    let params = dstack_hostssh::GatewayParams {
        binary: &binary,
        binary_arch: arch,
        env: remote_env(local),
        start_timeout: REMOTE_START_TIMEOUT,
    };
    let now = jiff::Timestamp::now();
    match dstack_hostssh::deploy_gateway(&conn, &params).await {
        Ok(_) => {
            state.db.set_gateway_status(row.id, "running", None, Some(&remote_addr), now).await?;
            tracing::info!(gateway = %row.name, host = %ssh.hostname, "gateway running");
        }
        Err(e) => {
            let msg = e.to_string();
            tracing::error!(gateway = %row.name, error = %msg, "gateway failed");
            state.db.set_gateway_status(row.id, "failed", Some(&msg), None, now).await?;
        }
    }
    Ok(())
}

/// Starts the gateway's process; returns its API address.
fn start(launch: &GatewayLaunch, row: &GatewayRow) -> Result<String, String> {
    let conf: GatewayConfiguration =
        serde_json::from_str(&row.configuration).map_err(|e| format!("bad configuration: {e}"))?;
    let Some(local) = conf.local else {
        return Err("only `backend: local` gateways can be provisioned".to_owned());
    };
    stop(launch, row);
    let dir = launch.dir(row);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let api_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("picking a port for the gateway API: {e}"))?
        .port();
    let api = format!("127.0.0.1:{api_port}");
    let log_path = dir.join("gateway.log");
    let log =
        std::fs::File::create(&log_path).map_err(|e| format!("creating {}: {e}", log_path.display()))?;
    let log_err = log.try_clone().map_err(|e| format!("creating {}: {e}", log_path.display()))?;
    let host = &local.host;
    let mut cmd = std::process::Command::new(&launch.binary);
    cmd.arg("gateway")
        .arg("run")
        .arg("--state-dir")
        .arg(&dir)
        .arg("--api-listen")
        .arg(&api)
        .arg("--http-listen")
        .arg(format!("{}:{}", bracket(host), local.http_port))
        .arg("--server-url")
        .arg(&launch.server_url)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log_err);
    if let Some(port) = local.https_port {
        cmd.arg("--https-listen").arg(format!("{}:{port}", bracket(host)));
    }
    if let Some(cert_dir) = &local.cert_dir {
        cmd.arg("--cert-dir").arg(cert_dir);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        cmd.process_group(0);
    }
    let child = cmd.spawn().map_err(|e| format!("starting {} gateway run: {e}", launch.binary.display()))?;
    let _ = std::fs::write(dir.join("pid"), child.id().to_string());
    // Reaped when it exits, so a dead gateway does not linger as a zombie that looks alive.
    let mut child = child;
    std::thread::spawn(move || child.wait());
    Ok(api)
}

/// The last non-empty line of the gateway's log (what it said before exiting).
fn last_log_line(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("gateway.log")).unwrap_or_default();
    let line = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output");
    line.chars().take(500).collect()
}

fn bracket(host: &str) -> String {
    if host.contains(':') { format!("[{host}]") } else { host.to_owned() }
}

fn read_pid(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(dir.join("pid")).ok()?.trim().parse().ok().filter(|p| *p > 1)
}

fn pid_alive(dir: &Path) -> bool {
    #[cfg(unix)]
    {
        read_pid(dir).is_some_and(|pid| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok())
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        false
    }
}

/// Stops the gateway's process group, if one is recorded.
fn stop(launch: &GatewayLaunch, row: &GatewayRow) {
    let dir = launch.dir(row);
    #[cfg(unix)]
    if let Some(pid) = read_pid(&dir) {
        // The process leads its own group (process_group(0)): the group id is its pid.
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
    }
    let _ = std::fs::remove_file(dir.join("pid"));
}
