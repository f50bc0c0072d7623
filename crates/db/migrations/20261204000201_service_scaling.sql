-- Service autoscaling (dstack's `runs.desired_replica_counts`): the desired replica count of each
-- replica group as the runs loop last decided it, JSON `{"<group>": <count>}`; NULL until a
-- service's first pass (then each group starts at its `replicas.min`), and for other run types.

ALTER TABLE runs ADD COLUMN desired_replica_counts TEXT;
