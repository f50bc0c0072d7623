//! Wire-shape tests: the examples of the spec (agents.md §1.4, §2.3, §2.4) decode, and what
//! we encode is what dstack's agents and server read.

mod clients;
mod shapes;
