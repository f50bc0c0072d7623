//! Integration tests for the `dstack` binary (one test executable; one module per command).

mod devenv;
mod fleets;
mod gateway_cli;
mod gateway_ssh;
mod host_failures;
mod local_fleet;
mod multinode;
mod offline;
mod pip_attach;
mod repos;
mod runs;
mod server;
mod services;
mod ssh_fleet;
mod validate;

/// A port that is free now, for a process a test starts later to listen on (a gateway, a
/// dev environment's server). It lies below the kernel's ephemeral range, which `bind(0)` and
/// outgoing connections draw from, so another test cannot take it in between (as it could a
/// port that `bind(0)` handed out and that was closed again); each call in this process gets
/// another one.
pub(crate) fn unused_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    // Apart from another test process's ports, by its pid.
    let base = 10_000 + u16::try_from(std::process::id() % 1000).unwrap_or(0) * 10;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(port < ephemeral_low, "no free port below the ephemeral range ({ephemeral_low})");
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
}
