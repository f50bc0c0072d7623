//! Blocks: one host shared by several jobs (scheduling.md §4.6).
//!
//! A fleet's `blocks: N | auto` splits each host into `total_blocks` equal shares of its CPUs,
//! memory and GPUs. A job takes the smallest number of blocks `b` whose share satisfies its
//! requirements; it then sees `b/T` of the host (its GPUs, a CPU and memory limit) on a
//! bridge network, while a job that takes the whole host gets no limits and, by default, the
//! host network. These are dstack's rules: `services/offers.py::is_divisible_into_blocks` and
//! `generate_shared_offer`, `services/instances.py::get_shared_instances_with_offers` and
//! `jobs_submitted.py::_prepare_job_runtime_data`.
//!
//! # Differences from dstack
//!
//! - A shared offer keeps the host's `cpu_arch`; dstack's drops it, so an ARM host split into
//!   blocks matches `cpu: arm:…` requirements here and never in dstack (where the share is
//!   taken for x86).

use dstack_api::runs::{
    InstanceAvailability, InstanceOfferWithAvailability, InstanceRuntime, InstanceType, JobRuntimeData,
    NetworkMode, Resources,
};
use dstack_model::fleet::Blocks;
use dstack_model::resources::GpuVendor;

/// dstack's instance termination message when a host does not split into the fleet's blocks.
pub const CANNOT_SPLIT: &str = "Cannot split into blocks";

/// How many blocks a host of `n_cpus` CPUs and `n_gpus` GPUs splits into, or `None` if it
/// does not divide: `auto` is as many as possible (the CPUs, or the fewer of CPUs and GPUs
/// on a GPU host); a count must divide both the CPUs and the GPUs.
pub fn divisible_into(n_cpus: i64, n_gpus: i64, blocks: Blocks) -> Option<i64> {
    let n = match blocks {
        Blocks::Auto if n_gpus == 0 => n_cpus,
        Blocks::Auto => n_cpus.min(n_gpus),
        Blocks::Count(n) => n,
    };
    (n >= 1 && n_cpus % n == 0 && n_gpus % n == 0).then_some(n)
}

/// A host's `total_blocks` for its fleet's `blocks` (`auto` when the instance row's
/// `total_blocks` is still NULL), as the SSH-fleet deploy sets it once the host's resources
/// are known. `Err` carries dstack's message [`CANNOT_SPLIT`], the instance's termination
/// message (reason `error`).
pub fn total_blocks(blocks: Blocks, n_cpus: i64, n_gpus: i64) -> Result<i64, String> {
    divisible_into(n_cpus, n_gpus, blocks).ok_or_else(|| CANNOT_SPLIT.to_owned())
}

/// `total_blocks` of a backend offer for a fleet with `blocks` other than 1, or `None` if the
/// offer cannot be shared so (dstack then drops the offer). TPUs count as one GPU: they are
/// never split.
pub fn offer_total_blocks(resources: &Resources, blocks: Blocks) -> Option<i64> {
    let n_gpus = match resources.gpus.first() {
        Some(gpu) if gpu.vendor == Some(GpuVendor::Google) => 1,
        _ => i64::try_from(resources.gpus.len()).unwrap_or(i64::MAX),
    };
    divisible_into(resources.cpus, n_gpus, blocks)
}

/// The offer of `blocks` out of `total_blocks` of a host: that share of its CPUs, memory and
/// GPUs (rounded down per block, the first GPUs of the list), the whole disk, the full price.
/// As in dstack the share has no availability zones and the `shim` runtime; its availability
/// is the host offer's until the caller sets it. `total_blocks` below 1 counts as 1.
pub fn shared_offer(
    offer: &InstanceOfferWithAvailability,
    blocks: i64,
    total_blocks: i64,
) -> InstanceOfferWithAvailability {
    let total = total_blocks.max(1);
    let share = |n: i64| n.div_euclid(total).saturating_mul(blocks.max(0));
    let full = &offer.instance.resources;
    let n_gpus = usize::try_from(share(i64::try_from(full.gpus.len()).unwrap_or(i64::MAX))).unwrap_or(0);
    let resources = Resources {
        cpus: share(full.cpus),
        memory_mib: share(full.memory_mib),
        gpus: full.gpus.iter().take(n_gpus).cloned().collect(),
        spot: full.spot,
        disk: full.disk,
        cpu_arch: full.cpu_arch,
        description: String::new(),
    };
    InstanceOfferWithAvailability {
        backend: offer.backend,
        instance: InstanceType { name: offer.instance.name.clone(), resources },
        region: offer.region.clone(),
        price: offer.price,
        backend_data: offer.backend_data.clone(),
        availability: offer.availability,
        availability_zones: None,
        instance_runtime: InstanceRuntime::Shim,
        blocks,
        total_blocks,
    }
}

/// What a shared host offers a job: the smallest share (from one block, or all of them for a
/// multi-node job, which also needs the host unused) that `fits`, `idle` when that many blocks
/// are free and the host takes jobs, else `busy`. `None` when no share fits (or a multi-node
/// job finds the host in use).
pub fn smallest_fitting_share(
    offer: &InstanceOfferWithAvailability,
    total_blocks: i64,
    busy_blocks: i64,
    takes_jobs: bool,
    multinode: bool,
    fits: impl Fn(&Resources) -> bool,
) -> Option<InstanceOfferWithAvailability> {
    if multinode && busy_blocks > 0 {
        return None;
    }
    let idle_blocks = total_blocks - busy_blocks;
    let min_blocks = if multinode { total_blocks } else { 1 };
    (min_blocks..=total_blocks).find_map(|blocks| {
        let mut share = shared_offer(offer, blocks, total_blocks);
        if !fits(&share.instance.resources) {
            return None;
        }
        share.availability = if takes_jobs && blocks <= idle_blocks {
            InstanceAvailability::Idle
        } else {
            InstanceAvailability::Busy
        };
        Some(share)
    })
}

/// `DSTACK_SERVER_JOB_NETWORK_MODE`: the network of a job that takes a whole host (a job on
/// part of a host always gets `bridge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JobNetworkMode {
    /// `1`: host networking only for multi-node jobs.
    HostForMultinodeOnly,
    /// `2`, the default.
    #[default]
    HostWhenPossible,
    /// `3`: always bridge.
    ForcedBridge,
}

impl JobNetworkMode {
    /// dstack's values `1`, `2`, `3`.
    pub fn from_setting(value: &str) -> Result<JobNetworkMode, String> {
        match value.trim() {
            "1" => Ok(JobNetworkMode::HostForMultinodeOnly),
            "2" => Ok(JobNetworkMode::HostWhenPossible),
            "3" => Ok(JobNetworkMode::ForcedBridge),
            other => Err(format!(
                "DSTACK_SERVER_JOB_NETWORK_MODE is {other:?}; use 1 (host for multi-node jobs only), \
                 2 (host when possible, the default) or 3 (always bridge)"
            )),
        }
    }
}

/// The runtime data of a job placed with `offer`: the whole host gets the network `mode`
/// gives and no limits; a share gets `bridge` and its CPUs, GPU count and memory (GB) as
/// the container's limits.
pub fn runtime_data(
    offer: &InstanceOfferWithAvailability,
    multinode: bool,
    mode: JobNetworkMode,
) -> JobRuntimeData {
    let mut jrd = JobRuntimeData {
        network_mode: NetworkMode::Bridge,
        gpu: None,
        cpu: None,
        memory: None,
        ports: None,
        volume_names: None,
        offer: Some(offer.clone()),
        working_dir: None,
        username: None,
    };
    if offer.blocks == offer.total_blocks {
        let host = match mode {
            JobNetworkMode::ForcedBridge => false,
            JobNetworkMode::HostWhenPossible => true,
            JobNetworkMode::HostForMultinodeOnly => multinode,
        };
        if host {
            jrd.network_mode = NetworkMode::Host;
        }
        return jrd;
    }
    let resources = &offer.instance.resources;
    jrd.cpu = Some(resources.cpus as f64);
    jrd.gpu = Some(i64::try_from(resources.gpus.len()).unwrap_or(i64::MAX));
    jrd.memory = Some(resources.memory_mib as f64 / 1024.0);
    jrd
}

#[cfg(test)]
mod tests {
    use dstack_api::runs::{Disk, Gpu};
    use dstack_model::common::BackendType;
    use dstack_model::resources::CpuArch;

    use super::*;

    /// dstack 0.22.5's `is_divisible_into_blocks` on each row (recorded from it).
    #[test]
    fn divisibility_as_dstack() {
        let auto = Blocks::Auto;
        let n = Blocks::Count;
        let table = [
            (8, 0, auto, Some(8)),
            (8, 4, auto, Some(4)),
            (8, 2, auto, Some(2)),
            (2, 8, auto, Some(2)),
            (6, 4, auto, None),
            (12, 3, auto, Some(3)),
            (0, 0, auto, None),
            (8, 4, n(4), Some(4)),
            (8, 4, n(2), Some(2)),
            (8, 4, n(8), None),
            (8, 0, n(4), Some(4)),
            (8, 0, n(3), None),
            (6, 0, n(4), None),
            (8, 4, n(0), None),
            (8, 4, n(-2), None),
            (1, 0, n(1), Some(1)),
            (0, 0, n(1), Some(1)),
        ];
        for (cpus, gpus, blocks, want) in table {
            assert_eq!(divisible_into(cpus, gpus, blocks), want, "{cpus} CPUs, {gpus} GPUs, {blocks:?}");
        }
        assert_eq!(total_blocks(Blocks::Auto, 8, 4), Ok(4));
        assert_eq!(total_blocks(Blocks::Count(3), 8, 4), Err("Cannot split into blocks".to_owned()));
    }

    fn host(
        cpus: i64,
        memory_mib: i64,
        n_gpus: usize,
        vendor: Option<GpuVendor>,
    ) -> InstanceOfferWithAvailability {
        let gpu = Gpu { name: "A100".into(), memory_mib: 81920, vendor };
        InstanceOfferWithAvailability {
            backend: BackendType::Remote,
            instance: InstanceType {
                name: "h".into(),
                resources: Resources {
                    cpus,
                    memory_mib,
                    gpus: vec![gpu; n_gpus],
                    spot: false,
                    disk: Disk { size_mib: 1000 },
                    cpu_arch: Some(CpuArch::Arm),
                    description: String::new(),
                },
            },
            region: "r".into(),
            price: 1.5,
            backend_data: Default::default(),
            availability: InstanceAvailability::Available,
            availability_zones: Some(vec!["a".into()]),
            instance_runtime: InstanceRuntime::Runner,
            blocks: 1,
            total_blocks: 1,
        }
    }

    #[test]
    fn tpus_are_one_gpu() {
        let tpu = host(8, 1024, 4, Some(GpuVendor::Google));
        assert_eq!(offer_total_blocks(&tpu.instance.resources, Blocks::Auto), Some(1));
        assert_eq!(offer_total_blocks(&tpu.instance.resources, Blocks::Count(2)), None);
        let nvidia = host(8, 1024, 4, Some(GpuVendor::Nvidia));
        assert_eq!(offer_total_blocks(&nvidia.instance.resources, Blocks::Count(2)), Some(2));
    }

    /// dstack's `generate_shared_offer` for 1 and 3 of 4 blocks of a 10-CPU, 32001 MiB, 4-GPU
    /// host (recorded): shares round down per block, the disk and price stay whole, zones
    /// and the runtime are dropped. (dstack also drops `cpu_arch`; we keep it.)
    #[test]
    fn shares_as_dstack() {
        let h = host(10, 32001, 4, Some(GpuVendor::Nvidia));
        let one = shared_offer(&h, 1, 4);
        let r = &one.instance.resources;
        assert_eq!((r.cpus, r.memory_mib, r.gpus.len(), r.disk.size_mib), (2, 8000, 1, 1000));
        assert_eq!((one.blocks, one.total_blocks, one.price), (1, 4, 1.5));
        assert_eq!((one.availability_zones.clone(), one.instance_runtime), (None, InstanceRuntime::Shim));
        assert_eq!(one.availability, InstanceAvailability::Available);
        assert_eq!(r.cpu_arch, Some(CpuArch::Arm), "a deliberate difference");
        let three = shared_offer(&h, 3, 4);
        let r = &three.instance.resources;
        assert_eq!((r.cpus, r.memory_mib, r.gpus.len()), (6, 24000, 3));
        let whole = shared_offer(&h, 4, 4);
        assert_eq!(whole.instance.resources.gpus.len(), 4);
        // Nonsense input gives an empty share, never a panic.
        assert_eq!(shared_offer(&h, 1, 0).instance.resources.cpus, 10);
        assert_eq!(shared_offer(&h, -1, 4).instance.resources.cpus, 0);
    }

    /// The smallest fitting share, and its availability, for (busy blocks, GPUs needed,
    /// multi-node) on a 4-block host of 8 CPUs and 4 GPUs.
    #[test]
    fn the_smallest_share_that_fits() {
        let h = host(8, 32768, 4, None);
        let needs = |gpus: usize| move |r: &Resources| r.gpus.len() >= gpus;
        let idle = InstanceAvailability::Idle;
        let busy = InstanceAvailability::Busy;
        let table = [
            // busy, GPUs, multinode, takes jobs => (blocks, availability)
            (0, 1, false, true, Some((1, idle))),
            (0, 2, false, true, Some((2, idle))),
            (0, 0, false, true, Some((1, idle))),
            (3, 1, false, true, Some((1, idle))),
            (3, 2, false, true, Some((2, busy))),
            (4, 1, false, true, Some((1, busy))),
            (0, 5, false, true, None),
            (0, 1, false, false, Some((1, busy))),
            (0, 1, true, true, Some((4, idle))),
            (1, 1, true, true, None),
        ];
        for (n_busy, gpus, multinode, takes_jobs, want) in table {
            let got = smallest_fitting_share(&h, 4, n_busy, takes_jobs, multinode, needs(gpus))
                .map(|o| (o.blocks, o.availability));
            assert_eq!(got, want, "busy {n_busy}, {gpus} GPUs, multinode {multinode}");
        }
    }

    #[test]
    fn runtime_data_of_a_share_and_of_a_whole_host() {
        let h = host(8, 32768, 4, None);
        let share = shared_offer(&h, 2, 4);
        let jrd = runtime_data(&share, false, JobNetworkMode::default());
        assert_eq!(jrd.network_mode, NetworkMode::Bridge);
        assert_eq!((jrd.cpu, jrd.gpu, jrd.memory), (Some(4.0), Some(2), Some(16.0)));
        assert_eq!(jrd.offer.as_ref().map(|o| o.blocks), Some(2));
        let whole = shared_offer(&h, 4, 4);
        for (mode, multinode, want) in [
            (JobNetworkMode::HostWhenPossible, false, NetworkMode::Host),
            (JobNetworkMode::ForcedBridge, true, NetworkMode::Bridge),
            (JobNetworkMode::HostForMultinodeOnly, false, NetworkMode::Bridge),
            (JobNetworkMode::HostForMultinodeOnly, true, NetworkMode::Host),
        ] {
            let jrd = runtime_data(&whole, multinode, mode);
            assert_eq!(jrd.network_mode, want, "{mode:?}, multinode {multinode}");
            assert_eq!((jrd.cpu, jrd.gpu, jrd.memory), (None, None, None), "no limits on a whole host");
        }
        assert_eq!(JobNetworkMode::from_setting("3"), Ok(JobNetworkMode::ForcedBridge));
        assert!(JobNetworkMode::from_setting("host").unwrap_err().contains("use 1"));
    }

    proptest::proptest! {
        /// Shares never add up to more than the host, and on a host the blocks divide they
        /// add up to all of it.
        #[test]
        fn shares_never_exceed_the_host(
            cpus in 0i64..512, memory_mib in 0i64..4_000_000, n_gpus in 0usize..16,
            total in 1i64..64, split in 0i64..64,
        ) {
            let h = host(cpus, memory_mib, n_gpus, None);
            let b = split % (total + 1);
            let (a, c) = (shared_offer(&h, b, total), shared_offer(&h, total - b, total));
            let (a, c) = (&a.instance.resources, &c.instance.resources);
            proptest::prop_assert!(a.cpus + c.cpus <= cpus && a.memory_mib + c.memory_mib <= memory_mib);
            proptest::prop_assert!(a.gpus.len() + c.gpus.len() <= n_gpus);
            let n_gpus = i64::try_from(n_gpus).unwrap();
            if divisible_into(cpus, n_gpus, Blocks::Count(total)) == Some(total) {
                proptest::prop_assert_eq!(a.cpus + c.cpus, cpus);
                proptest::prop_assert_eq!(i64::try_from(a.gpus.len() + c.gpus.len()).unwrap(), n_gpus);
            }
        }
    }
}
