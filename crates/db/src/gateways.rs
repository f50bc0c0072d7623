//! Gateways: one row per gateway, its configuration JSON as the API returns it.

use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::{
    Db, DbError, conflict_on_unique, get_bool, get_timestamp, get_uuid, micros, not_found_on_foreign_key,
    uuid_text,
};

#[derive(Debug, Clone, PartialEq)]
pub struct GatewayRow {
    pub id: Uuid,
    pub project_id: Uuid,
    pub name: String,
    /// dstack's `GatewayStatus` value: `submitted`, `provisioning`, `running`, `failed`.
    pub status: String,
    pub status_message: Option<String>,
    pub is_default: bool,
    pub wildcard_domain: Option<String>,
    /// The configuration JSON (dstack's `GatewayConfiguration` with our `local` extension).
    pub configuration: String,
    /// `host:port` of the gateway process' API, once started.
    pub api_address: Option<String>,
    pub to_be_deleted: bool,
    pub created_at: jiff::Timestamp,
    pub last_processed_at: jiff::Timestamp,
}

macro_rules! columns {
    () => {
        "id, project_id, name, status, status_message, CAST(is_default AS INTEGER) AS is_default, \
         wildcard_domain, configuration, api_address, CAST(to_be_deleted AS INTEGER) AS to_be_deleted, \
         created_at, last_processed_at"
    };
}

fn gateway_from_row(row: &AnyRow) -> Result<GatewayRow, sqlx::Error> {
    use sqlx::Row as _;
    Ok(GatewayRow {
        id: get_uuid(row, "id")?,
        project_id: get_uuid(row, "project_id")?,
        name: row.try_get("name")?,
        status: row.try_get("status")?,
        status_message: row.try_get("status_message")?,
        is_default: get_bool(row, "is_default")?,
        wildcard_domain: row.try_get("wildcard_domain")?,
        configuration: row.try_get("configuration")?,
        api_address: row.try_get("api_address")?,
        to_be_deleted: get_bool(row, "to_be_deleted")?,
        created_at: get_timestamp(row, "created_at")?,
        last_processed_at: get_timestamp(row, "last_processed_at")?,
    })
}

impl Db {
    /// A project's gateways, oldest first.
    pub async fn list_gateways(&self, project_id: Uuid) -> Result<Vec<GatewayRow>, DbError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM gateways WHERE project_id = $1 ORDER BY created_at, name"
        ))
        .bind(uuid_text(project_id))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(gateway_from_row).collect::<Result<_, _>>()?)
    }

    /// Every gateway of every project (the gateways loop).
    pub async fn all_gateways(&self) -> Result<Vec<GatewayRow>, DbError> {
        let rows = sqlx::query(concat!("SELECT ", columns!(), " FROM gateways ORDER BY created_at"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(gateway_from_row).collect::<Result<_, _>>()?)
    }

    pub async fn gateway_by_name(&self, project_id: Uuid, name: &str) -> Result<Option<GatewayRow>, DbError> {
        let row =
            sqlx::query(concat!("SELECT ", columns!(), " FROM gateways WHERE project_id = $1 AND name = $2"))
                .bind(uuid_text(project_id))
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.as_ref().map(gateway_from_row).transpose()?)
    }

    /// The project's default gateway, if any.
    pub async fn default_gateway(&self, project_id: Uuid) -> Result<Option<GatewayRow>, DbError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM gateways WHERE project_id = $1 AND is_default = TRUE"
        ))
        .bind(uuid_text(project_id))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(gateway_from_row).transpose()?)
    }

    /// Inserts a new gateway (status `submitted`, not default).
    /// [`DbError::Conflict`] if the project has a gateway with that name.
    pub async fn insert_gateway(
        &self,
        project_id: Uuid,
        name: &str,
        wildcard_domain: Option<&str>,
        configuration: &str,
        now: jiff::Timestamp,
    ) -> Result<GatewayRow, DbError> {
        let id = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO gateways (id, project_id, name, status, status_message, is_default, wildcard_domain, \
             configuration, api_address, to_be_deleted, created_at, last_processed_at) \
             VALUES ($1, $2, $3, 'submitted', NULL, FALSE, $4, $5, NULL, FALSE, $6, $6)",
        )
        .bind(uuid_text(id))
        .bind(uuid_text(project_id))
        .bind(name)
        .bind(wildcard_domain)
        .bind(configuration)
        .bind(micros(now))
        .execute(&self.writer)
        .await
        .map_err(|e| match e.as_database_error() {
            Some(d) if d.is_foreign_key_violation() => not_found_on_foreign_key(e),
            _ => conflict_on_unique(e, |_| format!("Gateway {name}")),
        })?;
        self.gateway_by_id(id).await?.ok_or(DbError::NotFound)
    }

    pub async fn gateway_by_id(&self, id: Uuid) -> Result<Option<GatewayRow>, DbError> {
        let row = sqlx::query(concat!("SELECT ", columns!(), " FROM gateways WHERE id = $1"))
            .bind(uuid_text(id))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(gateway_from_row).transpose()?)
    }

    /// Makes `id` the project's only default gateway; `None` leaves the project without one.
    pub async fn set_default_gateway(&self, project_id: Uuid, id: Option<Uuid>) -> Result<(), DbError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE gateways SET is_default = FALSE WHERE project_id = $1")
            .bind(uuid_text(project_id))
            .execute(&mut *tx)
            .await?;
        if let Some(id) = id {
            sqlx::query("UPDATE gateways SET is_default = TRUE WHERE project_id = $1 AND id = $2")
                .bind(uuid_text(project_id))
                .bind(uuid_text(id))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Stores an in-place update: the configuration JSON and the wildcard domain.
    pub async fn update_gateway_configuration(
        &self,
        id: Uuid,
        configuration: &str,
        wildcard_domain: Option<&str>,
    ) -> Result<(), DbError> {
        sqlx::query("UPDATE gateways SET configuration = $2, wildcard_domain = $3 WHERE id = $1")
            .bind(uuid_text(id))
            .bind(configuration)
            .bind(wildcard_domain)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    pub async fn set_gateway_wildcard_domain(
        &self,
        id: Uuid,
        wildcard_domain: Option<&str>,
    ) -> Result<(), DbError> {
        sqlx::query("UPDATE gateways SET wildcard_domain = $2 WHERE id = $1")
            .bind(uuid_text(id))
            .bind(wildcard_domain)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Records what the gateways loop found.
    pub async fn set_gateway_status(
        &self,
        id: Uuid,
        status: &str,
        status_message: Option<&str>,
        api_address: Option<&str>,
        now: jiff::Timestamp,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE gateways SET status = $2, status_message = $3, api_address = $4, last_processed_at = $5 \
             WHERE id = $1",
        )
        .bind(uuid_text(id))
        .bind(status)
        .bind(status_message)
        .bind(api_address)
        .bind(micros(now))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Marks a gateway for deletion (the gateways loop stops its process and removes the row);
    /// it stops being the default at once.
    pub async fn mark_gateway_deleted(&self, id: Uuid) -> Result<(), DbError> {
        sqlx::query("UPDATE gateways SET to_be_deleted = TRUE, is_default = FALSE WHERE id = $1")
            .bind(uuid_text(id))
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    pub async fn delete_gateway_row(&self, id: Uuid) -> Result<(), DbError> {
        sqlx::query("DELETE FROM gateways WHERE id = $1").bind(uuid_text(id)).execute(&self.writer).await?;
        Ok(())
    }
}
