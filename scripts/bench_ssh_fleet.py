#!/usr/bin/env python3
"""SSH-fleet benchmark (a benchmark, not a test): N idle hosts, one task.

Usage: bench_ssh_fleet.py DSTACK_BIN SSH_IMAGE N [IDLE_SECONDS]

Starts N test hosts (containers of scripts/build-ssh-test-image running OpenSSH, with the
machine's Docker socket, so that the host shims can run task containers), a fresh `dstack
server` (no local fleet) and applies one SSH fleet of all N hosts with our CLI. Then prints one
JSON line with:
  deploy_s            apply to every host `idle`
  idle_cpu_pct        the server's CPU (user+system, % of one core) over IDLE_SECONDS of
                      health checks of the idle hosts (one SSH tunnel per host)
  server_rss_mib      the server's resident memory after that
  shim_rss_mib        median resident memory of the N host shims
  first_log_s         `runs/apply` of a task (image dstack-rs-runner-test:1) on a host to its
                      first log line in `logs/poll`
  runner_rss_mib      the runner's resident memory while that task runs
Everything it starts is removed at the end.
"""
import base64, json, os, statistics, subprocess, sys, tempfile, time, uuid

import requests

dstack, image, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
idle_seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 60.0
tag = uuid.uuid4().hex[:8]
network = f"dstack-rs-bench-{tag}"
names = [f"dstack-rs-bench-{tag}-{i}" for i in range(n)]
tmp = tempfile.mkdtemp(prefix="bench-ssh-")
server = None


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pids_of(needle):
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if argv0.endswith(needle):
            out.append(int(pid))
    return out


try:
    key = os.path.join(tmp, "key")
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key)
    public = open(key + ".pub").read().strip()
    docker_cli = os.path.realpath(sh("sh", "-c", "command -v docker").strip())
    sh("docker", "network", "create", network)
    for name in names:
        sh("docker", "run", "-d", "--name", name, "--network", network, "-e", f"AUTHORIZED_KEY={public}",
           "-v", "/var/run/docker.sock:/var/run/docker.sock", "-v", f"{docker_cli}:/usr/local/bin/docker:ro",
           "-v", "/root/.dstack", "-v", "/usr/local/bin", image)
    ips = [sh("docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", nm).strip()
           for nm in names]

    home = os.path.join(tmp, "home")
    env = dict(os.environ, HOME=home, DSTACK_SERVER_DIR=os.path.join(tmp, "server"))
    for var in ("DSTACK_DATABASE_URL", "DSTACK_SERVER_URL", "DSTACK_PROJECT"):
        env.pop(var, None)
    server = subprocess.Popen([dstack, "server", "--host", "127.0.0.1", "--port", "0", "--token", "bench",
                               "--no-local-fleet"], env=env, stdout=subprocess.PIPE,
                              stderr=open(os.path.join(tmp, "server.log"), "w"), text=True)
    server.stdout.readline()
    url = server.stdout.readline().strip().removeprefix("The server is running at ").rstrip("/")
    api = requests.Session()
    api.headers.update({"Authorization": "Bearer bench"})
    project = f"{url}/api/project/main"

    fleet = os.path.join(tmp, "fleet.yml")
    with open(fleet, "w") as f:
        f.write("type: fleet\nname: bench\nenv:\n  DSTACK_SHIM_DOCKER_SELF: auto\nssh_config:\n"
                f"  user: root\n  identity_file: {key}\n  hosts:\n")
        f.writelines(f"    - {ip}\n" for ip in ips)
    t0 = time.perf_counter()
    subprocess.run([dstack, "apply", "-f", fleet, "-y", "-d"], env=env, check=True, capture_output=True)
    while True:
        got = api.post(f"{project}/fleets/get", json={"name": "bench"}).json()
        statuses = [i["status"] for i in got["instances"]]
        if len(statuses) == n and all(s == "idle" for s in statuses):
            break
        if time.perf_counter() - t0 > 900:
            raise SystemExit(f"hosts not idle after 900 s: {statuses}")
        time.sleep(0.5)
    deploy_s = time.perf_counter() - t0

    c0 = cpu_seconds(server.pid)
    time.sleep(idle_seconds)
    idle_cpu_pct = 100 * (cpu_seconds(server.pid) - c0) / idle_seconds
    server_rss = rss_mib(server.pid)
    shims = [rss_mib(p) for p in pids_of("dstack-shim")]

    fixture = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "api", "tests",
                           "fixtures", "task.runs_apply.request.json")
    body = json.load(open(fixture))
    spec = body["plan"]["run_spec"]
    spec["run_name"] = "first-log"
    conf = spec["configuration"]
    conf.update(name="first-log", image="dstack-rs-runner-test:1", fleets=["bench"],
                commands=["echo first-line", "sleep 5"])
    conf["resources"]["cpu"]["count"]["min"] = 1
    conf["resources"]["memory"]["min"] = 0.5
    conf["resources"]["disk"]["size"]["min"] = 1.0
    t0 = time.perf_counter()
    run = api.post(f"{project}/runs/apply", json=body).json()
    sub = run["jobs"][0]["job_submissions"][-1]["id"]
    first_log_s = None
    while first_log_s is None:
        logs = api.post(f"{project}/logs/poll", json={"run_name": "first-log", "job_submission_id": sub}).json()
        if any(b"first-line" in base64.b64decode(e["message"]) for e in logs.get("logs", [])):
            first_log_s = time.perf_counter() - t0
        elif time.perf_counter() - t0 > 120:
            raise SystemExit(f"no first log line after 120 s: {logs}")
        else:
            time.sleep(0.02)
    runners = [rss_mib(p) for p in pids_of("dstack-runner")]
    print(json.dumps({
        "hosts": n,
        "deploy_s": round(deploy_s, 1),
        "idle_seconds": idle_seconds,
        "idle_cpu_pct": round(idle_cpu_pct, 2),
        "server_rss_mib": round(server_rss, 1),
        "shim_rss_mib": round(statistics.median(shims), 1) if shims else None,
        "first_log_s": round(first_log_s, 3),
        "runner_rss_mib": round(max(runners), 1) if runners else None,
    }))
finally:
    if server is not None:
        server.terminate()
        server.wait()
    subprocess.run(["docker", "rm", "-f", "-v", *names], capture_output=True)
    subprocess.run(["sh", "-c", "docker ps -aq --filter label=ai.dstack.shim.is-task=true --filter "
                    "name=first-log | xargs -r docker rm -f -v"], capture_output=True)
    subprocess.run(["docker", "network", "rm", network], capture_output=True)
