//! The `local` fleet end to end: `dstack server` with its shim, a task through the HTTP API
//! as the dstack 0.22.5 CLI submits it, its output in `logs/poll`, a stop, and a `kill -9` of
//! the server while the task runs (the run is still tracked, its logs complete, nothing twice),
//! and a busy task's metrics through `metrics/job/{run}`; the host split into blocks
//! (`DSTACK_SERVER_LOCAL_FLEET_BLOCKS`) running tasks side by side.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use dstack_client::Client;
use serde_json::{Value, json};

use crate::server::clean_up_home;

/// `dstack-shim` and `dstack-runner` next to `dstack` (cargo builds only this package's
/// binaries for its tests).
pub(crate) fn agents_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "dstack-shim", "-p", "dstack-runner"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "the agents build");
    });
}

/// `dstack-rs-runner-test:1`, the job image of the Docker tests (scripts/build-runner-test-image:
/// bash, a few coreutils and the libraries the runner needs), built once per test process with
/// the agents.
pub(crate) fn runner_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    agents_built();
    BUILT.get_or_init(|| {
        let runner = Path::new(env!("CARGO_BIN_EXE_dstack")).with_file_name("dstack-runner");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/build-runner-test-image");
        let status =
            Command::new(script).arg(&runner).stdout(Stdio::null()).status().expect("the script runs");
        assert!(status.success(), "building the test image");
    });
}

/// A server process over `home`; killing it (any way) leaves the shim and the jobs running.
/// Dropping it kills the server (a test that fails, or replaces it, leaves none behind); the
/// shim and the jobs are [`Cleanup`]'s.
struct Server {
    child: Child,
    client: Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(home: &Path) -> Server {
    start_env(home, &[])
}

fn start_env(home: &Path, env: &[(&str, &str)]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dstack"))
        .args(["server", "--host", "127.0.0.1", "--port", "0", "--token", "local-token"])
        .envs(env.iter().copied())
        .env("HOME", home)
        .env("DSTACK_SERVER_DIR", home.join("server"))
        .env_remove("DSTACK_SERVER_NO_LOCAL_FLEET")
        .env_remove("DSTACK_DATABASE_URL")
        .env_remove("DSTACK_SERVER_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dstack server starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let _token = lines.next().expect("a token line").expect("utf-8");
    let url_line = lines.next().expect("a url line").expect("utf-8");
    let url = url_line.trim_start_matches("The server is running at ").trim_end_matches('/').to_owned();
    Server { child, client: Client::new(&url, "local-token").expect("a client") }
}

/// Ends every process started under `home` (the server, and the shim and jobs that outlive
/// it) and removes their containers, however the test ends ([`clean_up_home`]). Declared
/// before the [`Server`], so that it runs after the server is gone.
struct Cleanup<'a>(&'a Path);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        clean_up_home(self.0);
    }
}

fn apply_body(name: &str, commands: &[&str], env: Value) -> Value {
    let text = include_str!("../../../api/tests/fixtures/task.runs_apply.request.json");
    let mut body: Value = serde_json::from_str(text).expect("fixture");
    let spec = &mut body["plan"]["run_spec"];
    spec["run_name"] = json!(name);
    spec["configuration"]["name"] = json!(name);
    spec["configuration"]["commands"] = json!(commands);
    spec["configuration"]["env"] = env;
    // The fixture asks for what its machine had; ask for what any test machine has.
    spec["configuration"]["resources"]["cpu"]["count"]["min"] = json!(1);
    spec["configuration"]["resources"]["memory"]["min"] = json!(0.5);
    spec["configuration"]["resources"]["disk"]["size"]["min"] = json!(1.0);
    body
}

fn post(client: &Client, path: &str, body: Value) -> Value {
    client.post::<Value, Value>(path, Some(&body)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn get_run(client: &Client, name: &str) -> Value {
    post(client, "/api/project/main/runs/get", json!({"run_name": name}))
}

/// The job's whole output so far, from `logs/poll` (paged with `next_token`).
fn output(client: &Client, run: &Value) -> String {
    let name = run["run_spec"]["run_name"].clone();
    let id = run["jobs"][0]["job_submissions"].as_array().and_then(|s| s.last()).expect("a submission")["id"]
        .clone();
    let mut out = Vec::new();
    let mut token = Value::Null;
    loop {
        let page = post(
            client,
            "/api/project/main/logs/poll",
            json!({"run_name": name, "job_submission_id": id, "limit": 2, "next_token": token}),
        );
        for event in page["logs"].as_array().expect("logs") {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(event["message"].as_str().expect("base64"))
                .expect("valid base64");
            out.extend(bytes);
        }
        token = page["next_token"].clone();
        if token.is_null() {
            return String::from_utf8_lossy(&out).into_owned();
        }
    }
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_task_runs_on_the_local_fleet_and_survives_a_server_kill() {
    agents_built();
    let home = tempfile::TempDir::new().unwrap();
    let _cleanup = Cleanup(home.path());
    let mut server = start(home.path());

    post(
        &server.client,
        "/api/project/main/secrets/create_or_update",
        json!({"name": "greeting", "value": "s3cr3t-value"}),
    );
    let script = "echo run=$DSTACK_RUN_NAME rank=$DSTACK_NODE_RANK nodes=$DSTACK_NODES_NUM; \
                  echo secret=$GREETING; for i in 1 2 3 4 5 6; do echo line-$i; sleep 0.5; done";
    let env = json!({"GREETING": "${{ secrets.greeting }}"});
    let plan = post(
        &server.client,
        "/api/project/main/runs/get_plan",
        json!({"run_spec": apply_body("lf", &[script], env.clone())["plan"]["run_spec"]}),
    );
    let offer = &plan["job_plans"][0]["offers"][0];
    assert_eq!(offer["backend"], "remote", "{plan}");
    assert_eq!(offer["instance"]["name"], "local");
    let run = post(&server.client, "/api/project/main/runs/apply", apply_body("lf", &[script], env));
    assert!(!run.to_string().contains("s3cr3t-value"), "the secret is interpolated on the host only");

    wait_for("the first line", Duration::from_secs(20), || {
        output(&server.client, &get_run(&server.client, "lf")).contains("line-1")
    });
    // Kill the server mid-run; the job goes on under the shim.
    server.child.kill().expect("kill -9");
    server.child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    server = start(home.path());
    let mut run = Value::Null;
    wait_for("the run to finish", Duration::from_secs(30), || {
        run = get_run(&server.client, "lf");
        run["status"] == "done"
    });
    assert_eq!(run["termination_reason"], "all_jobs_done");
    let sub = &run["jobs"][0]["job_submissions"][0];
    assert_eq!(run["jobs"][0]["job_submissions"].as_array().unwrap().len(), 1, "one submission");
    assert_eq!((sub["status"].as_str(), sub["exit_status"].as_i64()), (Some("done"), Some(0)));
    assert_eq!(sub["job_provisioning_data"]["hostname"], "127.0.0.1");
    assert_eq!(
        output(&server.client, &run),
        "run=lf rank=0 nodes=1\nsecret=s3cr3t-value\nline-1\nline-2\nline-3\nline-4\nline-5\nline-6\n",
        "every line once, in order"
    );

    // A stopped task ends within the graceful window and frees the instance for the next run.
    post(
        &server.client,
        "/api/project/main/runs/apply",
        apply_body("sleeper", &["echo up; sleep 300"], json!({})),
    );
    wait_for("the sleeper to start", Duration::from_secs(20), || {
        output(&server.client, &get_run(&server.client, "sleeper")).contains("up")
    });
    post(&server.client, "/api/project/main/runs/stop", json!({"runs_names": ["sleeper"], "abort": false}));
    wait_for("the sleeper to stop", Duration::from_secs(15), || {
        get_run(&server.client, "sleeper")["status"] == "terminated"
    });
    let failing = "echo oops; exit 3";
    post(&server.client, "/api/project/main/runs/apply", apply_body("failing", &[failing], json!({})));
    wait_for("the failing run", Duration::from_secs(20), || {
        get_run(&server.client, "failing")["status"] == "failed"
    });
    let run = get_run(&server.client, "failing");
    let sub = &run["jobs"][0]["job_submissions"][0];
    assert_eq!((sub["status_message"].as_str(), sub["exit_status"].as_i64()), (Some("exited (3)"), Some(3)));
    assert_eq!(output(&server.client, &run), "oops\n");
}

/// With `image:` and a Docker engine, the local fleet runs the job in a container (only with
/// `DSTACK_TEST_DOCKER=1`, which `scripts/test` sets: it needs Docker and builds a local image).
#[test]
fn a_task_with_an_image_runs_in_a_container() {
    if std::env::var("DSTACK_TEST_DOCKER").as_deref() != Ok("1") {
        return;
    }
    runner_image();
    let home = tempfile::TempDir::new().unwrap();
    let _cleanup = Cleanup(home.path());
    let server = start(home.path());
    // The image has no python3; the host has (the test suite's oracle needs it).
    let script = "if [ -e /usr/bin/python3 ]; then echo on-the-host; else echo in-a-container; fi";
    let mut body = apply_body("boxed", &[script], json!({}));
    body["plan"]["run_spec"]["configuration"]["image"] = json!("dstack-rs-runner-test:1");
    post(&server.client, "/api/project/main/runs/apply", body);
    let mut run = Value::Null;
    wait_for("the container run", Duration::from_secs(60), || {
        run = get_run(&server.client, "boxed");
        matches!(run["status"].as_str(), Some("done" | "failed" | "terminated"))
    });
    assert_eq!(run["status"], "done", "{run}");
    let out = output(&server.client, &run);
    assert!(out.contains("in-a-container"), "{out}");
    assert!(!out.contains("on-the-host"), "{out}");
}

/// Removes a pulled image when the test ends, however it ends.
struct RemoveImage(String);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}

/// An image missing on the host is pulled from a (local, password-protected) registry with
/// `registry_auth` taken from a secret; while it pulls, the run shows the pull's progress; a
/// reference to a missing secret ends the job with dstack's message (`DSTACK_TEST_DOCKER=1`).
#[test]
fn an_image_is_pulled_with_registry_auth_from_a_secret_and_shows_progress() {
    if std::env::var("DSTACK_TEST_DOCKER").as_deref() != Ok("1") {
        return;
    }
    runner_image();
    let registry =
        dstack_testkit::registry::TestRegistry::serve("dstack-rs-runner-test:1", Some(("puller", "s3cret")));
    let image = format!("127.0.0.1:{}/team/pulled:cli-{}", registry.addr.port(), std::process::id());
    let _image = RemoveImage(image.clone());
    let home = tempfile::TempDir::new().unwrap();
    let _cleanup = Cleanup(home.path());
    let server = start(home.path());
    post(
        &server.client,
        "/api/project/main/secrets/create_or_update",
        json!({"name": "reg_pass", "value": "s3cret"}),
    );

    let mut body = apply_body("pulled", &["echo in-a-pulled-container"], json!({}));
    body["plan"]["run_spec"]["configuration"]["image"] = json!(image);
    body["plan"]["run_spec"]["configuration"]["registry_auth"] =
        json!({"username": "puller", "password": "${{ secrets.reg_pass }}"});
    post(&server.client, "/api/project/main/runs/apply", body);
    let mut progress = Vec::new();
    let mut run = Value::Null;
    wait_for("the pulled run", Duration::from_secs(120), || {
        run = get_run(&server.client, "pulled");
        let sub = &run["jobs"][0]["job_submissions"][0];
        if sub["status"] == "pulling" && !sub["image_pull_progress"].is_null() {
            progress.push(sub["image_pull_progress"].clone());
        }
        matches!(run["status"].as_str(), Some("done" | "failed" | "terminated"))
    });
    assert_eq!(run["status"], "done", "{run}");
    assert!(output(&server.client, &run).contains("in-a-pulled-container"));
    assert!(
        progress.iter().any(|p| p["total_bytes"].as_i64() > Some(0)),
        "the run showed the pull's progress while pulling: {progress:?}"
    );
    assert!(run["jobs"][0]["job_submissions"][0]["image_pull_progress"].is_null(), "only while pulling");
    assert!(!run.to_string().contains("s3cret"), "the secret's value is never shown");

    let mut body = apply_body("no-secret", &["true"], json!({}));
    body["plan"]["run_spec"]["configuration"]["image"] = json!(image);
    body["plan"]["run_spec"]["configuration"]["registry_auth"] =
        json!({"username": "puller", "password": "${{ secrets.missing }}"});
    post(&server.client, "/api/project/main/runs/apply", body);
    wait_for("the run without its secret", Duration::from_secs(60), || {
        run = get_run(&server.client, "no-secret");
        matches!(run["status"].as_str(), Some("done" | "failed" | "terminated"))
    });
    let sub = &run["jobs"][0]["job_submissions"][0];
    assert_eq!(sub["termination_reason"], "terminated_by_server", "{run}");
    assert_eq!(
        sub["termination_reason_message"],
        "Secrets interpolation error: Failed to interpolate due to missing vars: ['secrets.missing']"
    );
}

/// A plain HTTP/1.1 GET with the token (the typed client speaks POST only); the JSON answer.
fn http_get(base_url: &str, path: &str) -> Value {
    use std::io::{Read as _, Write as _};
    let host = base_url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).expect("the server accepts");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer local-token\r\n\
         X-API-Version: 0.22.5\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}\n{body}");
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// A busy task on the local fleet: the server samples its runner every 10 s, and
/// `metrics/job/{run}` shows its CPU use and memory.
#[test]
fn a_busy_task_has_metrics() {
    agents_built();
    let home = tempfile::TempDir::new().unwrap();
    let _cleanup = Cleanup(home.path());
    let server = start(home.path());
    let base_url = server.client.base_url().to_owned();
    let path = "/api/project/main/metrics/job/busy?limit=1000";
    post(
        &server.client,
        "/api/project/main/runs/apply",
        apply_body("busy", &["while :; do :; done"], json!({})),
    );
    wait_for("the busy run", Duration::from_secs(30), || {
        get_run(&server.client, "busy")["status"] == "running"
    });
    assert_eq!(http_get(&base_url, path), json!({"metrics": []}), "no samples yet");
    let mut metrics = Value::Null;
    // Two samples are needed for a CPU rate; they are 10 s apart.
    wait_for("two samples", Duration::from_secs(45), || {
        metrics = http_get(&base_url, path);
        metrics["metrics"].as_array().is_some_and(|m| !m.is_empty())
    });
    let series = |name: &str| -> Vec<i64> {
        let m = metrics["metrics"].as_array().unwrap().iter().find(|m| m["name"] == name);
        let m = m.unwrap_or_else(|| panic!("no {name} in {metrics}"));
        m["values"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect()
    };
    assert!(series("cpu_usage_percent")[0] > 10, "a busy loop uses a CPU: {metrics}");
    assert!(series("memory_usage_bytes")[0] > 0, "{metrics}");
    assert!(series("cpus_detected_num")[0] > 0, "{metrics}");
    post(&server.client, "/api/project/main/runs/stop", json!({"runs_names": ["busy"], "abort": false}));
    wait_for("the busy run to stop", Duration::from_secs(20), || {
        get_run(&server.client, "busy")["status"] == "terminated"
    });
}

/// `DSTACK_SERVER_LOCAL_FLEET_BLOCKS=2`: two tasks run on the local host at once, each on one
/// block (half the CPUs and memory, bridge networking in its runtime data, which the shim's
/// task is made from);
/// a third finds no free block; the blocks come back when the tasks end.
#[test]
fn the_local_host_split_into_blocks_runs_tasks_side_by_side() {
    agents_built();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if !cpus.is_multiple_of(2) {
        eprintln!("skipped: {cpus} CPUs do not split into 2 blocks");
        return;
    }
    let home = tempfile::TempDir::new().unwrap();
    let _cleanup = Cleanup(home.path());
    let server = start_env(home.path(), &[("DSTACK_SERVER_LOCAL_FLEET_BLOCKS", "2")]);
    let fleets = post(&server.client, "/api/project/main/fleets/list", json!({}));
    assert_eq!(fleets[0]["instances"][0]["total_blocks"], 2, "{fleets}");
    let script = "echo started; sleep 300";
    for name in ["blk-a", "blk-b"] {
        post(&server.client, "/api/project/main/runs/apply", apply_body(name, &[script], json!({})));
    }
    let mut runs = Vec::new();
    wait_for("both tasks running at once", Duration::from_secs(30), || {
        runs = ["blk-a", "blk-b"].iter().map(|n| get_run(&server.client, n)).collect();
        runs.iter().all(|r| r["status"] == "running")
    });
    let fleets = post(&server.client, "/api/project/main/fleets/list", json!({}));
    assert_eq!(fleets[0]["instances"][0]["busy_blocks"], 2, "{fleets}");
    let host_cpus = i64::try_from(cpus).unwrap();
    for run in &runs {
        let jrd = &run["jobs"][0]["job_submissions"][0]["job_runtime_data"];
        assert_eq!(jrd["network_mode"], "bridge", "{jrd}");
        assert_eq!(
            (jrd["offer"]["blocks"].as_i64(), jrd["offer"]["total_blocks"].as_i64()),
            (Some(1), Some(2))
        );
        assert_eq!(jrd["cpu"].as_f64(), Some((host_cpus / 2) as f64), "{jrd}");
        assert_eq!(jrd["offer"]["instance"]["resources"]["cpus"].as_i64(), Some(host_cpus / 2));
    }
    post(&server.client, "/api/project/main/runs/apply", apply_body("blk-c", &[script], json!({})));
    let mut third = Value::Null;
    wait_for("the third task to fail", Duration::from_secs(30), || {
        third = get_run(&server.client, "blk-c");
        third["status"] == "failed"
    });
    let sub = &third["jobs"][0]["job_submissions"][0];
    assert_eq!(sub["termination_reason"], "failed_to_start_due_to_no_capacity", "{third}");

    post(
        &server.client,
        "/api/project/main/runs/stop",
        json!({"runs_names": ["blk-a", "blk-b"], "abort": false}),
    );
    wait_for("both tasks to end", Duration::from_secs(30), || {
        ["blk-a", "blk-b"].iter().all(|n| {
            let s = get_run(&server.client, n)["status"].clone();
            s == "terminated" || s == "done" || s == "failed"
        })
    });
    wait_for("the blocks to come back", Duration::from_secs(20), || {
        let fleets = post(&server.client, "/api/project/main/fleets/list", json!({}));
        fleets[0]["instances"][0]["busy_blocks"] == 0
    });
}

/// `utilization_policy`: a running job whose GPU samples of the whole window stay under
/// `min_gpu_utilization` is stopped with dstack's reason and message. This machine has no GPU,
/// so the samples of the last five minutes (the shortest window) are written into the server's
/// database as the metrics loop would have stored them from `nvidia-smi`.
#[test]
fn a_job_whose_gpus_stay_idle_is_stopped_by_its_utilization_policy() {
    agents_built();
    let home = tempfile::TempDir::new().unwrap();
    let _cleanup = Cleanup(home.path());
    let server = start(home.path());
    let mut body = apply_body("idle-gpus", &["sleep 600"], json!({}));
    body["plan"]["run_spec"]["configuration"]["utilization_policy"] =
        json!({"min_gpu_utilization": 10, "time_window": "5m"});
    post(&server.client, "/api/project/main/runs/apply", body);
    let mut run = Value::Null;
    wait_for("the run to start", Duration::from_secs(30), || {
        run = get_run(&server.client, "idle-gpus");
        run["status"] == "running"
    });
    let job_id = run["jobs"][0]["job_submissions"][0]["id"].as_str().expect("a job id").to_owned();
    let db = home.path().join("server/data/sqlite.db");
    let script = r#"
import sqlite3, sys, time, uuid
db, job = sys.argv[1], sys.argv[2]
now = int(time.time() * 1e6)
con = sqlite3.connect(db, timeout=30)
for i in range(1, 31):
    con.execute(
        "INSERT INTO job_metrics_points VALUES (?, ?, ?, 0, 0, 0, '[0]', ?)",
        (str(uuid.uuid4()), job, now - i * 10_000_000, "[3]" if i % 3 else "[7]"),
    )
con.commit()
"#;
    let status =
        Command::new("python3").args(["-c", script]).arg(&db).arg(&job_id).status().expect("python3 runs");
    assert!(status.success(), "writing the samples");
    wait_for("the policy to stop the job", Duration::from_secs(30), || {
        run = get_run(&server.client, "idle-gpus");
        matches!(run["status"].as_str(), Some("done" | "failed" | "terminated"))
    });
    let sub = &run["jobs"][0]["job_submissions"][0];
    assert_eq!(sub["termination_reason"], "terminated_due_to_utilization_policy", "{run}");
    assert_eq!(sub["termination_reason_message"], "The job GPU utilization below 10% for 300 seconds");
}
