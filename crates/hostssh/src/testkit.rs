//! Test hosts: Docker containers running a real OpenSSH server (the image of
//! `scripts/build-ssh-test-image`), on a private network of their own, removed on drop, even
//! when the test panics. [`HostKind::Systemd`] hosts run systemd as PID 1 (the `--systemd`
//! image), unprivileged: only systemd's own cgroup tree is mounted writable (see
//! [`systemd_cgroup_args`]). Containers left by a killed test process are removed by the next
//! [`TestHosts::start`]. Everything here panics with a message instead of returning errors:
//! it is test support.

use std::net::TcpStream;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::{HostTarget, JumpHost, PrivateKey, parse_private_key};

const LABEL: &str = "dstack-rs-test-sshhost.pid";

/// What a test host can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// sshd, sudo, bash, coreutils: no Docker.
    Plain,
    /// Also the machine's Docker socket and CLI (static binaries only) mounted in, and volumes
    /// at `/root/.dstack` and `/usr/local/bin`, so that a shim started with
    /// `DSTACK_SHIM_DOCKER_SELF=<container>` can run task containers on the shared engine.
    WithDocker,
    /// Like [`HostKind::WithDocker`], but PID 1 is systemd and sshd is its `ssh.service`: the
    /// shim is deployed as a systemd unit here. sshd logs to the journal.
    Systemd,
}

impl HostKind {
    fn has_docker(self) -> bool {
        matches!(self, HostKind::WithDocker | HostKind::Systemd)
    }
}

/// One running container.
#[derive(Debug, Clone)]
pub struct TestHost {
    pub container: String,
    /// Its address on the private network, reachable from this machine.
    pub ip: String,
    pub kind: HostKind,
}

/// Containers started together, with the key they authorize for `root` and `dstack` (a user
/// with passwordless sudo).
pub struct TestHosts {
    pub hosts: Vec<TestHost>,
    pub network: String,
    pub key: PrivateKey,
    /// The authorized key's public line.
    pub public_key: String,
}

/// The image tag, built (or found) once per process.
pub fn image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| build_image(&[]))
}

/// The tag of the `--systemd` image, built (or found) once per process.
pub fn systemd_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| build_image(&["--systemd"]))
}

fn build_image(args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/build-ssh-test-image");
    let out = Command::new(script).args(args).output().expect("scripts/build-ssh-test-image runs");
    assert!(
        out.status.success(),
        "building the SSH test image {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `docker run` arguments that let systemd run as PID 1 in an unprivileged container: the
/// cgroup hierarchy it manages, writable. Docker mounts the container's cgroups read-only, and
/// systemd stops at once without a cgroup of its own to create `init.scope` in.
///
/// On a cgroup v1 engine (the host's cgroup namespace, so the container's path in
/// `/proc/1/cgroup` is its path in the mount): the `name=systemd` hierarchy only, the
/// controllers stay read-only; systemd creates its tree under the container's
/// `/docker/<id>`, which the engine removes with the container. On cgroup v2 the unified
/// tree, the same way (not exercised on our test machines, which are v1).
pub fn systemd_cgroup_args() -> Vec<String> {
    static VERSION: OnceLock<String> = OnceLock::new();
    let version =
        VERSION.get_or_init(|| docker(&["info", "--format", "{{.CgroupVersion}}"]).trim().to_owned());
    let mount = match version.as_str() {
        "2" => "/sys/fs/cgroup:/sys/fs/cgroup:rw",
        _ => "/sys/fs/cgroup/systemd:/sys/fs/cgroup/systemd:rw",
    };
    ["--cgroupns=host", "-v", mount, "--tmpfs", "/run", "--tmpfs", "/run/lock", "--stop-signal", "SIGRTMIN+3"]
        .map(str::to_owned)
        .to_vec()
}

/// A new Ed25519 key pair (private key, public line), made by `ssh-keygen` in the test image.
pub fn keypair() -> (PrivateKey, String) {
    let out = docker(&[
        "run",
        "--rm",
        image(),
        "sh",
        "-c",
        "ssh-keygen -q -t ed25519 -N '' -C dstack-rs-test -f /tmp/k && cat /tmp/k && echo @@ && cat /tmp/k.pub",
    ]);
    let (private, public) = out.split_once("@@").expect("ssh-keygen printed both keys");
    let key = parse_private_key(private.trim(), "test key").expect("ssh-keygen's key parses");
    (key, public.trim().to_owned())
}

/// A private key as OpenSSH text (for the fleet files of tests).
pub fn openssh_text(key: &PrivateKey) -> String {
    key.to_openssh(russh::keys::ssh_key::LineEnding::LF).expect("the key encodes").to_string()
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("the docker CLI runs");
    assert!(
        out.status.success(),
        "docker {} failed: {}",
        args.first().copied().unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes containers and networks of test processes that no longer exist.
fn remove_leftovers() {
    let format = format!("{{{{.ID}}}} {{{{.Label \"{LABEL}\"}}}}");
    for kind in ["container", "network"] {
        let list = match kind {
            "container" => docker(&["ps", "-a", "--filter", &format!("label={LABEL}"), "--format", &format]),
            _ => docker(&["network", "ls", "--filter", &format!("label={LABEL}"), "--format", &format]),
        };
        for line in list.lines() {
            let Some((id, pid)) = line.split_once(' ') else { continue };
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = Command::new("docker")
                    .args(if kind == "container" {
                        vec!["rm", "-f", "-v", id]
                    } else {
                        vec!["network", "rm", id]
                    })
                    .output();
            }
        }
    }
}

impl TestHosts {
    /// Starts one container per kind, each authorizing a fresh key, and waits for their sshd.
    pub fn start(kinds: &[HostKind]) -> TestHosts {
        static N: AtomicUsize = AtomicUsize::new(0);
        remove_leftovers();
        let pid = std::process::id().to_string();
        let n = N.fetch_add(1, Ordering::Relaxed);
        let network = format!("dstack-rs-ssh-{pid}-{n}");
        docker(&["network", "create", "--label", &format!("{LABEL}={pid}"), &network]);
        let (key, public_key) = keypair();
        let mut hosts = TestHosts { hosts: Vec::new(), network, key, public_key };
        let docker_cli = Command::new("sh")
            .args(["-c", "readlink -f \"$(command -v docker)\""])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        for (idx, kind) in kinds.iter().enumerate() {
            let container = format!("dstack-rs-sshhost-{pid}-{n}-{idx}");
            let label = format!("{LABEL}={pid}");
            let env = format!("AUTHORIZED_KEY={}", hosts.public_key);
            let mut args =
                vec!["run", "-d", "--name", &container, "--network", &hosts.network, "--label", &label];
            args.extend(["-e", &env]);
            let cli_mount = format!("{docker_cli}:/usr/local/bin/docker:ro");
            let systemd_args = if *kind == HostKind::Systemd { systemd_cgroup_args() } else { Vec::new() };
            args.extend(systemd_args.iter().map(String::as_str));
            if kind.has_docker() {
                args.extend(["-v", "/var/run/docker.sock:/var/run/docker.sock", "-v", &cli_mount]);
                // Volumes where the shim keeps what its task containers mount: the engine finds
                // them on its own host (the shim runs with `--docker-self`, see dstack-shim).
                args.extend(["-v", "/root/.dstack", "-v", "/usr/local/bin"]);
            }
            args.push(if *kind == HostKind::Systemd { systemd_image() } else { image() });
            docker(&args);
            // Registered before waiting, so a failure below still removes it.
            hosts.hosts.push(TestHost { container: container.clone(), ip: String::new(), kind: *kind });
            let ip = docker(&[
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                &container,
            ]);
            let ip = ip.trim().to_owned();
            wait_for_sshd(&ip);
            if let Some(host) = hosts.hosts.last_mut() {
                host.ip = ip;
            }
        }
        hosts
    }

    /// The authorized key, as the slice [`crate::Connection::connect`] takes.
    pub fn keys(&self) -> &[PrivateKey] {
        std::slice::from_ref(&self.key)
    }

    /// `user@host:22` of host `idx`, directly.
    pub fn target(&self, idx: usize, user: &str) -> HostTarget {
        HostTarget {
            host: self.hosts[idx].ip.clone(),
            port: 22,
            user: user.to_owned(),
            proxy_jumps: Vec::new(),
        }
    }

    /// Host `idx` as a jump host for `root`.
    pub fn jump(&self, idx: usize) -> JumpHost {
        JumpHost {
            host: self.hosts[idx].ip.clone(),
            port: 22,
            user: "root".to_owned(),
            key: self.key.clone(),
        }
    }

    /// Runs `sh -c <script>` in host `idx` (as root, outside SSH) and returns its stdout.
    pub fn sh(&self, idx: usize, script: &str) -> String {
        docker(&["exec", &self.hosts[idx].container, "sh", "-c", script])
    }

    /// sshd's log (`sshd -D -e` writes it to the container's stderr; under systemd it is
    /// `ssh.service`'s journal).
    pub fn sshd_log(&self, idx: usize) -> String {
        let host = &self.hosts[idx];
        let args = match host.kind {
            HostKind::Systemd => {
                vec!["exec", &host.container, "journalctl", "-u", "ssh", "--no-pager", "-o", "cat"]
            }
            _ => vec!["logs", &host.container],
        };
        let out = Command::new("docker").args(&args).output().expect("docker logs runs");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    /// How many logins sshd accepted so far.
    pub fn n_logins(&self, idx: usize) -> usize {
        self.sshd_log(idx).lines().filter(|l| l.contains("Accepted publickey")).count()
    }
}

fn wait_for_sshd(ip: &str) {
    use std::io::Read;
    // systemd boots before its sshd starts: seconds, more on a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut tcp) =
            TcpStream::connect_timeout(&format!("{ip}:22").parse().expect("an IP"), Duration::from_secs(1))
        {
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(2)));
            let mut banner = [0u8; 4];
            if tcp.read_exact(&mut banner).is_ok() && &banner == b"SSH-" {
                return;
            }
        }
        assert!(Instant::now() < deadline, "sshd at {ip} did not start within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for TestHosts {
    fn drop(&mut self) {
        for host in &self.hosts {
            let _ = Command::new("docker").args(["rm", "-f", "-v", &host.container]).output();
        }
        let _ = Command::new("docker").args(["network", "rm", &self.network]).output();
    }
}
