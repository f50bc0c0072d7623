//! Rate limits as nginx's `limit_req … nodelay` applies them (dstack writes one
//! `limit_req_zone` per `rate_limits` entry): per key, a leaky bucket that drains at the rate
//! (`round(rps * 60)` requests a minute, nginx's unit) and holds `burst` requests beyond the
//! current one; a request that would overflow it is refused (429) and not counted.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Keys kept before idle ones are dropped.
const MAX_KEYS: usize = 65_536;

pub(crate) struct Limiter {
    /// Requests per second, after nginx's rounding to requests per minute.
    rate: f64,
    burst: f64,
    keys: Mutex<HashMap<Vec<u8>, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    /// Requests in the bucket beyond the one being served.
    excess: f64,
    last: Instant,
}

impl Limiter {
    /// `rps` must give at least one request a minute (nginx refuses a zero rate).
    pub(crate) fn new(rps: f64, burst: u64) -> Limiter {
        let per_minute = (rps * 60.0).round().max(1.0);
        Limiter { rate: per_minute / 60.0, burst: burst as f64, keys: Mutex::new(HashMap::new()) }
    }

    /// Whether a request with `key` may pass now.
    pub(crate) fn allow(&self, key: &[u8]) -> bool {
        self.allow_at(key, Instant::now())
    }

    fn allow_at(&self, key: &[u8], now: Instant) -> bool {
        let mut keys = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let excess = match keys.get(key) {
            Some(b) => {
                (b.excess - self.rate * now.saturating_duration_since(b.last).as_secs_f64() + 1.0).max(0.0)
            }
            None => 0.0,
        };
        if excess > self.burst + 1e-9 {
            return false;
        }
        if keys.len() >= MAX_KEYS && !keys.contains_key(key) {
            let rate = self.rate;
            keys.retain(|_, b| b.excess - rate * now.saturating_duration_since(b.last).as_secs_f64() > 0.0);
        }
        keys.insert(key.to_vec(), Bucket { excess, last: now });
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_the_rate() {
        let l = Limiter::new(1.0, 2);
        let t0 = Instant::now();
        let passed: Vec<bool> = (0..4).map(|_| l.allow_at(b"a", t0)).collect();
        assert_eq!(passed, [true, true, true, false]);
        assert!(l.allow_at(b"b", t0), "keys are separate");
        assert!(!l.allow_at(b"a", t0 + Duration::from_millis(500)));
        assert!(l.allow_at(b"a", t0 + Duration::from_millis(1001)));
        assert!(!l.allow_at(b"a", t0 + Duration::from_millis(1002)));
    }

    #[test]
    fn no_burst_allows_one_per_period() {
        let l = Limiter::new(2.0, 0);
        let t0 = Instant::now();
        assert!(l.allow_at(b"k", t0));
        assert!(!l.allow_at(b"k", t0 + Duration::from_millis(100)));
        assert!(l.allow_at(b"k", t0 + Duration::from_millis(600)));
    }
}
