//! The frame buffer core: a ring of packets indexed by sequence number, frame assembly,
//! the decodable chain, and the keyframe-request policy.

use super::nack::{NackConfig, NackList};
use super::stats::{FrameBufferStats, FrameTiming};
use super::{Frame, VideoPacket};
use crate::rtp::SeqUnwrapper;
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Limits and policies of a [`FrameBuffer`].
#[derive(Debug, Clone)]
pub struct FrameBufferConfig {
    /// Packets held at most (rounded up to a power of two); older ones are evicted.
    pub max_packets: usize,
    /// Complete frames held at most, waiting or ready; the oldest are dropped beyond.
    pub max_frames: usize,
    /// Largest payload accepted: with `max_packets` this bounds memory per stream.
    pub max_payload_bytes: usize,
    /// Retransmission requests.
    pub nack: NackConfig,
    /// Request keyframes (PLI) at all.
    pub keyframe_requests: bool,
    /// How long the chain may stay broken while NACK tries to repair it before a
    /// keyframe is requested (at once when NACK gives up on a needed packet).
    pub keyframe_request_delay: Duration,
    /// Least time between two keyframe requests: a keyframe takes a round trip and
    /// several packets to arrive, and each one costs the sender bitrate.
    pub keyframe_request_interval: Duration,
}

impl Default for FrameBufferConfig {
    fn default() -> Self {
        Self {
            max_packets: 2048,
            max_frames: 64,
            max_payload_bytes: 4096,
            nack: NackConfig::default(),
            keyframe_requests: true,
            keyframe_request_delay: Duration::from_millis(500),
            keyframe_request_interval: Duration::from_millis(500),
        }
    }
}

/// What happened to an inserted packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Buffered.
    Buffered,
    /// A copy of a packet already buffered.
    Duplicate,
    /// Its frame was already output or skipped, or it is older than the buffer holds.
    Late,
    /// Its payload exceeds the configured limit.
    Oversized,
}

/// One buffered packet.
#[derive(Debug, Clone)]
struct Slot {
    seq: u64,
    timestamp: u32,
    marker: bool,
    keyframe: bool,
    starts_frame: bool,
    arrival: Instant,
    payload: Bytes,
}

/// A frame whose packets are all buffered, waiting for its turn.
#[derive(Debug, Clone, Copy)]
struct CompleteFrame {
    first: u64,
    last: u64,
    keyframe: bool,
}

/// Reorders packets and outputs decodable frames in order; see the module docs.
#[derive(Debug)]
pub struct FrameBuffer {
    config: FrameBufferConfig,
    /// Packets by `seq & mask`; a slot is valid only for the sequence number it holds.
    slots: Vec<Option<Slot>>,
    mask: u64,
    seq: SeqUnwrapper,
    /// Highest sequence number buffered.
    highest: Option<u64>,
    /// Packets below this are not accepted: output, skipped or evicted.
    floor: u64,
    /// Last sequence number of the last decodable frame; `None` until a keyframe.
    chain_end: Option<u64>,
    /// Complete frames not yet decodable, by first sequence number.
    complete: VecDeque<CompleteFrame>,
    /// Decodable frames not yet polled.
    ready: VecDeque<Frame>,
    nack: NackList,
    /// Scratch for NACK polling (unwrapped sequence numbers), reused.
    nack_scratch: Vec<u64>,
    /// Since when the chain has been broken (or no keyframe has come yet).
    stalled_since: Option<Instant>,
    /// Since when NACK has given up on a packet the chain needs: only a keyframe helps.
    repair_failed: Option<Instant>,
    last_keyframe_request: Option<Instant>,
    stats: FrameBufferStats,
    /// Occupied slots.
    buffered: usize,
    timing: FrameTiming,
}

impl FrameBuffer {
    /// An empty buffer.
    pub fn new(config: FrameBufferConfig) -> Self {
        let capacity = config.max_packets.clamp(16, 1 << 16).next_power_of_two();
        Self {
            slots: vec![None; capacity],
            mask: capacity as u64 - 1,
            nack: NackList::new(config.nack.clone()),
            config,
            seq: SeqUnwrapper::new(),
            highest: None,
            floor: 0,
            chain_end: None,
            complete: VecDeque::new(),
            ready: VecDeque::new(),
            nack_scratch: Vec::new(),
            stalled_since: None,
            repair_failed: None,
            last_keyframe_request: None,
            stats: FrameBufferStats::default(),
            buffered: 0,
            timing: FrameTiming::default(),
        }
    }

    /// Adapts the NACK retry interval to the measured round-trip time.
    pub fn set_rtt(&mut self, rtt: Duration) {
        self.nack
            .set_retry_interval(rtt.max(Duration::from_millis(10)));
    }

    /// Counters and rates as of `now`.
    pub fn stats(&self, now: Instant) -> FrameBufferStats {
        FrameBufferStats {
            freeze_count: self.timing.freeze_count,
            total_freezes_duration: self.timing.total_freezes_duration,
            frames_per_second: self.timing.frames_per_second(now),
            ..self.stats.clone()
        }
    }

    /// Packets currently held.
    pub fn buffered_packets(&self) -> usize {
        self.buffered
    }

    /// Occupied slots counted the slow way, to check the counter.
    #[doc(hidden)]
    pub fn occupied_slots(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    fn capacity(&self) -> u64 {
        self.mask + 1
    }

    fn slot(&self, seq: u64) -> Option<&Slot> {
        self.slots[(seq & self.mask) as usize]
            .as_ref()
            .filter(|s| s.seq == seq)
    }

    fn take(&mut self, seq: u64) -> Option<Slot> {
        let cell = &mut self.slots[(seq & self.mask) as usize];
        if cell.as_ref().is_some_and(|s| s.seq == seq) {
            self.buffered -= 1;
            cell.take()
        } else {
            None
        }
    }

    /// Inserts one packet that arrived at `now`.
    pub fn insert(&mut self, packet: VideoPacket, now: Instant) -> InsertOutcome {
        if packet.payload.len() > self.config.max_payload_bytes {
            // Not counted as received, and not unwrapped: it must not move the window.
            return InsertOutcome::Oversized;
        }
        let seq = self.seq.unwrap(packet.seq);
        let capacity = self.capacity();
        match self.highest {
            None => {
                // Allow a little reordering before the very first packet.
                self.floor = seq.saturating_sub(capacity / 4);
                self.highest = Some(seq);
            }
            Some(highest) if seq > highest + capacity => {
                // A jump beyond the buffer (sender restart, long outage): start over.
                self.reset(seq, now);
            }
            Some(highest) if seq > highest => {
                let given_up = self.nack.add_missing(highest + 1..seq, now);
                self.on_unrecovered(given_up, now);
                self.highest = Some(seq);
            }
            Some(highest) if seq < self.floor || seq + capacity <= highest => {
                self.stats.packets_late += 1;
                self.nack.remove(seq, now);
                return InsertOutcome::Late;
            }
            Some(_) => {
                if self.slot(seq).is_some() {
                    self.stats.packets_duplicated += 1;
                    return InsertOutcome::Duplicate;
                }
                if self.nack.remove(seq, now) {
                    self.stats.packets_recovered += 1;
                }
            }
        }
        self.stats.packets_received += 1;
        let index = (seq & self.mask) as usize;
        if let Some(old) = self.slots[index].take() {
            self.buffered -= 1;
            // Only a packet a whole ring older can share the slot: evict it.
            self.evict(old, now);
        }
        self.buffered += 1;
        self.slots[index] = Some(Slot {
            seq,
            timestamp: packet.timestamp,
            marker: packet.marker,
            keyframe: packet.keyframe,
            starts_frame: packet.starts_frame,
            arrival: now,
            payload: packet.payload,
        });
        self.assemble(seq, now);
        // This packet may end the frame before the next one, revealing its start.
        if self
            .slot(seq + 1)
            .is_some_and(|s| s.timestamp != packet.timestamp)
        {
            self.assemble(seq + 1, now);
        }
        self.advance(now);
        InsertOutcome::Buffered
    }

    /// Next decodable frame, in order.
    pub fn poll_frame(&mut self) -> Option<Frame> {
        self.ready.pop_front()
    }

    /// Appends the sequence numbers to NACK now to `out`, and gives up on packets that
    /// are too old or asked for too often.
    pub fn poll_nack(&mut self, now: Instant, out: &mut Vec<u16>) {
        let mut scratch = std::mem::take(&mut self.nack_scratch);
        scratch.clear();
        let mut given_up = 0;
        let floor = self.floor;
        self.nack
            .poll(now, &mut scratch, |seq| given_up += u64::from(seq >= floor));
        self.on_unrecovered(given_up, now);
        self.stats.nack_count += scratch.len() as u64;
        out.extend(scratch.iter().map(|&s| s as u16));
        self.nack_scratch = scratch;
    }

    /// Whether to send a keyframe request (PLI) now; throttled, so call it freely.
    pub fn poll_keyframe_request(&mut self, now: Instant) -> bool {
        if !self.config.keyframe_requests || !self.keyframe_needed(now) {
            return false;
        }
        if self
            .last_keyframe_request
            .is_some_and(|t| now < t + self.config.keyframe_request_interval)
        {
            return false;
        }
        self.last_keyframe_request = Some(now);
        self.stats.pli_count += 1;
        true
    }

    /// The next instant at which `poll_nack` or `poll_keyframe_request` may have
    /// something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let nack = self.nack.next_deadline();
        let keyframe = if !self.config.keyframe_requests {
            None
        } else {
            let stall = self
                .stalled_since
                .map(|t| t + self.config.keyframe_request_delay);
            let due = [self.repair_failed, stall].into_iter().flatten().min();
            let throttle = self
                .last_keyframe_request
                .map(|t| t + self.config.keyframe_request_interval);
            due.map(|d| throttle.map_or(d, |t| d.max(t)))
        };
        [nack, keyframe].into_iter().flatten().min()
    }

    fn keyframe_needed(&self, now: Instant) -> bool {
        self.repair_failed.is_some()
            || self
                .stalled_since
                .is_some_and(|t| now >= t + self.config.keyframe_request_delay)
    }

    /// Counts needed packets given up on: only a keyframe can repair the chain now.
    fn on_unrecovered(&mut self, count: u64, now: Instant) {
        self.stats.packets_unrecovered += count;
        if count > 0 {
            self.repair_failed.get_or_insert(now);
        }
    }

    /// A packet pushed out of the ring before its frame became decodable: everything
    /// up to it is given up.
    fn evict(&mut self, old: Slot, now: Instant) {
        if old.seq >= self.floor {
            let (frames, last_timestamp) = self.drop_range(self.floor, old.seq);
            self.stats.frames_dropped += frames + u64::from(last_timestamp != Some(old.timestamp));
            self.floor = old.seq + 1;
            self.repair_failed.get_or_insert(now);
            self.complete.retain(|f| f.first > old.seq);
            self.nack.remove_below(self.floor);
        }
    }

    /// Drops everything after a sequence jump; decoding restarts at a keyframe.
    fn reset(&mut self, seq: u64, now: Instant) {
        let (dropped, _) = self.drop_range(self.floor, self.highest.map_or(seq, |h| h + 1));
        self.stats.frames_dropped += dropped;
        self.complete.clear();
        self.nack.clear();
        self.chain_end = None;
        self.floor = seq;
        self.highest = Some(seq);
        self.repair_failed.get_or_insert(now);
        self.stalled_since.get_or_insert(now);
    }

    /// Removes packets in `from..to`; returns how many frames (runs of one timestamp)
    /// that discards, and the last one's timestamp.
    fn drop_range(&mut self, from: u64, to: u64) -> (u64, Option<u32>) {
        let from = from.max(to.saturating_sub(self.capacity()));
        let mut frames = 0;
        let mut last_timestamp = None;
        for seq in from..to {
            if let Some(slot) = self.take(seq)
                && last_timestamp != Some(slot.timestamp)
            {
                frames += 1;
                last_timestamp = Some(slot.timestamp);
            }
        }
        (frames, last_timestamp)
    }

    /// If the frame holding `seq` is now complete and its start is known, queues it.
    fn assemble(&mut self, seq: u64, now: Instant) {
        let Some(slot) = self.slot(seq) else { return };
        let timestamp = slot.timestamp;
        // Forward to the marker, or to a packet of the next frame when a sender omits it.
        let mut last = seq;
        loop {
            let Some(s) = self.slot(last) else { return };
            if s.timestamp != timestamp {
                last -= 1;
                break;
            }
            if s.marker {
                break;
            }
            last += 1;
            if last - seq >= self.capacity() {
                return;
            }
        }
        // Back to the first packet: the one after a packet of another frame, after the
        // end of the decodable chain, or one the codec says opens a frame.
        let mut first = seq;
        loop {
            let prev = first - 1;
            match self.slot(prev) {
                Some(p) if p.timestamp == timestamp => first = prev,
                Some(_) => break,
                None if self.chain_end == Some(prev) => break,
                None if self.slot(first).is_some_and(|s| s.starts_frame) => break,
                None => return,
            }
            if first < self.floor {
                return;
            }
        }
        if self.chain_end.is_some_and(|end| first <= end) || first < self.floor {
            return;
        }
        let at = self.complete.partition_point(|f| f.first < first);
        if self.complete.get(at).is_some_and(|f| f.first == first) {
            return;
        }
        let keyframe = (first..=last).any(|s| self.slot(s).is_some_and(|s| s.keyframe));
        self.complete.insert(
            at,
            CompleteFrame {
                first,
                last,
                keyframe,
            },
        );
        self.stats.frames_received += 1;
        if self.complete.len() > self.config.max_frames {
            // Too many frames waiting behind a gap: the oldest go.
            if let Some(old) = self.complete.pop_front() {
                self.stats.frames_dropped += self.drop_range(self.floor, old.last + 1).0;
                self.floor = old.last + 1;
                self.repair_failed.get_or_insert(now);
            }
        }
    }

    /// Outputs every frame that is decodable now, skipping to a newer keyframe when the
    /// chain is broken.
    fn advance(&mut self, now: Instant) {
        let mut progressed = false;
        while let Some(&front) = self.complete.front() {
            let continues = self.chain_end == Some(front.first - 1);
            let next = if continues || front.keyframe {
                self.complete.pop_front();
                front
            } else if let Some(k) = self.complete.iter().position(|f| f.keyframe) {
                // A newer keyframe completed: frames before it can never be decoded.
                let key = self.complete[k];
                self.complete.drain(..=k);
                key
            } else {
                break;
            };
            if !continues {
                self.stats.frames_dropped += self.drop_range(self.floor, next.first).0;
            }
            self.output(next, now);
            progressed = true;
            // The frame after may have been waiting for this one to reveal its start.
            if self.slot(next.last + 1).is_some() {
                self.assemble(next.last + 1, now);
            }
        }
        if progressed {
            self.stalled_since = None;
        }
        let stalled = self.highest.is_some_and(|h| h >= self.floor)
            && (self.chain_end.is_none()
                || !self.complete.is_empty()
                || self.slot(self.floor).is_none());
        if !stalled {
            self.stalled_since = None;
        } else if self.stalled_since.is_none() {
            self.stalled_since = Some(now);
        }
    }

    /// Moves a decodable frame's packets out into the ready queue.
    fn output(&mut self, meta: CompleteFrame, now: Instant) {
        let mut payloads = Vec::with_capacity((meta.last - meta.first + 1) as usize);
        let (mut first_arrival, mut last_arrival, mut timestamp) = (now, now, 0);
        for seq in meta.first..=meta.last {
            if let Some(slot) = self.take(seq) {
                if seq == meta.first {
                    first_arrival = slot.arrival;
                    last_arrival = slot.arrival;
                    timestamp = slot.timestamp;
                }
                first_arrival = first_arrival.min(slot.arrival);
                last_arrival = last_arrival.max(slot.arrival);
                payloads.push(slot.payload);
            }
        }
        self.chain_end = Some(meta.last);
        self.floor = meta.last + 1;
        self.nack.remove_below(self.floor);
        if meta.keyframe {
            self.repair_failed = None;
            self.stats.keyframes_decodable += 1;
        }
        self.stats.frames_decodable += 1;
        self.timing.on_frame(now);
        if self.ready.len() >= self.config.max_frames {
            // The caller is not polling: the oldest frame is lost to it.
            self.ready.pop_front();
            self.stats.frames_dropped += 1;
        }
        self.ready.push_back(Frame {
            timestamp,
            first_seq: meta.first,
            last_seq: meta.last,
            keyframe: meta.keyframe,
            payloads,
            first_arrival,
            last_arrival,
            decodable_at: now,
        });
    }
}
