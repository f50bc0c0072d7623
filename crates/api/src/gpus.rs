//! `/api/project/{p}/gpus/list`: offers grouped by GPU (`dstack offer --group-by`, api.md §3.14).

use dstack_model::common::BackendType;
use dstack_model::resources::GpuVendor;
use serde::{Deserialize, Serialize};

use crate::runs::{InstanceAvailability, RunSpec};

/// An inclusive range with optional ends, as `Range[int]` and `Range[float]` are on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireRange<T> {
    #[serde(default = "Option::default")]
    pub min: Option<T>,
    #[serde(default = "Option::default")]
    pub max: Option<T>,
}

/// `gpus/list`. `group_by` holds `backend`, `region` or `count` (`gpu` is implicit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListGpusRequest {
    pub run_spec: RunSpec,
    #[serde(default)]
    pub group_by: Option<Vec<String>>,
    #[serde(default)]
    pub full_offers: bool,
    #[serde(default)]
    pub unallocated_resources: bool,
}

/// One GPU model and what offers carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuGroup {
    pub name: String,
    pub memory_mib: i64,
    pub vendor: GpuVendor,
    pub availability: Vec<InstanceAvailability>,
    /// `spot` and/or `on-demand`.
    pub spot: Vec<String>,
    pub count: WireRange<i64>,
    pub price: WireRange<f64>,
    #[serde(default)]
    pub offer_price: Option<WireRange<f64>>,
    #[serde(default)]
    pub backends: Option<Vec<BackendType>>,
    #[serde(default)]
    pub backend: Option<BackendType>,
    #[serde(default)]
    pub regions: Option<Vec<String>>,
    #[serde(default)]
    pub region: Option<String>,
}

/// `gpus/list`'s answer; `cpus` is left out when null.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListGpusResponse {
    pub gpus: Vec<GpuGroup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Vec<serde_json::Value>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_answer_parses() {
        let r: ListGpusResponse = serde_json::from_str(r#"{"gpus":[]}"#).unwrap();
        assert!(r.gpus.is_empty());
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"gpus":[]}"#);
        let g: GpuGroup = serde_json::from_str(
            r#"{"name":"A100","memory_mib":81920,"vendor":"nvidia","availability":["available"],"spot":["on-demand"],
                "count":{"min":1,"max":8},"price":{"min":1.5,"max":12.0},"backend":"aws"}"#,
        )
        .unwrap();
        assert_eq!(g.count.max, Some(8));
    }
}
