//! The dstack configuration language, exactly as dstack 0.22 reads it.
//!
//! This crate is pure: no I/O, no async. It loads YAML with PyYAML's YAML 1.1 typing
//! ([`yaml`]), validates it into typed models with pydantic-like lax coercion while collecting
//! every error with its position ([`de`]), and serializes the models to the normalized JSON
//! that dstack's HTTP API carries ([`configuration::parse_configuration`]).

pub mod common;
pub mod configuration;
pub mod de;
pub mod env;
pub mod fleet;
pub mod gateway;
pub mod gpus;
pub mod preset;
pub mod profile;
pub mod resources;
pub mod run;
pub mod service;
pub mod volume;
pub mod yaml;

pub use configuration::{AnyConfiguration, Parsed, parse_configuration};
pub use de::{Diagnostic, Severity};
