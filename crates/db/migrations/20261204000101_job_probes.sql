-- Readiness probes of service replicas (dstack's `probes` table): one row per probe of a running
-- job, `probe_num` its index in `JobSpec.probes`. `due` (unix µs) is when it runs next; while it
-- runs, `due` is pushed past the execution's time limit, which is the probe's lease.
-- `jobs.registered` (dstack's `JobModel.registered`): the replica receives service traffic; set
-- once every probe of the job is ready (or it has none), never by the jobs loop's `save_job`.

CREATE TABLE job_probes (
    job_id TEXT NOT NULL,
    probe_num BIGINT NOT NULL,
    success_streak BIGINT NOT NULL,
    due BIGINT NOT NULL,
    active BOOLEAN NOT NULL,
    CONSTRAINT pk_job_probes PRIMARY KEY (job_id, probe_num),
    CONSTRAINT fk_job_probes_job_id_jobs FOREIGN KEY (job_id) REFERENCES jobs (id) ON DELETE CASCADE
);

CREATE INDEX ix_job_probes_active_due ON job_probes (active, due);

ALTER TABLE jobs ADD COLUMN registered BOOLEAN NOT NULL DEFAULT FALSE;
