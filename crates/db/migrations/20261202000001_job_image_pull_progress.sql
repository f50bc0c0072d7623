-- The shim's image pull progress (JSON `ImagePullProgress`) while a job pulls its image, as dstack
-- keeps it on the job (`jobs.image_pull_progress`); shown by `dstack ps` and attached `apply`.

ALTER TABLE jobs ADD COLUMN image_pull_progress TEXT;
