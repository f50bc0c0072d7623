//! Installing `dstack-shim` on an SSH-fleet host and removing it again (spec agents.md §1.15,
//! our way: the server uploads its own shim and runner instead of the host downloading them,
//! and a host without systemd gets a supervisor loop).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dstack_agent_proto::shim::HostInfo;
use dstack_agent_proto::{SHIM_HTTP_PORT, ShimClient};

use crate::connection::{ExecOutput, WriteAs, nonempty, shell_quote};
use crate::{Connection, SshError};

/// Where the shim lives on the host (dstack's paths).
pub const SHIM_PATH: &str = "/usr/local/bin/dstack-shim";
pub const RUNNER_PATH: &str = "/usr/local/bin/dstack-runner";
pub const SHIM_HOME: &str = "/root/.dstack";
pub const UNIT_PATH: &str = "/etc/systemd/system/dstack-shim.service";
/// The comment that marks the `authorized_keys` lines we added (dstack's).
pub const KEY_MARKER: &str = "# added by dstack";

/// What the shim writes in its home, and the files of the deploy itself; [`uninstall`] removes
/// these and then the home if it is empty (anything else in `/root/.dstack` is left alone).
const HOME_ENTRIES: [&str; 9] = [
    "shim.env",
    "shim.pid",
    "shim.log",
    "shim-supervisor.sh",
    "host_info.json",
    "host_info.json.tmp",
    "tasks.json",
    "tasks.json.tmp",
    "runners",
];

/// A CPU architecture, in dstack's (Go's) names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// `uname -m` → arch: `x86_64`/`amd64` and `aarch64`/`arm64`; nothing else is supported.
    pub fn from_uname(machine: &str) -> Option<Arch> {
        match machine.trim() {
            "x86_64" | "amd64" => Some(Arch::Amd64),
            "aarch64" | "arm64" => Some(Arch::Arm64),
            _ => None,
        }
    }

    /// The arch this library was built for, which is the server's (and its sibling shim's).
    pub fn current() -> Option<Arch> {
        Arch::from_uname(std::env::consts::ARCH)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

/// How the shim is kept running on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Supervisor {
    /// `dstack-shim.service` (systemd is PID 1).
    Systemd,
    /// A `setsid` shell loop restarting the shim, its process group in `shim.pid`.
    Detached,
}

/// What to install.
#[derive(Debug, Clone)]
pub struct DeployParams<'a> {
    /// The `dstack-shim` binary (the server's sibling, the same version) and its arch.
    pub shim: &'a [u8],
    pub shim_arch: Arch,
    /// The `dstack-runner` binary (same arch), which our shim does not download.
    pub runner: Option<&'a [u8]>,
    /// Public key lines to add to the SSH user's `authorized_keys` (the project key; the fleet
    /// keys), each marked with [`KEY_MARKER`]; a key whose blob is already there is skipped.
    pub authorized_keys: Vec<String>,
    /// The fleet's `env:`, written to `shim.env` after the shim's own variables.
    pub env: Vec<(String, String)>,
    /// How long to wait for the shim to answer through the tunnel.
    pub start_timeout: Duration,
}

/// A deployed host.
#[derive(Debug, Clone)]
pub struct Deployed {
    pub arch: Arch,
    pub supervisor: Supervisor,
    /// `host_info.json` as the shim wrote it.
    pub host_info: HostInfo,
    /// The local end of the connection's tunnel to the shim.
    pub shim_addr: SocketAddr,
}

/// Why a deploy failed; every message names the host.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error("{host}: architecture `{machine}` is not supported; dstack runs on x86_64 and aarch64 hosts")]
    UnsupportedArch { host: String, machine: String },
    #[error(
        "{host}: no dstack binaries built for {arch} (the server has them for {have}); run the server on an {arch} machine or use {have} hosts"
    )]
    NoShimForArch { host: String, arch: &'static str, have: &'static str },
    #[error(
        "{host}: Docker is not installed; install Docker Engine on the host (dstack runs jobs in containers)"
    )]
    DockerMissing { host: String },
    #[error(
        "{host}: Docker is installed but not usable ({detail}); start it (`systemctl start docker`) and let `{user}` use it"
    )]
    DockerNotRunning { host: String, user: String, detail: String },
    #[error(
        "{host}: `{user}` cannot run commands as root ({detail}); allow passwordless sudo for `{user}` or connect as root"
    )]
    NoSudo { host: String, user: String, detail: String },
    #[error("{host}: {step} failed: {detail}")]
    Step { host: String, step: &'static str, detail: String },
    #[error("{host}: starting {name} failed: {detail}")]
    Start { host: String, name: &'static str, detail: String },
    #[error("{host}: the gateway did not answer within {after:?}; its last log lines: {log}")]
    GatewayUnhealthy { host: String, after: Duration, log: String },
    #[error("{host}: dstack-shim did not become healthy within {after:?}; its last log lines: {log}")]
    ShimUnhealthy { host: String, after: Duration, log: String },
    #[error("{host}: cannot read {SHIM_HOME}/host_info.json: {detail}")]
    HostInfo { host: String, detail: String },
}

const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// The first checks of every deploy: the host's architecture is `have` (the binaries the
/// server uploads), and the SSH user is root or may `sudo -n`.
pub async fn check_host(conn: &Connection, have: Arch) -> Result<Arch, DeployError> {
    let host = conn.target().host.clone();
    let user = conn.target().user.clone();
    let out = conn.exec("uname -m", STEP_TIMEOUT).await?;
    if !out.success() {
        return Err(DeployError::Step {
            host,
            step: "`uname -m`",
            detail: nonempty(out.stderr_text(), out.status),
        });
    }
    let machine = out.stdout_text();
    let arch = Arch::from_uname(&machine)
        .ok_or_else(|| DeployError::UnsupportedArch { host: host.clone(), machine: machine.clone() })?;
    if arch != have {
        return Err(DeployError::NoShimForArch { host, arch: arch.as_str(), have: have.as_str() });
    }
    if user != "root" {
        let out = conn.exec("sudo -n true", STEP_TIMEOUT).await?;
        if !out.success() {
            return Err(DeployError::NoSudo { host, user, detail: nonempty(out.stderr_text(), out.status) });
        }
    }
    Ok(arch)
}

/// A program a host keeps running: a systemd unit when systemd is PID 1, else a `setsid`
/// supervisor loop that restarts it 3 s after it exits. Its files are in `home`:
/// `<stem>.env` (the environment), `<stem>.pid` (the loop's process group), `<stem>.log` and
/// `<stem>-supervisor.sh`. The shim is one ([`Daemon::shim`]), a gateway another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    /// The unit is `<name>.service`.
    pub name: &'static str,
    pub home: &'static str,
    pub stem: &'static str,
    /// The command line (`ExecStart`; run by `sh` in the loop).
    pub exec: String,
}

impl Daemon {
    /// `dstack-shim` in [`SHIM_HOME`].
    pub fn shim() -> Daemon {
        Daemon { name: "dstack-shim", home: SHIM_HOME, stem: "shim", exec: SHIM_PATH.to_owned() }
    }

    pub fn unit_path(&self) -> String {
        format!("/etc/systemd/system/{}.service", self.name)
    }

    /// `<home>/<stem><suffix>`.
    pub fn file(&self, suffix: &str) -> String {
        format!("{}/{}{suffix}", self.home, self.stem)
    }

    /// The systemd unit (spec §1.15 step 6): restart 3 s after any exit, give up after about
    /// an hour of crash-looping.
    pub fn unit_file(&self) -> String {
        format!(
            "[Unit]\nDescription={}\nAfter=network-online.target\nStartLimitIntervalSec=3600\n\
             StartLimitBurst=1080\n\n[Service]\nType=simple\nUser=root\nRestart=always\nRestartSec=3\n\
             WorkingDirectory={}\nEnvironmentFile={}\nExecStart={}\n\n\
             [Install]\nWantedBy=multi-user.target\n",
            self.name,
            self.home,
            self.file(".env"),
            self.exec
        )
    }

    /// The loop that stands in for systemd: the environment from the env file, restart after
    /// 3 s.
    pub fn supervisor_script(&self) -> String {
        format!(
            "#!/bin/sh\n# {name} supervisor for hosts without systemd: restarts it 3 s after it exits.\n\
             echo $$ > {pid}\nset -a\n. {env}\nset +a\ncd {home}\nwhile true; do\n  {exec}\n  sleep 3\ndone\n",
            name = self.name,
            pid = self.file(".pid"),
            env = self.file(".env"),
            home = self.home,
            exec = self.exec,
        )
    }

    /// Disables and removes the unit, if there is one.
    fn stop_systemd(&self) -> String {
        let (unit, name) = (self.unit_path(), self.name);
        format!(
            "if [ -f {unit} ] && command -v systemctl >/dev/null 2>&1; then \
             systemctl disable --now {name} >/dev/null 2>&1 || true; rm -f {unit}; \
             systemctl daemon-reload >/dev/null 2>&1 || true; fi"
        )
    }

    /// Kills the supervisor's process group (the loop and the program; the shim's runners
    /// have their own groups) and waits up to 10 s for it to go. `kill -SIG -PGID`: dash's
    /// `kill` takes no `--`.
    fn stop_detached(&self) -> String {
        let pid = self.file(".pid");
        format!(
            "if [ -f {pid} ]; then \
             pg=$(cat {pid}); rm -f {pid}; \
             if [ -n \"$pg\" ] && kill -TERM -\"$pg\" 2>/dev/null; then \
               i=0; while kill -0 -\"$pg\" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; \
               kill -KILL -\"$pg\" 2>/dev/null || true; fi; fi"
        )
    }

    /// `setsid -f` starts the loop as the leader of a new session and process group; the loop
    /// writes its pid (= the group id) itself, and this waits up to 5 s for it.
    fn start_detached(&self) -> String {
        let (pid, log, script) = (self.file(".pid"), self.file(".log"), self.file("-supervisor.sh"));
        format!(
            "cd / && setsid -f sh {script} >> {log} 2>&1 < /dev/null; \
             i=0; while [ ! -s {pid} ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; \
             [ -s {pid} ] || {{ echo 'the supervisor did not start' >&2; exit 1; }}"
        )
    }

    /// Stops it, however it runs; safe when it does not run.
    pub fn stop_script(&self) -> String {
        format!("{}\n{}", self.stop_systemd(), self.stop_detached())
    }

    /// The last lines of its log, for an error message.
    pub async fn log_tail(&self, conn: &Connection, supervisor: Supervisor) -> String {
        let cmd = match supervisor {
            Supervisor::Systemd => format!("journalctl -u {} -n 10 --no-pager 2>&1", self.name),
            Supervisor::Detached => format!("tail -n 10 {} 2>&1", self.file(".log")),
        };
        match conn.exec(&conn.as_root_if(WriteAs::Root, &cmd), Duration::from_secs(10)).await {
            Ok(out) => out.stdout_text(),
            Err(e) => format!("(cannot read it: {e})"),
        }
    }
}

/// Starts (or restarts) `daemon`, whose binary and env file are in place: under systemd when
/// it is PID 1, else detached.
pub async fn start_daemon(conn: &Connection, daemon: &Daemon) -> Result<Supervisor, DeployError> {
    let host = conn.target().host.clone();
    let out = conn.exec(&conn.as_root_if(WriteAs::Root, HAS_SYSTEMD), STEP_TIMEOUT).await?;
    let supervisor = if out.stdout_text() == "systemd" { Supervisor::Systemd } else { Supervisor::Detached };
    let start = match supervisor {
        Supervisor::Systemd => {
            let unit = daemon.unit_path();
            conn.upload(daemon.unit_file().as_bytes(), &unit, 0o644, WriteAs::Root, STEP_TIMEOUT).await?;
            format!(
                "{}\nsystemctl daemon-reload && systemctl enable {name} && systemctl restart {name}",
                daemon.stop_detached(),
                name = daemon.name
            )
        }
        Supervisor::Detached => {
            let script = daemon.supervisor_script();
            let path = daemon.file("-supervisor.sh");
            conn.upload(script.as_bytes(), &path, 0o700, WriteAs::Root, STEP_TIMEOUT).await?;
            format!("{}\n{}", daemon.stop_detached(), daemon.start_detached())
        }
    };
    let out = conn.exec(&conn.as_root_if(WriteAs::Root, &start), STEP_TIMEOUT).await?;
    if !out.success() {
        return Err(DeployError::Start {
            host,
            name: daemon.name,
            detail: nonempty(out.stderr_text(), out.status),
        });
    }
    Ok(supervisor)
}

/// Installs and starts the shim on `conn`'s host and returns what the shim found there.
/// Idempotent: a second deploy replaces the binaries and restarts the shim (tasks survive).
pub async fn deploy(conn: &Connection, params: &DeployParams<'_>) -> Result<Deployed, DeployError> {
    let host = conn.target().host.clone();
    let user = conn.target().user.clone();
    let step = |step: &'static str| {
        let host = host.clone();
        move |out: ExecOutput| DeployError::Step {
            host,
            step,
            detail: nonempty(out.stderr_text(), out.status),
        }
    };

    // 1-2. The architecture, root (sudo), then Docker.
    let arch = check_host(conn, params.shim_arch).await?;
    let out = conn.exec(&conn.as_root_if(WriteAs::Root, DOCKER_CHECK), STEP_TIMEOUT).await?;
    match out.status {
        Some(0) => {}
        Some(DOCKER_MISSING) => return Err(DeployError::DockerMissing { host }),
        _ => {
            let detail = nonempty(out.stderr_text(), out.status);
            let detail = detail.lines().next().unwrap_or_default().to_owned();
            return Err(DeployError::DockerNotRunning { host, user, detail });
        }
    }

    // 3. The project key.
    if !params.authorized_keys.is_empty() {
        let keys = params.authorized_keys.join("\n") + "\n";
        let out = conn
            .exec_with_input(&format!("sh -c {}", shell_quote(ADD_KEYS)), keys.as_bytes(), STEP_TIMEOUT)
            .await?;
        if !out.success() {
            return Err(step("adding the project key to ~/.ssh/authorized_keys")(out));
        }
    }

    // 4. Binaries, home, env.
    let prepare = format!("mkdir -p {SHIM_HOME} /usr/local/bin && rm -f {SHIM_HOME}/host_info.json");
    let out = conn.exec(&conn.as_root_if(WriteAs::Root, &prepare), STEP_TIMEOUT).await?;
    if !out.success() {
        return Err(step("creating the shim home")(out));
    }
    let upload_timeout = Duration::from_secs(600);
    conn.upload(params.shim, SHIM_PATH, 0o755, WriteAs::Root, upload_timeout).await?;
    if let Some(runner) = params.runner {
        conn.upload(runner, RUNNER_PATH, 0o755, WriteAs::Root, upload_timeout).await?;
    }
    let env = shim_env(&params.env);
    conn.upload(env.as_bytes(), &format!("{SHIM_HOME}/shim.env"), 0o600, WriteAs::Root, STEP_TIMEOUT).await?;

    // 5. Start (or restart) under systemd, or detached.
    let daemon = Daemon::shim();
    let supervisor = start_daemon(conn, &daemon).await?;

    // 6. Healthy through the tunnel, then host_info.json.
    let shim_addr = conn.forward(SHIM_HTTP_PORT).await?;
    let client = ShimClient::new(&format!("http://{shim_addr}"));
    let started = Instant::now();
    loop {
        match client.healthcheck().await {
            Ok(h) if h.service == "dstack-shim" => break,
            _ if started.elapsed() < params.start_timeout => {
                tokio::time::sleep(Duration::from_millis(500)).await
            }
            _ => {
                let log = daemon.log_tail(conn, supervisor).await;
                return Err(DeployError::ShimUnhealthy { host, after: params.start_timeout, log });
            }
        }
    }
    let read = conn.as_root_if(WriteAs::Root, &format!("cat {SHIM_HOME}/host_info.json"));
    let out = conn.exec(&read, STEP_TIMEOUT).await?;
    if !out.success() {
        return Err(DeployError::HostInfo { host, detail: nonempty(out.stderr_text(), out.status) });
    }
    let host_info: HostInfo = serde_json::from_slice(&out.stdout)
        .map_err(|e| DeployError::HostInfo { host: host.clone(), detail: e.to_string() })?;
    Ok(Deployed { arch, supervisor, host_info, shim_addr })
}

/// Stops the shim (systemd unit or detached loop) and removes the binaries, the unit, the
/// shim's files in its home (the home too when nothing else is left in it) and the
/// `authorized_keys` lines marked [`KEY_MARKER`]. Safe to run on a host without a shim.
/// Jobs still running (runner processes, containers) are not touched.
pub async fn uninstall(conn: &Connection) -> Result<(), DeployError> {
    let host = conn.target().host.clone();
    let entries: Vec<String> = HOME_ENTRIES.iter().map(|e| format!("{SHIM_HOME}/{e}")).collect();
    let script = format!(
        "{}\nrm -rf {SHIM_PATH} {RUNNER_PATH} {UNIT_PATH} {}\n\
         rmdir {SHIM_HOME} 2>/dev/null || true",
        Daemon::shim().stop_script(),
        entries.join(" ")
    );
    let out = conn.exec(&conn.as_root_if(WriteAs::Root, &script), STEP_TIMEOUT).await?;
    if !out.success() {
        return Err(DeployError::Step {
            host,
            step: "removing dstack-shim",
            detail: nonempty(out.stderr_text(), out.status),
        });
    }
    let out = conn.exec(&format!("sh -c {}", shell_quote(REMOVE_KEYS)), STEP_TIMEOUT).await?;
    if !out.success() {
        return Err(DeployError::Step {
            host,
            step: "removing our keys from ~/.ssh/authorized_keys",
            detail: nonempty(out.stderr_text(), out.status),
        });
    }
    Ok(())
}

const DOCKER_MISSING: u32 = 3;

/// Exit 3 without a docker CLI; else `docker info`'s status.
const DOCKER_CHECK: &str =
    "command -v docker >/dev/null 2>&1 || exit 3; docker info --format '{{.ServerVersion}}' >/dev/null";

/// Prints `systemd` when systemd is PID 1 and `systemctl` is there.
const HAS_SYSTEMD: &str = "if [ \"$(cat /proc/1/comm 2>/dev/null)\" = systemd ] && command -v systemctl >/dev/null 2>&1; \
     then echo systemd; else echo detached; fi";

/// Appends each stdin line's key unless its blob is already authorized.
const ADD_KEYS: &str = r##"set -e
umask 077
mkdir -p "$HOME/.ssh"
f="$HOME/.ssh/authorized_keys"
touch "$f"
if [ -s "$f" ] && [ -n "$(tail -c 1 "$f")" ]; then echo >> "$f"; fi
while IFS= read -r key; do
  [ -n "$key" ] || continue
  set -- $key
  [ -n "$2" ] || continue
  grep -qF -- "$2" "$f" || printf '%s %s\n' "$key" "# added by dstack" >> "$f"
done"##;

/// Drops the lines that end with the marker, keeping the file (and its mode and owner).
const REMOVE_KEYS: &str = r##"set -e
f="$HOME/.ssh/authorized_keys"
[ -f "$f" ] || exit 0
t=$(mktemp)
grep -v -- ' # added by dstack$' "$f" > "$t" || true
cat "$t" > "$f"
rm -f "$t""##;

/// `KEY="value"` lines (spec §1.15 step 4), readable by systemd's `EnvironmentFile` and by
/// `sh` (`"`, `\`, `$` and `` ` `` escaped; both read these escapes the same way).
pub fn shim_env(fleet_env: &[(String, String)]) -> String {
    let mut vars: Vec<(&str, &str)> = vec![
        ("DSTACK_SHIM_HOME", SHIM_HOME),
        ("DSTACK_SHIM_HTTP_PORT", "10998"),
        ("DSTACK_SHIM_LOG_LEVEL", "5"),
        ("DSTACK_RUNNER_BINARY_PATH", RUNNER_PATH),
        ("DSTACK_RUNNER_HTTP_PORT", "10999"),
        ("DSTACK_RUNNER_SSH_PORT", "10022"),
        ("DSTACK_RUNNER_LOG_LEVEL", "5"),
    ];
    vars.extend(fleet_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    vars.push(("DSTACK_SERVICE_MODE", "1"));
    env_file(&vars)
}

/// `KEY="value"` lines, readable by systemd's `EnvironmentFile` and by `sh` (`"`, `\`, `$`
/// and `` ` `` escaped; both read these escapes the same way).
pub fn env_file(vars: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (key, value) in vars {
        let mut escaped = String::with_capacity(value.len());
        for c in value.chars() {
            if matches!(c, '"' | '\\' | '$' | '`') {
                escaped.push('\\');
            }
            escaped.push(c);
        }
        out.push_str(&format!("{key}=\"{escaped}\"\n"));
    }
    out
}

/// The shim's systemd unit ([`Daemon::unit_file`]).
pub fn unit_file() -> String {
    Daemon::shim().unit_file()
}

/// The shim's supervisor loop ([`Daemon::supervisor_script`]).
pub fn supervisor_script() -> String {
    Daemon::shim().supervisor_script()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uname_machines() {
        assert_eq!(Arch::from_uname("x86_64\n"), Some(Arch::Amd64));
        assert_eq!(Arch::from_uname("aarch64"), Some(Arch::Arm64));
        assert_eq!(Arch::from_uname("arm64"), Some(Arch::Arm64));
        for other in ["i686", "armv7l", "riscv64", "ppc64le", "s390x", ""] {
            assert_eq!(Arch::from_uname(other), None, "{other}");
        }
    }

    #[test]
    fn env_file_has_dstacks_names_then_the_fleet_env_then_service_mode() {
        let env = shim_env(&[("HF_TOKEN".to_owned(), r#"a"b$c`d\e"#.to_owned())]);
        let lines: Vec<&str> = env.lines().collect();
        assert_eq!(lines[0], r#"DSTACK_SHIM_HOME="/root/.dstack""#);
        assert_eq!(lines[1], r#"DSTACK_SHIM_HTTP_PORT="10998""#);
        assert_eq!(lines[7], r#"HF_TOKEN="a\"b\$c\`d\\e""#);
        assert_eq!(lines[8], r#"DSTACK_SERVICE_MODE="1""#);
    }

    #[test]
    fn env_file_reads_back_in_sh() {
        let value = r#"x"y$HOME`id`\z 'q'"#;
        let env = shim_env(&[("V".to_owned(), value.to_owned())]);
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("{env}\nprintf %s \"$V\"")])
            .output()
            .expect("sh runs");
        assert_eq!(String::from_utf8_lossy(&out.stdout), value);
    }

    #[test]
    fn unit_file_is_dstacks() {
        let unit = unit_file();
        assert!(unit.contains("StartLimitBurst=1080\n"));
        assert!(unit.contains("EnvironmentFile=/root/.dstack/shim.env\n"));
        assert!(unit.contains("ExecStart=/usr/local/bin/dstack-shim\n"));
        assert!(unit.contains("WantedBy=multi-user.target\n"));
    }
}
