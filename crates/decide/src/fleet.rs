//! Fleets: whether an applied spec updates a fleet in place, which SSH hosts come and go, and
//! the life cycle a pass of the fleets loop moves a fleet and its instances along.
//!
//! The rules are dstack 0.22.5's (`services/fleets.py`, the `InstancePipeline` termination
//! and cloud provisioning steps, the `FleetPipeline` consolidation and deletion), with one
//! deliberate difference: a `terminating` instance that still has a job assigned waits for
//! the job to release it (dstack never gets there, since deletion refuses fleets in use).
//!
//! ```text
//! instance (cloud):  PENDING --(no backends: no_offers)--> TERMINATED --(consolidation)--> deleted
//! instance (SSH):    PENDING/IDLE/BUSY/TERMINATING: the instances loop's (`crate::instance`)
//! any live instance: --(delete, nodes.max)--> TERMINATING --(no job left)--> TERMINATED + deleted
//!                    (SSH hosts: after the instances loop gave the host back)
//! fleet:             ACTIVE --(delete)--> TERMINATING --(no live instance, not in use)--> TERMINATED + deleted
//! ```

use dstack_api::fleets::{FleetSpec, FleetStatus, InstanceStatus};
use dstack_model::fleet::{FLEET_PROFILE_FIELDS, FleetNodes, SshHost};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value};
use uuid::Uuid;

/// dstack's `InstanceTerminationReason` values this module sets.
pub const TERMINATED_BY_USER: &str = "terminated_by_user";
pub const NO_OFFERS: &str = "no_offers";
pub const MAX_INSTANCES_LIMIT: &str = "max_instances_limit";

/// Consolidation gives up after this many passes that changed something in a row.
pub const MAX_CONSOLIDATION_ATTEMPTS: i64 = 15;

/// The wait before consolidation attempt `n` (dstack's 1, 2, 5, 10, 30 minutes).
pub fn consolidation_delay(attempt: i64) -> SignedDuration {
    const MINUTES: [i64; 5] = [1, 2, 5, 10, 30];
    let i = usize::try_from(attempt).unwrap_or(0).min(MINUTES.len() - 1);
    SignedDuration::from_mins(MINUTES[i])
}

// ---------------------------------------------------------------------------------------------
// Update in place or re-create

/// Python's `repr` of a list of strings: `['a', 'b']`.
fn py_list<S: AsRef<str>>(items: &[S]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("'{}'", s.as_ref())).collect();
    format!("[{}]", quoted.join(", "))
}

/// The keys of two JSON objects whose values differ, in `a`'s key order (then `b`'s).
fn changed_keys(a: &Map<String, Value>, b: &Map<String, Value>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (k, v) in a {
        if b.get(k).unwrap_or(&Value::Null) != v {
            out.push(k.clone());
        }
    }
    for (k, v) in b {
        if !a.contains_key(k) && !v.is_null() {
            out.push(k.clone());
        }
    }
    out
}

fn check_fields(changed: &[String], updatable: &[&str]) -> Result<(), String> {
    if changed.iter().all(|c| updatable.contains(&c.as_str())) {
        return Ok(());
    }
    Err(format!("Failed to update fields {}. Can only update {}.", py_list(changed), py_list(updatable)))
}

fn object(value: Result<Value, serde_json::Error>) -> Result<Map<String, Value>, String> {
    match value {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(format!("expected an object, got {other}")),
        Err(e) => Err(e.to_string()),
    }
}

/// dstack's `FleetSpec.merged_profile`: the profile with the configuration's profile
/// parameters over it, spot policy and retry defaulted.
fn merged_profile(spec: &FleetSpec, conf: &Map<String, Value>) -> Result<Map<String, Value>, String> {
    let mut merged = object(serde_json::to_value(&spec.profile))?;
    for key in FLEET_PROFILE_FIELDS.iter().copied().chain(["reservation"]) {
        if let Some(v) = conf.get(key).filter(|v| !v.is_null()) {
            merged.insert(key.to_owned(), v.clone());
        }
    }
    if merged.get("spot_policy").is_none_or(Value::is_null) {
        merged.insert("spot_policy".to_owned(), Value::from("on-demand"));
    }
    if merged.get("retry").is_none_or(Value::is_null) {
        merged.insert("retry".to_owned(), Value::Bool(false));
    }
    Ok(merged)
}

/// Whether `new` can replace `current` (both as submitted, SSH keys included) without
/// re-creating the fleet; the error is dstack's message saying why not.
pub fn check_can_update(current: &FleetSpec, new: &FleetSpec) -> Result<(), String> {
    let cur_conf = object(serde_json::to_value(&current.configuration))?;
    let new_conf = object(serde_json::to_value(&new.configuration))?;
    let mut changed = Vec::new();
    if cur_conf != new_conf {
        changed.push("configuration".to_owned());
    }
    if current.configuration_path != new.configuration_path {
        changed.push("configuration_path".to_owned());
    }
    if current.profile != new.profile {
        changed.push("profile".to_owned());
    }
    if current.autocreated != new.autocreated {
        changed.push("autocreated".to_owned());
    }
    if merged_profile(current, &cur_conf)? != merged_profile(new, &new_conf)? {
        changed.push("merged_profile".to_owned());
    }
    check_fields(&changed, &["configuration", "configuration_path", "merged_profile"])?;
    if !changed.iter().any(|c| c == "configuration") {
        return Ok(());
    }
    let conf_changed = changed_keys(&cur_conf, &new_conf);
    match (&current.configuration.ssh_config, &new.configuration.ssh_config) {
        (None, Some(_)) => Err("Fleet type changed from Cloud to SSH, cannot update".to_owned()),
        (Some(_), None) => Err("Fleet type changed from SSH to Cloud, cannot update".to_owned()),
        (None, None) => check_fields(
            &conf_changed,
            &[
                "nodes",
                "reservation",
                "tags",
                "resources",
                "backends",
                "regions",
                "availability_zones",
                "instance_types",
                "spot_policy",
                "max_price",
            ],
        ),
        (Some(cur_ssh), Some(new_ssh)) => {
            check_fields(&conf_changed, &["ssh_config"])?;
            if !conf_changed.iter().any(|c| c == "ssh_config") {
                return Ok(());
            }
            let a = object(serde_json::to_value(cur_ssh))?;
            let b = object(serde_json::to_value(new_ssh))?;
            let ssh_changed = changed_keys(&a, &b);
            check_fields(&ssh_changed, &["hosts"])?;
            let changes = ssh_hosts_changes(&cur_ssh.hosts, &new_ssh.hosts);
            if !changes.changed.is_empty() {
                return Err(format!(
                    "Hosts configuration changed, cannot update: {}",
                    py_list(&changes.changed)
                ));
            }
            Ok(())
        }
    }
}

/// How the hosts of an SSH fleet change between two specs, by hostname.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostsChanges {
    /// New hosts, in the new spec's order.
    pub added: Vec<SshHost>,
    /// Hostnames no longer listed, in the current spec's order.
    pub removed: Vec<String>,
    /// Hostnames listed in both whose parameters differ (an `identity_file` path alone does
    /// not count: the key read from it does), sorted.
    pub changed: Vec<String>,
}

/// A host's parameters as compared for a change: `identity_file` paths left out.
fn host_for_compare(host: &SshHost) -> Value {
    let mut v = serde_json::to_value(host).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert("identity_file".to_owned(), Value::Null);
        if let Some(Value::Object(proxy)) = map.get_mut("proxy_jump") {
            proxy.insert("identity_file".to_owned(), Value::from(""));
        }
    }
    v
}

/// dstack's `_calculate_ssh_hosts_changes`.
pub fn ssh_hosts_changes(current: &[SshHost], new: &[SshHost]) -> HostsChanges {
    let find = |hosts: &[SshHost], name: &str| hosts.iter().find(|h| h.hostname() == name).cloned();
    let mut out = HostsChanges::default();
    for host in new {
        match find(current, host.hostname()) {
            None => {
                if !out.added.iter().any(|h| h.hostname() == host.hostname()) {
                    out.added.push(host.clone());
                }
            }
            Some(cur) => {
                let differs = match (&cur, host) {
                    (SshHost::Name(a), SshHost::Name(b)) => a != b,
                    (SshHost::Params(_), SshHost::Params(_)) => {
                        host_for_compare(&cur) != host_for_compare(host)
                    }
                    _ => true,
                };
                if differs && !out.changed.iter().any(|c| c == host.hostname()) {
                    out.changed.push(host.hostname().to_owned());
                }
            }
        }
    }
    for host in current {
        if find(new, host.hostname()).is_none() && !out.removed.iter().any(|r| r == host.hostname()) {
            out.removed.push(host.hostname().to_owned());
        }
    }
    out.changed.sort();
    out
}

/// The lowest instance number not in `taken` (dstack's `get_next_instance_num`).
pub fn next_instance_num(taken: &[i64]) -> i64 {
    (0..).find(|n| !taken.contains(n)).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Life cycle

/// What the fleets loop knows of one live instance.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceSnapshot {
    pub id: Uuid,
    pub instance_num: i64,
    pub status: InstanceStatus,
    /// An SSH fleet's host (it has connection data).
    pub ssh: bool,
    /// A job is assigned to it.
    pub has_jobs: bool,
}

/// What the fleets loop knows of a live fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetSnapshot {
    pub status: FleetStatus,
    /// `nodes` of a backend fleet; `None` for SSH fleets.
    pub nodes: Option<FleetNodes>,
    pub autocreated: bool,
    pub created_at: Timestamp,
    pub consolidation_attempt: i64,
    pub last_consolidated_at: Option<Timestamp>,
    /// Unfinished runs that use the fleet.
    pub active_runs: i64,
    pub instances: Vec<InstanceSnapshot>,
}

/// One instance status change.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub id: Uuid,
    pub from: InstanceStatus,
    pub to: InstanceStatus,
    /// The row is soft-deleted.
    pub delete: bool,
    /// `finished_at` is set.
    pub finish: bool,
    /// New termination reason and message.
    pub termination: Option<(&'static str, Option<String>)>,
}

/// What one pass does to a fleet.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FleetPassPlan {
    pub transitions: Vec<Transition>,
    /// Numbers of new `pending` instances (consolidation up to `nodes.min`).
    pub new_instance_nums: Vec<i64>,
    /// The new consolidation attempt count, when consolidation ran.
    pub consolidation_attempt: Option<i64>,
    /// Terminate and delete the fleet.
    pub delete_fleet: bool,
}

/// dstack's `is_fleet_in_use`: some selected instance has a job, or (for a whole fleet) no
/// instance has one but a run of the fleet is unfinished.
pub fn in_use(instances: &[InstanceSnapshot], active_runs: i64, nums: Option<&[i64]>) -> bool {
    let busy: Vec<&InstanceSnapshot> = instances.iter().filter(|i| i.has_jobs).collect();
    let selected = busy.iter().any(|i| nums.is_none_or(|n| n.contains(&i.instance_num)));
    selected || (nums.is_none() && busy.is_empty() && active_runs > 0)
}

/// One pass of the fleets loop over `snap` at `now`.
pub fn decide(snap: &FleetSnapshot, now: Timestamp) -> FleetPassPlan {
    let mut plan = FleetPassPlan::default();
    // The instances' own steps.
    for i in &snap.instances {
        match i.status {
            // An SSH host is given back by the instances loop, which ends its instance.
            InstanceStatus::Terminating if !i.has_jobs && !i.ssh => {
                plan.transitions.push(Transition {
                    id: i.id,
                    from: i.status,
                    to: InstanceStatus::Terminated,
                    delete: true,
                    finish: true,
                    termination: None,
                });
            }
            // No backends: a cloud instance finds no offer.
            InstanceStatus::Pending if !i.ssh => plan.transitions.push(Transition {
                id: i.id,
                from: i.status,
                to: InstanceStatus::Terminated,
                delete: false,
                finish: true,
                termination: Some((NO_OFFERS, Some("No offers found".to_owned()))),
            }),
            _ => {}
        }
    }
    let touched = |id: Uuid, plan: &FleetPassPlan| plan.transitions.iter().any(|t| t.id == id);

    // Consolidation, on the statuses this pass started from.
    if let Some(nodes) = snap.nodes
        && snap.status != FleetStatus::Terminating
        && !snap.autocreated
        && snap.consolidation_attempt < MAX_CONSOLIDATION_ATTEMPTS
        && now.duration_since(snap.last_consolidated_at.unwrap_or(snap.created_at))
            >= consolidation_delay(snap.consolidation_attempt)
    {
        let mut changes = false;
        for i in &snap.instances {
            if i.status == InstanceStatus::Terminated {
                changes = true;
                plan.transitions.push(Transition {
                    id: i.id,
                    from: i.status,
                    to: i.status,
                    delete: true,
                    finish: false,
                    termination: None,
                });
            }
        }
        let active: Vec<&InstanceSnapshot> =
            snap.instances.iter().filter(|i| i.status != InstanceStatus::Terminated).collect();
        let n_active = i64::try_from(active.len()).unwrap_or(i64::MAX);
        if n_active < nodes.min {
            changes = true;
            let mut taken: Vec<i64> = active.iter().map(|i| i.instance_num).collect();
            for _ in n_active..nodes.min {
                let num = next_instance_num(&taken);
                taken.push(num);
                plan.new_instance_nums.push(num);
            }
        } else if let Some(max) = nodes.max
            && n_active > max
        {
            changes = true;
            let mut redundant = n_active - max;
            for i in &snap.instances {
                if redundant == 0 {
                    break;
                }
                if i.status == InstanceStatus::Idle && !touched(i.id, &plan) {
                    plan.transitions.push(Transition {
                        id: i.id,
                        from: i.status,
                        to: InstanceStatus::Terminating,
                        delete: false,
                        finish: false,
                        termination: Some((
                            MAX_INSTANCES_LIMIT,
                            Some("Fleet has too many instances".to_owned()),
                        )),
                    });
                    redundant -= 1;
                }
            }
        }
        plan.consolidation_attempt = Some(if changes { snap.consolidation_attempt + 1 } else { 0 });
    }

    // Deletion: a terminating (or autocreated) fleet left with no live instance.
    let empty_after =
        snap.instances.iter().all(|i| plan.transitions.iter().any(|t| t.id == i.id && t.delete));
    if plan.new_instance_nums.is_empty()
        && empty_after
        && !in_use(&snap.instances, snap.active_runs, None)
        && (snap.status == FleetStatus::Terminating || snap.autocreated)
    {
        plan.delete_fleet = true;
    }
    plan
}

#[cfg(test)]
mod tests;
