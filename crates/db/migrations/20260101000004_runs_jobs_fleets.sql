-- Runs, their job submissions and logs; fleets and their instances.
-- JSON documents (specs, provisioning data) are TEXT written and read by the server.
-- Rows a background loop works on carry a lease: lock_token + lock_expires_at; a result is
-- written only `WHERE id = $1 AND lock_token = $2`, so a stale worker changes nothing.

CREATE TABLE fleets (
    id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    status_message TEXT NULL,
    spec TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    CONSTRAINT pk_fleets PRIMARY KEY (id),
    CONSTRAINT fk_fleets_project_id_projects FOREIGN KEY (project_id) REFERENCES projects (id) ON DELETE CASCADE
);

CREATE INDEX ix_fleets_project_id ON fleets (project_id);

CREATE TABLE instances (
    id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    fleet_id TEXT NOT NULL,
    name TEXT NOT NULL,
    instance_num BIGINT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    offer TEXT NOT NULL,
    job_provisioning_data TEXT NOT NULL,
    agent_url TEXT NULL,
    total_blocks BIGINT NOT NULL,
    busy_blocks BIGINT NOT NULL,
    last_job_processed_at BIGINT NULL,
    CONSTRAINT pk_instances PRIMARY KEY (id),
    CONSTRAINT fk_instances_project_id_projects FOREIGN KEY (project_id) REFERENCES projects (id) ON DELETE CASCADE,
    CONSTRAINT fk_instances_fleet_id_fleets FOREIGN KEY (fleet_id) REFERENCES fleets (id) ON DELETE CASCADE
);

CREATE INDEX ix_instances_fleet_id ON instances (fleet_id);

CREATE TABLE runs (
    id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    repo_id TEXT NULL,
    run_name TEXT NOT NULL,
    submitted_at BIGINT NOT NULL,
    last_processed_at BIGINT NOT NULL,
    status TEXT NOT NULL,
    termination_reason TEXT NULL,
    resubmission_attempt BIGINT NOT NULL DEFAULT 0,
    run_spec TEXT NOT NULL,
    priority BIGINT NOT NULL DEFAULT 0,
    deployment_num BIGINT NOT NULL DEFAULT 0,
    fleet_id TEXT NULL,
    next_triggered_at BIGINT NULL,
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    lock_token TEXT NULL,
    lock_expires_at BIGINT NULL,
    CONSTRAINT pk_runs PRIMARY KEY (id),
    CONSTRAINT fk_runs_project_id_projects FOREIGN KEY (project_id) REFERENCES projects (id) ON DELETE CASCADE,
    CONSTRAINT fk_runs_user_id_users FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
);

CREATE INDEX ix_runs_project_id_submitted_at ON runs (project_id, submitted_at);
CREATE INDEX ix_runs_status ON runs (status);

CREATE TABLE jobs (
    id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    run_name TEXT NOT NULL,
    job_num BIGINT NOT NULL,
    replica_num BIGINT NOT NULL,
    submission_num BIGINT NOT NULL,
    deployment_num BIGINT NOT NULL,
    job_name TEXT NOT NULL,
    submitted_at BIGINT NOT NULL,
    last_processed_at BIGINT NOT NULL,
    finished_at BIGINT NULL,
    status TEXT NOT NULL,
    termination_reason TEXT NULL,
    termination_reason_message TEXT NULL,
    exit_status BIGINT NULL,
    job_spec TEXT NOT NULL,
    job_provisioning_data TEXT NULL,
    job_runtime_data TEXT NULL,
    instance_id TEXT NULL,
    runner_timestamp BIGINT NULL,
    remove_at BIGINT NULL,
    graceful_termination_attempts BIGINT NULL,
    lock_token TEXT NULL,
    lock_expires_at BIGINT NULL,
    CONSTRAINT pk_jobs PRIMARY KEY (id),
    CONSTRAINT uq_jobs_submission UNIQUE (run_id, replica_num, job_num, submission_num),
    CONSTRAINT fk_jobs_project_id_projects FOREIGN KEY (project_id) REFERENCES projects (id) ON DELETE CASCADE,
    CONSTRAINT fk_jobs_run_id_runs FOREIGN KEY (run_id) REFERENCES runs (id) ON DELETE CASCADE
);

CREATE INDEX ix_jobs_status ON jobs (status);
CREATE INDEX ix_jobs_instance_id ON jobs (instance_id);

-- One row per log chunk the runner reported. `ts` is the runner's timestamp (unix ms, strictly
-- increasing per job and source), so re-pulling after a crash inserts nothing twice.
CREATE TABLE job_logs (
    job_id TEXT NOT NULL,
    source TEXT NOT NULL,
    ts BIGINT NOT NULL,
    message TEXT NOT NULL,
    CONSTRAINT pk_job_logs PRIMARY KEY (job_id, source, ts),
    CONSTRAINT fk_job_logs_job_id_jobs FOREIGN KEY (job_id) REFERENCES jobs (id) ON DELETE CASCADE
);

-- At most one live run per name in a project; finished runs are soft-deleted when the name is reused.
CREATE UNIQUE INDEX uq_runs_project_id_run_name_live ON runs (project_id, run_name) WHERE deleted = FALSE;
CREATE UNIQUE INDEX uq_fleets_project_id_name_live ON fleets (project_id, name) WHERE deleted = FALSE;
