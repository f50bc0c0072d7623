//! Service autoscaling: how many replicas each replica group wants, and which replicas are
//! submitted or stopped to get there.
//!
//! [`desired_count`] is dstack's scalers (`server/services/services/autoscalers.py`): with no
//! `scaling`, the `ManualScaler` only keeps the count inside `replicas`; with `scaling`, the
//! `RPSAutoscaler` wants `ceil(rps / target)` replicas, clamped to `replicas`, and moves
//! there at once from zero replicas, otherwise only once `scale_up_delay` (up) or
//! `scale_down_delay` (down) has passed since the last scaling event.
//! Without stats nothing changes, as in dstack.
//!
//! Our extension of `scaling.metric` (see `dstack_model::service::ScalingMetric`) uses the same
//! delays and clamping with another wanted count: `inflight` wants `ceil(in-flight / target)`
//! (the window's average number of requests in progress at the proxy), `p95_latency` and
//! `prometheus` are proportional (`ceil(current × value / target)`, at least one replica while
//! there is a value).
//!
//! [`scale`] is dstack's `_build_service_scaling_maps` over `build_replica_lists`: per group,
//! replicas are active (no job terminating or finished) or inactive; scaling up submits
//! inactive replicas again first (their next submission), then new replica numbers; scaling
//! down stops the least important active replicas (out of date first, then submitted,
//! provisioning, running without traffic, serving; the highest replica number first) with
//! `scaled_down`; a serving one is drained first, as a rolling deployment drains (ours). A group with out-of-date replicas (a rolling deployment) is left alone.

use std::collections::BTreeMap;

use dstack_api::runs::{JobStatus, JobTerminationReason};
use dstack_model::common::Range;
use dstack_model::service::{ScalingMetric, ScalingSpec};
use jiff::Timestamp;

use crate::run::{JobView, RunSnapshot, TerminateJob, latest_submissions};

/// dstack's `DEFAULT_SCALING_WINDOW`, seconds.
pub const DEFAULT_WINDOW: i64 = 60;

/// A service's load over one window, as its proxy measured it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowStats {
    /// Requests that arrived in the window.
    pub requests: u64,
    /// The average number of requests in progress over the window.
    pub avg_in_flight: f64,
    /// The 95th percentile of the request durations in the window, seconds; `None` when no
    /// request finished.
    pub p95_latency: Option<f64>,
}

/// What the autoscaler knows of a service's load.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceStats {
    /// By window length in seconds (30, 60, 300).
    pub windows: BTreeMap<i64, WindowStats>,
    /// Prometheus gauges scraped from the replicas, by replica group and metric name: the
    /// average over the group's replicas that answered.
    pub gauges: BTreeMap<(String, String), f64>,
}

/// One replica group as the autoscaler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupScaling {
    pub name: String,
    pub replicas: Range<i64>,
    pub scaling: Option<ScalingSpec>,
}

/// What scaling a service needs besides its jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceScaling {
    pub groups: Vec<GroupScaling>,
    /// The desired counts of the last pass (dstack's `runs.desired_replica_counts`); a group
    /// missing starts at its `replicas.min`.
    pub desired: BTreeMap<String, i64>,
    /// `None`: no stats (nothing changes under `scaling`).
    pub stats: Option<ServiceStats>,
    pub deployment_num: i64,
    /// The longest a replica replaced by a rolling deployment drains ([`crate::rolling`]).
    pub drain_timeout: jiff::SignedDuration,
}

/// A replica to submit: a new one, or the next submission of an inactive one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReplica {
    pub replica_num: i64,
    pub group: String,
}

/// What one pass does to a service's replicas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScalePlan {
    /// The desired count of every group after this pass.
    pub desired: BTreeMap<String, i64>,
    pub submit: Vec<NewReplica>,
    /// Jobs stopped with `scaled_down`.
    pub terminate: Vec<TerminateJob>,
    /// Serving jobs taken out of the proxy's routing, stopped with `scaled_down` once drained.
    pub drain: Vec<uuid::Uuid>,
}

/// The replica count a group wants now, from `current` (the last desired count).
pub fn desired_count(
    group: &GroupScaling,
    current: i64,
    stats: Option<&ServiceStats>,
    last_scaled_at: Option<Timestamp>,
    now: Timestamp,
) -> i64 {
    let min = group.replicas.min.unwrap_or(0);
    let max = group.replicas.max.unwrap_or(min);
    let clamp = |n: i64| n.max(min).min(max);
    let Some(scaling) = &group.scaling else { return clamp(current) };
    let Some(stats) = stats else { return current };
    let window = scaling.window.map_or(DEFAULT_WINDOW, |w| w.0);
    let load = stats.windows.get(&window).cloned().unwrap_or_default();
    // Proportional metrics scale the replicas there are (at least one).
    let proportional = |value: f64| ceil(current.max(1) as f64 * value / scaling.target);
    let wanted = match &scaling.metric {
        ScalingMetric::Rps => {
            let rps = load.requests as f64 / window as f64;
            ceil(rps / scaling.target)
        }
        ScalingMetric::Inflight => ceil(load.avg_in_flight / scaling.target),
        ScalingMetric::P95Latency => match load.p95_latency {
            Some(p95) => proportional(p95),
            None => Some(0),
        },
        ScalingMetric::Prometheus => {
            let name = scaling.prometheus_metric.clone().unwrap_or_default();
            match stats.gauges.get(&(group.name.clone(), name)) {
                Some(value) => proportional(*value),
                // No replica answered (or none runs): only requests can wake the group.
                None if current == 0 => Some(0),
                None => return current,
            }
        }
    };
    let Some(mut wanted) = wanted else { return current };
    if current == 0 && load.requests > 0 {
        // The first request wakes a group scaled to zero, whatever the metric (requests count
        // when they arrive; the average in flight would still hold the last ones after the
        // window has emptied of them, and wake the group again as it scales to zero).
        wanted = wanted.max(1);
    }
    let new = clamp(wanted);
    let since =
        |delay: i64| last_scaled_at.is_some_and(|at| now.duration_since(at).as_secs_f64() < delay as f64);
    if new > current {
        if current == 0 || !since(scaling.scale_up_delay.0) {
            return new;
        }
        return current;
    }
    if new < current && since(scaling.scale_down_delay.0) {
        return current;
    }
    new
}

/// `ceil(x)` as a count (`None` for NaN).
fn ceil(x: f64) -> Option<i64> {
    if x.is_nan() {
        return None;
    }
    Some(x.ceil().clamp(0.0, i64::MAX as f64) as i64)
}

/// One replica: its number and the latest submission of each of its jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct Replica<'a> {
    pub replica_num: i64,
    /// 0 submitted, 1 provisioning, 2 running without traffic, 3 serving.
    pub importance: u8,
    pub out_of_date: bool,
    pub jobs: Vec<&'a JobView>,
}

/// dstack's `build_replica_lists` for `group`: the active replicas, most important first,
/// and the inactive ones (a job terminating or finished), by replica number.
pub fn replica_lists<'a>(
    run: &'a RunSnapshot,
    group: &str,
    deployment_num: i64,
) -> (Vec<Replica<'a>>, Vec<Replica<'a>>) {
    let mut by_replica: BTreeMap<i64, Vec<&JobView>> = BTreeMap::new();
    for job in latest_submissions(run) {
        by_replica.entry(job.replica_num).or_default().push(job);
    }
    let mut active = Vec::new();
    let mut inactive = Vec::new();
    for (replica_num, mut jobs) in by_replica {
        jobs.sort_by_key(|j| j.job_num);
        if jobs[0].replica_group != group {
            continue;
        }
        let out_of_date = jobs[0].deployment_num < deployment_num;
        let has = |f: &dyn Fn(JobStatus) -> bool| jobs.iter().any(|j| f(j.status));
        let mut replica = Replica { replica_num, importance: 0, out_of_date, jobs: Vec::new() };
        if has(&|s| s == JobStatus::Terminating || s.is_finished()) {
            replica.jobs = jobs;
            inactive.push(replica);
            continue;
        }
        replica.importance = if has(&|s| s == JobStatus::Submitted) {
            0
        } else if has(&|s| matches!(s, JobStatus::Provisioning | JobStatus::Pulling)) {
            1
        } else if !jobs[0].serving {
            2
        } else {
            3
        };
        replica.jobs = jobs;
        active.push(replica);
    }
    active.sort_by_key(|r| (r.out_of_date, std::cmp::Reverse(r.importance), r.replica_num));
    (active, inactive)
}

/// dstack's `_compute_last_scaled_at`: the latest of every active replica's first
/// submission time and every inactive replica's last processing time.
pub fn last_scaled_at(run: &RunSnapshot, groups: &[GroupScaling], deployment_num: i64) -> Option<Timestamp> {
    let mut latest: Option<Timestamp> = None;
    for group in groups {
        let (active, inactive) = replica_lists(run, &group.name, deployment_num);
        let times = active
            .iter()
            .filter_map(|r| r.jobs.iter().map(|j| j.submitted_at).min())
            .chain(inactive.iter().filter_map(|r| r.jobs.iter().map(|j| j.last_processed_at).max()));
        latest = times.fold(latest, |acc, t| Some(acc.map_or(t, |a| a.max(t))));
    }
    latest
}

/// One scaling pass over a service: the desired count of each group and the replicas that
/// are submitted or stopped for it. `last_scaled_at` is `None` for a pending run (dstack's
/// pending processing scales without delays).
pub fn scale(run: &RunSnapshot, svc: &ServiceScaling, now: Timestamp, with_delays: bool) -> ScalePlan {
    let last = if with_delays { last_scaled_at(run, &svc.groups, svc.deployment_num) } else { None };
    let mut plan = ScalePlan::default();
    let mut next_replica_num = run.jobs.iter().map(|j| j.replica_num + 1).max().unwrap_or(0);
    for group in &svc.groups {
        let current = svc.desired.get(&group.name).copied().unwrap_or(group.replicas.min.unwrap_or(0));
        let desired = desired_count(group, current, svc.stats.as_ref(), last, now);
        plan.desired.insert(group.name.clone(), desired);
        let (active, inactive) = replica_lists(run, &group.name, svc.deployment_num);
        let rolling = active.iter().chain(&inactive).any(|r| {
            r.out_of_date
                && r.jobs.iter().any(|j| {
                    !j.status.is_finished() && j.termination_reason != Some(JobTerminationReason::ScaledDown)
                })
        });
        if rolling {
            continue;
        }
        let diff = desired - active.len() as i64;
        if diff > 0 {
            let mut left = diff;
            for replica in inactive.iter().take(usize::try_from(diff).unwrap_or(0)) {
                plan.submit.push(NewReplica { replica_num: replica.replica_num, group: group.name.clone() });
                left -= 1;
            }
            for _ in 0..left {
                plan.submit.push(NewReplica { replica_num: next_replica_num, group: group.name.clone() });
                next_replica_num += 1;
            }
        } else if diff < 0 {
            let n = usize::try_from(-diff).unwrap_or(0);
            for replica in active.iter().rev().take(n) {
                // A serving replica is drained first (ours; [`crate::rolling`] stops it once
                // its requests are done), one already draining is left to its drain.
                if replica.jobs.iter().any(|j| j.draining_since.is_some()) {
                    continue;
                }
                let serving = replica.jobs.first().is_some_and(|j| j.serving);
                for job in &replica.jobs {
                    if job.status.is_finished() || job.status == JobStatus::Terminating {
                        continue;
                    }
                    if serving {
                        plan.drain.push(job.id);
                        continue;
                    }
                    plan.terminate.push(TerminateJob {
                        id: job.id,
                        reason: JobTerminationReason::ScaledDown,
                        message: None,
                        graceful: job.status == JobStatus::Running,
                    });
                }
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use dstack_api::runs::RunStatus;
    use dstack_model::common::Duration;
    use uuid::Uuid;

    use super::*;
    use crate::run::decide;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn rps(target: f64, window: Option<i64>, up: i64, down: i64) -> Option<ScalingSpec> {
        Some(ScalingSpec {
            metric: ScalingMetric::Rps,
            target,
            window: window.map(Duration),
            scale_up_delay: Duration(up),
            scale_down_delay: Duration(down),
            prometheus_metric: None,
        })
    }

    fn group(min: i64, max: i64, scaling: Option<ScalingSpec>) -> GroupScaling {
        GroupScaling { name: "0".to_owned(), replicas: Range { min: Some(min), max: Some(max) }, scaling }
    }

    /// `requests` in each of the three windows.
    fn load(requests: u64) -> ServiceStats {
        let w = WindowStats { requests, avg_in_flight: 0.0, p95_latency: None };
        ServiceStats { windows: [30, 60, 300].map(|s| (s, w.clone())).into(), gauges: BTreeMap::new() }
    }

    #[test]
    fn without_scaling_the_count_stays_inside_replicas() {
        // dstack's ManualScaler: stats and time do not matter.
        let g = group(1, 3, None);
        for (current, want) in [(0, 1), (1, 1), (2, 2), (3, 3), (7, 3)] {
            assert_eq!(desired_count(&g, current, Some(&load(10_000)), Some(t(0)), t(1)), want);
            assert_eq!(desired_count(&g, current, None, None, t(1)), want);
        }
    }

    #[test]
    fn rps_wants_ceil_of_rps_over_target_clamped_to_replicas() {
        let g = group(1, 4, rps(1.0, None, 0, 0));
        // The default window is 60 s: 150 requests are 2.5 rps.
        for (requests, want) in [(0, 1), (60, 1), (61, 2), (150, 3), (240, 4), (100_000, 4)] {
            assert_eq!(desired_count(&g, 1, Some(&load(requests)), None, t(0)), want, "{requests}");
        }
        // No stats at all: dstack keeps the count (without a gateway it never scales).
        assert_eq!(desired_count(&g, 2, None, None, t(0)), 2);
        // The window is the spec's: 60 requests in 30 s are 2 rps.
        let mut stats = load(0);
        stats.windows.insert(30, WindowStats { requests: 60, ..WindowStats::default() });
        assert_eq!(desired_count(&group(1, 4, rps(1.0, Some(30), 0, 0)), 1, Some(&stats), None, t(0)), 2);
        assert_eq!(desired_count(&group(1, 4, rps(1.0, Some(300), 0, 0)), 1, Some(&stats), None, t(0)), 1);
        // Fractional targets as dstack computes them (0.7 / 0.1 is just under 7).
        let g = group(0, 10, rps(0.1, None, 0, 0));
        assert_eq!(desired_count(&g, 1, Some(&load(42)), None, t(0)), 7);
    }

    #[test]
    fn rps_waits_out_the_delays_except_from_zero() {
        let g = group(0, 5, rps(1.0, None, 300, 600));
        let busy = load(60 * 3);
        let idle = load(0);
        // Up: not before scale_up_delay since the last scaling, unless there are no replicas.
        assert_eq!(desired_count(&g, 1, Some(&busy), Some(t(0)), t(299)), 1);
        assert_eq!(desired_count(&g, 1, Some(&busy), Some(t(0)), t(300)), 3);
        assert_eq!(desired_count(&g, 0, Some(&busy), Some(t(0)), t(1)), 3);
        assert_eq!(desired_count(&g, 1, Some(&busy), None, t(1)), 3);
        // Down: not before scale_down_delay.
        assert_eq!(desired_count(&g, 3, Some(&idle), Some(t(0)), t(599)), 3);
        assert_eq!(desired_count(&g, 3, Some(&idle), Some(t(0)), t(600)), 0);
        assert_eq!(desired_count(&g, 3, Some(&idle), None, t(0)), 0);
        // Unchanged is unchanged, delays or not.
        assert_eq!(desired_count(&g, 3, Some(&busy), Some(t(0)), t(1)), 3);
    }

    fn metric(metric: ScalingMetric, target: f64, name: Option<&str>) -> Option<ScalingSpec> {
        let mut spec = rps(target, None, 0, 0)?;
        spec.metric = metric;
        spec.prometheus_metric = name.map(str::to_owned);
        Some(spec)
    }

    #[test]
    fn extension_metrics_use_the_same_clamping_and_wake_from_zero() {
        let mut stats = load(0);
        stats.windows.get_mut(&60).unwrap().avg_in_flight = 2.5;
        // inflight: ceil(average in progress / target), as rps.
        let g = group(1, 8, metric(ScalingMetric::Inflight, 1.0, None));
        assert_eq!(desired_count(&g, 1, Some(&stats), None, t(0)), 3);
        assert_eq!(desired_count(&g, 5, Some(&load(0)), None, t(0)), 1);
        // p95_latency: proportional to the replicas there are; no finished request: min.
        let g = group(1, 8, metric(ScalingMetric::P95Latency, 0.5, None));
        stats.windows.get_mut(&60).unwrap().p95_latency = Some(1.2);
        assert_eq!(desired_count(&g, 2, Some(&stats), None, t(0)), 5);
        assert_eq!(desired_count(&g, 2, Some(&load(0)), None, t(0)), 1);
        // prometheus: the group's average gauge, proportional; no answer keeps the count.
        let g = group(0, 8, metric(ScalingMetric::Prometheus, 4.0, Some("q")));
        let mut gauges = load(0);
        gauges.gauges.insert(("0".to_owned(), "q".to_owned()), 10.0);
        assert_eq!(desired_count(&g, 2, Some(&gauges), None, t(0)), 5);
        assert_eq!(desired_count(&g, 2, Some(&load(0)), None, t(0)), 2);
        // From zero, a request wakes the group whatever the metric.
        assert_eq!(desired_count(&g, 0, Some(&load(0)), None, t(0)), 0);
        assert_eq!(desired_count(&g, 0, Some(&load(1)), None, t(0)), 1);
        let g = group(0, 8, metric(ScalingMetric::P95Latency, 0.5, None));
        assert_eq!(desired_count(&g, 0, Some(&load(1)), None, t(0)), 1);
        // Requests still averaged in flight but none arrived in the window: it stays at zero.
        let g = group(0, 8, metric(ScalingMetric::Rps, 1.0, None));
        let mut lingering = load(0);
        lingering.windows.get_mut(&60).unwrap().avg_in_flight = 0.1;
        assert_eq!(desired_count(&g, 0, Some(&lingering), None, t(0)), 0);
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
            provisioned: status != JobStatus::Submitted,
            submitted_at: t(replica * 10),
            last_processed_at: t(replica * 10 + 5),
            replica_group: "0".to_owned(),
            deployment_num: 0,
            serving: status == JobStatus::Running,
            spec_current: false,
            draining_since: None,
            in_flight: 0,
        }
    }

    fn service(status: RunStatus, jobs: Vec<JobView>, g: GroupScaling, stats: ServiceStats) -> RunSnapshot {
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
            service: Some(ServiceScaling {
                groups: vec![g],
                desired: BTreeMap::new(),
                stats: Some(stats),
                deployment_num: 0,
                drain_timeout: jiff::SignedDuration::from_secs(300),
            }),
        }
    }

    fn with_desired(mut run: RunSnapshot, n: i64) -> RunSnapshot {
        run.service.as_mut().unwrap().desired.insert("0".to_owned(), n);
        run
    }

    use JobStatus as J;
    use JobTerminationReason as R;

    #[test]
    fn replicas_are_ordered_by_importance() {
        let mut waiting = job(4, 0, J::Running, None);
        waiting.serving = false;
        let mut old = job(5, 0, J::Running, None);
        old.deployment_num = 0;
        let run = service(
            RunStatus::Running,
            vec![
                job(0, 0, J::Running, None),
                job(1, 0, J::Submitted, None),
                job(2, 0, J::Pulling, None),
                job(3, 0, J::Terminated, Some(R::ScaledDown)),
                waiting,
                old,
                job(6, 0, J::Failed, Some(R::ContainerExitedWithError)),
                job(6, 1, J::Running, None),
            ],
            group(1, 9, None),
            load(0),
        );
        let (active, inactive) = replica_lists(&run, "0", 1);
        let order: Vec<(i64, u8, bool)> =
            active.iter().map(|r| (r.replica_num, r.importance, r.out_of_date)).collect();
        // Up to date first: none is (deployment 1), so by importance, then replica number.
        assert_eq!(
            order,
            [(0, 3, true), (5, 3, true), (6, 3, true), (4, 2, true), (2, 1, true), (1, 0, true)]
        );
        assert_eq!(inactive.iter().map(|r| r.replica_num).collect::<Vec<_>>(), [3]);
        assert!(replica_lists(&run, "other", 0).0.is_empty());
        // The last scaling: replica 6's first submission of its latest jobs (t(60)).
        assert_eq!(last_scaled_at(&run, &[group(1, 9, None)], 0), Some(t(60)));
    }

    #[test]
    fn scaling_up_reuses_inactive_replicas_then_new_numbers() {
        let run = service(
            RunStatus::Running,
            vec![
                job(0, 0, J::Running, None),
                job(1, 0, J::Terminated, Some(R::ScaledDown)),
                job(2, 2, J::Terminating, Some(R::ScaledDown)),
            ],
            group(1, 5, rps(1.0, None, 0, 0)),
            load(60 * 4),
        );
        let plan = decide(&with_desired(run, 1), t(100));
        assert_eq!(plan.status, RunStatus::Running);
        let submitted: Vec<i64> = plan.scale_up.iter().map(|r| r.replica_num).collect();
        assert_eq!(submitted, [1, 2, 3]);
        assert!(plan.terminate_jobs.is_empty());
        assert_eq!(plan.desired_replica_counts, Some([("0".to_owned(), 4)].into()));
    }

    #[test]
    fn scaling_down_stops_the_least_important_replicas() {
        let run = service(
            RunStatus::Running,
            vec![
                job(0, 0, J::Running, None),
                job(1, 0, J::Running, None),
                job(2, 0, J::Provisioning, None),
                job(3, 0, J::Submitted, None),
            ],
            group(1, 5, rps(1.0, None, 0, 0)),
            load(60 * 2),
        );
        let plan = decide(&with_desired(run.clone(), 4), t(100));
        assert_eq!(plan.status, RunStatus::Running);
        let stopped: Vec<(i64, bool)> = plan
            .terminate_jobs
            .iter()
            .map(|s| (run.jobs.iter().find(|j| j.id == s.id).unwrap().replica_num, s.graceful))
            .collect();
        assert_eq!(stopped, [(3, false), (2, false)]);
        assert!(plan.terminate_jobs.iter().all(|s| s.reason == R::ScaledDown));
        assert!(plan.scale_up.is_empty());
        // Within scale_down_delay of the last scaling (replica 3 submitted at t(30)), nothing.
        let mut slow = with_desired(run, 4);
        slow.service.as_mut().unwrap().groups[0] = group(1, 5, rps(1.0, None, 0, 600));
        let plan = decide(&slow, t(100));
        assert!(plan.terminate_jobs.is_empty());
        assert_eq!(plan.desired_replica_counts, Some([("0".to_owned(), 4)].into()));
    }

    /// A serving replica scaled down is drained first: out of the proxy's routing, stopped
    /// once its requests in flight are done (or the drain times out).
    #[test]
    fn a_serving_replica_is_drained_before_it_is_scaled_down() {
        let g = group(1, 2, rps(1.0, None, 0, 0));
        let jobs = vec![job(0, 0, J::Running, None), job(1, 0, J::Running, None)];
        let run = with_desired(service(RunStatus::Running, jobs.clone(), g.clone(), load(0)), 2);
        let plan = decide(&run, t(100));
        assert_eq!(plan.drain_jobs, [jobs[1].id]);
        assert!(plan.terminate_jobs.is_empty());
        // Draining since t(100): busy, or within the grace, it waits; then it is stopped.
        let mut draining = jobs.clone();
        draining[1].serving = false;
        draining[1].draining_since = Some(t(100));
        draining[1].in_flight = 1;
        let run = with_desired(service(RunStatus::Running, draining.clone(), g.clone(), load(0)), 1);
        for now in [101, 110] {
            let plan = decide(&run, t(now));
            assert!(plan.terminate_jobs.is_empty() && plan.drain_jobs.is_empty(), "{plan:?}");
        }
        draining[1].in_flight = 0;
        let run = with_desired(service(RunStatus::Running, draining, g, load(0)), 1);
        assert!(decide(&run, t(101)).terminate_jobs.is_empty(), "within the grace");
        let plan = decide(&run, t(102));
        let stopped: Vec<(Uuid, R)> = plan.terminate_jobs.iter().map(|s| (s.id, s.reason)).collect();
        assert_eq!(stopped, [(jobs[1].id, R::ScaledDown)]);
        assert_eq!(plan.status, RunStatus::Running);
    }

    #[test]
    fn a_scaled_down_replica_is_no_failure_and_does_not_end_the_run() {
        let jobs = vec![job(0, 0, J::Running, None), job(1, 0, J::Terminated, Some(R::ScaledDown))];
        let run =
            with_desired(service(RunStatus::Running, jobs, group(1, 2, rps(1.0, None, 0, 0)), load(0)), 1);
        let plan = decide(&run, t(100));
        assert_eq!((plan.status, plan.termination_reason), (RunStatus::Running, None));
        assert!(plan.terminate_jobs.is_empty() && plan.scale_up.is_empty());
    }

    #[test]
    fn a_service_scaled_to_zero_waits_pending_and_wakes_on_load() {
        let g = group(0, 2, rps(1.0, None, 300, 0));
        // Its last replica scaled down: pending, no new replica, no retry counted.
        let gone = vec![job(0, 0, J::Terminated, Some(R::ScaledDown))];
        let idle = with_desired(service(RunStatus::Running, gone.clone(), g.clone(), load(0)), 0);
        let plan = decide(&idle, t(100));
        assert_eq!((plan.status, plan.resubmission_attempt), (RunStatus::Pending, 0));
        assert!(plan.scale_up.is_empty());
        // Submitted with `replicas.min` 0: no jobs yet, pending as well.
        let fresh = service(RunStatus::Submitted, vec![], g.clone(), load(0));
        assert_eq!(decide(&fresh, t(1)).status, RunStatus::Pending);
        // A request arrives: the replica is submitted again at once, despite scale_up_delay.
        let woken = with_desired(service(RunStatus::Pending, gone, g.clone(), load(1)), 0);
        let plan = decide(&woken, t(101));
        assert_eq!(plan.status, RunStatus::Submitted);
        assert_eq!(plan.scale_up, [NewReplica { replica_num: 0, group: "0".to_owned() }]);
        let fresh = service(RunStatus::Pending, vec![], g, load(1));
        assert_eq!(decide(&fresh, t(1)).scale_up, [NewReplica { replica_num: 0, group: "0".to_owned() }]);
    }

    #[test]
    fn a_rolling_deployment_group_is_not_scaled() {
        let mut run = service(
            RunStatus::Running,
            vec![job(0, 0, J::Running, None)],
            group(1, 5, rps(1.0, None, 0, 0)),
            load(60 * 3),
        );
        run.service.as_mut().unwrap().deployment_num = 1;
        let plan = decide(&run, t(100));
        assert_eq!(plan.desired_replica_counts, Some([("0".to_owned(), 3)].into()));
        // Not scaled: the rolling deployment submits new replicas up to desired + 1.
        let nums: Vec<i64> = plan.scale_up.iter().map(|r| r.replica_num).collect();
        assert_eq!(nums, [1, 2, 3]);
        assert!(plan.terminate_jobs.is_empty(), "the old replica serves until others do");
    }
}
