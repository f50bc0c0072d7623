-- Uploaded code (a repo's diff or tarball, by sha256) and archives of `files:` (per user, by
-- sha256). Blobs are base64 TEXT: one portable column type for SQLite and PostgreSQL.

CREATE TABLE codes (
    id TEXT NOT NULL,
    repo_id TEXT NOT NULL,
    blob_hash TEXT NOT NULL,
    blob TEXT NOT NULL,
    CONSTRAINT pk_codes PRIMARY KEY (id),
    CONSTRAINT uq_codes_repo_id_blob_hash UNIQUE (repo_id, blob_hash),
    CONSTRAINT fk_codes_repo_id_repos FOREIGN KEY (repo_id) REFERENCES repos (id) ON DELETE CASCADE
);

CREATE TABLE file_archives (
    id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    blob_hash TEXT NOT NULL,
    blob TEXT NOT NULL,
    CONSTRAINT pk_file_archives PRIMARY KEY (id),
    CONSTRAINT uq_file_archives_user_id_blob_hash UNIQUE (user_id, blob_hash),
    CONSTRAINT fk_file_archives_user_id_users FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
);
