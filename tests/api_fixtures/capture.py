#!/usr/bin/env python3
"""Captures run-related request and response bodies from the real dstack 0.22.5 server.

Starts `dstack server` (offline, temp dirs), puts a recording HTTP proxy in front of it, drives
it with the real CLI (`dstack apply -y -d`, `ps`, `logs`, `stop`, `delete`), and writes each
exchange to crates/api/tests/fixtures/<step>.<route>.<request|response>.json. Uuids and
timestamps are kept as captured. Then, with `--check`, it validates the Rust round-trip output
of every Run / RunPlan fixture with the real pydantic models (see check_roundtrip.py).

Usage: python3 tests/api_fixtures/capture.py [--venv VENV] [--out DIR]
"""

import argparse
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

TASK = """\
type: task
name: t1
commands:
  - echo hello
resources:
  gpu: 0
"""

TASK_RICH = """\
type: task
name: t2
env:
  - A=1
ports:
  - 8080
  - "9000:90"
commands:
  - sleep 1000
volumes:
  - /mnt/data:/data
retry:
  on_events: [no-capacity]
  duration: 1h
max_duration: 2h
resources:
  cpu: 4..
  memory: 16GB..
  gpu: A100:80GB:2
  disk: 200GB
spot_policy: auto
"""

SERVICE = """\
type: service
name: s1
port: 80
commands:
  - python3 -m http.server 80
replicas: 1
model: llama
"""

DEV = """\
type: dev-environment
name: d1
ide: vscode
inactivity_duration: 2h
"""

SCHEDULED = """\
type: task
name: cron1
commands:
  - echo hi
schedule:
  cron: "0 3 * * *"
"""


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Recorder:
    def __init__(self, upstream: str):
        self.upstream = upstream
        self.label = "init"
        self.exchanges: list[dict] = []
        self.lock = threading.Lock()


def make_handler(rec: Recorder):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _forward(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() not in ("host", "content-length", "connection", "accept-encoding")
            }
            req = urllib.request.Request(
                rec.upstream + self.path, data=body if self.command != "GET" else None,
                headers=headers, method=self.command,
            )
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    status, rbody, rheaders = r.status, r.read(), r.headers
            except urllib.error.HTTPError as e:
                status, rbody, rheaders = e.code, e.read(), e.headers
            with rec.lock:
                rec.exchanges.append(
                    {"label": rec.label, "path": self.path, "status": status,
                     "request": body.decode() if body else None, "response": rbody.decode()}
                )
            self.send_response(status)
            for k, v in rheaders.items():
                if k.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(rbody)))
            self.end_headers()
            self.wfile.write(rbody)

        do_GET = do_POST = _forward

    return Handler


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--venv", default=os.environ.get("DSTACK_ORACLE_VENV", str(ROOT / ".venv-dstack")))
    ap.add_argument("--out", default=str(ROOT / "crates/api/tests/fixtures"))
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()
    dstack = str(Path(args.venv) / "bin/dstack")

    tmp = Path(tempfile.mkdtemp(prefix="dstack-fixtures."))
    home = tmp / "home"
    home.mkdir()
    port, proxy_port = free_port(), free_port()
    token = "fixtures-" + uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSTACK_")}
    env.update(HOME=str(home), DSTACK_SERVER_DIR=str(tmp / "server"), DSTACK_DEFAULT_CREDS_DISABLED="1",
               DSTACK_DO_NOT_UPDATE_DEFAULT_PROJECT="1", DSTACK_CLI_LOG_LEVEL="error")
    log = open(tmp / "server.log", "w")
    server = subprocess.Popen(
        [dstack, "server", "--host", "127.0.0.1", "--port", str(port), "--token", token],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    rec = Recorder(f"http://127.0.0.1:{port}")
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", proxy_port), make_handler(rec))
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(rec.upstream + "/healthcheck", timeout=2):
                    break
            except Exception:
                if server.poll() is not None:
                    raise SystemExit("dstack server exited during startup; see " + str(tmp / "server.log"))
                time.sleep(0.1)
        work = tmp / "work"
        work.mkdir()
        for name, text in [("task.yml", TASK), ("rich.yml", TASK_RICH), ("service.yml", SERVICE),
                           ("dev.yml", DEV), ("cron.yml", SCHEDULED)]:
            (work / name).write_text(text)

        def cli(label: str, *argv: str, check: bool = True) -> None:
            rec.label = label
            p = subprocess.run([dstack, *argv], cwd=work, env=env, capture_output=True, text=True, timeout=120)
            print(f"[{label}] dstack {' '.join(argv)} -> {p.returncode}", file=sys.stderr)
            if check and p.returncode != 0:
                print(p.stdout, p.stderr, file=sys.stderr)
                raise SystemExit(f"dstack {' '.join(argv)} failed")

        cli("project_add", "project", "add", "--name", "main", "--url", f"http://127.0.0.1:{proxy_port}",
            "--token", token, "-y")
        cli("task", "apply", "-f", "task.yml", "-y", "-d")
        cli("rich", "apply", "-f", "rich.yml", "-y", "-d")
        cli("service", "apply", "-f", "service.yml", "-y", "-d")
        cli("dev", "apply", "-f", "dev.yml", "-y", "-d")
        cli("cron", "apply", "-f", "cron.yml", "-y", "-d")
        def wait_finished(run_name: str) -> None:
            deadline = time.time() + 60
            while time.time() < deadline:
                req = urllib.request.Request(
                    rec.upstream + "/api/project/main/runs/get", data=json.dumps({"run_name": run_name}).encode(),
                    headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                    method="POST",
                )
                with urllib.request.urlopen(req) as r:
                    if json.load(r)["status"] in ("failed", "terminated", "done"):
                        return
                time.sleep(1)
            raise SystemExit(f"run {run_name} did not finish in 60 s")

        # t1 fails with "no fleets" within seconds; capture the finished shapes.
        wait_finished("t1")
        cli("ps", "ps", "-a")
        cli("logs", "logs", "t1", check=False)
        # Re-apply over the finished run: get_plan answers with current_resource, and apply sends it back.
        cli("reapply", "apply", "-f", "task.yml", "-y", "-d")
        cli("stop", "stop", "-y", "cron1")
        cli("abort", "stop", "-x", "-y", "d1")
        wait_finished("cron1")
        cli("delete", "delete", "-f", "cron.yml", "-y")
    finally:
        proxy.shutdown()
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()

    out = Path(args.out)
    if out.exists():
        for f in out.glob("*.json"):
            f.unlink()
    out.mkdir(parents=True, exist_ok=True)
    wanted = ("runs/get_plan", "runs/apply", "runs/list", "runs/get", "runs/stop", "runs/delete", "logs/poll")
    seen = set()
    for ex in rec.exchanges:
        route = next((w for w in wanted if ex["path"].endswith("/" + w)), None)
        if route is None:
            continue
        key = (ex["label"], route)
        if key in seen:  # the first exchange of a route within a step
            continue
        seen.add(key)
        stem = f"{ex['label']}.{route.replace('/', '_')}"
        for part in ("request", "response"):
            if ex[part] is None:
                continue
            body = json.loads(ex[part])
            (out / f"{stem}.{part}.json").write_text(json.dumps(body, indent=1) + "\n")
        if ex["status"] != 200:
            print(f"note: {stem} answered {ex['status']}", file=sys.stderr)
    print(f"wrote {len(list(out.glob('*.json')))} fixtures to {out}", file=sys.stderr)
    if args.keep:
        print(f"kept {tmp}", file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
