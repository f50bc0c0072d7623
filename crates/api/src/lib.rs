//! The dstack 0.22 HTTP API on the wire: request and response bodies with dstack's field names
//! and JSON shapes, and the table of errors with dstack's status codes and bodies.
//!
//! Shared by the server, our CLI and the tests; there is no second copy. Requests are as strict
//! as dstack's server (an unknown field is a 422 `extra_forbidden`; optional fields default);
//! responses always carry every field dstack's client requires.
//!
//! Configurations (`run_spec.configuration` and friends) are `dstack_model` types, which already
//! serialize to dstack's JSON.

pub mod error;
pub mod fleets;
pub mod gateways;
pub mod gpus;
pub mod metrics;
pub mod projects;
pub mod repos;
pub mod runs;
pub mod secrets;
pub mod server;
pub mod time;
pub mod users;

pub use error::{ApiError, ErrorCode, ValidationDetail};

/// The dstack version this API mirrors; the server reports it and checks clients against it.
pub const DSTACK_VERSION: &str = "0.22.5";
