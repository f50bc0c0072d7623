//! `/api/project/{p}/fleets/{list,get,delete}`, `/api/fleets/list`, `/api/instances/list` and
//! `/api/project/{p}/gpus/list`: the fleets a project has and what their instances offer.
//!
//! `fleets/get_plan`, `fleets/apply`, `fleets/delete` and `fleets/delete_instances` follow
//! dstack 0.22.5's `services/fleets.py`: they record intent (rows in one transaction) and hint
//! the loops; the fleets loop (`pipelines/fleets.rs`) moves fleets and instances along.

use std::collections::BTreeMap;

use axum::extract::State;
use dstack_api::ApiError;
use dstack_api::fleets::{
    ApplyFleetPlanRequest, DeleteFleetInstancesRequest, DeleteFleetsRequest, Fleet, FleetPlan, FleetSpec,
    FleetStatus, GetFleetPlanRequest, GetFleetRequest, Instance, ListInstancesRequest,
    ListProjectFleetsRequest,
};
use dstack_api::gpus::{GpuGroup, ListGpusRequest, ListGpusResponse, WireRange};
use dstack_api::runs::{ApplyAction, InstanceOfferWithAvailability};
use dstack_db::{DbError, FleetRow, FleetUpdate, InstanceRow, ProjectRow};
use dstack_decide::offers::FleetFilter;
use dstack_model::resources::GpuVendor;
use serde::Deserialize;
use uuid::Uuid;

use super::{Body, Failure, Json, OptBody, null};
use crate::auth::{Caller, Member, ProjectAccess};
use crate::fleets;
use crate::state::AppState;

pub(super) async fn list(
    State(state): State<AppState>,
    access: ProjectAccess<Member>,
    OptBody(_req): OptBody<ListProjectFleetsRequest>,
) -> Result<Json<Vec<Fleet>>, Failure> {
    Ok(Json(project_fleets(&state, &access.project).await?))
}

/// `/api/fleets/list`: the fleets of every project the caller is in, newest first.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct ListFleetsRequest {
    project_name: Option<String>,
    only_active: bool,
    include_imported: bool,
    #[serde(with = "dstack_api::time::rfc3339_opt")]
    prev_created_at: Option<jiff::Timestamp>,
    prev_id: Option<uuid::Uuid>,
    limit: Option<i64>,
    ascending: bool,
}

pub(super) async fn list_all(
    State(state): State<AppState>,
    caller: Caller,
    OptBody(req): OptBody<ListFleetsRequest>,
) -> Result<Json<Vec<Fleet>>, Failure> {
    let _ = (req.only_active, req.include_imported);
    let mut fleets = Vec::new();
    for project in caller_projects(&state, &caller, req.project_name.as_deref()).await? {
        fleets.extend(project_fleets(&state, &project).await?);
    }
    let fleets = super::paginate(
        fleets,
        |f| (f.created_at, f.id),
        req.prev_created_at,
        req.prev_id,
        Some(req.limit.unwrap_or(100).clamp(0, 100)),
        req.ascending,
    );
    Ok(Json(fleets))
}

pub(super) async fn get(
    State(state): State<AppState>,
    access: ProjectAccess<Member>,
    Body(req): Body<GetFleetRequest>,
) -> Result<Json<Fleet>, Failure> {
    let fleets = project_fleets(&state, &access.project).await?;
    let found = fleets.into_iter().find(|f| match (&req.id, &req.name) {
        (Some(id), _) => f.id == *id,
        (None, Some(name)) => f.name == *name,
        (None, None) => false,
    });
    // dstack's router raises a bare ResourceNotExistsError() (routers/fleets.py, get_fleet):
    // the default message, not "Fleet not found".
    found.map(Json).ok_or_else(|| ApiError::not_exists("Resource not found").into())
}

/// `fleets/get_plan`: what `fleets/apply` would do (dstack's `get_plan`). The request's spec
/// is echoed with its keys (the CLI applies the echo); everything else is shown without them.
pub(super) async fn get_plan(
    State(state): State<AppState>,
    access: ProjectAccess<Member>,
    Body(req): Body<GetFleetPlanRequest>,
) -> Result<Json<FleetPlan>, Failure> {
    let mut effective = req.spec.clone();
    fleets::validate_spec(&effective)?;
    let mut action = ApplyAction::Create;
    let mut current = None;
    let mut current_id = None;
    if let Some(name) = &effective.configuration.name
        && let Some(row) = live_fleet(&state, access.project.id, name).await?
    {
        let stored = fleets::sensitive_spec(&row, &state.cipher)?;
        if dstack_decide::fleet::check_can_update(&stored, &effective).is_ok() {
            action = ApplyAction::Update;
        }
        current_id = Some(row.id);
        current = Some(fleet_wire(&state, &access.project, &row).await?);
    }
    check_hosts_not_yet_added(&state, &effective, current_id).await?;
    fleets::strip_keys(&mut effective);
    Ok(Json(FleetPlan {
        project_name: access.project.name.clone(),
        user: access.caller.user.name.clone(),
        spec: req.spec,
        effective_spec: Some(effective),
        current_resource: current,
        // No backends: a backend fleet has no offers; an SSH fleet never has any.
        offers: Vec::new(),
        total_offers: 0,
        max_offer_price: None,
        action: Some(action),
    }))
}

/// `fleets/apply`: creates the fleet, or updates it in place (dstack's `apply_plan`).
pub(super) async fn apply(
    State(state): State<AppState>,
    access: ProjectAccess<Member>,
    Body(req): Body<ApplyFleetPlanRequest>,
) -> Result<Json<Fleet>, Failure> {
    let mut spec = req.plan.spec;
    fleets::validate_spec(&spec)?;
    let now = jiff::Timestamp::now();
    let existing = match &spec.configuration.name {
        Some(name) => live_fleet(&state, access.project.id, name).await?,
        None => None,
    };
    let fleet = match existing {
        None => create_fleet(&state, &access.project, &mut spec, now).await?,
        Some(row) => {
            if row.lock_expires_at.is_some_and(|until| until > now) {
                return Err(ApiError::error(FLEET_BUSY).into());
            }
            update_fleet(&state, &access.project, &row, &spec, req.plan.current_resource, req.force, now)
                .await?
        }
    };
    state.hints.wake_all();
    Ok(Json(fleet))
}

const FLEET_BUSY: &str = "Failed to update fleet: fleet is being processed currently. Try again later.";

async fn create_fleet(
    state: &AppState,
    project: &ProjectRow,
    spec: &mut FleetSpec,
    now: jiff::Timestamp,
) -> Result<Fleet, Failure> {
    let name = match &spec.configuration.name {
        Some(name) => name.clone(),
        None => {
            let taken: Vec<String> =
                state.db.list_fleets(project.id).await?.into_iter().map(|f| f.name).collect();
            let name = loop {
                let candidate = crate::runs::generate_run_name();
                if !taken.contains(&candidate) {
                    break candidate;
                }
            };
            spec.configuration.name = Some(name.clone());
            name
        }
    };
    let fleet_id = Uuid::new_v4();
    let mut instances = Vec::new();
    match &spec.configuration.ssh_config {
        Some(ssh) => {
            for (num, host) in ssh.hosts.iter().enumerate() {
                let num = i64::try_from(num).unwrap_or(i64::MAX);
                let slot =
                    fleets::InstanceSlot { project_id: project.id, fleet_id, fleet_name: &name, num, now };
                instances.push(fleets::ssh_instance_row(&slot, spec, ssh, host, &state.cipher)?);
            }
        }
        None => {
            let target = spec.configuration.nodes.map_or(0, |n| n.target);
            for num in 0..target {
                let slot =
                    fleets::InstanceSlot { project_id: project.id, fleet_id, fleet_name: &name, num, now };
                instances.push(fleets::cloud_instance_row(&slot, spec.configuration.blocks));
            }
        }
    }
    let (stored, sensitive) = fleets::stored_specs(spec, &state.cipher)?;
    let row = FleetRow {
        id: fleet_id,
        project_id: project.id,
        name,
        status: FleetStatus::Active.as_str().to_owned(),
        status_message: None,
        spec: stored,
        sensitive_spec: sensitive,
        created_at: now,
        consolidation_attempt: 0,
        last_consolidated_at: None,
        lock_expires_at: None,
    };
    match state.db.insert_fleet(&row, &instances).await {
        Ok(()) => {}
        Err(DbError::Conflict { .. }) => return Err(ApiError::resource_exists().into()),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(fleet = %row.name, instances = instances.len(), "fleet created");
    let refs: Vec<&InstanceRow> = instances.iter().collect();
    Ok(fleets::fleet_to_wire(&row, &refs, project)?)
}

async fn update_fleet(
    state: &AppState,
    project: &ProjectRow,
    row: &FleetRow,
    spec: &FleetSpec,
    expected: Option<Fleet>,
    force: bool,
    now: jiff::Timestamp,
) -> Result<Fleet, Failure> {
    let current = fleet_wire(state, project, row).await?;
    if !force && expected.is_none_or(|e| e.id != current.id || e.spec != current.spec) {
        return Err(ApiError::error(
            "Failed to apply plan. Resource has been changed. Try again or use force apply.",
        )
        .into());
    }
    let stored = fleets::sensitive_spec(row, &state.cipher)?;
    dstack_decide::fleet::check_can_update(&stored, spec).map_err(ApiError::error)?;
    let mut new_instances = Vec::new();
    let mut removed = Vec::new();
    if let (Some(cur_ssh), Some(new_ssh)) = (&stored.configuration.ssh_config, &spec.configuration.ssh_config)
    {
        let changes = dstack_decide::fleet::ssh_hosts_changes(&cur_ssh.hosts, &new_ssh.hosts);
        let instances = state.db.fleet_instances(row.id).await?;
        let mut taken: Vec<i64> = instances.iter().map(|i| i.instance_num).collect();
        let mut removed_nums = Vec::new();
        for i in &instances {
            match fleets::remote_connection_info(i, &state.cipher) {
                Some(rci) if changes.removed.contains(&rci.host) => {
                    removed.push(i.id);
                    removed_nums.push(i.instance_num);
                }
                Some(_) => {}
                None => {
                    tracing::error!(instance = %i.name, fleet = %row.name, "cloud instance in an SSH fleet")
                }
            }
        }
        if !changes.added.is_empty() {
            check_hosts_not_yet_added(state, spec, Some(row.id)).await?;
            for host in &changes.added {
                let num = dstack_decide::fleet::next_instance_num(&taken);
                taken.push(num);
                let slot = fleets::InstanceSlot {
                    project_id: project.id,
                    fleet_id: row.id,
                    fleet_name: &row.name,
                    num,
                    now,
                };
                new_instances.push(fleets::ssh_instance_row(&slot, spec, new_ssh, host, &state.cipher)?);
            }
        }
        if !removed_nums.is_empty() {
            check_not_in_use(state, row, &instances, Some(&removed_nums)).await?;
        }
    }
    let (stored_json, sensitive) = fleets::stored_specs(spec, &state.cipher)?;
    let update = FleetUpdate {
        fleet_id: row.id,
        spec: &stored_json,
        sensitive_spec: sensitive.as_deref(),
        new_instances: &new_instances,
        terminate: &removed,
        reason: dstack_decide::fleet::TERMINATED_BY_USER,
    };
    match state.db.update_fleet(&update, now).await {
        Ok(()) => {}
        Err(DbError::NotFound) => return Err(ApiError::error(FLEET_BUSY).into()),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(fleet = %row.name, added = new_instances.len(), removed = removed.len(), "fleet updated");
    let row = state.db.fleet_by_id(row.id).await?.ok_or(ApiError::Internal)?;
    fleet_wire(state, project, &row).await
}

/// dstack's `_check_ssh_hosts_not_yet_added`: no host of `spec` may be a live instance of
/// another fleet, in any project.
async fn check_hosts_not_yet_added(
    state: &AppState,
    spec: &FleetSpec,
    current_fleet: Option<Uuid>,
) -> Result<(), Failure> {
    let Some(ssh) = &spec.configuration.ssh_config else { return Ok(()) };
    if ssh.hosts.is_empty() {
        return Ok(());
    }
    let mut existing = Vec::new();
    for i in state.db.list_remote_instances().await? {
        if Some(i.fleet_id) == current_fleet {
            continue;
        }
        if let Some(rci) = fleets::remote_connection_info(&i, &state.cipher) {
            existing.push(rci.host);
        }
    }
    let taken: Vec<&str> =
        ssh.hosts.iter().map(|h| h.hostname()).filter(|h| existing.iter().any(|e| e == h)).collect();
    if taken.is_empty() {
        return Ok(());
    }
    Err(ApiError::error(format!("Instances [{}] are already assigned to a fleet.", taken.join(", "))).into())
}

/// dstack's `is_fleet_in_use` check before terminating instances (`nums`) or the whole fleet.
async fn check_not_in_use(
    state: &AppState,
    fleet: &FleetRow,
    instances: &[InstanceRow],
    nums: Option<&[i64]>,
) -> Result<(), Failure> {
    let snaps = fleets::instance_snapshots(state, instances).await?;
    let runs = state.db.count_fleet_runs_not_in(fleet.id, fleets::FINISHED_RUN_STATUSES).await?;
    if !dstack_decide::fleet::in_use(&snaps, runs, nums) {
        return Ok(());
    }
    let msg = match nums {
        Some(nums) => {
            let list: Vec<String> = nums.iter().map(i64::to_string).collect();
            format!(
                "Failed to delete fleet {} instances [{}]. Fleet instances are in use.",
                fleet.name,
                list.join(", ")
            )
        }
        None => format!("Failed to delete fleet {}. Fleet is in use.", fleet.name),
    };
    Err(ApiError::error(msg).into())
}

/// `fleets/delete`: the fleets go `terminating` with their instances; the fleets loop
/// finishes them. Unknown names are skipped, as dstack does.
pub(super) async fn delete(
    State(state): State<AppState>,
    access: ProjectAccess<Member>,
    Body(req): Body<DeleteFleetsRequest>,
) -> Result<Json<serde_json::Value>, Failure> {
    terminate(&state, &access.project, &req.names, None).await?;
    Ok(null())
}

/// `fleets/delete_instances`: those instances go `terminating` (unknown numbers and fleets
/// are skipped, as dstack does); the fleet stays.
pub(super) async fn delete_instances(
    State(state): State<AppState>,
    access: ProjectAccess<Member>,
    Body(req): Body<DeleteFleetInstancesRequest>,
) -> Result<Json<serde_json::Value>, Failure> {
    terminate(&state, &access.project, std::slice::from_ref(&req.name), Some(&req.instance_nums)).await?;
    Ok(null())
}

async fn terminate(
    state: &AppState,
    project: &ProjectRow,
    names: &[String],
    nums: Option<&[i64]>,
) -> Result<(), Failure> {
    let now = jiff::Timestamp::now();
    let fleets: Vec<FleetRow> =
        state.db.list_fleets(project.id).await?.into_iter().filter(|f| names.contains(&f.name)).collect();
    let mut instance_ids = Vec::new();
    for fleet in &fleets {
        if fleet.lock_expires_at.is_some_and(|until| until > now) {
            return Err(ApiError::error(match nums {
                None => "Failed to delete fleets: fleets are being processed currently. Try again later.",
                Some(_) => {
                    "Failed to delete fleet instances: fleets are being processed currently. Try again later."
                }
            })
            .into());
        }
        let instances = state.db.fleet_instances(fleet.id).await?;
        check_not_in_use(state, fleet, &instances, nums).await?;
        instance_ids.extend(
            instances.iter().filter(|i| nums.is_none_or(|n| n.contains(&i.instance_num))).map(|i| i.id),
        );
    }
    let fleet_ids: Vec<Uuid> =
        if nums.is_none() { fleets.iter().map(|f| f.id).collect() } else { Vec::new() };
    state
        .db
        .terminate_instances(&fleet_ids, &instance_ids, dstack_decide::fleet::TERMINATED_BY_USER, now)
        .await?;
    if !fleets.is_empty() {
        tracing::info!(fleets = ?names, instances = ?nums, "deleting");
        state.hints.wake_all();
    }
    Ok(())
}

async fn live_fleet(state: &AppState, project_id: Uuid, name: &str) -> Result<Option<FleetRow>, Failure> {
    Ok(state.db.list_fleets(project_id).await?.into_iter().find(|f| f.name == name))
}

async fn fleet_wire(state: &AppState, project: &ProjectRow, row: &FleetRow) -> Result<Fleet, Failure> {
    let instances = state.db.fleet_instances(row.id).await?;
    let refs: Vec<&InstanceRow> = instances.iter().collect();
    Ok(fleets::fleet_to_wire(row, &refs, project)?)
}

pub(super) async fn list_instances(
    State(state): State<AppState>,
    caller: Caller,
    OptBody(req): OptBody<ListInstancesRequest>,
) -> Result<Json<Vec<Instance>>, Failure> {
    let mut out = Vec::new();
    let names = req.project_names.clone().unwrap_or_default();
    for project in caller_projects(&state, &caller, None).await? {
        if !names.is_empty() && !names.contains(&project.name) {
            continue;
        }
        for fleet in project_fleets(&state, &project).await? {
            if req.fleet_ids.as_ref().is_some_and(|ids| !ids.contains(&fleet.id)) {
                continue;
            }
            out.extend(fleet.instances);
        }
    }
    let out = super::paginate(
        out,
        |i| (i.created, i.id),
        req.prev_created_at,
        req.prev_id,
        Some(req.limit.clamp(0, 1000)),
        req.ascending,
    );
    Ok(Json(out))
}

/// `gpus/list`: the GPUs of the offers that fit the run, grouped by model (and memory).
pub(super) async fn list_gpus(
    State(state): State<AppState>,
    access: ProjectAccess<Member>,
    Body(req): Body<ListGpusRequest>,
) -> Result<Json<ListGpusResponse>, Failure> {
    let user = super::users::ensure_ssh_keys(&state, access.caller.user.clone()).await?;
    let effective = crate::runs::effective_run_spec(&req.run_spec, user.ssh_public_key.as_deref())
        .map_err(|e| Failure(ApiError::error(e.to_string())))?;
    let specs =
        crate::runs::initial_job_specs(&effective).map_err(|e| Failure(ApiError::error(e.to_string())))?;
    let Some(spec) = specs.into_iter().next() else {
        return Ok(Json(ListGpusResponse { gpus: vec![], cpus: None }));
    };
    let instances = state.instance_candidates(access.project.id).await?;
    let offers: Vec<InstanceOfferWithAvailability> =
        dstack_decide::offers::instance_offers(&spec.requirements, &instances, &FleetFilter::default())
            .into_iter()
            .map(|(_, o)| o)
            .collect();
    Ok(Json(ListGpusResponse { gpus: gpu_groups(&offers), cpus: None }))
}

fn gpu_groups(offers: &[InstanceOfferWithAvailability]) -> Vec<GpuGroup> {
    let mut groups: BTreeMap<(String, i64), GpuGroup> = BTreeMap::new();
    for offer in offers {
        let gpus = &offer.instance.resources.gpus;
        let Some(first) = gpus.first() else { continue };
        let n = i64::try_from(gpus.len()).unwrap_or(i64::MAX);
        let spot = if offer.instance.resources.spot { "spot" } else { "on-demand" };
        let group = groups.entry((first.name.clone(), first.memory_mib)).or_insert_with(|| GpuGroup {
            name: first.name.clone(),
            memory_mib: first.memory_mib,
            vendor: first.vendor.unwrap_or(GpuVendor::Nvidia),
            availability: Vec::new(),
            spot: Vec::new(),
            count: WireRange { min: Some(n), max: Some(n) },
            price: WireRange { min: Some(offer.price), max: Some(offer.price) },
            offer_price: None,
            backends: Some(Vec::new()),
            backend: None,
            regions: Some(Vec::new()),
            region: None,
        });
        let widen = |r: &WireRange<f64>, v: f64| WireRange {
            min: Some(r.min.map_or(v, |m| m.min(v))),
            max: Some(r.max.map_or(v, |m| m.max(v))),
        };
        group.count = WireRange {
            min: Some(group.count.min.map_or(n, |m| m.min(n))),
            max: Some(group.count.max.map_or(n, |m| m.max(n))),
        };
        group.price = widen(&group.price, offer.price);
        if !group.availability.contains(&offer.availability) {
            group.availability.push(offer.availability);
        }
        if !group.spot.iter().any(|s| s == spot) {
            group.spot.push(spot.to_owned());
        }
        if let Some(backends) = &mut group.backends
            && !backends.contains(&offer.backend)
        {
            backends.push(offer.backend);
        }
        if let Some(regions) = &mut group.regions
            && !regions.contains(&offer.region)
        {
            regions.push(offer.region.clone());
        }
    }
    groups.into_values().collect()
}

async fn caller_projects(
    state: &AppState,
    caller: &Caller,
    only: Option<&str>,
) -> Result<Vec<ProjectRow>, Failure> {
    let projects = caller.visible_projects(state).await?;
    Ok(projects.into_iter().filter(|p| only.is_none_or(|name| p.name == name)).collect())
}

/// A project's live fleets with their instances, in dstack's shape.
async fn project_fleets(state: &AppState, project: &ProjectRow) -> Result<Vec<Fleet>, Failure> {
    let fleets = state.db.list_fleets(project.id).await?;
    let instances = state.db.list_instances(project.id).await?;
    fleets
        .iter()
        .map(|f| {
            let own: Vec<&InstanceRow> = instances.iter().filter(|i| i.fleet_id == f.id).collect();
            crate::fleets::fleet_to_wire(f, &own, project).map_err(Failure)
        })
        .collect()
}
