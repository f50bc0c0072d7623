//! PLACEHOLDER: replaced by the profile/env work. Public API: `Env`: `Default` (empty),
//! `FromNode` (list or map form), `Serialize`, `Clone`, `Debug`, `PartialEq`.
use serde::Serialize;

use crate::de::{Cx, FromNode};
use crate::yaml::Node;

/// PLACEHOLDER.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(transparent)]
pub struct Env(pub serde_json::Value);

impl FromNode for Env {
    fn from_node(node: &Node, _cx: &mut Cx) -> Option<Self> {
        Some(Env(node.to_json()))
    }
}
