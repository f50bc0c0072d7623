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
