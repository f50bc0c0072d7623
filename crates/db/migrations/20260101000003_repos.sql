-- Repos a project's runs belong to, and each user's credentials for them (encrypted).
CREATE TABLE repos (
    id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    info TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    CONSTRAINT pk_repos PRIMARY KEY (id),
    CONSTRAINT uq_repos_project_id_name UNIQUE (project_id, name),
    CONSTRAINT fk_repos_project_id_projects FOREIGN KEY (project_id) REFERENCES projects (id) ON DELETE CASCADE
);

CREATE TABLE repo_creds (
    repo_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    creds TEXT NOT NULL,
    CONSTRAINT pk_repo_creds PRIMARY KEY (repo_id, user_id),
    CONSTRAINT fk_repo_creds_repo_id_repos FOREIGN KEY (repo_id) REFERENCES repos (id) ON DELETE CASCADE,
    CONSTRAINT fk_repo_creds_user_id_users FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
);
