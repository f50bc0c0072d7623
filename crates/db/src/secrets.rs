//! Project secrets. Values are stored as given; callers encrypt them first.

use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::{Db, DbError, get_timestamp, get_uuid, micros, not_found_on_foreign_key, uuid_text};

#[derive(Debug, Clone, PartialEq)]
pub struct SecretRow {
    pub id: Uuid,
    pub project_id: Uuid,
    pub name: String,
    /// The encrypted value.
    pub value: String,
    pub created_at: jiff::Timestamp,
    pub updated_at: jiff::Timestamp,
}

macro_rules! columns {
    () => {
        "id, project_id, name, value, created_at, updated_at"
    };
}

fn secret_from_row(row: &AnyRow) -> Result<SecretRow, sqlx::Error> {
    use sqlx::Row as _;
    Ok(SecretRow {
        id: get_uuid(row, "id")?,
        project_id: get_uuid(row, "project_id")?,
        name: row.try_get("name")?,
        value: row.try_get("value")?,
        created_at: get_timestamp(row, "created_at")?,
        updated_at: get_timestamp(row, "updated_at")?,
    })
}

impl Db {
    /// A project's secrets, by name.
    pub async fn list_secrets(&self, project_id: Uuid) -> Result<Vec<SecretRow>, DbError> {
        let rows =
            sqlx::query(concat!("SELECT ", columns!(), " FROM secrets WHERE project_id = $1 ORDER BY name"))
                .bind(uuid_text(project_id))
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(secret_from_row).collect::<Result<_, _>>()?)
    }

    pub async fn secret_by_name(&self, project_id: Uuid, name: &str) -> Result<Option<SecretRow>, DbError> {
        let row =
            sqlx::query(concat!("SELECT ", columns!(), " FROM secrets WHERE project_id = $1 AND name = $2"))
                .bind(uuid_text(project_id))
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.as_ref().map(secret_from_row).transpose()?)
    }

    /// Creates the secret or replaces its value; returns the stored row.
    /// [`DbError::NotFound`] if the project does not exist.
    pub async fn upsert_secret(
        &self,
        project_id: Uuid,
        name: &str,
        value: &str,
        now: jiff::Timestamp,
    ) -> Result<SecretRow, DbError> {
        let mut tx = self.begin_write().await?;
        let updated =
            sqlx::query("UPDATE secrets SET value = $3, updated_at = $4 WHERE project_id = $1 AND name = $2")
                .bind(uuid_text(project_id))
                .bind(name)
                .bind(value)
                .bind(micros(now))
                .execute(&mut *tx)
                .await?;
        if updated.rows_affected() == 0 {
            sqlx::query(concat!("INSERT INTO secrets (", columns!(), ") VALUES ($1, $2, $3, $4, $5, $5)"))
                .bind(uuid_text(Uuid::new_v4()))
                .bind(uuid_text(project_id))
                .bind(name)
                .bind(value)
                .bind(micros(now))
                .execute(&mut *tx)
                .await
                .map_err(not_found_on_foreign_key)?;
        }
        let row =
            sqlx::query(concat!("SELECT ", columns!(), " FROM secrets WHERE project_id = $1 AND name = $2"))
                .bind(uuid_text(project_id))
                .bind(name)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(secret_from_row(&row)?)
    }

    /// Deletes the named secrets in one transaction; names that do not exist are skipped.
    pub async fn delete_secrets(&self, project_id: Uuid, names: &[String]) -> Result<(), DbError> {
        let mut tx = self.begin_write().await?;
        for name in names {
            sqlx::query("DELETE FROM secrets WHERE project_id = $1 AND name = $2")
                .bind(uuid_text(project_id))
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
