//! The `users` table.

use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::{
    Db, DbError, conflict_on_unique, deleted_name, get_bool, get_timestamp, get_uuid, micros, uuid_text,
};

/// A user as stored. Soft-deleted users are never returned, except by [`Db::user_by_id`].
#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    pub id: Uuid,
    pub name: String,
    /// Stored to the microsecond; finer digits are dropped on insert.
    pub created_at: jiff::Timestamp,
    pub global_role: String,
    pub email: Option<String>,
    pub active: bool,
    /// SHA-256 hex of the user's API token: the lookup key for authentication.
    pub token_hash: String,
    /// The token encrypted with the server's key (so admins can be shown it), if stored.
    pub token_encrypted: Option<String>,
    pub ssh_public_key: Option<String>,
    pub ssh_private_key: Option<String>,
}

/// The columns [`user_from_row`] reads, each prefixed by `$p` (a table alias and a dot, or "");
/// booleans as integers (see [`crate::get_bool`]).
#[rustfmt::skip]
macro_rules! user_columns {
    ($p:literal) => {
        concat!(
            $p, "id, ",
            $p, "name, ",
            $p, "created_at, ",
            $p, "global_role, ",
            $p, "email, ",
            "CAST(", $p, "active AS INTEGER) AS active, ",
            $p, "token_hash, ",
            $p, "token_encrypted, ",
            $p, "ssh_public_key, ",
            $p, "ssh_private_key"
        )
    };
}
pub(crate) use user_columns;

pub(crate) fn user_from_row(row: &AnyRow) -> Result<UserRow, sqlx::Error> {
    Ok(UserRow {
        id: get_uuid(row, "id")?,
        name: row.try_get("name")?,
        created_at: get_timestamp(row, "created_at")?,
        global_role: row.try_get("global_role")?,
        email: row.try_get("email")?,
        active: get_bool(row, "active")?,
        token_hash: row.try_get("token_hash")?,
        token_encrypted: row.try_get("token_encrypted")?,
        ssh_public_key: row.try_get("ssh_public_key")?,
        ssh_private_key: row.try_get("ssh_private_key")?,
    })
}

impl Db {
    /// Inserts a new user; [`DbError::Conflict`] if the name or the token hash is taken.
    pub async fn insert_user(&self, u: &UserRow) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO users (id, name, created_at, global_role, email, active, deleted, \
             token_hash, token_encrypted, ssh_public_key, ssh_private_key) \
             VALUES ($1, $2, $3, $4, $5, $6, FALSE, $7, $8, $9, $10)",
        )
        .bind(uuid_text(u.id))
        .bind(&u.name)
        .bind(micros(u.created_at))
        .bind(&u.global_role)
        .bind(&u.email)
        .bind(u.active)
        .bind(&u.token_hash)
        .bind(&u.token_encrypted)
        .bind(&u.ssh_public_key)
        .bind(&u.ssh_private_key)
        .execute(&self.writer)
        .await
        .map_err(|err| {
            conflict_on_unique(err, |message| {
                if message.contains("token_hash") {
                    "user token".to_owned()
                } else if message.contains("name") {
                    format!("user name {:?}", u.name)
                } else {
                    format!("user {:?}", u.name)
                }
            })
        })?;
        Ok(())
    }

    /// The user whose token hashes to `token_hash`, active or not; never a deleted one.
    pub async fn user_by_token_hash(&self, token_hash: &str) -> Result<Option<UserRow>, DbError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(""),
            " FROM users WHERE token_hash = $1 AND deleted = FALSE"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// The user called `name`, active or not; never a deleted one.
    pub async fn user_by_name(&self, name: &str) -> Result<Option<UserRow>, DbError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(""),
            " FROM users WHERE name = $1 AND deleted = FALSE"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// A non-deleted user whose name equals `name` ignoring ASCII case (dstack refuses such
    /// near-duplicate names).
    pub async fn user_by_name_ignore_case(&self, name: &str) -> Result<Option<UserRow>, DbError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(""),
            " FROM users WHERE LOWER(name) = LOWER($1) AND deleted = FALSE"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// A non-deleted user with this email (the first by name if several share it).
    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>, DbError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(""),
            " FROM users WHERE email = $1 AND deleted = FALSE ORDER BY name LIMIT 1"
        ))
        .bind(email)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// The user with this id, **including a deleted one** (still the owner of its projects);
    /// a deleted user's `name` is its `_deleted_…` name and `active` is false.
    pub async fn user_by_id(&self, id: Uuid) -> Result<Option<UserRow>, DbError> {
        let row = sqlx::query(concat!("SELECT ", user_columns!(""), " FROM users WHERE id = $1"))
            .bind(uuid_text(id))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// All users that are not deleted, newest first.
    pub async fn list_users(&self) -> Result<Vec<UserRow>, DbError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            user_columns!(""),
            " FROM users WHERE deleted = FALSE ORDER BY created_at DESC, id DESC"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
    }

    /// Sets the role, email and active flag of the user called `name`;
    /// `None` if there is no such (non-deleted) user.
    pub async fn update_user(
        &self,
        name: &str,
        global_role: &str,
        email: Option<&str>,
        active: bool,
    ) -> Result<Option<UserRow>, DbError> {
        let row = sqlx::query(concat!(
            "UPDATE users SET global_role = $2, email = $3, active = $4 \
             WHERE name = $1 AND deleted = FALSE RETURNING ",
            user_columns!("")
        ))
        .bind(name)
        .bind(global_role)
        .bind(email)
        .bind(active)
        .fetch_optional(&self.writer)
        .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// Replaces the token (its hash and encrypted copy) of the user called `name` (token
    /// rotation); `None` if there is no such user, [`DbError::Conflict`] if another user has
    /// this hash.
    pub async fn set_user_token(
        &self,
        name: &str,
        token_hash: &str,
        token_encrypted: &str,
    ) -> Result<Option<UserRow>, DbError> {
        let row = sqlx::query(concat!(
            "UPDATE users SET token_hash = $2, token_encrypted = $3 \
             WHERE name = $1 AND deleted = FALSE RETURNING ",
            user_columns!("")
        ))
        .bind(name)
        .bind(token_hash)
        .bind(token_encrypted)
        .fetch_optional(&self.writer)
        .await
        .map_err(|err| conflict_on_unique(err, |_| "user token".to_owned()))?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// Stores the user's SSH key pair; [`DbError::NotFound`] if there is no such user.
    pub async fn set_user_ssh_keys(&self, user_id: Uuid, public: &str, private: &str) -> Result<(), DbError> {
        let done = sqlx::query(
            "UPDATE users SET ssh_public_key = $2, ssh_private_key = $3 \
             WHERE id = $1 AND deleted = FALSE",
        )
        .bind(uuid_text(user_id))
        .bind(public)
        .bind(private)
        .execute(&self.writer)
        .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound);
        }
        Ok(())
    }

    /// Soft-deletes the named users in one transaction, as dstack does: the row stays (it may own
    /// projects), `deleted` and `original_name` are set, `active` is cleared, the name is changed to
    /// `_deleted_<ts>_<hex>` so it can be taken again, and the user's memberships are removed.
    /// Names that match no user are skipped.
    pub async fn delete_users(&self, names: &[String]) -> Result<(), DbError> {
        let mut tx = self.begin_write().await?;
        for name in names {
            let id: Option<String> =
                sqlx::query_scalar("SELECT id FROM users WHERE name = $1 AND deleted = FALSE")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(id) = id else { continue };
            sqlx::query(
                "UPDATE users SET deleted = TRUE, active = FALSE, original_name = name, name = $2 \
                 WHERE id = $1",
            )
            .bind(&id)
            .bind(deleted_name())
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM members WHERE user_id = $1").bind(&id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The number of users that are not deleted.
    pub async fn count_users(&self) -> Result<i64, DbError> {
        let n = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE deleted = FALSE")
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }
}
