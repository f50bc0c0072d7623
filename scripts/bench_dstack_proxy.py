#!/usr/bin/env python3
"""Gives a dstack 0.22.5 server (started with DSTACK_SERVER_BACKGROUND_PROCESSING_DISABLED) a
service whose one replica is up, so that its in-server proxy can be loaded by scripts/bench-proxy.

dstack cannot start a job on this machine (its shim and runner are downloaded binaries), so the
run is submitted through the API as usual and its job row is then marked as dstack marks a
running, registered replica on an SSH host (not dockerized) at 127.0.0.1 with the given sshd
port, on an instance row of its own. dstack's proxy then does for each request what it does in
production: it looks the service up in its database, checks the token, and sends the request
through its SSH tunnel (OpenSSH, a Unix socket forwarded to the replica's port on the host).
The sshd must accept the project's key for root.

Usage: bench_dstack_proxy.py URL TOKEN DB_PATH APP_PORT SSHD_PORT AUTHORIZED_KEYS_OUT
Writes the project's public key to AUTHORIZED_KEYS_OUT first."""
import datetime
import json
import sqlite3
import sys
import urllib.request
import uuid

url, token, db_path, app_port, ssh_port, keys_out = sys.argv[1:7]
db = sqlite3.connect(db_path)
project_id, public_key = db.execute("SELECT id, ssh_public_key FROM projects WHERE name = 'main'").fetchone()
with open(keys_out, "w") as f:
    f.write(public_key.strip() + "\n")

spec = {
    "run_name": "bench",
    "repo_id": "none",
    "repo_data": {"repo_type": "virtual"},
    "configuration": {"type": "service", "name": "bench", "port": int(app_port), "commands": ["true"]},
}
body = {"plan": {"run_spec": spec, "current_resource": None}, "force": False}
req = urllib.request.Request(
    f"{url}/api/project/main/runs/apply",
    data=json.dumps(body).encode(),
    headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    method="POST",
)
with urllib.request.urlopen(req) as resp:
    assert resp.status == 200, resp.status

# dstack stores enums by name (RUNNING, BUSY, HEALTHY) and ids as 32 hex digits.
now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None).isoformat(sep=" ")
instance_id = uuid.uuid4().hex
db.execute(
    "INSERT INTO instances (id, name, created_at, deleted, project_id, status, termination_idle_time,"
    " unreachable, instance_num, last_processed_at, busy_blocks, health, skip_min_processing_interval)"
    " VALUES (?, 'bench-0', ?, 0, ?, 'BUSY', 0, 0, 0, ?, 1, 'HEALTHY', 0)",
    (instance_id, now, project_id, now),
)
provisioning = {
    "backend": "remote",
    "instance_type": {
        "name": "bench",
        "resources": {"cpus": 2, "memory_mib": 1024, "gpus": [], "spot": False, "disk": {"size_mib": 10240}},
    },
    "instance_id": "bench-0",
    "hostname": "127.0.0.1",
    "internal_ip": None,
    "region": "remote",
    "price": 0.0,
    "username": "root",
    "ssh_port": int(ssh_port),
    "dockerized": False,
    "ssh_proxy": None,
    "backend_data": None,
}
jobs = db.execute(
    "UPDATE jobs SET status = 'RUNNING', registered = 1, instance_assigned = 1, instance_id = ?,"
    " job_provisioning_data = ? WHERE run_name = 'bench'",
    (instance_id, json.dumps(provisioning)),
).rowcount
db.execute("UPDATE runs SET status = 'RUNNING' WHERE run_name = 'bench'")
db.commit()
if jobs != 1:
    sys.exit(f"expected the service's one job, found {jobs}")
