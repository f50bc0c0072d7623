//! Request stats per service over the autoscaling windows (dstack's gateway keeps the same
//! for its `PerWindowStats`): requests, the time-weighted number of requests in progress and
//! the request durations, in one bucket per second for the last [`HISTORY_SECS`] seconds.
//!
//! A request is counted when it arrives ([`LoadTracker::begin`]) and ends when its
//! [`RequestGuard`] is dropped (the caller drops it when the response body has been sent or
//! the client went away); its duration goes into a logarithmic histogram (quarter powers of
//! two from 1 ms), from which [`WindowLoad::p95_latency`] is read, about 19 % wide.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Response;
use hyper::body::{Frame, SizeHint};

/// How far back the stats go (the longest scaling window).
pub const HISTORY_SECS: u64 = 300;

/// Histogram buckets: bucket `i` holds durations below `2^(i/4)` ms; the last holds the rest.
const N_LATENCY_BUCKETS: usize = 80;

/// One second of one service.
#[derive(Clone)]
struct Bucket {
    /// Seconds since the tracker started; buckets of other seconds are stale.
    second: u64,
    requests: u64,
    /// Sum over the second of the requests in progress, in request-milliseconds.
    in_flight_ms: f64,
    latencies: [u32; N_LATENCY_BUCKETS],
    /// Sum of the durations of the requests that ended in this second, in milliseconds.
    latency_ms_total: f64,
}

impl Bucket {
    fn empty(second: u64) -> Bucket {
        Bucket {
            second,
            requests: 0,
            in_flight_ms: 0.0,
            latencies: [0; N_LATENCY_BUCKETS],
            latency_ms_total: 0.0,
        }
    }
}

struct ServiceLoad {
    /// The service's key, shared with its [`RequestGuard`]s (no copy per request).
    key: Arc<str>,
    buckets: Vec<Bucket>,
    in_flight: i64,
    /// Until when `in_flight` has been added to the buckets.
    accounted_to: Duration,
}

impl ServiceLoad {
    fn new(key: Arc<str>, at: Duration) -> ServiceLoad {
        ServiceLoad {
            key,
            buckets: vec![Bucket::empty(u64::MAX); HISTORY_SECS as usize],
            in_flight: 0,
            accounted_to: at,
        }
    }

    fn bucket(&mut self, second: u64) -> &mut Bucket {
        let b = &mut self.buckets[(second % HISTORY_SECS) as usize];
        if b.second != second {
            *b = Bucket::empty(second);
        }
        b
    }

    /// Adds the requests in progress from `accounted_to` up to `at`, second by second.
    fn account(&mut self, at: Duration) {
        let history = Duration::from_secs(HISTORY_SECS);
        if at > self.accounted_to + history {
            self.accounted_to = at - history;
        }
        while self.accounted_to < at {
            let second = self.accounted_to.as_secs();
            let until = Duration::from_secs(second + 1).min(at);
            let ms = (until - self.accounted_to).as_secs_f64() * 1000.0 * self.in_flight as f64;
            self.bucket(second).in_flight_ms += ms;
            self.accounted_to = until;
        }
    }
}

/// A service's load over one window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowLoad {
    pub requests: u64,
    /// The average number of requests in progress over the window.
    pub avg_in_flight: f64,
    /// The 95th percentile of the durations of the requests that ended in the window, in
    /// seconds (a histogram bucket's upper bound).
    pub p95_latency: Option<f64>,
    /// The mean duration of the requests that ended in the window, in seconds (the
    /// gateway's `request_time`).
    pub mean_latency: Option<f64>,
}

/// Stats of every service the proxy has seen, by a key the caller chooses (the run id).
pub struct LoadTracker {
    started: Instant,
    services: Mutex<crate::FastMap<Arc<str>, ServiceLoad>>,
}

impl Default for LoadTracker {
    fn default() -> Self {
        LoadTracker { started: Instant::now(), services: Mutex::new(crate::FastMap::default()) }
    }
}

/// One request in progress; dropping it ends the request.
pub struct RequestGuard {
    tracker: Arc<LoadTracker>,
    service: Arc<str>,
    began: Duration,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let now = self.tracker.started.elapsed();
        self.tracker.end_at(&self.service, self.began, now);
    }
}

impl LoadTracker {
    /// A request to `service` arrives now.
    pub fn begin(self: &Arc<Self>, service: &str) -> RequestGuard {
        let now = self.started.elapsed();
        let service = self.begin_at(service, now);
        RequestGuard { tracker: self.clone(), service, began: now }
    }

    /// The load of `service` over each of `windows` (seconds), up to now.
    pub fn windows(&self, service: &str, windows: &[u64]) -> Vec<WindowLoad> {
        self.windows_at(service, windows, self.started.elapsed())
    }

    /// The requests in progress to `service` now.
    pub fn in_flight(&self, service: &str) -> i64 {
        lock(&self.services).get(service).map_or(0, |s| s.in_flight)
    }

    /// Forgets the services not in `live`.
    pub fn retain(&self, live: &[String]) {
        lock(&self.services).retain(|k, _| live.iter().any(|l| **l == **k));
    }

    /// Counts a request to `service` arriving at `at`; the service's shared key.
    fn begin_at(&self, service: &str, at: Duration) -> Arc<str> {
        let count = |load: &mut ServiceLoad| {
            load.account(at);
            load.in_flight += 1;
            load.bucket(at.as_secs()).requests += 1;
            load.key.clone()
        };
        let mut services = lock(&self.services);
        // Looked up by `&str` first: a known service costs no allocation.
        if let Some(load) = services.get_mut(service) {
            return count(load);
        }
        let key: Arc<str> = Arc::from(service);
        count(services.entry(key.clone()).or_insert_with(|| ServiceLoad::new(key, at)))
    }

    fn end_at(&self, service: &str, began: Duration, at: Duration) {
        let mut services = lock(&self.services);
        let Some(load) = services.get_mut(service) else { return };
        load.account(at);
        load.in_flight -= 1;
        let ms = at.saturating_sub(began).as_secs_f64() * 1000.0;
        let idx = if ms <= 1.0 { 0 } else { ((ms.log2() * 4.0).ceil() as usize).min(N_LATENCY_BUCKETS - 1) };
        let bucket = load.bucket(at.as_secs());
        bucket.latencies[idx] += 1;
        bucket.latency_ms_total += ms;
    }

    fn windows_at(&self, service: &str, windows: &[u64], at: Duration) -> Vec<WindowLoad> {
        let mut services = lock(&self.services);
        let Some(load) = services.get_mut(service) else { return vec![WindowLoad::default(); windows.len()] };
        load.account(at);
        let now = at.as_secs();
        windows
            .iter()
            .map(|&w| {
                let w = w.clamp(1, HISTORY_SECS);
                let first = (now + 1).saturating_sub(w);
                let mut out = WindowLoad::default();
                let mut hist = [0u64; N_LATENCY_BUCKETS];
                let mut in_flight_ms = 0.0;
                let mut latency_ms_total = 0.0;
                for b in load
                    .buckets
                    .iter()
                    .filter(|b| b.second != u64::MAX && b.second >= first && b.second <= now)
                {
                    out.requests += b.requests;
                    in_flight_ms += b.in_flight_ms;
                    latency_ms_total += b.latency_ms_total;
                    for (h, n) in hist.iter_mut().zip(b.latencies) {
                        *h += u64::from(n);
                    }
                }
                out.avg_in_flight = in_flight_ms / 1000.0 / w as f64;
                out.p95_latency = p95(&hist);
                let ended: u64 = hist.iter().sum();
                out.mean_latency = (ended > 0).then(|| latency_ms_total / 1000.0 / ended as f64);
                out
            })
            .collect()
    }
}

/// The upper bound, in seconds, of the bucket holding the 95th percentile.
fn p95(hist: &[u64; N_LATENCY_BUCKETS]) -> Option<f64> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (total as f64 * 0.95).ceil() as u64;
    let mut seen = 0;
    for (i, n) in hist.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(2f64.powf(i as f64 / 4.0) / 1000.0);
        }
    }
    None
}

/// `resp` whose body ends `guard`'s request when it is dropped (sent to its end, or the
/// client went away).
pub fn guard_response(resp: Response<Body>, guard: RequestGuard) -> Response<Body> {
    resp.map(|inner| Body::new(GuardedBody { inner, _guard: guard }))
}

struct GuardedBody {
    inner: Body,
    _guard: RequestGuard,
}

impl hyper::body::Body for GuardedBody {
    type Data = hyper::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn requests_are_counted_per_window() {
        let t = LoadTracker::default();
        for i in 0..100 {
            t.begin_at("a", s(f64::from(i) * 3.0));
            t.end_at("a", s(f64::from(i) * 3.0), s(f64::from(i) * 3.0 + 0.01));
        }
        // Requests at 0, 3, …, 297 s; at 299.5 s the last 30 s hold 10 of them.
        let w = t.windows_at("a", &[30, 60, 300], s(299.5));
        assert_eq!(w.iter().map(|w| w.requests).collect::<Vec<_>>(), [10, 20, 100]);
        // Older seconds fall out of the windows, then out of the history.
        let w = t.windows_at("a", &[30, 300], s(400.0));
        assert_eq!((w[0].requests, w[1].requests), (0, 66));
        assert_eq!(t.windows_at("a", &[300], s(1000.0))[0].requests, 0);
        assert_eq!(t.windows_at("b", &[60], s(1.0))[0], WindowLoad::default());
    }

    #[test]
    fn in_flight_is_averaged_over_time() {
        let t = LoadTracker::default();
        // Two requests in progress for the whole last 30 s, a third for 15 s of it.
        t.begin_at("a", s(100.0));
        t.begin_at("a", s(100.0));
        t.begin_at("a", s(145.0));
        t.end_at("a", s(145.0), s(160.0));
        let w = t.windows_at("a", &[30, 60], s(160.0));
        // The current second is part of the window: 30 s end at 160.0, as does the data.
        assert!((w[0].avg_in_flight - (2.0 * 30.0 + 15.0) / 30.0).abs() < 0.1, "{w:?}");
        assert!((w[1].avg_in_flight - (2.0 * 60.0 + 15.0) / 60.0).abs() < 0.1, "{w:?}");
        assert_eq!(t.in_flight("a"), 2);
    }

    #[test]
    fn p95_latency_comes_from_the_histogram() {
        let t = LoadTracker::default();
        for i in 0..100 {
            let latency = if i < 90 { 0.010 } else { 2.0 };
            t.begin_at("a", s(10.0));
            t.end_at("a", s(10.0), s(10.0 + latency));
        }
        let w = t.windows_at("a", &[60], s(13.0));
        let p95 = w[0].p95_latency.expect("requests ended");
        assert!((2.0..2.4).contains(&p95), "{p95}");
        let mean = w[0].mean_latency.expect("requests ended");
        assert!((mean - (90.0 * 0.010 + 10.0 * 2.0) / 100.0).abs() < 1e-6, "{mean}");
        assert_eq!(t.windows_at("b", &[60], s(13.0))[0].p95_latency, None);
    }

    #[test]
    fn a_guard_ends_its_request() {
        let t = Arc::new(LoadTracker::default());
        let g = t.begin("svc");
        assert_eq!(t.in_flight("svc"), 1);
        drop(g);
        assert_eq!(t.in_flight("svc"), 0);
        assert_eq!(t.windows("svc", &[60])[0].requests, 1);
    }
}
