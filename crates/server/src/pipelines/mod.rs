//! Background loops: the level-triggered reconcilers that move runs and jobs along.
//!
//! Each loop wakes on a hint from an API handler or another loop, or on its tick, takes a
//! lease on the rows it will work on, decides with the pure functions of `dstack-decide`,
//! carries out side effects with no transaction open, and writes the result back only while
//! its lease holds. After a crash the leases expire and the next pass picks the rows up
//! again: recovery is the normal path.
//!
//! | Loop | Rows | Does |
//! |---|---|---|
//! | `runs` | unfinished runs | run status from jobs, retries, stop → jobs terminating |
//! | `jobs_submitted` | `submitted` jobs | picks an instance or fails with no capacity |
//! | `jobs_running` | `provisioning`/`pulling`/`running` jobs | shim task, runner job, logs, exit |
//! | `jobs_terminating` | `terminating` jobs | graceful stop, task removal, instance release |
//! | `metrics` | `running` jobs | runner metrics samples every 10 s, TTL purge |
//! | `probes` | running service replicas, due probes | readiness probes every 3 s, replica registration |
//! | `instances` | SSH-fleet instances | deploy (pending → idle), health checks through the tunnel, release of terminating hosts |
//! | `gateways` | gateways | local gateway processes (start, restart, stop), registration of services and ready replicas |
//! | `fleets` | live fleets | instance termination, no-offers for cloud instances, `nodes` consolidation, fleet deletion |

mod fleets;
pub(crate) mod gateway_load;
mod gateway_sync;
pub mod gateways;
mod instances;
mod jobs;
pub mod metrics;
pub mod probes;
pub(crate) mod repeats;
mod running;
mod runs;

use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::state::AppState;

/// How long a loop owns a row it leased; a crashed owner's rows are free again after this.
pub(crate) const LEASE: jiff::SignedDuration = jiff::SignedDuration::from_secs(20);

/// Rows a loop leases per pass.
pub(crate) const BATCH: i64 = 100;

/// Wake-ups for the loops (in-process; a loop also runs on its tick).
#[derive(Debug, Default)]
pub struct Hints {
    runs: Notify,
    jobs: Notify,
    fleets: Notify,
    instances: Notify,
    pub(crate) gateways: Notify,
}

impl Hints {
    /// Something changed that any loop may act on.
    pub fn wake_all(&self) {
        self.runs.notify_one();
        self.jobs.notify_one();
        self.fleets.notify_one();
        self.instances.notify_one();
        self.gateways.notify_one();
    }
}

/// What wakes a loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Hint,
    Tick,
}

/// The shortest time between two passes of a loop: hints that arrive meanwhile (a burst of
/// submissions) are served by one pass.
const MIN_PASS_INTERVAL: Duration = Duration::from_millis(20);

async fn wait(notify: &Notify, tick: Duration) -> Trigger {
    tokio::time::sleep(MIN_PASS_INTERVAL).await;
    tokio::select! {
        () = notify.notified() => Trigger::Hint,
        () = tokio::time::sleep(tick) => Trigger::Tick,
    }
}

/// One pass of every loop, in order (what the loops do, for tests that step them).
pub async fn step(state: &AppState) -> Result<(), dstack_db::DbError> {
    runs::pass(state).await?;
    jobs::pass(state).await?;
    runs::pass(state).await?;
    // SSH hosts first, so that a fleet whose hosts were released goes in the same step.
    let mut tasks = JoinSet::new();
    instances::pass(state, &mut tasks).await?;
    tasks.join_all().await;
    fleets::pass(state).await?;
    Ok(())
}

/// One pass of the runs loop alone (for tests that play the job loops' part themselves).
pub async fn runs_pass(state: &AppState) -> Result<(), dstack_db::DbError> {
    runs::pass(state).await
}

/// Starts every loop; they run until the returned set is dropped or aborted.
pub fn spawn(state: AppState) -> JoinSet<()> {
    let mut set = JoinSet::new();
    let s = state.clone();
    set.spawn(async move {
        loop {
            if let Err(e) = runs::pass(&s).await {
                tracing::error!(error = %e, "runs loop");
            }
            let _ = wait(&s.hints.runs, Duration::from_secs(1)).await;
        }
    });
    set.spawn(metrics::run(state.clone()));
    set.spawn(probes::run(state.clone()));
    let s = state.clone();
    set.spawn(async move {
        loop {
            if let Err(e) = fleets::pass(&s).await {
                tracing::error!(error = %e, "fleets loop");
            }
            let _ = wait(&s.hints.fleets, Duration::from_secs(5)).await;
        }
    });
    let s = state.clone();
    set.spawn(async move {
        // The hosts' tasks; dropped (aborted) with the loop.
        let mut tasks = JoinSet::new();
        loop {
            if let Err(e) = instances::pass(&s, &mut tasks).await {
                tracing::error!(error = %e, "instances loop");
            }
            let mut changed = false;
            while let Some(done) = tasks.try_join_next() {
                changed |= done.unwrap_or(false);
            }
            if changed {
                s.hints.runs.notify_one();
                s.hints.jobs.notify_one();
                s.hints.fleets.notify_one();
            }
            let _ = wait(&s.hints.instances, Duration::from_secs(1).min(s.ssh.check_interval)).await;
        }
    });
    let s = state;
    set.spawn(async move {
        loop {
            let busy = match jobs::pass(&s).await {
                Ok(busy) => busy,
                Err(e) => {
                    tracing::error!(error = %e, "jobs loop");
                    false
                }
            };
            // Running jobs are polled often, so output reaches the user quickly.
            let tick = if busy { Duration::from_millis(200) } else { Duration::from_secs(1) };
            let _ = wait(&s.hints.jobs, tick).await;
        }
    });
    set
}
