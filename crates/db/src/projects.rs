//! The `projects` and `members` tables.

use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::users::{UserRow, user_columns, user_from_row};
use crate::{
    Db, DbError, conflict_on_unique, deleted_name, get_bool, get_timestamp, get_uuid, micros,
    not_found_on_foreign_key, uuid_text,
};

/// A project as stored. Soft-deleted projects are never returned.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectRow {
    pub id: Uuid,
    pub name: String,
    pub owner_id: Uuid,
    /// Stored to the microsecond; finer digits are dropped on insert.
    pub created_at: jiff::Timestamp,
    pub is_public: bool,
}

/// The columns [`project_from_row`] reads, each prefixed by `$p`; booleans as integers.
#[rustfmt::skip]
macro_rules! project_columns {
    ($p:literal) => {
        concat!(
            $p, "id, ",
            $p, "name, ",
            $p, "owner_id, ",
            $p, "created_at, ",
            "CAST(", $p, "is_public AS INTEGER) AS is_public"
        )
    };
}

fn project_from_row(row: &AnyRow) -> Result<ProjectRow, sqlx::Error> {
    Ok(ProjectRow {
        id: get_uuid(row, "id")?,
        name: row.try_get("name")?,
        owner_id: get_uuid(row, "owner_id")?,
        created_at: get_timestamp(row, "created_at")?,
        is_public: get_bool(row, "is_public")?,
    })
}

impl Db {
    /// Inserts a project and makes its owner a member with `owner_role`, in one transaction.
    /// [`DbError::Conflict`] if a (non-deleted) project has this name,
    /// [`DbError::NotFound`] if the owner does not exist.
    pub async fn insert_project(&self, p: &ProjectRow, owner_role: &str) -> Result<(), DbError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO projects (id, name, owner_id, created_at, is_public, deleted) \
             VALUES ($1, $2, $3, $4, $5, FALSE)",
        )
        .bind(uuid_text(p.id))
        .bind(&p.name)
        .bind(uuid_text(p.owner_id))
        .bind(micros(p.created_at))
        .bind(p.is_public)
        .execute(&mut *tx)
        .await
        .map_err(|err| match err.as_database_error() {
            Some(db_err) if db_err.is_foreign_key_violation() => DbError::NotFound,
            _ => conflict_on_unique(err, |_| format!("project {:?}", p.name)),
        })?;
        sqlx::query("INSERT INTO members (project_id, user_id, project_role) VALUES ($1, $2, $3)")
            .bind(uuid_text(p.id))
            .bind(uuid_text(p.owner_id))
            .bind(owner_role)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The non-deleted project called `name`.
    pub async fn project_by_name(&self, name: &str) -> Result<Option<ProjectRow>, DbError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            project_columns!(""),
            " FROM projects WHERE name = $1 AND deleted = FALSE"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(project_from_row).transpose()?)
    }

    /// In one statement: the (non-deleted) user whose token hashes to `token_hash`, and, if
    /// there is a project called `project_name`, that project and the user's role in it (what
    /// [`Db::user_by_token_hash`], [`Db::project_by_name`] and [`Db::member_role`] return). `None` for an
    /// unknown token.
    pub async fn caller_in_project(
        &self,
        token_hash: &str,
        project_name: &str,
    ) -> Result<Option<(UserRow, Option<(ProjectRow, Option<String>)>)>, DbError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!("u."),
            ", p.id AS p_id, p.name AS p_name, p.owner_id AS p_owner_id, p.created_at AS p_created_at, \
             CAST(p.is_public AS INTEGER) AS p_is_public, m.project_role AS project_role \
             FROM users u LEFT JOIN projects p ON p.name = $2 AND p.deleted = FALSE \
             LEFT JOIN members m ON m.project_id = p.id AND m.user_id = u.id \
             WHERE u.token_hash = $1 AND u.deleted = FALSE"
        ))
        .bind(token_hash)
        .bind(project_name)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let user = user_from_row(&row)?;
        let project_id: Option<&str> = row.try_get("p_id")?;
        if project_id.is_none() {
            return Ok(Some((user, None)));
        }
        let project = ProjectRow {
            id: get_uuid(&row, "p_id")?,
            name: row.try_get("p_name")?,
            owner_id: get_uuid(&row, "p_owner_id")?,
            created_at: get_timestamp(&row, "p_created_at")?,
            is_public: get_bool(&row, "p_is_public")?,
        };
        let role: Option<String> = row.try_get("project_role")?;
        Ok(Some((user, Some((project, role)))))
    }

    /// All non-deleted projects, newest first.
    pub async fn list_projects(&self) -> Result<Vec<ProjectRow>, DbError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            project_columns!(""),
            " FROM projects WHERE deleted = FALSE ORDER BY created_at DESC, id DESC"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(project_from_row).collect::<Result<_, _>>()?)
    }

    /// The non-deleted projects `user_id` is a member of, newest first.
    pub async fn list_projects_for_member(&self, user_id: Uuid) -> Result<Vec<ProjectRow>, DbError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            project_columns!("p."),
            " FROM projects p JOIN members m ON m.project_id = p.id \
             WHERE m.user_id = $1 AND p.deleted = FALSE \
             ORDER BY p.created_at DESC, p.id DESC"
        ))
        .bind(uuid_text(user_id))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(project_from_row).collect::<Result<_, _>>()?)
    }

    /// Soft-deletes the named projects in one transaction: `deleted` and `original_name` are set
    /// and the name is changed to `_deleted_<ts>_<hex>`, so it can be taken again.
    /// Memberships stay. Names that match no project are skipped.
    pub async fn delete_projects(&self, names: &[String]) -> Result<(), DbError> {
        let mut tx = self.begin_write().await?;
        for name in names {
            sqlx::query(
                "UPDATE projects SET deleted = TRUE, original_name = name, name = $2 \
                 WHERE name = $1 AND deleted = FALSE",
            )
            .bind(name)
            .bind(deleted_name())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// [`DbError::NotFound`] if there is no such non-deleted project.
    pub async fn set_project_public(&self, project_id: Uuid, is_public: bool) -> Result<(), DbError> {
        let done = sqlx::query("UPDATE projects SET is_public = $2 WHERE id = $1 AND deleted = FALSE")
            .bind(uuid_text(project_id))
            .bind(is_public)
            .execute(&self.writer)
            .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound);
        }
        Ok(())
    }

    /// The project's members with their project roles, ordered by user name.
    pub async fn project_members(&self, project_id: Uuid) -> Result<Vec<(UserRow, String)>, DbError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            user_columns!("u."),
            ", m.project_role FROM members m JOIN users u ON u.id = m.user_id \
             WHERE m.project_id = $1 AND u.deleted = FALSE ORDER BY u.name, u.id"
        ))
        .bind(uuid_text(project_id))
        .fetch_all(&self.pool)
        .await?;
        let members = rows
            .iter()
            .map(|row| Ok((user_from_row(row)?, row.try_get("project_role")?)))
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(members)
    }

    /// The user's role in the project; `None` if the user is not a member.
    pub async fn member_role(&self, project_id: Uuid, user_id: Uuid) -> Result<Option<String>, DbError> {
        let role =
            sqlx::query_scalar("SELECT project_role FROM members WHERE project_id = $1 AND user_id = $2")
                .bind(uuid_text(project_id))
                .bind(uuid_text(user_id))
                .fetch_optional(&self.pool)
                .await?;
        Ok(role)
    }

    /// Replaces all members of the project with `members`, in one transaction.
    /// [`DbError::NotFound`] (and nothing changed) if the project or a user does not exist.
    pub async fn set_members(&self, project_id: Uuid, members: &[(Uuid, String)]) -> Result<(), DbError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM members WHERE project_id = $1")
            .bind(uuid_text(project_id))
            .execute(&mut *tx)
            .await?;
        for (user_id, role) in members {
            upsert_member(&mut tx, project_id, *user_id, role).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Adds members, or changes the role of existing ones, in one transaction.
    /// [`DbError::NotFound`] (and nothing changed) if the project or a user does not exist.
    pub async fn add_members(&self, project_id: Uuid, members: &[(Uuid, String)]) -> Result<(), DbError> {
        let mut tx = self.begin_write().await?;
        for (user_id, role) in members {
            upsert_member(&mut tx, project_id, *user_id, role).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes the users from the project; users that are not members are skipped.
    pub async fn remove_members(&self, project_id: Uuid, user_ids: &[Uuid]) -> Result<(), DbError> {
        let mut tx = self.begin_write().await?;
        for user_id in user_ids {
            sqlx::query("DELETE FROM members WHERE project_id = $1 AND user_id = $2")
                .bind(uuid_text(project_id))
                .bind(uuid_text(*user_id))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

async fn upsert_member(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    project_id: Uuid,
    user_id: Uuid,
    role: &str,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO members (project_id, user_id, project_role) VALUES ($1, $2, $3) \
         ON CONFLICT (project_id, user_id) DO UPDATE SET project_role = excluded.project_role",
    )
    .bind(uuid_text(project_id))
    .bind(uuid_text(user_id))
    .bind(role)
    .execute(&mut **tx)
    .await
    .map_err(not_found_on_foreign_key)?;
    Ok(())
}
