//! The dstack configuration language, exactly as dstack 0.22 reads it.
//!
//! This crate is pure: no I/O, no async. It loads YAML with PyYAML's YAML 1.1 typing
//! ([`yaml`]), validates it into typed models with pydantic-like lax coercion while collecting
//! every error with its position ([`de`]), and serializes the models to the normalized JSON
//! that dstack's HTTP API carries ([`configuration::parse_configuration`]).
//! [`configuration::static_checks`] adds dstack's server-side rules that need no server state,
//! so an offline check gives the verdict `dstack apply` would.
//!
//! # Compatibility
//!
//! Every valid dstack 0.22.5 configuration parses to the JSON dstack produces, and every
//! invalid one is refused; the corpus in `tests/corpus` and the differential test in
//! `tests/compat` (which runs the real dstack parser) hold us to that.
//!
//! # Deliberate differences from dstack
//!
//! Where dstack crashes, leaks a Python message or silently drops what the user wrote, we
//! refuse the input with a clear error instead. Each case is listed in the docs of the module
//! that makes it and has a file in `tests/corpus/deviations`. In the loader ([`yaml`]):
//! - a second YAML document (`---`) is refused with a message; dstack shows a traceback;
//! - unsupported tags (`!!binary`, `!!set`, local tags) are refused by name;
//! - a document that expands to more than a million values through aliases is refused;
//! - integers beyond 128 bits are read as text, so integer fields refuse them.
//!
//! In the models: [`common`] (`ports: ["8080:"]` and `"*:"` crash dstack), [`resources`]
//! (`gpu: 2..4..8`, non-finite sizes, `gpu: true`), [`run`] (`nvcc: true` with `image` is
//! ignored by dstack, `count` next to `replicas` is dropped), [`profile`] and [`env`](mod@env) (tags that
//! are not strings crash dstack; every duplicate and cron error is reported), [`fleet`],
//! [`gateway`], [`volume`], [`preset`].
//!
//! Error messages say what was expected and what was found, with the field path and
//! position; dstack's exact wording is kept where users may know it.

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
