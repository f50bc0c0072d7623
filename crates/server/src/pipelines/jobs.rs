//! The jobs loop: submitted jobs get an instance (or fail with no capacity), active jobs are
//! driven through their host's agents, terminating jobs are stopped and released.

use std::collections::{BTreeMap, HashMap};

use dstack_api::runs::{
    JobProvisioningData, JobRuntimeData, JobSpec, JobStatus, JobTerminationReason, RunSpec,
};
use dstack_db::{DbError, InstanceRow, JobRow, SaveJob};
use dstack_decide::blocks::JobNetworkMode;
use dstack_decide::offers::{Assignment, FleetFilter, InstanceCandidate, ReplicaAssignment};
use uuid::Uuid;

use super::{BATCH, LEASE};
use crate::state::AppState;

/// One pass over submitted, active and terminating jobs. Returns whether any job is active
/// (so the loop comes back soon for its output).
pub(super) async fn pass(state: &AppState) -> Result<bool, DbError> {
    let mut changed = submitted(state).await?;
    let (active_changed, any_active) = super::running::pass(state).await?;
    changed |= active_changed;
    let (stopped, any_terminating) = terminating(state).await?;
    changed |= stopped;
    if changed {
        state.hints.wake_all();
    }
    Ok(any_active || any_terminating)
}

async fn submitted(state: &AppState) -> Result<bool, DbError> {
    let now = jiff::Timestamp::now();
    let (leased, token) = state.db.lease_jobs(&["submitted"], BATCH, now, LEASE).await?;
    let any = !leased.is_empty();
    let mut changed = false;
    let mut candidates: HashMap<Uuid, Vec<InstanceCandidate>> = HashMap::new();
    for job in leased {
        if let std::collections::hash_map::Entry::Vacant(e) = candidates.entry(job.project_id) {
            e.insert(state.instance_candidates(job.project_id).await?);
        }
        let nodes = serde_json::from_str::<JobSpec>(&job.job_spec).map_or(1, |s| s.jobs_per_replica);
        if nodes > 1 {
            // A multi-node replica is placed as a whole by its master's pass; the other jobs
            // wait for it (dstack's `waiting_master_job`).
            if job.job_num == 0
                && let Some(cached) = candidates.get_mut(&job.project_id)
            {
                changed |= submitted_replica(state, &job, token, now, cached).await?;
            }
            continue;
        }
        let instances = &candidates[&job.project_id];
        let assignment = match assignment_for(state, &job, instances).await {
            Ok(a) => a,
            Err(message) => Assignment::NoCapacity { message },
        };
        let mut next = job.clone();
        next.last_processed_at = now;
        let outcome = match assignment {
            Assignment::Instance { id, offer, .. } => {
                let Some(instance) = state.db.instance_by_id(id).await? else { continue };
                let blocks = offer.blocks;
                match provisioning(&mut next, &instance, *offer) {
                    // The blocks are claimed in the job's transaction, or not at all.
                    Ok(()) => state.db.save_job(&next, token, &[], Some((id, blocks))).await?,
                    Err(e) => {
                        tracing::error!(instance = %instance.name, error = %e, "stored instance data does not parse");
                        no_capacity(&mut next, "The instance's stored data is damaged".to_owned());
                        state.db.save_job(&next, token, &[], None).await?
                    }
                }
            }
            Assignment::NoCapacity { message } => {
                no_capacity(&mut next, message);
                state.db.save_job(&next, token, &[], None).await?
            }
        };
        match outcome {
            SaveJob::Saved => {
                tracing::info!(job = %job.job_name, status = %next.status, "job assigned");
                changed = true;
                // Later jobs of this pass see the blocks as taken.
                if let (Some(id), Some(cached)) = (next.instance_id, candidates.get_mut(&job.project_id))
                    && let Some(instance) = cached.iter_mut().find(|i| i.id == id)
                {
                    instance.busy_blocks += occupied_blocks(&next);
                }
            }
            SaveJob::Stale => {}
            SaveJob::NoCapacity => {
                // Another server took the blocks first: decide again on fresh data. A job that
                // now finds another free instance waits for the next pass.
                let fresh = state.instance_candidates(job.project_id).await?;
                let again = match assignment_for(state, &job, &fresh).await {
                    Ok(a) => a,
                    Err(message) => Assignment::NoCapacity { message },
                };
                candidates.insert(job.project_id, fresh);
                if let Assignment::NoCapacity { message } = again {
                    let mut failed = job.clone();
                    failed.last_processed_at = now;
                    no_capacity(&mut failed, message);
                    changed |= state.db.save_job(&failed, token, &[], None).await? == SaveJob::Saved;
                }
            }
        }
    }
    // A pass that leased nothing has no lease to end (and takes no write lock for it).
    if any {
        state.db.release_jobs(token).await?;
    }
    Ok(changed)
}

async fn assignment_for(
    state: &AppState,
    job: &JobRow,
    instances: &[InstanceCandidate],
) -> Result<Assignment, String> {
    let (spec, filter) = spec_and_filter(state, job).await?;
    Ok(dstack_decide::offers::assign(&spec.requirements, instances, &filter))
}

/// The job's spec and the fleets its run may use.
async fn spec_and_filter(state: &AppState, job: &JobRow) -> Result<(JobSpec, FleetFilter), String> {
    let spec: JobSpec = serde_json::from_str(&job.job_spec).map_err(|e| format!("job spec: {e}"))?;
    let run = state.db.run_by_id(job.run_id).await.map_err(|e| e.to_string())?.ok_or("run is gone")?;
    let run_spec: RunSpec = serde_json::from_str(&run.run_spec).map_err(|e| format!("run spec: {e}"))?;
    let names = crate::runs::profile(&run_spec.configuration)
        .fleets
        .as_ref()
        .map(|refs| refs.iter().map(|r| r.name.clone()).collect());
    Ok((spec, FleetFilter { names, run_fleet: run.fleet_id }))
}

/// The master's pass over a multi-node replica: every job of the replica gets a host of one
/// cluster fleet in one transaction, or the master fails with no capacity (the runs loop
/// then stops the others, or retries the replica). Returns whether anything changed. A
/// replica whose other jobs are no longer all `submitted` (the run is stopping them) is left
/// to the runs loop; a placement that lost a race is decided again on the next pass.
async fn submitted_replica(
    state: &AppState,
    master: &JobRow,
    token: Uuid,
    now: jiff::Timestamp,
    candidates: &mut Vec<InstanceCandidate>,
) -> Result<bool, DbError> {
    let mut latest: BTreeMap<i64, JobRow> = BTreeMap::new();
    // Ordered by submission: the last one wins.
    for j in state.db.jobs_of_runs(&[master.run_id]).await? {
        if j.replica_num == master.replica_num {
            latest.insert(j.job_num, j);
        }
    }
    let (spec, filter) = match spec_and_filter(state, master).await {
        Ok(x) => x,
        Err(message) => return fail_no_capacity(state, master, token, now, message).await,
    };
    let nodes = usize::try_from(spec.jobs_per_replica).unwrap_or(usize::MAX);
    let whole = latest.len() == nodes
        && latest.get(&0).is_some_and(|j| j.id == master.id)
        && latest.values().all(|j| j.status == JobStatus::Submitted.as_str());
    if !whole {
        return Ok(false);
    }
    let placed = match dstack_decide::offers::assign_replica(&spec.requirements, nodes, candidates, &filter) {
        ReplicaAssignment::Instances { instances, .. } => instances,
        ReplicaAssignment::NoCapacity { message } => {
            return fail_no_capacity(state, master, token, now, message).await;
        }
    };
    let mut rows = Vec::with_capacity(nodes);
    for (job, (instance_id, offer)) in latest.values().zip(placed) {
        let Some(instance) = state.db.instance_by_id(instance_id).await? else { return Ok(false) };
        let blocks = offer.blocks;
        let mut next = job.clone();
        next.last_processed_at = now;
        if let Err(e) = provisioning(&mut next, &instance, offer) {
            tracing::error!(instance = %instance.name, error = %e, "stored instance data does not parse");
            let message = "The instance's stored data is damaged".to_owned();
            return fail_no_capacity(state, master, token, now, message).await;
        }
        rows.push((next, instance_id, blocks));
    }
    let refs: Vec<(&JobRow, Uuid, i64)> = rows.iter().map(|(j, i, b)| (j, *i, *b)).collect();
    match state.db.place_jobs(&refs, token, now).await? {
        SaveJob::Saved => {
            for (job, instance_id, blocks) in &rows {
                tracing::info!(job = %job.job_name, instance = %instance_id, "multi-node job placed");
                if let Some(i) = candidates.iter_mut().find(|i| i.id == *instance_id) {
                    i.busy_blocks += blocks;
                }
            }
            Ok(true)
        }
        SaveJob::Stale | SaveJob::NoCapacity => {
            // Another pass or server got there first: decide again on fresh data next time.
            *candidates = state.instance_candidates(master.project_id).await?;
            Ok(false)
        }
    }
}

async fn fail_no_capacity(
    state: &AppState,
    job: &JobRow,
    token: Uuid,
    now: jiff::Timestamp,
    message: String,
) -> Result<bool, DbError> {
    let mut failed = job.clone();
    failed.last_processed_at = now;
    no_capacity(&mut failed, message);
    let saved = state.db.save_job(&failed, token, &[], None).await? == SaveJob::Saved;
    if saved {
        tracing::info!(job = %job.job_name, "multi-node replica cannot be placed");
    }
    Ok(saved)
}

fn no_capacity(job: &mut JobRow, message: String) {
    job.status = JobStatus::Terminating.as_str().to_owned();
    job.termination_reason = Some(JobTerminationReason::FailedToStartDueToNoCapacity.as_str().to_owned());
    job.termination_reason_message = Some(message);
}

/// The job goes onto `instance` with `offer` (the whole instance, or its share of a shared
/// one): `provisioning`, the instance's provisioning data, and runtime data with the share's
/// limits and network (scheduling.md §4.6).
fn provisioning(
    job: &mut JobRow,
    instance: &InstanceRow,
    offer: dstack_api::runs::InstanceOfferWithAvailability,
) -> Result<(), serde_json::Error> {
    let jpd: JobProvisioningData =
        serde_json::from_str(instance.job_provisioning_data.as_deref().unwrap_or(""))?;
    let spec: JobSpec = serde_json::from_str(&job.job_spec)?;
    let multinode = spec.requirements.multinode == Some(true);
    // A service's replicas get their own network, their app port published on the host, so
    // that replicas on one host never collide on it (dstack-rs; dstack uses the host network
    // and reaches the port through the container's sshd).
    let mode =
        if spec.service_port.is_some() { JobNetworkMode::ForcedBridge } else { JobNetworkMode::default() };
    let mut jrd = dstack_decide::blocks::runtime_data(&offer, multinode, mode);
    jrd.volume_names = Some(Vec::new());
    job.status = JobStatus::Provisioning.as_str().to_owned();
    job.instance_id = Some(instance.id);
    job.job_provisioning_data = Some(serde_json::to_string(&jpd)?);
    job.job_runtime_data = Some(serde_json::to_string(&jrd)?);
    Ok(())
}

/// The blocks a job holds on its instance: its offer's `blocks` (1 without runtime data, as
/// dstack's `_get_job_occupied_blocks`).
fn occupied_blocks(job: &JobRow) -> i64 {
    job.job_runtime_data
        .as_deref()
        .and_then(|j| serde_json::from_str::<JobRuntimeData>(j).ok())
        .and_then(|jrd| jrd.offer)
        .map_or(1, |offer| offer.blocks)
}

/// Returns (whether any job finished, whether any job is terminating).
async fn terminating(state: &AppState) -> Result<(bool, bool), DbError> {
    let now = jiff::Timestamp::now();
    let (leased, token) = state.db.lease_jobs(&["terminating"], BATCH, now, LEASE).await?;
    let any = !leased.is_empty();
    let mut changed = false;
    for job in leased {
        let mut next = job.clone();
        let mut logs = Vec::new();
        let release = match job.instance_id {
            Some(instance_id) => {
                let (stopping, pulled) =
                    super::running::stop_on_host(state, &mut next, instance_id, now).await;
                logs = pulled;
                match stopping {
                    super::running::Stopping::Later => {
                        // Waiting out the graceful stop.
                        let _ = state.db.save_job(&next, token, &logs, None).await?;
                        continue;
                    }
                    super::running::Stopping::Done => Some((instance_id, -occupied_blocks(&job))),
                }
            }
            None => None,
        };
        let reason = job.termination_reason.as_deref().and_then(JobTerminationReason::from_wire);
        next.status = reason.map_or(JobStatus::Failed, JobTerminationReason::to_status).as_str().to_owned();
        next.finished_at = Some(now);
        next.last_processed_at = now;
        next.instance_id = None;
        if state.db.save_job(&next, token, &logs, release).await? == SaveJob::Saved {
            tracing::info!(job = %job.job_name, status = %next.status, "job finished");
            changed = true;
        }
    }
    if any {
        state.db.release_jobs(token).await?;
    }
    Ok((changed, any))
}
