//! PLACEHOLDER: replaced by the run-configurations work (dev-environment, task, service).
use serde::Serialize;

use crate::de::{Cx, FromNode};
use crate::yaml::Node;

macro_rules! placeholder {
    ($($name:ident),+) => {$(
        /// PLACEHOLDER.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(transparent)]
        pub struct $name(pub serde_json::Value);

        impl FromNode for $name {
            fn from_node(node: &Node, _cx: &mut Cx) -> Option<Self> {
                Some($name(node.to_json()))
            }
        }
    )+};
}
pub(crate) use placeholder;

placeholder!(
    DevEnvironmentConfiguration,
    TaskConfiguration,
    ServiceConfiguration
);
