#!/usr/bin/env python3
"""Time from `runs/apply` to the task's first log line in `logs/poll` (the local fleet).

Usage: bench_first_log.py URL TOKEN [RUNS]. Submits RUNS tasks one after another (the body
the dstack 0.22.5 CLI sends, from crates/api/tests/fixtures) and prints one JSON line with
the median and each sample, in seconds. Polls every 20 ms, as an attached client would.
"""
import base64, copy, json, os, statistics, sys, time, uuid

import requests

url, token = sys.argv[1], sys.argv[2]
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
here = os.path.dirname(os.path.abspath(__file__))
fixture = os.path.join(here, "..", "crates", "api", "tests", "fixtures", "task.runs_apply.request.json")
body = json.load(open(fixture))
s = requests.Session()
s.headers.update({"Authorization": f"Bearer {token}"})
project = f"{url}/api/project/main"
samples = []
for i in range(runs):
    name = f"first-log-{uuid.uuid4().hex[:6]}"
    b = copy.deepcopy(body)
    spec = b["plan"]["run_spec"]
    spec["run_name"] = name
    conf = spec["configuration"]
    conf["name"] = name
    conf["commands"] = ["echo first-line"]
    conf["resources"]["cpu"]["count"]["min"] = 1
    conf["resources"]["memory"]["min"] = 0.5
    conf["resources"]["disk"]["size"]["min"] = 1.0
    t0 = time.perf_counter()
    run = s.post(f"{project}/runs/apply", json=b).json()
    sub = run["jobs"][0]["job_submissions"][-1]["id"]
    while True:
        logs = s.post(f"{project}/logs/poll", json={"run_name": name, "job_submission_id": sub}).json()
        if any(b"first-line" in base64.b64decode(e["message"]) for e in logs["logs"]):
            samples.append(time.perf_counter() - t0)
            break
        if time.perf_counter() - t0 > 60:
            sys.exit(f"{name}: no output within 60 s")
        time.sleep(0.02)
    # Wait for the run to finish so the next one finds the instance free.
    while s.post(f"{project}/runs/get", json={"run_name": name}).json()["status"] not in ("done", "failed", "terminated"):
        time.sleep(0.05)
print(json.dumps({"runs": runs, "first_log_p50_s": round(statistics.median(samples), 3),
                  "samples_s": [round(x, 3) for x in samples]}))
