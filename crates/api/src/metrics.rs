//! `GET /api/project/{p}/metrics/job/{run_name}`: a job's hardware metrics as series
//! (`core/models/metrics.py`). Samples are latest first.

use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobMetrics {
    pub metrics: Vec<Metric>,
}

/// One series: `timestamps[i]` goes with `values[i]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    #[serde(with = "timestamps")]
    pub timestamps: Vec<Timestamp>,
    /// Numbers (dstack's server sends integers for every metric it has).
    pub values: Vec<serde_json::Number>,
}

mod timestamps {
    use super::*;

    pub(super) fn serialize<S: Serializer>(ts: &[Timestamp], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(ts.iter().map(|t| crate::time::format(*t)))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Timestamp>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| crate::time::parse(t).map_err(serde::de::Error::custom))
            .collect()
    }
}
