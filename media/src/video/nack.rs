//! The list of missing sequence numbers to request again by NACK (RFC 4585 §6.2.1),
//! with retry pacing, a retry limit, an age limit, a bounded size, and a wait before the
//! first NACK that adapts to the reordering the network shows.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// NACK limits and pacing.
#[derive(Debug, Clone)]
pub struct NackConfig {
    /// Send NACKs at all (off when the sender does not retransmit).
    pub enabled: bool,
    /// Most sequence numbers tracked; the oldest are given up beyond it.
    pub max_entries: usize,
    /// Least wait after a gap appears before the first NACK, so that packets that are
    /// merely reordered are not requested. The wait grows to the 95th percentile of the
    /// reordering delays seen, up to `max_reorder_delay`.
    pub reorder_delay: Duration,
    /// Longest wait before the first NACK, however much the network reorders.
    pub max_reorder_delay: Duration,
    /// Interval between NACKs for the same packet (about one round-trip time).
    pub retry_interval: Duration,
    /// NACKs per packet before giving up on it.
    pub max_retries: u32,
    /// A packet missing for longer is given up on: it would arrive too late to matter.
    pub max_age: Duration,
}

impl Default for NackConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_entries: 500,
            reorder_delay: Duration::from_millis(5),
            max_reorder_delay: Duration::from_millis(50),
            retry_interval: Duration::from_millis(100),
            max_retries: 10,
            max_age: Duration::from_secs(1),
        }
    }
}

/// One missing packet.
#[derive(Debug, Clone)]
struct Entry {
    /// When the gap was noticed.
    missing_since: Instant,
    /// When to (re)send the NACK.
    next_send: Instant,
    /// NACKs sent so far.
    sent: u32,
    /// When the last NACK was sent.
    last_sent: Option<Instant>,
}

/// Width of one bucket of the reordering histogram.
const BUCKET: Duration = Duration::from_millis(2);
/// Buckets: delays up to 128 ms are told apart, longer ones share the last bucket.
const BUCKETS: usize = 64;
/// Samples after which the histogram halves, so that it follows the network.
const HALF_LIFE_SAMPLES: u32 = 256;
/// Samples needed before the histogram is trusted.
const MIN_SAMPLES: u32 = 10;

/// Histogram of how long after a gap appeared its packet arrived anyway (reordering).
#[derive(Debug, Clone)]
struct ReorderHistogram {
    counts: [u32; BUCKETS],
    total: u32,
}

impl Default for ReorderHistogram {
    fn default() -> Self {
        Self {
            counts: [0; BUCKETS],
            total: 0,
        }
    }
}

impl ReorderHistogram {
    fn add(&mut self, delay: Duration) {
        let bucket = ((delay.as_micros() / BUCKET.as_micros()) as usize).min(BUCKETS - 1);
        self.counts[bucket] += 1;
        self.total += 1;
        if self.total >= HALF_LIFE_SAMPLES {
            self.counts.iter_mut().for_each(|c| *c /= 2);
            self.total = self.counts.iter().sum();
        }
    }

    /// Upper edge of the bucket holding the 95th percentile.
    fn p95(&self) -> Option<Duration> {
        if self.total < MIN_SAMPLES {
            return None;
        }
        let target = (u64::from(self.total) * 95).div_ceil(100);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= target {
                return Some(BUCKET * (i as u32 + 1));
            }
        }
        None
    }
}

/// Missing packets by unwrapped sequence number.
#[derive(Debug, Clone, Default)]
pub(crate) struct NackList {
    config: NackConfig,
    entries: BTreeMap<u64, Entry>,
    /// Reordering seen, for the wait before the first NACK.
    reordering: ReorderHistogram,
}

impl NackList {
    pub(crate) fn new(config: NackConfig) -> Self {
        Self {
            config,
            entries: BTreeMap::new(),
            reordering: ReorderHistogram::default(),
        }
    }

    pub(crate) fn set_retry_interval(&mut self, interval: Duration) {
        self.config.retry_interval = interval;
    }

    /// Current wait between noticing a gap and the first NACK for it.
    pub(crate) fn reorder_delay(&self) -> Duration {
        let measured = self.reordering.p95().unwrap_or_default();
        let max = self.config.max_reorder_delay.max(self.config.reorder_delay);
        measured.clamp(self.config.reorder_delay, max)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Records the sequence numbers in `missing` as lost. Returns how many had to be
    /// given up at once because the list is full (oldest first).
    pub(crate) fn add_missing(&mut self, missing: std::ops::Range<u64>, now: Instant) -> u64 {
        if !self.config.enabled || missing.is_empty() {
            return 0;
        }
        let count = missing.end - missing.start;
        let max = self.config.max_entries as u64;
        // A gap larger than the list is beyond repair in its older part.
        let start = missing.start.max(missing.end.saturating_sub(max));
        let mut given_up = start - missing.start;
        let next_send = now + self.reorder_delay();
        for seq in start..missing.end {
            self.entries.insert(
                seq,
                Entry {
                    missing_since: now,
                    next_send,
                    sent: 0,
                    last_sent: None,
                },
            );
        }
        while self.entries.len() as u64 > max {
            self.entries.pop_first();
            given_up += 1;
        }
        debug_assert!(given_up <= count + max);
        given_up
    }

    /// A packet arrived (late or retransmitted): stop asking for it. It was reordered,
    /// not retransmitted, when no NACK was out for it, or the last NACK went out less
    /// than half a round trip ago (too soon for its answer); then its delay is a
    /// reordering sample.
    pub(crate) fn remove(&mut self, seq: u64, now: Instant) -> bool {
        let Some(entry) = self.entries.remove(&seq) else {
            return false;
        };
        let half_round_trip = self.config.retry_interval / 2;
        let reordered = entry
            .last_sent
            .is_none_or(|sent| now.saturating_duration_since(sent) < half_round_trip);
        if reordered {
            self.reordering
                .add(now.saturating_duration_since(entry.missing_since));
        }
        true
    }

    /// Forgets packets below `floor`: nothing needs them any more.
    pub(crate) fn remove_below(&mut self, floor: u64) {
        while self
            .entries
            .first_key_value()
            .is_some_and(|(&seq, _)| seq < floor)
        {
            self.entries.pop_first();
        }
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    /// Appends to `out` the packets due for a NACK now, and calls `gave_up` for each
    /// packet dropped for age or retries. Returns how many were appended.
    pub(crate) fn poll(
        &mut self,
        now: Instant,
        out: &mut Vec<u64>,
        mut gave_up: impl FnMut(u64),
    ) -> usize {
        let before = out.len();
        let config = &self.config;
        self.entries.retain(|&seq, e| {
            if e.next_send > now {
                return true;
            }
            if e.sent >= config.max_retries
                || now.saturating_duration_since(e.missing_since) > config.max_age
            {
                gave_up(seq);
                return false;
            }
            e.sent += 1;
            e.last_sent = Some(now);
            e.next_send = now + config.retry_interval;
            out.push(seq);
            true
        });
        out.len() - before
    }

    /// When the next NACK or give-up is due.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.entries.values().map(|e| e.next_send).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn retries_are_paced_and_limited() {
        let t0 = Instant::now();
        let config = NackConfig {
            max_retries: 3,
            max_age: ms(10_000),
            ..Default::default()
        };
        let mut list = NackList::new(config);
        list.add_missing(10..12, t0);
        let mut out = Vec::new();
        let mut given_up = Vec::new();
        // Nothing before the reorder delay.
        assert_eq!(list.poll(t0, &mut out, |s| given_up.push(s)), 0);
        assert_eq!(list.next_deadline(), Some(t0 + ms(5)));
        assert_eq!(list.poll(t0 + ms(5), &mut out, |s| given_up.push(s)), 2);
        assert_eq!(out, [10, 11]);
        // Not again before the retry interval.
        assert_eq!(list.poll(t0 + ms(50), &mut out, |s| given_up.push(s)), 0);
        assert!(list.remove(11, t0 + ms(50)));
        assert_eq!(list.poll(t0 + ms(105), &mut out, |s| given_up.push(s)), 1);
        assert_eq!(list.poll(t0 + ms(205), &mut out, |s| given_up.push(s)), 1);
        // Three NACKs sent: the fourth deadline gives up.
        assert_eq!(list.poll(t0 + ms(305), &mut out, |s| given_up.push(s)), 0);
        assert_eq!(out, [10, 11, 10, 10]);
        assert_eq!(given_up, [10]);
        assert_eq!(list.len(), 0);
    }

    #[test]
    fn the_first_nack_waits_for_the_reordering_seen() {
        let t0 = Instant::now();
        let mut list = NackList::new(NackConfig::default());
        assert_eq!(list.reorder_delay(), ms(5));
        // Packets keep turning up 20 ms after their gap: reordering, not loss. Those
        // NACKed 15 ms before count too: a retransmission needs a round trip.
        for i in 0..20 {
            let t = t0 + ms(100 * i);
            list.add_missing(i..i + 1, t);
            let mut out = Vec::new();
            list.poll(t + ms(5), &mut out, |_| {});
            assert!(list.remove(i, t + ms(20)));
        }
        assert_eq!(list.reorder_delay(), ms(22));
        list.add_missing(100..101, t0);
        assert_eq!(list.next_deadline(), Some(t0 + ms(22)));
        // Packets back a round trip after their NACK were retransmitted: no sample.
        let mut out = Vec::new();
        let mut retransmitted = NackList::new(NackConfig::default());
        for i in 0..20 {
            retransmitted.add_missing(i..i + 1, t0);
            retransmitted.poll(t0 + ms(5), &mut out, |_| {});
            assert!(retransmitted.remove(i, t0 + ms(105)));
        }
        assert_eq!(retransmitted.reorder_delay(), ms(5));
        // However much reordering, the wait is capped.
        let config = NackConfig {
            max_reorder_delay: ms(10),
            ..NackConfig::default()
        };
        let mut capped = NackList::new(config);
        for i in 0..20 {
            capped.add_missing(i..i + 1, t0);
            assert!(capped.remove(i, t0 + ms(40)));
        }
        assert_eq!(capped.reorder_delay(), ms(10));
    }

    #[test]
    fn old_entries_are_given_up() {
        let t0 = Instant::now();
        let mut list = NackList::new(NackConfig {
            max_age: ms(150),
            ..Default::default()
        });
        list.add_missing(1..2, t0);
        let mut out = Vec::new();
        let mut given_up = Vec::new();
        list.poll(t0 + ms(5), &mut out, |s| given_up.push(s));
        list.poll(t0 + ms(105), &mut out, |s| given_up.push(s));
        list.poll(t0 + ms(205), &mut out, |s| given_up.push(s));
        assert_eq!((out.len(), given_up.as_slice()), (2, &[1u64][..]));
    }

    #[test]
    fn size_is_bounded() {
        let t0 = Instant::now();
        let mut list = NackList::new(NackConfig {
            max_entries: 10,
            ..Default::default()
        });
        assert_eq!(list.add_missing(0..8, t0), 0);
        assert_eq!(list.add_missing(100..104, t0), 2);
        assert_eq!(list.len(), 10);
        assert_eq!(list.add_missing(200..1200, t0), 1000);
        list.remove_below(1195);
        assert_eq!(list.len(), 5);
        let disabled = &mut NackList::new(NackConfig {
            enabled: false,
            ..Default::default()
        });
        assert_eq!(disabled.add_missing(0..5, t0), 0);
        assert_eq!(disabled.len(), 0);
    }
}
