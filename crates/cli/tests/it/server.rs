//! `dstack server` as a process: first start, the CLI config it writes, a restart that keeps
//! the admin token, and a graceful stop on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) struct Server {
    child: Child,
    home: std::path::PathBuf,
    pub(crate) url: String,
    pub(crate) token: String,
}

impl Drop for Server {
    /// Ends the server, however the test ended, and everything it started under its home:
    /// the local fleet's shim and its jobs, which outlive the server by design (jobs survive
    /// a restart), and their containers ([`clean_up_home`]).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        clean_up_home(&self.home);
    }
}

/// Ends every process a test started under `home` and removes their task containers, so that
/// a test leaves nothing behind on success, failure or panic. A process belongs to the test
/// when its command line or environment names `home`: the server (`HOME`), the local shim
/// (`--shim-home`), runners (`--temp-dir`), host jobs (`DSTACK_WORKING_DIR`) and local
/// gateways; each is killed with its process group (unless that is this test's own). Task
/// containers are those whose shim home label lies under `home`.
pub(crate) fn clean_up_home(home: &Path) {
    let marker = home.display().to_string();
    let own_group = own_process_group();
    // A server killed between two scans cannot start anything new, but a shim may still be
    // starting a runner: scan until nothing is left.
    for _ in 0..10 {
        let found = processes_under(&marker);
        if found.is_empty() {
            break;
        }
        for (pid, group) in found {
            if let Some(group) = group.filter(|g| *g != own_group && *g > 1) {
                let _ = Command::new("kill").args(["-KILL", "--", &format!("-{group}")]).output();
            }
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).output();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    remove_task_containers(&marker);
}

/// This process' group.
fn own_process_group() -> u32 {
    process_group(std::process::id()).unwrap_or(0)
}

/// The process group of `pid` (field 5 of `/proc/<pid>/stat`, after the parenthesized name).
fn process_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(2)?.parse().ok()
}

/// The live processes (not this one) whose command line or environment contains `marker`,
/// with their process groups.
fn processes_under(marker: &str) -> Vec<(u32, Option<u32>)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if pid == me {
            continue;
        }
        let names_it = ["cmdline", "environ"]
            .iter()
            .any(|file| std::fs::read(entry.path().join(file)).is_ok_and(|bytes| names_path(&bytes, marker)));
        if names_it {
            found.push((pid, process_group(pid)));
        }
    }
    found
}

/// Whether one of the NUL-separated fields in `bytes` names `marker` or a path under it (not
/// merely a longer name that starts the same).
fn names_path(bytes: &[u8], marker: &str) -> bool {
    let text = String::from_utf8_lossy(bytes);
    text.split('\0').any(|field| {
        field.match_indices(marker).any(|(at, _)| {
            let rest = &field[at + marker.len()..];
            rest.is_empty() || rest.starts_with('/')
        })
    })
}

/// Removes the task containers of runs named `<prefix>…` (and their anonymous volumes) from
/// the shared engine when dropped, so that a failed test leaves none running: for jobs on SSH
/// test hosts, whose shims are gone with their hosts.
pub(crate) struct RemoveContainers(pub(crate) String);

impl Drop for RemoveContainers {
    fn drop(&mut self) {
        let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", "label=ai.dstack.shim.is-task=true", "--filter"])
            .arg(format!("name={}", self.0))
            .output()
        else {
            return;
        };
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("docker").args(["rm", "-f", "-v", id]).output();
        }
    }
}

/// Removes the task containers of shims whose home is under `marker` (the shims label their
/// containers with their home).
fn remove_task_containers(marker: &str) {
    let Ok(out) = Command::new("docker")
        .args(["ps", "-a", "--filter", "label=ai.dstack.rs.shim-home"])
        .args(["--format", "{{.ID}} {{.Label \"ai.dstack.rs.shim-home\"}}"])
        .output()
    else {
        return;
    };
    let ids: Vec<&str> = std::str::from_utf8(&out.stdout)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(_, home)| Path::new(home).starts_with(marker))
        .map(|(id, _)| id)
        .collect();
    if !ids.is_empty() {
        let _ = Command::new("docker").args(["rm", "-f"]).args(&ids).output();
    }
}

/// A server without the local fleet (no agents needed).
pub(crate) fn start(home: &Path, extra: &[&str]) -> Server {
    spawn(home, extra, false, &[])
}

/// A server without the local fleet, with extra environment variables.
pub(crate) fn start_env(home: &Path, env: &[(&str, &str)]) -> Server {
    spawn(home, &[], false, env)
}

/// A server with its `local` fleet (the agents must be built).
pub(crate) fn start_with_local_fleet(home: &Path) -> Server {
    spawn(home, &[], true, &[])
}

/// A server with its `local` fleet and extra environment variables, which its shim and
/// runners inherit.
pub(crate) fn start_with_local_fleet_env(home: &Path, env: &[(&str, &str)]) -> Server {
    spawn(home, &[], true, env)
}

fn spawn(home: &Path, extra: &[&str], local_fleet: bool, env: &[(&str, &str)]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dstack"))
        .args(["server", "--host", "127.0.0.1", "--port", "0"])
        .args(extra)
        .envs(env.iter().copied())
        .env("HOME", home)
        .env("DSTACK_SERVER_DIR", home.join("server"))
        .env_remove("DSTACK_DO_NOT_UPDATE_DEFAULT_PROJECT")
        .env("DSTACK_SERVER_NO_LOCAL_FLEET", if local_fleet { "0" } else { "1" })
        .env_remove("DSTACK_DATABASE_URL")
        .env_remove("DSTACK_SERVER_URL")
        .stdout(Stdio::piped())
        // The server's log, for a failing test to show.
        .stderr(
            std::fs::File::options()
                .create(true)
                .append(true)
                .open(home.join("server.log"))
                .expect("a log file"),
        )
        .spawn()
        .expect("dstack server starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let token_line = lines.next().expect("a token line").expect("utf-8");
    let url_line = lines.next().expect("a url line").expect("utf-8");
    let token = token_line.trim_start_matches("The admin token is ").trim_matches('"').to_owned();
    let url = url_line.trim_start_matches("The server is running at ").trim_end_matches('/').to_owned();
    Server { child, home: home.to_owned(), url, token }
}

/// A minimal HTTP/1.1 GET (no client library needed for one health probe).
fn get(url: &str, path: &str) -> String {
    let addr = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).expect("the server accepts connections");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

pub(crate) fn stop(mut server: Server) -> i32 {
    terminate(&mut server)
}

/// [`stop`], leaving what the server started under its home (the local shim and its jobs)
/// running, as a restart does; the next server over the same home cleans up after both.
pub(crate) fn stop_keeping_jobs(server: Server) -> i32 {
    terminate(&mut std::mem::ManuallyDrop::new(server))
}

/// SIGTERM, then the server's exit code once it has stopped.
fn terminate(server: &mut Server) -> i32 {
    let status = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(Instant::now() < deadline, "the server did not stop within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn first_start_restart_and_graceful_stop() {
    let home = tempfile::TempDir::new().unwrap();
    let server = start(home.path(), &["--token", "first-token"]);
    assert_eq!(server.token, "first-token");
    let health = get(&server.url, "/healthcheck");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with(r#"{"status":"running"}"#), "{health}");

    let config =
        std::fs::read_to_string(home.path().join(".dstack/config.yml")).expect("config.yml is written");
    assert!(config.contains("name: main"), "{config}");
    assert!(config.contains("token: first-token"), "{config}");
    assert!(config.contains(&server.url), "{config}");
    assert!(home.path().join("server/data/sqlite.db").exists());
    assert_eq!(stop(server), 0, "SIGTERM is a clean exit");

    // A restart keeps the admin created on the first start; --token no longer changes it.
    let again = start(home.path(), &["--token", "other-token"]);
    assert_eq!(again.token, "first-token");
    assert_eq!(stop(again), 0);
}

/// Run `name` as `dstack ps -a --json` shows it, if there is one.
pub(crate) fn ps_find(home: &Path, name: &str) -> Option<serde_json::Value> {
    let (code, out, err) = cli(home, &["ps", "-a", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let runs: serde_json::Value = serde_json::from_str(&out).unwrap();
    runs["runs"].as_array()?.iter().find(|r| r["run_spec"]["run_name"] == name).cloned()
}

/// Run `name` as `dstack ps -a --json` shows it.
pub(crate) fn ps_run(home: &Path, name: &str) -> serde_json::Value {
    ps_find(home, name).unwrap_or_else(|| panic!("no run {name}"))
}

/// Runs our CLI with `home` as the home directory; returns (exit code, stdout, stderr).
pub(crate) fn cli(home: &Path, args: &[&str]) -> (i32, String, String) {
    cli_env(home, args, &[])
}

/// [`cli`] with extra environment variables.
pub(crate) fn cli_env(home: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dstack"))
        .args(args)
        .envs(env.iter().copied())
        .env("HOME", home)
        .env("NO_COLOR", "1")
        .env_remove("DSTACK_PROJECT")
        .env_remove("DSTACK_SERVER_URL")
        .env_remove("DSTACK_TOKEN")
        .output()
        .expect("the CLI runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn the_cli_uses_the_server_it_started() {
    let home = tempfile::TempDir::new().unwrap();
    let server = start(home.path(), &[]);
    let h = home.path();

    // `dstack server` configured the CLI: secrets work at once.
    assert_eq!(cli(h, &["secret", "set", "hf_token", "abc"]).0, 0);
    let (code, out, _) = cli(h, &["secret", "list", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), r#"[{"name":"hf_token"}]"#);
    let (code, out, _) = cli(h, &["secret", "get", "hf_token"]);
    assert_eq!((code, out.trim()), (0, "abc"));
    let (code, _, err) = cli(h, &["secret", "get", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("Resource not found"), "{err}");
    assert_eq!(cli(h, &["secret", "delete", "hf_token", "-y"]).0, 0);

    // Projects: add checks the server, the others edit the file.
    let (code, _, err) =
        cli(h, &["project", "add", "--name", "main", "--url", &server.url, "--token", "wrong", "-y"]);
    assert_eq!(code, 1);
    assert!(err.contains("is denied"), "{err}");
    let (code, _, err) =
        cli(h, &["project", "add", "--name", "ghost", "--url", &server.url, "--token", &server.token]);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) =
        cli(h, &["project", "add", "--name", "main", "--url", &server.url, "--token", &server.token]);
    assert_eq!(code, 1);
    assert!(err.contains("pass -y"), "{err}");
    assert_eq!(
        cli(h, &["project", "add", "--name", "main", "--url", &server.url, "--token", &server.token, "-y"]).0,
        0
    );
    let (_, out, _) = cli(h, &["project", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(listed, serde_json::json!([{"name": "main", "url": server.url, "default": true}]));
    let (code, _, err) = cli(h, &["project", "set-default", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("Project nope is not configured"), "{err}");
    assert_eq!(cli(h, &["project", "delete", "--name", "main", "-y"]).0, 0);
    let (code, _, err) = cli(h, &["secret", "list"]);
    assert_eq!(code, 1);
    assert!(err.contains("No default project"), "{err}");
    assert_eq!(stop(server), 0);
}
