//! The embedded `local` fleet: the server's own machine as one instance, reached through a
//! `dstack-shim` on localhost exactly as a remote host's shim would be.
//!
//! The shim runs as its own process (its own process group), so jobs survive the server
//! being killed; a restarted server finds it again through `<server dir>/local-shim/port`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dstack_agent_proto::client::ShimClient;
use dstack_api::fleets::FleetSpec;
use dstack_api::runs::{
    Disk, Gpu, InstanceOfferWithAvailability, InstanceType, JobProvisioningData, Resources,
};
use dstack_db::{FleetRow, InstanceRow, ProjectRow};
use dstack_model::common::BackendType;
use dstack_model::fleet::Blocks;
use dstack_model::resources::CpuArch;
use uuid::Uuid;

use crate::state::AppState;
use crate::{ServerConfig, ServerError};

/// The fleet's name in the default project.
pub const FLEET_NAME: &str = "local";

/// The `instance_id` of the local host in its provisioning data.
pub const INSTANCE_ID: &str = "local";

/// Creates the `local` fleet (one instance: this machine) in `project`.
pub async fn create(state: &AppState, project: &ProjectRow) -> Result<(), ServerError> {
    let now = jiff::Timestamp::now();
    let fleet = FleetRow {
        id: Uuid::new_v4(),
        project_id: project.id,
        name: FLEET_NAME.to_owned(),
        status: "active".to_owned(),
        status_message: None,
        spec: serde_json::to_string(&fleet_spec()?).map_err(|e| ServerError::Config(e.to_string()))?,
        sensitive_spec: None,
        created_at: now,
        consolidation_attempt: 0,
        last_consolidated_at: None,
        lock_expires_at: None,
    };
    let (offer, jpd) = host_offer();
    let json = |v: serde_json::Result<String>| v.map_err(|e| ServerError::Config(e.to_string()));
    let instance = InstanceRow {
        offer: Some(json(serde_json::to_string(&offer))?),
        job_provisioning_data: Some(json(serde_json::to_string(&jpd))?),
        ..InstanceRow::new(project.id, fleet.id, FLEET_NAME, 0, "idle", now)
    };
    state.db.insert_fleet(&fleet, &[instance]).await?;
    Ok(())
}

/// The local fleet's spec: a one-node fleet named `local`.
fn fleet_spec() -> Result<FleetSpec, ServerError> {
    let configuration =
        dstack_model::de::from_json(&serde_json::json!({"type": "fleet", "name": FLEET_NAME, "nodes": 1}))
            .map_err(ServerError::Config)?;
    let profile =
        dstack_model::de::from_json(&serde_json::json!({"name": "default"})).map_err(ServerError::Config)?;
    Ok(FleetSpec { configuration, configuration_path: None, profile, autocreated: false })
}

/// Starts (or finds) the local shim and points every local instance at it, with the host's
/// current resources and the configured blocks (`local_fleet_blocks`; a host that does not
/// split so keeps one block, logged).
pub async fn attach_shim(
    state: &AppState,
    config: &ServerConfig,
    shim_binary: &Path,
) -> Result<(), ServerError> {
    let server_dir = &config.server_dir;
    let mut local = Vec::new();
    for project in state.db.list_projects().await? {
        for instance in state.db.list_instances(project.id).await? {
            let jpd: Option<JobProvisioningData> =
                instance.job_provisioning_data.as_deref().and_then(|j| serde_json::from_str(j).ok());
            if jpd.is_some_and(|j| j.instance_id == INSTANCE_ID) {
                local.push(instance);
            }
        }
    }
    if local.is_empty() {
        return Ok(());
    }
    let url = ensure_shim(server_dir, shim_binary, state.agent_http.clone()).await?;
    let (offer, jpd) = host_offer();
    let resources = offer.instance.resources.clone();
    let offer = serde_json::to_string(&offer).map_err(|e| ServerError::Config(e.to_string()))?;
    let jpd = serde_json::to_string(&jpd).map_err(|e| ServerError::Config(e.to_string()))?;
    let total_blocks = blocks_of(config.local_fleet_blocks, &resources);
    for instance in local {
        state.db.update_instance_agent(instance.id, &url, &offer, &jpd).await?;
        if instance.total_blocks != Some(total_blocks)
            && !state.db.set_instance_total_blocks(instance.id, total_blocks).await?
        {
            tracing::warn!(
                instance = %instance.name,
                total_blocks,
                "local fleet: jobs are running; the host keeps its old blocks until they end and the server restarts"
            );
        }
    }
    tracing::info!(%url, total_blocks, "local fleet: shim ready");
    Ok(())
}

/// The local host's `total_blocks` for the `blocks` setting; 1 (logged) if it does not split so.
fn blocks_of(blocks: Blocks, resources: &Resources) -> i64 {
    let n_gpus = i64::try_from(resources.gpus.len()).unwrap_or(i64::MAX);
    match dstack_decide::offers::total_blocks(blocks, resources.cpus, n_gpus) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(
                cpus = resources.cpus,
                gpus = n_gpus,
                ?blocks,
                "local fleet: {e}: set DSTACK_SERVER_LOCAL_FLEET_BLOCKS to `auto` or a number that divides \
                 both counts; using 1 block"
            );
            1
        }
    }
}

/// The shim binary: `DSTACK_SHIM_BINARY`, else `dstack-shim` next to this executable.
pub fn default_shim_binary() -> PathBuf {
    match std::env::var_os("DSTACK_SHIM_BINARY") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()
            .map(|exe| exe.with_file_name("dstack-shim"))
            .unwrap_or_else(|_| PathBuf::from("dstack-shim")),
    }
}

async fn ensure_shim(server_dir: &Path, binary: &Path, http: reqwest::Client) -> Result<String, ServerError> {
    let home = server_dir.join("local-shim");
    let port_file = home.join("port");
    if let Some(url) = read_port(&port_file).map(|p| format!("http://127.0.0.1:{p}"))
        && ShimClient::with_client(&url, http.clone()).healthcheck().await.is_ok()
    {
        return Ok(url);
    }
    let io = |what: &str| {
        let what = what.to_owned();
        move |source| ServerError::Io { what, source }
    };
    std::fs::create_dir_all(&home).map_err(io("creating the local shim's home"))?;
    let _ = std::fs::remove_file(&port_file);
    let log = std::fs::File::create(home.join("shim.log")).map_err(io("creating the shim log"))?;
    let log_err = log.try_clone().map_err(io("creating the shim log"))?;
    let mut cmd = std::process::Command::new(binary);
    cmd.arg("--shim-http-port")
        .arg("0")
        .arg("--shim-home")
        .arg(&home)
        .arg("--port-file")
        .arg(&port_file)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log_err);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        // Its own process group: a signal to the server's group does not reach the jobs.
        cmd.process_group(0);
    }
    cmd.spawn().map_err(|source| ServerError::Io {
        what: format!("starting the local shim {} (set DSTACK_SHIM_BINARY)", binary.display()),
        source,
    })?;
    for _ in 0..200 {
        if let Some(port) = read_port(&port_file) {
            let url = format!("http://127.0.0.1:{port}");
            if ShimClient::with_client(&url, http.clone()).healthcheck().await.is_ok() {
                return Ok(url);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(ServerError::Config(format!(
        "the local shim did not start within 10 s; see {}",
        home.join("shim.log").display()
    )))
}

fn read_port(path: &Path) -> Option<u16> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// This machine as an offer and as provisioning data.
fn host_offer() -> (InstanceOfferWithAvailability, JobProvisioningData) {
    let resources = Resources {
        cpus: std::thread::available_parallelism().map_or(1, |n| i64::try_from(n.get()).unwrap_or(1)),
        memory_mib: memory_mib(),
        gpus: nvidia_gpus(),
        spot: false,
        disk: Disk { size_mib: disk_mib(Path::new("/")) },
        cpu_arch: Some(if cfg!(target_arch = "aarch64") { CpuArch::Arm } else { CpuArch::X86 }),
        description: String::new(),
    };
    let instance = InstanceType { name: "local".to_owned(), resources };
    let offer = crate::fleets::remote_offer(instance.clone(), "local".to_owned());
    let jpd = JobProvisioningData {
        backend: BackendType::Remote,
        base_backend: None,
        instance_type: instance,
        instance_id: INSTANCE_ID.to_owned(),
        hostname: Some("127.0.0.1".to_owned()),
        internal_ip: Some("127.0.0.1".to_owned()),
        public_ip_enabled: false,
        instance_network: None,
        region: "local".to_owned(),
        availability_zone: None,
        reservation: None,
        price: 0.0,
        username: std::env::var("USER").unwrap_or_else(|_| "root".to_owned()),
        ssh_port: None,
        dockerized: true,
        ssh_proxy: None,
        backend_data: None,
        gpu_driver: None,
    };
    (offer, jpd)
}

fn memory_mib() -> i64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .map_or(0, |kb| kb / 1024)
}

fn disk_mib(path: &Path) -> i64 {
    match nix::sys::statvfs::statvfs(path) {
        Ok(s) => {
            let bytes = u128::from(s.blocks()) * u128::from(s.fragment_size());
            i64::try_from(bytes / (1024 * 1024)).unwrap_or(i64::MAX)
        }
        Err(_) => 0,
    }
}

/// NVIDIA GPUs as `nvidia-smi` lists them; none when it is absent.
fn nvidia_gpus() -> Vec<Gpu> {
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name,memory.total", "--format=csv,noheader,nounits"])
        .output();
    let Ok(out) = out else { return Vec::new() };
    if !out.status.success() {
        return Vec::new();
    }
    parse_nvidia_smi(&String::from_utf8_lossy(&out.stdout))
}

/// `NVIDIA H100 80GB HBM3, 81559` lines into GPUs named as dstack names them (`H100`).
fn parse_nvidia_smi(text: &str) -> Vec<Gpu> {
    text.lines()
        .filter_map(|line| {
            let (name, memory) = line.rsplit_once(',')?;
            let memory_mib = memory.trim().parse::<i64>().ok()?;
            Some(Gpu { name: gpu_name(name.trim()), memory_mib, vendor: None })
        })
        .collect()
}

/// A full NVIDIA name (`NVIDIA H100 80GB HBM3`) as dstack names the GPU (`H100`).
pub(crate) fn gpu_name(full: &str) -> String {
    let mut words: Vec<&str> = full
        .split([' ', '-'])
        .filter(|w| !w.is_empty() && !["NVIDIA", "Tesla", "GeForce", "Quadro"].contains(w))
        .collect();
    if words.first().is_some_and(|w| *w == "RTX") && words.len() > 1 {
        let joined = format!("RTX{}", words[1]);
        words.drain(..2);
        return joined;
    }
    words.first().map_or_else(|| full.to_owned(), |w| (*w).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvidia_smi_lines() {
        let gpus = parse_nvidia_smi("NVIDIA H100 80GB HBM3, 81559\nNVIDIA A100-SXM4-80GB, 81920\n");
        let names: Vec<(&str, i64)> = gpus.iter().map(|g| (g.name.as_str(), g.memory_mib)).collect();
        assert_eq!(names, vec![("H100", 81559), ("A100", 81920)]);
        assert_eq!(gpu_name("NVIDIA GeForce RTX 4090"), "RTX4090");
        assert_eq!(gpu_name("Tesla T4"), "T4");
        assert!(parse_nvidia_smi("garbage").is_empty());
    }

    #[test]
    fn this_host_is_described() {
        let (offer, jpd) = host_offer();
        assert!(offer.instance.resources.cpus >= 1);
        assert!(offer.instance.resources.memory_mib > 0);
        assert!(offer.instance.resources.disk.size_mib > 0);
        assert_eq!(jpd.instance_id, INSTANCE_ID);
    }
}
