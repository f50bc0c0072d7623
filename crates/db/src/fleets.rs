//! Fleets and their instances.
//!
//! Fleets are leased by the fleets loop (`lock_token` + `lock_expires_at`); its results are
//! written by [`Db::save_fleet_pass`] only under that lease, and instance changes there are
//! compare-and-set on the status the loop saw, so a handler's concurrent change wins.

use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::{
    Db, DbError, conflict_on_unique, get_bool, get_timestamp, get_uuid, micros, opt_timestamp, uuid_text,
};

#[derive(Debug, Clone, PartialEq)]
pub struct FleetRow {
    pub id: Uuid,
    pub project_id: Uuid,
    pub name: String,
    pub status: String,
    pub status_message: Option<String>,
    /// The fleet spec, JSON, without SSH private keys.
    pub spec: String,
    /// The spec as submitted (private keys included), encrypted by the caller; `None` when
    /// it has nothing `spec` lacks.
    pub sensitive_spec: Option<String>,
    pub created_at: jiff::Timestamp,
    /// Consecutive consolidation passes that had to change something.
    pub consolidation_attempt: i64,
    pub last_consolidated_at: Option<jiff::Timestamp>,
    /// Until when the fleets loop holds the fleet (`None`: free).
    pub lock_expires_at: Option<jiff::Timestamp>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRow {
    pub id: Uuid,
    pub project_id: Uuid,
    pub fleet_id: Uuid,
    pub name: String,
    pub instance_num: i64,
    pub status: String,
    pub created_at: jiff::Timestamp,
    pub finished_at: Option<jiff::Timestamp>,
    /// What the instance offers, JSON (`None` for a cloud instance not provisioned yet).
    pub offer: Option<String>,
    /// Where it is and how to reach it, JSON (`None` as `offer`).
    pub job_provisioning_data: Option<String>,
    /// An SSH host's connection data (keys included), encrypted by the caller.
    pub remote_connection_info: Option<String>,
    /// The shim's base URL.
    pub agent_url: Option<String>,
    /// `None`: `blocks: auto`, unknown until the host is seen.
    pub total_blocks: Option<i64>,
    pub busy_blocks: i64,
    pub last_job_processed_at: Option<jiff::Timestamp>,
    pub termination_reason: Option<String>,
    pub termination_reason_message: Option<String>,
    /// The last health check did not reach the host's shim (dstack's `unreachable`).
    pub unreachable: bool,
    /// When the host was first seen ready (dstack's `started_at`).
    pub started_at: Option<jiff::Timestamp>,
    /// When the instances loop last worked on the row (a deploy attempt, a health check).
    pub last_processed_at: Option<jiff::Timestamp>,
    /// When the instances loop first tried to give the host back.
    pub first_termination_retry_at: Option<jiff::Timestamp>,
}

impl InstanceRow {
    /// A new instance `<fleet_name>-<num>` of a fleet, in `status`, with nothing known about
    /// its host yet: callers set what they know with struct update syntax.
    pub fn new(
        project_id: Uuid,
        fleet_id: Uuid,
        fleet_name: &str,
        instance_num: i64,
        status: &str,
        now: jiff::Timestamp,
    ) -> InstanceRow {
        InstanceRow {
            id: Uuid::new_v4(),
            project_id,
            fleet_id,
            name: format!("{fleet_name}-{instance_num}"),
            instance_num,
            status: status.to_owned(),
            created_at: now,
            finished_at: None,
            offer: None,
            job_provisioning_data: None,
            remote_connection_info: None,
            agent_url: None,
            total_blocks: Some(1),
            busy_blocks: 0,
            last_job_processed_at: None,
            termination_reason: None,
            termination_reason_message: None,
            unreachable: false,
            started_at: None,
            last_processed_at: None,
            first_termination_retry_at: None,
        }
    }
}

/// What the instances loop writes for one instance it leased ([`Db::save_instance_step`]):
/// the fields it owns. `busy_blocks` and `last_job_processed_at` belong to the jobs loop.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceStep {
    pub status: String,
    pub offer: Option<String>,
    pub job_provisioning_data: Option<String>,
    pub agent_url: Option<String>,
    pub total_blocks: Option<i64>,
    pub termination_reason: Option<String>,
    pub termination_reason_message: Option<String>,
    pub unreachable: bool,
    pub started_at: Option<jiff::Timestamp>,
    pub finished_at: Option<jiff::Timestamp>,
    pub last_processed_at: Option<jiff::Timestamp>,
    pub first_termination_retry_at: Option<jiff::Timestamp>,
    /// Soft-delete the row.
    pub delete: bool,
}

impl InstanceStep {
    /// The instance as it is, to be changed field by field.
    pub fn of(i: &InstanceRow) -> InstanceStep {
        InstanceStep {
            status: i.status.clone(),
            offer: i.offer.clone(),
            job_provisioning_data: i.job_provisioning_data.clone(),
            agent_url: i.agent_url.clone(),
            total_blocks: i.total_blocks,
            termination_reason: i.termination_reason.clone(),
            termination_reason_message: i.termination_reason_message.clone(),
            unreachable: i.unreachable,
            started_at: i.started_at,
            finished_at: i.finished_at,
            last_processed_at: i.last_processed_at,
            first_termination_retry_at: i.first_termination_retry_at,
            delete: false,
        }
    }
}

/// Which SSH instances a pass of the instances loop is due to visit: pending ones not tried
/// since `deploy_before`, available ones not checked since `check_before`, terminating ones
/// not tried since `release_before` (a first try is always due).
#[derive(Debug, Clone, Copy)]
pub struct InstancesDue {
    pub deploy_before: jiff::Timestamp,
    pub check_before: jiff::Timestamp,
    pub release_before: jiff::Timestamp,
}

/// An in-place update of a live fleet ([`Db::update_fleet`]).
#[derive(Debug, Clone, Copy)]
pub struct FleetUpdate<'a> {
    pub fleet_id: Uuid,
    /// The new spec without keys, and the full one encrypted.
    pub spec: &'a str,
    pub sensitive_spec: Option<&'a str>,
    pub new_instances: &'a [InstanceRow],
    /// Instances to mark `terminating` with `reason`.
    pub terminate: &'a [Uuid],
    pub reason: &'a str,
}

/// A change the fleets loop makes to one instance, applied only if the instance is still in
/// `from` status and not deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceTransition {
    pub id: Uuid,
    pub from: String,
    pub to: String,
    /// Also soft-delete the row.
    pub delete: bool,
    /// Set `finished_at` to the pass's time.
    pub finish: bool,
    /// Replace the termination reason and message when set.
    pub termination: Option<(String, Option<String>)>,
}

/// What one pass of the fleets loop writes for a fleet it leased.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FleetPassWrite {
    pub transitions: Vec<InstanceTransition>,
    pub new_instances: Vec<InstanceRow>,
    /// New `(consolidation_attempt, last_consolidated_at)`.
    pub consolidation: Option<(i64, jiff::Timestamp)>,
    /// Mark the fleet terminated and deleted, unless a live instance appeared meanwhile.
    pub delete_fleet: bool,
}

macro_rules! fleet_columns {
    () => {
        "id, project_id, name, status, status_message, spec, sensitive_spec, created_at, \
         consolidation_attempt, last_consolidated_at, lock_expires_at"
    };
}

macro_rules! instance_columns {
    () => {
        "id, project_id, fleet_id, name, instance_num, status, created_at, finished_at, offer, \
         job_provisioning_data, remote_connection_info, agent_url, total_blocks, busy_blocks, \
         last_job_processed_at, termination_reason, termination_reason_message"
    };
}

macro_rules! instance_select {
    () => {
        concat!(
            instance_columns!(),
            ", CAST(unreachable AS INTEGER) AS unreachable, started_at, last_processed_at, \
             first_termination_retry_at"
        )
    };
}

fn fleet_from_row(row: &AnyRow) -> Result<FleetRow, sqlx::Error> {
    use sqlx::Row as _;
    Ok(FleetRow {
        id: get_uuid(row, "id")?,
        project_id: get_uuid(row, "project_id")?,
        name: row.try_get("name")?,
        status: row.try_get("status")?,
        status_message: row.try_get("status_message")?,
        spec: row.try_get("spec")?,
        sensitive_spec: row.try_get("sensitive_spec")?,
        created_at: get_timestamp(row, "created_at")?,
        consolidation_attempt: row.try_get("consolidation_attempt")?,
        last_consolidated_at: opt_timestamp(row, "last_consolidated_at")?,
        lock_expires_at: opt_timestamp(row, "lock_expires_at")?,
    })
}

fn instance_from_row(row: &AnyRow) -> Result<InstanceRow, sqlx::Error> {
    use sqlx::Row as _;
    Ok(InstanceRow {
        id: get_uuid(row, "id")?,
        project_id: get_uuid(row, "project_id")?,
        fleet_id: get_uuid(row, "fleet_id")?,
        name: row.try_get("name")?,
        instance_num: row.try_get("instance_num")?,
        status: row.try_get("status")?,
        created_at: get_timestamp(row, "created_at")?,
        finished_at: opt_timestamp(row, "finished_at")?,
        offer: row.try_get("offer")?,
        job_provisioning_data: row.try_get("job_provisioning_data")?,
        remote_connection_info: row.try_get("remote_connection_info")?,
        agent_url: row.try_get("agent_url")?,
        total_blocks: row.try_get("total_blocks")?,
        busy_blocks: row.try_get("busy_blocks")?,
        last_job_processed_at: opt_timestamp(row, "last_job_processed_at")?,
        termination_reason: row.try_get("termination_reason")?,
        termination_reason_message: row.try_get("termination_reason_message")?,
        unreachable: get_bool(row, "unreachable")?,
        started_at: opt_timestamp(row, "started_at")?,
        last_processed_at: opt_timestamp(row, "last_processed_at")?,
        first_termination_retry_at: opt_timestamp(row, "first_termination_retry_at")?,
    })
}

async fn insert_instance(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    i: &InstanceRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(concat!(
        "INSERT INTO instances (",
        instance_columns!(),
        ", unreachable, started_at, last_processed_at, first_termination_retry_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"
    ))
    .bind(uuid_text(i.id))
    .bind(uuid_text(i.project_id))
    .bind(uuid_text(i.fleet_id))
    .bind(&i.name)
    .bind(i.instance_num)
    .bind(&i.status)
    .bind(micros(i.created_at))
    .bind(i.finished_at.map(micros))
    .bind(&i.offer)
    .bind(&i.job_provisioning_data)
    .bind(&i.remote_connection_info)
    .bind(&i.agent_url)
    .bind(i.total_blocks)
    .bind(i.busy_blocks)
    .bind(i.last_job_processed_at.map(micros))
    .bind(&i.termination_reason)
    .bind(&i.termination_reason_message)
    .bind(i.unreachable)
    .bind(i.started_at.map(micros))
    .bind(i.last_processed_at.map(micros))
    .bind(i.first_termination_retry_at.map(micros))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Marks live instances `terminating` with `reason` (a `terminated` one is soft-deleted
/// instead), inside `tx`.
async fn terminate_in_tx(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    ids: &[Uuid],
    reason: &str,
    now: jiff::Timestamp,
) -> Result<(), sqlx::Error> {
    for id in ids {
        sqlx::query(
            "UPDATE instances SET deleted = TRUE, deleted_at = $2 \
             WHERE id = $1 AND deleted = FALSE AND status = 'terminated'",
        )
        .bind(uuid_text(*id))
        .bind(micros(now))
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "UPDATE instances SET status = 'terminating', termination_reason = $2 \
             WHERE id = $1 AND deleted = FALSE AND status <> 'terminated'",
        )
        .bind(uuid_text(*id))
        .bind(reason)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl Db {
    /// Inserts a fleet with its instances in one transaction; a live fleet of the same name
    /// in the project is a [`DbError::Conflict`].
    pub async fn insert_fleet(&self, fleet: &FleetRow, instances: &[InstanceRow]) -> Result<(), DbError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO fleets (id, project_id, name, status, status_message, spec, sensitive_spec, \
             created_at, consolidation_attempt, last_consolidated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(uuid_text(fleet.id))
        .bind(uuid_text(fleet.project_id))
        .bind(&fleet.name)
        .bind(&fleet.status)
        .bind(&fleet.status_message)
        .bind(&fleet.spec)
        .bind(&fleet.sensitive_spec)
        .bind(micros(fleet.created_at))
        .bind(fleet.consolidation_attempt)
        .bind(fleet.last_consolidated_at.map(micros))
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict_on_unique(e, |_| format!("fleet {}", fleet.name)))?;
        for i in instances {
            insert_instance(&mut tx, i).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Updates a live fleet in place in one transaction: the new spec (consolidation starts
    /// over), `new_instances` inserted, `terminate` instances marked as [`Db::terminate_instances`]
    /// does. [`DbError::NotFound`] if the fleet is deleted or leased by a loop meanwhile.
    pub async fn update_fleet(&self, u: &FleetUpdate<'_>, now: jiff::Timestamp) -> Result<(), DbError> {
        let FleetUpdate { fleet_id, spec, sensitive_spec, new_instances, terminate, reason } = *u;
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE fleets SET spec = $2, sensitive_spec = $3, consolidation_attempt = 0 \
             WHERE id = $1 AND deleted = FALSE AND (lock_expires_at IS NULL OR lock_expires_at < $4)",
        )
        .bind(uuid_text(fleet_id))
        .bind(spec)
        .bind(sensitive_spec)
        .bind(micros(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(DbError::NotFound);
        }
        for i in new_instances {
            insert_instance(&mut tx, i).await?;
        }
        terminate_in_tx(&mut tx, terminate, reason, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks the given live instances `terminating` with `reason` (soft-deletes those already
    /// `terminated`) and the given fleets `terminating`, in one transaction.
    pub async fn terminate_instances(
        &self,
        fleet_ids: &[Uuid],
        instance_ids: &[Uuid],
        reason: &str,
        now: jiff::Timestamp,
    ) -> Result<(), DbError> {
        let mut tx = self.begin_write().await?;
        terminate_in_tx(&mut tx, instance_ids, reason, now).await?;
        for id in fleet_ids {
            sqlx::query("UPDATE fleets SET status = 'terminating' WHERE id = $1 AND deleted = FALSE")
                .bind(uuid_text(*id))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A project's live fleets, by creation.
    pub async fn list_fleets(&self, project_id: Uuid) -> Result<Vec<FleetRow>, DbError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            fleet_columns!(),
            " FROM fleets WHERE project_id = $1 AND deleted = FALSE ORDER BY created_at, id"
        ))
        .bind(uuid_text(project_id))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(fleet_from_row).collect::<Result<_, _>>()?)
    }

    /// A fleet by id, deleted or not.
    pub async fn fleet_by_id(&self, id: Uuid) -> Result<Option<FleetRow>, DbError> {
        let row = sqlx::query(concat!("SELECT ", fleet_columns!(), " FROM fleets WHERE id = $1"))
            .bind(uuid_text(id))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(fleet_from_row).transpose()?)
    }

    /// The live instances of a project's live fleets, by fleet and number.
    pub async fn list_instances(&self, project_id: Uuid) -> Result<Vec<InstanceRow>, DbError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            instance_select!(),
            " FROM instances WHERE project_id = $1 AND deleted = FALSE ORDER BY fleet_id, instance_num"
        ))
        .bind(uuid_text(project_id))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(instance_from_row).collect::<Result<_, _>>()?)
    }

    /// The live instances of one fleet, by number.
    pub async fn fleet_instances(&self, fleet_id: Uuid) -> Result<Vec<InstanceRow>, DbError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            instance_select!(),
            " FROM instances WHERE fleet_id = $1 AND deleted = FALSE ORDER BY instance_num"
        ))
        .bind(uuid_text(fleet_id))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(instance_from_row).collect::<Result<_, _>>()?)
    }

    /// Every live instance with SSH connection data, in any project, with its fleet's id.
    pub async fn list_remote_instances(&self) -> Result<Vec<InstanceRow>, DbError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            instance_select!(),
            " FROM instances WHERE deleted = FALSE AND remote_connection_info IS NOT NULL \
             ORDER BY created_at"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(instance_from_row).collect::<Result<_, _>>()?)
    }

    /// The ids of the given instances that jobs are assigned to.
    pub async fn instances_with_jobs(&self, instance_ids: &[Uuid]) -> Result<Vec<Uuid>, DbError> {
        let mut out = Vec::new();
        for id in instance_ids {
            let row = sqlx::query("SELECT instance_id FROM jobs WHERE instance_id = $1 LIMIT 1")
                .bind(uuid_text(*id))
                .fetch_optional(&self.pool)
                .await?;
            if row.is_some() {
                out.push(*id);
            }
        }
        Ok(out)
    }

    /// The ids of the jobs assigned to an instance (a job lets go of its instance when it ends).
    pub async fn jobs_on_instance(&self, instance_id: Uuid) -> Result<Vec<Uuid>, DbError> {
        let rows = sqlx::query("SELECT id FROM jobs WHERE instance_id = $1")
            .bind(uuid_text(instance_id))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|row| get_uuid(row, "id")).collect::<Result<_, _>>()?)
    }

    /// How many runs of the fleet are not in one of `finished` statuses.
    pub async fn count_fleet_runs_not_in(&self, fleet_id: Uuid, finished: &[&str]) -> Result<i64, DbError> {
        use sqlx::Row as _;
        let rows = sqlx::query("SELECT status FROM runs WHERE fleet_id = $1 AND deleted = FALSE")
            .bind(uuid_text(fleet_id))
            .fetch_all(&self.pool)
            .await?;
        let mut n = 0;
        for row in &rows {
            let status: String = row.try_get("status")?;
            if !finished.contains(&status.as_str()) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The live instances of a project's live fleets with their fleet's name, in one query.
    pub async fn list_instances_with_fleet(
        &self,
        project_id: Uuid,
    ) -> Result<Vec<(InstanceRow, String)>, DbError> {
        use sqlx::Row as _;
        let rows = sqlx::query(concat!(
            "SELECT ",
            instance_select!(),
            ", (SELECT f.name FROM fleets f WHERE f.id = instances.fleet_id AND f.deleted = FALSE) AS fleet_name \
             FROM instances WHERE project_id = $1 AND deleted = FALSE ORDER BY fleet_id, instance_num"
        ))
        .bind(uuid_text(project_id))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for row in &rows {
            let fleet: Option<String> = row.try_get("fleet_name")?;
            if let Some(fleet) = fleet {
                out.push((instance_from_row(row)?, fleet));
            }
        }
        Ok(out)
    }

    pub async fn instance_by_id(&self, id: Uuid) -> Result<Option<InstanceRow>, DbError> {
        let row = sqlx::query(concat!("SELECT ", instance_select!(), " FROM instances WHERE id = $1"))
            .bind(uuid_text(id))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(instance_from_row).transpose()?)
    }

    /// Records how to reach an instance's agent and what it offers (after a host check).
    pub async fn update_instance_agent(
        &self,
        id: Uuid,
        agent_url: &str,
        offer: &str,
        job_provisioning_data: &str,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE instances SET agent_url = $2, offer = $3, job_provisioning_data = $4 WHERE id = $1",
        )
        .bind(uuid_text(id))
        .bind(agent_url)
        .bind(offer)
        .bind(job_provisioning_data)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Sets an instance's `total_blocks` (the host was measured or its fleet's `blocks`
    /// changed) while no job holds any of its blocks; `false` if jobs do (then it keeps the
    /// old split) or there is no such instance.
    pub async fn set_instance_total_blocks(&self, id: Uuid, total_blocks: i64) -> Result<bool, DbError> {
        let n = sqlx::query("UPDATE instances SET total_blocks = $2 WHERE id = $1 AND busy_blocks = 0")
            .bind(uuid_text(id))
            .bind(total_blocks)
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    /// Takes a lease of `lease` on up to `limit` live fleets whose lease is free, least
    /// recently consolidated first. The batch shares one token, returned with the fleets.
    pub async fn lease_fleets(
        &self,
        limit: i64,
        now: jiff::Timestamp,
        lease: jiff::SignedDuration,
    ) -> Result<(Vec<FleetRow>, Uuid), DbError> {
        use sqlx::Row as _;
        let ids: Vec<String> = sqlx::query(
            "SELECT id FROM fleets WHERE deleted = FALSE \
             AND (lock_expires_at IS NULL OR lock_expires_at < $1) \
             ORDER BY last_consolidated_at, created_at LIMIT CAST($2 AS BIGINT)",
        )
        .bind(micros(now))
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>("id"))
        .collect::<Result<_, _>>()?;
        let token = Uuid::new_v4();
        let update = concat!(
            "UPDATE fleets SET lock_token = $2, lock_expires_at = $3 WHERE id = $1 AND deleted = FALSE \
             AND (lock_expires_at IS NULL OR lock_expires_at < $4) RETURNING ",
            fleet_columns!()
        );
        let mut out = Vec::new();
        for id in ids {
            if let Some(row) = self.lease_row(update, &id, token, now, lease).await? {
                out.push(fleet_from_row(&row)?);
            }
        }
        Ok((out, token))
    }

    /// Ends the lease `token` on every fleet still under it.
    pub async fn release_fleets(&self, token: Uuid) -> Result<(), DbError> {
        sqlx::query("UPDATE fleets SET lock_token = NULL, lock_expires_at = NULL WHERE lock_token = $1")
            .bind(uuid_text(token))
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Writes one fleets-loop pass for a leased fleet in one transaction and ends its lease.
    /// Returns `false`, writing nothing, if the lease is no longer `token`'s.
    pub async fn save_fleet_pass(
        &self,
        fleet_id: Uuid,
        token: Uuid,
        write: &FleetPassWrite,
        now: jiff::Timestamp,
    ) -> Result<bool, DbError> {
        let mut tx = self.begin_write().await?;
        let owner = sqlx::query("SELECT id FROM fleets WHERE id = $1 AND lock_token = $2")
            .bind(uuid_text(fleet_id))
            .bind(uuid_text(token))
            .fetch_optional(&mut *tx)
            .await?;
        if owner.is_none() {
            return Ok(false);
        }
        for t in &write.transitions {
            let (reason, message) = match &t.termination {
                Some((r, m)) => (Some(r.as_str()), m.as_deref()),
                None => (None, None),
            };
            sqlx::query(
                "UPDATE instances SET status = $3, \
                 deleted = CASE WHEN $4 THEN TRUE ELSE deleted END, \
                 deleted_at = CASE WHEN $4 THEN $6 ELSE deleted_at END, \
                 finished_at = CASE WHEN $5 THEN $6 ELSE finished_at END, \
                 termination_reason = CASE WHEN $7 THEN $8 ELSE termination_reason END, \
                 termination_reason_message = CASE WHEN $7 THEN $9 ELSE termination_reason_message END \
                 WHERE id = $1 AND status = $2 AND deleted = FALSE",
            )
            .bind(uuid_text(t.id))
            .bind(&t.from)
            .bind(&t.to)
            .bind(t.delete)
            .bind(t.finish)
            .bind(micros(now))
            .bind(t.termination.is_some())
            .bind(reason)
            .bind(message)
            .execute(&mut *tx)
            .await?;
        }
        for i in &write.new_instances {
            insert_instance(&mut tx, i).await?;
        }
        if let Some((attempt, at)) = write.consolidation {
            sqlx::query(
                "UPDATE fleets SET consolidation_attempt = $2, last_consolidated_at = $3 WHERE id = $1",
            )
            .bind(uuid_text(fleet_id))
            .bind(attempt)
            .bind(micros(at))
            .execute(&mut *tx)
            .await?;
        }
        if write.delete_fleet {
            sqlx::query(
                "UPDATE fleets SET status = 'terminated', deleted = TRUE, deleted_at = $2 WHERE id = $1 \
                 AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.fleet_id = fleets.id AND i.deleted = FALSE)",
            )
            .bind(uuid_text(fleet_id))
            .bind(micros(now))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE fleets SET lock_token = NULL, lock_expires_at = NULL WHERE id = $1")
            .bind(uuid_text(fleet_id))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Takes a lease of `lease` on up to `limit` live SSH instances (those with connection
    /// data) that are due (see [`InstancesDue`]) and whose lease is free, least recently
    /// processed first. Each instance gets a token of its own, so its work can end (and its
    /// lease be released) independently of the others'.
    pub async fn lease_ssh_instances(
        &self,
        due: InstancesDue,
        limit: i64,
        now: jiff::Timestamp,
        lease: jiff::SignedDuration,
    ) -> Result<Vec<(InstanceRow, Uuid)>, DbError> {
        use sqlx::Row as _;
        let ids: Vec<String> = sqlx::query(
            "SELECT id FROM instances WHERE deleted = FALSE AND remote_connection_info IS NOT NULL \
             AND (lock_expires_at IS NULL OR lock_expires_at < $1) AND ( \
             (status = 'pending' AND (last_processed_at IS NULL OR last_processed_at < $2)) \
             OR (status IN ('provisioning', 'idle', 'busy') \
                 AND (last_processed_at IS NULL OR last_processed_at < $3)) \
             OR (status = 'terminating' AND (first_termination_retry_at IS NULL \
                 OR last_processed_at IS NULL OR last_processed_at < $4))) \
             ORDER BY last_processed_at, created_at LIMIT CAST($5 AS BIGINT)",
        )
        .bind(micros(now))
        .bind(micros(due.deploy_before))
        .bind(micros(due.check_before))
        .bind(micros(due.release_before))
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>("id"))
        .collect::<Result<_, _>>()?;
        let update = concat!(
            "UPDATE instances SET lock_token = $2, lock_expires_at = $3 WHERE id = $1 AND deleted = FALSE \
             AND (lock_expires_at IS NULL OR lock_expires_at < $4) RETURNING ",
            instance_select!()
        );
        let mut out = Vec::new();
        for id in ids {
            let token = Uuid::new_v4();
            if let Some(row) = self.lease_row(update, &id, token, now, lease).await? {
                out.push((instance_from_row(&row)?, token));
            }
        }
        Ok(out)
    }

    /// Extends the lease `token` holds on an instance to `until`; `false` if it lost it.
    pub async fn renew_instance_lease(
        &self,
        id: Uuid,
        token: Uuid,
        until: jiff::Timestamp,
    ) -> Result<bool, DbError> {
        let n = sqlx::query("UPDATE instances SET lock_expires_at = $3 WHERE id = $1 AND lock_token = $2")
            .bind(uuid_text(id))
            .bind(uuid_text(token))
            .bind(micros(until))
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    /// Writes what the instances loop did to an instance it leased and ends the lease, in one
    /// transaction. The step is applied only if the lease is still `token`'s and the instance
    /// is still in status `from` (a user's delete meanwhile wins); returns whether it was.
    pub async fn save_instance_step(
        &self,
        id: Uuid,
        token: Uuid,
        from: &str,
        step: &InstanceStep,
        now: jiff::Timestamp,
    ) -> Result<bool, DbError> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE instances SET status = $4, offer = $5, job_provisioning_data = $6, agent_url = $7, \
             total_blocks = $8, termination_reason = $9, termination_reason_message = $10, \
             unreachable = $11, started_at = $12, finished_at = $13, last_processed_at = $14, \
             first_termination_retry_at = $15, \
             deleted = CASE WHEN $16 THEN TRUE ELSE deleted END, \
             deleted_at = CASE WHEN $16 THEN $17 ELSE deleted_at END \
             WHERE id = $1 AND lock_token = $2 AND status = $3 AND deleted = FALSE",
        )
        .bind(uuid_text(id))
        .bind(uuid_text(token))
        .bind(from)
        .bind(&step.status)
        .bind(&step.offer)
        .bind(&step.job_provisioning_data)
        .bind(&step.agent_url)
        .bind(step.total_blocks)
        .bind(&step.termination_reason)
        .bind(&step.termination_reason_message)
        .bind(step.unreachable)
        .bind(step.started_at.map(micros))
        .bind(step.finished_at.map(micros))
        .bind(step.last_processed_at.map(micros))
        .bind(step.first_termination_retry_at.map(micros))
        .bind(step.delete)
        .bind(micros(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("UPDATE instances SET lock_token = NULL, lock_expires_at = NULL WHERE id = $1 AND lock_token = $2")
            .bind(uuid_text(id))
            .bind(uuid_text(token))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(n > 0)
    }
}
