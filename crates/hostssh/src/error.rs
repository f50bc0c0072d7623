//! Errors, each naming the host and saying what to check. Private keys never appear in them.

use std::time::Duration;

/// Why an SSH operation on a host failed.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// No TCP connection: refused, no route, no answer, or a name that does not resolve.
    #[error("cannot reach {host}:{port}: {cause}; check the host name, the SSH port and firewalls")]
    Unreachable { host: String, port: u16, cause: String },
    /// Every key was tried and refused.
    #[error(
        "{host} refused the key for user `{user}` ({n_keys} key(s) tried); add the public key of `identity_file` \
         to ~{user}/.ssh/authorized_keys on {host} or set the right `identity_file`/`user`"
    )]
    AuthRefused { host: String, user: String, n_keys: usize },
    /// The server closed the connection, during the handshake or later.
    #[error("{host}:{port} closed the SSH connection{during}; is an SSH server listening on that port?")]
    Closed { host: String, port: u16, during: &'static str },
    /// A jump host could not open a connection to the next hop.
    #[error("jump host {jump} cannot connect to {host}:{port}: {cause}")]
    JumpFailed { jump: String, host: String, port: u16, cause: String },
    /// The SSH protocol failed (no common algorithm, bad packets, ...).
    #[error("SSH with {host}:{port} failed: {cause}")]
    Protocol { host: String, port: u16, cause: String },
    /// A command did not finish in time.
    #[error("`{command}` on {host} did not finish within {after:?}")]
    ExecTimeout { host: String, command: String, after: Duration },
    /// The host refused or failed to open a channel (exec or forward).
    #[error("{host} refused to {what}: {cause}")]
    Channel { host: String, what: String, cause: String },
    /// The local end of a tunnel could not be opened.
    #[error("cannot open a local port for the tunnel to {host}: {source}")]
    LocalListener {
        host: String,
        #[source]
        source: std::io::Error,
    },
}

impl SshError {
    /// The host the error is about.
    pub fn host(&self) -> &str {
        match self {
            SshError::Unreachable { host, .. }
            | SshError::AuthRefused { host, .. }
            | SshError::Closed { host, .. }
            | SshError::JumpFailed { host, .. }
            | SshError::Protocol { host, .. }
            | SshError::ExecTimeout { host, .. }
            | SshError::Channel { host, .. }
            | SshError::LocalListener { host, .. } => host,
        }
    }
}

/// A private key that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text is not an OpenSSH, PEM or PuTTY private key (the key text is not repeated here).
    #[error("the private key{name} cannot be read ({cause}); give an unencrypted OpenSSH or PEM private key")]
    Invalid { name: String, cause: String },
}
