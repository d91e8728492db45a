//! Keyframe request throttling: at most one request per track toward its publisher per
//! interval, however many subscribers ask (PLI RFC 4585 §6.3.1, FIR RFC 5104 §4.3.1).

use std::time::{Duration, Instant};

/// Throttle state of one published track.
#[derive(Debug, Clone)]
pub struct KeyframeThrottle {
    /// Minimum time between two requests sent to the publisher.
    min_interval: Duration,
    /// When the last request went out.
    last_sent: Option<Instant>,
    /// Requests swallowed because one went out recently (a metric).
    suppressed: u64,
}

impl KeyframeThrottle {
    /// A throttle that lets the first request through.
    pub fn new(min_interval: Duration) -> Self {
        Self {
            min_interval,
            last_sent: None,
            suppressed: 0,
        }
    }

    /// Whether a request arriving at `now` goes to the publisher. A suppressed request
    /// is covered by the keyframe the previous one asked for.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.last_sent {
            Some(t) if now.saturating_duration_since(t) < self.min_interval => {
                self.suppressed += 1;
                false
            }
            _ => {
                self.last_sent = Some(now);
                true
            }
        }
    }

    /// Requests swallowed so far.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_request_per_interval() {
        let mut t = KeyframeThrottle::new(Duration::from_millis(500));
        let start = Instant::now();
        let mut sent = 0;
        // Ten subscribers ask every 10 ms for 2 s: 200 requests, 4 go out.
        for i in 0..200u64 {
            if t.allow(start + Duration::from_millis(i * 10)) {
                sent += 1;
            }
        }
        assert_eq!(sent, 4);
        assert_eq!(t.suppressed(), 196);
    }
}
