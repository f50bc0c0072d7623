//! Readiness probes of service replicas and the replicas' registration.
//!
//! A probe's `due` doubles as its lease: the probes loop claims a due probe by moving `due`
//! from the value it read to the end of the execution's time limit
//! ([`Db::claim_probe`]), and writes the outcome only while `due` is still what it set
//! ([`Db::save_probe`]); a stale write changes nothing and reports `false`. The job rows'
//! `registered` column is written only here, never by [`Db::save_job`].

use std::sync::LazyLock;

use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::{Db, DbError, get_bool, get_timestamp, get_uuid, micros, not_found_on_foreign_key, uuid_text};

/// One probe of a job (`probe_num` is its index in `JobSpec.probes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeRow {
    pub job_id: Uuid,
    pub probe_num: i64,
    pub success_streak: i64,
    pub due: jiff::Timestamp,
    pub active: bool,
}

/// A running replica not registered yet: the job's id and spec (JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnregisteredReplica {
    pub job_id: Uuid,
    pub job_spec: String,
}

fn probe_from_row(row: &AnyRow) -> Result<ProbeRow, sqlx::Error> {
    use sqlx::Row as _;
    Ok(ProbeRow {
        job_id: get_uuid(row, "job_id")?,
        probe_num: row.try_get("probe_num")?,
        success_streak: row.try_get("success_streak")?,
        due: get_timestamp(row, "due")?,
        active: get_bool(row, "active")?,
    })
}

macro_rules! probe_columns {
    () => {
        "job_id, probe_num, success_streak, due, CAST(active AS INTEGER) AS active"
    };
}

impl Db {
    /// Stores the first state of a job's probes; probes already stored are left as they are.
    /// [`DbError::NotFound`] if the job is gone.
    pub async fn insert_probes(&self, probes: &[ProbeRow]) -> Result<(), DbError> {
        let mut tx = self.begin_write().await?;
        for p in probes {
            sqlx::query(
                "INSERT INTO job_probes (job_id, probe_num, success_streak, due, active) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(uuid_text(p.job_id))
            .bind(p.probe_num)
            .bind(p.success_streak)
            .bind(micros(p.due))
            .bind(p.active)
            .execute(&mut *tx)
            .await
            .map_err(not_found_on_foreign_key)?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Up to `limit` active probes due at `now`, the longest due first.
    pub async fn due_probes(&self, now: jiff::Timestamp, limit: i64) -> Result<Vec<ProbeRow>, DbError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            probe_columns!(),
            " FROM job_probes WHERE active = TRUE AND due <= $1 ORDER BY due ASC LIMIT $2"
        ))
        .bind(micros(now))
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(probe_from_row).collect::<Result<_, _>>()?)
    }

    /// The probes of these jobs, by job and probe number.
    pub async fn probes_of_jobs(&self, job_ids: &[Uuid]) -> Result<Vec<ProbeRow>, DbError> {
        static QUERY: LazyLock<String> = LazyLock::new(|| {
            format!(
                concat!(
                    "SELECT ",
                    probe_columns!(),
                    " FROM job_probes WHERE job_id IN {} ORDER BY job_id, probe_num"
                ),
                slots()
            )
        });
        let mut out = Vec::new();
        for chunk in job_ids.chunks(CHUNK) {
            let mut q = sqlx::query(QUERY.as_str());
            for i in 0..CHUNK {
                q = q.bind(chunk.get(i).map(|id| uuid_text(*id)));
            }
            for row in &q.fetch_all(&self.pool).await? {
                out.push(probe_from_row(row)?);
            }
        }
        Ok(out)
    }

    /// Claims a due probe for one execution: its `due` moves from `seen_due` to `lease_until`.
    /// `false` if another pass changed it first.
    pub async fn claim_probe(
        &self,
        probe: &ProbeRow,
        seen_due: jiff::Timestamp,
        lease_until: jiff::Timestamp,
    ) -> Result<bool, DbError> {
        let n = sqlx::query(
            "UPDATE job_probes SET due = $4 WHERE job_id = $1 AND probe_num = $2 AND due = $3 AND active = TRUE",
        )
        .bind(uuid_text(probe.job_id))
        .bind(probe.probe_num)
        .bind(micros(seen_due))
        .bind(micros(lease_until))
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Writes a probe's new state (streak, due, active) if its `due` is still `seen_due`
    /// (the value read or claimed); `false` if it was not.
    pub async fn save_probe(&self, probe: &ProbeRow, seen_due: jiff::Timestamp) -> Result<bool, DbError> {
        let n = sqlx::query(
            "UPDATE job_probes SET success_streak = $4, due = $5, active = $6 \
             WHERE job_id = $1 AND probe_num = $2 AND due = $3",
        )
        .bind(uuid_text(probe.job_id))
        .bind(probe.probe_num)
        .bind(micros(seen_due))
        .bind(probe.success_streak)
        .bind(micros(probe.due))
        .bind(probe.active)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Running first jobs of service replicas (`job_num` 0 of runs with a service spec) that
    /// are not registered yet, the oldest first.
    pub async fn unregistered_replicas(&self, limit: i64) -> Result<Vec<UnregisteredReplica>, DbError> {
        let rows = sqlx::query(
            "SELECT j.id AS id, j.job_spec AS job_spec FROM jobs j JOIN runs r ON r.id = j.run_id \
             WHERE j.status = 'running' AND j.job_num = 0 AND j.registered = FALSE \
             AND r.service_spec IS NOT NULL ORDER BY j.submitted_at ASC LIMIT $1",
        )
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                use sqlx::Row as _;
                Ok(UnregisteredReplica { job_id: get_uuid(row, "id")?, job_spec: row.try_get("job_spec")? })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }

    /// Registers a replica for service traffic while its job runs; `false` if it no longer does.
    pub async fn register_replica(&self, job_id: Uuid) -> Result<bool, DbError> {
        let n = sqlx::query("UPDATE jobs SET registered = TRUE WHERE id = $1 AND status = 'running'")
            .bind(uuid_text(job_id))
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Which of these jobs are registered.
    pub async fn registered_jobs(&self, job_ids: &[Uuid]) -> Result<Vec<Uuid>, DbError> {
        static QUERY: LazyLock<String> =
            LazyLock::new(|| format!("SELECT id FROM jobs WHERE registered = TRUE AND id IN {}", slots()));
        let mut out = Vec::new();
        for chunk in job_ids.chunks(CHUNK) {
            let mut q = sqlx::query(QUERY.as_str());
            for i in 0..CHUNK {
                q = q.bind(chunk.get(i).map(|id| uuid_text(*id)));
            }
            for row in &q.fetch_all(&self.pool).await? {
                out.push(get_uuid(row, "id")?);
            }
        }
        Ok(out)
    }
}

/// Ids bound per statement.
const CHUNK: usize = 100;

/// `($1, …, $100)`: up to [`CHUNK`] ids bound, the rest bound as NULL (which matches nothing),
/// so the statement text is the same for every call.
fn slots() -> String {
    let slots: Vec<String> = (1..=CHUNK).map(|i| format!("${i}")).collect();
    format!("({})", slots.join(", "))
}
