//! SSH-fleet instances along their life cycle: what a pass of the instances loop does to one
//! host (dstack 0.22.5's `InstancePipeline` for SSH instances: `add_ssh_instance`,
//! `check_instance`, `terminate_instance`).
//!
//! ```text
//! PENDING --(deployed, shim healthy)--> IDLE <--(a job)--> BUSY
//!    |  (a failed deploy stays PENDING with the cause in termination_reason_message,
//!    |   and is tried again every DEPLOY_RETRY; a host whose earlier instance is still
//!    |   TERMINATING waits for its release, which would uninstall a new deploy)
//!    +--(created_at + 600 s passed)--> TERMINATED (provisioning_timeout)
//! IDLE/BUSY: health check through the tunnel each CHECK_INTERVAL: unreachable <-> reachable
//! any live --(delete)--> TERMINATING --(no job left; host released or given up)--> TERMINATED + deleted
//! ```
//!
//! Differences from dstack, on purpose:
//! - a failed deploy keeps its cause on the instance (`termination_reason_message`, which the
//!   API shows), where dstack only logs it; the provisioning timeout's message keeps it too;
//! - a terminating host is given back (the shim uninstalled, our `authorized_keys` lines
//!   removed), retried every [`RELEASE_RETRY`] for [`RELEASE_GIVE_UP`]; dstack leaves the shim
//!   installed. A host that was never deployed is tried once.

use dstack_api::fleets::InstanceStatus;
use jiff::{SignedDuration, Timestamp};

/// dstack's `PROVISIONING_TIMEOUT_SECONDS`: an SSH host not added by then is given up.
pub const PROVISIONING_TIMEOUT: SignedDuration = SignedDuration::from_secs(600);

/// dstack's `InstanceTerminationReason` values this module sets.
pub const PROVISIONING_TIMEOUT_REASON: &str = "provisioning_timeout";
pub const ERROR_REASON: &str = "error";

/// The wait after a failed deploy before the next attempt.
pub const DEPLOY_RETRY: SignedDuration = SignedDuration::from_secs(10);

/// The wait between two attempts to give a host back.
pub const RELEASE_RETRY: SignedDuration = SignedDuration::from_secs(15);

/// How long a host that was deployed is tried before it is given up (its instance still
/// ends `terminated`).
pub const RELEASE_GIVE_UP: SignedDuration = SignedDuration::from_secs(120);

/// What the instances loop knows about one SSH instance.
#[derive(Debug, Clone, PartialEq)]
pub struct SshInstance {
    pub status: InstanceStatus,
    pub created_at: Timestamp,
    /// A job is assigned to it.
    pub has_jobs: bool,
    /// The shim was deployed and answered once (the instance has an agent URL).
    pub deployed: bool,
    pub first_termination_retry_at: Option<Timestamp>,
    /// The cause of the last failed deploy, if any.
    pub last_error: Option<String>,
    /// Another instance of the same host is `terminating`: its release is still to come (a
    /// host removed from a fleet and added back before it was given back).
    pub host_in_release: bool,
}

/// The next thing to do with an instance.
#[derive(Debug, Clone, PartialEq)]
pub enum SshAction {
    /// Install the shim (again) and read the host.
    Deploy,
    /// Ask the shim whether it is healthy, through the tunnel.
    Check,
    /// Uninstall the shim and remove our keys, then end the instance.
    Release,
    /// End the instance as `terminated` with this reason and message, without touching the host.
    Fail { reason: &'static str, message: String },
    /// Nothing now (a terminating instance whose job has not released it yet, a pending one
    /// whose host an earlier instance has not given back yet).
    Wait,
}

/// What to do with `i` at `now`.
pub fn next_action(i: &SshInstance, now: Timestamp) -> SshAction {
    match i.status {
        InstanceStatus::Pending => {
            if now.duration_since(i.created_at) > PROVISIONING_TIMEOUT {
                SshAction::Fail {
                    reason: PROVISIONING_TIMEOUT_REASON,
                    message: timeout_message(i.last_error.as_deref()),
                }
            } else if i.host_in_release {
                SshAction::Wait
            } else {
                SshAction::Deploy
            }
        }
        InstanceStatus::Provisioning | InstanceStatus::Idle | InstanceStatus::Busy => SshAction::Check,
        InstanceStatus::Terminating if i.has_jobs => SshAction::Wait,
        InstanceStatus::Terminating => SshAction::Release,
        InstanceStatus::Terminated => SshAction::Wait,
    }
}

/// dstack's message (`Failed to add SSH instance in 600s`), with the last deploy error.
pub fn timeout_message(last_error: Option<&str>) -> String {
    let base = format!("Failed to add SSH instance in {}s", PROVISIONING_TIMEOUT.as_secs());
    match last_error {
        Some(e) if !e.is_empty() => format!("{base}: {e}"),
        _ => base,
    }
}

/// After a failed release at `now`: try again later, or give the host up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailedRelease {
    Retry,
    GiveUp,
}

pub fn after_failed_release(i: &SshInstance, now: Timestamp) -> AfterFailedRelease {
    if !i.deployed {
        return AfterFailedRelease::GiveUp;
    }
    let first = i.first_termination_retry_at.unwrap_or(now);
    if now.duration_since(first) >= RELEASE_GIVE_UP {
        AfterFailedRelease::GiveUp
    } else {
        AfterFailedRelease::Retry
    }
}

/// A shim task no job of this instance stands for, and what to do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DanglingTask {
    pub id: String,
    /// Still running (or starting): terminate it before removing it.
    pub terminate: bool,
}

/// dstack's `remove_dangling_tasks_from_instance`: the shim's tasks (id, whether it is
/// `terminated`) whose id is not one of `assigned`, the ids of the jobs assigned to the
/// instance. Such a task was left by a job that ended while its host could not be reached
/// (or by a server that crashed between the stop and the remove); the shim's list must be read
/// before the assigned jobs, so that a task submitted meanwhile is never taken for one.
pub fn dangling_tasks(tasks: &[(String, bool)], assigned: &[String]) -> Vec<DanglingTask> {
    tasks
        .iter()
        .filter(|(id, _)| !assigned.iter().any(|a| a.eq_ignore_ascii_case(id)))
        .map(|(id, terminated)| DanglingTask { id: id.clone(), terminate: !terminated })
        .collect()
}

#[cfg(test)]
mod tests {

    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_764_000_000 + s).unwrap()
    }

    fn inst(status: InstanceStatus) -> SshInstance {
        SshInstance {
            status,
            created_at: t(0),
            has_jobs: false,
            deployed: true,
            first_termination_retry_at: None,
            last_error: None,
            host_in_release: false,
        }
    }

    #[test]
    fn actions() {
        use InstanceStatus::*;
        let mut failing = inst(Pending);
        failing.last_error = Some("10.0.0.1 refused the key".to_owned());
        let mut busy_terminating = inst(Terminating);
        busy_terminating.has_jobs = true;
        let mut added_back = inst(Pending);
        added_back.host_in_release = true;
        let cases: Vec<(SshInstance, i64, SshAction)> = vec![
            (inst(Pending), 0, SshAction::Deploy),
            (inst(Pending), 600, SshAction::Deploy),
            (added_back.clone(), 0, SshAction::Wait),
            (
                added_back,
                601,
                SshAction::Fail {
                    reason: "provisioning_timeout",
                    message: "Failed to add SSH instance in 600s".to_owned(),
                },
            ),
            (
                inst(Pending),
                601,
                SshAction::Fail {
                    reason: "provisioning_timeout",
                    message: "Failed to add SSH instance in 600s".to_owned(),
                },
            ),
            (
                failing,
                601,
                SshAction::Fail {
                    reason: "provisioning_timeout",
                    message: "Failed to add SSH instance in 600s: 10.0.0.1 refused the key".to_owned(),
                },
            ),
            (inst(Idle), 5000, SshAction::Check),
            (inst(Busy), 5000, SshAction::Check),
            (inst(Provisioning), 5000, SshAction::Check),
            (inst(Terminating), 5000, SshAction::Release),
            (busy_terminating, 5000, SshAction::Wait),
            (inst(Terminated), 5000, SshAction::Wait),
        ];
        for (i, at, want) in cases {
            assert_eq!(next_action(&i, t(at)), want, "{i:?} at {at}");
        }
    }

    #[test]
    fn failed_releases() {
        let mut i = inst(InstanceStatus::Terminating);
        assert_eq!(after_failed_release(&i, t(10)), AfterFailedRelease::Retry, "the first failure");
        i.first_termination_retry_at = Some(t(10));
        assert_eq!(after_failed_release(&i, t(129)), AfterFailedRelease::Retry);
        assert_eq!(after_failed_release(&i, t(130)), AfterFailedRelease::GiveUp);
        i.deployed = false;
        assert_eq!(after_failed_release(&i, t(11)), AfterFailedRelease::GiveUp, "never deployed: once");
    }

    #[test]
    fn tasks_of_no_assigned_job_are_dangling() {
        let tasks = |list: &[(&str, bool)]| -> Vec<(String, bool)> {
            list.iter().map(|(id, t)| ((*id).to_owned(), *t)).collect()
        };
        let ids = |list: &[&str]| -> Vec<String> { list.iter().map(|s| (*s).to_owned()).collect() };
        let d = |id: &str, terminate: bool| DanglingTask { id: id.to_owned(), terminate };
        // (tasks on the shim, jobs assigned to the instance) -> dangling
        let table = [
            (tasks(&[]), ids(&["a"]), vec![]),
            (tasks(&[("a", false)]), ids(&["a"]), vec![]),
            (
                tasks(&[("a", false), ("b", false), ("c", true)]),
                ids(&["a"]),
                vec![d("b", true), d("c", false)],
            ),
            (tasks(&[("A", true)]), ids(&["a"]), vec![]),
            (tasks(&[("a", true)]), ids(&[]), vec![d("a", false)]),
        ];
        for (on_shim, assigned, want) in table {
            assert_eq!(dangling_tasks(&on_shim, &assigned), want, "{on_shim:?} {assigned:?}");
        }
    }
}
