//! `/api/project/{p}/fleets/{list,get,delete}`, `/api/fleets/list`, `/api/instances/list` and
//! `/api/project/{p}/gpus/list`: the fleets a project has and what their instances offer.
//!
//! Fleets are created by the server (the `local` fleet); `fleets/get_plan` and `fleets/apply`
//! (SSH and cloud fleets) are not served yet.

use std::collections::BTreeMap;

use axum::extract::State;
use dstack_api::ApiError;
use dstack_api::fleets::{
    DeleteFleetsRequest, Fleet, FleetSpec, FleetStatus, GetFleetRequest, HealthStatus, Instance,
    InstanceStatus, ListInstancesRequest, ListProjectFleetsRequest,
};
use dstack_api::gpus::{GpuGroup, ListGpusRequest, ListGpusResponse, WireRange};
use dstack_api::runs::{InstanceOfferWithAvailability, JobProvisioningData};
use dstack_db::{FleetRow, InstanceRow, ProjectRow};
use dstack_decide::offers::FleetFilter;
use dstack_model::resources::GpuVendor;
use serde::Deserialize;

use super::runs::internal;
use super::{Body, Failure, Json, OptBody, null};
use crate::auth::{Caller, Member, ProjectAccess};
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

pub(super) async fn delete(
    State(state): State<AppState>,
    access: ProjectAccess<Member>,
    Body(req): Body<DeleteFleetsRequest>,
) -> Result<Json<serde_json::Value>, Failure> {
    let fleets = state.db.list_fleets(access.project.id).await?;
    let instances = state.db.list_instances(access.project.id).await?;
    for name in &req.names {
        let Some(fleet) = fleets.iter().find(|f| f.name == *name) else {
            return Err(ApiError::not_exists(format!("Fleets not found: {name}")).into());
        };
        if instances.iter().any(|i| i.fleet_id == fleet.id && i.busy_blocks > 0) {
            return Err(ApiError::error(format!(
                "Fleet {name} has instances running jobs. Stop the runs first."
            ))
            .into());
        }
    }
    state.db.delete_fleets(access.project.id, &req.names).await?;
    Ok(null())
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
            fleet_to_wire(f, &own, project)
        })
        .collect()
}

fn fleet_to_wire(
    fleet: &FleetRow,
    instances: &[&InstanceRow],
    project: &ProjectRow,
) -> Result<Fleet, Failure> {
    let spec: FleetSpec = serde_json::from_str(&fleet.spec).map_err(internal)?;
    let instances =
        instances.iter().map(|i| instance_to_wire(i, fleet, project)).collect::<Result<Vec<_>, _>>()?;
    Ok(Fleet {
        id: fleet.id,
        name: fleet.name.clone(),
        project_name: project.name.clone(),
        spec,
        created_at: fleet.created_at,
        status: FleetStatus::from_wire(&fleet.status).unwrap_or(FleetStatus::Active),
        status_message: fleet.status_message.clone(),
        instances,
    })
}

fn instance_to_wire(i: &InstanceRow, fleet: &FleetRow, project: &ProjectRow) -> Result<Instance, Failure> {
    let jpd: JobProvisioningData = serde_json::from_str(&i.job_provisioning_data).map_err(internal)?;
    let offer: InstanceOfferWithAvailability = serde_json::from_str(&i.offer).map_err(internal)?;
    Ok(Instance {
        id: i.id,
        project_name: project.name.clone(),
        backend: Some(jpd.backend),
        instance_type: Some(offer.instance),
        name: i.name.clone(),
        fleet_id: Some(fleet.id),
        fleet_name: Some(fleet.name.clone()),
        instance_num: i.instance_num,
        job_name: None,
        hostname: jpd.hostname,
        status: InstanceStatus::from_wire(&i.status).unwrap_or(InstanceStatus::Idle),
        unreachable: i.agent_url.is_none(),
        health_status: HealthStatus::Healthy,
        termination_reason: None,
        termination_reason_message: None,
        created: i.created_at,
        finished_at: None,
        region: Some(jpd.region),
        availability_zone: jpd.availability_zone,
        price: Some(jpd.price),
        total_blocks: Some(i.total_blocks),
        busy_blocks: i.busy_blocks,
        gpu_driver: jpd.gpu_driver,
    })
}
