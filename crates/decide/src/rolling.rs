//! Rolling deployment of a service (agents.md §4.13; dstack's `_build_deployment_update_map`,
//! `_build_rolling_deployment_maps` and `_build_removed_groups_cleanup_maps` in
//! `background/pipeline_tasks/runs/active.py`), with a drain dstack does not have.
//!
//! An apply that updates a service bumps the run's `deployment_num`; a replica whose jobs
//! carry a lower one is out of date. Each pass of [`step`]:
//! 1. bumps the deployment number in place of the replicas whose job specs would not change
//!    (`JobView::spec_current`);
//! 2. in each group that still has out-of-date replicas, submits new replicas up to the
//!    desired count plus one ([`MAX_SURGE`]) and stops the out-of-date replicas that receive no
//!    traffic and the serving ones beyond the desired count, least important first (out of
//!    date first);
//! 3. stops the replicas of groups no longer in the configuration.
//!
//! Ours: a replica that receives traffic is not stopped at once but drained: it is taken out
//! of the proxy's routing (the job's `draining_since` mark), and stopped once the proxy's
//! route cache can no longer hold it (`Drain::grace`) and its in-flight proxied requests have
//! finished, or when `Drain::timeout` has passed.
//! A group whose new version failed for good (an up-to-date replica finished with an error
//! and is not retried any more) stalls: no further replica is submitted and the old replicas
//! keep serving, until a later apply supersedes the deployment ([`stalled`]).

use std::collections::{BTreeMap, BTreeSet};

use dstack_api::runs::{JobStatus, JobTerminationReason};
use jiff::{SignedDuration, Timestamp};
use uuid::Uuid;

use crate::autoscale::{NewReplica, ServiceScaling, replica_lists};
use crate::run::{JobView, RunSnapshot, TerminateJob, latest_submissions};

/// dstack's `ROLLING_DEPLOYMENT_MAX_SURGE`: replicas a group may have beyond its desired count
/// while it rolls.
pub const MAX_SURGE: i64 = 1;

/// How a serving replica is drained before it is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    /// How long after the drain mark a request may still be routed to the replica (the proxy's
    /// route cache); its in-flight count is trusted only after this.
    pub grace: SignedDuration,
    /// The longest a drain waits for in-flight requests.
    pub timeout: SignedDuration,
}

/// What one pass of a rolling deployment does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollingPlan {
    /// Jobs whose `deployment_num` becomes the run's: their spec did not change.
    pub bump: Vec<Uuid>,
    /// New up-to-date replicas.
    pub submit: Vec<NewReplica>,
    /// Serving jobs taken out of the proxy's routing now.
    pub drain: Vec<Uuid>,
    /// Jobs stopped with `scaled_down`.
    pub terminate: Vec<TerminateJob>,
}

/// One replica's latest submissions, by job number.
type ReplicaJobs<'a> = Vec<&'a JobView>;

fn by_replica(run: &RunSnapshot) -> BTreeMap<i64, ReplicaJobs<'_>> {
    let mut out: BTreeMap<i64, ReplicaJobs<'_>> = BTreeMap::new();
    for job in latest_submissions(run) {
        out.entry(job.replica_num).or_default().push(job);
    }
    for jobs in out.values_mut() {
        jobs.sort_by_key(|j| j.job_num);
    }
    out
}

/// A job that ended, or is ending, with an error (a failed job is `terminating` with its
/// reason before it is `failed`).
fn is_failure(job: &JobView) -> bool {
    let benign = matches!(
        job.termination_reason,
        Some(JobTerminationReason::ScaledDown | JobTerminationReason::DoneByRunner)
    );
    match job.status {
        JobStatus::Terminating => job.termination_reason.is_some() && !benign,
        s => s.is_finished() && !benign,
    }
}

/// An out-of-date replica still to be replaced: a job of an older deployment that is not
/// finished and was not scaled down (dstack's `has_out_of_date_replicas`).
fn rolls(jobs: &[&JobView], deployment_num: i64, bumped: &BTreeSet<Uuid>) -> bool {
    jobs.iter().any(|j| {
        j.deployment_num < deployment_num
            && !bumped.contains(&j.id)
            && !j.status.is_finished()
            && j.termination_reason != Some(JobTerminationReason::ScaledDown)
    })
}

/// Whether `group` of the service is in a rolling deployment (it has out-of-date replicas).
pub fn in_rollout(run: &RunSnapshot, group: &str, deployment_num: i64) -> bool {
    by_replica(run)
        .values()
        .any(|jobs| jobs[0].replica_group == group && rolls(jobs, deployment_num, &BTreeSet::new()))
}

/// The up-to-date replicas of `group` whose new version failed for good while the group still
/// rolls: the deployment is stalled on them, and they neither fail the run nor are replaced.
pub fn stalled(run: &RunSnapshot, group: &str, deployment_num: i64) -> Vec<i64> {
    if !in_rollout(run, group, deployment_num) {
        return Vec::new();
    }
    by_replica(run)
        .into_iter()
        .filter(|(_, jobs)| {
            jobs[0].replica_group == group
                && jobs.iter().all(|j| j.deployment_num >= deployment_num)
                && jobs.iter().any(|j| is_failure(j))
        })
        .map(|(replica, _)| replica)
        .collect()
}

/// One pass of the rolling deployment of the service `svc` with the desired counts of this
/// pass; new replica numbers start at `next_replica_num`.
pub fn step(
    run: &RunSnapshot,
    svc: &ServiceScaling,
    desired: &BTreeMap<String, i64>,
    next_replica_num: i64,
    drain: Drain,
    now: Timestamp,
) -> RollingPlan {
    let d = svc.deployment_num;
    let mut plan = RollingPlan::default();
    let replicas = by_replica(run);
    // 1. In-place bumps.
    for jobs in replicas.values() {
        if jobs.iter().all(|j| j.status.is_finished()) || jobs.iter().all(|j| j.deployment_num >= d) {
            continue;
        }
        if jobs.iter().all(|j| j.spec_current) {
            plan.bump.extend(jobs.iter().filter(|j| j.deployment_num < d).map(|j| j.id));
        }
    }
    let bumped: BTreeSet<Uuid> = plan.bump.iter().copied().collect();
    let mut next = next_replica_num;
    let mut stopping: BTreeSet<Uuid> = BTreeSet::new();
    // 2. Groups in a rolling deployment.
    for group in &svc.groups {
        let in_group: Vec<&ReplicaJobs<'_>> =
            replicas.values().filter(|jobs| jobs[0].replica_group == group.name).collect();
        if !in_group.iter().any(|jobs| rolls(jobs, d, &bumped)) {
            continue;
        }
        let group_desired = desired.get(&group.name).copied().unwrap_or(0);
        let group_max = group_desired + MAX_SURGE;
        let non_terminated =
            in_group.iter().filter(|jobs| jobs.iter().any(|j| !j.status.is_finished())).count();
        let receiving = |jobs: &ReplicaJobs<'_>| jobs[0].serving && jobs[0].draining_since.is_none();
        let not_receiving_out_of_date = in_group
            .iter()
            .filter(|jobs| {
                jobs.iter().any(|j| j.deployment_num < d)
                    && jobs.iter().any(|j| j.status != JobStatus::Terminating && !j.status.is_finished())
                    && !receiving(jobs)
            })
            .count() as i64;
        let receiving_non_terminating = in_group
            .iter()
            .filter(|jobs| receiving(jobs) && jobs.iter().all(|j| j.status != JobStatus::Terminating))
            .count() as i64;
        let is_stalled = in_group
            .iter()
            .any(|jobs| jobs.iter().all(|j| j.deployment_num >= d) && jobs.iter().any(|j| is_failure(j)));
        let non_terminated = non_terminated as i64;
        if !is_stalled && non_terminated < group_max {
            for _ in non_terminated..group_max {
                plan.submit.push(NewReplica { replica_num: next, group: group.name.clone() });
                next += 1;
            }
        }
        let n_stop = not_receiving_out_of_date + (receiving_non_terminating - group_desired).max(0);
        if n_stop > 0 {
            let (active, _) = replica_lists(run, &group.name, d);
            for replica in active.iter().rev().take(usize::try_from(n_stop).unwrap_or(0)) {
                stop_replica(&replica.jobs, &mut plan, &mut stopping);
            }
        }
    }
    // 3. Groups removed from the configuration.
    for jobs in replicas.values() {
        if svc.groups.iter().any(|g| g.name == jobs[0].replica_group) {
            continue;
        }
        stop_replica(jobs, &mut plan, &mut stopping);
    }
    // Every drain ends with a stop, whichever pass started it.
    for job in latest_submissions(run) {
        let Some(since) = job.draining_since else { continue };
        if job.status.is_finished() || job.status == JobStatus::Terminating || stopping.contains(&job.id) {
            continue;
        }
        let waited = now.duration_since(since);
        if (waited >= drain.grace && job.in_flight <= 0) || waited >= drain.timeout {
            stopping.insert(job.id);
            plan.terminate.push(TerminateJob {
                id: job.id,
                reason: JobTerminationReason::ScaledDown,
                message: None,
                graceful: job.status == JobStatus::Running,
            });
        }
    }
    plan
}

/// Stops a replica: a serving one is drained first (its drain ends in [`step`]'s last loop),
/// any other at once.
fn stop_replica(jobs: &[&JobView], plan: &mut RollingPlan, stopping: &mut BTreeSet<Uuid>) {
    let live: Vec<&&JobView> =
        jobs.iter().filter(|j| !j.status.is_finished() && j.status != JobStatus::Terminating).collect();
    if jobs.first().is_some_and(|j| j.serving || j.draining_since.is_some()) {
        for job in live {
            if job.draining_since.is_none() && !plan.drain.contains(&job.id) {
                plan.drain.push(job.id);
            }
        }
        return;
    }
    for job in live {
        if stopping.insert(job.id) {
            plan.terminate.push(TerminateJob {
                id: job.id,
                reason: JobTerminationReason::ScaledDown,
                message: None,
                graceful: job.status == JobStatus::Running,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use dstack_api::runs::RunStatus;
    use dstack_model::common::Range;
    use proptest::prelude::*;

    use super::*;
    use crate::autoscale::GroupScaling;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    const DRAIN: Drain =
        Drain { grace: SignedDuration::from_secs(2), timeout: SignedDuration::from_secs(60) };

    /// Replica `r` (one job) of deployment `dep` in group "0".
    fn job(r: i64, dep: i64, status: JobStatus) -> JobView {
        JobView {
            id: Uuid::from_u128(r as u128 + 1),
            replica_num: r,
            job_num: 0,
            submission_num: 0,
            status,
            termination_reason: None,
            provisioned: status != JobStatus::Submitted,
            submitted_at: t(0),
            last_processed_at: t(0),
            replica_group: "0".to_owned(),
            deployment_num: dep,
            serving: status == JobStatus::Running,
            spec_current: false,
            draining_since: None,
            in_flight: 0,
        }
    }

    fn not_ready(mut j: JobView) -> JobView {
        j.serving = false;
        j
    }

    fn run(jobs: Vec<JobView>, desired: i64, deployment_num: i64) -> (RunSnapshot, ServiceScaling) {
        let svc = ServiceScaling {
            groups: vec![GroupScaling {
                name: "0".to_owned(),
                replicas: Range { min: Some(desired), max: Some(desired) },
                scaling: None,
            }],
            desired: BTreeMap::new(),
            stats: None,
            deployment_num,
            drain_timeout: DRAIN.timeout,
        };
        let snap = RunSnapshot {
            status: RunStatus::Running,
            termination_reason: None,
            submitted_at: t(0),
            resubmission_attempt: 0,
            retry: None,
            schedule: None,
            next_triggered_at: None,
            stop_on_master_done: false,
            jobs,
            service: Some(svc.clone()),
        };
        (snap, svc)
    }

    fn pass(jobs: Vec<JobView>, desired: i64, now: i64) -> RollingPlan {
        let (snap, svc) = run(jobs, desired, 1);
        let next = snap.jobs.iter().map(|j| j.replica_num + 1).max().unwrap_or(0);
        step(&snap, &svc, &[("0".to_owned(), desired)].into(), next, DRAIN, t(now))
    }

    fn id(r: i64) -> Uuid {
        Uuid::from_u128(r as u128 + 1)
    }

    fn stopped(plan: &RollingPlan) -> Vec<Uuid> {
        plan.terminate.iter().map(|t| t.id).collect()
    }

    #[test]
    fn a_rollout_pass_by_pass() {
        use JobStatus::*;
        let submit = |r: i64| vec![NewReplica { replica_num: r, group: "0".to_owned() }];
        // (jobs, now, submitted, drained, stopped)
        type Case = (Vec<JobView>, i64, Vec<NewReplica>, Vec<Uuid>, Vec<Uuid>);
        let cases: Vec<Case> = vec![
            // The update: one surge replica, the old one keeps serving.
            (vec![job(0, 0, Running)], 0, submit(1), vec![], vec![]),
            // The new one provisions or runs without being ready: nothing more.
            (vec![job(0, 0, Running), job(1, 1, Provisioning)], 0, vec![], vec![], vec![]),
            (vec![job(0, 0, Running), not_ready(job(1, 1, Running))], 0, vec![], vec![], vec![]),
            // Ready: the old one is drained, not stopped.
            (vec![job(0, 0, Running), job(1, 1, Running)], 0, vec![], vec![id(0)], vec![]),
            // Draining with requests in flight, or within the grace: it waits.
            (
                vec![
                    JobView {
                        draining_since: Some(t(0)),
                        serving: false,
                        in_flight: 2,
                        ..job(0, 0, Running)
                    },
                    job(1, 1, Running),
                ],
                10,
                vec![],
                vec![],
                vec![],
            ),
            (
                vec![
                    JobView { draining_since: Some(t(0)), serving: false, ..job(0, 0, Running) },
                    job(1, 1, Running),
                ],
                1,
                vec![],
                vec![],
                vec![],
            ),
            // Drained: stopped.
            (
                vec![
                    JobView { draining_since: Some(t(0)), serving: false, ..job(0, 0, Running) },
                    job(1, 1, Running),
                ],
                2,
                vec![],
                vec![],
                vec![id(0)],
            ),
            // Requests still in flight at the timeout: stopped anyway.
            (
                vec![
                    JobView {
                        draining_since: Some(t(0)),
                        serving: false,
                        in_flight: 1,
                        ..job(0, 0, Running)
                    },
                    job(1, 1, Running),
                ],
                60,
                vec![],
                vec![],
                vec![id(0)],
            ),
            // An old replica that serves nothing is stopped at once.
            (vec![not_ready(job(0, 0, Running)), job(1, 1, Running)], 0, vec![], vec![], vec![id(0)]),
            (vec![job(0, 0, Provisioning)], 0, submit(1), vec![], vec![id(0)]),
            // Stopping: no new surge while it is not finished.
            (
                vec![
                    JobView {
                        termination_reason: Some(JobTerminationReason::ScaledDown),
                        ..job(0, 0, Terminating)
                    },
                    job(1, 1, Running),
                ],
                0,
                vec![],
                vec![],
                vec![],
            ),
            // The new version failed: stalled, the old one keeps serving.
            (
                vec![
                    job(0, 0, Running),
                    JobView {
                        termination_reason: Some(JobTerminationReason::ContainerExitedWithError),
                        ..job(1, 1, Failed)
                    },
                ],
                0,
                vec![],
                vec![],
                vec![],
            ),
        ];
        for (i, (jobs, now, submitted, drained, stops)) in cases.into_iter().enumerate() {
            let plan = pass(jobs, 1, now);
            assert_eq!(plan.submit, submitted, "case {i}");
            assert_eq!(plan.drain, drained, "case {i}");
            assert_eq!(stopped(&plan), stops, "case {i}");
            assert!(plan.bump.is_empty(), "case {i}");
        }
    }

    #[test]
    fn unchanged_job_specs_are_bumped_in_place() {
        let current = JobView { spec_current: true, ..job(0, 0, JobStatus::Running) };
        let plan = pass(vec![current.clone()], 1, 0);
        assert_eq!(plan, RollingPlan { bump: vec![id(0)], ..RollingPlan::default() });
        // A replica with a changed and an unchanged job rolls as a whole.
        let other = JobView { id: Uuid::from_u128(99), job_num: 1, ..job(0, 0, JobStatus::Running) };
        let plan = pass(vec![current, other], 1, 0);
        assert!(plan.bump.is_empty());
        assert_eq!(plan.submit.len(), 1);
    }

    #[test]
    fn two_replicas_roll_one_at_a_time() {
        use JobStatus::*;
        let plan = pass(vec![job(0, 0, Running), job(1, 0, Running)], 2, 0);
        assert_eq!(plan.submit, vec![NewReplica { replica_num: 2, group: "0".to_owned() }]);
        assert!(plan.drain.is_empty() && plan.terminate.is_empty());
        // The surge serves: the old replica with the highest number drains.
        let plan = pass(vec![job(0, 0, Running), job(1, 0, Running), job(2, 1, Running)], 2, 0);
        assert_eq!(plan.drain, vec![id(1)]);
        assert!(plan.submit.is_empty());
    }

    #[test]
    fn removed_groups_are_stopped() {
        let mut old = job(0, 0, JobStatus::Running);
        old.replica_group = "gone".to_owned();
        let mut idle = job(1, 0, JobStatus::Provisioning);
        idle.replica_group = "gone".to_owned();
        let plan = pass(vec![old, idle, job(2, 1, JobStatus::Running)], 1, 0);
        assert_eq!(plan.drain, vec![id(0)]);
        assert_eq!(stopped(&plan), vec![id(1)]);
    }

    #[test]
    fn stalled_groups_name_their_failed_replicas() {
        let failed = JobView {
            termination_reason: Some(JobTerminationReason::ContainerExitedWithError),
            ..job(1, 1, JobStatus::Failed)
        };
        let (snap, _) = run(vec![job(0, 0, JobStatus::Running), failed.clone()], 1, 1);
        assert_eq!(stalled(&snap, "0", 1), vec![1]);
        // Already while the failure is `terminating` (the run must not fail in between).
        let ending = JobView { status: JobStatus::Terminating, ..failed.clone() };
        let (snap, _) = run(vec![job(0, 0, JobStatus::Running), ending], 1, 1);
        assert_eq!(stalled(&snap, "0", 1), vec![1]);
        assert_eq!(crate::run::decide(&snap, t(0)).status, RunStatus::Running);
        // With no old replica left, nothing stalls: the failure is the run's.
        let (snap, _) = run(vec![failed], 1, 1);
        assert!(stalled(&snap, "0", 1).is_empty());
    }

    fn status() -> impl Strategy<Value = JobStatus> {
        prop_oneof![
            Just(JobStatus::Submitted),
            Just(JobStatus::Provisioning),
            Just(JobStatus::Running),
            Just(JobStatus::Terminating),
            Just(JobStatus::Terminated),
            Just(JobStatus::Failed),
        ]
    }

    prop_compose! {
        fn replica(r: i64)(
            status in status(),
            old in any::<bool>(),
            ready in any::<bool>(),
            draining in prop::option::of(0i64..5),
            in_flight in 0i64..3,
        ) -> JobView {
            let mut j = job(r, if old { 0 } else { 1 }, status);
            j.serving = status == JobStatus::Running && ready && draining.is_none();
            j.draining_since = draining.filter(|_| status == JobStatus::Running).map(t);
            j.in_flight = in_flight;
            j.termination_reason = match status {
                JobStatus::Terminating | JobStatus::Terminated => Some(JobTerminationReason::ScaledDown),
                JobStatus::Failed => Some(JobTerminationReason::ContainerExitedWithError),
                _ => None,
            };
            j
        }
    }

    fn replicas() -> impl Strategy<Value = Vec<JobView>> {
        (0usize..5).prop_flat_map(|n| (0..n as i64).map(replica).collect::<Vec<_>>())
    }

    proptest! {
        #[test]
        fn rollout_invariants(jobs in replicas(), desired in 1i64..4, now in 0i64..100) {
            let alive_before = jobs.iter().filter(|j| !j.status.is_finished()).count() as i64;
            let serving_before = jobs.iter().filter(|j| j.serving).count() as i64;
            let plan = pass(jobs.clone(), desired, now);
            // Never more than desired + 1 replicas alive, unless there were already.
            let alive_after = alive_before + plan.submit.len() as i64;
            prop_assert!(alive_after <= (desired + MAX_SURGE).max(alive_before));
            if !plan.submit.is_empty() {
                prop_assert!(alive_after <= desired + MAX_SURGE);
            }
            // A serving replica is never stopped outright: it is drained first.
            for stop in &plan.terminate {
                let j = jobs.iter().find(|j| j.id == stop.id).unwrap();
                prop_assert!(!j.serving, "{j:?} stopped while serving");
            }
            // Serving replicas are taken out only down to the desired count, so the last one
            // serving keeps serving until another serves.
            let serving_after = jobs
                .iter()
                .filter(|j| j.serving && !plan.drain.contains(&j.id))
                .count() as i64;
            prop_assert!(serving_after >= serving_before.min(desired));
            // Nothing is drained or stopped twice, and nothing finished is touched.
            let mut ids: Vec<Uuid> = plan.drain.iter().chain(stopped(&plan).iter()).copied().collect();
            let n = ids.len();
            ids.sort();
            ids.dedup();
            prop_assert_eq!(ids.len(), n);
            for id in &ids {
                let j = jobs.iter().find(|j| j.id == *id).unwrap();
                prop_assert!(!j.status.is_finished() && j.status != JobStatus::Terminating);
            }
        }
    }

    /// A replica in the simulated world of [`whole_rollouts_keep_serving`].
    #[derive(Debug, Clone)]
    struct Sim {
        num: i64,
        dep: i64,
        status: JobStatus,
        reason: Option<JobTerminationReason>,
        ready: bool,
        draining: Option<Timestamp>,
        in_flight: i64,
    }

    impl Sim {
        fn serving(&self) -> bool {
            self.status == JobStatus::Running && self.ready && self.draining.is_none()
        }

        fn view(&self) -> JobView {
            JobView {
                status: self.status,
                termination_reason: self.reason,
                deployment_num: self.dep,
                serving: self.serving(),
                draining_since: self.draining,
                in_flight: self.in_flight,
                ..job(self.num, self.dep, self.status)
            }
        }
    }

    /// Runs the whole run reconciler (scaling, rolling, failures) against a world where
    /// replicas start, get ready, fail (a bad version never gets ready) and finish requests in
    /// the order `events` says; returns the world after `events` and a settling phase.
    fn simulate(desired: i64, bad: bool, events: &[(usize, u8)]) -> Result<Vec<Sim>, TestCaseError> {
        let d = 1;
        let mut world: Vec<Sim> = (0..desired)
            .map(|n| Sim {
                num: n,
                dep: 0,
                status: JobStatus::Running,
                reason: None,
                ready: true,
                draining: None,
                in_flight: 0,
            })
            .collect();
        let settle = (0..400).map(|i| (i, if i % 7 == 6 { 1 } else { 0 }));
        for (tick, (sel, kind)) in events.iter().copied().chain(settle).enumerate() {
            let now = t(tick as i64);
            let (snap, _) = run(world.iter().map(Sim::view).collect(), desired, d);
            let plan = crate::run::decide(&snap, now);
            prop_assert!(
                !matches!(plan.status, RunStatus::Terminating | RunStatus::Failed),
                "the run ends: {plan:?} {world:?}"
            );
            for r in &plan.scale_up {
                world.push(Sim {
                    num: r.replica_num,
                    dep: d,
                    status: JobStatus::Submitted,
                    reason: None,
                    ready: false,
                    draining: None,
                    in_flight: 0,
                });
            }
            for stop in &plan.terminate_jobs {
                let sim = world.iter_mut().find(|s| id(s.num) == stop.id).unwrap();
                prop_assert!(!sim.serving(), "a serving replica stopped: {sim:?}");
                sim.status = JobStatus::Terminating;
                sim.reason = Some(stop.reason);
            }
            for drained in &plan.drain_jobs {
                world.iter_mut().find(|s| id(s.num) == *drained).unwrap().draining = Some(now);
            }
            for bumped in &plan.bump_deployment {
                world.iter_mut().find(|s| id(s.num) == *bumped).unwrap().dep = d;
            }
            let alive = world.iter().filter(|s| !s.status.is_finished()).count() as i64;
            prop_assert!(alive <= desired + MAX_SURGE, "{alive} alive: {world:?}");
            prop_assert!(world.iter().any(Sim::serving), "nothing serves: {world:?}");
            // The world moves.
            let n = world.len();
            let sim = &mut world[sel % n];
            match kind % 4 {
                0 => match sim.status {
                    JobStatus::Submitted => sim.status = JobStatus::Provisioning,
                    JobStatus::Provisioning => sim.status = JobStatus::Running,
                    JobStatus::Running if !sim.ready && (!bad || sim.dep != d) => sim.ready = true,
                    JobStatus::Terminating if sim.reason == Some(JobTerminationReason::ScaledDown) => {
                        sim.status = JobStatus::Terminated;
                    }
                    JobStatus::Terminating => sim.status = JobStatus::Failed,
                    _ => {}
                },
                1 if sim.draining.is_some() => sim.in_flight = (sim.in_flight - 1).max(0),
                1 if sim.serving() => sim.in_flight += 1,
                // A failure shows as `terminating` with its reason first, then `failed`.
                2 if bad && sim.dep == d && !sim.ready && !sim.status.is_finished() => {
                    sim.status = JobStatus::Terminating;
                    sim.reason = Some(JobTerminationReason::ContainerExitedWithError);
                }
                _ => {}
            }
        }
        Ok(world)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whole rollouts: never more than desired + 1 replicas alive, something always
        /// serves, nothing serving is stopped; a good version ends with every replica of the
        /// new deployment serving, a bad one with the old replicas serving and the run alive.
        #[test]
        fn whole_rollouts_keep_serving(
            desired in 1i64..4,
            bad in any::<bool>(),
            events in prop::collection::vec((0usize..8, 0u8..4), 0..120),
        ) {
            let world = simulate(desired, bad, &events)?;
            let live: Vec<&Sim> = world.iter().filter(|s| !s.status.is_finished()).collect();
            let serving: Vec<&Sim> = live.iter().copied().filter(|s| s.serving()).collect();
            if bad {
                prop_assert!(serving.iter().all(|s| s.dep == 0), "{world:?}");
                prop_assert_eq!(serving.len() as i64, desired, "{:?}", world);
            } else {
                prop_assert!(live.iter().all(|s| s.dep == 1 && s.serving()), "{:?}", world);
                prop_assert_eq!(serving.len() as i64, desired, "{:?}", world);
            }
        }
    }
}
