-- The instances loop (SSH hosts: deploy, health checks, release) leases instance rows as the
-- other loops lease theirs: lock_token + lock_expires_at. `unreachable`, `started_at` and
-- `first_termination_retry_at` are dstack's columns; `last_processed_at` paces the loop's
-- visits (deploy retries, health checks, release retries).

ALTER TABLE instances ADD COLUMN lock_token TEXT NULL;
ALTER TABLE instances ADD COLUMN lock_expires_at BIGINT NULL;
ALTER TABLE instances ADD COLUMN unreachable BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE instances ADD COLUMN started_at BIGINT NULL;
ALTER TABLE instances ADD COLUMN last_processed_at BIGINT NULL;
ALTER TABLE instances ADD COLUMN first_termination_retry_at BIGINT NULL;
