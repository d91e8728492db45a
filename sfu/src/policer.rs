//! Per-participant limit on what the SFU accepts from a peer: a token bucket on bytes
//! and one on datagrams, each refilled at its rate and holding one second of it. What
//! exceeds either is dropped before it is decrypted, so a peer that floods the SFU costs
//! its shard little more than the reads, and what it sends above the limit is never
//! forwarded to its room. STUN is not counted (ICE consent checks must get through, and
//! str0m answers them without decrypting anything).

use std::time::Instant;

/// Token buckets of one peer.
#[derive(Debug, Clone)]
pub(crate) struct Policer {
    /// Bits per second refilled; 0: no limit on bytes.
    bitrate: u64,
    /// Datagrams per second refilled; 0: no limit on datagrams.
    packet_rate: u64,
    /// Bits left to spend.
    bits: f64,
    /// Datagrams left to spend.
    packets: f64,
    /// When the buckets were last refilled.
    refilled: Option<Instant>,
}

impl Policer {
    /// Buckets for `bitrate` (bit/s) and `packet_rate` (datagrams/s), 0 meaning no limit;
    /// they start full.
    pub fn new(bitrate: u64, packet_rate: u64) -> Self {
        Self {
            bitrate,
            packet_rate,
            bits: bitrate as f64,
            packets: packet_rate as f64,
            refilled: None,
        }
    }

    /// Takes a datagram of `len` bytes received at `now`: true if it is within the
    /// limits (and spent from the buckets), false if it is to be dropped (nothing is
    /// spent for it).
    pub fn admit(&mut self, len: usize, now: Instant) -> bool {
        if self.bitrate == 0 && self.packet_rate == 0 {
            return true;
        }
        if let Some(then) = self.refilled {
            let elapsed = now.saturating_duration_since(then).as_secs_f64();
            // Each bucket holds at most one second of its rate.
            self.bits = (self.bits + elapsed * self.bitrate as f64).min(self.bitrate as f64);
            self.packets =
                (self.packets + elapsed * self.packet_rate as f64).min(self.packet_rate as f64);
        }
        self.refilled = Some(now);
        let bits = len as f64 * 8.0;
        let bytes_ok = self.bitrate == 0 || self.bits >= bits;
        let packets_ok = self.packet_rate == 0 || self.packets >= 1.0;
        if !(bytes_ok && packets_ok) {
            return false;
        }
        if self.bitrate > 0 {
            self.bits -= bits;
        }
        if self.packet_rate > 0 {
            self.packets -= 1.0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Datagrams of `len` bytes sent at `per_second` for `seconds`: how many got in.
    fn send(p: &mut Policer, t0: Instant, len: usize, per_second: u64, seconds: u64) -> u64 {
        let gap = Duration::from_secs(1) / per_second as u32;
        (0..per_second * seconds)
            .filter(|&i| p.admit(len, t0 + gap * i as u32))
            .count() as u64
    }

    #[test]
    fn a_flood_is_held_to_the_rates_after_a_second_of_burst() {
        let t0 = Instant::now();
        // 1 Mbit/s, 100 datagrams/s; 1000-byte datagrams: bytes limit first (125/s).
        let mut p = Policer::new(1_000_000, 1_000);
        let got = send(&mut p, t0, 1000, 10_000, 10);
        // One second's burst (125) plus ten seconds at the rate (1250).
        assert!((1370..=1376).contains(&got), "{got}");
        // Small datagrams: the packet limit binds.
        let mut p = Policer::new(100_000_000, 100);
        let got = send(&mut p, t0, 40, 10_000, 10);
        assert!((1095..=1101).contains(&got), "{got}");
    }

    #[test]
    fn traffic_under_the_limits_is_never_dropped() {
        let t0 = Instant::now();
        let mut p = Policer::new(2_000_000, 500);
        // 1.2 Mbit/s in 1200-byte datagrams at 125/s, then a keyframe burst of 200
        // datagrams at once, then steady again.
        assert_eq!(send(&mut p, t0, 1200, 125, 5), 625);
        let at = t0 + Duration::from_secs(5);
        assert!((0..200).all(|_| p.admit(1200, at)));
        let later = t0 + Duration::from_secs(7);
        assert_eq!(send(&mut p, later, 1200, 125, 5), 625);
    }

    #[test]
    fn zero_is_no_limit_and_a_drop_spends_nothing() {
        let t0 = Instant::now();
        let mut p = Policer::new(0, 0);
        assert_eq!(send(&mut p, t0, 1500, 100_000, 1), 100_000);
        // Only datagrams limited: a big datagram passes, the next waits for a token.
        let mut p = Policer::new(0, 1);
        assert!(p.admit(60_000, t0));
        assert!(!p.admit(10, t0));
        assert!(!p.admit(10, t0 + Duration::from_millis(500)));
        assert!(p.admit(10, t0 + Duration::from_millis(1000)));
        // A datagram over the byte bucket is refused without spending the packet bucket.
        let mut p = Policer::new(8_000, 10);
        assert!(!p.admit(1001, t0));
        assert!(p.admit(1000, t0));
    }
}
