//! Integration tests of `dstack-decide` (one binary, as the conventions want).

mod jobspec_corpus;
mod jobspec_fixtures;
