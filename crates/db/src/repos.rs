//! Repos (`repo_id` names a repo within a project; `info` is its JSON description) and each
//! user's credentials for a repo (stored as given; callers encrypt them).

use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::{Db, DbError, get_timestamp, get_uuid, micros, not_found_on_foreign_key, uuid_text};

#[derive(Debug, Clone, PartialEq)]
pub struct RepoRow {
    pub id: Uuid,
    pub project_id: Uuid,
    /// The client's `repo_id`.
    pub name: String,
    /// The repo info as JSON text.
    pub info: String,
    pub created_at: jiff::Timestamp,
}

macro_rules! columns {
    () => {
        "id, project_id, name, info, created_at"
    };
}

fn repo_from_row(row: &AnyRow) -> Result<RepoRow, sqlx::Error> {
    use sqlx::Row as _;
    Ok(RepoRow {
        id: get_uuid(row, "id")?,
        project_id: get_uuid(row, "project_id")?,
        name: row.try_get("name")?,
        info: row.try_get("info")?,
        created_at: get_timestamp(row, "created_at")?,
    })
}

impl Db {
    pub async fn list_repos(&self, project_id: Uuid) -> Result<Vec<RepoRow>, DbError> {
        let rows =
            sqlx::query(concat!("SELECT ", columns!(), " FROM repos WHERE project_id = $1 ORDER BY name"))
                .bind(uuid_text(project_id))
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(repo_from_row).collect::<Result<_, _>>()?)
    }

    pub async fn repo_by_name(&self, project_id: Uuid, name: &str) -> Result<Option<RepoRow>, DbError> {
        let row =
            sqlx::query(concat!("SELECT ", columns!(), " FROM repos WHERE project_id = $1 AND name = $2"))
                .bind(uuid_text(project_id))
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.as_ref().map(repo_from_row).transpose()?)
    }

    /// Creates the repo or replaces its info, and sets (`Some`) or clears (`None`) the user's
    /// credentials for it, in one transaction.
    pub async fn init_repo(
        &self,
        project_id: Uuid,
        name: &str,
        info: &str,
        user_id: Uuid,
        creds: Option<&str>,
        now: jiff::Timestamp,
    ) -> Result<RepoRow, DbError> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query("UPDATE repos SET info = $3 WHERE project_id = $1 AND name = $2")
            .bind(uuid_text(project_id))
            .bind(name)
            .bind(info)
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() == 0 {
            sqlx::query(concat!("INSERT INTO repos (", columns!(), ") VALUES ($1, $2, $3, $4, $5)"))
                .bind(uuid_text(Uuid::new_v4()))
                .bind(uuid_text(project_id))
                .bind(name)
                .bind(info)
                .bind(micros(now))
                .execute(&mut *tx)
                .await
                .map_err(not_found_on_foreign_key)?;
        }
        let row =
            sqlx::query(concat!("SELECT ", columns!(), " FROM repos WHERE project_id = $1 AND name = $2"))
                .bind(uuid_text(project_id))
                .bind(name)
                .fetch_one(&mut *tx)
                .await?;
        let repo = repo_from_row(&row)?;
        sqlx::query("DELETE FROM repo_creds WHERE repo_id = $1 AND user_id = $2")
            .bind(uuid_text(repo.id))
            .bind(uuid_text(user_id))
            .execute(&mut *tx)
            .await?;
        if let Some(creds) = creds {
            sqlx::query("INSERT INTO repo_creds (repo_id, user_id, creds) VALUES ($1, $2, $3)")
                .bind(uuid_text(repo.id))
                .bind(uuid_text(user_id))
                .bind(creds)
                .execute(&mut *tx)
                .await
                .map_err(not_found_on_foreign_key)?;
        }
        tx.commit().await?;
        Ok(repo)
    }

    /// The user's stored credentials for a repo, if any.
    pub async fn repo_creds(&self, repo_id: Uuid, user_id: Uuid) -> Result<Option<String>, DbError> {
        use sqlx::Row as _;
        let row = sqlx::query("SELECT creds FROM repo_creds WHERE repo_id = $1 AND user_id = $2")
            .bind(uuid_text(repo_id))
            .bind(uuid_text(user_id))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("creds")).transpose()?)
    }

    /// Deletes the named repos (and every user's credentials for them); unknown names are skipped.
    pub async fn delete_repos(&self, project_id: Uuid, names: &[String]) -> Result<(), DbError> {
        let mut tx = self.begin_write().await?;
        for name in names {
            sqlx::query(
                "DELETE FROM repo_creds WHERE repo_id IN (SELECT id FROM repos WHERE project_id = $1 AND name = $2)",
            )
            .bind(uuid_text(project_id))
            .bind(name)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM repos WHERE project_id = $1 AND name = $2")
                .bind(uuid_text(project_id))
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
