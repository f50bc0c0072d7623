//! What an active job becomes from what its agents report (agents.md §3.2–3.3).

use dstack_api::runs::{JobStatus, JobTerminationReason};
use jiff::{SignedDuration, Timestamp};

/// How long a job may stay unreachable before it is given up (`JOB_DISCONNECTED_RETRY_TIMEOUT`).
pub const DISCONNECTED_TIMEOUT: SignedDuration = SignedDuration::from_secs(120);

/// The graceful part of a stop: the runner is asked to stop, the task is killed after this.
pub const GRACEFUL_STOP: SignedDuration = SignedDuration::from_secs(10);

/// A reason string from a shim or runner as the server reads it; an unknown or empty one is
/// `default`.
pub fn agent_reason(reason: &str, default: JobTerminationReason) -> JobTerminationReason {
    JobTerminationReason::from_wire(&reason.to_ascii_lowercase()).unwrap_or(default)
}

/// The last job state a runner reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerState<'a> {
    /// `running`, `done`, `failed`, `terminated`, …
    pub state: &'a str,
    pub termination_reason: &'a str,
    pub termination_message: &'a str,
    pub exit_status: Option<i64>,
}

/// How a job ended, from the runner's last state; `None` while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub reason: JobTerminationReason,
    pub message: Option<String>,
    pub exit_status: Option<i64>,
}

/// dstack's reading of the runner's last state event.
pub fn runner_outcome(last: &RunnerState<'_>) -> Option<Ended> {
    let message = (!last.termination_message.is_empty()).then(|| last.termination_message.to_owned());
    match last.state {
        "done" => {
            Some(Ended { reason: JobTerminationReason::DoneByRunner, message, exit_status: last.exit_status })
        }
        "failed" | "terminated" => Some(Ended {
            reason: agent_reason(last.termination_reason, JobTerminationReason::ContainerExitedWithError),
            message,
            exit_status: last.exit_status,
        }),
        _ => None,
    }
}

/// Whether a job unreachable since `since` is given up at `now` (`timeout` is
/// [`DISCONNECTED_TIMEOUT`] but for tests).
pub fn unreachable_for_too_long(since: Timestamp, now: Timestamp, timeout: SignedDuration) -> bool {
    now.duration_since(since) > timeout
}

/// An active job whose host did not answer (a tunnel, connection or agent error): how it ends
/// at `now`, or `None` while it may still come back (dstack's `_handle_instance_unreachable`).
///
/// `reached_at` is when the job's host last answered; a job that is only waiting for a
/// host to be set up (`provisioning`) has no runner to lose and is not given up here. A
/// spot instance that stops answering was most likely reclaimed, so its job ends as an
/// interruption (retried on `interruption`); any other host's as `instance_unreachable`
/// (an `error`).
pub fn after_unreachable(
    status: JobStatus,
    spot: bool,
    reached_at: Timestamp,
    now: Timestamp,
    timeout: SignedDuration,
) -> Option<Ended> {
    if !matches!(status, JobStatus::Pulling | JobStatus::Running) {
        return None;
    }
    if !unreachable_for_too_long(reached_at, now, timeout) {
        return None;
    }
    let reason = if spot {
        JobTerminationReason::InterruptedByNoCapacity
    } else {
        JobTerminationReason::InstanceUnreachable
    };
    Some(Ended { reason, message: Some("Instance is unreachable".to_owned()), exit_status: None })
}

/// dstack's `inactivity_duration` check of a running dev environment after a pull: what to
/// store as the job's `inactivity_secs`, and whether the job ends.
///
/// `inactivity_duration` is the dev environment's setting (`None` when off or not a dev
/// environment, and then `inactivity_secs` is `None` too); `no_connections_secs` is what the
/// runner reported (`None`: a runner that predates the tracker).
pub fn inactivity(
    inactivity_duration: Option<i64>,
    no_connections_secs: Option<i64>,
) -> (Option<i64>, Option<Ended>) {
    let Some(limit) = inactivity_duration else { return (None, None) };
    match no_connections_secs {
        None => (
            None,
            Some(Ended {
                reason: JobTerminationReason::InterruptedByNoCapacity,
                message: Some(
                    "The selected instance was created before dstack 0.18.41 and does not support \
                     inactivity_duration"
                        .to_owned(),
                ),
                exit_status: None,
            }),
        ),
        Some(secs) if secs >= limit => (
            Some(secs),
            Some(Ended {
                reason: JobTerminationReason::InactivityDurationExceeded,
                message: Some(format!(
                    "The job was inactive for {secs} seconds, exceeding the inactivity_duration of \
                     {limit} seconds"
                )),
                exit_status: None,
            }),
        ),
        Some(secs) => (Some(secs), None),
    }
}

/// dstack's `utilization_policy` check of a running job: the job ends when some GPU stayed
/// below `min_gpu_utilization` percent in every sample of the last `time_window` seconds.
/// `samples` are (unix µs, per-GPU utilization), latest first, those newer than the window's
/// start; each GPU's series is made of the samples that have a value for it. When GPU 0's
/// series does not reach back to within a minute of the window's start (a job younger than
/// its window, a gap in sampling) nothing is decided yet; without GPU samples, nothing either.
pub fn low_gpu_utilization(
    min_gpu_utilization: i64,
    time_window_secs: i64,
    now: Timestamp,
    samples: &[(i64, Vec<i64>)],
) -> Option<Ended> {
    let window_start = now.as_microsecond() - time_window_secs * 1_000_000;
    let n_gpus = samples.iter().map(|(_, g)| g.len()).max().unwrap_or(0);
    let series = |gpu: usize| samples.iter().filter_map(move |(at, utils)| Some((*at, *utils.get(gpu)?)));
    let (earliest, _) = series(0).next_back()?;
    if earliest > window_start + 60_000_000 {
        return None;
    }
    let idle_gpu = (0..n_gpus).any(|gpu| series(gpu).all(|(_, util)| util < min_gpu_utilization));
    idle_gpu.then(|| Ended {
        reason: JobTerminationReason::TerminatedDueToUtilizationPolicy,
        message: Some(format!(
            "The job GPU utilization below {min_gpu_utilization}% for {time_window_secs} seconds"
        )),
        exit_status: None,
    })
}

/// A job of a multi-node replica as start ordering sees it (its latest submission).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    pub job_num: i64,
    pub status: dstack_api::runs::JobStatus,
    /// It has a host (provisioning data with a hostname).
    pub placed: bool,
}

/// Why a provisioning job of a multi-node replica must not start yet (dstack's
/// `_should_wait_for_other_nodes`), or `None` when it may: every job of the replica must
/// have its host first (so each runner gets every node's IP); with `master-first` the
/// workers wait for the master to run, with `workers-first` the master waits for every
/// worker. A node that ends meanwhile fails the run, which stops the waiting ones.
pub fn wait_for_other_nodes(
    job_num: i64,
    order: Option<dstack_model::profile::StartupOrder>,
    replica: &[Node],
) -> Option<&'static str> {
    use dstack_api::runs::JobStatus;
    use dstack_model::profile::StartupOrder;
    if replica.iter().any(|n| !n.placed && !n.status.is_finished()) {
        return Some("waiting for the other nodes to have their hosts");
    }
    let running = |n: &Node| n.status == JobStatus::Running;
    match order {
        Some(StartupOrder::MasterFirst)
            if job_num != 0 && !replica.iter().any(|n| n.job_num == 0 && running(n)) =>
        {
            Some("waiting for the master node to run")
        }
        Some(StartupOrder::WorkersFirst)
            if job_num == 0 && replica.iter().any(|n| n.job_num != 0 && !running(n)) =>
        {
            Some("waiting for the worker nodes to run")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gpu_idle_for_the_whole_window_ends_the_job() {
        let now = Timestamp::from_second(10_000).unwrap();
        let at = |secs_ago: i64| now.as_microsecond() - secs_ago * 1_000_000;
        // Samples every 10 s over the last 300 s; GPU 1 never reaches 10 %.
        let samples: Vec<(i64, Vec<i64>)> = (0..30).map(|i| (at(i * 10), vec![90, 3])).collect();
        let ended = low_gpu_utilization(10, 300, now, &samples).expect("ends");
        assert_eq!(ended.reason, JobTerminationReason::TerminatedDueToUtilizationPolicy);
        assert_eq!(ended.message.as_deref(), Some("The job GPU utilization below 10% for 300 seconds"));
        // One busy moment of GPU 1 in the window: it goes on.
        let mut busy = samples.clone();
        busy[7].1[1] = 50;
        assert_eq!(low_gpu_utilization(10, 300, now, &busy), None);
        // Samples reaching back only 200 s: not enough to say.
        assert_eq!(low_gpu_utilization(10, 300, now, &samples[..21]), None);
        // No samples, or no GPUs: nothing to say.
        assert_eq!(low_gpu_utilization(10, 300, now, &[]), None);
        let cpu_only: Vec<(i64, Vec<i64>)> = (0..30).map(|i| (at(i * 10), vec![])).collect();
        assert_eq!(low_gpu_utilization(10, 300, now, &cpu_only), None);
        // Samples without GPU values in between (a host that lost its GPUs' readings) do not
        // count for or against.
        let mixed: Vec<(i64, Vec<i64>)> =
            (0..30).map(|i| (at(i * 10), if i % 2 == 0 { vec![2] } else { vec![] })).collect();
        assert!(low_gpu_utilization(10, 300, now, &mixed).is_some());
    }

    #[test]
    fn inactivity_ends_a_dev_environment_as_dstack_does() {
        assert_eq!(inactivity(None, Some(1000)), (None, None));
        assert_eq!(inactivity(Some(60), Some(59)), (Some(59), None));
        let (secs, ended) = inactivity(Some(60), Some(60));
        assert_eq!(secs, Some(60));
        let ended = ended.expect("ends");
        assert_eq!(ended.reason, JobTerminationReason::InactivityDurationExceeded);
        assert_eq!(
            ended.message.as_deref(),
            Some("The job was inactive for 60 seconds, exceeding the inactivity_duration of 60 seconds")
        );
        let (secs, ended) = inactivity(Some(60), None);
        assert_eq!(
            (secs, ended.map(|e| e.reason)),
            (None, Some(JobTerminationReason::InterruptedByNoCapacity))
        );
    }

    fn state<'a>(state: &'a str, reason: &'a str, exit: Option<i64>) -> RunnerState<'a> {
        RunnerState { state, termination_reason: reason, termination_message: "", exit_status: exit }
    }

    #[test]
    fn runner_states_map_as_in_dstack() {
        assert_eq!(runner_outcome(&state("running", "", None)), None);
        assert_eq!(
            runner_outcome(&state("done", "", Some(0))).map(|e| (e.reason, e.exit_status)),
            Some((JobTerminationReason::DoneByRunner, Some(0)))
        );
        assert_eq!(
            runner_outcome(&state("failed", "", Some(3))).map(|e| (e.reason, e.exit_status)),
            Some((JobTerminationReason::ContainerExitedWithError, Some(3)))
        );
        assert_eq!(
            runner_outcome(&state("terminated", "max_duration_exceeded", None)).map(|e| e.reason),
            Some(JobTerminationReason::MaxDurationExceeded)
        );
        assert_eq!(
            runner_outcome(&state("failed", "LOG_QUOTA_EXCEEDED", None)).map(|e| e.reason),
            Some(JobTerminationReason::LogQuotaExceeded)
        );
        assert_eq!(
            agent_reason("bogus", JobTerminationReason::ExecutorError),
            JobTerminationReason::ExecutorError
        );
    }

    #[test]
    fn unreachable_jobs_get_two_minutes() {
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let timeout = DISCONNECTED_TIMEOUT;
        assert!(!unreachable_for_too_long(t0, t0 + SignedDuration::from_secs(120), timeout));
        assert!(unreachable_for_too_long(t0, t0 + SignedDuration::from_secs(121), timeout));
    }

    #[test]
    fn an_unreachable_host_ends_its_job_as_dstack_does() {
        use JobStatus::*;
        use JobTerminationReason::*;
        use dstack_model::profile::RetryEvent;
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let secs = SignedDuration::from_secs;
        // (status, spot, seconds since the host last answered, timeout) -> reason
        let table = [
            (Running, false, 5, 120, None),
            (Running, false, 120, 120, None),
            (Running, false, 121, 120, Some(InstanceUnreachable)),
            (Running, true, 121, 120, Some(InterruptedByNoCapacity)),
            (Pulling, false, 121, 120, Some(InstanceUnreachable)),
            (Pulling, false, 11, 10, Some(InstanceUnreachable)),
            (Running, false, 9, 10, None),
            // Waiting for the host to take the task: the provisioning timeout applies instead.
            (Provisioning, false, 1000, 120, None),
            (Submitted, false, 1000, 120, None),
            (Terminating, false, 1000, 120, None),
        ];
        for (status, spot, after, timeout, want) in table {
            let got = after_unreachable(status, spot, t0, t0 + secs(after), secs(timeout));
            assert_eq!(got.as_ref().map(|e| e.reason), want, "{status:?} spot={spot} after {after}s");
            if let Some(e) = got {
                assert_eq!(e.message.as_deref(), Some("Instance is unreachable"));
                assert_eq!(e.exit_status, None);
                // dstack's retry events: a lost on-demand host is an `error`, a lost spot one
                // an `interruption`.
                assert_eq!(e.reason.to_status(), Failed);
                let event = if spot { RetryEvent::Interruption } else { RetryEvent::Error };
                assert_eq!(e.reason.to_retry_event(), Some(event));
            }
        }
    }

    #[test]
    fn start_ordering_of_multi_node_jobs() {
        use dstack_api::runs::JobStatus as J;
        use dstack_model::profile::StartupOrder as O;
        let n = |job_num, status, placed| Node { job_num, status, placed };
        let all_placed = [n(0, J::Provisioning, true), n(1, J::Provisioning, true)];
        let master_runs = [n(0, J::Running, true), n(1, J::Provisioning, true)];
        let worker_runs = [n(0, J::Provisioning, true), n(1, J::Running, true)];
        let one_unplaced = [n(0, J::Provisioning, true), n(1, J::Submitted, false)];
        let cases: &[(i64, Option<O>, &[Node], bool)] = &[
            (0, None, &all_placed, false),
            (1, Some(O::Any), &all_placed, false),
            (0, None, &one_unplaced, true),
            (1, Some(O::Any), &one_unplaced, true),
            (1, Some(O::MasterFirst), &all_placed, true),
            (0, Some(O::MasterFirst), &all_placed, false),
            (1, Some(O::MasterFirst), &master_runs, false),
            (0, Some(O::WorkersFirst), &all_placed, true),
            (1, Some(O::WorkersFirst), &all_placed, false),
            (0, Some(O::WorkersFirst), &worker_runs, false),
            // A single node never waits.
            (0, Some(O::WorkersFirst), &[n(0, J::Provisioning, true)], false),
        ];
        for (i, (job_num, order, replica, waits)) in cases.iter().enumerate() {
            assert_eq!(wait_for_other_nodes(*job_num, *order, replica).is_some(), *waits, "case {i}");
        }
    }
}
