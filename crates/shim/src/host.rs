//! What the shim reports about its host and its binaries: GPUs (§1.11), `host_info.json`
//! (§1.12), component versions.

use std::path::Path;

use dstack_agent_proto::AGENT_VERSION;
use dstack_agent_proto::shim::{ComponentInfo, ComponentStatus, ComponentsResponse, HostInfo, InstanceInfo};

use crate::gpu::{self, Gpu};

/// GPUs from `nvidia-smi`, else from `amd-smi` when the host has an AMD GPU (`/dev/kfd` under
/// the device root). A tool that is missing, fails or prints something unreadable gives no
/// GPUs (logged).
pub(crate) async fn detect_gpus(device_root: &Path) -> Vec<Gpu> {
    if let Some(out) = run_tool("nvidia-smi", &gpu::NVIDIA_SMI_ARGS).await {
        match gpu::parse_nvidia_smi(&out) {
            Ok(gpus) if !gpus.is_empty() => return gpus,
            Ok(_) => {}
            Err(e) => tracing::warn!(%e, "cannot read nvidia-smi output"),
        }
    }
    if crate::devices::under(device_root, "/dev/kfd").exists() {
        let out = match run_tool("amd-smi", &gpu::AMD_SMI_ARGS).await {
            Some(out) => Some(out),
            None => run_tool("amd-smi", &gpu::AMD_SMI_ARGS[..5]).await,
        };
        if let Some(out) = out {
            match gpu::parse_amd_smi(&out) {
                Ok(gpus) => return gpus,
                Err(e) => tracing::warn!(%e, "cannot read amd-smi output"),
            }
        }
    }
    Vec::new()
}

/// The tool's stdout if it ran and exited 0 within 2 minutes.
async fn run_tool(program: &str, args: &[&str]) -> Option<String> {
    let run = tokio::process::Command::new(program).args(args).kill_on_drop(true).output();
    match tokio::time::timeout(std::time::Duration::from_secs(120), run).await {
        Ok(Ok(out)) if out.status.success() => Some(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(Ok(out)) => {
            tracing::warn!(program, status = %out.status, stderr = %String::from_utf8_lossy(&out.stderr).trim(), "GPU tool failed");
            None
        }
        Ok(Err(e)) => {
            tracing::debug!(program, %e, "GPU tool not available");
            None
        }
        Err(_) => {
            tracing::warn!(program, "GPU tool timed out after 2 minutes");
            None
        }
    }
}

/// The first GPU's vendor and driver, or nothing without GPUs.
pub(crate) fn instance_info(gpus: &[Gpu]) -> InstanceInfo {
    match gpus.first() {
        Some(g) => InstanceInfo {
            gpu_vendor: Some(g.vendor.as_str().to_owned()),
            gpu_driver_version: Some(g.driver_version.clone()),
        },
        None => InstanceInfo::default(),
    }
}

/// CPUs, RAM, the space available under `disk_path` (Docker's root dir when Docker runs), the
/// interface addresses and the GPUs. Unreadable parts are 0 or empty (logged).
pub(crate) fn host_info(gpus: &[Gpu], disk_path: &Path) -> HostInfo {
    let cpus = std::thread::available_parallelism().map_or(0, |n| u32::try_from(n.get()).unwrap_or(u32::MAX));
    let memory = match std::fs::read_to_string("/proc/meminfo") {
        Ok(text) => mem_total(&text).unwrap_or(0),
        Err(e) => {
            tracing::warn!(%e, "cannot read /proc/meminfo");
            0
        }
    };
    let disk_size = match nix::sys::statvfs::statvfs(disk_path) {
        Ok(st) => st.blocks_available().saturating_mul(st.fragment_size()),
        Err(e) => {
            tracing::warn!(%e, path = %disk_path.display(), "cannot statvfs");
            0
        }
    };
    let first = gpus.first();
    HostInfo {
        gpu_vendor: first.map_or("none", |g| g.vendor.as_str()).to_owned(),
        gpu_name: first.map(|g| g.name.clone()).unwrap_or_default(),
        gpu_memory: first.map_or(0, |g| g.vram_mib),
        gpu_count: u32::try_from(gpus.len()).unwrap_or(u32::MAX),
        addresses: addresses(),
        disk_size,
        cpus,
        memory,
    }
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => value.checked_mul(1024),
        Some(_) => None,
    }
}

/// Every non-loopback interface address, as `addr/prefix`.
fn addresses() -> Vec<String> {
    let Ok(ifaddrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    let mut out = Vec::new();
    for ifa in ifaddrs {
        let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else { continue };
        if let (Some(a), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
            let ip = a.ip();
            if !ip.is_loopback() {
                out.push(format!("{ip}/{}", m.ip().to_bits().count_ones()));
            }
        } else if let (Some(a), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            let ip = a.ip();
            if !ip.is_loopback() {
                out.push(format!("{ip}/{}", m.ip().to_bits().count_ones()));
            }
        }
    }
    out
}

/// Writes `<home>/host_info.json` unless it exists (fsync'd, then renamed into place).
pub(crate) fn write_host_info(home: &Path, info: &HostInfo) -> std::io::Result<()> {
    use std::io::Write;
    let path = home.join("host_info.json");
    if path.exists() {
        return Ok(());
    }
    let tmp = home.join("host_info.json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec(info).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)
}

/// `<bin> --version` must print `<name> version <ver>`.
async fn component(name: &str, binary: &Path) -> ComponentInfo {
    let out = tokio::process::Command::new(binary).arg("--version").output().await;
    let version = out.ok().filter(|o| o.status.success()).and_then(|o| {
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        match text.split_whitespace().collect::<Vec<_>>().as_slice() {
            [n, "version", v] if *n == name => Some((*v).to_owned()),
            _ => None,
        }
    });
    match version {
        Some(version) => ComponentInfo { name: name.to_owned(), version, status: ComponentStatus::Installed },
        None if binary.exists() => {
            ComponentInfo { name: name.to_owned(), version: String::new(), status: ComponentStatus::Error }
        }
        None => ComponentInfo {
            name: name.to_owned(),
            version: String::new(),
            status: ComponentStatus::NotInstalled,
        },
    }
}

pub(crate) async fn components(runner_binary: &Path) -> ComponentsResponse {
    let shim = ComponentInfo {
        name: "dstack-shim".to_owned(),
        version: AGENT_VERSION.to_owned(),
        status: ComponentStatus::Installed,
    };
    ComponentsResponse { components: vec![component("dstack-runner", runner_binary).await, shim] }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_bytes() {
        let text = "MemTotal:       16318480 kB\nMemFree:         1234 kB\n";
        assert_eq!(mem_total(text), Some(16318480 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total("MemTotal: lots kB\n"), None);
    }

    #[test]
    fn host_info_reports_this_machine() {
        let info = host_info(&[], Path::new("/"));
        assert_eq!(info.gpu_vendor, "none");
        assert!(info.cpus >= 1 && info.memory > 0 && info.disk_size > 0, "{info:?}");
        assert!(info.addresses.iter().all(|a| a.contains('/')), "{info:?}");
    }

    #[test]
    fn instance_info_takes_the_first_gpu() {
        let gpus = gpu::parse_nvidia_smi("NVIDIA L4, 23034, GPU-1, 550.54.14\n").expect("parses");
        let info = instance_info(&gpus);
        assert_eq!(info.gpu_vendor.as_deref(), Some("nvidia"));
        assert_eq!(info.gpu_driver_version.as_deref(), Some("550.54.14"));
        assert_eq!(instance_info(&[]), InstanceInfo::default());
    }
}
