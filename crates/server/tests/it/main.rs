//! Server integration tests: the real router over a real database, driven in-process.
//!
//! By default each test binary uses a SQLite file in a temp dir; with `DSTACK_TEST_POSTGRES`
//! set (see `scripts/with-postgres`) the same tests run on PostgreSQL. Tests share one server
//! state and stay apart by unique names.

mod auth;
mod autoscale;
mod fleets;
mod gateways;
mod listener;
mod metrics;
mod probes;
mod projects;
mod repos;
mod rolling;
mod routes;
mod runs;
mod secrets;
mod server;
mod support;
mod users;
