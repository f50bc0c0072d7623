-- Gateways (`type: gateway`). `configuration` is the gateway's configuration JSON as dstack
-- writes it; `is_default` marks the project's default gateway (at most one per project, kept
-- by the server); `api_address` is where the local gateway process' API answers, once known.
CREATE TABLE gateways (
    id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    status_message TEXT,
    is_default BOOLEAN NOT NULL,
    wildcard_domain TEXT,
    configuration TEXT NOT NULL,
    api_address TEXT,
    to_be_deleted BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    last_processed_at BIGINT NOT NULL,
    CONSTRAINT pk_gateways PRIMARY KEY (id),
    CONSTRAINT uq_gateways_project_id_name UNIQUE (project_id, name),
    CONSTRAINT fk_gateways_project_id_projects FOREIGN KEY (project_id) REFERENCES projects (id) ON DELETE CASCADE
);
