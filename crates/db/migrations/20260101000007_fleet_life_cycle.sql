-- The fleet and instance life cycle: SSH hosts, termination, consolidation, leases.
--
-- Instances are rebuilt (SQLite cannot drop NOT NULL): `offer`, `job_provisioning_data` and
-- `total_blocks` become nullable (a cloud instance has no offer until provisioned; `blocks:
-- auto` leaves the block count unknown until the host is seen). `remote_connection_info` is the
-- SSH host's connection data (keys included), encrypted by the server. The new table keeps
-- the constraint names of its build (`*_v2`).

CREATE TABLE instances_v2 (
    id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    fleet_id TEXT NOT NULL,
    name TEXT NOT NULL,
    instance_num BIGINT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    deleted_at BIGINT NULL,
    finished_at BIGINT NULL,
    offer TEXT NULL,
    job_provisioning_data TEXT NULL,
    remote_connection_info TEXT NULL,
    agent_url TEXT NULL,
    total_blocks BIGINT NULL,
    busy_blocks BIGINT NOT NULL,
    last_job_processed_at BIGINT NULL,
    termination_reason TEXT NULL,
    termination_reason_message TEXT NULL,
    CONSTRAINT pk_instances_v2 PRIMARY KEY (id),
    CONSTRAINT fk_instances_v2_project_id_projects FOREIGN KEY (project_id) REFERENCES projects (id) ON DELETE CASCADE,
    CONSTRAINT fk_instances_v2_fleet_id_fleets FOREIGN KEY (fleet_id) REFERENCES fleets (id) ON DELETE CASCADE
);

INSERT INTO instances_v2 (id, project_id, fleet_id, name, instance_num, status, created_at, deleted, offer,
    job_provisioning_data, agent_url, total_blocks, busy_blocks, last_job_processed_at)
SELECT id, project_id, fleet_id, name, instance_num, status, created_at, deleted, offer,
    job_provisioning_data, agent_url, total_blocks, busy_blocks, last_job_processed_at
FROM instances;

DROP TABLE instances;
ALTER TABLE instances_v2 RENAME TO instances;
CREATE INDEX ix_instances_fleet_id ON instances (fleet_id);
CREATE INDEX ix_instances_status ON instances (status);

-- `sensitive_spec`: the spec as submitted (SSH private keys included), encrypted by the server;
-- `spec` holds it without the keys. Consolidation backs off by `consolidation_attempt`.
ALTER TABLE fleets ADD COLUMN sensitive_spec TEXT NULL;
ALTER TABLE fleets ADD COLUMN deleted_at BIGINT NULL;
ALTER TABLE fleets ADD COLUMN consolidation_attempt BIGINT NOT NULL DEFAULT 0;
ALTER TABLE fleets ADD COLUMN last_consolidated_at BIGINT NULL;
ALTER TABLE fleets ADD COLUMN lock_token TEXT NULL;
ALTER TABLE fleets ADD COLUMN lock_expires_at BIGINT NULL;
CREATE INDEX ix_fleets_status ON fleets (status);
