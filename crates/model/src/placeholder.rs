//! A stand-in model that keeps its input as raw JSON, for modules whose real models are
//! still being written.

/// Defines types that hold their input as raw JSON (`FromNode` + transparent `Serialize`).
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
