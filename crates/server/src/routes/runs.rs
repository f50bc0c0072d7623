//! `/api/project/{p}/runs/*` and `/api/runs/list`: plans, submissions, listing, stop, delete.
//!
//! Handlers record intent (rows) and hint the background loops; the loops do the work.

use std::collections::HashMap;

use axum::extract::State;
use dstack_api::ApiError;
use dstack_api::runs::{
    ApplyRunPlanRequest, DeleteRunsRequest, GetRunPlanRequest, GetRunRequest, ListRunsRequest,
    MAX_JOB_SUBMISSIONS_LIMIT, Run, RunFleet, RunPlan, RunSpec, RunStatus, RunTerminationReason,
    StopRunsRequest,
};
use dstack_db::{DbError, ProjectRow, RunFilter, RunListing, RunRow};
use dstack_decide::offers::FleetFilter;
use dstack_model::common::{RESOURCE_NAME_ERROR, is_valid_resource_name};
use uuid::Uuid;

use super::{Body, Failure, Json, OptBody, null};
use crate::auth::{Caller, Member, ProjectAccess};
use crate::runs::{self, RunNames, RunOut};
use crate::state::AppState;

pub(super) async fn get_plan(
    State(state): State<AppState>,
    access: ProjectAccess<Member>,
    Body(req): Body<GetRunPlanRequest>,
) -> Result<Json<RunPlan>, Failure> {
    check_spec(&req.run_spec)?;
    let user = &super::users::ensure_ssh_keys(&state, access.caller.user.clone()).await?;
    let effective =
        runs::effective_run_spec(&req.run_spec, user.ssh_public_key.as_deref()).map_err(spec_error)?;
    let current = match &req.run_spec.run_name {
        Some(name) => match state.db.run_by_name(access.project.id, name).await? {
            Some(row) => {
                Some(load_run(&state, &access.project, row, true, None).await?.to_typed().map_err(internal)?)
            }
            None => None,
        },
        None => None,
    };
    let instances = state.instance_candidates(access.project.id).await?;
    let filter = fleet_filter(&effective);
    let job_plans = runs::initial_job_specs(&effective)
        .map_err(spec_error)?
        .into_iter()
        .map(|spec| runs::job_plan(spec, &instances, &filter, req.max_offers))
        .collect();
    let plan = runs::run_plan(&access.project.name, &user.name, req.run_spec, effective, job_plans, current);
    Ok(Json(plan))
}

pub(super) async fn apply(
    State(state): State<AppState>,
    access: ProjectAccess<Member>,
    Body(req): Body<ApplyRunPlanRequest>,
) -> Result<Json<RunOut>, Failure> {
    let spec = req.plan.run_spec;
    check_spec(&spec)?;
    let user = &super::users::ensure_ssh_keys(&state, access.caller.user.clone()).await?;
    let mut named = spec.clone();
    if named.run_name.is_none() {
        named.run_name = Some(runs::generate_run_name());
    }
    let effective = runs::effective_run_spec(&named, user.ssh_public_key.as_deref()).map_err(spec_error)?;
    let run_name = effective.run_name.clone().unwrap_or_default();
    let now = jiff::Timestamp::now();
    let priority = runs::base(&effective.configuration).priority.unwrap_or(0);
    // A scheduled run waits, with no jobs, for its first time (dstack's `submit_run`).
    let schedule = dstack_decide::jobspec::merged_profile(&effective).schedule;
    let next_triggered_at =
        schedule.as_ref().and_then(|s| dstack_decide::schedule::next_trigger(&s.cron, now));
    let status = if schedule.is_some() { RunStatus::Pending } else { RunStatus::Submitted };
    let run = RunRow {
        id: Uuid::new_v4(),
        project_id: access.project.id,
        user_id: user.id,
        repo_id: effective.repo_id.clone(),
        run_name: run_name.clone(),
        submitted_at: now,
        last_processed_at: now,
        status: status.as_str().to_owned(),
        termination_reason: None,
        resubmission_attempt: 0,
        run_spec: serde_json::to_string(&effective).map_err(internal)?,
        priority,
        deployment_num: 0,
        fleet_id: None,
        next_triggered_at,
        deleted: false,
        service_spec: None,
        desired_replica_counts: None,
    };
    let mut run = run;
    let gateway = crate::services::service_gateway(&state, &access.project, &effective)
        .await
        .map_err(ApiError::error)?;
    if let Some(service) =
        crate::services::service_spec(&access.project.name, &run_name, &effective, gateway.as_ref())
            .map_err(ApiError::error)?
    {
        run.service_spec = Some(serde_json::to_string(&service).map_err(internal)?);
    }
    let mut specs = runs::submission_job_specs(&effective).map_err(spec_error)?;
    runs::with_job_ssh_key(&mut specs).map_err(internal)?;
    let jobs = if schedule.is_some() {
        Vec::new()
    } else {
        runs::new_job_rows(&run, &specs, now).map_err(internal)?
    };
    // The insert is the check: a live run of that name makes it a conflict (a finished one
    // is replaced), then the active run decides.
    match state.db.insert_run(&run, &jobs).await {
        Ok(()) => {}
        Err(DbError::Conflict { .. }) => {
            if spec.run_name.is_some()
                && let Some(existing) = state.db.run_by_name(access.project.id, &run_name).await?
                && !RunStatus::from_wire(&existing.status).is_some_and(RunStatus::is_finished)
            {
                let current = req.plan.current_resource;
                return reapply_active(&state, &access.project, existing, &effective, current, req.force)
                    .await;
            }
            return Err(ApiError::error(format!("Run {run_name} already exists")).into());
        }
        Err(e) => return Err(e.into()),
    }
    state.hints.wake_all();
    let wire = runs::run_to_wire(
        run,
        jobs,
        &runs::Readiness::default(),
        RunNames { project: &access.project.name, user: &user.name, fleet: None },
        true,
        None,
        now,
    )
    .map_err(internal)?;
    Ok(Json(wire))
}

/// `apply` of a name whose run is still active: dstack's `apply_plan` against it. A spec
/// that cannot update the run in place is refused; without `force` the plan must have been
/// made against the run as it is now; then the run takes the new spec and the next
/// `deployment_num` in place, and the runs loop rolls the change out.
async fn reapply_active(
    state: &AppState,
    project: &ProjectRow,
    existing: RunRow,
    spec: &RunSpec,
    plan_current: Option<Run>,
    force: bool,
) -> Result<Json<RunOut>, Failure> {
    let out = load_run(state, project, existing.clone(), true, None).await?;
    let current = out.to_typed().map_err(internal)?;
    let changes = dstack_decide::update::check_can_update_run_spec(&current.run_spec, spec)
        .map_err(|_| ApiError::error("Cannot override active run. Stop the run first."))?;
    let same_spec = |plan: &Run| {
        serde_json::to_value(&plan.run_spec).ok() == serde_json::to_value(&current.run_spec).ok()
    };
    if !force && plan_current.as_ref().is_none_or(|c| c.id != current.id || !same_spec(c)) {
        return Err(ApiError::error(
            "Failed to apply plan. Resource has been changed. Try again or use force apply.",
        )
        .into());
    }
    let run_name = existing.run_name.clone();
    let gateway = crate::services::service_gateway(state, project, spec).await.map_err(ApiError::error)?;
    let service_spec = match crate::services::service_spec(&project.name, &run_name, spec, gateway.as_ref())
        .map_err(ApiError::error)?
    {
        Some(service) => Some(serde_json::to_string(&service).map_err(internal)?),
        None => existing.service_spec.clone(),
    };
    let priority = runs::base(&spec.configuration).priority.unwrap_or(0);
    let text = serde_json::to_string(spec).map_err(internal)?;
    let updated = state
        .db
        .update_run_spec(existing.id, existing.deployment_num, &text, priority, service_spec.as_deref())
        .await?;
    if !updated {
        // Another apply (or the run finishing) came first.
        return Err(ApiError::error(
            "Failed to apply plan. Resource has been changed. Try again or use force apply.",
        )
        .into());
    }
    tracing::info!(
        run = %run_name,
        deployment = existing.deployment_num + 1,
        changed = ?changes.fields,
        configuration = ?changes.configuration,
        "run updated"
    );
    state.hints.wake_all();
    let row = state.db.run_by_id(existing.id).await?.ok_or(Failure(ApiError::Internal))?;
    Ok(Json(load_run(state, project, row, true, None).await?))
}

pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    OptBody(req): OptBody<ListRunsRequest>,
) -> Result<Json<Vec<RunOut>>, Failure> {
    // dstack's rules: a repo filter needs a project; an unknown or foreign project lists
    // nothing; an unknown user is an error.
    if req.project_name.is_none() && req.repo_id.is_some() {
        return Ok(Json(Vec::new()));
    }
    let user_id = match &req.username {
        Some(name) => match state.db.user_by_name(name).await? {
            Some(u) => Some(u.id),
            None => return Err(ApiError::not_exists("User not found").into()),
        },
        None => None,
    };
    let projects: Vec<ProjectRow> = match &req.project_name {
        Some(name) => match state.db.project_by_name(name).await? {
            Some(project)
                if caller.is_admin() || state.db.member_role(project.id, caller.user.id).await?.is_some() =>
            {
                vec![project]
            }
            _ => return Ok(Json(Vec::new())),
        },
        None => caller.visible_projects(&state).await?,
    };
    let limit = req.limit.clamp(0, 100);
    let mut rows: Vec<(RunListing, &ProjectRow)> = Vec::new();
    for project in &projects {
        let filter = RunFilter {
            project_id: project.id,
            user_id,
            repo_id: req.repo_id.clone(),
            only_active: req.only_active,
            prev: req.prev_submitted_at.map(|at| (at, req.prev_run_id)),
            limit,
            ascending: req.ascending,
        };
        rows.extend(state.db.list_runs(&filter).await?.into_iter().map(|r| (r, project)));
    }
    if projects.len() > 1 {
        rows.sort_by(|(a, _), (b, _)| {
            let order = a.run.submitted_at.cmp(&b.run.submitted_at).then(b.run.id.cmp(&a.run.id));
            if req.ascending { order } else { order.reverse() }
        });
        rows.truncate(usize::try_from(limit).unwrap_or(0));
    }
    let submissions_limit = req.job_submissions_limit.map(|l| l.clamp(0, MAX_JOB_SUBMISSIONS_LIMIT));
    let (listings, run_projects): (Vec<RunListing>, Vec<&ProjectRow>) = rows.into_iter().unzip();
    let runs =
        to_wire_many(&state, listings, |i| run_projects[i], req.include_jobs, submissions_limit).await?;
    Ok(Json(runs))
}

pub(super) async fn get(
    State(state): State<AppState>,
    access: ProjectAccess<Member>,
    Body(req): Body<GetRunRequest>,
) -> Result<Json<RunOut>, Failure> {
    let row = match (&req.id, &req.run_name) {
        (Some(id), _) => state.db.run_by_id(*id).await?.filter(|r| r.project_id == access.project.id),
        (None, Some(name)) => state.db.run_by_name(access.project.id, name).await?,
        (None, None) => return Err(ApiError::error("run_name or id must be specified").into()),
    };
    let row = row.ok_or_else(|| ApiError::not_exists("Run not found"))?;
    Ok(Json(load_run(&state, &access.project, row, true, None).await?))
}

pub(super) async fn stop(
    State(state): State<AppState>,
    access: ProjectAccess<Member>,
    Body(req): Body<StopRunsRequest>,
) -> Result<Json<serde_json::Value>, Failure> {
    let reason =
        if req.abort { RunTerminationReason::AbortedByUser } else { RunTerminationReason::StoppedByUser };
    state.db.stop_runs(access.project.id, &req.runs_names, reason.as_str()).await?;
    state.hints.wake_all();
    Ok(null())
}

pub(super) async fn delete(
    State(state): State<AppState>,
    access: ProjectAccess<Member>,
    Body(req): Body<DeleteRunsRequest>,
) -> Result<Json<serde_json::Value>, Failure> {
    for name in &req.runs_names {
        match state.db.run_by_name(access.project.id, name).await? {
            None => return Err(ApiError::not_exists(format!("Run {name} not found")).into()),
            Some(run) if !RunStatus::from_wire(&run.status).is_some_and(RunStatus::is_finished) => {
                return Err(ApiError::error("Cannot delete active runs").into());
            }
            Some(_) => {}
        }
    }
    state.db.delete_runs(access.project.id, &req.runs_names).await?;
    Ok(null())
}

/// The configuration checks dstack's server makes before planning or submitting.
fn check_spec(spec: &RunSpec) -> Result<(), Failure> {
    if let Some(name) = &spec.run_name
        && !is_valid_resource_name(name)
    {
        return Err(ApiError::error(RESOURCE_NAME_ERROR).into());
    }
    if let Some(message) = runs::static_checks(&spec.configuration).into_iter().next() {
        return Err(ApiError::error(message).into());
    }
    Ok(())
}

fn fleet_filter(spec: &RunSpec) -> FleetFilter {
    let names = runs::profile(&spec.configuration)
        .fleets
        .as_ref()
        .map(|refs| refs.iter().map(|r| r.name.clone()).collect());
    FleetFilter { names, run_fleet: None }
}

fn spec_error(e: dstack_decide::jobspec::JobSpecError) -> Failure {
    ApiError::error(e.to_string()).into()
}

pub(crate) fn internal(e: impl std::fmt::Display) -> Failure {
    tracing::error!(error = %e, "stored run data does not parse");
    Failure(ApiError::Internal)
}

/// One run in dstack's shape.
pub(crate) async fn load_run(
    state: &AppState,
    project: &ProjectRow,
    run: RunRow,
    include_jobs: bool,
    submissions_limit: Option<i64>,
) -> Result<RunOut, Failure> {
    let jobs = state.db.jobs_of_runs(&[run.id]).await?;
    let user_name = state.db.user_by_id(run.user_id).await?.map(|u| u.name).unwrap_or_default();
    let listing = RunListing { run, user_name, jobs };
    let runs = to_wire_many(state, vec![listing], |_| project, include_jobs, submissions_limit).await?;
    runs.into_iter().next().ok_or(Failure(ApiError::Internal))
}

/// Runs in dstack's shape; `project_of(i)` is the project of `listings[i]`.
async fn to_wire_many<'p>(
    state: &AppState,
    listings: Vec<RunListing>,
    project_of: impl Fn(usize) -> &'p ProjectRow,
    include_jobs: bool,
    submissions_limit: Option<i64>,
) -> Result<Vec<RunOut>, Failure> {
    let readiness = if include_jobs {
        // Only a service's replicas have probes or a registration: the jobs of other runs
        // cost no lookups (a page of tasks, none at all).
        let service_jobs =
            || listings.iter().filter(|l| l.run.service_spec.is_some()).flat_map(|l| l.jobs.iter());
        let job_ids: Vec<Uuid> = service_jobs().map(|j| j.id).collect();
        let running: Vec<Uuid> = service_jobs()
            .filter(|j| j.status == dstack_api::runs::JobStatus::Running.as_str())
            .map(|j| j.id)
            .collect();
        runs::Readiness {
            probes: runs::probes_by_job(state.db.probes_of_jobs(&job_ids).await?),
            registered: Some(state.db.registered_jobs(&running).await?.into_iter().collect()),
        }
    } else {
        runs::Readiness::default()
    };
    let mut fleet_names: HashMap<Uuid, String> = HashMap::new();
    let now = jiff::Timestamp::now();
    let mut out = Vec::with_capacity(listings.len());
    for (i, RunListing { run, user_name, jobs }) in listings.into_iter().enumerate() {
        let project = project_of(i);
        let fleet = match run.fleet_id {
            Some(fleet_id) => {
                if !fleet_names.contains_key(&fleet_id) {
                    for f in state.db.list_fleets(project.id).await? {
                        fleet_names.insert(f.id, f.name);
                    }
                }
                fleet_names.get(&fleet_id).map(|name| RunFleet { id: fleet_id, name: name.clone() })
            }
            None => None,
        };
        let names = RunNames { project: &project.name, user: &user_name, fleet };
        out.push(
            runs::run_to_wire(run, jobs, &readiness, names, include_jobs, submissions_limit, now)
                .map_err(internal)?,
        );
    }
    Ok(out)
}
