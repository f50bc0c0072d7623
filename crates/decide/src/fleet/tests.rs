use serde_json::json;

use super::*;

fn spec(configuration: Value) -> FleetSpec {
    serde_json::from_value(json!({
        "configuration": configuration,
        "configuration_path": "fleet.yml",
        "profile": {"name": "default"},
    }))
    .expect("a fleet spec")
}

fn key(private: &str) -> Value {
    json!({"public": "ssh-ed25519 AAAA", "private": private})
}

fn ssh(hosts: Value) -> FleetSpec {
    spec(
        json!({"type": "fleet", "name": "f", "ssh_config": {"user": "ubuntu", "ssh_key": key("k1"), "hosts": hosts}}),
    )
}

#[test]
fn update_or_recreate() {
    let cases: Vec<(FleetSpec, FleetSpec, Result<(), &str>)> = vec![
        // Same spec: an update that changes nothing.
        (ssh(json!(["a"])), ssh(json!(["a"])), Ok(())),
        // Hosts added or removed: in place.
        (ssh(json!(["a"])), ssh(json!(["a", "b"])), Ok(())),
        (ssh(json!(["a", "b"])), ssh(json!(["b"])), Ok(())),
        // A host's own parameters: re-create.
        (
            ssh(json!(["a"])),
            ssh(json!([{"hostname": "a", "port": 2222}])),
            Err("Hosts configuration changed, cannot update: ['a']"),
        ),
        (
            ssh(json!([{"hostname": "a", "port": 22}])),
            ssh(json!([{"hostname": "a", "port": 2222}])),
            Err("Hosts configuration changed, cannot update: ['a']"),
        ),
        // Only the path of a host's key file: no change.
        (
            ssh(json!([{"hostname": "a", "identity_file": "x", "ssh_key": key("k")}])),
            ssh(json!([{"hostname": "a", "identity_file": "y", "ssh_key": key("k")}])),
            Ok(()),
        ),
        // The fleet-level key or user: re-create.
        (
            ssh(json!(["a"])),
            spec(
                json!({"type": "fleet", "name": "f", "ssh_config": {"user": "ubuntu", "ssh_key": key("k2"), "hosts": ["a"]}}),
            ),
            Err("Failed to update fields ['ssh_key']. Can only update ['hosts']."),
        ),
        (
            ssh(json!(["a"])),
            spec(
                json!({"type": "fleet", "name": "f", "env": {"A": "1"}, "ssh_config": {"user": "ubuntu", "ssh_key": key("k1"), "hosts": ["a"]}}),
            ),
            Err("Failed to update fields ['env']. Can only update ['ssh_config']."),
        ),
        (
            ssh(json!(["a"])),
            spec(json!({"type": "fleet", "name": "f", "nodes": 1})),
            Err("Fleet type changed from SSH to Cloud, cannot update"),
        ),
        (
            spec(json!({"type": "fleet", "name": "f", "nodes": 1})),
            ssh(json!(["a"])),
            Err("Fleet type changed from Cloud to SSH, cannot update"),
        ),
        // Cloud fleets: nodes, resources and the placement-free profile fields.
        (
            spec(json!({"type": "fleet", "name": "f", "nodes": 1})),
            spec(
                json!({"type": "fleet", "name": "f", "nodes": "0..3", "max_price": 1.5, "spot_policy": "auto"}),
            ),
            Ok(()),
        ),
        (
            spec(json!({"type": "fleet", "name": "f", "nodes": 1})),
            spec(json!({"type": "fleet", "name": "f", "nodes": 1, "placement": "cluster"})),
            Err("Failed to update fields ['placement']. Can only update ['nodes', 'reservation', 'tags', \
                 'resources', 'backends', 'regions', 'availability_zones', 'instance_types', 'spot_policy', \
                 'max_price']."),
        ),
        (
            spec(json!({"type": "fleet", "name": "f", "nodes": 1})),
            spec(json!({"type": "fleet", "name": "f", "nodes": 1, "idle_duration": "1h"})),
            Err(
                "Failed to update fields ['idle_duration']. Can only update ['nodes', 'reservation', 'tags', \
                 'resources', 'backends', 'regions', 'availability_zones', 'instance_types', 'spot_policy', \
                 'max_price'].",
            ),
        ),
    ];
    for (i, (current, new, expected)) in cases.into_iter().enumerate() {
        assert_eq!(check_can_update(&current, &new), expected.map_err(str::to_owned), "case {i}");
    }
    // A different profile is never updated in place.
    let current = spec(json!({"type": "fleet", "name": "f", "nodes": 1}));
    let mut new = current.clone();
    new.profile = serde_json::from_value(json!({"name": "other"})).unwrap();
    assert_eq!(
        check_can_update(&current, &new),
        Err("Failed to update fields ['profile', 'merged_profile']. Can only update ['configuration', 'configuration_path', \
             'merged_profile']."
            .to_owned())
    );
}

#[test]
fn hosts_changes_are_by_hostname() {
    let hosts = |v: Value| ssh(v).configuration.ssh_config.unwrap().hosts;
    let changes = ssh_hosts_changes(&hosts(json!(["a", "b", "c"])), &hosts(json!(["d", "c", "a"])));
    assert_eq!(changes.added.iter().map(SshHost::hostname).collect::<Vec<_>>(), ["d"]);
    assert_eq!(changes.removed, ["b"]);
    assert!(changes.changed.is_empty());
    assert_eq!(next_instance_num(&[0, 2]), 1);
    assert_eq!(next_instance_num(&[]), 0);
}

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

fn inst(num: i64, status: InstanceStatus, ssh: bool) -> InstanceSnapshot {
    InstanceSnapshot { id: Uuid::from_u128(num as u128 + 1), instance_num: num, status, ssh, has_jobs: false }
}

fn fleet(status: FleetStatus, nodes: Option<FleetNodes>, instances: Vec<InstanceSnapshot>) -> FleetSnapshot {
    FleetSnapshot {
        status,
        nodes,
        autocreated: false,
        created_at: t(0),
        consolidation_attempt: 0,
        last_consolidated_at: None,
        active_runs: 0,
        instances,
    }
}

fn statuses(plan: &FleetPassPlan) -> Vec<(i64, InstanceStatus, bool)> {
    plan.transitions.iter().map(|t| (t.id.as_u128() as i64 - 1, t.to, t.delete)).collect()
}

#[test]
fn a_deleted_ssh_fleet_waits_for_its_hosts_to_be_released_then_goes_away() {
    use InstanceStatus::*;
    let snap =
        fleet(FleetStatus::Terminating, None, vec![inst(0, Terminating, true), inst(1, Terminating, true)]);
    let plan = decide(&snap, t(1));
    assert_eq!(statuses(&plan), [], "the instances loop releases SSH hosts");
    assert!(!plan.delete_fleet);
    // Once the instances loop has ended them, the fleet goes.
    let plan = decide(&fleet(FleetStatus::Terminating, None, vec![]), t(2));
    assert!(plan.delete_fleet);
}

#[test]
fn a_deleted_cloud_fleet_goes_away_in_one_pass() {
    use InstanceStatus::*;
    let snap = fleet(FleetStatus::Terminating, None, vec![inst(0, Terminating, false), inst(1, Idle, false)]);
    let plan = decide(&snap, t(1));
    assert_eq!(statuses(&plan), [(0, Terminated, true)]);
    assert!(plan.transitions.iter().all(|t| t.finish));
}

#[test]
fn pending_ssh_hosts_wait_and_an_active_fleet_stays() {
    let snap = fleet(FleetStatus::Active, None, vec![inst(0, InstanceStatus::Pending, true)]);
    assert_eq!(decide(&snap, t(1000)), FleetPassPlan::default());
    let empty = fleet(FleetStatus::Active, None, vec![]);
    assert!(!decide(&empty, t(1000)).delete_fleet, "an empty SSH fleet stays until deleted");
}

#[test]
fn a_terminating_instance_with_a_job_waits_and_keeps_the_fleet() {
    let mut busy = inst(0, InstanceStatus::Terminating, true);
    busy.has_jobs = true;
    let snap = fleet(FleetStatus::Terminating, None, vec![busy]);
    let plan = decide(&snap, t(1));
    assert!(plan.transitions.is_empty());
    assert!(!plan.delete_fleet);
    // With no instance left but an unfinished run, the fleet waits too.
    let mut runs = fleet(FleetStatus::Terminating, None, vec![]);
    runs.active_runs = 1;
    assert!(!decide(&runs, t(1)).delete_fleet);
}

#[test]
fn cloud_instances_find_no_offers_and_consolidation_replaces_them_with_backoff() {
    use InstanceStatus::*;
    let nodes = Some(FleetNodes { min: 1, target: 1, max: None });
    let snap = fleet(FleetStatus::Active, nodes, vec![inst(0, Pending, false)]);
    // Before the first delay: only the instance's own step.
    let plan = decide(&snap, t(10));
    assert_eq!(statuses(&plan), [(0, Terminated, false)]);
    assert_eq!(plan.transitions[0].termination, Some((NO_OFFERS, Some("No offers found".to_owned()))));
    assert_eq!(plan.consolidation_attempt, None);
    // After it: the terminated one is deleted and a new one is made in its place.
    let snap = fleet(FleetStatus::Active, nodes, vec![inst(0, Terminated, false)]);
    let plan = decide(&snap, t(60));
    assert_eq!(statuses(&plan), [(0, Terminated, true)]);
    assert_eq!(plan.new_instance_nums, [0]);
    assert_eq!(plan.consolidation_attempt, Some(1));
    assert!(!plan.delete_fleet);
    // The second attempt waits two minutes from the last.
    let mut later = snap.clone();
    later.consolidation_attempt = 1;
    later.last_consolidated_at = Some(t(60));
    assert_eq!(decide(&later, t(150)).consolidation_attempt, None);
    assert_eq!(decide(&later, t(180)).consolidation_attempt, Some(2));
    later.consolidation_attempt = MAX_CONSOLIDATION_ATTEMPTS;
    assert_eq!(decide(&later, t(100_000)).consolidation_attempt, None, "gives up");
}

#[test]
fn consolidation_trims_idle_instances_above_max_and_resets_when_converged() {
    use InstanceStatus::*;
    let nodes = Some(FleetNodes { min: 0, target: 0, max: Some(1) });
    let snap = fleet(
        FleetStatus::Active,
        nodes,
        vec![inst(0, Busy, false), inst(1, Idle, false), inst(2, Idle, false)],
    );
    let plan = decide(&snap, t(60));
    assert_eq!(statuses(&plan), [(1, Terminating, false), (2, Terminating, false)]);
    assert_eq!(plan.consolidation_attempt, Some(1));
    let ok = fleet(FleetStatus::Active, nodes, vec![inst(0, Idle, false)]);
    assert_eq!(decide(&ok, t(60)).consolidation_attempt, Some(0));
    // An elastic fleet with nothing in it is left alone.
    let empty = fleet(FleetStatus::Active, Some(FleetNodes::default()), vec![]);
    let plan = decide(&empty, t(60));
    assert!(plan.new_instance_nums.is_empty() && !plan.delete_fleet);
}

#[test]
fn in_use_follows_dstack() {
    let mut a = inst(0, InstanceStatus::Busy, false);
    a.has_jobs = true;
    let b = inst(1, InstanceStatus::Idle, false);
    let all = [a, b];
    assert!(in_use(&all, 0, None));
    assert!(in_use(&all, 0, Some(&[0])));
    assert!(!in_use(&all, 0, Some(&[1])));
    assert!(!in_use(&all[1..], 1, Some(&[1])), "runs count only for the whole fleet");
    assert!(in_use(&all[1..], 1, None));
}
