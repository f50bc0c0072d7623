-- Seconds without an SSH user that the runner last reported for a running dev environment with
-- `inactivity_duration` (dstack's `jobs.inactivity_secs`; NULL when not applicable).

ALTER TABLE jobs ADD COLUMN inactivity_secs BIGINT;
