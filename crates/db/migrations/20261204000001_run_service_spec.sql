-- A service run's endpoint (dstack's `runs.service_spec`): the JSON of `Run.service`, set when
-- the run is submitted; NULL for tasks and dev environments.

ALTER TABLE runs ADD COLUMN service_spec TEXT;
