//! Fleets and their instances.

use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::{Db, DbError, conflict_on_unique, get_timestamp, get_uuid, micros, opt_timestamp, uuid_text};

#[derive(Debug, Clone, PartialEq)]
pub struct FleetRow {
    pub id: Uuid,
    pub project_id: Uuid,
    pub name: String,
    pub status: String,
    pub status_message: Option<String>,
    /// The fleet spec, JSON.
    pub spec: String,
    pub created_at: jiff::Timestamp,
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
    /// What the instance offers, JSON.
    pub offer: String,
    /// Where it is and how to reach it, JSON.
    pub job_provisioning_data: String,
    /// The shim's base URL.
    pub agent_url: Option<String>,
    pub total_blocks: i64,
    pub busy_blocks: i64,
    pub last_job_processed_at: Option<jiff::Timestamp>,
}

macro_rules! fleet_columns {
    () => {
        "id, project_id, name, status, status_message, spec, created_at"
    };
}

macro_rules! instance_columns {
    () => {
        "id, project_id, fleet_id, name, instance_num, status, created_at, offer, job_provisioning_data, \
         agent_url, total_blocks, busy_blocks, last_job_processed_at"
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
        created_at: get_timestamp(row, "created_at")?,
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
        offer: row.try_get("offer")?,
        job_provisioning_data: row.try_get("job_provisioning_data")?,
        agent_url: row.try_get("agent_url")?,
        total_blocks: row.try_get("total_blocks")?,
        busy_blocks: row.try_get("busy_blocks")?,
        last_job_processed_at: opt_timestamp(row, "last_job_processed_at")?,
    })
}

impl Db {
    /// Inserts a fleet with its instances in one transaction; a live fleet of the same name
    /// in the project is a [`DbError::Conflict`].
    pub async fn insert_fleet(&self, fleet: &FleetRow, instances: &[InstanceRow]) -> Result<(), DbError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(concat!(
            "INSERT INTO fleets (",
            fleet_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .bind(uuid_text(fleet.id))
        .bind(uuid_text(fleet.project_id))
        .bind(&fleet.name)
        .bind(&fleet.status)
        .bind(&fleet.status_message)
        .bind(&fleet.spec)
        .bind(micros(fleet.created_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict_on_unique(e, |_| format!("fleet {}", fleet.name)))?;
        for i in instances {
            sqlx::query(concat!(
                "INSERT INTO instances (",
                instance_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
            ))
            .bind(uuid_text(i.id))
            .bind(uuid_text(i.project_id))
            .bind(uuid_text(i.fleet_id))
            .bind(&i.name)
            .bind(i.instance_num)
            .bind(&i.status)
            .bind(micros(i.created_at))
            .bind(&i.offer)
            .bind(&i.job_provisioning_data)
            .bind(&i.agent_url)
            .bind(i.total_blocks)
            .bind(i.busy_blocks)
            .bind(i.last_job_processed_at.map(micros))
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

    /// The live instances of a project's live fleets, by fleet and number.
    pub async fn list_instances(&self, project_id: Uuid) -> Result<Vec<InstanceRow>, DbError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            instance_columns!(),
            " FROM instances WHERE project_id = $1 AND deleted = FALSE ORDER BY fleet_id, instance_num"
        ))
        .bind(uuid_text(project_id))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(instance_from_row).collect::<Result<_, _>>()?)
    }

    /// The live instances of a project's live fleets with their fleet's name, in one query.
    pub async fn list_instances_with_fleet(
        &self,
        project_id: Uuid,
    ) -> Result<Vec<(InstanceRow, String)>, DbError> {
        use sqlx::Row as _;
        let rows = sqlx::query(concat!(
            "SELECT ",
            instance_columns!(),
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
        let row = sqlx::query(concat!("SELECT ", instance_columns!(), " FROM instances WHERE id = $1"))
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Soft-deletes the named live fleets and their instances.
    pub async fn delete_fleets(&self, project_id: Uuid, names: &[String]) -> Result<(), DbError> {
        let mut tx = self.begin_write().await?;
        for name in names {
            sqlx::query(
                "UPDATE instances SET deleted = TRUE, status = 'terminated' WHERE fleet_id IN \
                 (SELECT id FROM fleets WHERE project_id = $1 AND name = $2 AND deleted = FALSE)",
            )
            .bind(uuid_text(project_id))
            .bind(name)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE fleets SET deleted = TRUE, status = 'terminated' \
                 WHERE project_id = $1 AND name = $2 AND deleted = FALSE",
            )
            .bind(uuid_text(project_id))
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
