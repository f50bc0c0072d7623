//! `dstack attach RUN` (api.md `attach`, agents.md §3.7), also what attached `dstack apply` of
//! a dev environment does once it runs.
//!
//! It waits while the run provisions, writes host entries to `~/.dstack/ssh/config` (and
//! puts `Include` of it at the top of `~/.ssh/config`, as dstack does), starts
//! `ssh -N -M -S ~/.dstack/ssh/<run>.control.sock -L …` for the runner's port and the
//! configuration's `ports`, then waits for Ctrl-C (or, with `--logs`, streams the job's output
//! from the runner's `/logs_ws` through the tunnel). Detaching stops the tunnel and removes
//! the host entries, so `ssh <run>` works while attached.
//!
//! Local ports are picked as dstack does: `ports: [8080]` maps 8080 to local 8080 (failing
//! if it is taken), `*:8080` and the runner's port to the remote port if free, else the next
//! free one; `-p LOCAL:REMOTE` chooses one. Ours: on the local fleet, where the job shares
//! this machine's network and so holds its own ports, a taken identity mapping falls back to
//! the next free port.
//!
//! Host entries, as dstack writes them, with one addition:
//! - a host with an SSH port (SSH fleets, VMs): `<run>-host` (the host's sshd, through
//!   `<run>-jump-host` when the host has a proxy) and `<run>` (`localhost:<container ssh
//!   port>` through `ProxyJump <run>-host`);
//! - **ours**: a host without an SSH port, i.e. the `local` fleet (the server's own machine,
//!   which runs no sshd of its own): `<run>` points straight at the instance's address and the
//!   port the container's sshd listens on there (`job_runtime_data.ports[10022]`). This only
//!   works where that address is reachable: the CLI on the server's machine.
//!
//! `IdentityFile` paths are written absolute (dstack writes `~/…`; ssh expands `~` from the
//! password database, not `$HOME`).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dstack_api::runs::{Job, JobStatus, NetworkMode, Run, RunStatus};
use sha1::Digest as _;

use crate::common::{Session, connect_to_run, interrupted, poll_interval, sleep_unless_interrupted};
use crate::logs::{Since, parse_since, pick_job};
use crate::{EXIT_OK, fail};

const RUNNER_HTTP_PORT: i64 = 10999;
const RUNNER_SSH_PORT: i64 = 10022;

#[derive(Debug, clap::Args)]
pub struct AttachArgs {
    /// The run.
    pub run_name: String,
    /// The private SSH key for the tunnel (default: your user's key from the server).
    #[arg(long = "ssh-identity", value_name = "SSH_PRIVATE_KEY")]
    pub ssh_identity_file: Option<PathBuf>,
    /// Print the run's logs as they follow (from the runner, through the tunnel).
    #[arg(long)]
    pub logs: bool,
    /// Local address to bind (default: localhost).
    #[arg(long)]
    pub host: Option<String>,
    /// Port mapping override, LOCAL:REMOTE or REMOTE (repeatable).
    #[arg(short = 'p', long = "port", value_name = "MAPPING", value_parser = parse_mapping)]
    pub ports: Vec<(u16, u16)>,
    /// The replica number (default: a running replica).
    #[arg(long)]
    pub replica: Option<i64>,
    /// The job number inside the replica.
    #[arg(long, default_value_t = 0)]
    pub job: i64,
    /// With --logs, only logs newer than this: a duration (10s, 5m) or an RFC 3339 time.
    #[arg(long, value_parser = parse_since)]
    pub since: Option<Since>,
    /// The project (default: $DSTACK_PROJECT, then the default project).
    #[arg(long)]
    pub project: Option<String>,
}

/// `8080` (any free local port, the remote one first) or `8081:8080` (local:remote).
fn parse_mapping(text: &str) -> Result<(u16, u16), String> {
    let bad = || format!("expected a port mapping like 8080 or 8081:8080, found `{text}`");
    match text.split_once(':') {
        Some((local, remote)) => Ok((local.parse().map_err(|_| bad())?, remote.parse().map_err(|_| bad())?)),
        None => Ok((0, text.parse().map_err(|_| bad())?)),
    }
}

pub fn run(args: &AttachArgs) -> u8 {
    let (session, run) = match connect_to_run(args.project.as_deref(), &args.run_name) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let options = Options {
        identity: args.ssh_identity_file.clone(),
        logs: args.logs,
        bind: args.host.clone().unwrap_or_else(|| "localhost".to_owned()),
        overrides: args.ports.clone(),
        replica: args.replica,
        job: args.job,
        start_time: args.since.map(|s| s.resolve(jiff::Timestamp::now())),
    };
    attach(&session, run, &options)
}

/// What an attach is asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub identity: Option<PathBuf>,
    pub logs: bool,
    pub bind: String,
    pub overrides: Vec<(u16, u16)>,
    pub replica: Option<i64>,
    pub job: i64,
    pub start_time: Option<jiff::Timestamp>,
}

fn is_provisioning(run: &Run) -> bool {
    matches!(run.status, RunStatus::Submitted | RunStatus::Pending | RunStatus::Provisioning)
}

/// Attaches to `run` (waiting while it provisions) until Ctrl-C, the end of the logs (with
/// `logs`) or the end of the run.
pub fn attach(session: &Session, mut run: Run, options: &Options) -> u8 {
    let flag = interrupted();
    let name = run.run_spec.run_name.clone().unwrap_or_default();
    let mut attempt = 0;
    while is_provisioning(&run) || !job_running(&run, options) && !run.status.is_finished() {
        if attempt == 0 {
            eprintln!("Attaching to {name}...");
        }
        if sleep_unless_interrupted(poll_interval(attempt), &flag) {
            return detached(&name);
        }
        attempt += 1;
        run = match session.client.get_run(&session.project, &name) {
            Ok(run) => run,
            Err(e) => return fail(e),
        };
    }
    if run.status.is_finished() && run.status != RunStatus::Done {
        return fail(format!("Run {name} is {}", run.status.as_str()));
    }
    let Some(job) = pick_job(&run, options.replica, options.job) else {
        return fail(format!("Failed to find replica={:?} job={}", options.replica, options.job));
    };
    let host =
        if job.job_spec.replica_num != 0 || options.job != 0 { job.job_spec.job_name.clone() } else { name };
    let identity = match identity(session, &run, options) {
        Ok(path) => path,
        Err(e) => return fail(e),
    };
    let target = match Target::of(job) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let paths = Paths::new();
    let mut tunnel = match Tunnel::open(&paths, &host, &target, &identity, job, options) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let runner_local = tunnel.ports.get(&RUNNER_HTTP_PORT).copied().unwrap_or_default();
    let mut text =
        format!("Attached to run {host} (replica={} job={})\n", job.job_spec.replica_num, options.job);
    let apps: Vec<_> = tunnel.ports.iter().filter(|(remote, _)| **remote != RUNNER_HTTP_PORT).collect();
    if !apps.is_empty() {
        text.push_str("Forwarded ports (local -> remote):\n");
        for (remote, local) in apps {
            text.push_str(&format!("  - {}:{local} -> {remote}\n", options.bind));
        }
    }
    text.push_str(&format!("To connect to the run via SSH, use `ssh {host}`.\nPress Ctrl+C to detach..."));
    out!("{text}");
    let code = if options.logs {
        match stream_logs(runner_local, options.start_time, &flag) {
            Ok(true) => {
                tunnel.close();
                return detached(&host);
            }
            Ok(false) => wait_finished(session, &run, &flag),
            Err(e) => {
                eprintln!("warning: the logs stream failed: {e}");
                wait_finished(session, &run, &flag)
            }
        }
    } else {
        match wait_detach(session, &run, &mut tunnel, &flag) {
            Some(code) => code,
            None => {
                tunnel.close();
                return detached(&host);
            }
        }
    };
    tunnel.close();
    code
}

fn job_running(run: &Run, options: &Options) -> bool {
    pick_job(run, options.replica, options.job)
        .and_then(|j| j.job_submissions.last())
        .is_some_and(|s| s.status == JobStatus::Running)
}

fn detached(name: &str) -> u8 {
    out!("\nDetached; the run {name} goes on. To re-attach, run `dstack attach {name}`.");
    EXIT_OK
}

/// Waits for Ctrl-C (`None`) or the end of the run or of the tunnel (an exit code).
fn wait_detach(session: &Session, run: &Run, tunnel: &mut Tunnel, flag: &AtomicBool) -> Option<u8> {
    let name = run.run_spec.run_name.clone().unwrap_or_default();
    loop {
        if sleep_unless_interrupted(Duration::from_secs(2), flag) {
            return None;
        }
        if let Ok(run) = session.client.get_run(&session.project, &name)
            && run.status.is_finished()
        {
            out!("\nRun {name} is {}", run.status.as_str());
            return Some(crate::logs::exit_code(&run));
        }
        if let Ok(Some(status)) = tunnel.child.try_wait() {
            return Some(fail(format!(
                "the SSH tunnel to {name} ended ({status}); run `dstack attach {name}`"
            )));
        }
    }
}

fn wait_finished(session: &Session, run: &Run, flag: &AtomicBool) -> u8 {
    let name = run.run_spec.run_name.clone().unwrap_or_default();
    for _ in 0..30 {
        if let Ok(run) = session.client.get_run(&session.project, &name)
            && run.status.is_finished()
        {
            out!("Run {name} is {}", run.status.as_str());
            return crate::logs::exit_code(&run);
        }
        if sleep_unless_interrupted(Duration::from_secs(1), flag) {
            return detached(&name);
        }
    }
    fail(
        "Lost run connection. Timed out waiting for run final status. Check `dstack ps` to see if it's done or failed.",
    )
}

/// Streams `/logs_ws` to stdout; `Ok(true)` when interrupted, `Ok(false)` at its end.
fn stream_logs(port: i64, start_time: Option<jiff::Timestamp>, flag: &AtomicBool) -> Result<bool, String> {
    let addr = format!("127.0.0.1:{port}");
    let stream = std::net::TcpStream::connect(&addr).map_err(|e| format!("{addr}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_millis(300))).map_err(|e| e.to_string())?;
    let mut url = format!("ws://localhost:{port}/logs_ws");
    if let Some(ts) = start_time {
        url.push_str(&format!("?start_time={ts}"));
    }
    let (mut ws, _) = tungstenite::client(url.as_str(), stream).map_err(|e| e.to_string())?;
    let mut stdout = std::io::stdout();
    let mut last_ping = Instant::now();
    loop {
        if flag.load(Ordering::SeqCst) {
            let _ = ws.close(None);
            return Ok(true);
        }
        if last_ping.elapsed() > Duration::from_secs(60) {
            let _ = ws.send(tungstenite::Message::Ping(Vec::new().into()));
            last_ping = Instant::now();
        }
        match ws.read() {
            Ok(tungstenite::Message::Binary(b)) => {
                let _ = stdout.write_all(&b);
                let _ = stdout.flush();
            }
            Ok(tungstenite::Message::Text(t)) => {
                let _ = stdout.write_all(t.as_bytes());
                let _ = stdout.flush();
            }
            Ok(tungstenite::Message::Close(_)) => return Ok(false),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return Ok(false);
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The user's private key: `--ssh-identity`, else the key the server keeps for the user
/// (saved as `~/.dstack/ssh/<sha1(token)[:8]>`, as dstack does) when it is the run's key, else
/// dstack's legacy `~/.dstack/ssh/id_rsa`.
fn identity(session: &Session, run: &Run, options: &Options) -> Result<PathBuf, String> {
    if let Some(path) = &options.identity {
        return Ok(path.clone());
    }
    let dir = Paths::new().dir;
    let hash: String =
        sha1::Sha1::digest(session.token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let key = dir.join(&hash[..8]);
    let user = session.client.get_my_user().map_err(|e| e.to_string())?;
    let (Some(private), Some(public)) = (user.ssh_private_key, user.user.ssh_public_key) else {
        return Err("Server response does not contain user SSH key".to_owned());
    };
    write_private(&dir, &key, &private)?;
    std::fs::write(key.with_extension("pub"), &public).map_err(|e| format!("{}: {e}", key.display()))?;
    if run.run_spec.ssh_key_pub.as_deref().map(str::trim) == Some(public.trim()) {
        return Ok(key);
    }
    let legacy = dir.join("id_rsa");
    if legacy.exists() {
        return Ok(legacy);
    }
    Err(format!(
        "User SSH key doesn't match; default SSH key ({}) doesn't exist; pass the run's key with --ssh-identity",
        legacy.display()
    ))
}

fn write_private(dir: &Path, key: &Path, private: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(key)
        .map_err(|e| format!("{}: {e}", key.display()))?;
    f.write_all(private.as_bytes()).map_err(|e| format!("{}: {e}", key.display()))
}

/// Where the CLI's SSH files live.
struct Paths {
    dir: PathBuf,
    config: PathBuf,
    user_config: PathBuf,
}

impl Paths {
    fn new() -> Paths {
        let home = dirs::home_dir().unwrap_or_else(|| PathBuf::from("."));
        let dir = home.join(".dstack").join("ssh");
        Paths { config: dir.join("config"), dir, user_config: home.join(".ssh").join("config") }
    }
}

/// How the job's sshd is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The instance's address.
    hostname: String,
    /// The host's sshd port; `None` for the local fleet.
    host_ssh_port: Option<i64>,
    host_user: String,
    /// `Some` for a host behind a proxy.
    proxy: Option<(String, i64, String)>,
    /// The job's sshd on the host (through the host) or directly.
    container_ssh_port: i64,
    container_user: String,
    /// Where the runner's API is, seen from inside the container.
    runner_port: i64,
    /// The backend started the shim and the job runs in its container.
    dockerized: bool,
}

impl Target {
    pub(crate) fn of(job: &Job) -> Result<Target, String> {
        let sub = job.job_submissions.last().ok_or("the job has no submission")?;
        let jpd =
            sub.job_provisioning_data.as_ref().ok_or("Failed to attach. The run is not provisioned yet.")?;
        let hostname = jpd.hostname.clone().ok_or("Failed to attach. The run is not provisioned yet.")?;
        let jrd = sub.job_runtime_data.as_ref();
        let ports = jrd.and_then(|r| r.ports.clone()).unwrap_or_default();
        let direct = jpd.ssh_port.is_none();
        let container_ssh_port = ports.get(&RUNNER_SSH_PORT).copied();
        if direct && container_ssh_port.is_none() {
            return Err(
                "the job has no SSH server: on the local fleet only jobs with `image:` run in a container \
                 with sshd; add `image:` (with openssh-server) to the configuration"
                    .to_owned(),
            );
        }
        let host_network = jrd.is_none_or(|r| r.network_mode == NetworkMode::Host);
        let runner_port = if host_network { ports.get(&RUNNER_HTTP_PORT).copied() } else { None };
        let container_user = jrd
            .and_then(|r| r.username.clone())
            .or_else(|| job.job_spec.user.as_ref().and_then(|u| u.username.clone()))
            .unwrap_or_else(|| "root".to_owned());
        Ok(Target {
            hostname,
            host_ssh_port: jpd.ssh_port,
            host_user: jpd.username.clone(),
            proxy: jpd.ssh_proxy.as_ref().map(|p| (p.hostname.clone(), p.port, p.username.clone())),
            container_ssh_port: container_ssh_port.unwrap_or(RUNNER_SSH_PORT),
            container_user,
            runner_port: runner_port.unwrap_or(RUNNER_HTTP_PORT),
            dockerized: jpd.dockerized,
        })
    }

    /// The `~/.dstack/ssh/config` entries, in order.
    pub(crate) fn hosts(&self, run: &str, identity: &Path) -> Vec<(String, Vec<(&'static str, String)>)> {
        let id = identity.display().to_string();
        let common = |mut v: Vec<(&'static str, String)>| {
            v.extend([
                ("IdentityFile", id.clone()),
                ("IdentitiesOnly", "yes".to_owned()),
                ("StrictHostKeyChecking", "no".to_owned()),
                ("UserKnownHostsFile", "/dev/null".to_owned()),
            ]);
            v
        };
        let mut hosts = Vec::new();
        match self.host_ssh_port {
            Some(port) if self.dockerized => {
                if let Some((h, p, u)) = &self.proxy {
                    hosts.push((
                        format!("{run}-jump-host"),
                        vec![
                            ("HostName", h.clone()),
                            ("Port", p.to_string()),
                            ("User", u.clone()),
                            ("StrictHostKeyChecking", "no".to_owned()),
                            ("UserKnownHostsFile", "/dev/null".to_owned()),
                        ],
                    ));
                }
                let mut host = common(vec![
                    ("HostName", self.hostname.clone()),
                    ("Port", port.to_string()),
                    ("User", self.host_user.clone()),
                ]);
                if self.proxy.is_some() {
                    host.push(("ProxyJump", format!("{run}-jump-host")));
                }
                hosts.push((format!("{run}-host"), host));
                let mut job = common(vec![
                    ("HostName", "localhost".to_owned()),
                    ("Port", self.container_ssh_port.to_string()),
                    ("User", self.container_user.clone()),
                ]);
                job.push(("ProxyJump", format!("{run}-host")));
                hosts.push((run.to_owned(), job));
            }
            // A container-based backend: the job's sshd is the host's address and port.
            Some(port) => hosts.push((
                run.to_owned(),
                common(vec![
                    ("HostName", self.hostname.clone()),
                    ("Port", port.to_string()),
                    ("User", self.container_user.clone()),
                ]),
            )),
            // The local fleet: straight to the container's sshd.
            None => hosts.push((
                run.to_owned(),
                common(vec![
                    ("HostName", self.hostname.clone()),
                    ("Port", self.container_ssh_port.to_string()),
                    ("User", self.container_user.clone()),
                ]),
            )),
        }
        hosts
    }
}

/// `content` of an ssh config with the `Host <host>` block replaced by `options` (removed
/// when empty), as dstack's `update_ssh_config` does.
pub(crate) fn update_ssh_config(content: &str, host: &str, options: &[(&str, String)]) -> String {
    let mut out = String::new();
    let mut copy = true;
    for line in content.split_inclusive('\n') {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix("Host").filter(|r| r.starts_with(char::is_whitespace)) {
            let name = name.trim();
            if !name.contains(char::is_whitespace) {
                copy = name != host;
            }
        }
        if copy {
            out.push_str(line);
        }
    }
    if !options.is_empty() {
        out.push_str(&format!("Host {host}\n"));
        for (k, v) in options {
            out.push_str(&format!("    {k} {v}\n"));
        }
    }
    out
}

/// `~/.ssh/config` with `Include <path>` on top unless that line is there (dstack's
/// `include_ssh_config`).
pub(crate) fn with_include(content: &str, path: &str) -> Option<String> {
    let include = format!("Include {path}\n");
    (!content.contains(&include)).then(|| format!("{include}{content}"))
}

fn edit_file(path: &Path, edit: impl FnOnce(&str) -> Option<String>) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let content = std::fs::read_to_string(path).unwrap_or_default();
    if let Some(new) = edit(&content) {
        std::fs::write(path, new).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Reserves local ports as dstack's `PortsLock` does; the listeners are dropped right before
/// ssh binds them.
///
/// `same_host`: the job runs on this machine with the host's network (the local fleet), so an
/// app port is taken by the job itself; an identity mapping (`ports: [8080]`) then falls back
/// to the next free port instead of failing as dstack would.
fn reserve_ports(
    job: &Job,
    overrides: &[(u16, u16)],
    same_host: bool,
) -> Result<(BTreeMap<i64, i64>, Vec<TcpListener>), String> {
    let mut wanted: BTreeMap<i64, i64> = BTreeMap::from([(RUNNER_HTTP_PORT, 0)]);
    for app in job.job_spec.app_specs.iter().flatten() {
        wanted.insert(app.port, app.map_to_port.unwrap_or(0));
    }
    for (local, remote) in overrides {
        let remote = i64::from(*remote);
        if !wanted.contains_key(&remote) {
            return Err(format!("Cannot override port {remote} not exposed by the run"));
        }
        wanted.insert(remote, i64::from(*local));
    }
    let listen = |port: i64| u16::try_from(port).ok().and_then(|p| TcpListener::bind(("0.0.0.0", p)).ok());
    if same_host {
        let explicit: Vec<i64> = overrides.iter().map(|(_, r)| i64::from(*r)).collect();
        for (remote, local) in wanted.iter_mut() {
            if *local == *remote && !explicit.contains(remote) && listen(*local).is_none() {
                *local = 0;
            }
        }
    }
    let mut out = BTreeMap::new();
    let mut held = Vec::new();
    for (remote, local) in wanted.iter().filter(|(_, l)| **l != 0) {
        let l = listen(*local).ok_or_else(|| {
            format!(
                "Failed to attach: port {local} is already in use. Use -p in dstack attach to override the \
                 local port mapping, e.g. -p {}:{local}",
                local + 1
            )
        })?;
        held.push(l);
        out.insert(*remote, *local);
    }
    for remote in wanted.iter().filter(|(_, l)| **l == 0).map(|(r, _)| *r) {
        let mut local = remote;
        loop {
            if !out.values().any(|v| *v == local)
                && let Some(l) = listen(local)
            {
                held.push(l);
                break;
            }
            local += 1;
            if local > 65535 {
                return Err(format!("no free local port for {remote}"));
            }
        }
        out.insert(remote, local);
    }
    Ok((out, held))
}

/// The running `ssh -N` with its forwards and the hosts it added.
struct Tunnel {
    child: Child,
    ports: BTreeMap<i64, i64>,
    hosts: Vec<String>,
    config: PathBuf,
    control: PathBuf,
    closed: bool,
}

impl Tunnel {
    fn open(
        paths: &Paths,
        run: &str,
        target: &Target,
        identity: &Path,
        job: &Job,
        options: &Options,
    ) -> Result<Tunnel, String> {
        let same_host = target.host_ssh_port.is_none() && target.runner_port != RUNNER_HTTP_PORT;
        let (ports, held) = reserve_ports(job, &options.overrides, same_host)?;
        let home = dirs::home_dir().unwrap_or_default();
        let include = match paths.config.strip_prefix(&home) {
            Ok(rest) => format!("~/{}", rest.display()),
            Err(_) => paths.config.display().to_string(),
        };
        if let Err(e) = edit_file(&paths.user_config, |c| with_include(c, &include)) {
            eprintln!(
                "warning: couldn't update {e}; `ssh {run}` and the IDE links won't work. Add `Include {include}` \
                 to the top of {} manually",
                paths.user_config.display()
            );
        }
        let hosts = target.hosts(run, identity);
        for (host, options) in &hosts {
            edit_file(&paths.config, |c| Some(update_ssh_config(c, host, options)))?;
        }
        let control = paths.dir.join(format!("{run}.control.sock"));
        let _ = std::fs::remove_file(&control);
        let mut forwards = Vec::new();
        for (remote, local) in &ports {
            let remote = if *remote == RUNNER_HTTP_PORT { target.runner_port } else { *remote };
            forwards.push(format!("{}:{local}:localhost:{remote}", options.bind));
        }
        drop(held);
        let mut tunnel = Tunnel {
            child: spawn_ssh(&paths.config, identity, &control, &forwards, run)?,
            ports,
            hosts: hosts.into_iter().map(|(h, _)| h).collect(),
            config: paths.config.clone(),
            control,
            closed: false,
        };
        for attempt in 0..10 {
            if tunnel.wait_ready(Duration::from_secs(15)) {
                return Ok(tunnel);
            }
            if attempt < 9 {
                std::thread::sleep(Duration::from_secs(1));
                tunnel.child = spawn_ssh(&tunnel.config, identity, &tunnel.control, &forwards, run)?;
            }
        }
        tunnel.close();
        Err("Can't connect to the remote host".to_owned())
    }

    /// Whether the master connection is up before `limit` (false if ssh exited).
    fn wait_ready(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let ok = Command::new("ssh")
                .arg("-S")
                .arg(&self.control)
                .args(["-O", "check", "dstack-attach"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }

    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let _ = Command::new("ssh")
            .arg("-S")
            .arg(&self.control)
            .args(["-O", "exit", "dstack-attach"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.control);
        for host in &self.hosts {
            let _ = edit_file(&self.config, |c| Some(update_ssh_config(c, host, &[])));
        }
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.close();
    }
}

fn spawn_ssh(
    config: &Path,
    identity: &Path,
    control: &Path,
    forwards: &[String],
    run: &str,
) -> Result<Child, String> {
    let mut cmd = Command::new("ssh");
    cmd.arg("-F").arg(config).arg("-i").arg(identity);
    cmd.args(["-N", "-M", "-S"]).arg(control);
    cmd.args(["-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=30", "-o", "BatchMode=yes"]);
    cmd.args(["-o", "LogLevel=ERROR"]);
    for f in forwards {
        cmd.args(["-L", f]);
    }
    cmd.arg(format!("root@{run}"));
    // Its own process group: Ctrl-C reaches us, and we close the tunnel in order.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    cmd.spawn().map_err(|e| format!("cannot run ssh ({e}); install the OpenSSH client"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_blocks_are_replaced_and_removed_as_dstack_does() {
        let content = "Host other\n    Port 1\nHost run\n    Port 2\n    User x\nHost last\n    Port 3\n";
        let updated = update_ssh_config(content, "run", &[("Port", "5".into())]);
        assert_eq!(updated, "Host other\n    Port 1\nHost last\n    Port 3\nHost run\n    Port 5\n");
        assert_eq!(
            update_ssh_config(&updated, "run", &[]),
            "Host other\n    Port 1\nHost last\n    Port 3\n"
        );
        assert_eq!(
            with_include("Host a\n", "~/.dstack/ssh/config").as_deref(),
            Some("Include ~/.dstack/ssh/config\nHost a\n")
        );
        assert_eq!(with_include("Include ~/.dstack/ssh/config\nHost a\n", "~/.dstack/ssh/config"), None);
    }

    fn target(host_ssh_port: Option<i64>, proxy: bool) -> Target {
        Target {
            hostname: "10.0.0.5".into(),
            host_ssh_port,
            host_user: "ubuntu".into(),
            proxy: proxy.then(|| ("bastion".into(), 2222, "jump".into())),
            container_ssh_port: 32768,
            container_user: "root".into(),
            runner_port: 10999,
            dockerized: true,
        }
    }

    fn render(t: &Target) -> String {
        let mut text = String::new();
        for (host, options) in t.hosts("my-run", Path::new("/k")) {
            text = update_ssh_config(&text, &host, &options);
        }
        text
    }

    #[test]
    fn ssh_hosts_go_through_the_host_or_straight_to_the_local_container() {
        let common = "    IdentityFile /k\n    IdentitiesOnly yes\n    StrictHostKeyChecking no\n    UserKnownHostsFile /dev/null\n";
        assert_eq!(
            render(&target(Some(22), false)),
            format!(
                "Host my-run-host\n    HostName 10.0.0.5\n    Port 22\n    User ubuntu\n{common}\
                 Host my-run\n    HostName localhost\n    Port 32768\n    User root\n{common}    ProxyJump my-run-host\n"
            )
        );
        assert!(render(&target(Some(22), true)).starts_with(
            "Host my-run-jump-host\n    HostName bastion\n    Port 2222\n    User jump\n    StrictHostKeyChecking no\n"
        ));
        assert_eq!(
            render(&target(None, false)),
            format!("Host my-run\n    HostName 10.0.0.5\n    Port 32768\n    User root\n{common}")
        );
    }

    #[test]
    fn port_mappings_parse() {
        assert_eq!(parse_mapping("8080"), Ok((0, 8080)));
        assert_eq!(parse_mapping("8081:8080"), Ok((8081, 8080)));
        assert!(parse_mapping("x:1").is_err());
    }
}
