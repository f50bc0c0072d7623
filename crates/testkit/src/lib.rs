//! Test-only helpers shared by the crates' test suites (never a dependency of a shipped
//! binary): local stand-ins for outside services this machine cannot reach, each a faithful
//! implementation of the documented protocol, small enough to read in one sitting.

pub mod registry;
