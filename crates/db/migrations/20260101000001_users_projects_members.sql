-- Tenancy: users, projects and project membership.
-- Portable across SQLite and PostgreSQL: TEXT, BIGINT, BOOLEAN only.
-- UUIDs are TEXT (hyphenated, lowercase); timestamps are BIGINT unix microseconds (UTC).

CREATE TABLE users (
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    original_name TEXT NULL,
    created_at BIGINT NOT NULL,
    global_role TEXT NOT NULL,
    email TEXT NULL,
    active BOOLEAN NOT NULL,
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    token_hash TEXT NOT NULL,
    token_encrypted TEXT NULL,
    ssh_public_key TEXT NULL,
    ssh_private_key TEXT NULL,
    CONSTRAINT pk_users PRIMARY KEY (id),
    CONSTRAINT uq_users_name UNIQUE (name),
    CONSTRAINT uq_users_token_hash UNIQUE (token_hash)
);

CREATE INDEX ix_users_email ON users (email);

CREATE TABLE projects (
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    original_name TEXT NULL,
    owner_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    is_public BOOLEAN NOT NULL,
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    CONSTRAINT pk_projects PRIMARY KEY (id),
    CONSTRAINT uq_projects_name UNIQUE (name),
    CONSTRAINT fk_projects_owner_id_users FOREIGN KEY (owner_id) REFERENCES users (id) ON DELETE CASCADE
);

CREATE INDEX ix_projects_owner_id ON projects (owner_id);

CREATE TABLE members (
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    project_role TEXT NOT NULL,
    CONSTRAINT pk_members PRIMARY KEY (project_id, user_id),
    CONSTRAINT fk_members_project_id_projects FOREIGN KEY (project_id) REFERENCES projects (id) ON DELETE CASCADE,
    CONSTRAINT fk_members_user_id_users FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
);

CREATE INDEX ix_members_user_id ON members (user_id);
