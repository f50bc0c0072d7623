//! Metrics collection (spec agents.md §3.5, dstack's `scheduled_tasks/metrics.py`): every
//! 10 s each running job's runner is asked for `GET /api/metrics` and the sample is stored;
//! every 5 min samples past their TTL are deleted (1 h while the job runs, 7 days after it
//! finished; `DSTACK_SERVER_METRICS_RUNNING_TTL_SECONDS`, `…_FINISHED_TTL_SECONDS`).
//!
//! No lease: collection writes no job row, only samples. A job with a sample newer than 9 s
//! is skipped, so several servers over one database sample each job about once per period.

use std::time::Duration;

use dstack_db::{DbError, MetricsPointRow};
use uuid::Uuid;

use crate::state::AppState;

const PERIOD: Duration = Duration::from_secs(10);
const PURGE_PERIOD: Duration = Duration::from_secs(300);
const MIN_INTERVAL_MICROS: i64 = 9_000_000;
const MAX_JOBS: i64 = 100;
const PARALLEL: usize = 10;

/// The loop: collect, purge when due, sleep.
pub(super) async fn run(state: AppState) {
    let running_ttl = ttl_seconds("DSTACK_SERVER_METRICS_RUNNING_TTL_SECONDS", 3600);
    let finished_ttl = ttl_seconds("DSTACK_SERVER_METRICS_FINISHED_TTL_SECONDS", 7 * 24 * 3600);
    let mut last_purge: Option<tokio::time::Instant> = None;
    loop {
        if let Err(e) = collect(&state).await {
            tracing::error!(error = %e, "metrics collection");
        }
        if last_purge.is_none_or(|at| at.elapsed() >= PURGE_PERIOD) {
            last_purge = Some(tokio::time::Instant::now());
            let now = jiff::Timestamp::now().as_microsecond();
            let cutoffs = (now - running_ttl * 1_000_000, now - finished_ttl * 1_000_000);
            if let Err(e) = state.db.delete_old_metrics_points(cutoffs.0, cutoffs.1).await {
                tracing::error!(error = %e, "metrics purge");
            }
        }
        tokio::time::sleep(PERIOD).await;
    }
}

fn ttl_seconds(var: &str, default: i64) -> i64 {
    std::env::var(var).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// One collection pass; returns how many samples were stored.
pub async fn collect(state: &AppState) -> Result<usize, DbError> {
    let cutoff = jiff::Timestamp::now().as_microsecond() - MIN_INTERVAL_MICROS;
    let due = state.db.jobs_due_for_metrics(cutoff, MAX_JOBS).await?;
    let mut stored = 0;
    for batch in due.chunks(PARALLEL) {
        let mut tasks = tokio::task::JoinSet::new();
        for &id in batch {
            let state = state.clone();
            tasks.spawn(async move { sample(&state, id).await });
        }
        while let Some(joined) = tasks.join_next().await {
            let Ok(Some(point)) = joined else { continue };
            match state.db.insert_metrics_point(&point).await {
                Ok(()) => stored += 1,
                // The job was deleted meanwhile.
                Err(DbError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(stored)
}

/// Asks the job's runner for a sample; `None` if the runner cannot give one.
async fn sample(state: &AppState, job_id: Uuid) -> Option<MetricsPointRow> {
    let job = match state.db.job_by_id(job_id).await {
        Ok(job) => job?,
        Err(e) => {
            tracing::warn!(%job_id, error = %e, "loading a job for metrics");
            return None;
        }
    };
    let runner = super::running::runner_client(state, &job).await?;
    let m = match runner.metrics().await {
        Ok(Some(m)) => m,
        Ok(None) => {
            tracing::debug!(job = %job.job_name, "the runner has no metrics collector");
            return None;
        }
        Err(e) => {
            // The job may have just ended.
            tracing::warn!(job = %job.job_name, error = %e, "collecting metrics");
            return None;
        }
    };
    let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let gpus_memory: Vec<i64> = m.gpus.iter().map(|g| as_i64(g.gpu_memory_usage_bytes)).collect();
    let gpus_util: Vec<i64> = m.gpus.iter().map(|g| as_i64(g.gpu_util_percent)).collect();
    Some(MetricsPointRow {
        job_id,
        timestamp_micro: m.timestamp_micro,
        cpu_usage_micro: as_i64(m.cpu_usage_micro),
        memory_usage_bytes: as_i64(m.memory_usage_bytes),
        memory_working_set_bytes: as_i64(m.memory_working_set_bytes),
        gpus_memory_usage_bytes: serde_json::to_string(&gpus_memory).unwrap_or_else(|_| "[]".into()),
        gpus_util_percent: serde_json::to_string(&gpus_util).unwrap_or_else(|_| "[]".into()),
    })
}
