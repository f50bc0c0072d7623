//! Services' load as their gateways report it (`GET /api/stats/collect`, dstack's
//! `get_combined_gateway_stats`), kept in memory by run id for the runs loop's autoscaler,
//! next to what the in-server proxy measures itself. A report older than [`FRESH`] is ignored
//! (its gateway stopped answering).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dstack_agent_proto::gateway::Stat;

/// How long a gateway's report counts.
const FRESH: Duration = Duration::from_secs(30);

/// One gateway report: when it came, and the stats by window (seconds).
type Report = (Instant, BTreeMap<u64, Stat>);

#[derive(Debug, Default)]
pub struct GatewayLoad {
    by_run: Mutex<HashMap<String, Report>>,
}

impl GatewayLoad {
    /// Records a gateway's stats for run `run_id`.
    pub fn set(&self, run_id: &str, stats: BTreeMap<u64, Stat>) {
        let mut map = self.by_run.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, (at, _)| at.elapsed() < FRESH);
        map.insert(run_id.to_owned(), (Instant::now(), stats));
    }

    /// The run's requests over `window` seconds and their average concurrency (requests ×
    /// mean duration / window, Little's law); `None` without a fresh report for that window.
    pub fn window(&self, run_id: &str, window: u64) -> Option<(u64, f64)> {
        let map = self.by_run.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (at, stats) = map.get(run_id)?;
        if at.elapsed() >= FRESH {
            return None;
        }
        let stat = stats.get(&window)?;
        let in_flight =
            if window == 0 { 0.0 } else { stat.requests as f64 * stat.request_time / window as f64 };
        Some((stat.requests, in_flight))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_gives_requests_and_concurrency() {
        let load = GatewayLoad::default();
        assert_eq!(load.window("r", 30), None);
        load.set("r", BTreeMap::from([(30, Stat { requests: 60, request_time: 0.5 })]));
        assert_eq!(load.window("r", 30), Some((60, 1.0)));
        assert_eq!(load.window("r", 60), None);
    }
}
