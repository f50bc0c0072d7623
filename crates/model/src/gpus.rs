//! Known accelerator models and vendor inference from GPU names.
//!
//! The table lists the models dstack 0.22.5 knows through gpuhunt 0.1.34 (one row per memory
//! variant). It is used to infer a GPU vendor from names (`gpu: MI300X` means AMD) and, later,
//! to describe offers.

use std::collections::BTreeSet;

use crate::resources::{GpuSpec, GpuVendor};

/// One known accelerator model and memory size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownAccelerator {
    pub vendor: GpuVendor,
    pub name: &'static str,
    pub memory_gb: u32,
}

/// Every known GPU, Gaudi and Tenstorrent model (TPUs are matched by pattern).
pub const KNOWN_ACCELERATORS: &[KnownAccelerator] = &[
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "A10", memory_gb: 24 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "A16", memory_gb: 16 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "A40", memory_gb: 48 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "A100", memory_gb: 40 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "A100", memory_gb: 80 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "A10G", memory_gb: 24 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "A4000", memory_gb: 16 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "A4500", memory_gb: 20 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "A5000", memory_gb: 24 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "A6000", memory_gb: 48 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "H100", memory_gb: 80 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "H100NVL", memory_gb: 94 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "H200", memory_gb: 141 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "H200NVL", memory_gb: 141 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "B200", memory_gb: 180 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "GB200", memory_gb: 186 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "B300", memory_gb: 270 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "GB300", memory_gb: 270 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "L4", memory_gb: 24 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "L40", memory_gb: 48 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "L40S", memory_gb: 48 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "P100", memory_gb: 16 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX2060", memory_gb: 6 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX2060", memory_gb: 12 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX2060SUPER", memory_gb: 8 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX2070", memory_gb: 8 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX2070SUPER", memory_gb: 8 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX2080", memory_gb: 8 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX2080SUPER", memory_gb: 8 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX2080Ti", memory_gb: 11 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX3050", memory_gb: 6 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX3050", memory_gb: 8 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX3060", memory_gb: 8 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX3060", memory_gb: 12 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX3060Ti", memory_gb: 8 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX3070", memory_gb: 8 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX3070Ti", memory_gb: 8 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX3080", memory_gb: 10 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX3080Ti", memory_gb: 12 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX3090", memory_gb: 24 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX3090Ti", memory_gb: 24 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX4060", memory_gb: 8 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX4060Ti", memory_gb: 8 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX4060Ti", memory_gb: 16 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX4070", memory_gb: 12 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX4070SUPER", memory_gb: 12 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX4070Ti", memory_gb: 12 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX4070TiSUPER", memory_gb: 16 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX4080", memory_gb: 16 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX4080SUPER", memory_gb: 16 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX4090", memory_gb: 24 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX5060", memory_gb: 8 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX5060Ti", memory_gb: 8 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX5060Ti", memory_gb: 16 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX5070", memory_gb: 12 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX5070Ti", memory_gb: 16 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX5080", memory_gb: 16 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX5090", memory_gb: 32 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX6000", memory_gb: 24 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX2000Ada", memory_gb: 16 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX4000Ada", memory_gb: 20 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTX6000Ada", memory_gb: 48 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTXPRO4500", memory_gb: 32 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "RTXPRO6000", memory_gb: 96 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "T4", memory_gb: 16 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "V100", memory_gb: 16 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "V100", memory_gb: 32 },
    KnownAccelerator { vendor: GpuVendor::Nvidia, name: "GH200", memory_gb: 96 },
    KnownAccelerator { vendor: GpuVendor::Amd, name: "MI100", memory_gb: 32 },
    KnownAccelerator { vendor: GpuVendor::Amd, name: "MI210", memory_gb: 64 },
    KnownAccelerator { vendor: GpuVendor::Amd, name: "MI250", memory_gb: 128 },
    KnownAccelerator { vendor: GpuVendor::Amd, name: "MI250X", memory_gb: 128 },
    KnownAccelerator { vendor: GpuVendor::Amd, name: "MI300A", memory_gb: 128 },
    KnownAccelerator { vendor: GpuVendor::Amd, name: "MI300X", memory_gb: 192 },
    KnownAccelerator { vendor: GpuVendor::Amd, name: "MI308X", memory_gb: 128 },
    KnownAccelerator { vendor: GpuVendor::Amd, name: "MI325X", memory_gb: 288 },
    KnownAccelerator { vendor: GpuVendor::Amd, name: "MI350X", memory_gb: 288 },
    KnownAccelerator { vendor: GpuVendor::Amd, name: "MI355X", memory_gb: 288 },
    KnownAccelerator { vendor: GpuVendor::Intel, name: "Gaudi", memory_gb: 32 },
    KnownAccelerator { vendor: GpuVendor::Intel, name: "Gaudi2", memory_gb: 96 },
    KnownAccelerator { vendor: GpuVendor::Intel, name: "Gaudi3", memory_gb: 128 },
    KnownAccelerator { vendor: GpuVendor::Tenstorrent, name: "n150", memory_gb: 12 },
    KnownAccelerator { vendor: GpuVendor::Tenstorrent, name: "n300", memory_gb: 24 },
    KnownAccelerator { vendor: GpuVendor::Tenstorrent, name: "tt-galaxy-wh", memory_gb: 12 },
    KnownAccelerator { vendor: GpuVendor::Tenstorrent, name: "p100a", memory_gb: 28 },
    KnownAccelerator { vendor: GpuVendor::Tenstorrent, name: "p150", memory_gb: 32 },
    KnownAccelerator { vendor: GpuVendor::Tenstorrent, name: "p300", memory_gb: 32 },
    KnownAccelerator { vendor: GpuVendor::Tenstorrent, name: "p300", memory_gb: 64 },
    KnownAccelerator { vendor: GpuVendor::Tenstorrent, name: "tt-galaxy-bh", memory_gb: 32 },
];

/// TPU versions; a TPU name is `<version>-<cores>`, e.g. `v5litepod-8`.
pub const KNOWN_TPU_VERSIONS: &[&str] = &["v2", "v3", "v4", "v5p", "v5litepod", "v6e"];

/// The vendors a GPU name belongs to (case-insensitive); empty for an unknown name.
pub fn vendors_by_name(name: &str) -> BTreeSet<GpuVendor> {
    let lower = name.to_lowercase();
    let mut vendors: BTreeSet<GpuVendor> =
        KNOWN_ACCELERATORS.iter().filter(|a| a.name.to_lowercase() == lower).map(|a| a.vendor).collect();
    if let Some((version, cores)) = lower.split_once('-')
        && !cores.is_empty()
        && cores.bytes().all(|c| c.is_ascii_digit())
        && KNOWN_TPU_VERSIONS.contains(&version)
    {
        vendors.insert(GpuVendor::Google);
    }
    vendors
}

/// The vendor the server assumes for a GPU spec with none set (dstack's
/// `set_default_gpu_spec_vendor`): nvidia for a nameless request on the default image, the
/// one vendor all names share, or none.
pub fn infer_vendor(gpu: &GpuSpec, image: Option<&str>, docker: bool) -> Option<GpuVendor> {
    if gpu.vendor.is_some() || gpu.count.max == Some(0) {
        return gpu.vendor;
    }
    match gpu.name.as_deref() {
        None | Some([]) => (image.is_none() && !docker).then_some(GpuVendor::Nvidia),
        Some(names) => {
            let mut vendors: BTreeSet<Option<GpuVendor>> = BTreeSet::new();
            for name in names {
                let found = vendors_by_name(name);
                if found.is_empty() {
                    vendors.insert(None);
                } else {
                    vendors.extend(found.into_iter().map(Some));
                }
            }
            if vendors.len() == 1 { vendors.into_iter().next().flatten() } else { None }
        }
    }
}

/// Vendors in a GPU request that the default (CUDA) image cannot serve: anything but NVIDIA
/// and Google TPU. Empty when an image is set, Docker-in-Docker is used, or no GPU is asked for.
pub fn vendors_requiring_image(
    gpu: Option<&GpuSpec>,
    image: Option<&str>,
    docker: bool,
) -> BTreeSet<GpuVendor> {
    let Some(gpu) = gpu else {
        return BTreeSet::new();
    };
    if image.is_some() || docker || gpu.count.max == Some(0) {
        return BTreeSet::new();
    }
    let vendors: BTreeSet<GpuVendor> = match gpu.vendor {
        Some(v) => BTreeSet::from([v]),
        None => gpu.name.iter().flatten().flat_map(|n| vendors_by_name(n)).collect(),
    };
    vendors.into_iter().filter(|v| !matches!(v, GpuVendor::Nvidia | GpuVendor::Google)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(names: &[&str]) -> GpuSpec {
        GpuSpec { name: Some(names.iter().map(|n| (*n).to_owned()).collect()), ..GpuSpec::default() }
    }

    #[test]
    fn vendors_come_from_known_names() {
        assert_eq!(vendors_by_name("mi300x"), BTreeSet::from([GpuVendor::Amd]));
        assert_eq!(vendors_by_name("H100"), BTreeSet::from([GpuVendor::Nvidia]));
        assert_eq!(vendors_by_name("v5litepod-8"), BTreeSet::from([GpuVendor::Google]));
        assert_eq!(vendors_by_name("v5litepod-x"), BTreeSet::new());
        assert_eq!(vendors_by_name("Gaudi2"), BTreeSet::from([GpuVendor::Intel]));
        assert!(vendors_by_name("UNKNOWN1000").is_empty());
    }

    #[test]
    fn inference_follows_dstack() {
        let any = GpuSpec::default();
        assert_eq!(infer_vendor(&any, None, false), Some(GpuVendor::Nvidia));
        assert_eq!(infer_vendor(&any, Some("img"), false), None);
        assert_eq!(infer_vendor(&gpu(&["MI300X"]), Some("img"), false), Some(GpuVendor::Amd));
        assert_eq!(infer_vendor(&gpu(&["H100", "MI300X"]), None, false), None);
        assert_eq!(infer_vendor(&gpu(&["H100", "UNKNOWN"]), None, false), None);
    }

    #[test]
    fn default_image_serves_only_nvidia_and_tpu() {
        let amd = gpu(&["MI300X"]);
        assert_eq!(vendors_requiring_image(Some(&amd), None, false), BTreeSet::from([GpuVendor::Amd]));
        assert!(vendors_requiring_image(Some(&amd), Some("rocm/pytorch"), false).is_empty());
        assert!(vendors_requiring_image(Some(&gpu(&["H100", "v4-8"])), None, false).is_empty());
        let zero = GpuSpec { count: crate::common::Range::exact(0), ..amd };
        assert!(vendors_requiring_image(Some(&zero), None, false).is_empty());
    }
}
