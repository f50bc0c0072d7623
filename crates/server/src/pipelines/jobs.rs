//! The jobs loop: submitted jobs get an instance (or fail with no capacity), active jobs are
//! driven through their host's agents, terminating jobs are stopped and released.

use std::collections::HashMap;

use dstack_api::runs::{
    JobProvisioningData, JobRuntimeData, JobSpec, JobStatus, JobTerminationReason, RunSpec,
};
use dstack_db::{DbError, InstanceRow, JobRow, SaveJob};
use dstack_decide::blocks::JobNetworkMode;
use dstack_decide::offers::{Assignment, FleetFilter, InstanceCandidate};
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
    let mut changed = false;
    let mut candidates: HashMap<Uuid, Vec<InstanceCandidate>> = HashMap::new();
    for job in leased {
        if let std::collections::hash_map::Entry::Vacant(e) = candidates.entry(job.project_id) {
            e.insert(state.instance_candidates(job.project_id).await?);
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
    state.db.release_jobs(token).await?;
    Ok(changed)
}

async fn assignment_for(
    state: &AppState,
    job: &JobRow,
    instances: &[InstanceCandidate],
) -> Result<Assignment, String> {
    let spec: JobSpec = serde_json::from_str(&job.job_spec).map_err(|e| format!("job spec: {e}"))?;
    let run = state.db.run_by_id(job.run_id).await.map_err(|e| e.to_string())?.ok_or("run is gone")?;
    let run_spec: RunSpec = serde_json::from_str(&run.run_spec).map_err(|e| format!("run spec: {e}"))?;
    let names = crate::runs::profile(&run_spec.configuration)
        .fleets
        .as_ref()
        .map(|refs| refs.iter().map(|r| r.name.clone()).collect());
    let filter = FleetFilter { names, run_fleet: run.fleet_id };
    Ok(dstack_decide::offers::assign(&spec.requirements, instances, &filter))
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
    let mut jrd = dstack_decide::blocks::runtime_data(&offer, multinode, JobNetworkMode::default());
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
    state.db.release_jobs(token).await?;
    Ok((changed, any))
}
