//! Readiness probes of service replicas (dstack's `scheduled_tasks/probes.py` and the
//! registration in `jobs_running`).
//!
//! Each probe of a running job (`JobSpec.probes[probe_num]`) has a state: a success streak,
//! when it is next due and whether it is still active. The probes loop picks due active probes,
//! decides with [`on_due`] whether to execute or deactivate each, executes it (an HTTP request
//! to the replica) and records the outcome with [`after_execution`]. A replica is ready once
//! every probe's streak reaches its `ready_after` ([`job_ready`]); from then on it is
//! registered and receives service traffic, as in dstack (registration is not undone while
//! the job runs, even if a probe fails later).
//!
//! A replica without probes is ready once its app listens on its service port, which the
//! caller checks when [`registration`] says so: dstack registers it as soon as its job runs,
//! which can be before the app listens, so that early requests fail; ours get none of them.
//!
//! ```text
//!   job becomes running ──▶ active, streak 0, due now
//!        │ due: execute (due pushed past the execution, a lease)
//!        ▼
//!   success ─▶ streak + 1 ┐
//!   failure ─▶ streak = 0 ┴─▶ due = now + interval ─▶ … ─▶ inactive when the job no longer
//!                                                         runs, or until_ready and ready
//! ```

use dstack_api::runs::ProbeSpec;
use jiff::{SignedDuration, Timestamp};

/// Probes one pass picks at most (dstack's batch).
pub const BATCH: i64 = 100;

/// How often the probes loop runs (dstack: every 3 s).
pub const PASS_INTERVAL: SignedDuration = SignedDuration::from_secs(3);

/// How soon the probes loop runs again while a replica without probes waits for its port to
/// accept connections: such a replica is ready the moment it listens, so it is checked more
/// often than probes run.
pub const PORT_CHECK_INTERVAL: SignedDuration = SignedDuration::from_millis(500);

/// What one execution may take beyond the probe's own timeout: connecting to the replica
/// (dstack's `SSH_CONNECT_TIMEOUT`) and slow database writes (its processing overhead).
const CONNECT_ALLOWANCE: SignedDuration = SignedDuration::from_secs(10);
const PROCESSING_OVERHEAD: SignedDuration = SignedDuration::from_secs(60);

/// A probe's stored state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeState {
    pub success_streak: i64,
    pub due: Timestamp,
    pub active: bool,
}

impl ProbeState {
    /// The state of a probe whose job just started running: due at once.
    pub fn initial(now: Timestamp) -> ProbeState {
        ProbeState { success_streak: 0, due: now, active: true }
    }
}

/// What to do with a probe that is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDue {
    /// The job no longer runs, or an `until_ready` probe is satisfied: never run it again.
    Deactivate,
    /// Run it now. `due` is pushed to `lease_until` first, so that an execution that never
    /// reports (a crashed server) is retried then, and no other pass runs it meanwhile.
    Execute { lease_until: Timestamp },
}

/// Whether `probe` (of a job `running` or not) runs again (dstack's `process_probes`).
/// `spec` is `None` when the job spec has no probe of that number any more.
pub fn on_due(running: bool, spec: Option<&ProbeSpec>, probe: &ProbeState, now: Timestamp) -> OnDue {
    let Some(spec) = spec.filter(|_| running) else { return OnDue::Deactivate };
    if spec.until_ready && is_ready(probe.success_streak, spec) {
        return OnDue::Deactivate;
    }
    let lease = SignedDuration::from_secs(spec.timeout.max(0))
        .saturating_add(CONNECT_ALLOWANCE)
        .saturating_add(PROCESSING_OVERHEAD);
    OnDue::Execute { lease_until: now.saturating_add(lease).unwrap_or(now) }
}

/// The state after an execution that ended at `now`: the streak grows by one on success and
/// starts over on failure; the next execution is `interval` seconds later.
pub fn after_execution(spec: &ProbeSpec, probe: &ProbeState, success: bool, now: Timestamp) -> ProbeState {
    let success_streak = if success { probe.success_streak.saturating_add(1) } else { 0 };
    let interval = SignedDuration::from_secs(spec.interval.max(0));
    ProbeState { success_streak, due: now.saturating_add(interval).unwrap_or(now), active: probe.active }
}

/// Whether an HTTP answer is a success: any 2xx status (httpx's `is_success`; redirects are
/// not followed, so a 3xx is a failure).
pub fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// dstack's `is_probe_ready`.
pub fn is_ready(success_streak: i64, spec: &ProbeSpec) -> bool {
    success_streak >= spec.ready_after
}

/// Whether a replica whose job spec has `specs` is ready, given the streaks of its stored
/// probes by probe number. A probe not stored yet is not ready; no probes at all is ready.
pub fn job_ready(specs: &[ProbeSpec], streaks: &[(i64, i64)]) -> bool {
    specs.iter().enumerate().all(|(num, spec)| {
        let num = i64::try_from(num).unwrap_or(i64::MAX);
        streaks.iter().any(|&(n, streak)| n == num && is_ready(streak, spec))
    })
}

/// What the probes loop does with a running service replica that is not registered yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// Every probe is ready: register it for traffic.
    Register,
    /// Its probes have no state yet: store their first one, due at once.
    StartProbes,
    /// Its probes run; it is registered once every one is ready.
    AwaitProbes,
    /// It has no probes: register it once its app listens on its service port.
    WhenListening,
}

/// What to do with an unregistered running replica whose job spec has `specs`, given the
/// streaks of its stored probes by probe number.
pub fn registration(specs: &[ProbeSpec], streaks: &[(i64, i64)]) -> Registration {
    if specs.is_empty() {
        Registration::WhenListening
    } else if job_ready(specs, streaks) {
        Registration::Register
    } else if streaks.len() < specs.len() {
        Registration::StartProbes
    } else {
        Registration::AwaitProbes
    }
}

/// When the probes loop runs next: soon while a replica without probes waits for its port
/// ([`PORT_CHECK_INTERVAL`]), else on its usual [`PASS_INTERVAL`].
pub fn next_pass_in(waiting_for_port: bool) -> SignedDuration {
    if waiting_for_port { PORT_CHECK_INTERVAL } else { PASS_INTERVAL }
}

#[cfg(test)]
mod tests {
    use dstack_model::service::{HttpMethod, ProbeType};

    use super::*;

    fn spec(ready_after: i64, until_ready: bool) -> ProbeSpec {
        ProbeSpec {
            kind: ProbeType::Http,
            url: "/ready".to_owned(),
            method: HttpMethod::Get,
            headers: Vec::new(),
            body: None,
            timeout: 10,
            interval: 15,
            ready_after,
            until_ready,
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_764_000_000 + secs).unwrap()
    }

    #[test]
    fn the_streak_grows_on_success_and_starts_over_on_failure() {
        let s = spec(2, false);
        let mut probe = ProbeState::initial(at(0));
        let outcomes = [true, true, false, true, true, true];
        let mut streaks = Vec::new();
        for (i, ok) in outcomes.into_iter().enumerate() {
            let now = at(i64::try_from(i).unwrap() * 20);
            probe = after_execution(&s, &probe, ok, now);
            assert_eq!(probe.due, at(i64::try_from(i).unwrap() * 20 + 15), "next due = end + interval");
            streaks.push(probe.success_streak);
        }
        assert_eq!(streaks, [1, 2, 0, 1, 2, 3]);
        assert!(probe.active);
    }

    #[test]
    fn a_due_probe_runs_under_a_lease_or_is_deactivated() {
        let probe = ProbeState::initial(at(0));
        // timeout 10 s + 10 s to connect + 60 s of overhead.
        assert_eq!(
            on_due(true, Some(&spec(1, false)), &probe, at(5)),
            OnDue::Execute { lease_until: at(85) }
        );
        assert_eq!(on_due(false, Some(&spec(1, false)), &probe, at(5)), OnDue::Deactivate, "job not running");
        assert_eq!(on_due(true, None, &probe, at(5)), OnDue::Deactivate, "no such probe in the spec");

        let ready = ProbeState { success_streak: 2, ..probe };
        assert_eq!(
            on_due(true, Some(&spec(2, true)), &ready, at(5)),
            OnDue::Deactivate,
            "until_ready satisfied"
        );
        assert!(matches!(on_due(true, Some(&spec(3, true)), &ready, at(5)), OnDue::Execute { .. }));
        assert!(
            matches!(on_due(true, Some(&spec(2, false)), &ready, at(5)), OnDue::Execute { .. }),
            "without until_ready a probe keeps running"
        );
    }

    #[test]
    fn only_2xx_is_a_success() {
        let ok: Vec<u16> = [100, 199, 200, 204, 299, 300, 302, 404, 500, 503]
            .into_iter()
            .filter(|s| is_success(*s))
            .collect();
        assert_eq!(ok, [200, 204, 299]);
    }

    #[test]
    fn a_replica_is_ready_when_every_probe_is() {
        let specs = [spec(1, false), spec(3, false)];
        assert!(job_ready(&[], &[]), "no probes: ready");
        assert!(!job_ready(&specs, &[]), "probes not stored yet");
        assert!(!job_ready(&specs, &[(0, 5)]), "one probe missing");
        assert!(!job_ready(&specs, &[(0, 1), (1, 2)]));
        assert!(job_ready(&specs, &[(1, 3), (0, 1)]));
        assert!(!job_ready(&specs, &[(0, 0), (1, 3)]));
    }

    #[test]
    fn an_unregistered_replica_waits_for_its_probes_or_its_port() {
        use Registration::*;
        let specs = [spec(1, false), spec(2, true)];
        type Case<'a> = (&'a [ProbeSpec], &'a [(i64, i64)], Registration);
        let cases: [Case; 6] = [
            (&[], &[], WhenListening),
            (&[], &[(0, 9)], WhenListening),
            (&specs, &[], StartProbes),
            (&specs, &[(0, 1)], StartProbes),
            (&specs, &[(0, 1), (1, 1)], AwaitProbes),
            (&specs, &[(1, 2), (0, 1)], Register),
        ];
        for (specs, streaks, expected) in cases {
            assert_eq!(registration(specs, streaks), expected, "{} probes, streaks {streaks:?}", specs.len());
        }
        assert_eq!(next_pass_in(true), SignedDuration::from_millis(500));
        assert_eq!(next_pass_in(false), PASS_INTERVAL);
    }

    proptest::proptest! {
        /// Whatever the outcomes, the streak is the number of trailing successes, the next
        /// due time is the end of the execution plus the interval, and a probe of a running
        /// job is only deactivated once `until_ready` is satisfied.
        #[test]
        fn the_streak_counts_trailing_successes(
            outcomes in proptest::collection::vec(proptest::bool::ANY, 0..40),
            ready_after in 1i64..5,
            until_ready in proptest::bool::ANY,
        ) {
            let s = spec(ready_after, until_ready);
            let mut probe = ProbeState::initial(at(0));
            for (i, ok) in outcomes.iter().enumerate() {
                let now = at(i64::try_from(i).unwrap() * 30);
                match on_due(true, Some(&s), &probe, now) {
                    OnDue::Deactivate => {
                        proptest::prop_assert!(until_ready && probe.success_streak >= ready_after);
                        break;
                    }
                    OnDue::Execute { lease_until } => proptest::prop_assert!(lease_until > now),
                }
                probe = after_execution(&s, &probe, *ok, now);
                let trailing = outcomes[..=i].iter().rev().take_while(|ok| **ok).count();
                proptest::prop_assert_eq!(probe.success_streak, i64::try_from(trailing).unwrap());
                proptest::prop_assert_eq!(probe.due, at(i64::try_from(i).unwrap() * 30 + 15));
            }
        }
    }
}
