//! The gateways loop: a `local` gateway is a `dstack gateway run` child process of the server,
//! in its own process group (it outlives a killed server, like the local fleet's shim), with
//! its state under `<server dir>/gateways/<gateway id>/` (`state.json`, `gateway.log`, `pid`).
//!
//! submitted → provisioning (process started; its API address recorded) → running (its API
//! answers). A running gateway whose API stops answering is started again (provisioning); one
//! that cannot be started, or whose process exits before its API answers, is `failed` (with
//! the last line of its log). `to_be_deleted` → process stopped (its group gets
//! SIGTERM), row removed. A restarted server finds the process again at the recorded address.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dstack_agent_proto::client::GatewayClient;
use dstack_api::gateways::GatewayStatus;
use dstack_db::GatewayRow;
use dstack_model::gateway::GatewayConfiguration;

use crate::state::AppState;

/// How local gateways are started.
#[derive(Debug, Clone)]
pub struct GatewayLaunch {
    /// The `dstack` binary (`DSTACK_GATEWAY_BINARY`, else this executable).
    pub binary: PathBuf,
    /// Under it: `gateways/<id>/`.
    pub server_dir: PathBuf,
    /// This server's URL, for the gateway's `auth: true` checks.
    pub server_url: String,
}

impl GatewayLaunch {
    pub fn new(server_dir: &Path, server_url: &str) -> GatewayLaunch {
        let binary = match std::env::var_os("DSTACK_GATEWAY_BINARY") {
            Some(path) => PathBuf::from(path),
            None => std::env::current_exe().unwrap_or_else(|_| PathBuf::from("dstack")),
        };
        GatewayLaunch { binary, server_dir: server_dir.to_path_buf(), server_url: server_url.to_owned() }
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
            } else {
                super::gateway_sync::sync(state, &row).await;
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
