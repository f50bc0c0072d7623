-- Rolling deployments drain a serving replica before stopping it (ours; dstack stops it at
-- once): the time its job was taken out of the proxy's routing, unix microseconds; NULL while
-- it may receive traffic. The runs loop stops the job once its requests in flight are done.

ALTER TABLE jobs ADD COLUMN drain_started_at BIGINT;
