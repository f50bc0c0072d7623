//! Offers: whether an instance fits a job's requirements, and which instance a submitted job
//! gets (scheduling.md §4.3–4.6, for fleets whose instances already exist).
//!
//! An instance with `total_blocks` 1 offers itself whole, `idle` while no job is on it. An
//! instance with more blocks is offered only as a share ([`crate::blocks`]): the fewest
//! blocks whose share fits the job, `idle` while that many are free.
//!
//! A multi-node replica (`nodes: N`, `jobs_per_replica > 1`) is placed as a whole by
//! [`assign_replica`]: N distinct idle instances of one `placement: cluster` fleet, each taken
//! whole (all its blocks, as dstack's shared offers do for multinode), or none at all.
//! dstack places the master first and lets the other jobs wait for it (`waiting_master_job`),
//! holding the master's host meanwhile; here the master's pass places every job of the
//! replica in one transaction, so a replica never holds some hosts while it waits for others.

use dstack_api::runs::{InstanceAvailability, InstanceOfferWithAvailability, Requirements, Resources};
use dstack_model::common::{Memory, Range};
use dstack_model::resources::{CpuArch, GpuVendor};
use uuid::Uuid;

pub use crate::blocks::{CANNOT_SPLIT, total_blocks};

/// dstack's message when no fleet can take a job; its CLI shows such jobs as `no fleets`.
pub const NO_FLEETS_MESSAGE: &str =
    "No matching fleet found. Possible reasons: https://dstack.ai/docs/guides/troubleshooting/#no-fleets";

/// Whether `res` satisfies `req` (inclusive ranges; GPU filters are skipped for a CPU-only
/// host when no GPU is required; GPU names compare case-insensitively).
pub fn matches(req: &Requirements, res: &Resources) -> bool {
    let spec = &req.resources;
    if !in_range(&spec.cpu.count, res.cpus) {
        return false;
    }
    if let Some(arch) = spec.cpu.arch {
        let host = res.cpu_arch.unwrap_or(CpuArch::X86);
        if arch != host {
            return false;
        }
    }
    if !in_memory_range(&spec.memory, mib_to_gb(res.memory_mib)) {
        return false;
    }
    if let Some(disk) = &spec.disk
        && res.disk.size_mib > 0
        && !in_memory_range(&disk.size, mib_to_gb(res.disk.size_mib))
    {
        return false;
    }
    if let Some(spot) = req.spot
        && spot != res.spot
    {
        return false;
    }
    let gpu = spec.gpu.clone().unwrap_or_else(dstack_model::resources::GpuSpec::zero_or_more);
    let n_gpus = i64::try_from(res.gpus.len()).unwrap_or(i64::MAX);
    if !in_range(&gpu.count, n_gpus) {
        return false;
    }
    if n_gpus == 0 && gpu.count.min.unwrap_or(0) == 0 {
        return true;
    }
    if let Some(vendor) = gpu.vendor
        && res.gpus.iter().any(|g| g.vendor.unwrap_or(GpuVendor::Nvidia) != vendor)
    {
        return false;
    }
    if let Some(names) = &gpu.name
        && !res.gpus.iter().all(|g| names.iter().any(|n| n.eq_ignore_ascii_case(&g.name)))
    {
        return false;
    }
    if let Some(memory) = &gpu.memory
        && !res.gpus.iter().all(|g| in_memory_range(memory, mib_to_gb(g.memory_mib)))
    {
        return false;
    }
    if let Some(total) = &gpu.total_memory {
        let sum: i64 = res.gpus.iter().map(|g| g.memory_mib).sum();
        if !in_memory_range(total, mib_to_gb(sum)) {
            return false;
        }
    }
    true
}

fn mib_to_gb(mib: i64) -> f64 {
    mib as f64 / 1024.0
}

fn in_range(range: &Range<i64>, v: i64) -> bool {
    range.min.is_none_or(|min| v >= min) && range.max.is_none_or(|max| v <= max)
}

fn in_memory_range(range: &Range<Memory>, gb: f64) -> bool {
    range.min.is_none_or(|Memory(min)| gb >= min) && range.max.is_none_or(|Memory(max)| gb <= max)
}

/// An instance of one of the project's fleets, as assignment sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceCandidate {
    pub id: Uuid,
    pub fleet_id: Uuid,
    pub fleet_name: String,
    /// The instance can take jobs (`idle` or `busy` with free blocks).
    pub usable: bool,
    pub offer: InstanceOfferWithAvailability,
    pub total_blocks: i64,
    pub busy_blocks: i64,
    /// The instance's fleet has `placement: cluster` (only those take multi-node runs).
    pub cluster: bool,
}

/// Where a submitted job goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Assignment {
    /// Take `offer.blocks` of this instance (`offer` is what the job gets: the instance's
    /// offer, or its share of a shared instance).
    Instance { id: Uuid, fleet_id: Uuid, offer: Box<InstanceOfferWithAvailability> },
    /// No instance can take it now: fail with no capacity and this message.
    NoCapacity { message: String },
}

/// Which fleets a run may use: all, or those named in the profile's `fleets`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetFilter {
    pub names: Option<Vec<String>>,
    /// Once a run has landed on a fleet, its later jobs stay there.
    pub run_fleet: Option<Uuid>,
}

/// The instances (with their offers) that fit `req`, cheapest first, free ones before busy.
/// A shared instance's offer is the smallest share that fits (its `blocks` of
/// `total_blocks`); a multi-node job gets only whole unused shared hosts.
pub fn instance_offers<'a>(
    req: &Requirements,
    instances: &'a [InstanceCandidate],
    filter: &FleetFilter,
) -> Vec<(&'a InstanceCandidate, InstanceOfferWithAvailability)> {
    let multinode = req.multinode == Some(true);
    let mut offers: Vec<(&InstanceCandidate, InstanceOfferWithAvailability)> = instances
        .iter()
        .filter(|i| filter.run_fleet.is_none_or(|f| f == i.fleet_id))
        .filter(|i| filter.names.as_ref().is_none_or(|names| names.contains(&i.fleet_name)))
        .filter(|i| req.max_price.is_none_or(|max| i.offer.price <= max))
        .filter_map(|i| instance_offer(req, i, multinode).map(|offer| (i, offer)))
        .collect();
    offers.sort_by(|a, b| {
        let free = |o: &InstanceOfferWithAvailability| !o.availability.is_available();
        free(&a.1).cmp(&free(&b.1)).then(a.1.price.total_cmp(&b.1.price))
    });
    offers
}

/// What one instance offers a job, if it fits.
fn instance_offer(
    req: &Requirements,
    i: &InstanceCandidate,
    multinode: bool,
) -> Option<InstanceOfferWithAvailability> {
    if i.total_blocks > 1 {
        return crate::blocks::smallest_fitting_share(
            &i.offer,
            i.total_blocks,
            i.busy_blocks,
            i.usable,
            multinode,
            |share| matches(req, share),
        );
    }
    if !matches(req, &i.offer.instance.resources) {
        return None;
    }
    let free = i.usable && i.busy_blocks < 1;
    let mut offer = i.offer.clone();
    offer.availability = if free { InstanceAvailability::Idle } else { InstanceAvailability::Busy };
    offer.total_blocks = 1;
    offer.blocks = 1;
    Some(offer)
}

/// Picks the instance for a submitted job: the cheapest fitting free one. With fitting
/// instances that are all busy, the message says so (the CLI then shows `no capacity`);
/// with none that fit, it is dstack's "no fleets" message.
pub fn assign(req: &Requirements, instances: &[InstanceCandidate], filter: &FleetFilter) -> Assignment {
    let offers = instance_offers(req, instances, filter);
    if let Some((i, offer)) = offers.iter().find(|(_, o)| o.availability.is_available()) {
        return Assignment::Instance { id: i.id, fleet_id: i.fleet_id, offer: Box::new(offer.clone()) };
    }
    let mut fleets: Vec<&str> = offers.iter().map(|(i, _)| i.fleet_name.as_str()).collect();
    fleets.dedup();
    let names = fleets.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ");
    // Not one of them can take jobs now (an unreachable host, or its agent not up yet):
    // waiting for runs to finish would not help.
    let all_unusable = offers.iter().all(|(i, _)| !i.usable);
    let message = match fleets.as_slice() {
        [] => NO_FLEETS_MESSAGE.to_owned(),
        _ if all_unusable => format!(
            "The instances that fit the run are unreachable or not ready yet (fleet {names}). \
             Check the hosts with `dstack fleet`, or set `retry` to wait for capacity"
        ),
        _ => format!(
            "All instances that fit the run are busy (fleet {names}). Wait for their runs to finish, \
             stop one, or set `retry` to wait for capacity"
        ),
    };
    Assignment::NoCapacity { message }
}

/// Where the jobs of a multi-node replica go.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplicaAssignment {
    /// Job `k` of the replica (job_num `k`) takes `instances[k]` whole; all are in one fleet.
    Instances { fleet_id: Uuid, instances: Vec<(Uuid, InstanceOfferWithAvailability)> },
    /// Not all of them can be placed now: none is, and the master fails with this message.
    NoCapacity { message: String },
}

/// Places the `nodes` jobs of a multi-node replica: `nodes` distinct instances of one
/// `placement: cluster` fleet that fit `req`, are usable and hold no job (a node takes its
/// host whole), cheapest first; of several fleets that can take them all, the one where they
/// cost least. A fleet that is not a cluster, or has fewer than `nodes` fitting instances, is
/// not a candidate (dstack's "No matching fleet found" message); a candidate whose instances
/// are busy gives a message that says how many are idle.
pub fn assign_replica(
    req: &Requirements,
    nodes: usize,
    instances: &[InstanceCandidate],
    filter: &FleetFilter,
) -> ReplicaAssignment {
    let fitting: Vec<&InstanceCandidate> = instances
        .iter()
        .filter(|i| i.cluster)
        .filter(|i| filter.run_fleet.is_none_or(|f| f == i.fleet_id))
        .filter(|i| filter.names.as_ref().is_none_or(|names| names.contains(&i.fleet_name)))
        .filter(|i| matches(req, &i.offer.instance.resources))
        .filter(|i| req.max_price.is_none_or(|max| i.offer.price <= max))
        .collect();
    let mut fleets: Vec<Uuid> = fitting.iter().map(|i| i.fleet_id).collect();
    fleets.sort_unstable();
    fleets.dedup();
    let mut best: Option<(f64, &str, Uuid, Vec<&InstanceCandidate>)> = None;
    let mut short: Vec<(String, usize)> = Vec::new();
    for fleet_id in fleets {
        let members: Vec<&InstanceCandidate> =
            fitting.iter().copied().filter(|i| i.fleet_id == fleet_id).collect();
        if members.len() < nodes {
            continue;
        }
        let mut idle: Vec<&InstanceCandidate> = members
            .iter()
            .copied()
            .filter(|i| i.usable && i.busy_blocks == 0 && i.total_blocks > 0)
            .collect();
        if idle.len() < nodes {
            short.push((members[0].fleet_name.clone(), idle.len()));
            continue;
        }
        // Stable: equal prices keep the fleet's order (instance number), so job 0 gets the first host.
        idle.sort_by(|a, b| a.offer.price.total_cmp(&b.offer.price));
        idle.truncate(nodes);
        let cost: f64 = idle.iter().map(|i| i.offer.price).sum();
        let name = idle[0].fleet_name.as_str();
        let better = best.as_ref().is_none_or(|(c, n, _, _)| cost.total_cmp(c).then(name.cmp(n)).is_lt());
        if better {
            best = Some((cost, name, fleet_id, idle));
        }
    }
    if let Some((_, _, fleet_id, picked)) = best {
        let instances = picked
            .into_iter()
            .map(|i| {
                let mut offer = i.offer.clone();
                offer.availability = InstanceAvailability::Idle;
                offer.total_blocks = i.total_blocks;
                offer.blocks = i.total_blocks;
                (i.id, offer)
            })
            .collect();
        return ReplicaAssignment::Instances { fleet_id, instances };
    }
    let message = match short.as_slice() {
        [] => NO_FLEETS_MESSAGE.to_owned(),
        fleets => format!(
            "The run needs {nodes} idle instances of one cluster fleet, and too few are idle ({}). \
             Wait for their runs to finish, stop one, or set `retry` to wait for capacity",
            fleets.iter().map(|(n, k)| format!("fleet '{n}': {k}")).collect::<Vec<_>>().join(", ")
        ),
    };
    ReplicaAssignment::NoCapacity { message }
}

#[cfg(test)]
mod tests {
    use dstack_api::runs::{Disk, Gpu, InstanceRuntime, InstanceType};
    use dstack_model::common::BackendType;
    use dstack_model::resources::{CpuSpec, DiskSpec, GpuSpec, ResourcesSpec};

    use super::*;

    fn resources(cpus: i64, memory_gb: i64, gpus: &[(&str, i64)]) -> Resources {
        Resources {
            cpus,
            memory_mib: memory_gb * 1024,
            gpus: gpus
                .iter()
                .map(|(n, gb)| Gpu { name: (*n).to_owned(), memory_mib: gb * 1024, vendor: None })
                .collect(),
            spot: false,
            disk: Disk { size_mib: 200 * 1024 },
            cpu_arch: None,
            description: String::new(),
        }
    }

    fn req(spec: ResourcesSpec) -> Requirements {
        Requirements {
            resources: spec,
            max_price: None,
            spot: Some(false),
            reservation: None,
            multinode: Some(false),
            backend_options: None,
        }
    }

    fn spec(cpu: Range<i64>, memory: f64, gpu: Option<GpuSpec>) -> ResourcesSpec {
        ResourcesSpec {
            cpu: CpuSpec { arch: None, count: cpu },
            memory: Range::at_least(Memory(memory)),
            shm_size: None,
            gpu,
            disk: Some(DiskSpec { size: Range::at_least(Memory(100.0)) }),
        }
    }

    #[test]
    fn requirements_against_hosts() {
        let cpu_host = resources(4, 16, &[]);
        let gpu_host = resources(8, 64, &[("A100", 80), ("A100", 80)]);
        let default = req(spec(
            Range::at_least(2),
            8.0,
            Some(GpuSpec { count: Range::exact(0), ..GpuSpec::default() }),
        ));
        assert!(matches(&default, &cpu_host));
        assert!(!matches(&default, &gpu_host), "gpu count 0 excludes GPU hosts");
        let any_gpu = req(spec(Range::at_least(2), 8.0, None));
        assert!(matches(&any_gpu, &cpu_host) && matches(&any_gpu, &gpu_host));
        let a100 = req(spec(
            Range::at_least(2),
            8.0,
            Some(GpuSpec { name: Some(vec!["a100".into()]), count: Range::exact(2), ..GpuSpec::default() }),
        ));
        assert!(matches(&a100, &gpu_host));
        assert!(!matches(&a100, &cpu_host));
        let big_memory = req(spec(Range::at_least(2), 32.0, None));
        assert!(!matches(&big_memory, &cpu_host));
        let many_cpus = req(spec(Range::at_least(16), 8.0, None));
        assert!(!matches(&many_cpus, &gpu_host));
        let mut spot = default.clone();
        spot.spot = Some(true);
        assert!(!matches(&spot, &cpu_host));
        let mut big_disk = default.clone();
        big_disk.resources.disk = Some(DiskSpec { size: Range::at_least(Memory(500.0)) });
        assert!(!matches(&big_disk, &cpu_host));
    }

    fn candidate(n: u128, free: bool, price: f64) -> InstanceCandidate {
        InstanceCandidate {
            id: Uuid::from_u128(n),
            fleet_id: Uuid::from_u128(100),
            fleet_name: "local".into(),
            usable: true,
            offer: InstanceOfferWithAvailability {
                backend: BackendType::Remote,
                instance: InstanceType { name: format!("i{n}"), resources: resources(4, 16, &[]) },
                region: "local".into(),
                price,
                backend_data: Default::default(),
                availability: InstanceAvailability::Idle,
                availability_zones: None,
                instance_runtime: InstanceRuntime::Shim,
                blocks: 1,
                total_blocks: 1,
            },
            total_blocks: 1,
            busy_blocks: if free { 0 } else { 1 },
            cluster: false,
        }
    }

    #[test]
    fn assignment_takes_the_cheapest_free_instance() {
        let r = req(spec(Range::at_least(2), 8.0, None));
        let all = [candidate(1, false, 0.0), candidate(2, true, 2.0), candidate(3, true, 1.0)];
        let Assignment::Instance { id, .. } = assign(&r, &all, &FleetFilter::default()) else { panic!() };
        assert_eq!(id, Uuid::from_u128(3));
        let busy = [candidate(1, false, 0.0)];
        let Assignment::NoCapacity { message } = assign(&r, &busy, &FleetFilter::default()) else { panic!() };
        assert!(message.starts_with("All instances that fit the run are busy (fleet 'local')"), "{message}");
        // A host that cannot take jobs (unreachable) is not "busy".
        let mut gone = candidate(4, true, 1.0);
        gone.usable = false;
        let Assignment::NoCapacity { message } = assign(&r, &[gone], &FleetFilter::default()) else {
            panic!()
        };
        assert!(
            message.starts_with(
                "The instances that fit the run are unreachable or not ready yet (fleet 'local')"
            )
        );
        assert_eq!(
            assign(&r, &[], &FleetFilter::default()),
            Assignment::NoCapacity { message: NO_FLEETS_MESSAGE.into() }
        );
        let named = FleetFilter { names: Some(vec!["other".into()]), run_fleet: None };
        assert!(matches!(assign(&r, &all, &named), Assignment::NoCapacity { .. }));
        assert!(matches!(assign(&r, &[], &FleetFilter::default()), Assignment::NoCapacity { .. }));
        let offers = instance_offers(&r, &all, &FleetFilter::default());
        let order: Vec<u128> = offers.iter().map(|(i, _)| i.id.as_u128()).collect();
        assert_eq!(order, vec![3, 2, 1]);
    }

    fn gpu_host(n: u128, total_blocks: i64, busy_blocks: i64) -> InstanceCandidate {
        let mut c = candidate(n, true, 1.0);
        c.offer.instance.resources = resources(8, 64, &[("A100", 80); 4]);
        c.total_blocks = total_blocks;
        c.busy_blocks = busy_blocks;
        c
    }

    fn gpus(count: Range<i64>) -> Requirements {
        req(spec(Range::at_least(1), 1.0, Some(GpuSpec { count, ..GpuSpec::default() })))
    }

    #[test]
    fn a_shared_instance_offers_the_fewest_blocks_that_fit() {
        let host = [gpu_host(1, 4, 0)];
        let any = FleetFilter::default();
        let Assignment::Instance { offer, .. } = assign(&gpus(Range::exact(1)), &host, &any) else {
            panic!()
        };
        let r = &offer.instance.resources;
        assert_eq!(
            (offer.blocks, offer.total_blocks, r.cpus, r.memory_mib, r.gpus.len()),
            (1, 4, 2, 16384, 1)
        );
        let Assignment::Instance { offer, .. } = assign(&gpus(Range::exact(2)), &host, &any) else {
            panic!()
        };
        assert_eq!(offer.blocks, 2);
        // A range takes its least: `gpu: 1..` is one block, not the whole host.
        let Assignment::Instance { offer, .. } = assign(&gpus(Range::at_least(1)), &host, &any) else {
            panic!()
        };
        assert_eq!(offer.blocks, 1);
        // Resources a block cannot give take more blocks: 40 GB of memory is 3 blocks of 16.
        let big = req(spec(Range::at_least(1), 40.0, None));
        let Assignment::Instance { offer, .. } = assign(&big, &host, &any) else { panic!() };
        assert_eq!(offer.blocks, 3);
        // An exact count that no share has: `gpu: 0` on a GPU host fits no share.
        assert!(matches!(assign(&gpus(Range::exact(0)), &host, &any), Assignment::NoCapacity { .. }));
    }

    #[test]
    fn shared_availability_counts_free_blocks() {
        let one = gpus(Range::exact(1));
        let two = gpus(Range::exact(2));
        let any = FleetFilter::default();
        let three_busy = [gpu_host(1, 4, 3)];
        assert!(matches!(assign(&one, &three_busy, &any), Assignment::Instance { .. }));
        let Assignment::NoCapacity { message } = assign(&two, &three_busy, &any) else { panic!() };
        assert!(message.starts_with("All instances that fit the run are busy"), "{message}");
        let offers = instance_offers(&two, &three_busy, &any);
        assert_eq!(offers.len(), 1, "a busy share is still offered (the plan shows it)");
        assert_eq!((offers[0].1.blocks, offers[0].1.availability), (2, InstanceAvailability::Busy));
        let full = [gpu_host(1, 4, 4)];
        assert!(matches!(assign(&one, &full, &any), Assignment::NoCapacity { .. }));
        let mut unreachable = gpu_host(1, 4, 0);
        unreachable.usable = false;
        assert_eq!(instance_offers(&one, &[unreachable], &any)[0].1.availability, InstanceAvailability::Busy);
    }

    #[test]
    fn multinode_jobs_take_whole_unused_shared_hosts() {
        let mut multi = gpus(Range::at_least(1));
        multi.multinode = Some(true);
        let any = FleetFilter::default();
        let Assignment::Instance { offer, .. } = assign(&multi, &[gpu_host(1, 4, 0)], &any) else { panic!() };
        assert_eq!((offer.blocks, offer.total_blocks), (4, 4));
        assert!(instance_offers(&multi, &[gpu_host(1, 4, 1)], &any).is_empty(), "in use: not offered");
    }

    #[test]
    fn whole_and_shared_instances_side_by_side() {
        // A 1-block instance is offered whole, with its stored offer's blocks reset to 1/1; a
        // shared one is never offered whole.
        let mut whole = gpu_host(1, 1, 0);
        whole.offer.blocks = 4;
        whole.offer.total_blocks = 4;
        whole.offer.price = 2.0;
        let shared = gpu_host(2, 2, 0);
        let one = gpus(Range::exact(1));
        let four = gpus(Range::exact(4));
        let any = FleetFilter::default();
        assert!(instance_offers(&one, std::slice::from_ref(&whole), &any).is_empty(), "4 GPUs is not 1");
        let both = [whole, shared];
        let offers = instance_offers(&four, &both, &any);
        let got: Vec<(u128, i64, i64)> =
            offers.iter().map(|(i, o)| (i.id.as_u128(), o.blocks, o.total_blocks)).collect();
        assert_eq!(got, vec![(2, 2, 2), (1, 1, 1)], "cheapest first; the shared host as 2 of 2");
        let some = gpus(Range::at_least(1));
        let Assignment::Instance { id, offer, .. } = assign(&some, &both, &any) else { panic!() };
        assert_eq!((id.as_u128(), offer.blocks, offer.instance.resources.gpus.len()), (2, 1, 2));
        // The price limit is the host's (a share costs the full price).
        let mut cheap = gpus(Range::exact(1));
        cheap.max_price = Some(0.5);
        assert!(instance_offers(&cheap, &[gpu_host(1, 4, 0)], &any).is_empty());
    }

    /// A cluster fleet's instance: (fleet number, instance number, idle, price).
    fn node(fleet: u128, n: u128, idle: bool, price: f64) -> InstanceCandidate {
        let mut c = candidate(fleet * 10 + n, idle, price);
        c.fleet_id = Uuid::from_u128(100 + fleet);
        c.fleet_name = format!("f{fleet}");
        c.cluster = true;
        c
    }

    fn placed(a: &ReplicaAssignment) -> Result<Vec<u128>, String> {
        match a {
            ReplicaAssignment::Instances { instances, .. } => {
                Ok(instances.iter().map(|(id, _)| id.as_u128()).collect())
            }
            ReplicaAssignment::NoCapacity { message } => Err(message.clone()),
        }
    }

    #[test]
    fn a_replica_is_placed_on_distinct_idle_hosts_of_one_cluster_fleet_or_not_at_all() {
        let r = req(spec(Range::at_least(2), 8.0, None));
        let any = FleetFilter::default();
        let busy_msg = |s: &str| {
            Err(format!(
                "The run needs 2 idle instances of one cluster fleet, and too few are idle ({s}). \
             Wait for their runs to finish, stop one, or set `retry` to wait for capacity"
            ))
        };
        let mut not_cluster = vec![node(1, 1, true, 1.0), node(1, 2, true, 1.0)];
        not_cluster.iter_mut().for_each(|c| c.cluster = false);
        let mut unusable = node(1, 2, true, 1.0);
        unusable.usable = false;
        let mut half_busy = node(1, 2, true, 1.0);
        (half_busy.total_blocks, half_busy.busy_blocks) = (2, 1);
        let mut split = node(1, 2, true, 1.0);
        split.total_blocks = 4;
        let mut too_small = node(1, 2, true, 1.0);
        too_small.offer.instance.resources = resources(1, 16, &[]);
        type Case<'a> = (&'a str, Vec<InstanceCandidate>, usize, Result<Vec<u128>, String>);
        let cases: Vec<Case> = vec![
            ("two idle hosts", vec![node(1, 1, true, 1.0), node(1, 2, true, 1.0)], 2, Ok(vec![11, 12])),
            (
                "cheapest first",
                vec![node(1, 1, true, 3.0), node(1, 2, true, 1.0), node(1, 3, true, 2.0)],
                2,
                Ok(vec![12, 13]),
            ),
            ("a fleet that is not a cluster", not_cluster, 2, Err(NO_FLEETS_MESSAGE.into())),
            (
                "too few hosts",
                vec![node(1, 1, true, 1.0), node(1, 2, true, 1.0)],
                3,
                Err(NO_FLEETS_MESSAGE.into()),
            ),
            ("a host too small", vec![node(1, 1, true, 1.0), too_small], 2, Err(NO_FLEETS_MESSAGE.into())),
            (
                "no hosts across fleets",
                vec![node(1, 1, true, 1.0), node(2, 1, true, 1.0)],
                2,
                Err(NO_FLEETS_MESSAGE.into()),
            ),
            (
                "one host busy",
                vec![node(1, 1, true, 1.0), node(1, 2, false, 1.0)],
                2,
                busy_msg("fleet 'f1': 1"),
            ),
            ("one host unreachable", vec![node(1, 1, true, 1.0), unusable], 2, busy_msg("fleet 'f1': 1")),
            ("a block taken", vec![node(1, 1, true, 1.0), half_busy], 2, busy_msg("fleet 'f1': 1")),
            ("a split host is taken whole", vec![node(1, 1, true, 1.0), split], 2, Ok(vec![11, 12])),
            (
                "the fleet that can take them all",
                vec![
                    node(1, 1, true, 0.5),
                    node(1, 2, false, 0.5),
                    node(2, 1, true, 1.0),
                    node(2, 2, true, 1.0),
                ],
                2,
                Ok(vec![21, 22]),
            ),
            (
                "the cheaper fleet",
                vec![
                    node(1, 1, true, 2.0),
                    node(1, 2, true, 2.0),
                    node(2, 1, true, 1.0),
                    node(2, 2, true, 1.0),
                ],
                2,
                Ok(vec![21, 22]),
            ),
        ];
        for (name, instances, nodes, expected) in cases {
            assert_eq!(placed(&assign_replica(&r, nodes, &instances, &any)), expected, "{name}");
        }
        let two =
            [node(1, 1, true, 1.0), node(1, 2, true, 1.0), node(2, 1, true, 0.1), node(2, 2, true, 0.1)];
        let named = FleetFilter { names: Some(vec!["f1".into()]), run_fleet: None };
        assert_eq!(placed(&assign_replica(&r, 2, &two, &named)), Ok(vec![11, 12]), "the named fleet");
        let landed = FleetFilter { names: None, run_fleet: Some(Uuid::from_u128(101)) };
        assert_eq!(placed(&assign_replica(&r, 2, &two, &landed)), Ok(vec![11, 12]), "the run's fleet");
        let ReplicaAssignment::Instances { fleet_id, instances } =
            assign_replica(&r, 2, &[node(1, 1, true, 1.0), split_host()], &any)
        else {
            panic!("placed")
        };
        assert_eq!(fleet_id, Uuid::from_u128(101));
        assert_eq!(
            instances.iter().map(|(_, o)| (o.blocks, o.total_blocks)).collect::<Vec<_>>(),
            [(1, 1), (4, 4)],
            "each node takes all of its host's blocks"
        );
    }

    fn split_host() -> InstanceCandidate {
        let mut c = node(1, 2, true, 1.0);
        c.total_blocks = 4;
        c
    }
}
