//! What the shim reports about its host and its binaries.

use std::path::Path;

use dstack_agent_proto::AGENT_VERSION;
use dstack_agent_proto::shim::{ComponentInfo, ComponentStatus, ComponentsResponse, InstanceInfo};

/// `nvidia-smi`'s driver version when there is an NVIDIA GPU, else nothing.
pub(crate) async fn instance_info() -> InstanceInfo {
    let out = tokio::process::Command::new("nvidia-smi")
        .args(["--query-gpu=driver_version", "--format=csv,noheader"])
        .output()
        .await;
    let Ok(out) = out else { return InstanceInfo::default() };
    if !out.status.success() {
        return InstanceInfo::default();
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return InstanceInfo::default();
    };
    InstanceInfo {
        gpu_vendor: Some("nvidia".to_owned()),
        gpu_driver_version: Some(normalize_driver(version)),
    }
}

/// `N/A` and friends mean "unknown": `""`.
fn normalize_driver(version: &str) -> String {
    let v = version.trim();
    let unknown = ["n/a", "[n/a]", "unknown", "[not supported]", "[not available]"];
    if unknown.contains(&v.to_lowercase().as_str()) { String::new() } else { v.to_owned() }
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
    #[test]
    fn unknown_driver_versions_are_empty() {
        assert_eq!(super::normalize_driver(" 570.86.15 "), "570.86.15");
        assert_eq!(super::normalize_driver("[N/A]"), "");
        assert_eq!(super::normalize_driver("Unknown"), "");
    }
}
