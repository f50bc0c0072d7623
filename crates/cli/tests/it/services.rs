//! Services end to end on the `local` fleet split into two blocks: `dstack apply` of a
//! `replicas: 2` service whose replicas are real HTTP servers (`dstack-test-replica` in a test
//! image), then requests through the in-server proxy at `/proxy/services/main/<run>/`: load
//! spread over both replicas, auth, the root redirect, streaming, a replica that dies while
//! the other serves, and the service gone after `dstack stop`; a replica with a readiness
//! probe gets traffic only once the probe passes `ready_after` times.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::local_fleet::{agents_built, runner_image};
use crate::server::{Server, cli, ps_run, start_with_local_fleet, start_with_local_fleet_env, stop};

/// `dstack-rs-service-test:1`: the runner test image plus `dstack-test-replica`.
pub(crate) fn service_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    runner_image();
    BUILT.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "dstack-testkit", "--bin", "dstack-test-replica"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "the test replica builds");
        let replica = Path::new(env!("CARGO_BIN_EXE_dstack")).with_file_name("dstack-test-replica");
        let context = tempfile::TempDir::new().unwrap();
        std::fs::copy(&replica, context.path().join("dstack-test-replica")).expect("the replica binary");
        std::fs::write(
            context.path().join("Dockerfile"),
            "FROM dstack-rs-runner-test:1\nCOPY dstack-test-replica /usr/local/bin/dstack-test-replica\n",
        )
        .unwrap();
        let status = Command::new("docker")
            .args(["build", "-q", "-t", "dstack-rs-service-test:1"])
            .arg(context.path())
            .stdout(Stdio::null())
            .status()
            .expect("docker runs");
        assert!(status.success(), "building the service test image");
    });
}

/// One HTTP/1.1 request on its own connection; (status, headers, body). The body is read to
/// the end (chunked bodies are decoded).
fn http(url: &str, method: &str, path: &str, token: Option<&str>) -> (u16, String, String) {
    http_body(url, method, path, token, "")
}

/// [`http`] with a request body.
fn http_body(url: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String, String) {
    let addr = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).expect("the server accepts connections");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let length = body.len();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: {length}\r\nConnection: close\r\n\r\n{body}"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status: u16 = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status");
    let mut headers = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        headers.push_str(&line.to_ascii_lowercase());
    }
    let mut body = String::new();
    if headers.contains("transfer-encoding: chunked") {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            body.push_str(std::str::from_utf8(&chunk[..n]).unwrap());
        }
    } else {
        reader.read_to_string(&mut body).unwrap();
    }
    (status, headers, body)
}

fn wait<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The ids of the running replicas' jobs.
pub(crate) fn running_jobs(run: &Value) -> Vec<String> {
    run["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| j["job_submissions"].as_array()?.last().cloned())
        .filter(|s| s["status"] == "running")
        .filter_map(|s| s["id"].as_str().map(str::to_owned))
        .collect()
}

/// A server with its local fleet and one service applied with our CLI; dropping it ends the
/// server, its shim and the replicas' containers (`Server`'s drop), whatever the test did.
struct ServiceTest {
    dir: tempfile::TempDir,
    server: Option<Server>,
    name: String,
    url: String,
    token: String,
}

impl ServiceTest {
    fn home(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ServiceTest {
    fn drop(&mut self) {
        // Before the home goes (the fields' drop), and without asserting: this may run
        // while a failed test unwinds.
        drop(self.server.take());
    }
}

/// Applies service `name` (the test image's replica on port 8000, plus the YAML lines in
/// `extra`) on a fresh server whose local fleet has `env`; `None` (and a note) without
/// `DSTACK_TEST_DOCKER`.
fn apply_service(name: &str, env: &[(&str, &str)], extra: &str) -> Option<ServiceTest> {
    if std::env::var_os("DSTACK_TEST_DOCKER").is_none() {
        eprintln!("skipped: set DSTACK_TEST_DOCKER=1 to run the Docker tests");
        return None;
    }
    agents_built();
    service_image();
    let dir = tempfile::TempDir::new().unwrap();
    let server = start_with_local_fleet_env(dir.path(), env);
    let (url, token) = (server.url.clone(), server.token.clone());
    let t = ServiceTest { dir, server: Some(server), name: name.to_owned(), url, token };
    let file = t.home().join("svc.yml");
    std::fs::write(
        &file,
        format!(
            "type: service\nname: {name}\nimage: dstack-rs-service-test:1\nport: 8000\n{extra}\
             resources: {{cpu: 1.., memory: 0.5GB.., disk: 1GB..}}\ncommands: [dstack-test-replica 8000]\n"
        ),
    )
    .unwrap();
    let (code, out, err) = cli(t.home(), &["apply", "-f", &file.display().to_string(), "-y", "-d"]);
    assert_eq!(code, 0, "{out}{err}");
    Some(t)
}

#[test]
fn a_service_with_two_replicas_is_served_through_the_proxy() {
    let Some(t) = apply_service(
        "svc",
        &[("DSTACK_SERVER_LOCAL_FLEET_BLOCKS", "2")],
        "replicas: 2\nmodel: test-model\n",
    ) else {
        return;
    };
    let (home, url, token) = (t.home(), t.url.clone(), t.token.clone());
    let run = wait("both replicas running", Duration::from_secs(120), || {
        let run = ps_run(home, "svc");
        (running_jobs(&run).len() == 2).then_some(run)
    });
    assert_eq!(run["service"]["url"], "/proxy/services/main/svc/", "{run:#}");
    for job in run["jobs"].as_array().unwrap() {
        let jrd = &job["job_submissions"][0]["job_runtime_data"];
        assert_eq!(jrd["network_mode"], "bridge", "replicas get their own network: {jrd}");
        assert!(jrd["ports"]["8000"].as_i64().is_some_and(|p| p != 8000), "8000 published: {jrd}");
    }
    let replicas = running_jobs(&run);
    let base = "/proxy/services/main/svc";

    // The replicas may still be starting their servers (without probes a replica is ready
    // once its job runs; one that refuses the connection is skipped): wait for the first
    // answer, then until both have answered.
    wait("the service to answer", Duration::from_secs(30), || {
        (http(&url, "GET", &format!("{base}/whoami"), Some(&token)).0 == 200).then_some(())
    });
    let expected: std::collections::BTreeSet<String> = replicas.iter().cloned().collect();
    let mut seen = std::collections::BTreeSet::new();
    wait("requests to reach both replicas", Duration::from_secs(30), || {
        let (status, _, body) = http(&url, "GET", &format!("{base}/whoami"), Some(&token));
        assert_eq!(status, 200, "{body}");
        seen.insert(body);
        (seen == expected).then_some(())
    });
    let mut again = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let (status, _, body) = http(&url, "GET", &format!("{base}/whoami"), Some(&token));
        assert_eq!(status, 200, "{body}");
        again.insert(body);
    }
    assert_eq!(again, expected, "requests spread over both replicas");

    // The prefix is stripped, the query kept; auth: members only; the root needs its slash.
    let (status, _, body) = http(&url, "POST", &format!("{base}/a/b%20c?x=1"), Some(&token));
    assert_eq!((status, body.as_str()), (200, "POST /a/b%20c?x=1"));
    let (status, _, body) = http(&url, "GET", &format!("{base}/whoami"), None);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Unauthenticated or unauthorized to access project main"), "{body}");
    let (status, _, body) = http(&url, "GET", &format!("{base}/whoami"), Some("not-a-token"));
    assert_eq!(status, 403, "{body}");
    let (status, headers, _) = http(&url, "GET", base, Some(&token));
    assert_eq!(status, 308);
    assert!(headers.contains(&format!("location: {base}/")), "{headers}");
    let (status, _, body) = http(&url, "GET", "/proxy/services/main/nope/", Some(&token));
    assert_eq!((status, body.as_str()), (404, r#"{"detail":"Service main/nope not found"}"#));

    // The service's model, OpenAI-style: listed for members, completions routed by `model`
    // with the body passed through unchanged.
    assert_eq!(run["service"]["model"]["base_url"], "/proxy/services/main/svc/v1", "{run:#}");
    let (status, _, body) = http(&url, "GET", "/proxy/models/main/models", Some(&token));
    assert_eq!(status, 200, "{body}");
    let models: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "test-model", "{models}");
    assert_eq!(models["data"][0]["owned_by"], "main", "{models}");
    assert_eq!(http(&url, "GET", "/proxy/models/main/v1/models", None).0, 403);
    let request = r#"{"model":"test-model","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    for endpoint in ["chat/completions", "v1/chat/completions", "v1/completions"] {
        let path = format!("/proxy/models/main/{endpoint}");
        let (status, _, body) = http_body(&url, "POST", &path, Some(&token), request);
        let upstream = format!("/v1/{}", endpoint.trim_start_matches("v1/"));
        assert_eq!((status, body), (200, format!("POST {upstream} {request}")));
    }
    let (status, _, body) = http_body(
        &url,
        "POST",
        "/proxy/models/main/v1/chat/completions",
        Some(&token),
        r#"{"model":"nope"}"#,
    );
    assert_eq!((status, body.as_str()), (404, r#"{"detail":"Model nope not found in project main"}"#));

    // Server-sent events arrive whole, through the proxy.
    let (status, headers, body) = http(&url, "GET", &format!("{base}/sse"), Some(&token));
    assert_eq!(status, 200);
    assert!(headers.contains("content-type: text/event-stream"), "{headers}");
    assert_eq!(body, "data: 0\n\ndata: 1\n\ndata: 2\n\n");

    // One replica's container dies: until the server sees it, its port refuses connections
    // and every request goes to the other replica.
    let victim = &replicas[0];
    let ids = String::from_utf8(
        Command::new("docker")
            .args(["ps", "-q", "--filter", &format!("label=ai.dstack.shim.task-id={victim}")])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let container = ids.lines().next().expect("the replica's container").to_owned();
    let killed = Command::new("docker").args(["kill", &container]).output().unwrap();
    assert!(killed.status.success());
    for _ in 0..6 {
        let (status, _, body) = http(&url, "GET", &format!("{base}/whoami"), Some(&token));
        assert_eq!((status, body.as_str()), (200, replicas[1].as_str()), "the other replica answers");
    }

    // The dead replica may already have ended the run (a replica that fails ends it, as in
    // dstack); stopping a finished run changes nothing.
    let _ = cli(home, &["stop", "svc", "-y"]);
    wait("the service to stop", Duration::from_secs(60), || {
        let run = ps_run(home, "svc");
        (run["status"] == "terminated" || run["status"] == "failed").then_some(())
    });
    // The proxy remembers a route for a second (`services::Routes`): the stop shows after that.
    wait("the stopped service to leave the proxy", Duration::from_secs(3), || {
        let (status, _, body) = http(&url, "GET", &format!("{base}/whoami"), Some(&token));
        (status == 404).then(|| assert_eq!(body, r#"{"detail":"Service main/svc not found"}"#))
    });
}

/// The latest submission's probes of every job of a run.
fn probes(run: &Value) -> Vec<Value> {
    run["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| j["job_submissions"].as_array()?.last().cloned())
        .map(|s| s["probes"].clone())
        .collect()
}

#[test]
fn a_replica_gets_traffic_only_once_its_probe_is_ready() {
    let Some(t) = apply_service(
        "svc-probes",
        &[],
        "probes:\n  - {type: http, url: /ready, interval: 1s, timeout: 2s, ready_after: 2}\n",
    ) else {
        return;
    };
    let (home, url, token) = (t.home(), t.url.clone(), t.token.clone());
    let base = "/proxy/services/main/svc-probes";

    // Running, probed, and failing: `/ready` answers 503 until its file exists.
    let run = wait("the replica running with its probe stored", Duration::from_secs(120), || {
        let run = ps_run(home, "svc-probes");
        (running_jobs(&run).len() == 1 && probes(&run) == [serde_json::json!([{"success_streak": 0}])])
            .then_some(run)
    });
    let replica = running_jobs(&run).remove(0);
    // Long enough for several probe passes (one every 3 s) and for the replica's server to start.
    let not_found = r#"{"detail":"Service main/svc-probes not found"}"#;
    for _ in 0..4 {
        let (status, _, body) = http(&url, "GET", &format!("{base}/whoami"), Some(&token));
        assert_eq!((status, body.as_str()), (404, not_found), "no traffic before the replica is ready");
        std::thread::sleep(Duration::from_secs(2));
    }
    let run = ps_run(home, "svc-probes");
    assert_eq!(probes(&run), [serde_json::json!([{"success_streak": 0}])], "{run:#}");
    let (code, out, err) = cli(home, &["ps", "-v"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("PROBES") && out.contains('×'), "a failing probe in ps -v: {out}");

    // The replica itself answers (straight at its published port); it becomes ready, and
    // after two passing probes it gets traffic.
    let port = run["jobs"][0]["job_submissions"][0]["job_runtime_data"]["ports"]["8000"]
        .as_i64()
        .expect("8000 published");
    let direct = format!("http://127.0.0.1:{port}");
    assert_eq!(http(&direct, "GET", "/whoami", None).0, 200, "the replica serves");
    assert_eq!(http(&direct, "GET", "/ready", None).0, 503);
    assert_eq!(http(&direct, "POST", "/ready", None).0, 200);
    wait("the replica to get traffic", Duration::from_secs(60), || {
        let (status, _, body) = http(&url, "GET", &format!("{base}/whoami"), Some(&token));
        (status == 200).then(|| assert_eq!(body, replica))
    });
    let run = ps_run(home, "svc-probes");
    let streak = probes(&run)[0][0]["success_streak"].as_i64().expect("a streak");
    assert!(streak >= 2, "ready after two successes: {run:#}");
    let (code, out, err) = cli(home, &["ps", "-v"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains('✓'), "a ready probe in ps -v: {out}");

    let _ = cli(home, &["stop", "svc-probes", "-y"]);
    wait("the service to stop", Duration::from_secs(60), || {
        let run = ps_run(home, "svc-probes");
        (run["status"] == "terminated").then_some(())
    });
    // The proxy remembers a route for a second (`services::Routes`): the stop shows after that.
    wait("the stopped replica to leave the proxy", Duration::from_secs(3), || {
        let (status, _, body) = http(&url, "GET", &format!("{base}/whoami"), Some(&token));
        (status == 404).then(|| assert_eq!(body, not_found))
    });
}

/// The latest submission of every job: (job id, status, termination reason).
fn latest_submissions(run: &Value) -> Vec<(String, String, String)> {
    run["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| j["job_submissions"].as_array()?.last().cloned())
        .map(|s| {
            let text = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
            (text("id"), text("status"), text("termination_reason"))
        })
        .collect()
}

#[test]
fn a_service_scales_up_under_load_and_back_down_when_idle() {
    // More than 15 requests in 30 s is more than 0.5 rps: two replicas.
    let Some(t) = apply_service(
        "svc-scale",
        &[("DSTACK_SERVER_LOCAL_FLEET_BLOCKS", "2")],
        "replicas: 1..2\nscaling: {metric: rps, target: 0.5, window: 30s, scale_up_delay: 0s, scale_down_delay: 5s}\n",
    ) else {
        return;
    };
    let (home, url, token) = (t.home(), t.url.clone(), t.token.clone());
    let base = "/proxy/services/main/svc-scale";
    let first = wait("the first replica running", Duration::from_secs(120), || {
        let run = ps_run(home, "svc-scale");
        let running = running_jobs(&run);
        (running.len() == 1).then(|| running[0].clone())
    });
    wait("the service to answer", Duration::from_secs(30), || {
        (http(&url, "GET", &format!("{base}/whoami"), Some(&token)).0 == 200).then_some(())
    });

    // Load through the proxy: a second replica is submitted and serves too.
    for _ in 0..30 {
        let (status, _, body) = http(&url, "GET", &format!("{base}/whoami"), Some(&token));
        assert_eq!((status, body.as_str()), (200, first.as_str()));
    }
    let second = wait("a second replica running", Duration::from_secs(120), || {
        let run = ps_run(home, "svc-scale");
        let running = running_jobs(&run);
        (running.len() == 2).then(|| running.into_iter().find(|id| *id != first).unwrap())
    });
    wait("the second replica to get traffic", Duration::from_secs(30), || {
        let (status, _, body) = http(&url, "GET", &format!("{base}/whoami"), Some(&token));
        (status == 200 && body == second).then_some(())
    });

    // Idle: once the window holds no more than 15 requests, one replica is stopped as
    // `scaled_down` (not a failure: the run keeps running and the other replica serves).
    let run = wait("a replica scaled down", Duration::from_secs(120), || {
        let run = ps_run(home, "svc-scale");
        latest_submissions(&run).iter().any(|(_, _, reason)| reason == "scaled_down").then_some(run)
    });
    assert_eq!(run["status"], "running", "{run:#}");
    let subs = latest_submissions(&run);
    assert_eq!(subs.len(), 2, "{subs:?}");
    let stopped: Vec<&String> =
        subs.iter().filter(|(_, _, r)| r == "scaled_down").map(|(id, _, _)| id).collect();
    assert_eq!(stopped.len(), 1, "{subs:?}");
    let kept = if *stopped[0] == first { &second } else { &first };
    wait("the scaled-down replica to finish", Duration::from_secs(60), || {
        let run = ps_run(home, "svc-scale");
        latest_submissions(&run)
            .iter()
            .any(|(id, status, _)| id == stopped[0] && status == "terminated")
            .then_some(())
    });
    for _ in 0..3 {
        let (status, _, body) = http(&url, "GET", &format!("{base}/whoami"), Some(&token));
        assert_eq!((status, body.as_str()), (200, kept.as_str()), "the kept replica serves");
    }
    let run = ps_run(home, "svc-scale");
    assert_eq!(run["status"], "running", "{run:#}");
    assert_eq!(running_jobs(&run), std::slice::from_ref(kept));
}

#[test]
fn a_service_scaled_to_zero_wakes_on_the_first_request() {
    let Some(t) = apply_service(
        "svc-zero",
        &[],
        "replicas: 0..1\nscaling: {metric: rps, target: 1, window: 30s, scale_up_delay: 0s, scale_down_delay: 0s}\n",
    ) else {
        return;
    };
    let (home, url, token) = (t.home(), t.url.clone(), t.token.clone());
    let base = "/proxy/services/main/svc-zero";
    // No replica while idle: the run waits, pending.
    wait("the service pending", Duration::from_secs(30), || {
        (ps_run(home, "svc-zero")["status"] == "pending").then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let run = ps_run(home, "svc-zero");
    assert_eq!((run["status"].as_str(), latest_submissions(&run).len()), (Some("pending"), 0), "{run:#}");
    // The first request is held until a replica is up, and answered by it; an outsider's
    // request neither wakes it nor waits.
    assert_eq!(http(&url, "GET", &format!("{base}/whoami"), None).0, 403);
    let started = Instant::now();
    let (status, _, body) = http(&url, "GET", &format!("{base}/whoami"), Some(&token));
    assert_eq!(status, 200, "{body}");
    let run = ps_run(home, "svc-zero");
    assert_eq!(running_jobs(&run), std::slice::from_ref(&body), "{run:#}");
    eprintln!("woken in {:?}", started.elapsed());
    // Idle again: the replica is scaled down and the service waits, pending, with no failure.
    let deadline = Instant::now() + Duration::from_secs(120);
    let run = loop {
        let last = ps_run(home, "svc-zero");
        if last["status"] == "pending" {
            break last;
        }
        assert!(Instant::now() < deadline, "the service back to zero: {last:#}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(latest_submissions(&run)[0].2, "scaled_down", "{run:#}");
}

/// Re-applies `t`'s service with other YAML lines (`extra`, before `resources`) and command;
/// returns the CLI's output.
fn reapply(t: &ServiceTest, extra: &str, command: &str) -> String {
    let file = t.home().join("svc.yml");
    std::fs::write(
        &file,
        format!(
            "type: service\nname: {}\nimage: dstack-rs-service-test:1\nport: 8000\n{extra}\
             resources: {{cpu: 1.., memory: 0.5GB.., disk: 1GB..}}\ncommands: [{command}]\n",
            t.name
        ),
    )
    .unwrap();
    let (code, out, err) = cli(t.home(), &["apply", "-f", &file.display().to_string(), "-y", "-d"]);
    assert_eq!(code, 0, "{out}{err}");
    out
}

/// What the clients of [`Load`] saw.
#[derive(Debug, Default)]
struct Tally {
    /// Answers by body (the service's `VERSION`).
    ok: std::collections::BTreeMap<String, u64>,
    /// Non-2xx answers and connection errors, as (what, when since the load started).
    failed: Vec<(String, Duration)>,
    /// Slow requests: (body, when it ended).
    slow: Vec<(String, Duration)>,
}

/// Continuous load through the proxy: `threads` clients looping `GET /version`, and one
/// starting a `GET /slow?ms=<slow_ms>` every half second (each on its own connection), until
/// [`Load::finish`]; every failure counts.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tally: std::sync::Arc<std::sync::Mutex<Tally>>,
    handles: Vec<std::thread::JoinHandle<()>>,
    started: Instant,
}

impl Load {
    fn start(url: &str, base: &str, token: &str, threads: usize, slow_ms: u64) -> Load {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tally = std::sync::Arc::new(std::sync::Mutex::new(Tally::default()));
        let started = Instant::now();
        let mut handles = Vec::new();
        let request = |url: String, path: String, token: String| {
            // `http` panics on a broken connection: a failure too.
            std::panic::catch_unwind(move || http(&url, "GET", &path, Some(&token)))
                .map_err(|_| "connection error".to_owned())
        };
        for _ in 0..threads {
            let (stop, tally) = (stop.clone(), tally.clone());
            let (url, path, token) = (url.to_owned(), format!("{base}/version"), token.to_owned());
            handles.push(std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let answer = request(url.clone(), path.clone(), token.clone());
                    let mut tally = tally.lock().unwrap();
                    match answer {
                        Ok((200, _, body)) => *tally.ok.entry(body).or_default() += 1,
                        Ok((status, _, body)) => {
                            tally.failed.push((format!("{status} {body}"), started.elapsed()))
                        }
                        Err(e) => tally.failed.push((e, started.elapsed())),
                    }
                }
            }));
        }
        let (stop2, tally2) = (stop.clone(), tally.clone());
        let (url, path, token) = (url.to_owned(), format!("{base}/slow?ms={slow_ms}"), token.to_owned());
        handles.push(std::thread::spawn(move || {
            let mut slow = Vec::new();
            while !stop2.load(Ordering::SeqCst) {
                let (tally, url, path, token) = (tally2.clone(), url.clone(), path.clone(), token.clone());
                slow.push(std::thread::spawn(move || {
                    let answer = request(url, path, token);
                    let mut tally = tally.lock().unwrap();
                    match answer {
                        Ok((200, _, body)) => tally.slow.push((body, started.elapsed())),
                        Ok((status, _, body)) => {
                            tally.failed.push((format!("slow: {status} {body}"), started.elapsed()))
                        }
                        Err(e) => tally.failed.push((format!("slow: {e}"), started.elapsed())),
                    }
                }));
                std::thread::sleep(Duration::from_millis(500));
            }
            for h in slow {
                let _ = h.join();
            }
        }));
        Load { stop, tally, handles, started }
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Answers by body so far.
    fn ok(&self) -> std::collections::BTreeMap<String, u64> {
        self.tally.lock().unwrap().ok.clone()
    }

    fn finish(self) -> Tally {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for h in self.handles {
            let _ = h.join();
        }
        std::mem::take(&mut *self.tally.lock().unwrap())
    }
}

/// The latest submission of every job with its replica and deployment numbers:
/// (replica, deployment, status, termination reason).
fn replicas_of(run: &Value) -> Vec<(i64, i64, String, String)> {
    run["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| {
            let s = j["job_submissions"].as_array()?.last()?.clone();
            let text = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
            Some((
                j["job_spec"]["replica_num"].as_i64()?,
                s["deployment_num"].as_i64()?,
                text("status"),
                text("termination_reason"),
            ))
        })
        .collect()
}

const HEALTH_PROBE: &str =
    "probes:\n  - {type: http, url: /health, interval: 1s, timeout: 2s, ready_after: 1}\n";

#[test]
fn a_rolling_update_switches_versions_without_a_failed_request() {
    let Some(t) = apply_service(
        "svc-roll",
        &[("DSTACK_SERVER_LOCAL_FLEET_BLOCKS", "2")],
        &format!("env:\n  VERSION: v1\n{HEALTH_PROBE}"),
    ) else {
        return;
    };
    let (home, url, token) = (t.home(), t.url.clone(), t.token.clone());
    let base = "/proxy/services/main/svc-roll";
    wait("v1 to serve", Duration::from_secs(120), || {
        let (status, _, body) = http(&url, "GET", &format!("{base}/version"), Some(&token));
        (status == 200 && body == "v1").then_some(())
    });
    let load = Load::start(&url, base, &token, 4, 3000);
    std::thread::sleep(Duration::from_secs(2));

    // The update: a changed env rolls out as deployment 1.
    let out = reapply(&t, &format!("env:\n  VERSION: v2\n{HEALTH_PROBE}"), "dstack-test-replica 8000");
    assert!(
        out.contains(
            "Active run svc-roll already exists. Detected changes that can be updated in-place:\n\
             - Configuration properties:\n  - env\n"
        ),
        "{out}"
    );
    assert!(out.contains("Run svc-roll updated, detaching..."), "{out}");
    let applied_at = load.elapsed();
    let run = ps_run(home, "svc-roll");
    assert_eq!(run["deployment_num"], 1, "{run:#}");

    // The new replica serves, the old one is drained and stopped as `scaled_down`.
    wait("v2 to serve", Duration::from_secs(120), || load.ok().contains_key("v2").then_some(()));
    let switched_at = load.elapsed();
    let run = wait("the old replica stopped", Duration::from_secs(120), || {
        let run = ps_run(home, "svc-roll");
        let reps = replicas_of(&run);
        reps.iter()
            .any(|(r, d, status, reason)| {
                *r == 0 && *d == 0 && status == "terminated" && reason == "scaled_down"
            })
            .then_some(run)
    });
    let stopped_at = load.elapsed();
    // After the stop only v2 answers.
    let before = load.ok();
    std::thread::sleep(Duration::from_secs(4));
    let after = load.ok();
    let tally = load.finish();
    eprintln!(
        "rolling update: applied at {applied_at:?}, v2 first served at {switched_at:?}, v1 stopped at {stopped_at:?}; \
         answers {:?}, slow {}, failed {:?}",
        tally.ok,
        tally.slow.len(),
        tally.failed
    );
    assert!(tally.failed.is_empty(), "failed requests during the update: {:?}", tally.failed);
    assert_eq!(before.get("v1"), after.get("v1"), "no v1 answer after the old replica stopped");
    assert!(after["v2"] > before["v2"], "{before:?} {after:?}");
    // Slow requests started on v1 finished on v1 after v2 had started serving: the old
    // replica was drained, not cut off.
    assert!(
        tally.slow.iter().any(|(body, ended)| body == "v1" && *ended > switched_at),
        "a slow v1 request ended after the switch: {:?}",
        tally.slow
    );
    assert!(tally.slow.iter().any(|(body, _)| body == "v2"), "{:?}", tally.slow);
    assert_eq!(run["status"], "running", "{run:#}");
    let reps = replicas_of(&run);
    let live: Vec<_> = reps.iter().filter(|(_, _, s, _)| s == "running").collect();
    assert_eq!(live.len(), 1, "{reps:?}");
    assert_eq!(live[0].1, 1, "the running replica is of deployment 1: {reps:?}");

    // Re-applying the same spec changes nothing that runs: the replica is bumped in place.
    let (code, out, err) =
        cli(home, &["apply", "-f", &t.home().join("svc.yml").display().to_string(), "-y", "-d"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Detected no changes") && out.contains("Use --force"), "{out}");

    // A change that leaves the job spec as it is (`priority`) is a new deployment too, but
    // the running replica is only marked as of it: no new replica, nothing stopped.
    let job_before = running_jobs(&ps_run(home, "svc-roll"));
    let out =
        reapply(&t, &format!("priority: 5\nenv:\n  VERSION: v2\n{HEALTH_PROBE}"), "dstack-test-replica 8000");
    assert!(out.contains("can be updated in-place:\n- Configuration properties:\n  - priority\n"), "{out}");
    let run = wait("the replica bumped in place", Duration::from_secs(30), || {
        let run = ps_run(home, "svc-roll");
        replicas_of(&run).iter().any(|(_, d, s, _)| *d == 2 && s == "running").then_some(run)
    });
    assert_eq!(run["deployment_num"], 2, "{run:#}");
    assert_eq!(running_jobs(&run), job_before, "the same job: {run:#}");
    assert_eq!(replicas_of(&run).len(), 2, "no new replica: {run:#}");
}

#[test]
fn a_failed_update_leaves_the_old_version_serving_and_says_why() {
    let Some(t) = apply_service(
        "svc-bad",
        &[("DSTACK_SERVER_LOCAL_FLEET_BLOCKS", "2")],
        &format!("env:\n  VERSION: v1\n{HEALTH_PROBE}"),
    ) else {
        return;
    };
    let (home, url, token) = (t.home(), t.url.clone(), t.token.clone());
    let base = "/proxy/services/main/svc-bad";
    wait("v1 to serve", Duration::from_secs(120), || {
        let (status, _, body) = http(&url, "GET", &format!("{base}/version"), Some(&token));
        (status == 200 && body == "v1").then_some(())
    });
    let load = Load::start(&url, base, &token, 4, 1000);

    // A new version whose probe never passes: it runs, gets no traffic, and the run says why.
    let never_ready = "probes:\n  - {type: http, url: /ready, interval: 1s, timeout: 2s, ready_after: 1}\n";
    reapply(&t, &format!("env:\n  VERSION: v2\n{never_ready}"), "dstack-test-replica 8000");
    let run = wait("the probe message", Duration::from_secs(120), || {
        let run = ps_run(home, "svc-bad");
        run["status_message"].as_str().is_some_and(|m| m.contains("probes not passing")).then_some(run)
    });
    eprintln!("never ready: {}", run["status_message"]);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(ps_run(home, "svc-bad")["status"], "running");

    // A version that exits at once supersedes it: it fails, the run does not, v1 serves.
    reapply(&t, &format!("env:\n  VERSION: v3\n{HEALTH_PROBE}"), "exit 1");
    let run = wait("the failure message", Duration::from_secs(120), || {
        let run = ps_run(home, "svc-bad");
        run["status_message"].as_str().is_some_and(|m| m.starts_with("update failed")).then_some(run)
    });
    let message = run["status_message"].as_str().unwrap_or_default().to_owned();
    eprintln!("failed update: {message}");
    assert_eq!(run["status"], "running", "{run:#}");
    assert_eq!(run["deployment_num"], 2, "{run:#}");
    let (code, out, err) = cli(home, &["ps"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.to_lowercase().contains("update failed"), "{out}");
    // It stays so: no replacement is tried, the old replica keeps serving.
    std::thread::sleep(Duration::from_secs(8));
    let run = ps_run(home, "svc-bad");
    assert_eq!(run["status"], "running", "{run:#}");
    assert_eq!(run["status_message"], message.as_str(), "{run:#}");
    let reps = replicas_of(&run);
    assert!(reps.iter().any(|(r, d, s, _)| *r == 0 && *d == 0 && s == "running"), "{reps:?}");
    assert_eq!(reps.iter().filter(|(_, d, _, _)| *d == 2).count(), 1, "one failed try of v3: {reps:?}");
    let tally = load.finish();
    eprintln!("failed update: answers {:?}, slow {}, failed {:?}", tally.ok, tally.slow.len(), tally.failed);
    assert!(tally.failed.is_empty(), "failed requests: {:?}", tally.failed);
    assert_eq!(tally.ok.keys().collect::<Vec<_>>(), ["v1"], "only v1 served: {:?}", tally.ok);
}

/// The real dstack 0.22.5 CLI (pip, `DSTACK_ORACLE_VENV`) re-applies a changed service as an
/// update: it plans `action: update`, sends the current run back, and the run rolls to the
/// new version.
#[test]
fn the_pip_cli_updates_a_service_in_place() {
    let exe = match crate::pip_attach::pip_dstack() {
        Ok(exe) => exe,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let Some(t) = apply_service(
        "svc-pip",
        &[("DSTACK_SERVER_LOCAL_FLEET_BLOCKS", "2")],
        &format!("env:\n  VERSION: v1\n{HEALTH_PROBE}"),
    ) else {
        return;
    };
    let (home, url, token) = (t.home(), t.url.clone(), t.token.clone());
    let base = "/proxy/services/main/svc-pip";
    wait("v1 to serve", Duration::from_secs(120), || {
        let (status, _, body) = http(&url, "GET", &format!("{base}/version"), Some(&token));
        (status == 200 && body == "v1").then_some(())
    });
    let file = home.join("svc.yml");
    let text = std::fs::read_to_string(&file).unwrap().replace("VERSION: v1", "VERSION: v2");
    std::fs::write(&file, text).unwrap();
    let out = crate::pip_attach::pip(&exe, home, &["apply", "-f", "svc.yml", "-y", "-d"]).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("Detected changes that can be updated in-place"), "{stdout}");
    assert!(stdout.contains("- env"), "{stdout}");
    assert!(stdout.contains("svc-pip updated"), "{stdout}");
    assert_eq!(ps_run(home, "svc-pip")["deployment_num"], 1);
    wait("v2 to serve alone", Duration::from_secs(120), || {
        let answers: Vec<String> =
            (0..4).map(|_| http(&url, "GET", &format!("{base}/version"), Some(&token)).2).collect();
        answers.iter().all(|a| a == "v2").then_some(())
    });
}

/// A GET to `addr` with `Host: host`, and the Bearer `token` if any; (status, body); status 0
/// when nothing answers there.
pub(crate) fn get_with_host(addr: &str, host: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(addr) else { return (0, String::new()) };
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    if write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n").is_err() {
        return (0, String::new());
    }
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[test]
fn a_service_on_a_local_gateway_is_served_on_its_domain() {
    if std::env::var_os("DSTACK_TEST_DOCKER").is_none() {
        eprintln!("skipped: set DSTACK_TEST_DOCKER=1 to run the Docker tests");
        return;
    }
    agents_built();
    service_image();
    let dir = tempfile::TempDir::new().unwrap();
    let home = dir.path();
    let server = start_with_local_fleet_env(home, &[]);
    let http_port = crate::unused_port();
    let gw_file = home.join("gw.yml");
    std::fs::write(
        &gw_file,
        format!(
            "type: gateway\nname: test-gw\nbackend: local\ndomain: gw.test\ncertificate: null\n\
             local: {{host: 127.0.0.1, http_port: {http_port}}}\n"
        ),
    )
    .unwrap();
    let (code, out, err) = cli(home, &["apply", "-f", &gw_file.display().to_string(), "-y"]);
    assert_eq!(code, 0, "{out}{err}");
    wait("the gateway running", Duration::from_secs(60), || {
        let (code, out, _) = cli(home, &["gateway", "list", "--json"]);
        let list: Value = serde_json::from_str(&out).ok()?;
        (code == 0 && list[0]["status"] == "running").then_some(())
    });
    let svc_file = home.join("svc.yml");
    std::fs::write(
        &svc_file,
        "type: service\nname: gwsvc\nimage: dstack-rs-service-test:1\nport: 8000\ngateway: test-gw\n\
         https: false\nauth: false\nresources: {cpu: 1.., memory: 0.5GB.., disk: 1GB..}\n\
         rate_limits: [{prefix: /version, rps: 0.1, burst: 0}]\ncommands: [dstack-test-replica 8000]\n",
    )
    .unwrap();
    let (code, out, err) = cli(home, &["apply", "-f", &svc_file.display().to_string(), "-y", "-d"]);
    assert_eq!(code, 0, "{out}{err}");
    let run = wait("the replica running", Duration::from_secs(120), || {
        let run = ps_run(home, "gwsvc");
        (running_jobs(&run).len() == 1).then_some(run)
    });
    assert_eq!(run["service"]["url"], format!("http://gwsvc.gw.test:{http_port}"), "{run:#}");
    let job = running_jobs(&run).remove(0);
    let addr = format!("127.0.0.1:{http_port}");
    let body = wait("the gateway to serve the replica", Duration::from_secs(60), || {
        let (status, body) = get_with_host(&addr, &format!("gwsvc.gw.test:{http_port}"), "/whoami", None);
        (status == 200).then_some(body)
    });
    assert_eq!(body, job, "the replica answers through the gateway");
    let (status, _) = get_with_host(&addr, "other.gw.test", "/whoami", None);
    assert_ne!(status, 200, "an unknown service is not served");
    // The service's rate limit went to the gateway: one request per 10 s under /version.
    let host = format!("gwsvc.gw.test:{http_port}");
    let statuses: Vec<u16> = (0..2).map(|_| get_with_host(&addr, &host, "/version", None).0).collect();
    assert_eq!(statuses, [200, 429], "the second request within 10 s is refused");
    assert_eq!(get_with_host(&addr, &host, "/whoami", None).0, 200, "other paths are not limited");

    let (code, out, err) = cli(home, &["stop", "gwsvc", "-x", "-y"]);
    assert_eq!(code, 0, "{out}{err}");
    wait("the service gone from the gateway", Duration::from_secs(60), || {
        let (status, _) = get_with_host(&addr, &format!("gwsvc.gw.test:{http_port}"), "/whoami", None);
        matches!(status, 404 | 503).then_some(())
    });

    // A gateway whose port is taken fails, saying why.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_file = home.join("busy.yml");
    std::fs::write(
        &busy_file,
        format!(
            "type: gateway\nname: busy-gw\nbackend: local\ndomain: busy.test\ncertificate: null\n\
             local: {{host: 127.0.0.1, http_port: {}}}\n",
            taken.local_addr().unwrap().port()
        ),
    )
    .unwrap();
    let (code, out, err) = cli(home, &["apply", "-f", &busy_file.display().to_string(), "-y"]);
    assert_eq!(code, 0, "{out}{err}");
    let busy = wait("the busy gateway failed", Duration::from_secs(60), || {
        let (_, out, _) = cli(home, &["gateway", "list", "--json"]);
        let list: Value = serde_json::from_str(&out).ok()?;
        list.as_array()?.iter().find(|g| g["name"] == "busy-gw" && g["status"] == "failed").cloned()
    });
    assert!(
        busy["status_message"].as_str().is_some_and(|m| m.starts_with("the gateway process exited")),
        "{busy:#}"
    );
    assert_eq!(busy["default"], false, "the project's first gateway stays the default");

    let (code, out, err) = cli(home, &["gateway", "delete", "test-gw", "busy-gw", "-y"]);
    assert_eq!(code, 0, "{out}{err}");
    wait("the gateway process gone", Duration::from_secs(30), || {
        let (_, out, _) = cli(home, &["gateway", "list", "--json"]);
        let gone = serde_json::from_str::<Value>(&out).is_ok_and(|l| l == Value::Array(vec![]));
        (gone && TcpStream::connect(&addr).is_err()).then_some(())
    });
    stop(server);
}

/// A replica without probes gets no request before its app listens (dstack sends it traffic
/// as soon as its job runs): from the moment the run is `running`, continuous requests get
/// dstack's answer for a service with no ready replica (404) while the app waits for the
/// test's go, then only the app's answers, and none fails. Here the replica is a host process
/// of the local fleet (`python3 -m http.server`), so no Docker is needed.
#[test]
fn a_replica_without_probes_gets_no_request_before_it_listens() {
    no_request_before_it_listens(false);
}

/// [`a_replica_without_probes_gets_no_request_before_it_listens`] with the replica in a
/// container, whose published port Docker's port proxy accepts connections on before the app
/// listens (`DSTACK_TEST_DOCKER=1`).
#[test]
fn a_replica_in_a_container_gets_no_request_before_it_listens() {
    if std::env::var_os("DSTACK_TEST_DOCKER").is_none() {
        eprintln!("skipped: set DSTACK_TEST_DOCKER=1 to run the Docker tests");
        return;
    }
    service_image();
    no_request_before_it_listens(true);
}

fn no_request_before_it_listens(in_a_container: bool) {
    agents_built();
    let dir = tempfile::TempDir::new().unwrap();
    let home = dir.path();
    let server = start_with_local_fleet(home);
    let (url, token) = (server.url.clone(), server.token.clone());
    // The app waits for `go` (a file), then serves: what it answers on `path` contains `shows`.
    let (go, service, path, shows) = if in_a_container {
        let service = "image: dstack-rs-service-test:1\nport: 8000\n\
                       commands:\n  - while [ ! -e /tmp/go ]; do sleep 0.1; done\n\
                       \x20 - exec dstack-test-replica 8000\n";
        (None, service.to_owned(), "whoami", "")
    } else {
        let port = crate::unused_port();
        let go = home.join("go");
        let service = format!(
            "port: {port}\ncommands:\n  - while [ ! -e {go} ]; do sleep 0.1; done\n\
             \x20 - exec python3 -m http.server {port} --bind 127.0.0.1\n",
            go = go.display()
        );
        (Some(go), service, "", "Directory listing")
    };
    let file = home.join("late.yml");
    std::fs::write(
        &file,
        format!(
            "type: service\nname: late\n{service}resources: {{cpu: 1.., memory: 0.5GB.., disk: 1GB..}}\n"
        ),
    )
    .unwrap();
    let (code, out, err) = cli(home, &["apply", "-f", &file.display().to_string(), "-y", "-d"]);
    assert_eq!(code, 0, "{out}{err}");
    let job = wait("the run running", Duration::from_secs(120), || {
        let run = ps_run(home, "late");
        (run["status"] == "running").then(|| running_jobs(&run).pop()).flatten()
    });

    let path = format!("/proxy/services/main/late/{path}");
    let mut answers: Vec<(u16, String)> = Vec::new();
    let ask = |answers: &mut Vec<(u16, String)>| {
        let (status, _, body) = http(&url, "GET", &path, Some(&token));
        answers.push((status, body));
    };
    // Running, not listening: for 3 s, nothing is sent to it.
    let waiting = Instant::now();
    while waiting.elapsed() < Duration::from_secs(3) {
        ask(&mut answers);
        std::thread::sleep(Duration::from_millis(50));
    }
    let not_listening = answers.len();
    match go {
        Some(go) => std::fs::write(&go, "").unwrap(),
        None => {
            let ids = Command::new("docker")
                .args(["ps", "-q", "--filter", &format!("label=ai.dstack.shim.task-id={job}")])
                .output()
                .unwrap()
                .stdout;
            let ids = String::from_utf8(ids).unwrap();
            let container = ids.lines().next().expect("the replica's container");
            let out =
                Command::new("docker").args(["exec", container, "sh", "-c", ": > /tmp/go"]).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    }
    // It listens: served within the probes loop's check and the route cache, then only served.
    let deadline = Instant::now() + Duration::from_secs(60);
    while answers.last().is_none_or(|(status, _)| *status != 200) {
        assert!(Instant::now() < deadline, "never served: {:?}", answers.last());
        ask(&mut answers);
        std::thread::sleep(Duration::from_millis(50));
    }
    let served = Instant::now();
    while served.elapsed() < Duration::from_secs(3) {
        ask(&mut answers);
        std::thread::sleep(Duration::from_millis(20));
    }
    let not_found = r#"{"detail":"Service main/late not found"}"#.to_owned();
    let first_served = answers.iter().position(|(status, _)| *status == 200).expect("served");
    assert!(first_served >= not_listening, "served before it listened: {answers:?}");
    for (i, (status, body)) in answers.iter().enumerate() {
        if i < first_served {
            assert_eq!((*status, body), (404, &not_found), "request {i} before the replica was ready");
        } else {
            assert_eq!(*status, 200, "request {i} once served: {body}");
            assert!(body.contains(shows), "request {i}: {body}");
        }
    }
    if in_a_container {
        assert_eq!(answers.last().map(|(_, body)| body.as_str()), Some(job.as_str()), "the replica's job");
    }
    eprintln!("{not_listening} requests while it did not listen, {} after", answers.len() - not_listening);
}
