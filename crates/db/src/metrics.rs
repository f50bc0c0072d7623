//! Job metrics points: samples of a job's runner metrics, read back latest first.

use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::{Db, DbError, get_uuid, not_found_on_foreign_key, uuid_text};

/// One sample. The GPU lists are JSON (`[1024, 2048]`), one value per GPU, as dstack stores them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsPointRow {
    pub job_id: Uuid,
    /// The runner's clock, unix microseconds.
    pub timestamp_micro: i64,
    pub cpu_usage_micro: i64,
    pub memory_usage_bytes: i64,
    pub memory_working_set_bytes: i64,
    /// JSON list.
    pub gpus_memory_usage_bytes: String,
    /// JSON list.
    pub gpus_util_percent: String,
}

/// Which points [`Db::job_metrics_points`] returns: `after <= timestamp < before`, at most `limit`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsQuery {
    pub after: Option<i64>,
    pub before: Option<i64>,
    pub limit: i64,
}

fn point_from_row(row: &AnyRow) -> Result<MetricsPointRow, sqlx::Error> {
    use sqlx::Row as _;
    Ok(MetricsPointRow {
        job_id: get_uuid(row, "job_id")?,
        timestamp_micro: row.try_get("timestamp_micro")?,
        cpu_usage_micro: row.try_get("cpu_usage_micro")?,
        memory_usage_bytes: row.try_get("memory_usage_bytes")?,
        memory_working_set_bytes: row.try_get("memory_working_set_bytes")?,
        gpus_memory_usage_bytes: row.try_get("gpus_memory_usage_bytes")?,
        gpus_util_percent: row.try_get("gpus_util_percent")?,
    })
}

impl Db {
    /// Stores a sample; [`DbError::NotFound`] if the job is gone.
    pub async fn insert_metrics_point(&self, p: &MetricsPointRow) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO job_metrics_points (id, job_id, timestamp_micro, cpu_usage_micro, \
             memory_usage_bytes, memory_working_set_bytes, gpus_memory_usage_bytes, gpus_util_percent) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(uuid_text(Uuid::new_v4()))
        .bind(uuid_text(p.job_id))
        .bind(p.timestamp_micro)
        .bind(p.cpu_usage_micro)
        .bind(p.memory_usage_bytes)
        .bind(p.memory_working_set_bytes)
        .bind(&p.gpus_memory_usage_bytes)
        .bind(&p.gpus_util_percent)
        .execute(&self.writer)
        .await
        .map_err(not_found_on_foreign_key)?;
        Ok(())
    }

    /// A job's samples, latest first.
    pub async fn job_metrics_points(
        &self,
        job_id: Uuid,
        q: &MetricsQuery,
    ) -> Result<Vec<MetricsPointRow>, DbError> {
        let rows = sqlx::query(
            "SELECT job_id, timestamp_micro, cpu_usage_micro, memory_usage_bytes, memory_working_set_bytes, \
             gpus_memory_usage_bytes, gpus_util_percent FROM job_metrics_points \
             WHERE job_id = $1 AND ($2 IS NULL OR timestamp_micro >= $2) AND ($3 IS NULL OR timestamp_micro < $3) \
             ORDER BY timestamp_micro DESC LIMIT CAST($4 AS BIGINT)",
        )
        .bind(uuid_text(job_id))
        .bind(q.after)
        .bind(q.before)
        .bind(q.limit.max(0))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(point_from_row).collect::<Result<_, _>>()?)
    }

    /// Running jobs with no sample newer than `cutoff` (unix µs), least recently processed
    /// first: the ones to sample next.
    pub async fn jobs_due_for_metrics(&self, cutoff: i64, limit: i64) -> Result<Vec<Uuid>, DbError> {
        let rows = sqlx::query(
            "SELECT id FROM jobs WHERE status = 'running' AND NOT EXISTS (\
             SELECT 1 FROM job_metrics_points p WHERE p.job_id = jobs.id AND p.timestamp_micro > $1) \
             ORDER BY last_processed_at ASC LIMIT CAST($2 AS BIGINT)",
        )
        .bind(cutoff)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| get_uuid(r, "id")).collect::<Result<_, _>>()?)
    }

    /// Deletes samples older than `running_cutoff` of running jobs and older than
    /// `finished_cutoff` of finished ones (unix µs); returns how many went.
    pub async fn delete_old_metrics_points(
        &self,
        running_cutoff: i64,
        finished_cutoff: i64,
    ) -> Result<u64, DbError> {
        let running = sqlx::query(
            "DELETE FROM job_metrics_points WHERE timestamp_micro < $1 \
             AND job_id IN (SELECT id FROM jobs WHERE status = 'running')",
        )
        .bind(running_cutoff)
        .execute(&self.writer)
        .await?;
        let finished = sqlx::query(
            "DELETE FROM job_metrics_points WHERE timestamp_micro < $1 \
             AND job_id IN (SELECT id FROM jobs WHERE status IN ('terminated', 'aborted', 'failed', 'done'))",
        )
        .bind(finished_cutoff)
        .execute(&self.writer)
        .await?;
        Ok(running.rows_affected() + finished.rows_affected())
    }
}
