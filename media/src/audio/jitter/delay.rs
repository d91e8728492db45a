//! Target-delay estimation: each packet's delay relative to the fastest packet of the last
//! two seconds goes into a histogram that forgets old packets geometrically; a quantile of it
//! is the delay the buffer must hold to play that share of packets on time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Width of one histogram bucket in milliseconds.
const BUCKET_MS: f64 = 10.0;
/// How far back the fastest packet is looked for; short enough that clock drift between
/// sender and receiver (1000 ppm = 2 ms here) does not bias the relative delays.
const WINDOW: Duration = Duration::from_secs(2);
/// Bound on the window's bookkeeping whatever the packet rate.
const WINDOW_MAX_ENTRIES: usize = 1024;
/// Packet duration that `forget_factor` is specified for; shorter packets forget less each.
const REFERENCE_PACKET_MS: f64 = 20.0;
/// Packets arriving within this time of the previous one arrived as one burst.
const BURST: Duration = Duration::from_millis(2);

/// Histogram-based estimate of the delay that covers a quantile of packet arrivals.
#[derive(Debug, Clone)]
pub(crate) struct DelayEstimator {
    /// RTP clock rate, to turn timestamps into time.
    rate: f64,
    /// Probability mass per bucket; sums to 1 once a packet has been seen.
    buckets: Vec<f64>,
    /// Share of the histogram kept per 20 ms of packets (like NetEq's 0.983).
    forget_factor: f64,
    /// Quantile of relative delay to cover, e.g. 0.95.
    quantile: f64,
    /// Packets seen since the last reset; early packets weigh more so that the first
    /// estimate comes quickly.
    packets: u64,
    /// First packet of the stream: (arrival, timestamp), the origin of raw delays.
    origin: Option<(Instant, i64)>,
    /// Increasing raw delays (ms) with arrival times: the front is the window's minimum.
    window: VecDeque<(Instant, f64)>,
    /// Current quantile in milliseconds.
    quantile_ms: f64,
    /// The current arrival burst: when its latest packet arrived and the bucket its
    /// histogram entry is in (moved up if a later member was delayed more).
    burst: Option<(Instant, usize)>,
    /// Weight the latest entry was added with.
    last_weight: f64,
}

impl DelayEstimator {
    pub(crate) fn new(rate: u32, max_delay_ms: u32, forget_factor: f64, quantile: f64) -> Self {
        let n = (f64::from(max_delay_ms) / BUCKET_MS).ceil() as usize + 1;
        Self {
            rate: f64::from(rate),
            buckets: vec![0.0; n],
            forget_factor,
            quantile,
            packets: 0,
            origin: None,
            window: VecDeque::with_capacity(64),
            quantile_ms: 0.0,
            burst: None,
            last_weight: 0.0,
        }
    }

    /// Accounts one packet (in any order: a reordered packet is simply late for its
    /// timestamp, which is what the buffer must absorb). Returns its relative delay in ms.
    pub(crate) fn update(&mut self, arrival: Instant, ts: i64, packet_ms: f64) -> f64 {
        let (t0, ts0) = *self.origin.get_or_insert((arrival, ts));
        let elapsed_ms = arrival.saturating_duration_since(t0).as_secs_f64() * 1000.0;
        let raw = elapsed_ms - (ts - ts0) as f64 * 1000.0 / self.rate;

        while let Some(&(t, _)) = self.window.front() {
            if arrival.saturating_duration_since(t) > WINDOW
                || self.window.len() >= WINDOW_MAX_ENTRIES
            {
                self.window.pop_front();
            } else {
                break;
            }
        }
        while self.window.back().is_some_and(|&(_, d)| d >= raw) {
            self.window.pop_back();
        }
        self.window.push_back((arrival, raw));
        let fastest = self.window.front().map_or(raw, |&(_, d)| d);
        let relative = (raw - fastest).max(0.0);
        let last = self.buckets.len() - 1;
        let idx = ((relative / BUCKET_MS).round() as usize).min(last);
        // A burst (typically the queue a stall released) is one event: it counts once, at
        // its largest delay. Otherwise a single stall would fill the tail of the histogram
        // and raise the target long after the stall, when it no longer helps.
        match self.burst {
            Some((t, b)) if arrival.saturating_duration_since(t) <= BURST => {
                if idx > b {
                    let w = self.buckets[b];
                    let moved = w.min(self.last_weight);
                    self.buckets[b] -= moved;
                    self.buckets[idx] += moved;
                    self.burst = Some((arrival, idx));
                    self.update_quantile();
                } else {
                    self.burst = Some((arrival, b));
                }
            }
            _ => {
                self.add(idx, packet_ms);
                self.burst = Some((arrival, idx));
            }
        }
        relative
    }

    fn add(&mut self, idx: usize, packet_ms: f64) {
        self.packets += 1;
        let per_packet = self
            .forget_factor
            .powf(packet_ms.max(1.0) / REFERENCE_PACKET_MS);
        // Until enough packets are in, average them evenly (weight 1/n).
        let forget = per_packet.min(1.0 - 1.0 / self.packets as f64);
        for b in &mut self.buckets {
            *b *= forget;
        }
        self.buckets[idx] += 1.0 - forget;
        self.last_weight = 1.0 - forget;
        self.update_quantile();
    }

    fn update_quantile(&mut self) {
        let last = self.buckets.len() - 1;
        let mut cum = 0.0;
        let mut q = last;
        for (i, b) in self.buckets.iter().enumerate() {
            cum += b;
            if cum >= self.quantile {
                q = i;
                break;
            }
        }
        self.quantile_ms = q as f64 * BUCKET_MS;
    }

    /// Relative delay (ms) that the chosen quantile of packets stays within.
    pub(crate) fn quantile_ms(&self) -> f64 {
        self.quantile_ms
    }

    /// Starts measuring afresh for a new stream, keeping what was learnt about the path.
    pub(crate) fn restart_stream(&mut self) {
        self.origin = None;
        self.window.clear();
        self.burst = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(e: &mut DelayEstimator, t0: Instant, n: u64, jitter_ms: impl Fn(u64) -> u64) {
        for i in 0..n {
            let arrival = t0 + Duration::from_millis(i * 20 + jitter_ms(i));
            e.update(arrival, (i * 960) as i64, 20.0);
        }
    }

    #[test]
    fn constant_delay_gives_zero_quantile() {
        let mut e = DelayEstimator::new(48_000, 1000, 0.983, 0.95);
        feed(&mut e, Instant::now(), 200, |_| 0);
        assert_eq!(e.quantile_ms(), 0.0);
    }

    #[test]
    fn a_burst_released_by_a_stall_counts_once() {
        let mut e = DelayEstimator::new(48_000, 1000, 0.983, 0.95);
        let t0 = Instant::now();
        feed(&mut e, t0, 100, |_| 0);
        // Packets 100..115 are held by a 300 ms stall and arrive together.
        for i in 100..115u64 {
            let arrival = t0 + Duration::from_millis(115 * 20 + (i - 100) / 4);
            e.update(arrival, (i * 960) as i64, 20.0);
        }
        assert_eq!(e.quantile_ms(), 0.0, "one late event is below the 5% tail");
        // The same delays spread over time are fifteen late packets: the tail moves.
        let mut spread = DelayEstimator::new(48_000, 1000, 0.983, 0.95);
        feed(&mut spread, t0, 100, |_| 0);
        for i in 100..115u64 {
            spread.update(
                t0 + Duration::from_millis(i * 20 + 150),
                (i * 960) as i64,
                20.0,
            );
        }
        assert!(spread.quantile_ms() >= 150.0, "{}", spread.quantile_ms());
    }

    #[test]
    fn quantile_covers_periodic_late_packets_and_decays_after() {
        let mut e = DelayEstimator::new(48_000, 1000, 0.983, 0.95);
        let t0 = Instant::now();
        // Every fifth packet is 60 ms late: 20% of packets, above the 5% tail.
        feed(&mut e, t0, 500, |i| if i % 5 == 0 { 60 } else { 0 });
        assert_eq!(e.quantile_ms(), 60.0);
        // Then the path is clean: the estimate falls back within a few seconds.
        let t1 = t0 + Duration::from_secs(10);
        let mut steps = 0;
        for i in 500..1000u64 {
            e.update(
                t1 + Duration::from_millis((i - 500) * 20),
                (i * 960) as i64,
                20.0,
            );
            steps += 1;
            if e.quantile_ms() == 0.0 {
                break;
            }
        }
        assert_eq!(e.quantile_ms(), 0.0);
        assert!(steps > 20 && steps < 250, "came down after {steps} packets");
    }
}
