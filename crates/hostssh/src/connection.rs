//! One SSH session per host, kept open: exec, upload and owned tunnels over it, and a
//! reconnect when it drops.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::Duration;

use russh::ChannelMsg;
use russh::client::{self, Handle};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};
use tokio::io::AsyncWriteExt;

use crate::error::{KeyError, SshError};

/// Where to connect: `user@host:port`, through `proxy_jumps` in order (the first one is
/// reached directly, each next hop through the previous one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub proxy_jumps: Vec<JumpHost>,
}

/// A jump host with its own user and key (dstack's `proxy_jump`).
#[derive(Clone, PartialEq, Eq)]
pub struct JumpHost {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub key: PrivateKey,
}

/// Shows the key's fingerprint only.
impl std::fmt::Debug for JumpHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JumpHost")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("key", &self.key.public_key().fingerprint(Default::default()).to_string())
            .finish()
    }
}

/// Reads a private key (OpenSSH, PEM or PuTTY, unencrypted). `name` only labels errors (a
/// file name, "the fleet key"); the key text never appears in them.
pub fn parse_private_key(text: &str, name: &str) -> Result<PrivateKey, KeyError> {
    russh::keys::decode_secret_key(text, None).map_err(|e| KeyError::Invalid {
        name: if name.is_empty() { String::new() } else { format!(" {name}") },
        cause: key_error_cause(&e),
    })
}

/// A description of the key error without any of the key's bytes.
fn key_error_cause(e: &russh::keys::Error) -> String {
    match e {
        russh::keys::Error::KeyIsEncrypted => "it is encrypted with a passphrase".to_owned(),
        russh::keys::Error::UnsupportedKeyType { .. } => "its type is not supported".to_owned(),
        _ => "not a private key in a known format".to_owned(),
    }
}

/// What a command left: its exit status (`None` when it was killed by a signal or the server
/// sent none), stdout and stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub status: Option<u32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// Stdout as trimmed text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).trim().to_owned()
    }

    /// Stderr as trimmed text (at most its last 2000 bytes).
    pub fn stderr_text(&self) -> String {
        let start = self.stderr.len().saturating_sub(2000);
        String::from_utf8_lossy(&self.stderr[start..]).trim().to_owned()
    }
}

/// Who a file is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteAs {
    /// The SSH user.
    User,
    /// root: directly when the SSH user is `root`, else through `sudo -n`.
    Root,
}

/// An SSH connection to one host that stays open. Clones share the session; the server keeps
/// one per instance (see [`crate::Pool`]). When the session drops, the next operation (or a new
/// connection through a tunnel) connects again with the same target and keys.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    target: HostTarget,
    keys: Vec<Arc<PrivateKey>>,
    timeout: Duration,
    session: tokio::sync::Mutex<Arc<Session>>,
    n_handshakes: AtomicU64,
    /// Remote port → local tunnel; the accept loops end when the connection is dropped.
    forwards: StdMutex<HashMap<u16, Forward>>,
    /// Reverse tunnels: the host's `127.0.0.1:<port>` → a local address; each new session
    /// asks the host for all of them again.
    reverse: Reverse,
}

/// Remote (host loopback) port → the local address its connections are piped to.
type Reverse = Arc<StdMutex<HashMap<u16, SocketAddr>>>;

/// Locks `m`; a holder that panicked left a map that is still usable.
fn locked<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Forward {
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(forwards) = self.forwards.lock() {
            for f in forwards.values() {
                f.task.abort();
            }
        }
    }
}

/// An authenticated session, with the sessions of its jump hosts kept alive under it.
struct Session {
    handle: Handle<Client>,
    _jumps: Vec<Handle<Client>>,
}

/// Accepts any host key, as dstack does (`StrictHostKeyChecking=no`), and pipes the host's
/// connections to a reverse tunnel's port to that tunnel's local address.
struct Client {
    reverse: Reverse,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: russh::Channel<client::Msg>,
        _connected_address: &str,
        connected_port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let local =
            u16::try_from(connected_port).ok().and_then(|port| locked(&self.reverse).get(&port).copied());
        let Some(local) = local else {
            reply.reject(russh::ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        };
        reply.accept().await;
        tokio::spawn(async move {
            let mut stream = channel.into_stream();
            match tokio::net::TcpStream::connect(local).await {
                Ok(mut tcp) => {
                    let _ = tcp.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut stream).await;
                }
                Err(e) => {
                    tracing::warn!(%local, %e, "reverse tunnel: the local end does not answer");
                    let _ = stream.shutdown().await;
                }
            }
        });
        Ok(())
    }
}

fn ssh_config() -> Arc<client::Config> {
    Arc::new(client::Config {
        // dstack's ServerAliveInterval=10, ServerAliveCountMax=3.
        keepalive_interval: Some(Duration::from_secs(10)),
        keepalive_max: 3,
        nodelay: true,
        ..client::Config::default()
    })
}

impl Connection {
    /// Connects and authenticates, trying each key in turn. `timeout` bounds each hop's TCP
    /// connect and SSH handshake (dstack: 10 s).
    pub async fn connect(
        target: &HostTarget,
        keys: &[PrivateKey],
        timeout: Duration,
    ) -> Result<Connection, SshError> {
        let reverse = Reverse::default();
        let inner = Inner {
            target: target.clone(),
            keys: keys.iter().cloned().map(Arc::new).collect(),
            timeout,
            session: tokio::sync::Mutex::new(Arc::new(open_session(target, keys, timeout, &reverse).await?)),
            n_handshakes: AtomicU64::new(1),
            forwards: StdMutex::new(HashMap::new()),
            reverse,
        };
        Ok(Connection { inner: Arc::new(inner) })
    }

    pub fn target(&self) -> &HostTarget {
        &self.inner.target
    }

    /// How many SSH sessions to the target this connection has opened (1 plus the reconnects).
    pub fn n_handshakes(&self) -> u64 {
        self.inner.n_handshakes.load(Ordering::Relaxed)
    }

    /// Whether the session is still open (no round trip; see [`Connection::check`]).
    pub async fn is_open(&self) -> bool {
        !self.inner.session.lock().await.handle.is_closed()
    }

    /// Liveness check: a round trip (`true` on the host); if the session is gone, connects again.
    pub async fn check(&self) -> Result<(), SshError> {
        self.exec("true", Duration::from_secs(10)).await.map(drop)
    }

    /// Runs `command` through the user's shell and collects its output.
    pub async fn exec(&self, command: &str, timeout: Duration) -> Result<ExecOutput, SshError> {
        self.exec_with_input(command, &[], timeout).await
    }

    /// Runs `command` with `input` on its stdin (then EOF) and collects its output.
    pub async fn exec_with_input(
        &self,
        command: &str,
        input: &[u8],
        timeout: Duration,
    ) -> Result<ExecOutput, SshError> {
        let channel = self.open_channel(ChannelKind::Session).await?;
        let host = &self.inner.target.host;
        let channel_error = |e: russh::Error| SshError::Channel {
            host: host.clone(),
            what: "run a command".to_owned(),
            cause: e.to_string(),
        };
        let run = async {
            channel.exec(true, command).await.map_err(channel_error)?;
            let (mut read, write) = channel.split();
            let send = async {
                if !input.is_empty() {
                    write.data(input).await.map_err(channel_error)?;
                }
                write.eof().await.map_err(channel_error)
            };
            let receive = async {
                let mut out = ExecOutput { status: None, stdout: Vec::new(), stderr: Vec::new() };
                while let Some(msg) = read.wait().await {
                    match msg {
                        ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
                        ChannelMsg::ExtendedData { data, ext: 1 } => out.stderr.extend_from_slice(&data),
                        ChannelMsg::ExitStatus { exit_status } => out.status = Some(exit_status),
                        _ => {}
                    }
                }
                out
            };
            let (sent, out) = tokio::join!(send, receive);
            match sent {
                // A command that exits without reading all of its stdin closes the channel under
                // the writer; its exit status is the answer then.
                Err(_) if out.status.is_some() => Ok(out),
                Err(e) => Err(e),
                Ok(()) => Ok(out),
            }
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(SshError::ExecTimeout {
                host: host.clone(),
                command: command.chars().take(80).collect(),
                after: timeout,
            }),
        }
    }

    /// Writes `data` to `remote_path` with `mode` (e.g. `0o755`): streamed to a temp file in
    /// the same directory, then renamed over the target, so a reader never sees half a file.
    pub async fn upload(
        &self,
        data: &[u8],
        remote_path: &str,
        mode: u32,
        write_as: WriteAs,
        timeout: Duration,
    ) -> Result<(), SshError> {
        let path = shell_quote(remote_path);
        let script = format!(
            "set -e; t=$(mktemp \"$(dirname {path})/.dstack-upload.XXXXXXXX\"); \
             trap 'rm -f \"$t\"' EXIT; cat > \"$t\"; chmod {mode:o} \"$t\"; mv -f \"$t\" {path}; trap - EXIT"
        );
        let command = self.as_root_if(write_as, &script);
        let out = self.exec_with_input(&command, data, timeout).await?;
        if out.success() {
            Ok(())
        } else {
            Err(SshError::Channel {
                host: self.inner.target.host.clone(),
                what: format!("write {remote_path}"),
                cause: nonempty(out.stderr_text(), out.status),
            })
        }
    }

    /// `sh -c <script>`, through `sudo -n` when root is asked for and the SSH user is not root.
    pub fn as_root_if(&self, write_as: WriteAs, script: &str) -> String {
        match write_as {
            WriteAs::Root if self.inner.target.user != "root" => {
                format!("sudo -n sh -c {}", shell_quote(script))
            }
            _ => format!("sh -c {}", shell_quote(script)),
        }
    }

    /// A local tunnel to `localhost:<remote_port>` on the host: a listener on `127.0.0.1:0`
    /// whose every accepted connection becomes a direct-tcpip channel of this connection's
    /// session (no new SSH handshake per request). Asking again for the same port returns the
    /// same address. The tunnel lives as long as the connection (the last clone).
    pub async fn forward(&self, remote_port: u16) -> Result<SocketAddr, SshError> {
        if let Some(f) = self.forwards().get(&remote_port) {
            return Ok(f.local);
        }
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|source| SshError::LocalListener { host: self.inner.target.host.clone(), source })?;
        let local = listener
            .local_addr()
            .map_err(|source| SshError::LocalListener { host: self.inner.target.host.clone(), source })?;
        let weak = Arc::downgrade(&self.inner);
        let task = tokio::spawn(accept_loop(listener, weak, remote_port));
        let mut forwards = self.forwards();
        if let Some(existing) = forwards.get(&remote_port) {
            task.abort();
            return Ok(existing.local);
        }
        forwards.insert(remote_port, Forward { local, task });
        Ok(local)
    }

    /// Whether something on the host accepts and keeps a TCP connection to its
    /// `localhost:<remote_port>`: a direct-tcpip channel opens (the host's sshd connected) and
    /// the other end does not close it within `quiet`; the channel is closed then. A port
    /// proxy accepts for its backend and closes at once when nothing listens there (Docker's
    /// `docker-proxy` for a container's published port), and a local
    /// [`forward`](Self::forward) listener accepts before the host even tries, so neither an
    /// open channel nor a local connect alone says that the app listens.
    pub async fn accepts(&self, remote_port: u16, quiet: Duration) -> Result<bool, SshError> {
        let kind = ChannelKind::DirectTcpip { port: remote_port, originator_port: 0 };
        let mut channel = match self.open_channel(kind).await {
            Ok(channel) => channel,
            // The host could not connect (or the channel failed on a new session too).
            Err(SshError::Channel { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let kept = async {
            loop {
                match channel.wait().await {
                    Some(ChannelMsg::Data { .. } | ChannelMsg::ExtendedData { .. }) => return true,
                    Some(ChannelMsg::Eof | ChannelMsg::Close) | None => return false,
                    Some(_) => {}
                }
            }
        };
        let accepted = tokio::time::timeout(quiet, kept).await.unwrap_or(true);
        let _ = channel.close().await;
        Ok(accepted)
    }

    /// A reverse tunnel: connections to `127.0.0.1:<port>` on the host are piped to
    /// `local` on this machine (`ssh -R`), as a gateway on the host reaches this server. The
    /// host is asked on the current session and again by every later one (a reconnect);
    /// asking again for the same port and address changes nothing. Fails if the host refuses
    /// (the port is taken there, or its sshd forbids forwarding).
    pub async fn reverse_forward(&self, port: u16, local: SocketAddr) -> Result<(), SshError> {
        let session = current_session(&self.inner).await?;
        let asked = self.reverse_map().get(&port).copied();
        if asked == Some(local) {
            return Ok(());
        }
        self.reverse_map().insert(port, local);
        if asked.is_some() {
            // The host already forwards the port to this session; only the local end moved.
            return Ok(());
        }
        if let Err(e) = ask_reverse(&session.handle, &self.inner.target.host, port).await {
            self.reverse_map().remove(&port);
            return Err(e);
        }
        Ok(())
    }

    /// A reverse tunnel to `local` on a port the host picks; returns that port. Asking again
    /// for the same address returns the same port. A later session asks the host for that same
    /// port again.
    pub async fn reverse_forward_any(&self, local: SocketAddr) -> Result<u16, SshError> {
        let session = current_session(&self.inner).await?;
        let existing = self.reverse_map().iter().find(|(_, to)| **to == local).map(|(port, _)| *port);
        if let Some(port) = existing {
            return Ok(port);
        }
        let host = &self.inner.target.host;
        let port = session.handle.tcpip_forward("127.0.0.1", 0).await.map_err(|e| SshError::Channel {
            host: host.clone(),
            what: "listen on a port of its loopback for a reverse tunnel".to_owned(),
            cause: e.to_string(),
        })?;
        let Ok(port) = u16::try_from(port) else {
            return Err(SshError::Protocol {
                host: host.clone(),
                port: self.inner.target.port,
                cause: format!("the host picked port {port} for a reverse tunnel"),
            });
        };
        self.reverse_map().insert(port, local);
        Ok(port)
    }

    /// Closes the reverse tunnels whose host port `keep` refuses.
    pub async fn retain_reverse(&self, keep: impl Fn(u16) -> bool) {
        let closing: Vec<u16> = {
            let mut map = self.reverse_map();
            let closing = map.keys().copied().filter(|p| !keep(*p)).collect();
            map.retain(|p, _| keep(*p));
            closing
        };
        if closing.is_empty() {
            return;
        }
        let session = self.inner.session.lock().await.clone();
        for port in closing {
            let _ = session.handle.cancel_tcpip_forward("127.0.0.1", u32::from(port)).await;
        }
    }

    fn reverse_map(&self) -> std::sync::MutexGuard<'_, HashMap<u16, SocketAddr>> {
        locked(&self.inner.reverse)
    }

    fn forwards(&self) -> std::sync::MutexGuard<'_, HashMap<u16, Forward>> {
        locked(&self.inner.forwards)
    }

    /// Opens a channel on the current session; if that fails because the session is gone,
    /// connects again and retries once.
    async fn open_channel(&self, kind: ChannelKind) -> Result<russh::Channel<client::Msg>, SshError> {
        open_channel(&self.inner, kind).await
    }

    /// Closes the session (tunnels stop working until the next reconnect).
    pub async fn disconnect(&self) {
        let session = self.inner.session.lock().await.clone();
        let _ = session.handle.disconnect(russh::Disconnect::ByApplication, "", "en").await;
    }
}

#[derive(Clone, Copy)]
enum ChannelKind {
    Session,
    DirectTcpip { port: u16, originator_port: u16 },
}

async fn open_channel(inner: &Inner, kind: ChannelKind) -> Result<russh::Channel<client::Msg>, SshError> {
    let mut session = current_session(inner).await?;
    let mut retried = false;
    loop {
        let result = match kind {
            ChannelKind::Session => session.handle.channel_open_session().await,
            ChannelKind::DirectTcpip { port, originator_port } => {
                session
                    .handle
                    .channel_open_direct_tcpip(
                        "localhost",
                        u32::from(port),
                        "127.0.0.1",
                        u32::from(originator_port),
                    )
                    .await
            }
        };
        match result {
            Ok(channel) => return Ok(channel),
            // The server answered: retrying on a new session would not help.
            Err(russh::Error::ChannelOpenFailure(failure)) => {
                let what = match kind {
                    ChannelKind::Session => "open a session channel".to_owned(),
                    ChannelKind::DirectTcpip { port, .. } => format!("forward to localhost:{port}"),
                };
                return Err(SshError::Channel {
                    host: inner.target.host.clone(),
                    what,
                    cause: format!("{failure:?}"),
                });
            }
            Err(e) if !retried => {
                tracing::info!(host = %inner.target.host, %e, "SSH session lost; connecting again");
                session = reconnect(inner, &session).await?;
                retried = true;
            }
            Err(e) => {
                return Err(SshError::Channel {
                    host: inner.target.host.clone(),
                    what: "open a channel".to_owned(),
                    cause: e.to_string(),
                });
            }
        }
    }
}

/// The current session, or a new one if it is closed.
async fn current_session(inner: &Inner) -> Result<Arc<Session>, SshError> {
    let mut current = inner.session.lock().await;
    if current.handle.is_closed() {
        *current =
            Arc::new(open_session(&inner.target, &plain_keys(inner), inner.timeout, &inner.reverse).await?);
        inner.n_handshakes.fetch_add(1, Ordering::Relaxed);
    }
    Ok(current.clone())
}

/// Replaces `stale` with a new session, unless someone already did.
async fn reconnect(inner: &Inner, stale: &Arc<Session>) -> Result<Arc<Session>, SshError> {
    let mut current = inner.session.lock().await;
    if Arc::ptr_eq(&current, stale) || current.handle.is_closed() {
        *current =
            Arc::new(open_session(&inner.target, &plain_keys(inner), inner.timeout, &inner.reverse).await?);
        inner.n_handshakes.fetch_add(1, Ordering::Relaxed);
    }
    Ok(current.clone())
}

/// Asks the host to listen on its `127.0.0.1:<port>` for this session.
async fn ask_reverse(handle: &Handle<Client>, host: &str, port: u16) -> Result<(), SshError> {
    handle.tcpip_forward("127.0.0.1", u32::from(port)).await.map(drop).map_err(|e| SshError::Channel {
        host: host.to_owned(),
        what: format!("listen on its 127.0.0.1:{port} for a reverse tunnel"),
        cause: match e {
            russh::Error::RequestDenied => {
                "the host refused (the port is taken, or its sshd forbids forwarding)".to_owned()
            }
            other => other.to_string(),
        },
    })
}

fn plain_keys(inner: &Inner) -> Vec<PrivateKey> {
    inner.keys.iter().map(|k| (**k).clone()).collect()
}

async fn accept_loop(listener: tokio::net::TcpListener, inner: Weak<Inner>, remote_port: u16) {
    loop {
        let (mut tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(%e, "tunnel accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(strong) = inner.upgrade() else { return };
        tokio::spawn(async move {
            let kind = ChannelKind::DirectTcpip { port: remote_port, originator_port: peer.port() };
            let channel = match open_channel(&strong, kind).await {
                Ok(channel) => channel,
                Err(e) => {
                    tracing::warn!(%e, "tunnel connection dropped");
                    let _ = tcp.shutdown().await;
                    return;
                }
            };
            drop(strong);
            let mut stream = channel.into_stream();
            let _ = tokio::io::copy_bidirectional(&mut tcp, &mut stream).await;
        });
    }
}

/// TCP to the first hop, then one SSH session per hop, each next hop's TCP through a
/// direct-tcpip channel of the previous session.
async fn open_session(
    target: &HostTarget,
    keys: &[PrivateKey],
    timeout: Duration,
    reverse: &Reverse,
) -> Result<Session, SshError> {
    let mut jumps: Vec<Handle<Client>> = Vec::new();
    let mut hops: Vec<(&str, u16, &str, Vec<PrivateKey>)> = target
        .proxy_jumps
        .iter()
        .map(|j| (j.host.as_str(), j.port, j.user.as_str(), vec![j.key.clone()]))
        .collect();
    hops.push((target.host.as_str(), target.port, target.user.as_str(), keys.to_vec()));
    let n_hops = hops.len();
    for (idx, (host, port, user, hop_keys)) in hops.into_iter().enumerate() {
        // Only the target's session carries reverse tunnels.
        let hop_reverse = if idx + 1 == n_hops { reverse.clone() } else { Reverse::default() };
        let handle = match jumps.last() {
            None => {
                let tcp = tcp_connect(host, port, timeout).await?;
                handshake(tcp, host, port, timeout, hop_reverse).await?
            }
            Some(jump) => {
                let jump_name = target.proxy_jumps.get(idx - 1).map_or("", |j| j.host.as_str());
                let channel = jump
                    .channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0)
                    .await
                    .map_err(|e| SshError::JumpFailed {
                        jump: jump_name.to_owned(),
                        host: host.to_owned(),
                        port,
                        cause: match e {
                            russh::Error::ChannelOpenFailure(f) => format!("{f:?}"),
                            other => other.to_string(),
                        },
                    })?;
                handshake(channel.into_stream(), host, port, timeout, hop_reverse).await?
            }
        };
        let handle = authenticate(handle, host, port, user, &hop_keys, timeout).await?;
        if idx + 1 == n_hops {
            let ports: Vec<u16> = locked(reverse).keys().copied().collect();
            for port in ports {
                // A port the host no longer lets us have costs that tunnel, not the session.
                if let Err(e) = ask_reverse(&handle, host, port).await {
                    tracing::warn!(%e, "reverse tunnel dropped on a new session");
                    locked(reverse).remove(&port);
                }
            }
            return Ok(Session { handle, _jumps: jumps });
        }
        jumps.push(handle);
    }
    Err(SshError::Protocol { host: target.host.clone(), port: target.port, cause: "no hops".to_owned() })
}

async fn tcp_connect(host: &str, port: u16, timeout: Duration) -> Result<tokio::net::TcpStream, SshError> {
    let unreachable = |cause: String| SshError::Unreachable { host: host.to_owned(), port, cause };
    let connect = async {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| unreachable(format!("cannot resolve the name ({e})")))?
            .collect();
        let mut last = None;
        for addr in addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(tcp) => return Ok(tcp),
                Err(e) => last = Some(e),
            }
        }
        Err(unreachable(match last {
            Some(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
            Some(e) => e.to_string(),
            None => "the name has no address".to_owned(),
        }))
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(result) => {
            let tcp = result?;
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        }
        Err(_) => Err(unreachable(format!("no answer within {timeout:?}"))),
    }
}

async fn handshake<S>(
    stream: S,
    host: &str,
    port: u16,
    timeout: Duration,
    reverse: Reverse,
) -> Result<Handle<Client>, SshError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match tokio::time::timeout(timeout, client::connect_stream(ssh_config(), stream, Client { reverse }))
        .await
    {
        Ok(Ok(handle)) => Ok(handle),
        Ok(Err(e)) => Err(session_error(e, host, port, " during the handshake")),
        Err(_) => Err(SshError::Unreachable {
            host: host.to_owned(),
            port,
            cause: format!("no SSH handshake within {timeout:?}"),
        }),
    }
}

async fn authenticate(
    mut handle: Handle<Client>,
    host: &str,
    port: u16,
    user: &str,
    keys: &[PrivateKey],
    timeout: Duration,
) -> Result<Handle<Client>, SshError> {
    let attempt = async {
        for key in keys {
            let hash = if key.algorithm().is_rsa() {
                handle
                    .best_supported_rsa_hash()
                    .await
                    .map_err(|e| session_error(e, host, port, " during authentication"))?
                    .flatten()
            } else {
                None
            };
            let with_hash = PrivateKeyWithHashAlg::new(Arc::new(key.clone()), hash);
            match handle.authenticate_publickey(user, with_hash).await {
                Ok(result) if result.success() => return Ok(()),
                Ok(_) => continue,
                Err(e) => return Err(session_error(e, host, port, " during authentication")),
            }
        }
        Err(SshError::AuthRefused { host: host.to_owned(), user: user.to_owned(), n_keys: keys.len() })
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(SshError::Protocol {
            host: host.to_owned(),
            port,
            cause: format!("authentication did not finish within {timeout:?}"),
        }),
    }
}

fn session_error(e: russh::Error, host: &str, port: u16, during: &'static str) -> SshError {
    match e {
        russh::Error::Disconnect | russh::Error::HUP | russh::Error::SendError | russh::Error::RecvError => {
            SshError::Closed { host: host.to_owned(), port, during }
        }
        russh::Error::IO(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            ) =>
        {
            SshError::Closed { host: host.to_owned(), port, during }
        }
        russh::Error::Version => SshError::Protocol {
            host: host.to_owned(),
            port,
            cause: "the server did not answer with an SSH version line; is this an SSH port?".to_owned(),
        },
        other => SshError::Protocol { host: host.to_owned(), port, cause: other.to_string() },
    }
}

/// `'text'` for `sh`, with embedded single quotes as `'\''`.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Stderr, or the exit status when there is none.
pub(crate) fn nonempty(stderr: String, status: Option<u32>) -> String {
    if stderr.is_empty() {
        match status {
            Some(code) => format!("exit status {code}"),
            None => "killed by a signal".to_owned(),
        }
    } else {
        stderr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_survives_single_quotes() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn a_jump_hosts_debug_shows_no_secret() {
        let key = russh::keys::PrivateKey::from_openssh(TEST_KEY).expect("parses");
        let jump = JumpHost { host: "j".to_owned(), port: 22, user: "u".to_owned(), key };
        let text = format!("{jump:?}");
        assert!(text.contains("SHA256:") && !text.contains("b3BlbnNzaC1rZXktdjE"), "{text}");
    }

    /// A throwaway Ed25519 key made for this test.
    const TEST_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACDHTWVPNI8bBG9OzD5GlpfC3SlYyq5qRHTZEMq9rUDMuAAAAIhPAgtVTwIL
VQAAAAtzc2gtZWQyNTUxOQAAACDHTWVPNI8bBG9OzD5GlpfC3SlYyq5qRHTZEMq9rUDMuA
AAAEDmvyba39nw9ZvzPZccuVGnn4j63Sq3GxWUygqNdYl9a8dNZU80jxsEb07MPkaWl8Ld
KVjKrmpEdNkQyr2tQMy4AAAABHRlc3QB
-----END OPENSSH PRIVATE KEY-----
";

    #[test]
    fn bad_keys_are_refused_without_their_text() {
        let secret =
            "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz\n-----END OPENSSH PRIVATE KEY-----\n";
        let err = parse_private_key(secret, "identity_file ~/.ssh/id").expect_err("not a key");
        let text = err.to_string();
        assert!(text.contains("identity_file ~/.ssh/id"), "{text}");
        assert!(!text.contains("c2VjcmV0"), "{text}");
    }
}
