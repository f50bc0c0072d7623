//! Runs and their job submissions.
//!
//! Background loops take a lease on a row ([`Db::lease_runs`], [`Db::lease_jobs`]) and write
//! their result back only while the lease is theirs ([`Db::save_run`], [`Db::save_job`]): a
//! write with a stale token changes nothing and reports `false`.

use std::collections::HashMap;

use sqlx::Row as _;
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::{Cols, Db, DbError, conflict_on_unique, micros, uuid_text};

#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub id: Uuid,
    pub project_id: Uuid,
    pub user_id: Uuid,
    /// The client's `repo_id`.
    pub repo_id: Option<String>,
    pub run_name: String,
    pub submitted_at: jiff::Timestamp,
    pub last_processed_at: jiff::Timestamp,
    pub status: String,
    pub termination_reason: Option<String>,
    pub resubmission_attempt: i64,
    /// The effective run spec, JSON.
    pub run_spec: String,
    pub priority: i64,
    pub deployment_num: i64,
    pub fleet_id: Option<Uuid>,
    pub next_triggered_at: Option<jiff::Timestamp>,
    pub deleted: bool,
    /// A service's `Run.service`, JSON.
    pub service_spec: Option<String>,
    /// A service's desired replica count per group, JSON (written by `save_run` only).
    pub desired_replica_counts: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub id: Uuid,
    pub project_id: Uuid,
    pub run_id: Uuid,
    pub run_name: String,
    pub job_num: i64,
    pub replica_num: i64,
    pub submission_num: i64,
    pub deployment_num: i64,
    pub job_name: String,
    pub submitted_at: jiff::Timestamp,
    pub last_processed_at: jiff::Timestamp,
    pub finished_at: Option<jiff::Timestamp>,
    pub status: String,
    pub termination_reason: Option<String>,
    pub termination_reason_message: Option<String>,
    pub exit_status: Option<i64>,
    /// JSON.
    pub job_spec: String,
    /// JSON.
    pub job_provisioning_data: Option<String>,
    /// JSON.
    pub job_runtime_data: Option<String>,
    pub instance_id: Option<Uuid>,
    /// The runner's log and state cursor.
    pub runner_timestamp: Option<i64>,
    pub remove_at: Option<jiff::Timestamp>,
    pub graceful_termination_attempts: Option<i64>,
    /// JSON: the shim's last image pull progress, while the job pulls.
    pub image_pull_progress: Option<String>,
    /// Seconds without an SSH user (dev environments with `inactivity_duration`).
    pub inactivity_secs: Option<i64>,
    /// When a rolling deployment took the replica out of the proxy's routing to stop it
    /// (migration `20261205000101`); written only by [`Db::save_run_pass`].
    pub drain_started_at: Option<jiff::Timestamp>,
}

/// A run as listings show it: the row, its user's name and every job submission.
#[derive(Debug, Clone, PartialEq)]
pub struct RunListing {
    pub run: RunRow,
    /// Empty if the user row is gone.
    pub user_name: String,
    /// By replica, job and submission.
    pub jobs: Vec<JobRow>,
}

/// Which runs [`Db::list_runs`] returns, newest first unless `ascending`.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub project_id: Uuid,
    pub user_id: Option<Uuid>,
    pub repo_id: Option<String>,
    pub only_active: bool,
    /// Keyset pagination: start after this run.
    pub prev: Option<(jiff::Timestamp, Option<Uuid>)>,
    pub limit: i64,
    pub ascending: bool,
}

/// One stored log chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRow {
    /// The runner's timestamp, unix milliseconds (unique per job and source).
    pub ts: i64,
    /// Base64 of the raw bytes.
    pub message: String,
}

/// What [`Db::save_job`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveJob {
    Saved,
    /// The lease was lost; nothing was written.
    Stale,
    /// The instance had no free blocks left to claim; nothing was written.
    NoCapacity,
}

/// A page of [`Db::job_logs`].
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// Exclusive bounds, unix milliseconds.
    pub after: Option<i64>,
    pub before: Option<i64>,
    pub descending: bool,
    pub limit: i64,
}

/// The start of [`Db::place_jobs`]'s job update; the guard on the lease follows.
macro_rules! place_job_update {
    () => {
        "UPDATE jobs SET status = $3, job_provisioning_data = $4, job_runtime_data = $5, \
         instance_id = $6, last_processed_at = $7, termination_reason = $8, \
         lock_token = NULL, lock_expires_at = NULL WHERE id = $1 AND "
    };
}

/// A mark a runs pass sets on one job ([`Db::save_run_pass`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobMark {
    /// A rolling deployment found the job's spec unchanged: it belongs to the new deployment.
    Deployment { job_id: Uuid, deployment_num: i64 },
    /// A rolling deployment takes the job out of the proxy's routing, to stop it once drained.
    Drain { job_id: Uuid, at: jiff::Timestamp },
}

/// The columns [`read_run`] reads, in its order; `run_columns!("r.")` qualifies them for a join.
macro_rules! run_columns {
    () => {
        run_columns!("")
    };
    ($t:literal) => {
        concat!(
            $t,
            "id, ",
            $t,
            "project_id, ",
            $t,
            "user_id, ",
            $t,
            "repo_id, ",
            $t,
            "run_name, ",
            $t,
            "submitted_at, ",
            $t,
            "last_processed_at, ",
            $t,
            "status, ",
            $t,
            "termination_reason, ",
            $t,
            "resubmission_attempt, ",
            $t,
            "run_spec, ",
            $t,
            "priority, ",
            $t,
            "deployment_num, ",
            $t,
            "fleet_id, ",
            $t,
            "next_triggered_at, CAST(",
            $t,
            "deleted AS INTEGER) AS deleted, ",
            $t,
            "service_spec, ",
            $t,
            "desired_replica_counts"
        )
    };
}

/// The columns [`read_job`] reads, in its order (the insert's too); `job_columns!("j.")`
/// qualifies them for a join.
macro_rules! job_columns {
    () => {
        job_columns!("")
    };
    ($t:literal) => {
        concat!(
            $t,
            "id, ",
            $t,
            "project_id, ",
            $t,
            "run_id, ",
            $t,
            "run_name, ",
            $t,
            "job_num, ",
            $t,
            "replica_num, ",
            $t,
            "submission_num, ",
            $t,
            "deployment_num, ",
            $t,
            "job_name, ",
            $t,
            "submitted_at, ",
            $t,
            "last_processed_at, ",
            $t,
            "finished_at, ",
            $t,
            "status, ",
            $t,
            "termination_reason, ",
            $t,
            "termination_reason_message, ",
            $t,
            "exit_status, ",
            $t,
            "job_spec, ",
            $t,
            "job_provisioning_data, ",
            $t,
            "job_runtime_data, ",
            $t,
            "instance_id, ",
            $t,
            "runner_timestamp, ",
            $t,
            "remove_at, ",
            $t,
            "graceful_termination_attempts, ",
            $t,
            "image_pull_progress, ",
            $t,
            "inactivity_secs, ",
            $t,
            "drain_started_at"
        )
    };
}

/// `($1, …, $100)`: up to 100 values bound, the rest bound as NULL (which matches nothing).
macro_rules! in_100 {
    () => {
        "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35, $36, $37, $38, $39, $40, $41, $42, $43, $44, $45, $46, $47, $48, $49, $50, $51, $52, $53, $54, $55, $56, $57, $58, $59, $60, $61, $62, $63, $64, $65, $66, $67, $68, $69, $70, $71, $72, $73, $74, $75, $76, $77, $78, $79, $80, $81, $82, $83, $84, $85, $86, $87, $88, $89, $90, $91, $92, $93, $94, $95, $96, $97, $98, $99, $100)"
    };
}

/// `($1, …, $8)`, as [`in_100`].
macro_rules! in_8 {
    () => {
        "($1, $2, $3, $4, $5, $6, $7, $8)"
    };
}

const CHUNK: usize = 100;

fn run_from_row(row: &AnyRow) -> Result<RunRow, sqlx::Error> {
    read_run(&mut Cols::new(row))
}

fn job_from_row(row: &AnyRow) -> Result<JobRow, sqlx::Error> {
    read_job(&mut Cols::new(row))
}

/// The [`run_columns`] at the cursor (fields are read in the order written).
fn read_run(c: &mut Cols<'_>) -> Result<RunRow, sqlx::Error> {
    Ok(RunRow {
        id: c.uuid("id")?,
        project_id: c.uuid("project_id")?,
        user_id: c.uuid("user_id")?,
        repo_id: c.get("repo_id")?,
        run_name: c.get("run_name")?,
        submitted_at: c.timestamp("submitted_at")?,
        last_processed_at: c.timestamp("last_processed_at")?,
        status: c.get("status")?,
        termination_reason: c.get("termination_reason")?,
        resubmission_attempt: c.get("resubmission_attempt")?,
        run_spec: c.get("run_spec")?,
        priority: c.get("priority")?,
        deployment_num: c.get("deployment_num")?,
        fleet_id: c.opt_uuid("fleet_id")?,
        next_triggered_at: c.opt_timestamp("next_triggered_at")?,
        deleted: c.bool("deleted")?,
        service_spec: c.get("service_spec")?,
        desired_replica_counts: c.get("desired_replica_counts")?,
    })
}

/// The [`job_columns`] at the cursor (fields are read in the order written).
fn read_job(c: &mut Cols<'_>) -> Result<JobRow, sqlx::Error> {
    Ok(JobRow {
        id: c.uuid("id")?,
        project_id: c.uuid("project_id")?,
        run_id: c.uuid("run_id")?,
        run_name: c.get("run_name")?,
        job_num: c.get("job_num")?,
        replica_num: c.get("replica_num")?,
        submission_num: c.get("submission_num")?,
        deployment_num: c.get("deployment_num")?,
        job_name: c.get("job_name")?,
        submitted_at: c.timestamp("submitted_at")?,
        last_processed_at: c.timestamp("last_processed_at")?,
        finished_at: c.opt_timestamp("finished_at")?,
        status: c.get("status")?,
        termination_reason: c.get("termination_reason")?,
        termination_reason_message: c.get("termination_reason_message")?,
        exit_status: c.get("exit_status")?,
        job_spec: c.get("job_spec")?,
        job_provisioning_data: c.get("job_provisioning_data")?,
        job_runtime_data: c.get("job_runtime_data")?,
        instance_id: c.opt_uuid("instance_id")?,
        runner_timestamp: c.get("runner_timestamp")?,
        remove_at: c.opt_timestamp("remove_at")?,
        graceful_termination_attempts: c.get("graceful_termination_attempts")?,
        image_pull_progress: c.get("image_pull_progress")?,
        inactivity_secs: c.get("inactivity_secs")?,
        drain_started_at: c.opt_timestamp("drain_started_at")?,
    })
}

async fn insert_job(tx: &mut sqlx::Transaction<'static, sqlx::Any>, j: &JobRow) -> Result<(), DbError> {
    sqlx::query(concat!(
        "INSERT INTO jobs (",
        job_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, \
         $20, $21, $22, $23, $24, $25, $26)"
    ))
    .bind(uuid_text(j.id))
    .bind(uuid_text(j.project_id))
    .bind(uuid_text(j.run_id))
    .bind(&j.run_name)
    .bind(j.job_num)
    .bind(j.replica_num)
    .bind(j.submission_num)
    .bind(j.deployment_num)
    .bind(&j.job_name)
    .bind(micros(j.submitted_at))
    .bind(micros(j.last_processed_at))
    .bind(j.finished_at.map(micros))
    .bind(&j.status)
    .bind(&j.termination_reason)
    .bind(&j.termination_reason_message)
    .bind(j.exit_status)
    .bind(&j.job_spec)
    .bind(&j.job_provisioning_data)
    .bind(&j.job_runtime_data)
    .bind(j.instance_id.map(uuid_text))
    .bind(j.runner_timestamp)
    .bind(j.remove_at.map(micros))
    .bind(j.graceful_termination_attempts)
    .bind(&j.image_pull_progress)
    .bind(j.inactivity_secs)
    .bind(j.drain_started_at.map(micros))
    .execute(&mut **tx)
    .await
    .map_err(|e| conflict_on_unique(e, |_| format!("job {}", j.job_name)))?;
    Ok(())
}

impl Db {
    /// Inserts a run and its first job submissions in one transaction. A finished run of the
    /// same name is soft-deleted first; a live one makes this a [`DbError::Conflict`].
    pub async fn insert_run(&self, run: &RunRow, jobs: &[JobRow]) -> Result<(), DbError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(concat!(
            "UPDATE runs SET deleted = TRUE WHERE project_id = $1 AND run_name = $2 AND deleted = FALSE \
             AND status IN ",
            "('terminated', 'failed', 'done')"
        ))
        .bind(uuid_text(run.project_id))
        .bind(&run.run_name)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO runs (id, project_id, user_id, repo_id, run_name, submitted_at, last_processed_at, \
             status, termination_reason, resubmission_attempt, run_spec, priority, deployment_num, fleet_id, \
             next_triggered_at, deleted, service_spec) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        )
        .bind(uuid_text(run.id))
        .bind(uuid_text(run.project_id))
        .bind(uuid_text(run.user_id))
        .bind(&run.repo_id)
        .bind(&run.run_name)
        .bind(micros(run.submitted_at))
        .bind(micros(run.last_processed_at))
        .bind(&run.status)
        .bind(&run.termination_reason)
        .bind(run.resubmission_attempt)
        .bind(&run.run_spec)
        .bind(run.priority)
        .bind(run.deployment_num)
        .bind(run.fleet_id.map(uuid_text))
        .bind(run.next_triggered_at.map(micros))
        .bind(run.deleted)
        .bind(&run.service_spec)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict_on_unique(e, |_| format!("run {}", run.run_name)))?;
        for job in jobs {
            insert_job(&mut tx, job).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The live (not deleted) run of that name.
    pub async fn run_by_name(&self, project_id: Uuid, name: &str) -> Result<Option<RunRow>, DbError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE project_id = $1 AND run_name = $2 AND deleted = FALSE"
        ))
        .bind(uuid_text(project_id))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(run_from_row).transpose()?)
    }

    /// A run by id, deleted or not.
    pub async fn run_by_id(&self, id: Uuid) -> Result<Option<RunRow>, DbError> {
        let row = sqlx::query(concat!("SELECT ", run_columns!(), " FROM runs WHERE id = $1"))
            .bind(uuid_text(id))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(run_from_row).transpose()?)
    }

    /// A project's live runs by keyset page: `(submitted_at, id)` descending, or ascending
    /// (then ids descending) with `ascending`; each with its user's name and job submissions,
    /// all read by one statement.
    pub async fn list_runs(&self, f: &RunFilter) -> Result<Vec<RunListing>, DbError> {
        let (prev_at, prev_id) = match f.prev {
            Some((at, id)) => (Some(micros(at)), id.map(uuid_text)),
            None => (None, None),
        };
        // One static statement per direction; NULL parameters switch filters off. The page is
        // chosen by id first, then joined with the runs' rows and every submission of them: only
        // ids are sorted in SQL (sorting the joined rows made SQLite copy every spec twice more),
        // and the page and the jobs are put in order here.
        macro_rules! listing {
            ($page_order:literal, $after:literal, $order:literal) => {
                concat!(
                    "SELECT ",
                    run_columns!("r."),
                    ", COALESCE(u.name, '') AS user_name, ",
                    job_columns!("j."),
                    " FROM (SELECT id FROM runs WHERE deleted = FALSE AND project_id = $1 \
                     AND ($2 IS NULL OR user_id = $2) AND ($3 IS NULL OR repo_id = $3) \
                     AND ($4 = FALSE OR status NOT IN ('terminated', 'failed', 'done')) \
                     AND ($5 IS NULL OR ",
                    $after,
                    " OR (submitted_at = $5 AND $6 IS NOT NULL AND id ",
                    $order,
                    " $6)) ORDER BY ",
                    $page_order,
                    " LIMIT CAST($7 AS BIGINT)) page JOIN runs r ON r.id = page.id \
                     LEFT JOIN users u ON u.id = r.user_id LEFT JOIN jobs j ON j.run_id = r.id"
                )
            };
        }
        let sql = if f.ascending {
            listing!("submitted_at ASC, id DESC", "submitted_at > $5", "<")
        } else {
            listing!("submitted_at DESC, id ASC", "submitted_at < $5", ">")
        };
        let rows = sqlx::query(sql)
            .bind(uuid_text(f.project_id))
            .bind(f.user_id.map(uuid_text))
            .bind(&f.repo_id)
            .bind(f.only_active)
            .bind(prev_at)
            .bind(prev_id)
            .bind(f.limit.max(0))
            .fetch_all(&self.pool)
            .await?;
        let mut runs: Vec<RunListing> = Vec::new();
        let mut index_of: HashMap<Uuid, usize> = HashMap::new();
        for row in &rows {
            let mut c = Cols::new(row);
            let run = read_run(&mut c)?;
            let user_name: String = c.get("user_name")?;
            let job_id: Option<&str> = row.try_get(c.position())?;
            let job = if job_id.is_some() { Some(read_job(&mut c)?) } else { None };
            match index_of.get(&run.id) {
                Some(&i) => runs[i].jobs.extend(job),
                None => {
                    index_of.insert(run.id, runs.len());
                    runs.push(RunListing { run, user_name, jobs: job.into_iter().collect() });
                }
            }
        }
        runs.sort_by(|a, b| {
            let newest_first = b.run.submitted_at.cmp(&a.run.submitted_at).then(a.run.id.cmp(&b.run.id));
            if f.ascending { newest_first.reverse() } else { newest_first }
        });
        for listing in &mut runs {
            listing.jobs.sort_by_key(|j| (j.replica_num, j.job_num, j.submission_num));
        }
        Ok(runs)
    }

    /// Every submission of these runs, by run, replica, job and submission.
    pub async fn jobs_of_runs(&self, run_ids: &[Uuid]) -> Result<Vec<JobRow>, DbError> {
        let mut jobs = Vec::new();
        for chunk in run_ids.chunks(CHUNK) {
            let mut q = sqlx::query(concat!(
                "SELECT ",
                job_columns!(),
                " FROM jobs WHERE run_id IN ",
                in_100!(),
                " ORDER BY run_id, replica_num, job_num, submission_num"
            ));
            for i in 0..CHUNK {
                q = q.bind(chunk.get(i).map(|id| uuid_text(*id)));
            }
            let rows = q.fetch_all(&self.pool).await?;
            for row in &rows {
                jobs.push(job_from_row(row)?);
            }
        }
        Ok(jobs)
    }

    pub async fn job_by_id(&self, id: Uuid) -> Result<Option<JobRow>, DbError> {
        let row = sqlx::query(concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1"))
            .bind(uuid_text(id))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(job_from_row).transpose()?)
    }

    /// An in-place update of an active run (dstack's `apply_plan` on a run it can update): the
    /// new spec, priority and service spec, and the next `deployment_num`, only if the run is
    /// still unfinished at `expected_deployment_num`. Any lease on the run is broken, so a runs
    /// pass that decided on the old spec writes nothing. Returns whether the run was updated.
    pub async fn update_run_spec(
        &self,
        run_id: Uuid,
        expected_deployment_num: i64,
        run_spec: &str,
        priority: i64,
        service_spec: Option<&str>,
    ) -> Result<bool, DbError> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE runs SET run_spec = $3, priority = $4, service_spec = $5, deployment_num = $2 + 1, \
             lock_token = NULL, lock_expires_at = NULL WHERE id = $1 AND deployment_num = $2 \
             AND status NOT IN ('terminated', 'failed', 'done')",
        )
        .bind(uuid_text(run_id))
        .bind(expected_deployment_num)
        .bind(run_spec)
        .bind(priority)
        .bind(service_spec)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Records a user's stop: every named live, unfinished run becomes `terminating` with
    /// `reason`. Any lease on those runs is broken, so an in-flight worker's result is dropped.
    pub async fn stop_runs(&self, project_id: Uuid, names: &[String], reason: &str) -> Result<(), DbError> {
        let mut tx = self.begin_write().await?;
        for name in names {
            sqlx::query(
                "UPDATE runs SET status = 'terminating', termination_reason = $3, lock_token = NULL, \
                 lock_expires_at = NULL WHERE project_id = $1 AND run_name = $2 AND deleted = FALSE \
                 AND status NOT IN ('terminated', 'failed', 'done') \
                 AND (status <> 'terminating' OR $3 = 'aborted_by_user')",
            )
            .bind(uuid_text(project_id))
            .bind(name)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Soft-deletes the named finished runs; returns how many were deleted.
    pub async fn delete_runs(&self, project_id: Uuid, names: &[String]) -> Result<u64, DbError> {
        let mut tx = self.begin_write().await?;
        let mut n = 0;
        for name in names {
            n += sqlx::query(
                "UPDATE runs SET deleted = TRUE WHERE project_id = $1 AND run_name = $2 AND deleted = FALSE \
                 AND status IN ('terminated', 'failed', 'done')",
            )
            .bind(uuid_text(project_id))
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Takes a lease of `lease` on up to `limit` (at most 100) live runs in `statuses` whose
    /// lease is free, higher priority and least recently processed first. The batch shares one
    /// token, returned with the runs; [`Db::release_runs`] ends what is left of it.
    pub async fn lease_runs(
        &self,
        statuses: &[&str],
        limit: i64,
        now: jiff::Timestamp,
        lease: jiff::SignedDuration,
    ) -> Result<(Vec<RunRow>, Uuid), DbError> {
        let select = concat!(
            "SELECT id FROM runs WHERE deleted = FALSE AND status IN ",
            in_8!(),
            " AND (lock_expires_at IS NULL OR lock_expires_at < $9) \
             ORDER BY priority DESC, last_processed_at ASC LIMIT CAST($10 AS BIGINT)"
        );
        let update = concat!(
            "UPDATE runs SET lock_token = $101, lock_expires_at = $102 WHERE id IN ",
            in_100!(),
            " AND (lock_expires_at IS NULL OR lock_expires_at < $103) RETURNING ",
            run_columns!()
        );
        let (rows, token) = self.lease(select, update, statuses, limit, now, lease).await?;
        let runs = rows.iter().map(run_from_row).collect::<Result<Vec<_>, _>>()?;
        Ok((runs, token))
    }

    /// The two steps of a lease: pick candidate ids (`select`, binding up to 8 statuses, `now`
    /// and the limit), then take the free ones in one statement (`update`, binding 100 id
    /// slots, the token, the expiry and `now`), returned in the candidates' order.
    async fn lease(
        &self,
        select: &'static str,
        update: &'static str,
        statuses: &[&str],
        limit: i64,
        now: jiff::Timestamp,
        lease: jiff::SignedDuration,
    ) -> Result<(Vec<AnyRow>, Uuid), DbError> {
        use sqlx::Row as _;
        let mut q = sqlx::query(select);
        for i in 0..8 {
            q = q.bind(statuses.get(i).copied());
        }
        let candidates: Vec<String> = q
            .bind(micros(now))
            .bind(limit.clamp(0, CHUNK as i64))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>("id"))
            .collect::<Result<_, _>>()?;
        let token = Uuid::new_v4();
        if candidates.is_empty() {
            return Ok((Vec::new(), token));
        }
        let mut q = sqlx::query(update);
        for i in 0..CHUNK {
            q = q.bind(candidates.get(i).cloned());
        }
        let mut rows = q
            .bind(uuid_text(token))
            .bind(micros(now.checked_add(lease).unwrap_or(now)))
            .bind(micros(now))
            .fetch_all(&self.writer)
            .await?;
        rows.sort_by_key(|r| {
            let id: String = r.try_get("id").unwrap_or_default();
            candidates.iter().position(|c| *c == id)
        });
        Ok((rows, token))
    }

    /// Ends the lease `token` on every run still under it, marking them processed at `now`
    /// (so the next pass starts with other runs).
    pub async fn release_runs(&self, token: Uuid, now: jiff::Timestamp) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE runs SET lock_token = NULL, lock_expires_at = NULL, last_processed_at = $2 \
             WHERE lock_token = $1",
        )
        .bind(uuid_text(token))
        .bind(micros(now))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Writes a leased run back (status, reason, counters, fleet) and ends the lease, together
    /// with the given job rows: `updated` jobs are written only if unfinished in the database
    /// or unchanged, `new_jobs` are inserted. Returns `false`, writing nothing, if the lease
    /// is no longer `token`'s.
    pub async fn save_run(
        &self,
        run: &RunRow,
        token: Uuid,
        updated: &[JobRow],
        new_jobs: &[JobRow],
    ) -> Result<bool, DbError> {
        self.save_run_pass(run, token, updated, new_jobs, &[]).await
    }

    /// [`Db::save_run`] with marks on jobs besides: a rolling deployment's in-place
    /// `deployment_num` bumps and drain starts, which touch only their own column (and only
    /// unfinished jobs), whatever a job loop did to the job meanwhile.
    pub async fn save_run_pass(
        &self,
        run: &RunRow,
        token: Uuid,
        updated: &[JobRow],
        new_jobs: &[JobRow],
        marks: &[JobMark],
    ) -> Result<bool, DbError> {
        let mut tx = self.begin_write().await?;
        // `deployment_num` is not written: only an update (`update_run_spec`) changes it.
        let n = sqlx::query(
            "UPDATE runs SET status = $3, termination_reason = $4, resubmission_attempt = $5, \
             last_processed_at = $6, fleet_id = $7, next_triggered_at = $8, \
             desired_replica_counts = $9, lock_token = NULL, lock_expires_at = NULL WHERE id = $1 AND lock_token = $2",
        )
        .bind(uuid_text(run.id))
        .bind(uuid_text(token))
        .bind(&run.status)
        .bind(&run.termination_reason)
        .bind(run.resubmission_attempt)
        .bind(micros(run.last_processed_at))
        .bind(run.fleet_id.map(uuid_text))
        .bind(run.next_triggered_at.map(micros))
        .bind(&run.desired_replica_counts)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        for mark in marks {
            let (sql, id, value) = match mark {
                JobMark::Deployment { job_id, deployment_num } => (
                    "UPDATE jobs SET deployment_num = $2 WHERE id = $1 \
                     AND status NOT IN ('terminated', 'aborted', 'failed', 'done')",
                    job_id,
                    *deployment_num,
                ),
                JobMark::Drain { job_id, at } => (
                    "UPDATE jobs SET drain_started_at = $2 WHERE id = $1 AND drain_started_at IS NULL \
                     AND status NOT IN ('terminated', 'aborted', 'failed', 'done')",
                    job_id,
                    micros(*at),
                ),
            };
            sqlx::query(sql).bind(uuid_text(*id)).bind(value).execute(&mut *tx).await?;
        }
        for job in updated {
            // The run loop only moves unfinished jobs to `terminating`; a job a job loop has
            // finished meanwhile stays as it is.
            sqlx::query(
                "UPDATE jobs SET status = $2, termination_reason = $3, termination_reason_message = $4, \
                 graceful_termination_attempts = $5, last_processed_at = $6 \
                 WHERE id = $1 AND status NOT IN ('terminated', 'aborted', 'failed', 'done')",
            )
            .bind(uuid_text(job.id))
            .bind(&job.status)
            .bind(&job.termination_reason)
            .bind(&job.termination_reason_message)
            .bind(job.graceful_termination_attempts)
            .bind(micros(job.last_processed_at))
            .execute(&mut *tx)
            .await?;
        }
        for job in new_jobs {
            insert_job(&mut tx, job).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// As [`Db::lease_runs`], for job submissions; jobs of higher-priority runs come first.
    pub async fn lease_jobs(
        &self,
        statuses: &[&str],
        limit: i64,
        now: jiff::Timestamp,
        lease: jiff::SignedDuration,
    ) -> Result<(Vec<JobRow>, Uuid), DbError> {
        let select = concat!(
            "SELECT jobs.id AS id FROM jobs JOIN runs ON runs.id = jobs.run_id WHERE jobs.status IN ",
            in_8!(),
            " AND (jobs.lock_expires_at IS NULL OR jobs.lock_expires_at < $9) \
             ORDER BY runs.priority DESC, jobs.last_processed_at ASC LIMIT CAST($10 AS BIGINT)"
        );
        let update = concat!(
            "UPDATE jobs SET lock_token = $101, lock_expires_at = $102 WHERE id IN ",
            in_100!(),
            " AND (lock_expires_at IS NULL OR lock_expires_at < $103) RETURNING ",
            job_columns!()
        );
        let (rows, token) = self.lease(select, update, statuses, limit, now, lease).await?;
        let jobs = rows.iter().map(job_from_row).collect::<Result<Vec<_>, _>>()?;
        Ok((jobs, token))
    }

    /// Ends the lease `token` on every job still under it, changing nothing else.
    pub async fn release_jobs(&self, token: Uuid) -> Result<(), DbError> {
        sqlx::query("UPDATE jobs SET lock_token = NULL, lock_expires_at = NULL WHERE lock_token = $1")
            .bind(uuid_text(token))
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Writes a leased job back and ends the lease, with the log chunks pulled for it (a chunk
    /// already stored is skipped) and a change of its instance's busy blocks: a claim
    /// (positive) only while the instance has that many free blocks, a release (negative)
    /// always. Nothing is written unless everything is.
    pub async fn save_job(
        &self,
        job: &JobRow,
        token: Uuid,
        logs: &[(&str, LogRow)],
        instance_blocks: Option<(Uuid, i64)>,
    ) -> Result<SaveJob, DbError> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE jobs SET status = $3, termination_reason = $4, termination_reason_message = $5, \
             exit_status = $6, job_provisioning_data = $7, job_runtime_data = $8, instance_id = $9, \
             runner_timestamp = $10, remove_at = $11, graceful_termination_attempts = $12, \
             last_processed_at = $13, finished_at = $14, image_pull_progress = $15, inactivity_secs = $16, \
             lock_token = NULL, lock_expires_at = NULL WHERE id = $1 AND lock_token = $2",
        )
        .bind(uuid_text(job.id))
        .bind(uuid_text(token))
        .bind(&job.status)
        .bind(&job.termination_reason)
        .bind(&job.termination_reason_message)
        .bind(job.exit_status)
        .bind(&job.job_provisioning_data)
        .bind(&job.job_runtime_data)
        .bind(job.instance_id.map(uuid_text))
        .bind(job.runner_timestamp)
        .bind(job.remove_at.map(micros))
        .bind(job.graceful_termination_attempts)
        .bind(micros(job.last_processed_at))
        .bind(job.finished_at.map(micros))
        .bind(&job.image_pull_progress)
        .bind(job.inactivity_secs)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(SaveJob::Stale);
        }
        for (source, log) in logs {
            sqlx::query(
                "INSERT INTO job_logs (job_id, source, ts, message) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(uuid_text(job.id))
            .bind(*source)
            .bind(log.ts)
            .bind(&log.message)
            .execute(&mut *tx)
            .await?;
        }
        if let Some((instance_id, delta)) = instance_blocks {
            let n = sqlx::query(
                "UPDATE instances SET \
                 busy_blocks = CASE WHEN busy_blocks + $2 < 0 THEN 0 ELSE busy_blocks + $2 END, \
                 last_job_processed_at = $3, \
                 status = CASE WHEN busy_blocks + $2 > 0 THEN 'busy' ELSE 'idle' END \
                 WHERE id = $1 AND deleted = FALSE AND status IN ('idle', 'busy') \
                 AND ($2 <= 0 OR busy_blocks + $2 <= total_blocks)",
            )
            .bind(uuid_text(instance_id))
            .bind(delta)
            .bind(micros(job.last_processed_at))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 && delta > 0 {
                return Ok(SaveJob::NoCapacity);
            }
        }
        tx.commit().await?;
        Ok(SaveJob::Saved)
    }

    /// Places the jobs of a multi-node replica in one transaction: each job gets its
    /// provisioning state (status, provisioning and runtime data, instance) and claims its
    /// instance's blocks, all or nothing. The first job must be leased under `token` (a lease
    /// still running at `now`); the
    /// others must still be `submitted` and either leased under `token` or not leased at all
    /// (their lease, if any, ends). A lost lease, a sibling that moved on, or an instance
    /// without the free blocks writes nothing (`Stale` or `NoCapacity`).
    pub async fn place_jobs(
        &self,
        placements: &[(&JobRow, Uuid, i64)],
        token: Uuid,
        now: jiff::Timestamp,
    ) -> Result<SaveJob, DbError> {
        let mut tx = self.begin_write().await?;
        for (i, (job, instance_id, blocks)) in placements.iter().enumerate() {
            let sql = if i == 0 {
                concat!(place_job_update!(), "lock_token = $2 AND lock_expires_at >= $9")
            } else {
                concat!(
                    place_job_update!(),
                    "status = 'submitted' AND (lock_token = $2 OR lock_token IS NULL OR lock_expires_at < $9)"
                )
            };
            let n = sqlx::query(sql)
                .bind(uuid_text(job.id))
                .bind(uuid_text(token))
                .bind(&job.status)
                .bind(&job.job_provisioning_data)
                .bind(&job.job_runtime_data)
                .bind(uuid_text(*instance_id))
                .bind(micros(job.last_processed_at))
                .bind(&job.termination_reason)
                .bind(micros(now))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                return Ok(SaveJob::Stale);
            }
            let n = sqlx::query(
                "UPDATE instances SET busy_blocks = busy_blocks + $2, last_job_processed_at = $3, \
                 status = 'busy' WHERE id = $1 AND deleted = FALSE AND status IN ('idle', 'busy') \
                 AND busy_blocks + $2 <= total_blocks",
            )
            .bind(uuid_text(*instance_id))
            .bind(*blocks)
            .bind(micros(job.last_processed_at))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Ok(SaveJob::NoCapacity);
            }
        }
        tx.commit().await?;
        Ok(SaveJob::Saved)
    }

    /// A page of a job's logs from one source (`stdout` or `runner`).
    pub async fn job_logs(&self, job_id: Uuid, source: &str, q: &LogQuery) -> Result<Vec<LogRow>, DbError> {
        use sqlx::Row as _;
        let sql = if q.descending {
            "SELECT ts, message FROM job_logs WHERE job_id = $1 AND source = $2 \
             AND ($3 IS NULL OR ts > $3) AND ($4 IS NULL OR ts < $4) ORDER BY ts DESC LIMIT CAST($5 AS BIGINT)"
        } else {
            "SELECT ts, message FROM job_logs WHERE job_id = $1 AND source = $2 \
             AND ($3 IS NULL OR ts > $3) AND ($4 IS NULL OR ts < $4) ORDER BY ts ASC LIMIT CAST($5 AS BIGINT)"
        };
        let rows = sqlx::query(sql)
            .bind(uuid_text(job_id))
            .bind(source)
            .bind(q.after)
            .bind(q.before)
            .bind(q.limit.max(0))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok(LogRow { ts: r.try_get("ts")?, message: r.try_get("message")? }))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }
}
