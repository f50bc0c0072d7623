//! The run reconciler: from a run and its jobs' submissions, what the run becomes and what
//! happens to its jobs (scheduling.md §2.1, §2.8).
//!
//! Tasks and dev environments (one replica) and services' replicas are handled alike: each
//! replica's latest submissions decide for the replica, the replicas together for the run.
//!
//! A multi-node task is one replica of `nodes` jobs: when any of them fails (its process, its
//! host lost, no capacity), the replica fails, the run goes `terminating` with `job_failed`
//! (or is retried as a whole replica) and every other job of it is stopped with
//! `terminated_by_server`, whatever state it is in (submitted, waiting for its siblings,
//! running), so a run never waits on a node that is gone (dstack issue #4146).

use std::collections::BTreeMap;

use dstack_api::runs::{JobRetry, JobStatus, JobTerminationReason, RunStatus, RunTerminationReason};
use dstack_model::profile::RetryEvent;
use jiff::{SignedDuration, Timestamp};
use uuid::Uuid;

use crate::autoscale::{NewReplica, ServiceScaling};

/// One job submission as the run reconciler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobView {
    pub id: Uuid,
    pub replica_num: i64,
    pub job_num: i64,
    pub submission_num: i64,
    pub status: JobStatus,
    pub termination_reason: Option<JobTerminationReason>,
    /// The submission reached an instance (it has provisioning data).
    pub provisioned: bool,
    pub submitted_at: Timestamp,
    pub last_processed_at: Timestamp,
    /// The replica group of its job spec (`"0"` for the other run types).
    pub replica_group: String,
    pub deployment_num: i64,
    /// A service replica's job that receives proxy traffic (running, ready, not draining).
    pub serving: bool,
    /// Its job spec is what the run's current spec makes for it (a rolling deployment bumps
    /// its `deployment_num` in place instead of replacing it).
    pub spec_current: bool,
    /// When it was taken out of the proxy's routing to be stopped ([`crate::rolling`]).
    pub draining_since: Option<Timestamp>,
    /// Its requests in flight at this server's proxy.
    pub in_flight: i64,
}

/// A run and all its job submissions.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSnapshot {
    pub status: RunStatus,
    pub termination_reason: Option<RunTerminationReason>,
    pub submitted_at: Timestamp,
    pub resubmission_attempt: i64,
    /// The effective retry policy; `None` means no retry.
    pub retry: Option<JobRetry>,
    /// The cron expressions of `schedule` (the merged profile's); `None`: not scheduled.
    pub schedule: Option<Vec<String>>,
    /// A scheduled run's next (or, while it runs, current) trigger time.
    pub next_triggered_at: Option<Timestamp>,
    /// `stop_criteria: master-done`: the run is done once a master (job 0) is done.
    pub stop_on_master_done: bool,
    pub jobs: Vec<JobView>,
    /// A service's scaling inputs; `None` for the other run types.
    pub service: Option<ServiceScaling>,
}

/// What happens to one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminateJob {
    pub id: Uuid,
    pub reason: JobTerminationReason,
    pub message: Option<String>,
    /// A running job is first asked to stop (graceful_termination_attempts = 0).
    pub graceful: bool,
}

/// The decision for one pass over a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPlan {
    pub status: RunStatus,
    pub termination_reason: Option<RunTerminationReason>,
    pub resubmission_attempt: i64,
    /// The run may land on another fleet next time.
    pub clear_fleet: bool,
    pub terminate_jobs: Vec<TerminateJob>,
    /// Replicas that get a new submission of every job now.
    pub resubmit_replicas: Vec<i64>,
    /// A scheduled run fires: it gets the jobs of a new run (replica 0 of each replica
    /// group), each as the next submission of that job.
    pub trigger: bool,
    /// The run's `next_triggered_at` after this pass.
    pub next_triggered_at: Option<Timestamp>,
    /// A service's desired replica count per group after this pass (`None`: unchanged).
    pub desired_replica_counts: Option<BTreeMap<String, i64>>,
    /// Service replicas submitted by scaling up or a rolling deployment (with the run's
    /// current spec; scaled-down ones are in `terminate_jobs`).
    pub scale_up: Vec<NewReplica>,
    /// Jobs whose `deployment_num` becomes the run's (a rolling deployment found their spec
    /// unchanged).
    pub bump_deployment: Vec<Uuid>,
    /// Serving jobs taken out of the proxy's routing, to be stopped once drained.
    pub drain_jobs: Vec<Uuid>,
}

/// Waits before a retrying (pending) run is submitted again, by attempt; the last repeats.
pub const PENDING_RETRY_DELAYS: [SignedDuration; 6] = [
    SignedDuration::from_secs(15),
    SignedDuration::from_secs(30),
    SignedDuration::from_secs(60),
    SignedDuration::from_secs(120),
    SignedDuration::from_secs(300),
    SignedDuration::from_secs(600),
];

/// Decides one pass over `run` at `now`.
pub fn decide(run: &RunSnapshot, now: Timestamp) -> RunPlan {
    let mut plan = RunPlan {
        status: run.status,
        termination_reason: run.termination_reason,
        resubmission_attempt: run.resubmission_attempt,
        clear_fleet: false,
        terminate_jobs: Vec::new(),
        resubmit_replicas: Vec::new(),
        trigger: false,
        next_triggered_at: run.next_triggered_at,
        desired_replica_counts: None,
        scale_up: Vec::new(),
        bump_deployment: Vec::new(),
        drain_jobs: Vec::new(),
    };
    match run.status {
        RunStatus::Pending => pending(run, now, &mut plan),
        RunStatus::Submitted | RunStatus::Provisioning | RunStatus::Running => active(run, now, &mut plan),
        RunStatus::Terminating => terminating(run, now, &mut plan),
        RunStatus::Terminated | RunStatus::Failed | RunStatus::Done => {}
    }
    plan
}

fn pending(run: &RunSnapshot, now: Timestamp, plan: &mut RunPlan) {
    if run.resubmission_attempt == 0 {
        if run.schedule.is_some() {
            // A scheduled run waiting for its time (dstack takes it once `next_triggered_at < now`).
            if run.next_triggered_at.is_some_and(|at| at < now) {
                plan.status = RunStatus::Submitted;
                plan.trigger = true;
            }
        } else if let Some(svc) = &run.service {
            // A service scaled to zero: the first load submits replicas at once.
            scale_service(run, svc, now, false, plan);
            if !plan.scale_up.is_empty() {
                plan.status = RunStatus::Submitted;
            }
        }
        return;
    }
    let last = run.jobs.iter().map(|j| j.last_processed_at).max().unwrap_or(run.submitted_at);
    let idx = usize::try_from(run.resubmission_attempt - 1).unwrap_or(0).min(PENDING_RETRY_DELAYS.len() - 1);
    if now >= last + PENDING_RETRY_DELAYS[idx] {
        match &run.service {
            // dstack's `_process_pending_service`: the desired replicas, inactive ones first.
            Some(svc) => {
                scale_service(run, svc, now, false, plan);
                if !plan.scale_up.is_empty() {
                    plan.status = RunStatus::Submitted;
                }
            }
            None => {
                plan.status = RunStatus::Submitted;
                plan.resubmit_replicas = replicas(run);
            }
        }
    }
}

/// One scaling pass of a service into `plan` ([`crate::autoscale::scale`]).
fn scale_service(
    run: &RunSnapshot,
    svc: &ServiceScaling,
    now: Timestamp,
    with_delays: bool,
    plan: &mut RunPlan,
) {
    let scaled = crate::autoscale::scale(run, svc, now, with_delays);
    plan.desired_replica_counts = Some(scaled.desired);
    plan.scale_up = scaled.submit;
    plan.terminate_jobs.extend(scaled.terminate);
    plan.drain_jobs = scaled.drain;
}

fn terminating(run: &RunSnapshot, now: Timestamp, plan: &mut RunPlan) {
    let reason = run.termination_reason.unwrap_or(RunTerminationReason::JobFailed);
    let job_reason = reason.to_job_termination_reason();
    let mut all_finished = true;
    for job in latest_submissions(run) {
        if job.status.is_finished() {
            continue;
        }
        all_finished = false;
        if job.status != JobStatus::Terminating {
            let graceful = job.status == JobStatus::Running
                && !matches!(reason, RunTerminationReason::AbortedByUser | RunTerminationReason::AllJobsDone);
            plan.terminate_jobs.push(TerminateJob {
                id: job.id,
                reason: job_reason,
                message: None,
                graceful,
            });
        }
    }
    // Older submissions still winding down count too.
    let older_active = run.jobs.iter().any(|j| !j.status.is_finished() && !is_latest(run, j));
    if !all_finished || older_active {
        return;
    }
    match &run.schedule {
        // A scheduled run waits for its next time unless the user stopped it. Like dstack, it
        // keeps its termination reason until it is set again.
        Some(crons)
            if !matches!(
                reason,
                RunTerminationReason::AbortedByUser | RunTerminationReason::StoppedByUser
            ) =>
        {
            plan.status = RunStatus::Pending;
            plan.next_triggered_at = crate::schedule::next_trigger(crons, now);
            plan.clear_fleet = true;
            plan.resubmission_attempt = 0;
        }
        _ => plan.status = reason.to_status(),
    }
}

/// How a replica stands, from its jobs' latest submissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ReplicaState {
    /// Every job was scaled down: the replica counts for nothing.
    ScaledDown,
    Done,
    Submitted,
    Provisioning,
    Running,
    /// Failed and may be retried.
    Retry,
    /// Failed for good, with the run's reason.
    Failed(RunTerminationReasonOrd),
}

/// [`RunTerminationReason`] with an order, so the worst failure wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum RunTerminationReasonOrd {
    JobFailed,
    RetryLimitExceeded,
}

fn active(run: &RunSnapshot, now: Timestamp, plan: &mut RunPlan) {
    // A service's new version that failed for good while its old replicas still serve
    // stalls the rolling deployment instead of failing the run ([`crate::rolling::stalled`]).
    let stalled: Vec<i64> = match &run.service {
        Some(svc) => {
            let mut groups: Vec<&str> = run.jobs.iter().map(|j| j.replica_group.as_str()).collect();
            groups.sort_unstable();
            groups.dedup();
            groups.into_iter().flat_map(|g| crate::rolling::stalled(run, g, svc.deployment_num)).collect()
        }
        None => Vec::new(),
    };
    let mut states = Vec::new();
    for replica in replicas(run) {
        let jobs: Vec<&JobView> = latest_submissions(run).filter(|j| j.replica_num == replica).collect();
        let state = replica_state(run, &jobs, now);
        if state != ReplicaState::ScaledDown && !stalled.contains(&replica) {
            states.push((replica, state));
        }
    }
    if states.is_empty()
        && let Some(svc) = &run.service
    {
        // Every replica scaled down, or none yet (`replicas.min` 0): the service waits for
        // load. dstack goes `pending` here too but counts a resubmission attempt, whose
        // backoff would delay the wake-up; we do not.
        scale_service(run, svc, now, true, plan);
        plan.status = if plan.scale_up.is_empty() { RunStatus::Pending } else { RunStatus::Submitted };
        return;
    }
    if let Some(failure) = states.iter().find_map(|(_, s)| match s {
        ReplicaState::Failed(r) => Some(*r),
        _ => None,
    }) {
        let reason = match failure {
            RunTerminationReasonOrd::JobFailed => RunTerminationReason::JobFailed,
            RunTerminationReasonOrd::RetryLimitExceeded => RunTerminationReason::RetryLimitExceeded,
        };
        plan.status = RunStatus::Terminating;
        plan.termination_reason = Some(reason);
        return;
    }
    // dstack's `_should_stop_on_master_done`: any submission of job 0 done ends the run.
    if run.stop_on_master_done && run.jobs.iter().any(|j| j.job_num == 0 && j.status == JobStatus::Done) {
        plan.status = RunStatus::Terminating;
        plan.termination_reason = Some(RunTerminationReason::AllJobsDone);
        return;
    }
    let retrying: Vec<i64> =
        states.iter().filter(|(_, s)| *s == ReplicaState::Retry).map(|(r, _)| *r).collect();
    let any_active = states.iter().any(|(_, s)| {
        matches!(s, ReplicaState::Submitted | ReplicaState::Provisioning | ReplicaState::Running)
    });
    if !retrying.is_empty() {
        // Siblings of a failed job in a retried replica are stopped; the replica starts over.
        for job in latest_submissions(run) {
            if retrying.contains(&job.replica_num)
                && !job.status.is_finished()
                && job.status != JobStatus::Terminating
            {
                plan.terminate_jobs.push(TerminateJob {
                    id: job.id,
                    reason: JobTerminationReason::TerminatedByServer,
                    message: Some("Run is to be resubmitted".to_owned()),
                    graceful: job.status == JobStatus::Running,
                });
            }
        }
        if any_active {
            plan.resubmit_replicas = retrying;
        } else {
            plan.status = RunStatus::Pending;
            plan.resubmission_attempt = run.resubmission_attempt + 1;
            plan.clear_fleet = true;
        }
        return;
    }
    if states.iter().all(|(_, s)| *s == ReplicaState::Done) {
        plan.status = RunStatus::Terminating;
        plan.termination_reason = Some(RunTerminationReason::AllJobsDone);
        return;
    }
    let best = states.iter().map(|(_, s)| *s).max().unwrap_or(ReplicaState::Submitted);
    plan.status = match best {
        ReplicaState::Running => RunStatus::Running,
        ReplicaState::Provisioning => RunStatus::Provisioning,
        _ => RunStatus::Submitted,
    };
    if plan.status == RunStatus::Provisioning || plan.status == RunStatus::Running {
        plan.resubmission_attempt = 0;
    }
    if let Some(svc) = &run.service {
        scale_service(run, svc, now, true, plan);
        roll(run, svc, now, plan);
    }
}

/// How long a drained replica's routes may live on in the proxy's route cache (it caches
/// them for a second).
pub const DRAIN_GRACE: SignedDuration = SignedDuration::from_secs(2);

/// One pass of a rolling deployment into `plan`, after scaling ([`crate::rolling::step`]);
/// scaling leaves the groups that roll alone, so the two never stop or submit the same.
fn roll(run: &RunSnapshot, svc: &ServiceScaling, now: Timestamp, plan: &mut RunPlan) {
    let desired = plan.desired_replica_counts.clone().unwrap_or_default();
    let next = run
        .jobs
        .iter()
        .map(|j| j.replica_num + 1)
        .chain(plan.scale_up.iter().map(|r| r.replica_num + 1))
        .max()
        .unwrap_or(0);
    let drain = crate::rolling::Drain { grace: DRAIN_GRACE, timeout: svc.drain_timeout };
    let rolled = crate::rolling::step(run, svc, &desired, next, drain, now);
    plan.bump_deployment = rolled.bump;
    plan.scale_up.extend(rolled.submit);
    for id in rolled.drain {
        if !plan.drain_jobs.contains(&id) {
            plan.drain_jobs.push(id);
        }
    }
    for stop in rolled.terminate {
        if !plan.terminate_jobs.iter().any(|t| t.id == stop.id) {
            plan.terminate_jobs.push(stop);
        }
    }
}

fn replica_state(run: &RunSnapshot, jobs: &[&JobView], now: Timestamp) -> ReplicaState {
    let mut state = ReplicaState::ScaledDown;
    for job in jobs {
        let job_state = match job.status {
            JobStatus::Running => ReplicaState::Running,
            JobStatus::Provisioning | JobStatus::Pulling => ReplicaState::Provisioning,
            JobStatus::Submitted => ReplicaState::Submitted,
            JobStatus::Done => ReplicaState::Done,
            JobStatus::Terminating if job.termination_reason == Some(JobTerminationReason::DoneByRunner) => {
                ReplicaState::Done
            }
            JobStatus::Terminating if job.termination_reason.is_none() => ReplicaState::Running,
            JobStatus::Terminating | JobStatus::Terminated | JobStatus::Aborted | JobStatus::Failed => {
                retry_state(run, job, now)
            }
        };
        state = state.max(job_state);
    }
    state
}

fn retry_state(run: &RunSnapshot, job: &JobView, now: Timestamp) -> ReplicaState {
    let reason = job.termination_reason.unwrap_or(JobTerminationReason::TerminatedByServer);
    match reason {
        JobTerminationReason::ScaledDown => return ReplicaState::ScaledDown,
        JobTerminationReason::DoneByRunner => return ReplicaState::Done,
        _ => {}
    }
    let (Some(retry), Some(event)) = (&run.retry, reason.to_retry_event()) else {
        return ReplicaState::Failed(RunTerminationReasonOrd::JobFailed);
    };
    if !retry.on_events.contains(&event) {
        return ReplicaState::Failed(RunTerminationReasonOrd::JobFailed);
    }
    let ever_provisioned = run
        .jobs
        .iter()
        .filter(|j| j.replica_num == job.replica_num && j.job_num == job.job_num && j.provisioned)
        .max_by_key(|j| j.submission_num);
    let since = match (event, ever_provisioned) {
        // A scheduled run counts from its current trigger time.
        (RetryEvent::NoCapacity, None) => run.next_triggered_at.unwrap_or(run.submitted_at),
        (_, Some(j)) => j.last_processed_at,
        (_, None) => run.submitted_at,
    };
    if now.duration_since(since) > SignedDuration::from_secs(retry.duration) {
        ReplicaState::Failed(RunTerminationReasonOrd::RetryLimitExceeded)
    } else {
        ReplicaState::Retry
    }
}

/// The replica numbers of the run, ascending.
fn replicas(run: &RunSnapshot) -> Vec<i64> {
    let mut r: Vec<i64> = run.jobs.iter().map(|j| j.replica_num).collect();
    r.sort_unstable();
    r.dedup();
    r
}

fn is_latest(run: &RunSnapshot, job: &JobView) -> bool {
    !run.jobs.iter().any(|o| {
        o.replica_num == job.replica_num && o.job_num == job.job_num && o.submission_num > job.submission_num
    })
}

/// The latest submission of each (replica, job).
pub fn latest_submissions(run: &RunSnapshot) -> impl Iterator<Item = &JobView> {
    run.jobs.iter().filter(|j| is_latest(run, j))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn job(
        replica: i64,
        submission: i64,
        status: JobStatus,
        reason: Option<JobTerminationReason>,
    ) -> JobView {
        JobView {
            id: Uuid::from_u128((replica * 100 + submission) as u128 + 1),
            replica_num: replica,
            job_num: 0,
            submission_num: submission,
            status,
            termination_reason: reason,
            provisioned: false,
            submitted_at: t(0),
            last_processed_at: t(0),
            replica_group: "0".to_owned(),
            deployment_num: 0,
            serving: false,
            spec_current: false,
            draining_since: None,
            in_flight: 0,
        }
    }

    fn run(status: RunStatus, jobs: Vec<JobView>) -> RunSnapshot {
        RunSnapshot {
            status,
            termination_reason: None,
            submitted_at: t(0),
            resubmission_attempt: 0,
            retry: None,
            schedule: None,
            next_triggered_at: None,
            stop_on_master_done: false,
            jobs,
            service: None,
        }
    }

    fn retry(events: &[RetryEvent], secs: i64) -> Option<JobRetry> {
        Some(JobRetry { on_events: events.to_vec(), duration: secs })
    }

    use JobStatus as J;
    use JobTerminationReason as R;

    /// Each row: the run's status and its jobs → the status the run takes.
    #[test]
    fn active_runs_follow_their_jobs() {
        type Case<'a> = (&'a [(i64, JobStatus, Option<R>)], RunStatus, Option<RunTerminationReason>);
        let cases: &[Case<'_>] = &[
            (&[(0, J::Submitted, None)], RunStatus::Submitted, None),
            (&[(0, J::Provisioning, None)], RunStatus::Provisioning, None),
            (&[(0, J::Pulling, None)], RunStatus::Provisioning, None),
            (&[(0, J::Running, None)], RunStatus::Running, None),
            (&[(0, J::Running, None), (1, J::Submitted, None)], RunStatus::Running, None),
            (
                &[(0, J::Terminating, Some(R::DoneByRunner))],
                RunStatus::Terminating,
                Some(RunTerminationReason::AllJobsDone),
            ),
            (
                &[(0, J::Done, None), (1, J::Done, None)],
                RunStatus::Terminating,
                Some(RunTerminationReason::AllJobsDone),
            ),
            (&[(0, J::Done, None), (1, J::Running, None)], RunStatus::Running, None),
            (
                &[(0, J::Terminating, Some(R::FailedToStartDueToNoCapacity))],
                RunStatus::Terminating,
                Some(RunTerminationReason::JobFailed),
            ),
            (
                &[(0, J::Failed, Some(R::ContainerExitedWithError)), (1, J::Running, None)],
                RunStatus::Terminating,
                Some(RunTerminationReason::JobFailed),
            ),
            (
                &[(0, J::Terminated, Some(R::MaxDurationExceeded))],
                RunStatus::Terminating,
                Some(RunTerminationReason::JobFailed),
            ),
        ];
        for (jobs, status, reason) in cases {
            let views: Vec<JobView> = jobs.iter().map(|(r, s, why)| job(*r, 0, *s, *why)).collect();
            let plan = decide(&run(RunStatus::Submitted, views), t(1));
            assert_eq!((plan.status, plan.termination_reason), (*status, *reason), "{jobs:?}");
        }
    }

    #[test]
    fn only_the_latest_submission_counts() {
        let jobs =
            vec![job(0, 0, J::Failed, Some(R::FailedToStartDueToNoCapacity)), job(0, 1, J::Running, None)];
        assert_eq!(decide(&run(RunStatus::Submitted, jobs), t(1)).status, RunStatus::Running);
    }

    #[test]
    fn a_retryable_failure_makes_a_lone_replica_pending() {
        let mut r =
            run(RunStatus::Submitted, vec![job(0, 0, J::Failed, Some(R::FailedToStartDueToNoCapacity))]);
        r.retry = retry(&[RetryEvent::NoCapacity], 3600);
        let plan = decide(&r, t(10));
        assert_eq!(plan.status, RunStatus::Pending);
        assert_eq!(plan.resubmission_attempt, 1);
        assert!(plan.clear_fleet);
        // Not the listed event: the run fails.
        r.retry = retry(&[RetryEvent::Error], 3600);
        assert_eq!(decide(&r, t(10)).termination_reason, Some(RunTerminationReason::JobFailed));
        // Past the retry duration, counted from the run's submission for no-capacity.
        r.retry = retry(&[RetryEvent::NoCapacity], 5);
        assert_eq!(decide(&r, t(10)).termination_reason, Some(RunTerminationReason::RetryLimitExceeded));
    }

    #[test]
    fn errors_after_provisioning_count_from_the_last_attempt() {
        let mut failed = job(0, 0, J::Failed, Some(R::ContainerExitedWithError));
        failed.provisioned = true;
        failed.last_processed_at = t(100);
        let mut r = run(RunStatus::Running, vec![failed]);
        r.retry = retry(&[RetryEvent::Error], 60);
        assert_eq!(decide(&r, t(150)).status, RunStatus::Pending);
        assert_eq!(decide(&r, t(161)).termination_reason, Some(RunTerminationReason::RetryLimitExceeded));
    }

    #[test]
    fn a_retryable_replica_beside_active_ones_is_resubmitted_at_once() {
        let mut r = run(
            RunStatus::Running,
            vec![job(0, 0, J::Running, None), job(1, 0, J::Failed, Some(R::InterruptedByNoCapacity))],
        );
        r.retry = retry(&[RetryEvent::Interruption], 3600);
        let plan = decide(&r, t(5));
        assert_eq!(plan.status, RunStatus::Running);
        assert_eq!(plan.resubmit_replicas, vec![1]);
    }

    #[test]
    fn pending_runs_wait_out_the_backoff() {
        let mut r =
            run(RunStatus::Pending, vec![job(0, 0, J::Failed, Some(R::FailedToStartDueToNoCapacity))]);
        r.resubmission_attempt = 2;
        assert_eq!(decide(&r, t(29)).status, RunStatus::Pending);
        let plan = decide(&r, t(30));
        assert_eq!(plan.status, RunStatus::Submitted);
        assert_eq!(plan.resubmit_replicas, vec![0]);
        r.resubmission_attempt = 40;
        assert_eq!(decide(&r, t(599)).status, RunStatus::Pending);
        assert_eq!(decide(&r, t(600)).status, RunStatus::Submitted);
    }

    #[test]
    fn terminating_runs_stop_their_jobs_then_finish() {
        let mut r = run(
            RunStatus::Terminating,
            vec![job(0, 0, J::Running, None), job(1, 0, J::Submitted, None), job(2, 0, J::Done, None)],
        );
        r.termination_reason = Some(RunTerminationReason::StoppedByUser);
        let plan = decide(&r, t(1));
        assert_eq!(plan.status, RunStatus::Terminating);
        let stops: Vec<(i64, bool)> = plan
            .terminate_jobs
            .iter()
            .map(|s| (r.jobs.iter().find(|j| j.id == s.id).unwrap().replica_num, s.graceful))
            .collect();
        assert_eq!(stops, vec![(0, true), (1, false)]);
        assert!(plan.terminate_jobs.iter().all(|s| s.reason == R::TerminatedByUser));

        r.termination_reason = Some(RunTerminationReason::AbortedByUser);
        assert!(decide(&r, t(1)).terminate_jobs.iter().all(|s| !s.graceful && s.reason == R::AbortedByUser));

        let done = run(RunStatus::Terminating, vec![job(0, 0, J::Terminated, Some(R::TerminatedByUser))]);
        let done = RunSnapshot { termination_reason: Some(RunTerminationReason::StoppedByUser), ..done };
        assert_eq!(decide(&done, t(1)).status, RunStatus::Terminated);
    }

    fn scheduled(status: RunStatus, jobs: Vec<JobView>, next: Timestamp) -> RunSnapshot {
        RunSnapshot {
            schedule: Some(vec!["0 * * * *".to_owned(), "30 12 * * *".to_owned()]),
            next_triggered_at: Some(next),
            ..run(status, jobs)
        }
    }

    /// A pending scheduled run fires once its time has passed (strictly, as dstack's query).
    #[test]
    fn scheduled_runs_fire_at_their_time() {
        let cases: &[(i64, bool)] = &[(-3600, true), (-1, true), (0, false), (1, false), (3600, false)];
        for (offset, fires) in cases {
            let r = scheduled(RunStatus::Pending, vec![], t(1000 + offset));
            let plan = decide(&r, t(1000));
            assert_eq!(plan.trigger, *fires, "offset {offset}");
            let want = if *fires { RunStatus::Submitted } else { RunStatus::Pending };
            assert_eq!(plan.status, want, "offset {offset}");
            assert_eq!(plan.next_triggered_at, r.next_triggered_at);
            assert!(plan.resubmit_replicas.is_empty());
        }
        // Not scheduled, or no time: a pending run with no retry waits.
        let mut r = scheduled(RunStatus::Pending, vec![], t(0));
        r.next_triggered_at = None;
        assert!(!decide(&r, t(1000)).trigger);
        r.schedule = None;
        r.next_triggered_at = Some(t(0));
        assert!(!decide(&r, t(1000)).trigger);
        // A scheduled run retrying after a failure follows the retry backoff, not the schedule.
        let mut r = scheduled(
            RunStatus::Pending,
            vec![job(0, 0, J::Failed, Some(R::FailedToStartDueToNoCapacity))],
            t(5000),
        );
        r.resubmission_attempt = 1;
        let plan = decide(&r, t(15));
        assert_eq!(
            (plan.status, plan.trigger, plan.resubmit_replicas),
            (RunStatus::Submitted, false, vec![0])
        );
    }

    /// Each row: why the run terminates → whether it waits for its next time (PENDING) or
    /// finishes with that reason's status.
    #[test]
    fn scheduled_runs_return_to_pending_unless_stopped_by_the_user() {
        use RunTerminationReason as T;
        let cases: &[(T, RunStatus)] = &[
            (T::AllJobsDone, RunStatus::Pending),
            (T::JobFailed, RunStatus::Pending),
            (T::RetryLimitExceeded, RunStatus::Pending),
            (T::ServerError, RunStatus::Pending),
            (T::StoppedByUser, RunStatus::Terminated),
            (T::AbortedByUser, RunStatus::Terminated),
        ];
        // 1800000000 is 2027-01-15T08:00:00Z; "0 * * * *" fires next at 09:00.
        let now = t(125);
        for (reason, status) in cases {
            let mut r = scheduled(
                RunStatus::Terminating,
                vec![job(0, 0, J::Failed, Some(R::FailedToStartDueToNoCapacity))],
                t(-60),
            );
            r.termination_reason = Some(*reason);
            r.resubmission_attempt = 2;
            let plan = decide(&r, now);
            let want_status = if *reason == T::AbortedByUser { RunStatus::Terminated } else { *status };
            assert_eq!(plan.status, want_status, "{reason:?}");
            if *status == RunStatus::Pending {
                assert_eq!(plan.next_triggered_at, Some(t(3600)), "{reason:?}");
                assert!(plan.clear_fleet);
                assert_eq!(plan.resubmission_attempt, 0);
                assert_eq!(plan.termination_reason, Some(*reason));
            } else {
                assert!(!plan.clear_fleet);
            }
            // Not scheduled: the reason's status.
            r.schedule = None;
            assert_eq!(decide(&r, now).status, reason.to_status(), "{reason:?}");
        }
        // Jobs still winding down: it stays terminating.
        let mut r =
            scheduled(RunStatus::Terminating, vec![job(0, 0, J::Terminating, Some(R::DoneByRunner))], t(0));
        r.termination_reason = Some(T::AllJobsDone);
        assert_eq!(decide(&r, now).status, RunStatus::Terminating);
    }

    #[test]
    fn a_scheduled_run_retries_no_capacity_from_its_trigger_time() {
        let mut r = scheduled(
            RunStatus::Submitted,
            vec![job(0, 1, J::Failed, Some(R::FailedToStartDueToNoCapacity))],
            t(10_000),
        );
        r.retry = retry(&[RetryEvent::NoCapacity], 600);
        assert_eq!(decide(&r, t(10_500)).status, RunStatus::Pending);
        assert_eq!(decide(&r, t(10_601)).termination_reason, Some(RunTerminationReason::RetryLimitExceeded));
    }

    #[test]
    fn finished_runs_stay_as_they_are() {
        for status in [RunStatus::Done, RunStatus::Failed, RunStatus::Terminated] {
            let plan = decide(&run(status, vec![job(0, 0, J::Running, None)]), t(1));
            assert_eq!(plan.status, status);
            assert!(plan.terminate_jobs.is_empty() && plan.resubmit_replicas.is_empty());
        }
    }

    proptest::proptest! {
        /// Whatever the jobs, a pass never revives a finished run, never stops a finished
        /// job, and a run only finishes once every job has.
        #[test]
        fn invariants(
            statuses in proptest::collection::vec((0i64..3, 0usize..9, 0usize..21), 1..6),
            run_status in 0usize..8,
            retry_on in proptest::bool::ANY,
            now in 0i64..5000,
        ) {
            let jobs: Vec<JobView> = statuses
                .iter()
                .enumerate()
                .map(|(i, (replica, s, reason))| {
                    let status = JobStatus::from_wire(JobStatus::ALL[*s]).unwrap();
                    let reason = JobTerminationReason::from_wire(JobTerminationReason::ALL[*reason]);
                    let mut j = job(*replica, i as i64, status, if status == J::Submitted { None } else { reason });
                    j.id = Uuid::from_u128(i as u128 + 1);
                    j
                })
                .collect();
            let status = RunStatus::from_wire(RunStatus::ALL[run_status]).unwrap();
            let mut r = run(status, jobs);
            r.termination_reason = Some(RunTerminationReason::StoppedByUser);
            r.resubmission_attempt = 1;
            if retry_on {
                r.retry = retry(&[RetryEvent::NoCapacity, RetryEvent::Error, RetryEvent::Interruption], 3600);
            }
            let plan = decide(&r, t(now));
            if status.is_finished() {
                proptest::prop_assert_eq!(plan.status, status);
            }
            for stop in &plan.terminate_jobs {
                let j = r.jobs.iter().find(|j| j.id == stop.id).unwrap();
                proptest::prop_assert!(!j.status.is_finished());
            }
            if plan.status.is_finished() && !status.is_finished() {
                proptest::prop_assert!(r.jobs.iter().all(|j| j.status.is_finished()));
            }
        }
    }

    fn node(job_num: i64, status: JobStatus, reason: Option<JobTerminationReason>) -> JobView {
        let mut j = job(0, 0, status, reason);
        j.job_num = job_num;
        j.id = Uuid::from_u128(job_num as u128 + 1);
        j.provisioned = status != J::Submitted;
        j
    }

    /// A multi-node replica: one failed node fails the run, and every other node is stopped
    /// on the next pass, whatever it is doing; master-done ends the run when job 0 is done.
    #[test]
    fn multi_node_failures_and_stop_criteria() {
        let failed = Some(R::ContainerExitedWithError);
        // (status, stop on master done, nodes) → (status, reason)
        type Case = (RunStatus, bool, Vec<JobView>, RunStatus, Option<RunTerminationReason>);
        let cases: Vec<Case> = vec![
            (
                RunStatus::Running,
                false,
                vec![node(0, J::Running, None), node(1, J::Failed, failed)],
                RunStatus::Terminating,
                Some(RunTerminationReason::JobFailed),
            ),
            (
                RunStatus::Running,
                false,
                vec![node(0, J::Running, None), node(1, J::Terminating, failed)],
                RunStatus::Terminating,
                Some(RunTerminationReason::JobFailed),
            ),
            (
                RunStatus::Running,
                false,
                vec![node(0, J::Running, None), node(1, J::Terminating, Some(R::InstanceUnreachable))],
                RunStatus::Terminating,
                Some(RunTerminationReason::JobFailed),
            ),
            (
                RunStatus::Submitted,
                false,
                vec![
                    node(0, J::Terminating, Some(R::FailedToStartDueToNoCapacity)),
                    node(1, J::Submitted, None),
                ],
                RunStatus::Terminating,
                Some(RunTerminationReason::JobFailed),
            ),
            (
                RunStatus::Provisioning,
                false,
                vec![node(0, J::Failed, failed), node(1, J::Provisioning, None)],
                RunStatus::Terminating,
                Some(RunTerminationReason::JobFailed),
            ),
            // all-done: a finished master waits for its workers.
            (
                RunStatus::Running,
                false,
                vec![node(0, J::Done, None), node(1, J::Running, None)],
                RunStatus::Running,
                None,
            ),
            (
                RunStatus::Running,
                true,
                vec![node(0, J::Done, None), node(1, J::Running, None)],
                RunStatus::Terminating,
                Some(RunTerminationReason::AllJobsDone),
            ),
            (
                RunStatus::Running,
                true,
                vec![node(0, J::Running, None), node(1, J::Done, None)],
                RunStatus::Running,
                None,
            ),
            (
                RunStatus::Running,
                false,
                vec![node(0, J::Done, None), node(1, J::Done, None)],
                RunStatus::Terminating,
                Some(RunTerminationReason::AllJobsDone),
            ),
        ];
        for (i, (status, master_done, jobs, want, reason)) in cases.into_iter().enumerate() {
            let r = RunSnapshot { stop_on_master_done: master_done, ..run(status, jobs) };
            let plan = decide(&r, t(10));
            assert_eq!((plan.status, plan.termination_reason), (want, reason), "case {i}");
            assert!(plan.terminate_jobs.is_empty(), "case {i}: the terminating pass stops the others");
        }
        // The terminating pass stops every unfinished node: a running one gracefully.
        let mut r = run(
            RunStatus::Terminating,
            vec![
                node(0, J::Running, None),
                node(1, J::Failed, failed),
                node(2, J::Provisioning, None),
                node(3, J::Submitted, None),
            ],
        );
        r.termination_reason = Some(RunTerminationReason::JobFailed);
        let plan = decide(&r, t(10));
        assert_eq!(plan.status, RunStatus::Terminating);
        let stops: Vec<(u128, R, bool)> =
            plan.terminate_jobs.iter().map(|s| (s.id.as_u128(), s.reason, s.graceful)).collect();
        assert_eq!(
            stops,
            [
                (1, R::TerminatedByServer, true),
                (3, R::TerminatedByServer, false),
                (4, R::TerminatedByServer, false)
            ]
        );
        // Once they have all stopped, the run has failed.
        r.jobs = vec![node(0, J::Terminated, Some(R::TerminatedByServer)), node(1, J::Failed, failed)];
        assert_eq!(decide(&r, t(11)).status, RunStatus::Failed);
        // With retry, the whole replica starts over: the other nodes are stopped first.
        let mut r = run(RunStatus::Running, vec![node(0, J::Running, None), node(1, J::Failed, failed)]);
        r.retry = retry(&[RetryEvent::Error], 3600);
        let plan = decide(&r, t(10));
        assert_eq!(plan.terminate_jobs.iter().map(|s| s.id.as_u128()).collect::<Vec<_>>(), [1]);
        assert_eq!(plan.status, RunStatus::Pending);
    }
}
