//! How the server reaches SSH-fleet hosts: one SSH connection per instance (a
//! [`dstack_hostssh::Pool`] keyed by instance id), and every agent request through a tunnel
//! of that connection. The shim and runner ports of an SSH host are never dialed directly.
//!
//! After a restart the pool is empty: the first request for an instance connects again with
//! the keys stored (encrypted) on the instance row. Nothing here logs or returns a key.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dstack_agent_proto::SHIM_HTTP_PORT;
use dstack_agent_proto::shim::HostInfo;
use dstack_api::fleets::RemoteConnectionInfo;
use dstack_api::runs::{
    Disk, Gpu, InstanceOfferWithAvailability, InstanceType, JobProvisioningData, Resources,
};
use dstack_db::InstanceRow;
use dstack_hostssh::{Arch, Connection, DeployParams, HostTarget, JumpHost, Pool, PrivateKey};
use dstack_model::common::BackendType;
use dstack_model::resources::{CpuArch, GpuVendor};
use uuid::Uuid;

use crate::state::AppState;

/// dstack's SSH connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a deployed shim may take to answer its first health check.
const SHIM_START_TIMEOUT: Duration = Duration::from_secs(60);

/// The URL stored as an SSH instance's `agent_url`: the shim as seen from the host itself.
/// It marks the instance as deployed; requests go to [`SHIM_HTTP_PORT`] through the tunnel.
pub const SHIM_URL_ON_HOST: &str = "http://localhost:10998";

/// The SSH side of the server: the connection pool and the agent binaries it deploys.
pub struct SshHosts {
    pool: Pool<Uuid>,
    /// The connections to the hosts of `local.ssh` gateways, by gateway id.
    pub(crate) gateways: Pool<Uuid>,
    /// The `local.ssh` gateways whose pass (a connect, a deploy) is running.
    pub(crate) busy_gateways: Arc<std::sync::Mutex<std::collections::HashSet<Uuid>>>,
    /// By `local.ssh` gateway: the replicas this process registered there through a reverse
    /// tunnel of the gateway host's connection, by job id, with the tunnel's port on that host
    /// (see `pipelines::gateway_sync`).
    pub(crate) tunneled_replicas:
        std::sync::Mutex<std::collections::HashMap<Uuid, std::collections::HashMap<String, u16>>>,
    /// Tunnel failures the gateways loop meets on every pass, logged once each.
    pub(crate) repeats: crate::pipelines::repeats::Repeats,
    shim_binary: PathBuf,
    runner_binary: PathBuf,
    /// How often idle and busy hosts get a health check.
    pub check_interval: Duration,
}

impl SshHosts {
    pub fn new(shim_binary: PathBuf, runner_binary: PathBuf, check_interval: Duration) -> SshHosts {
        SshHosts {
            pool: Pool::new(CONNECT_TIMEOUT),
            gateways: Pool::new(CONNECT_TIMEOUT),
            busy_gateways: Arc::default(),
            tunneled_replicas: std::sync::Mutex::default(),
            repeats: crate::pipelines::repeats::Repeats::default(),
            shim_binary,
            runner_binary,
            check_interval,
        }
    }

    /// Forgets an instance's connection (its tunnels close with it).
    pub async fn forget(&self, instance_id: Uuid) {
        self.pool.remove(&instance_id).await;
    }

    /// How many hosts the server holds a connection to.
    pub async fn n_connections(&self) -> usize {
        self.pool.len().await
    }
}

/// `DSTACK_RUNNER_BINARY`, else `dstack-runner` next to the shim binary.
pub fn default_runner_binary(shim_binary: &Path) -> PathBuf {
    match std::env::var_os("DSTACK_RUNNER_BINARY") {
        Some(path) => PathBuf::from(path),
        None => shim_binary.with_file_name("dstack-runner"),
    }
}

/// Whether `i` is an SSH-fleet host (it has connection data).
pub fn is_ssh(i: &InstanceRow) -> bool {
    i.remote_connection_info.is_some()
}

/// An SSH instance's target and keys, from its encrypted connection data.
fn target_and_keys(state: &AppState, i: &InstanceRow) -> Result<(HostTarget, Vec<PrivateKey>), String> {
    let rci = crate::fleets::remote_connection_info(i, &state.cipher)
        .ok_or_else(|| format!("the connection data of instance {} cannot be read", i.name))?;
    target_of(&rci)
}

fn parse_keys(keys: &[dstack_model::fleet::SshKey], whose: &str) -> Result<Vec<PrivateKey>, String> {
    keys.iter()
        .filter_map(|k| k.private.as_deref())
        .map(|text| dstack_hostssh::parse_private_key(text, whose).map_err(|e| e.to_string()))
        .collect()
}

/// An SSH port from its stored (or configured) number; the error names the host.
pub(crate) fn port(port: i64, host: &str) -> Result<u16, String> {
    u16::try_from(port).map_err(|_| format!("{host}: SSH port {port} is not a valid port"))
}

fn target_of(rci: &RemoteConnectionInfo) -> Result<(HostTarget, Vec<PrivateKey>), String> {
    let keys = parse_keys(&rci.ssh_keys, &format!(" for {}", rci.host))?;
    let mut proxy_jumps = Vec::new();
    if let Some(proxy) = &rci.ssh_proxy {
        let proxy_keys = parse_keys(rci.ssh_proxy_keys.as_deref().unwrap_or_default(), " of the proxy jump")?;
        let key = proxy_keys
            .into_iter()
            .next()
            .ok_or_else(|| format!("{}: the proxy jump {} has no private key", rci.host, proxy.hostname))?;
        proxy_jumps.push(JumpHost {
            host: proxy.hostname.clone(),
            port: port(proxy.port, &proxy.hostname)?,
            user: proxy.username.clone(),
            key,
        });
    }
    let target = HostTarget {
        host: rci.host.clone(),
        port: port(rci.port, &rci.host)?,
        user: rci.ssh_user.clone(),
        proxy_jumps,
    };
    Ok((target, keys))
}

/// The pooled connection to an SSH instance's host (connecting if there is none).
async fn connection(state: &AppState, i: &InstanceRow) -> Result<Connection, String> {
    let (target, keys) = target_and_keys(state, i)?;
    state.ssh.pool.get(&i.id, &target, &keys).await.map_err(|e| e.to_string())
}

/// The base URL of an agent port on an instance: the stored URL for the local fleet, a
/// tunnel of the host's SSH connection for an SSH instance.
pub async fn agent_base_url(state: &AppState, i: &InstanceRow, remote_port: u16) -> Result<String, String> {
    let conn = connection(state, i).await?;
    let local = conn.forward(remote_port).await.map_err(|e| e.to_string())?;
    Ok(format!("http://{local}"))
}

/// Whether `remote_port` on an SSH instance's host accepts a TCP connection and keeps it for
/// `quiet` ([`dstack_hostssh::Connection::accepts`]: asked of the host through the instance's
/// connection, not through a tunnel, whose local end accepts regardless).
pub async fn accepts(
    state: &AppState,
    i: &InstanceRow,
    remote_port: u16,
    quiet: std::time::Duration,
) -> Result<bool, String> {
    let conn = connection(state, i).await?;
    conn.accepts(remote_port, quiet).await.map_err(|e| e.to_string())
}

/// The shim's base URL for an SSH instance (through the tunnel).
pub async fn shim_url(state: &AppState, i: &InstanceRow) -> Result<String, String> {
    agent_base_url(state, i, SHIM_HTTP_PORT).await
}

/// What a successful deploy found: the instance's new offer, provisioning data and blocks.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub offer: InstanceOfferWithAvailability,
    pub job_provisioning_data: JobProvisioningData,
    pub total_blocks: i64,
}

/// Installs the shim on an SSH instance's host and reads what the host has. Errors name the
/// host and say what to change.
pub async fn deploy(state: &AppState, i: &InstanceRow) -> Result<Deployment, String> {
    let rci = crate::fleets::remote_connection_info(i, &state.cipher)
        .ok_or_else(|| format!("the connection data of instance {} cannot be read", i.name))?;
    let env = rci.env.as_dict().map_err(|e| format!("{}: invalid `env`: {e}", rci.host))?;
    let shim = read_binary(&state.ssh.shim_binary, "dstack-shim", "DSTACK_SHIM_BINARY").await?;
    let runner = read_binary(&state.ssh.runner_binary, "dstack-runner", "DSTACK_RUNNER_BINARY").await?;
    let shim_arch = Arch::current().ok_or_else(|| {
        format!("this server's architecture ({}) has no dstack-shim", std::env::consts::ARCH)
    })?;
    let conn = connection(state, i).await?;
    let authorized_keys: Vec<String> = rci
        .ssh_keys
        .iter()
        .map(|k| k.public.trim().to_owned())
        .filter(|k| !k.is_empty() && !k.contains('\n'))
        .collect();
    let params = DeployParams {
        shim: shim.as_slice(),
        shim_arch,
        runner: Some(runner.as_slice()),
        authorized_keys,
        env: env.into_iter().collect(),
        start_timeout: SHIM_START_TIMEOUT,
    };
    let deployed = dstack_hostssh::deploy(&conn, &params).await.map_err(|e| e.to_string())?;
    let base: Option<JobProvisioningData> =
        i.job_provisioning_data.as_deref().and_then(|j| serde_json::from_str(j).ok());
    let region = base.as_ref().map_or_else(|| "remote".to_owned(), |j| j.region.clone());
    let instance_type = instance_type(&deployed.host_info, deployed.arch);
    let resources = &instance_type.resources;
    let n_gpus = i64::try_from(resources.gpus.len()).unwrap_or(i64::MAX);
    // A NULL total_blocks is the fleet's `blocks: auto`.
    let blocks = i.total_blocks.map_or(dstack_model::fleet::Blocks::Auto, dstack_model::fleet::Blocks::Count);
    let total_blocks = dstack_decide::offers::total_blocks(blocks, resources.cpus, n_gpus)?;
    let jpd = JobProvisioningData {
        backend: BackendType::Remote,
        base_backend: None,
        instance_type: instance_type.clone(),
        instance_id: "instance_id".to_owned(),
        hostname: Some(rci.host.clone()),
        internal_ip: base.as_ref().and_then(|j| j.internal_ip.clone()),
        public_ip_enabled: true,
        instance_network: base.as_ref().and_then(|j| j.instance_network.clone()),
        region: region.clone(),
        availability_zone: None,
        reservation: None,
        price: 0.0,
        username: rci.ssh_user.clone(),
        ssh_port: Some(rci.port),
        dockerized: true,
        ssh_proxy: rci.ssh_proxy.clone(),
        backend_data: None,
        gpu_driver: None,
    };
    let offer = crate::fleets::remote_offer(instance_type, region);
    Ok(Deployment { offer, job_provisioning_data: jpd, total_blocks })
}

async fn read_binary(path: &Path, name: &str, var: &str) -> Result<Arc<Vec<u8>>, String> {
    tokio::fs::read(path).await.map(Arc::new).map_err(|e| {
        format!("the server cannot read its {name} binary at {} ({e}); build it or set {var}", path.display())
    })
}

/// dstack's `host_info_to_instance_type`: CPUs, memory and disk (bytes to MiB), GPUs by name.
pub fn instance_type(host: &HostInfo, arch: Arch) -> InstanceType {
    let vendor = match host.gpu_vendor.as_str() {
        "amd" => Some(GpuVendor::Amd),
        "intel" => Some(GpuVendor::Intel),
        _ => Some(GpuVendor::Nvidia),
    };
    let gpus = if host.gpu_count > 0 {
        let name = if host.gpu_vendor == "nvidia" {
            crate::local_fleet::gpu_name(&host.gpu_name)
        } else {
            host.gpu_name.clone()
        };
        let gpu = Gpu { name, memory_mib: i64::try_from(host.gpu_memory).unwrap_or(i64::MAX), vendor };
        vec![gpu; host.gpu_count as usize]
    } else {
        Vec::new()
    };
    let mib = |bytes: u64| i64::try_from(bytes / 1024 / 1024).unwrap_or(i64::MAX);
    InstanceType {
        name: "instance".to_owned(),
        resources: Resources {
            cpus: i64::from(host.cpus),
            memory_mib: mib(host.memory),
            gpus,
            spot: false,
            disk: Disk { size_mib: mib(host.disk_size) },
            cpu_arch: Some(match arch {
                Arch::Amd64 => CpuArch::X86,
                Arch::Arm64 => CpuArch::Arm,
            }),
            description: String::new(),
        },
    }
}

/// Whether the host's shim answers its health check, through the tunnel.
pub async fn check(state: &AppState, i: &InstanceRow) -> Result<(), String> {
    let url = shim_url(state, i).await?;
    let shim = dstack_agent_proto::client::ShimClient::with_client(&url, state.agent_http.clone());
    match shim.healthcheck().await {
        Ok(h) if h.service == "dstack-shim" => Ok(()),
        Ok(h) => Err(format!("port {SHIM_HTTP_PORT} answers as `{}`, not dstack-shim", h.service)),
        Err(e) => Err(e.to_string()),
    }
}

/// Removes the shim tasks of an instance that no job stands for any more
/// ([`dstack_decide::instance::dangling_tasks`]): those of jobs that ended while the host
/// could not be reached. Failures are left for the next check.
pub async fn remove_dangling_tasks(state: &AppState, i: &InstanceRow) -> Result<usize, String> {
    use dstack_agent_proto::shim::{TaskStatus, TerminateBody};
    let url = shim_url(state, i).await?;
    let shim = dstack_agent_proto::client::ShimClient::with_client(&url, state.agent_http.clone());
    // The shim's list first, then the jobs: a task submitted meanwhile has its job assigned.
    let tasks: Vec<(String, bool)> = shim
        .list_tasks()
        .await
        .map_err(|e| e.to_string())?
        .tasks
        .into_iter()
        .map(|t| (t.id, t.status == TaskStatus::Terminated))
        .collect();
    if tasks.is_empty() {
        return Ok(0);
    }
    let assigned: Vec<String> = state
        .db
        .jobs_on_instance(i.id)
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(Uuid::to_string)
        .collect();
    let dangling = dstack_decide::instance::dangling_tasks(&tasks, &assigned);
    for task in &dangling {
        tracing::info!(instance = %i.name, task = %task.id, "removing a task no job stands for");
        if task.terminate {
            let body = TerminateBody {
                termination_reason: "terminated_by_server".to_owned(),
                termination_message: "the job of this task is over".to_owned(),
                timeout: 0,
            };
            match shim.terminate_task(&task.id, &body).await {
                Ok(_) => {}
                Err(e) if e.status() == Some(404) => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
        match shim.remove_task(&task.id).await {
            Ok(()) => {}
            Err(e) if e.status() == Some(404) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(dangling.len())
}

/// Gives a host back: stops the shim and removes its files and the `authorized_keys` lines
/// the deploy added ([`dstack_hostssh::uninstall`]), then drops the instance's connection.
pub async fn release(state: &AppState, i: &InstanceRow) -> Result<(), String> {
    let result = match connection(state, i).await {
        Ok(conn) => dstack_hostssh::uninstall(&conn).await.map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    state.ssh.forget(i.id).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_info_becomes_dstacks_instance_type() {
        let host = HostInfo {
            gpu_vendor: "nvidia".to_owned(),
            gpu_name: "NVIDIA H100 80GB HBM3".to_owned(),
            gpu_memory: 81559,
            gpu_count: 2,
            addresses: vec!["10.0.0.5/24".to_owned()],
            disk_size: 100 * 1024 * 1024 * 1024,
            cpus: 16,
            memory: 64 * 1024 * 1024 * 1024,
        };
        let t = instance_type(&host, Arch::Amd64);
        assert_eq!(t.name, "instance");
        assert_eq!(
            (t.resources.cpus, t.resources.memory_mib, t.resources.disk.size_mib),
            (16, 65536, 102400)
        );
        assert_eq!(t.resources.gpus.len(), 2);
        assert_eq!(t.resources.gpus[0].name, "H100");
        assert_eq!(t.resources.cpu_arch, Some(CpuArch::X86));
        let none = HostInfo { gpu_vendor: "none".to_owned(), gpu_count: 0, ..host };
        assert!(instance_type(&none, Arch::Arm64).resources.gpus.is_empty());
    }
}
