//! The runs loop: each unfinished run's status from its jobs (`dstack_decide::run::decide`),
//! and a service's replicas scaled to its load (`dstack_decide::autoscale`): the load is what
//! this server's proxy measured ([`crate::services`]), the desired counts are stored on the run.

use std::collections::HashMap;

use dstack_api::runs::{
    JobStatus, JobTerminationReason, RunConfiguration, RunSpec, RunStatus, RunTerminationReason,
};
use dstack_db::{DbError, JobMark, JobRow, RunRow};
use dstack_decide::autoscale::{GroupScaling, ServiceScaling, ServiceStats, WindowStats};
use dstack_decide::run::{JobView, RunPlan, RunSnapshot};
use uuid::Uuid;

use super::{BATCH, LEASE};
use crate::runs::{JobKey, new_submission};
use crate::state::AppState;

const STATUSES: &[&str] = &["pending", "submitted", "provisioning", "running", "terminating"];

/// One pass over every unfinished run whose lease is free.
pub(super) async fn pass(state: &AppState) -> Result<(), DbError> {
    let now = jiff::Timestamp::now();
    let (leased, token) = state.db.lease_runs(STATUSES, BATCH, now, LEASE).await?;
    let ids: Vec<Uuid> = leased.iter().map(|r| r.id).collect();
    let mut jobs_by_run: HashMap<Uuid, Vec<JobRow>> = HashMap::new();
    for job in state.db.jobs_of_runs(&ids).await? {
        jobs_by_run.entry(job.run_id).or_default().push(job);
    }
    let running: Vec<Uuid> = jobs_by_run
        .values()
        .flatten()
        .filter(|j| j.status == JobStatus::Running.as_str())
        .map(|j| j.id)
        .collect();
    let registered = state.db.registered_jobs(&running).await?;
    let mut changed = false;
    for run in leased {
        let jobs = jobs_by_run.remove(&run.id).unwrap_or_default();
        let load = service_load(state, &run, &jobs, &registered).await;
        let in_flight = |id: Uuid| state.proxy.stats(&id.to_string()).map_or(0, |s| s.in_flight);
        let snapshot = match snapshot(&run, &jobs, &registered, load, &in_flight) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(run = %run.run_name, error = %e, "stored run data does not parse");
                continue;
            }
        };
        let plan = dstack_decide::run::decide(&snapshot, now);
        let fleet_id = if plan.clear_fleet { None } else { detect_fleet(state, &run, &jobs).await? };
        if is_noop(&run, &plan) && fleet_id == run.fleet_id {
            continue;
        }
        let marks: Vec<JobMark> = plan
            .bump_deployment
            .iter()
            .map(|id| JobMark::Deployment { job_id: *id, deployment_num: run.deployment_num })
            .chain(plan.drain_jobs.iter().map(|id| JobMark::Drain { job_id: *id, at: now }))
            .collect();
        if !marks.is_empty() {
            tracing::info!(
                run = %run.run_name,
                deployment = run.deployment_num,
                bumped = plan.bump_deployment.len(),
                drained = plan.drain_jobs.len(),
                "rolling deployment"
            );
        }
        let (updated, new_jobs) = match job_changes(&run, &jobs, &plan, now) {
            Ok(changes) => changes,
            Err(e) => {
                tracing::error!(run = %run.run_name, error = %e, "cannot make the run's jobs");
                continue;
            }
        };
        let mut next = run.clone();
        next.status = plan.status.as_str().to_owned();
        next.termination_reason = plan.termination_reason.map(|r| r.as_str().to_owned());
        next.resubmission_attempt = plan.resubmission_attempt;
        next.last_processed_at = now;
        next.fleet_id = fleet_id;
        next.next_triggered_at = plan.next_triggered_at;
        if let Some(desired) = &plan.desired_replica_counts {
            next.desired_replica_counts = Some(serde_json::to_string(desired).unwrap_or_default());
        }
        if !plan.scale_up.is_empty()
            || plan.terminate_jobs.iter().any(|t| t.reason == JobTerminationReason::ScaledDown)
        {
            tracing::info!(
                run = %run.run_name,
                desired = next.desired_replica_counts.as_deref().unwrap_or(""),
                up = plan.scale_up.len(),
                down = plan.terminate_jobs.iter().filter(|t| t.reason == JobTerminationReason::ScaledDown).count(),
                "service scaled"
            );
        }
        if state.db.save_run_pass(&next, token, &updated, &new_jobs, &marks).await? {
            if next.status != run.status {
                tracing::info!(run = %run.run_name, from = %run.status, to = %next.status, "run status");
            }
            changed = true;
        }
    }
    // Runs with nothing to do were left as they were; end their lease in one statement (a
    // pass that leased nothing has no lease to end).
    if !ids.is_empty() {
        state.db.release_runs(token, now).await?;
    }
    if changed {
        state.hints.wake_all();
    }
    Ok(())
}

/// The run's fleet: once set it stays (until a retry clears it); an active run without one
/// takes the fleet of the first of its jobs that holds an instance, as dstack's
/// `_detect_fleet_id_from_jobs` (background/pipeline_tasks/runs/active.py) does. That is
/// the `fleet` of the run on the wire, and where its later submissions must go.
async fn detect_fleet(state: &AppState, run: &RunRow, jobs: &[JobRow]) -> Result<Option<Uuid>, DbError> {
    if run.fleet_id.is_some() || !ACTIVE.contains(&run.status.as_str()) {
        return Ok(run.fleet_id);
    }
    for instance_id in jobs.iter().filter_map(|j| j.instance_id) {
        if let Some(instance) = state.db.instance_by_id(instance_id).await? {
            return Ok(Some(instance.fleet_id));
        }
    }
    Ok(None)
}

/// The statuses dstack's active-run processing handles (pending and terminating runs have
/// their own, which never set the fleet).
const ACTIVE: &[&str] = &["submitted", "provisioning", "running"];

fn is_noop(run: &RunRow, plan: &RunPlan) -> bool {
    plan.status.as_str() == run.status
        && plan.termination_reason.map(RunTerminationReason::as_str) == run.termination_reason.as_deref()
        && plan.resubmission_attempt == run.resubmission_attempt
        && !plan.clear_fleet
        && plan.terminate_jobs.is_empty()
        && plan.resubmit_replicas.is_empty()
        && !plan.trigger
        && plan.next_triggered_at == run.next_triggered_at
        && plan.scale_up.is_empty()
        && plan.bump_deployment.is_empty()
        && plan.drain_jobs.is_empty()
        && plan
            .desired_replica_counts
            .as_ref()
            .is_none_or(|d| serde_json::to_string(d).ok().as_deref() == run.desired_replica_counts.as_deref())
}

/// The windows the autoscaler reads (dstack's `SERVICE_SCALING_WINDOWS`).
const WINDOWS: [i64; 3] = [30, 60, 300];

/// A service's load as this server's proxy measured it over the scaling windows, and the
/// gauges of its `metric: prometheus` groups scraped from its replicas now.
async fn service_load(
    state: &AppState,
    run: &RunRow,
    jobs: &[JobRow],
    registered: &[Uuid],
) -> Option<ServiceStats> {
    run.service_spec.as_ref()?;
    let key = run.id.to_string();
    let windows = state.load.windows(&key, &WINDOWS.map(|w| w as u64));
    let windows = WINDOWS
        .iter()
        .zip(windows)
        .map(|(w, l)| {
            // Requests through the run's gateway count as well.
            let (gw_requests, gw_in_flight) = state.gateway_load.window(&key, *w as u64).unwrap_or((0, 0.0));
            (
                *w,
                WindowStats {
                    requests: l.requests + gw_requests,
                    avg_in_flight: l.avg_in_flight + gw_in_flight,
                    p95_latency: l.p95_latency,
                },
            )
        })
        .collect();
    let gauges = match serde_json::from_str::<RunSpec>(&run.run_spec) {
        Ok(spec) => crate::services::scrape_gauges(state, &spec, jobs, registered).await,
        Err(_) => Default::default(),
    };
    Some(ServiceStats { windows, gauges })
}

fn snapshot(
    run: &RunRow,
    jobs: &[JobRow],
    registered: &[Uuid],
    load: Option<ServiceStats>,
    in_flight: &dyn Fn(Uuid) -> i64,
) -> Result<RunSnapshot, serde_json::Error> {
    let spec: RunSpec = serde_json::from_str(&run.run_spec)?;
    let profile = dstack_decide::jobspec::merged_profile(&spec);
    // Only scheduled runs have a trigger time.
    let schedule = match run.next_triggered_at {
        Some(_) => profile.schedule.map(|s| s.cron),
        None => None,
    };
    let stop_on_master_done = profile.stop_criteria == Some(dstack_model::profile::StopCriteria::MasterDone);
    let retry = match jobs.last() {
        Some(j) => crate::runs::job_retry(&j.job_spec)?,
        None => None,
    };
    let views = jobs
        .iter()
        .map(|j| {
            let status = JobStatus::from_wire(&j.status).unwrap_or(JobStatus::Failed);
            JobView {
                id: j.id,
                replica_num: j.replica_num,
                job_num: j.job_num,
                submission_num: j.submission_num,
                status,
                termination_reason: j.termination_reason.as_deref().and_then(JobTerminationReason::from_wire),
                provisioned: j.job_provisioning_data.is_some(),
                submitted_at: j.submitted_at,
                last_processed_at: j.last_processed_at,
                replica_group: crate::services::replica_group(j),
                deployment_num: j.deployment_num,
                serving: status == JobStatus::Running
                    && crate::services::is_ready(j, registered)
                    && j.drain_started_at.is_none(),
                spec_current: j.deployment_num < run.deployment_num
                    && !status.is_finished()
                    && spec_is_current(&spec, j),
                draining_since: j.drain_started_at,
                in_flight: if j.drain_started_at.is_some() { in_flight(j.id) } else { 0 },
            }
        })
        .collect();
    let service = match &spec.configuration {
        RunConfiguration::Service(c) if run.service_spec.is_some() => Some(ServiceScaling {
            groups: dstack_decide::jobspec::replica_groups(c)
                .into_iter()
                .map(|g| GroupScaling { name: g.name, replicas: g.replicas, scaling: g.scaling })
                .collect(),
            desired: run
                .desired_replica_counts
                .as_deref()
                .map(serde_json::from_str)
                .transpose()?
                .unwrap_or_default(),
            stats: load,
            deployment_num: run.deployment_num,
            drain_timeout: drain_timeout(jobs),
        }),
        _ => None,
    };
    Ok(RunSnapshot {
        status: RunStatus::from_wire(&run.status).unwrap_or(RunStatus::Failed),
        termination_reason: run.termination_reason.as_deref().and_then(RunTerminationReason::from_wire),
        submitted_at: run.submitted_at,
        resubmission_attempt: run.resubmission_attempt,
        retry,
        schedule,
        next_triggered_at: run.next_triggered_at,
        stop_on_master_done,
        jobs: views,
        service,
    })
}

/// Whether an out-of-date job's stored spec is what the run's current spec makes for it
/// (dstack's `job_spec_updatable_in_place`; the inter-node key differs per submission and is
/// left out). A spec that cannot be made or read is not current.
fn spec_is_current(spec: &RunSpec, job: &JobRow) -> bool {
    let Ok(fresh) =
        crate::runs::replica_job_specs(spec, job.replica_num, &crate::services::replica_group(job))
    else {
        return false;
    };
    let Some(fresh) = fresh.into_iter().find(|s| s.job_num == job.job_num) else { return false };
    let (Ok(mut fresh), Ok(mut stored)) =
        (serde_json::to_value(&fresh), serde_json::from_str::<serde_json::Value>(&job.job_spec))
    else {
        return false;
    };
    for v in [&mut fresh, &mut stored] {
        if let Some(map) = v.as_object_mut() {
            map.remove("ssh_key");
        }
    }
    fresh == stored
}

/// How long a replaced or scaled-down replica may drain: its jobs' `stop_duration` (the job
/// spec holds dstack's five minutes when it is not set, nothing when it is `off`), at most ten
/// minutes.
fn drain_timeout(jobs: &[JobRow]) -> jiff::SignedDuration {
    #[derive(serde::Deserialize)]
    struct Stop {
        #[serde(default)]
        stop_duration: Option<i64>,
    }
    let secs = jobs
        .last()
        .and_then(|j| serde_json::from_str::<Stop>(&j.job_spec).ok())
        .map_or(DRAIN_TIMEOUT_MAX, |s| s.stop_duration.unwrap_or(DRAIN_TIMEOUT_MAX))
        .clamp(0, DRAIN_TIMEOUT_MAX);
    jiff::SignedDuration::from_secs(secs)
}

/// The longest drain, seconds (also for `stop_duration: off`).
const DRAIN_TIMEOUT_MAX: i64 = 600;

/// The job rows the plan changes and the new submissions it creates.
fn job_changes(
    run: &RunRow,
    jobs: &[JobRow],
    plan: &RunPlan,
    now: jiff::Timestamp,
) -> Result<(Vec<JobRow>, Vec<JobRow>), Box<dyn std::error::Error>> {
    let mut updated = Vec::new();
    for stop in &plan.terminate_jobs {
        let Some(job) = jobs.iter().find(|j| j.id == stop.id) else { continue };
        let mut job = job.clone();
        job.status = JobStatus::Terminating.as_str().to_owned();
        job.termination_reason = Some(stop.reason.as_str().to_owned());
        job.termination_reason_message = stop.message.clone();
        job.graceful_termination_attempts = stop.graceful.then_some(0);
        job.last_processed_at = now;
        updated.push(job);
    }
    let mut new_jobs = Vec::new();
    for replica in &plan.resubmit_replicas {
        let latest =
            jobs.iter().filter(|j| j.replica_num == *replica).fold(Vec::<&JobRow>::new(), |mut acc, j| {
                match acc.iter_mut().find(|a| a.job_num == j.job_num) {
                    Some(a) if a.submission_num < j.submission_num => *a = j,
                    Some(_) => {}
                    None => acc.push(j),
                }
                acc
            });
        // A replica of an older deployment comes back with the run's current spec (it gets
        // the run's `deployment_num`).
        if latest.iter().any(|j| j.deployment_num < run.deployment_num) {
            let spec: RunSpec = serde_json::from_str(&run.run_spec)?;
            let group = latest.first().map(|j| crate::services::replica_group(j)).unwrap_or_default();
            let specs = crate::runs::replica_job_specs(&spec, *replica, &group)?;
            new_jobs.extend(next_submissions(run, jobs, specs, now)?);
            continue;
        }
        for prev in latest {
            let key = JobKey {
                job_num: prev.job_num,
                replica_num: prev.replica_num,
                submission_num: prev.submission_num + 1,
            };
            new_jobs.push(new_submission(run, key, prev.job_name.clone(), prev.job_spec.clone(), now));
        }
    }
    if plan.trigger {
        new_jobs.extend(triggered_jobs(run, jobs, now)?);
    }
    if !plan.scale_up.is_empty() {
        let spec: RunSpec = serde_json::from_str(&run.run_spec)?;
        for replica in &plan.scale_up {
            let specs = crate::runs::replica_job_specs(&spec, replica.replica_num, &replica.group)?;
            new_jobs.extend(next_submissions(run, jobs, specs, now)?);
        }
    }
    Ok((updated, new_jobs))
}

/// A scheduled run fires: the jobs it starts with, as at submission (fresh specs from its
/// run spec); a job it ran before gets its next submission number, as dstack's
/// `build_scale_up_job_models` retries inactive replicas.
fn triggered_jobs(
    run: &RunRow,
    jobs: &[JobRow],
    now: jiff::Timestamp,
) -> Result<Vec<JobRow>, Box<dyn std::error::Error>> {
    let spec: RunSpec = serde_json::from_str(&run.run_spec)?;
    next_submissions(run, jobs, crate::runs::initial_job_specs(&spec)?, now)
}

/// New submissions of `specs` (with a fresh inter-node key each replica needs): a job that ran
/// before gets its next submission number (dstack's `build_scale_up_job_models`), a new one 0.
fn next_submissions(
    run: &RunRow,
    jobs: &[JobRow],
    mut specs: Vec<dstack_api::runs::JobSpec>,
    now: jiff::Timestamp,
) -> Result<Vec<JobRow>, Box<dyn std::error::Error>> {
    crate::runs::with_job_ssh_key(&mut specs)?;
    let mut rows = Vec::with_capacity(specs.len());
    for spec in specs {
        let submission_num = jobs
            .iter()
            .filter(|j| j.replica_num == spec.replica_num && j.job_num == spec.job_num)
            .map(|j| j.submission_num + 1)
            .max()
            .unwrap_or(0);
        let key = JobKey { job_num: spec.job_num, replica_num: spec.replica_num, submission_num };
        rows.push(new_submission(run, key, spec.job_name.clone(), serde_json::to_string(&spec)?, now));
    }
    Ok(rows)
}
