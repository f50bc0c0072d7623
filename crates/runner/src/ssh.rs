//! The job's SSH server and the connection tracker (spec agents.md §2.7).
//!
//! [`start`] runs OpenSSH's `sshd -D -f <conf>` with fresh host keys (`ssh-keygen`, ECDSA and
//! Ed25519) and dstack's `sshd_config`. Where its files live:
//!
//! - **root in a container** (`/.dockerenv` or `/run/.containerenv` exists): dstack's paths,
//!   `/dstack/ssh/conf` and `/dstack/ssh/log`, with `/dstack` owned by root and 0755, and the
//!   privilege-separation dirs `/var/empty` and `/run/sshd` recreated;
//! - **otherwise** (a runner on a host, or not root): `<temp>/ssh/{conf,log}`, and the config
//!   adds `StrictModes no` (a temp dir under the world-writable `/tmp` would fail sshd's path
//!   checks) and, when not root, `UsePAM no`.
//!
//! The tracker reads `/proc/net/tcp{,6}` every [`TrackerConfig::interval`] for ESTABLISHED
//! sockets whose local port is the SSH port; one alive for longer than
//! [`TrackerConfig::min_age`] counts as a user (shorter ones are taken for the server's
//! probes), and [`Tracker::no_connections_secs`] is the time since a user was last seen.

use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How the SSH server is started.
#[derive(Debug, Clone)]
pub struct SshConfig {
    /// 0: no SSH server (the shim's process mode).
    pub port: u16,
    /// A `ListenAddress` (ours; dstack listens on all interfaces).
    pub address: Option<String>,
    /// Public keys allowed to log in (`--ssh-authorized-key`).
    pub authorized_keys: Vec<String>,
    /// sshd's `LogLevel`.
    pub log_level: String,
    pub tracker: TrackerConfig,
}

impl Default for SshConfig {
    fn default() -> SshConfig {
        SshConfig {
            port: 0,
            address: None,
            authorized_keys: Vec::new(),
            log_level: "INFO".to_owned(),
            tracker: TrackerConfig::default(),
        }
    }
}

/// The connection tracker's thresholds; dstack's by default.
#[derive(Debug, Clone, Copy)]
pub struct TrackerConfig {
    /// Between two reads of `/proc/net/tcp{,6}` (2.5 s).
    pub interval: Duration,
    /// A connection counts as a user once it has been seen for this long (10 s).
    pub min_age: Duration,
}

impl Default for TrackerConfig {
    fn default() -> TrackerConfig {
        TrackerConfig { interval: Duration::from_millis(2500), min_age: Duration::from_secs(10) }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SshError {
    #[error(
        "the image has no OpenSSH server (`sshd` is neither in /usr/sbin nor on PATH); install \
         openssh-server in the image to connect to the job over SSH"
    )]
    NoSshd,
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ssh-keygen failed ({0}); install openssh-client (ssh-keygen) in the image")]
    Keygen(String),
    #[error("sshd exited at once ({status}): {log}")]
    Exited { status: String, log: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SshError + '_ {
    move |source| SshError::Io { path: path.to_owned(), source }
}

/// A running sshd; stopped by [`Sshd::stop`].
pub(crate) struct Sshd {
    child: tokio::process::Child,
    /// The `authorized_keys` file sshd reads, for keys added later (the job's cluster key).
    pub(crate) authorized_keys: PathBuf,
}

fn find_sshd() -> Option<PathBuf> {
    let fixed = PathBuf::from("/usr/sbin/sshd");
    if fixed.is_file() {
        return Some(fixed);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("sshd")).find(|p| p.is_file())
}

pub(crate) fn in_container() -> bool {
    Path::new("/.dockerenv").exists() || Path::new("/run/.containerenv").exists()
}

/// The `sshd_config` text: dstack's lines in dstack's order, then ours.
pub(crate) fn sshd_config(config: &SshConfig, conf_dir: &Path, dstack_layout: bool, root: bool) -> String {
    let conf = conf_dir.display();
    let mut lines = vec![
        format!("LogLevel {}", config.log_level),
        format!("Port {}", config.port),
        "PidFile none".to_owned(),
        "Subsystem sftp internal-sftp".to_owned(),
        "PasswordAuthentication no".to_owned(),
        "KbdInteractiveAuthentication no".to_owned(),
        format!("UsePAM {}", if root { "yes" } else { "no" }),
        format!("AuthorizedKeysFile {conf}/authorized_keys .ssh/authorized_keys"),
        "AcceptEnv LANG LC_* COLORTERM NO_COLOR".to_owned(),
        "ClientAliveInterval 30".to_owned(),
        "ClientAliveCountMax 4".to_owned(),
        format!("HostKey {conf}/ssh_host_ecdsa_key"),
        format!("HostKey {conf}/ssh_host_ed25519_key"),
    ];
    if let Some(address) = &config.address {
        lines.push(format!("ListenAddress {address}"));
    }
    if !dstack_layout {
        lines.push("StrictModes no".to_owned());
    }
    lines.join("\n") + "\n"
}

/// Starts sshd, or says why it cannot run.
pub(crate) async fn start(config: &SshConfig, temp_dir: &Path) -> Result<Sshd, SshError> {
    let sshd = find_sshd().ok_or(SshError::NoSshd)?;
    let root = nix::unistd::geteuid().is_root();
    let dstack_layout = root && in_container();
    let base = if dstack_layout {
        let dstack = Path::new("/dstack");
        std::fs::create_dir_all(dstack).map_err(io_err(dstack))?;
        let _ = std::os::unix::fs::chown(dstack, Some(0), Some(0));
        std::fs::set_permissions(dstack, std::fs::Permissions::from_mode(0o755)).map_err(io_err(dstack))?;
        for dir in ["/var/empty", "/run/sshd"] {
            let dir = Path::new(dir);
            let _ = std::fs::remove_dir_all(dir);
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io_err(dir))?;
        }
        dstack.join("ssh")
    } else {
        temp_dir.join("ssh")
    };
    let _ = std::fs::remove_dir_all(&base);
    let conf_dir = base.join("conf");
    let log_dir = base.join("log");
    for dir in [&base, &conf_dir, &log_dir] {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io_err(dir))?;
    }
    for kind in ["ecdsa", "ed25519"] {
        let key = conf_dir.join(format!("ssh_host_{kind}_key"));
        let out = tokio::process::Command::new("ssh-keygen")
            .args(["-q", "-N", "", "-t", kind, "-f"])
            .arg(&key)
            .output()
            .await
            .map_err(|e| SshError::Keygen(e.to_string()))?;
        if !out.status.success() {
            return Err(SshError::Keygen(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
        }
    }
    let authorized_keys = conf_dir.join("authorized_keys");
    let keys: String = config.authorized_keys.iter().map(|k| format!("{}\n", k.trim())).collect();
    std::fs::write(&authorized_keys, keys).map_err(io_err(&authorized_keys))?;
    std::fs::set_permissions(&authorized_keys, std::fs::Permissions::from_mode(0o644))
        .map_err(io_err(&authorized_keys))?;
    let conf_file = conf_dir.join("sshd_config");
    std::fs::write(&conf_file, sshd_config(config, &conf_dir, dstack_layout, root))
        .map_err(io_err(&conf_file))?;
    let log = log_dir.join("sshd.log");
    let mut child = tokio::process::Command::new(&sshd)
        .arg("-D")
        .arg("-f")
        .arg(&conf_file)
        .arg("-E")
        .arg(&log)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(io_err(&sshd))?;
    // A bad config or a taken port makes sshd exit at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Ok(Some(status)) = child.try_wait() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        let log = tail.into_iter().rev().collect::<Vec<_>>().join("; ");
        return Err(SshError::Exited { status: status.to_string(), log });
    }
    Ok(Sshd { child, authorized_keys })
}

impl Sshd {
    /// SIGTERM, then SIGKILL after 10 s.
    pub(crate) async fn stop(mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

/// Appends a public key to an `authorized_keys` file.
pub(crate) fn add_authorized_key(file: &Path, key: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().append(true).open(file)?;
    writeln!(f, "{}", key.trim())
}

/// The ESTABLISHED connections with local port `port` in a `/proc/net/tcp{,6}` text, each as
/// `"<local> <remote>"`.
pub(crate) fn established_on(text: &str, port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, local, remote, state, ..] = fields.as_slice() else { continue };
        if *state != "01" {
            continue;
        }
        let local_port = local.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        if local_port == Some(port) {
            out.push(format!("{local} {remote}"));
        }
    }
    out
}

/// Counts the time nobody has been connected over SSH.
pub(crate) struct Tracker {
    port: u16,
    config: TrackerConfig,
    state: Mutex<TrackerState>,
}

#[derive(Default)]
struct TrackerState {
    /// Set by the first check.
    last_check: Option<Instant>,
    last_active: Option<Instant>,
    first_seen: HashMap<String, Instant>,
}

impl Tracker {
    pub(crate) fn new(port: u16, config: TrackerConfig) -> Tracker {
        Tracker { port, config, state: Mutex::new(TrackerState::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TrackerState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One check with the sockets seen now.
    pub(crate) fn observe(&self, connections: Vec<String>, now: Instant) {
        let mut state = self.lock();
        let mut first_seen = HashMap::with_capacity(connections.len());
        for c in connections {
            let since = state.first_seen.get(&c).copied().unwrap_or(now);
            first_seen.insert(c, since);
        }
        let user = first_seen.values().any(|since| now.duration_since(*since) >= self.config.min_age);
        state.first_seen = first_seen;
        if user || state.last_active.is_none() {
            state.last_active = Some(now);
        }
        state.last_check = Some(now);
    }

    /// Whole seconds from the last time a user was connected to the last check; 0 before the
    /// first check.
    pub(crate) fn no_connections_secs(&self) -> i64 {
        let state = self.lock();
        match (state.last_check, state.last_active) {
            (Some(check), Some(active)) => {
                i64::try_from(check.saturating_duration_since(active).as_secs()).unwrap_or(i64::MAX)
            }
            _ => 0,
        }
    }

    /// Checks every interval, forever (the task is dropped with the runtime).
    pub(crate) async fn run(&self) {
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let mut connections = Vec::new();
            for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
                if let Ok(text) = tokio::fs::read_to_string(file).await {
                    connections.extend(established_on(&text, self.port));
                }
            }
            self.observe(connections, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str =
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:2726 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:2726 0100007F:D2F0 01 00000000:00000000 02:0009A4B2 00000000     0        0 2 4 0 20 4 30 10 -1
   2: 0100007F:D2F0 0100007F:2726 01 00000000:00000000 02:0009A4B2 00000000     0        0 3 4 0 20 4 30 10 -1
   3: 0100007F:2726 0100007F:D2F2 06 00000000:00000000 02:0009A4B2 00000000     0        0 4 4 0 20 4 30 10 -1
";

    #[test]
    fn only_established_sockets_on_the_local_port() {
        assert_eq!(established_on(TCP, 10022), vec!["0100007F:2726 0100007F:D2F0".to_owned()]);
        assert!(established_on(TCP, 22).is_empty());
        assert!(established_on("garbage\nmore garbage", 10022).is_empty());
    }

    #[test]
    fn a_connection_counts_once_it_is_old_enough() {
        let config = TrackerConfig { interval: Duration::from_secs(1), min_age: Duration::from_secs(10) };
        let t = Tracker::new(10022, config);
        assert_eq!(t.no_connections_secs(), 0);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        t.observe(Vec::new(), at(0));
        t.observe(Vec::new(), at(5));
        assert_eq!(t.no_connections_secs(), 5);
        // A short connection (the server's probe) is not a user.
        t.observe(vec!["a b".into()], at(6));
        t.observe(Vec::new(), at(8));
        assert_eq!(t.no_connections_secs(), 8);
        t.observe(vec!["c d".into()], at(9));
        t.observe(vec!["c d".into()], at(19));
        assert_eq!(t.no_connections_secs(), 0);
        t.observe(Vec::new(), at(25));
        assert_eq!(t.no_connections_secs(), 6);
    }
}
