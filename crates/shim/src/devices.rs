//! The host's accelerators as containers get them (spec agents.md §1.6 step 2, §1.7.1, §1.9):
//! which vendor the host has, the IDs the GPU lock hands out, and the lock itself.
//!
//! Every device path is looked up under a *device root* (`/` in production, a temporary tree
//! in tests), so a test can fake an NVIDIA or AMD host with plain files and symlinks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::gpu::{Gpu, Vendor};

/// The vendor whose devices containers get: the first of NVIDIA (`/dev/nvidiactl`, or WSL2's
/// `/dev/dxg` with `/usr/lib/wsl/lib/nvidia-smi`) and AMD (`/dev/kfd`) present under `root`.
/// An AMD iGPU next to an NVIDIA card is therefore an NVIDIA host, as in dstack.
pub fn detect_vendor(root: &Path) -> Option<Vendor> {
    let has = |path: &str| under(root, path).exists();
    if has("/dev/nvidiactl") || (has("/dev/dxg") && has("/usr/lib/wsl/lib/nvidia-smi")) {
        Some(Vendor::Nvidia)
    } else if has("/dev/kfd") {
        Some(Vendor::Amd)
    } else {
        None
    }
}

/// `path` (absolute on the real host) under the device root.
pub fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// The IDs the GPU lock hands out for `vendor`, in detection order: NVIDIA GPU UUIDs; AMD
/// render nodes (`/dev/dri/renderD128`), found from each GPU's PCI address in
/// `/sys/bus/pci/devices/<bdf>/drm/`. A GPU of another vendor, or an AMD GPU without a render
/// node, is left out (logged).
pub fn lockable_ids(root: &Path, vendor: Option<Vendor>, gpus: &[Gpu]) -> Vec<String> {
    let Some(vendor) = vendor else { return Vec::new() };
    let mut ids = Vec::new();
    for gpu in gpus.iter().filter(|g| g.vendor == vendor) {
        match vendor {
            Vendor::Nvidia if !gpu.id.is_empty() => ids.push(gpu.id.clone()),
            Vendor::Nvidia => tracing::warn!(name = %gpu.name, "an NVIDIA GPU without a UUID is not used"),
            Vendor::Amd => match render_node(root, &gpu.id) {
                Some(node) => ids.push(node),
                None => tracing::warn!(bdf = %gpu.id, "no render node for an AMD GPU; it is not used"),
            },
        }
    }
    ids
}

/// `/dev/dri/renderD<N>` of the PCI device `bdf`, if it has one.
fn render_node(root: &Path, bdf: &str) -> Option<String> {
    if bdf.is_empty() || bdf.contains('/') {
        return None;
    }
    let drm = under(root, &format!("/sys/bus/pci/devices/{bdf}/drm"));
    let mut nodes: Vec<String> = std::fs::read_dir(drm)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("renderD"))
        .collect();
    nodes.sort();
    nodes.first().map(|n| format!("/dev/dri/{n}"))
}

/// The environment that limits a host process (process mode) to the GPUs its task holds,
/// out of `all` the host's lockable IDs; nothing on a host without a GPU vendor.
///
/// - NVIDIA: `CUDA_VISIBLE_DEVICES=<uuid>,…` (CUDA takes UUIDs; empty hides every GPU).
/// - AMD: `ROCR_VISIBLE_DEVICES=<index>,…`, the index of each render node among the host's
///   render nodes in minor-number order, which is the order ROCm enumerates GPUs in. Only
///   ROCR's variable is set: HIP's (`HIP_VISIBLE_DEVICES`) would apply again on top of it,
///   relative to the GPUs ROCR left visible.
///
/// Containers get their GPUs as devices instead (§1.7.1); this is what process mode has.
pub fn visible_devices_env(vendor: Option<Vendor>, held: &[String], all: &[String]) -> Vec<(String, String)> {
    match vendor {
        None => Vec::new(),
        Some(Vendor::Nvidia) => vec![("CUDA_VISIBLE_DEVICES".to_owned(), held.join(","))],
        Some(Vendor::Amd) => {
            let minor = |node: &String| -> u64 {
                node.rsplit_once("renderD").and_then(|(_, n)| n.parse().ok()).unwrap_or(u64::MAX)
            };
            let mut order: Vec<&String> = all.iter().collect();
            order.sort_by_key(|node| (minor(node), (*node).clone()));
            let indices: Vec<String> = held
                .iter()
                .filter_map(|id| order.iter().position(|node| *node == id))
                .map(|i| i.to_string())
                .collect();
            vec![("ROCR_VISIBLE_DEVICES".to_owned(), indices.join(","))]
        }
    }
}

/// Who holds which GPU (`GpuLock` in dstack). Acquisition is all-or-nothing; the free GPUs are
/// taken in detection order (dstack's choice is random, neither is topology-aware).
#[derive(Debug, Default)]
pub struct GpuLock {
    ids: Vec<String>,
    /// GPU ID → the task holding it.
    owners: BTreeMap<String, String>,
}

impl GpuLock {
    pub fn new(ids: Vec<String>) -> GpuLock {
        GpuLock { ids, owners: BTreeMap::new() }
    }

    /// GPUs for `task`: `count` < 0 takes every free one (possibly none), 0 none, N exactly N
    /// or nothing. A task that already holds GPUs gets the same ones again.
    pub fn acquire(&mut self, task: &str, count: i64) -> Result<Vec<String>, String> {
        let held = self.held_by(task);
        if !held.is_empty() || count == 0 {
            return Ok(held);
        }
        let free: Vec<String> =
            self.ids.iter().filter(|id| !self.owners.contains_key(*id)).cloned().collect();
        let take = match usize::try_from(count) {
            Err(_) => free,
            Ok(n) if n <= free.len() => free.into_iter().take(n).collect(),
            Ok(_) => return Err(format!("no capacity: {count} GPUs requested, {} available", free.len())),
        };
        for id in &take {
            self.owners.insert(id.clone(), task.to_owned());
        }
        Ok(take)
    }

    /// Marks `ids` as held by `task` (a recovered container). IDs this host does not have, or
    /// that another task holds, are skipped and left out of the answer.
    pub fn lock(&mut self, task: &str, ids: &[String]) -> Vec<String> {
        let mut locked = Vec::new();
        for id in ids {
            if !self.ids.contains(id) {
                tracing::warn!(task, gpu = %id, "a recovered task names a GPU this host does not have");
                continue;
            }
            match self.owners.get(id) {
                Some(owner) if owner != task => {
                    tracing::warn!(task, gpu = %id, owner = %owner, "a recovered task's GPU is held by another task");
                }
                _ => {
                    self.owners.insert(id.clone(), task.to_owned());
                    locked.push(id.clone());
                }
            }
        }
        locked
    }

    /// Frees whatever `task` holds.
    pub fn release(&mut self, task: &str) {
        self.owners.retain(|_, owner| owner != task);
    }

    fn held_by(&self, task: &str) -> Vec<String> {
        self.ids.iter().filter(|id| self.owners.get(*id).is_some_and(|o| o == task)).cloned().collect()
    }

    /// How many GPUs nobody holds.
    pub fn n_free(&self) -> usize {
        self.ids.len() - self.owners.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn four() -> GpuLock {
        GpuLock::new((0..4).map(|i| format!("GPU-{i}")).collect())
    }

    #[test]
    fn counts_are_all_or_nothing() {
        let mut lock = four();
        assert_eq!(lock.acquire("a", 2), Ok(vec!["GPU-0".to_owned(), "GPU-1".to_owned()]));
        assert_eq!(lock.acquire("b", 3), Err("no capacity: 3 GPUs requested, 2 available".to_owned()));
        assert_eq!(lock.n_free(), 2, "a refused request takes nothing");
        assert_eq!(lock.acquire("c", 0), Ok(vec![]));
        assert_eq!(lock.acquire("d", -1), Ok(vec!["GPU-2".to_owned(), "GPU-3".to_owned()]));
        // -1 with nothing free is no GPUs, not an error.
        assert_eq!(lock.acquire("e", -1), Ok(vec![]));
        lock.release("a");
        assert_eq!(lock.acquire("b", 2), Ok(vec!["GPU-0".to_owned(), "GPU-1".to_owned()]));
        assert_eq!(lock.acquire("b", 2), Ok(vec!["GPU-0".to_owned(), "GPU-1".to_owned()]), "idempotent");
    }

    #[test]
    fn recovered_ids_are_locked_once() {
        let mut lock = four();
        let ids = ["GPU-1".to_owned(), "GPU-9".to_owned()];
        assert_eq!(lock.lock("a", &ids), vec!["GPU-1".to_owned()]);
        assert_eq!(lock.lock("b", &ids), Vec::<String>::new(), "held by a");
        assert_eq!(lock.acquire("c", 4), Err("no capacity: 4 GPUs requested, 3 available".to_owned()));
    }

    #[test]
    fn vendors_are_detected_from_device_files() {
        let root = tempfile::tempdir().expect("root");
        assert_eq!(detect_vendor(root.path()), None);
        std::fs::create_dir_all(root.path().join("dev")).expect("dev");
        std::fs::write(root.path().join("dev/kfd"), "").expect("kfd");
        assert_eq!(detect_vendor(root.path()), Some(Vendor::Amd));
        std::fs::write(root.path().join("dev/nvidiactl"), "").expect("nvidiactl");
        assert_eq!(detect_vendor(root.path()), Some(Vendor::Nvidia), "NVIDIA wins over an AMD iGPU");
    }

    #[test]
    fn amd_ids_are_render_nodes() {
        let root = tempfile::tempdir().expect("root");
        let gpu = |bdf: &str| Gpu {
            vendor: Vendor::Amd,
            name: "AMD Instinct MI300X".to_owned(),
            vram_mib: 1,
            id: bdf.to_owned(),
            driver_version: String::new(),
        };
        for (bdf, node) in [("0000:0c:00.0", "renderD128"), ("0000:22:00.0", "renderD136")] {
            let drm = root.path().join(format!("sys/bus/pci/devices/{bdf}/drm"));
            std::fs::create_dir_all(drm.join(node)).expect("render node");
            std::fs::create_dir_all(drm.join("card1")).expect("card");
        }
        let gpus = [gpu("0000:0c:00.0"), gpu("0000:22:00.0"), gpu("0000:99:00.0")];
        assert_eq!(
            lockable_ids(root.path(), Some(Vendor::Amd), &gpus),
            ["/dev/dri/renderD128", "/dev/dri/renderD136"]
        );
        assert!(lockable_ids(root.path(), Some(Vendor::Nvidia), &gpus).is_empty());
        assert!(lockable_ids(root.path(), None, &gpus).is_empty());
    }

    #[test]
    fn host_processes_see_only_their_gpus() {
        let uuids: Vec<String> = (0..4).map(|i| format!("GPU-{i}")).collect();
        assert_eq!(
            visible_devices_env(Some(Vendor::Nvidia), &uuids[2..], &uuids),
            [("CUDA_VISIBLE_DEVICES".to_owned(), "GPU-2,GPU-3".to_owned())]
        );
        assert_eq!(
            visible_devices_env(Some(Vendor::Nvidia), &[], &uuids),
            [("CUDA_VISIBLE_DEVICES".to_owned(), String::new())],
            "none held: none visible"
        );
        // Detection order is not ROCm's: indices follow the render nodes' minor numbers.
        let nodes: Vec<String> =
            ["renderD136", "renderD128", "renderD144"].iter().map(|n| format!("/dev/dri/{n}")).collect();
        assert_eq!(
            visible_devices_env(Some(Vendor::Amd), &nodes[..2], &nodes),
            [("ROCR_VISIBLE_DEVICES".to_owned(), "1,0".to_owned())]
        );
        assert!(visible_devices_env(None, &[], &[]).is_empty());
    }
}
