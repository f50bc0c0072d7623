//! The runner's shared state: its [`RunnerState`], the submitted job, and the three event
//! histories (job states, job logs, runner logs) that `/api/pull` serves.

use std::sync::{Mutex, MutexGuard};

use dstack_agent_proto::runner::{JobState, JobStateEvent, LogEvent, PullResponse, RunnerState, SubmitBody};
use tokio::sync::{Notify, watch};

use crate::Config;
use crate::clock::Clock;
use crate::job::StopCause;

pub(crate) struct Shared {
    pub(crate) config: Config,
    inner: Mutex<Inner>,
    state_tx: watch::Sender<RunnerState>,
    /// Set once by `/api/stop`, the log quota or a signal; the job watches it.
    pub(crate) stop_tx: watch::Sender<Option<StopCause>>,
    /// Notified when a pull was served in `wait_logs_finished`.
    pub(crate) pulled: Notify,
    /// Notified on every job log event and state change, so `/logs_ws` streams send at once
    /// (a job that ends is killed soon after the server has pulled its end).
    pub(crate) logs_changed: Notify,
    pub(crate) metrics: crate::metrics::Collector,
    /// sshd's `authorized_keys`, while it runs.
    pub(crate) ssh_keys_file: Mutex<Option<std::path::PathBuf>>,
    /// Why sshd was wanted but does not run.
    pub(crate) ssh_unavailable: Mutex<Option<String>>,
    pub(crate) tracker: crate::ssh::Tracker,
    /// Open `/logs_ws` streams.
    pub(crate) ws_streams: std::sync::atomic::AtomicUsize,
}

pub(crate) struct Inner {
    pub(crate) state: RunnerState,
    pub(crate) submit: Option<SubmitBody>,
    clock: Clock,
    job_states: Vec<JobStateEvent>,
    job_logs: Vec<LogEvent>,
    runner_logs: Vec<LogEvent>,
    /// Job output bytes in the current hour bucket, for the log quota.
    pub(crate) quota_used: u64,
    pub(crate) quota_bucket: u64,
}

impl Shared {
    pub(crate) fn new(config: Config) -> Shared {
        Shared {
            tracker: crate::ssh::Tracker::new(config.ssh.port, config.ssh.tracker),
            config,
            inner: Mutex::new(Inner {
                state: RunnerState::WaitSubmit,
                submit: None,
                clock: Clock::default(),
                job_states: Vec::new(),
                job_logs: Vec::new(),
                runner_logs: Vec::new(),
                quota_used: 0,
                quota_bucket: 0,
            }),
            state_tx: watch::Sender::new(RunnerState::WaitSubmit),
            stop_tx: watch::Sender::new(None),
            pulled: Notify::new(),
            logs_changed: Notify::new(),
            metrics: crate::metrics::Collector::default(),
            ssh_keys_file: Mutex::new(None),
            ssh_unavailable: Mutex::new(None),
            ws_streams: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (appends only); keep serving.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<RunnerState> {
        self.state_tx.subscribe()
    }

    pub(crate) fn set_state(&self, inner: &mut Inner, state: RunnerState) {
        inner.state = state;
        self.state_tx.send_replace(state);
        self.logs_changed.notify_waiters();
    }

    pub(crate) fn job_state(&self, state: JobState, reason: &str, message: &str, exit_status: Option<i32>) {
        let mut inner = self.lock();
        let timestamp = inner.clock.next();
        inner.job_states.push(JobStateEvent {
            state,
            timestamp,
            termination_reason: reason.to_owned(),
            termination_message: message.to_owned(),
            exit_status,
        });
    }

    pub(crate) fn job_log(&self, inner: &mut Inner, message: Vec<u8>) {
        let timestamp = inner.clock.next();
        inner.job_logs.push(LogEvent { message, timestamp });
        self.logs_changed.notify_waiters();
    }

    /// A line of the runner's own log (`dstack logs --diagnose`), also traced.
    pub(crate) fn runner_log(&self, line: &str) {
        tracing::info!("{line}");
        let mut inner = self.lock();
        let timestamp = inner.clock.next();
        inner.runner_logs.push(LogEvent { message: format!("{line}\n").into_bytes(), timestamp });
    }

    /// Asks the running job to stop; the first cause wins.
    pub(crate) fn stop(&self, cause: StopCause) {
        self.stop_tx.send_if_modified(|c| {
            if c.is_none() {
                *c = Some(cause);
                true
            } else {
                false
            }
        });
    }

    /// `/api/stop` or a signal before any job ran: nothing to stop, just finish.
    pub(crate) fn stop_before_run(&self) {
        let mut inner = self.lock();
        if matches!(inner.state, RunnerState::WaitSubmit | RunnerState::WaitRun) {
            self.set_state(&mut inner, RunnerState::WaitLogsFinished);
        }
    }

    /// The job logs from index `from` on, and whether the runner has finished (nothing more
    /// will come), for `/logs_ws`.
    pub(crate) fn job_logs_from(&self, from: usize) -> (Vec<Vec<u8>>, bool) {
        let inner = self.lock();
        let logs = inner.job_logs.get(from..).unwrap_or_default().iter().map(|e| e.message.clone()).collect();
        (logs, inner.state == RunnerState::WaitLogsFinished)
    }

    /// The index of the first job log event at or after `ts` (milliseconds).
    pub(crate) fn job_log_index(&self, ts: i64) -> usize {
        self.lock().job_logs.partition_point(|e| e.timestamp < ts)
    }

    pub(crate) fn pull(&self, after: i64) -> PullResponse {
        let inner = self.lock();
        let newer = |events: &[LogEvent]| {
            let start = events.partition_point(|e| e.timestamp <= after);
            events[start..].to_vec()
        };
        let start = inner.job_states.partition_point(|e| e.timestamp <= after);
        PullResponse {
            job_states: inner.job_states[start..].to_vec(),
            job_logs: newer(&inner.job_logs),
            runner_logs: newer(&inner.runner_logs),
            last_updated: inner.clock.last(),
            no_connections_secs: Some(self.tracker.no_connections_secs()),
            has_more: inner.state != RunnerState::WaitLogsFinished,
        }
    }
}
