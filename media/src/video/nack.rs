//! The list of missing sequence numbers to request again by NACK (RFC 4585 §6.2.1),
//! with retry pacing, a retry limit, an age limit and a bounded size.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// NACK limits and pacing.
#[derive(Debug, Clone)]
pub struct NackConfig {
    /// Send NACKs at all (off when the sender does not retransmit).
    pub enabled: bool,
    /// Most sequence numbers tracked; the oldest are given up beyond it.
    pub max_entries: usize,
    /// Wait this long after a gap appears before the first NACK, so that packets that
    /// are merely reordered are not requested.
    pub reorder_delay: Duration,
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
}

/// Missing packets by unwrapped sequence number.
#[derive(Debug, Clone, Default)]
pub(crate) struct NackList {
    config: NackConfig,
    entries: BTreeMap<u64, Entry>,
}

impl NackList {
    pub(crate) fn new(config: NackConfig) -> Self {
        Self {
            config,
            entries: BTreeMap::new(),
        }
    }

    pub(crate) fn set_retry_interval(&mut self, interval: Duration) {
        self.config.retry_interval = interval;
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
        let next_send = now + self.config.reorder_delay;
        for seq in start..missing.end {
            self.entries.insert(
                seq,
                Entry {
                    missing_since: now,
                    next_send,
                    sent: 0,
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

    /// A packet arrived (late or retransmitted): stop asking for it.
    pub(crate) fn remove(&mut self, seq: u64) -> bool {
        self.entries.remove(&seq).is_some()
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
        assert!(list.remove(11));
        assert_eq!(list.poll(t0 + ms(105), &mut out, |s| given_up.push(s)), 1);
        assert_eq!(list.poll(t0 + ms(205), &mut out, |s| given_up.push(s)), 1);
        // Three NACKs sent: the fourth deadline gives up.
        assert_eq!(list.poll(t0 + ms(305), &mut out, |s| given_up.push(s)), 0);
        assert_eq!(out, [10, 11, 10, 10]);
        assert_eq!(given_up, [10]);
        assert_eq!(list.len(), 0);
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
