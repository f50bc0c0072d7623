-- Samples of a job's runner metrics (`GET /api/metrics`), collected every 10 s while the job runs.
-- `timestamp_micro` is the runner's clock (unix µs); the GPU columns are JSON lists, one value per GPU.

CREATE TABLE job_metrics_points (
    id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    timestamp_micro BIGINT NOT NULL,
    cpu_usage_micro BIGINT NOT NULL,
    memory_usage_bytes BIGINT NOT NULL,
    memory_working_set_bytes BIGINT NOT NULL,
    gpus_memory_usage_bytes TEXT NOT NULL,
    gpus_util_percent TEXT NOT NULL,
    CONSTRAINT pk_job_metrics_points PRIMARY KEY (id),
    CONSTRAINT fk_job_metrics_points_job_id_jobs FOREIGN KEY (job_id) REFERENCES jobs (id) ON DELETE CASCADE
);

CREATE INDEX ix_job_metrics_points_job_id_timestamp_micro ON job_metrics_points (job_id, timestamp_micro);
