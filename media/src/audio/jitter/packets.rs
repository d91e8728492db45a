//! Received packets awaiting playout: RTP sequence/timestamp unwrapping, ordering by
//! extended sequence number, duplicate detection, and payload storage reused across packets.

use std::collections::VecDeque;
use std::time::Instant;

/// Extends 16-bit sequence numbers and 32-bit timestamps to 64 bits across wraparound
/// (RFC 3550 §A.1), relative to the highest value seen so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct Unwrapper {
    /// Highest extended sequence number seen.
    seq: Option<i64>,
    /// Highest extended timestamp seen.
    ts: Option<i64>,
}

impl Unwrapper {
    /// Extends `seq` and `ts` (a difference of up to ±2^15 and ±2^31 from the highest seen
    /// is taken as the shortest way round) without accepting them as the new reference:
    /// a packet refused as a stray must not move it.
    pub(crate) fn extend(&self, seq: u16, ts: u32) -> (i64, i64) {
        let seq = match self.seq {
            None => i64::from(seq),
            Some(last) => last + i64::from(seq.wrapping_sub(last as u16) as i16),
        };
        let ts = match self.ts {
            None => i64::from(ts),
            Some(last) => last + i64::from(ts.wrapping_sub(last as u32) as i32),
        };
        (seq, ts)
    }

    /// Accepts extended values as seen, moving the reference forward.
    pub(crate) fn accept(&mut self, seq: i64, ts: i64) {
        self.seq = Some(self.seq.map_or(seq, |last| last.max(seq)));
        self.ts = Some(self.ts.map_or(ts, |last| last.max(ts)));
    }

    /// Forgets the reference so that the next packet starts a new stream.
    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }
}

/// What is known about a packet besides its payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PacketMeta {
    /// Extended RTP sequence number.
    pub seq: i64,
    /// Extended RTP timestamp of its first sample.
    pub ts: i64,
    /// Samples per channel it decodes to.
    pub samples: usize,
    /// When it was received.
    pub arrival: Instant,
    /// Its delay relative to the fastest recent packet, in ms.
    pub relative_ms: f64,
    /// Whether it carries in-band FEC for the packet before it.
    pub has_fec: bool,
}

/// One received packet.
#[derive(Debug)]
pub(crate) struct Packet {
    pub meta: PacketMeta,
    /// The encoded payload (a buffer taken from the pool).
    pub payload: Vec<u8>,
}

/// Packets sorted by extended sequence number, at most one per sequence number.
#[derive(Debug, Default)]
pub(crate) struct PacketBuffer {
    packets: VecDeque<Packet>,
    /// Payload buffers of packets already played, reused so that steady-state insertion
    /// does not allocate.
    pool: Vec<Vec<u8>>,
    /// Sum of `samples` over the packets held.
    samples: usize,
}

/// Payload buffers kept for reuse at most; more would only hold memory after a burst.
const POOL_LIMIT: usize = 64;

impl PacketBuffer {
    pub(crate) fn with_capacity(packets: usize) -> Self {
        Self {
            packets: VecDeque::with_capacity(packets + 1),
            pool: Vec::with_capacity(POOL_LIMIT),
            samples: 0,
        }
    }

    /// Whether a packet with this extended sequence number is held.
    pub(crate) fn contains(&self, seq: i64) -> bool {
        match self.packets.back() {
            Some(last) if last.meta.seq < seq => false,
            _ => self
                .packets
                .binary_search_by_key(&seq, |p| p.meta.seq)
                .is_ok(),
        }
    }

    /// Inserts in sequence order; returns false (and stores nothing) for a duplicate.
    pub(crate) fn insert(&mut self, meta: PacketMeta, payload: &[u8]) -> bool {
        let seq = meta.seq;
        // Packets arrive mostly in order, so search from the back.
        let pos = match self.packets.back() {
            Some(last) if last.meta.seq < seq => self.packets.len(),
            _ => match self.packets.binary_search_by_key(&seq, |p| p.meta.seq) {
                Ok(_) => return false,
                Err(pos) => pos,
            },
        };
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(payload);
        self.samples += meta.samples;
        self.packets.insert(pos, Packet { meta, payload: buf });
        true
    }

    pub(crate) fn front(&self) -> Option<&Packet> {
        self.packets.front()
    }

    /// Removes the oldest packet; hand it back with [`PacketBuffer::recycle`].
    pub(crate) fn pop_front(&mut self) -> Option<Packet> {
        let p = self.packets.pop_front()?;
        self.samples -= p.meta.samples;
        Some(p)
    }

    /// Returns a played packet's payload buffer to the pool.
    pub(crate) fn recycle(&mut self, packet: Packet) {
        if self.pool.len() < POOL_LIMIT {
            self.pool.push(packet.payload);
        }
    }

    /// Drops every packet; returns how many there were.
    pub(crate) fn clear(&mut self) -> usize {
        let n = self.packets.len();
        while let Some(p) = self.pop_front() {
            self.recycle(p);
        }
        n
    }

    pub(crate) fn len(&self) -> usize {
        self.packets.len()
    }

    /// Samples per channel held, counting each packet's own duration (gaps not included).
    pub(crate) fn samples(&self) -> usize {
        self.samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unwrap(u: &mut Unwrapper, seq: u16, ts: u32) -> (i64, i64) {
        let (s, t) = u.extend(seq, ts);
        u.accept(s, t);
        (s, t)
    }

    #[test]
    fn sequence_numbers_unwrap_across_zero() {
        let mut u = Unwrapper::default();
        assert_eq!(unwrap(&mut u, 65534, 0).0, 65534);
        assert_eq!(unwrap(&mut u, 65535, 0).0, 65535);
        assert_eq!(unwrap(&mut u, 0, 0).0, 65536);
        // A reordered packet from before the wrap stays before it.
        assert_eq!(unwrap(&mut u, 65533, 0).0, 65533);
        assert_eq!(unwrap(&mut u, 1, 0).0, 65537);
    }

    #[test]
    fn timestamps_unwrap_across_zero() {
        let mut u = Unwrapper::default();
        assert_eq!(
            unwrap(&mut u, 0, u32::MAX - 959).1,
            i64::from(u32::MAX) - 959
        );
        assert_eq!(unwrap(&mut u, 1, 0).1, 1 << 32);
        assert_eq!(unwrap(&mut u, 2, 960).1, (1 << 32) + 960);
    }

    #[test]
    fn a_value_not_accepted_does_not_move_the_reference() {
        let mut u = Unwrapper::default();
        unwrap(&mut u, 100, 1000);
        // Half-way round and back: only consistent if the stray was not accepted.
        assert_eq!(u.extend(100 + 32_000, 1000 + (1 << 30)).0, 32_100);
        assert_eq!(u.extend(101, 1320), (101, 1320));
    }

    proptest! {
        /// Any arrival order of a run of packets comes out sorted with duplicates refused.
        #[test]
        fn packets_come_out_in_sequence_order(
            start in any::<u16>(),
            order in proptest::collection::vec(0u16..40, 1..120),
        ) {
            let now = Instant::now();
            let mut u = Unwrapper::default();
            let mut b = PacketBuffer::with_capacity(64);
            let mut seen = std::collections::BTreeSet::new();
            let base = unwrap(&mut u, start, 0).0;
            for off in order {
                let ext = unwrap(&mut u, start.wrapping_add(off), 0).0;
                prop_assert_eq!(ext, base + i64::from(off));
                let fresh = seen.insert(off);
                prop_assert_eq!(b.contains(ext), !fresh);
                let meta = PacketMeta {
                    seq: ext, ts: ext * 960, samples: 960, arrival: now, relative_ms: 0.0, has_fec: false,
                };
                prop_assert_eq!(b.insert(meta, &[off as u8]), fresh);
            }
            prop_assert_eq!(b.len(), seen.len());
            prop_assert_eq!(b.samples(), seen.len() * 960);
            let mut out = Vec::new();
            while let Some(p) = b.pop_front() {
                out.push(p.meta.seq - base);
                b.recycle(p);
            }
            let want: Vec<i64> = seen.into_iter().map(i64::from).collect();
            prop_assert_eq!(out, want);
            prop_assert_eq!(b.samples(), 0);
        }
    }
}
