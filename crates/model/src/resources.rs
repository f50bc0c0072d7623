//! PLACEHOLDER: replaced by the resources work. The public API other modules rely on:
//! `ResourcesSpec`: `Default` (dstack's defaults), `FromNode`, `Serialize`, `Clone`, `Debug`,
//! `PartialEq`; `ResourcesSpec::unconstrained()` for fleets.
use serde::Serialize;

use crate::de::{Cx, FromNode};
use crate::yaml::Node;

/// PLACEHOLDER.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(transparent)]
pub struct ResourcesSpec(pub serde_json::Value);

impl FromNode for ResourcesSpec {
    fn from_node(node: &Node, _cx: &mut Cx) -> Option<Self> {
        Some(ResourcesSpec(node.to_json()))
    }
}
