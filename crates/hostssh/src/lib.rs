//! `dstack-hostssh`: how the server reaches SSH-fleet hosts (`type: fleet` with `ssh_config`).
//!
//! - [`Connection`]: one SSH session to `user@host:port`, optionally through a chain of jump
//!   hosts ([`HostTarget::proxy_jumps`], each hop's TCP a direct-tcpip channel of the previous
//!   hop's session), trying each key in turn. [`Connection::exec`] runs a command,
//!   [`Connection::upload`] writes a file, [`Connection::forward`] opens an owned tunnel: a
//!   listener on `127.0.0.1:0` whose connections become direct-tcpip channels of the **same**
//!   session, so polling a shim costs no SSH handshake. When the session drops, the next
//!   operation connects again (and a tunnel's next connection does too).
//!   [`Connection::reverse_forward`] is the other way (`ssh -R`): the host's
//!   `127.0.0.1:<port>` piped to a local address, asked for again by every new session.
//! - [`Pool`]: one connection per instance id, as dstack's `InstanceConnectionPool` keeps one
//!   `ssh -f -N` master per host.
//! - [`deploy`]/[`uninstall`]: install `dstack-shim` on a host (spec agents.md §1.15) and remove
//!   it again, leaving the host as it was. Both run it as a [`Daemon`] (systemd unit or
//!   detached supervisor loop).
//! - [`deploy_gateway`]/[`uninstall_gateway`]: the same for a gateway (`dstack gateway run`
//!   from the server's own `dstack` binary), the `local.ssh` gateways of the server.
//! - [`testkit`] (feature `testkit`): test hosts, Docker containers of the image
//!   `scripts/build-ssh-test-image` builds, running a real OpenSSH server (as PID 1, or as a
//!   service of systemd).
//!
//! Errors ([`SshError`], [`DeployError`]) always name the host and say what to change; private
//! keys never appear in errors or logs.
//!
//! # Why russh
//!
//! dstack runs the `ssh` binary (a `ControlMaster` per host, `-L` Unix sockets, `ProxyCommand`
//! for jumps) and paramiko for the deploy. An SSH library in-process gives us typed errors
//! instead of parsing `ssh`'s stderr, no key files written to disk, no control sockets or
//! temp dirs to clean up, and tunnels that are tasks of the server (so they die with it). russh
//! is the maintained async Rust SSH client (tokio, direct-tcpip channels, RSA/Ed25519/ECDSA
//! keys); its crypto backend is aws-lc-rs, which the workspace already builds for rustls.
//!
//! # Uploads go through `exec`, not SFTP
//!
//! [`Connection::upload`] streams the bytes to `cat` in a temp file next to the target and
//! renames it into place, all in one command that `sudo` can wrap. SFTP would need a second
//! crate and still a `sudo mv` afterwards, because an SFTP subsystem runs as the SSH user and
//! the shim goes to `/usr/local/bin`. The channel's flow control is the same either way.
//!
//! # Differences from dstack
//!
//! - The server uploads its own `dstack-shim` and `dstack-runner` (same version, same build)
//!   instead of the host downloading them from dstack's bucket, so hosts need no outbound
//!   network and no `curl`. Only the server's own architecture is deployable
//!   ([`DeployError::NoShimForArch`] names the host's otherwise).
//! - A host without systemd as PID 1 gets a supervisor loop (`setsid`, pid file), as dstack's
//!   cloud VMs do, instead of failing.
//! - Docker is checked up front (a named error instead of a shim that never gets healthy).
//! - [`uninstall`] cleans the host; dstack leaves everything behind.
//! - Tunnels are TCP listeners on 127.0.0.1 (dstack: Unix sockets) and host keys are not
//!   checked (dstack: `StrictHostKeyChecking=no`, the same).

mod connection;
mod deploy;
mod error;
mod gateway;
mod pool;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use connection::{Connection, ExecOutput, HostTarget, JumpHost, WriteAs, parse_private_key, shell_quote};
pub use deploy::{
    Arch, Daemon, DeployError, DeployParams, Deployed, KEY_MARKER, RUNNER_PATH, SHIM_HOME, SHIM_PATH,
    Supervisor, UNIT_PATH, check_host, deploy, env_file, shim_env, start_daemon, supervisor_script,
    uninstall, unit_file,
};
pub use error::{KeyError, SshError};
pub use gateway::{
    GATEWAY_API_PORT, GATEWAY_BINARY, GATEWAY_HOME, GATEWAY_SERVER_PORT, GatewayDeployed, GatewayParams,
    deploy_gateway, gateway_api, gateway_daemon, uninstall_gateway,
};
pub use pool::Pool;
pub use russh::keys::PrivateKey;
