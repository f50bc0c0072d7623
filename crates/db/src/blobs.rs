//! Uploaded code and file archives (blobs as the caller encoded them, keyed by their sha256).

use uuid::Uuid;

use crate::{Db, DbError, get_uuid, uuid_text};

impl Db {
    /// Stores a repo's code blob unless one with that hash is there already.
    pub async fn save_code(&self, repo_row_id: Uuid, hash: &str, blob: &str) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO codes (id, repo_id, blob_hash, blob) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(uuid_text(Uuid::new_v4()))
        .bind(uuid_text(repo_row_id))
        .bind(hash)
        .bind(blob)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub async fn code(&self, repo_row_id: Uuid, hash: &str) -> Result<Option<String>, DbError> {
        use sqlx::Row as _;
        let row = sqlx::query("SELECT blob FROM codes WHERE repo_id = $1 AND blob_hash = $2")
            .bind(uuid_text(repo_row_id))
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("blob")).transpose()?)
    }

    /// Stores a user's file archive (or finds the one with that hash); returns its id.
    pub async fn save_file_archive(&self, user_id: Uuid, hash: &str, blob: &str) -> Result<Uuid, DbError> {
        sqlx::query(
            "INSERT INTO file_archives (id, user_id, blob_hash, blob) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(uuid_text(Uuid::new_v4()))
        .bind(uuid_text(user_id))
        .bind(hash)
        .bind(blob)
        .execute(&self.writer)
        .await?;
        self.file_archive_id(user_id, hash).await?.ok_or(DbError::NotFound)
    }

    pub async fn file_archive_id(&self, user_id: Uuid, hash: &str) -> Result<Option<Uuid>, DbError> {
        let row = sqlx::query("SELECT id FROM file_archives WHERE user_id = $1 AND blob_hash = $2")
            .bind(uuid_text(user_id))
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| get_uuid(&r, "id")).transpose()?)
    }

    /// A file archive's blob, by id.
    pub async fn file_archive(&self, id: Uuid) -> Result<Option<String>, DbError> {
        use sqlx::Row as _;
        let row = sqlx::query("SELECT blob FROM file_archives WHERE id = $1")
            .bind(uuid_text(id))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("blob")).transpose()?)
    }
}
