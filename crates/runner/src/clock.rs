//! Event timestamps: unix milliseconds, strictly increasing.

use std::time::{SystemTime, UNIX_EPOCH};

/// Issues `max(now_ms, last + 1)`, so every state and log event has its own timestamp and a
/// `timestamp > cursor` pull never loses one.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    last: i64,
}

impl Clock {
    pub(crate) fn next(&mut self) -> i64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        self.last = now.max(self.last + 1);
        self.last
    }

    pub(crate) fn last(&self) -> i64 {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::Clock;

    #[test]
    fn strictly_increasing() {
        let mut clock = Clock::default();
        let stamps: Vec<i64> = (0..5000).map(|_| clock.next()).collect();
        assert!(stamps.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(clock.last(), stamps[4999]);
    }
}
