//! The adaptive jitter buffer: packet intake, the per-frame playout decision (decode,
//! recover from FEC, conceal, comfort noise) and delay steering by time stretching.

use std::time::Instant;

use super::delay::DelayEstimator;
use super::packets::{PacketBuffer, PacketMeta, Unwrapper};
use super::stretch::PeriodFinder;
use super::sync::SyncBuffer;
use super::{
    ConfigError, InsertError, JitterConfig, JitterStats, MAX_PACKET_MS, Playout, frames_to_ms,
    ms_to_frames,
};
use crate::audio::decoder::{AudioDecoder, DecodeError};

mod synthesis;
#[cfg(test)]
mod tests;

/// A jump of more than this many sequence numbers from the playout point is a new stream.
const RESYNC_SEQ: i64 = 3000;
/// Consecutive packets far ahead of the stream that mean the sender restarted (new
/// sequence and timestamp bases), rather than one stray packet.
const RESYNC_AHEAD_PACKETS: u32 = 2;
/// The same for packets far behind, where a stray (an old retransmission) is likelier.
const RESYNC_BEHIND_PACKETS: u32 = 3;
/// Crossfade and splice length, in milliseconds.
const OVERLAP_MS: f64 = 5.0;
/// Smoothing of the measured buffering delay per decoded packet, so that one early or late
/// packet does not trigger stretching.
const DELAY_SMOOTHING: f64 = 0.9;
/// Least margin kept ahead of a packet's playout when the measured jitter is zero.
const MIN_MARGIN_MS: f64 = 2.5;
/// Width of the band around the target within which nothing is stretched.
const BAND_MS: f64 = 10.0;
/// Packets measured before the target may fall below `initial_delay_ms`.
const LEARNING_PACKETS: u32 = 50;
/// Audio wanted ahead before analysing for acceleration: two of the longest pitch periods.
const STRETCH_WINDOW_MS: f64 = 30.0;

/// What produced the most recently queued audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Nothing yet, or silence while (re)buffering.
    Idle,
    /// Decoded packets.
    Decoded,
    /// A frame recovered from in-band FEC.
    Fec,
    /// Loss concealment.
    Concealed,
    /// Comfort noise (silence) during discontinuous transmission.
    ComfortNoise,
}

/// Adaptive jitter buffer over an [`AudioDecoder`]; see the module docs.
pub struct JitterBuffer<D: AudioDecoder> {
    config: JitterConfig,
    decoder: D,
    /// Decoder output rate and channels, fixed at creation.
    rate: u32,
    channels: usize,
    /// Frames per pull, per crossfade, and in the longest packet.
    frame: usize,
    overlap: usize,
    max_packet: usize,
    packets: PacketBuffer,
    unwrap: Unwrapper,
    delay: DelayEstimator,
    sync: SyncBuffer,
    finder: PeriodFinder,
    /// Decoder output, concealment tail for merges, and stretch work space (reused).
    scratch: Vec<i16>,
    tail: Vec<i16>,
    work: Vec<i16>,
    /// The frame handed out by the last pull.
    out: Vec<i16>,
    stats: JitterStats,
    /// Whether playout has started (after prebuffering).
    playing: bool,
    /// Whether any audio has been played since creation.
    ever_played: bool,
    /// Extended timestamp and sequence number of the next packet to decode.
    next_ts: i64,
    next_seq: i64,
    source: Source,
    /// Frames concealed since the last decoded audio (drives the fade).
    conceal_run: usize,
    /// Frames played during an underrun without moving `next_ts`: if the packet turns up,
    /// they were inserted delay; if it is lost, they stand in for it.
    unanchored: usize,
    /// The last decoded packet was a DTX packet: silence until the next one is expected.
    in_dtx: bool,
    /// Playout margin of the latest decoded packet: its wait in the buffer plus its delay
    /// relative to the fastest recent packet, i.e. how late it could have arrived and still
    /// been played, in ms; and the smoothed margin, which stretching steers to the delay
    /// quantile.
    packet_margin_ms: f64,
    buffered_ms: f64,
    /// Current target delay in milliseconds.
    target_ms: f64,
    /// Duration of the latest packet in milliseconds.
    packet_ms: f64,
    /// Packets fed to the delay estimator.
    measured: u32,
    /// Consecutive packets far from the stream.
    far_run: u32,
    /// Fixed-delay policy (see [`super::FixedDelayBuffer`]): the target never moves, the
    /// playout schedule is set by the first packet, and nothing is time-stretched.
    fixed: bool,
}

impl<D: AudioDecoder> std::fmt::Debug for JitterBuffer<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitterBuffer")
            .field("rate", &self.rate)
            .field("channels", &self.channels)
            .field("packets", &self.packets.len())
            .field("target_ms", &self.target_ms)
            .finish_non_exhaustive()
    }
}

impl<D: AudioDecoder> JitterBuffer<D> {
    /// A buffer feeding `decoder`, tuned by `config`.
    pub fn new(decoder: D, config: JitterConfig) -> Result<Self, ConfigError> {
        Self::with_policy(decoder, config, false)
    }

    pub(crate) fn with_policy(
        decoder: D,
        config: JitterConfig,
        fixed: bool,
    ) -> Result<Self, ConfigError> {
        let rate = decoder.sample_rate();
        let channels = decoder.channels();
        config.validate(rate, channels)?;
        let frame = ms_to_frames(f64::from(config.frame_ms), rate);
        let overlap = ms_to_frames(OVERLAP_MS, rate);
        let max_packet = ms_to_frames(f64::from(MAX_PACKET_MS), rate);
        let cap = (max_packet * 3 + frame) * channels;
        Ok(Self {
            delay: DelayEstimator::new(
                rate,
                config.max_delay_ms,
                config.forget_factor,
                config.quantile,
            ),
            packets: PacketBuffer::with_capacity(config.max_packets),
            unwrap: Unwrapper::default(),
            sync: SyncBuffer::new(channels, overlap, cap),
            finder: PeriodFinder::default(),
            scratch: vec![0; max_packet * channels],
            tail: vec![0; overlap * channels],
            work: Vec::with_capacity(cap),
            out: Vec::with_capacity(frame * channels),
            stats: JitterStats::default(),
            playing: false,
            ever_played: false,
            next_ts: 0,
            next_seq: 0,
            source: Source::Idle,
            conceal_run: 0,
            unanchored: 0,
            in_dtx: false,
            packet_margin_ms: 0.0,
            buffered_ms: 0.0,
            target_ms: f64::from(
                config
                    .initial_delay_ms
                    .clamp(config.min_delay_ms, config.max_delay_ms),
            ),
            packet_ms: 20.0,
            measured: 0,
            far_run: 0,
            fixed,
            rate,
            channels,
            frame,
            overlap,
            max_packet,
            decoder,
            config,
        })
    }

    /// The decoder, e.g. to read its state.
    pub fn decoder(&self) -> &D {
        &self.decoder
    }

    /// A statistics snapshot.
    pub fn stats(&self) -> JitterStats {
        let mut s = self.stats.clone();
        s.current_delay_ms = self.current_delay_ms();
        s.target_delay_ms = self.target_ms;
        s
    }

    /// Audio held now (undecoded packets plus queued samples), in milliseconds.
    pub fn current_delay_ms(&self) -> f64 {
        frames_to_ms(self.level_frames(), self.rate)
    }

    /// The delay the buffer steers towards, in milliseconds.
    pub fn target_delay_ms(&self) -> f64 {
        self.target_ms
    }

    /// Packets held.
    pub fn packet_count(&self) -> usize {
        self.packets.len()
    }

    /// Samples per channel in each pulled frame.
    pub fn frame_samples(&self) -> usize {
        self.frame
    }

    /// Offers a received packet. Errors say why it was dropped; none needs handling.
    pub fn insert(
        &mut self,
        seq: u16,
        rtp_ts: u32,
        payload: &[u8],
        arrival: Instant,
    ) -> Result<(), InsertError> {
        if payload.len() > self.config.max_payload_bytes {
            self.stats.packets_discarded += 1;
            return Err(InsertError::Oversized(payload.len()));
        }
        let samples = match self.decoder.packet_samples(payload) {
            Ok(n) if n > 0 && n <= self.max_packet => n,
            Ok(n) => {
                self.stats.packets_discarded += 1;
                return Err(DecodeError::Malformed(format!("packet of {n} samples")).into());
            }
            Err(e) => {
                self.stats.packets_discarded += 1;
                return Err(e.into());
            }
        };
        let (mut ext_seq, mut ext_ts) = self.unwrap.extend(seq, rtp_ts);
        if let Some(behind) = self.far_side(ext_seq, ext_ts) {
            // One stray packet must not flush the stream; a few in a row mean a restart.
            self.far_run += 1;
            let needed = if behind {
                RESYNC_BEHIND_PACKETS
            } else {
                RESYNC_AHEAD_PACKETS
            };
            if self.far_run < needed {
                self.stats.packets_discarded += 1;
                if behind && self.playing {
                    self.stats.late_packets += 1;
                    return Err(InsertError::Late);
                }
                return Err(InsertError::Jump);
            }
            self.resync();
            (ext_seq, ext_ts) = self.unwrap.extend(seq, rtp_ts);
        } else {
            self.far_run = 0;
        }
        self.unwrap.accept(ext_seq, ext_ts);
        if self.playing && ext_ts < self.next_ts {
            // A late packet is the clearest sign that the target is too low: measure it.
            self.measure(arrival, ext_ts, samples);
            self.stats.packets_discarded += 1;
            self.stats.late_packets += 1;
            return Err(InsertError::Late);
        }
        if self.packets.contains(ext_seq) {
            self.stats.duplicate_packets += 1;
            return Err(InsertError::Duplicate);
        }
        let has_fec = self.decoder.has_fec(payload);
        let relative_ms = self.measure(arrival, ext_ts, samples);
        let meta = PacketMeta {
            seq: ext_seq,
            ts: ext_ts,
            samples,
            arrival,
            relative_ms,
            has_fec,
        };
        self.packets.insert(meta, payload);
        self.stats.packets_received += 1;
        self.enforce_capacity();
        Ok(())
    }

    /// Whether a packet is so far from the playout point (or, before playout, from the
    /// packets held) that only a restarted stream explains it: `Some(true)` if behind,
    /// `Some(false)` if ahead.
    fn far_side(&self, seq: i64, ts: i64) -> Option<bool> {
        let max_ts = ms_to_frames(f64::from(self.config.max_buffer_ms), self.rate) as i64;
        let (ref_seq, ref_ts) = if self.playing {
            (self.next_seq, self.next_ts)
        } else {
            let p = self.packets.front()?;
            (p.meta.seq, p.meta.ts)
        };
        let far = (seq - ref_seq).abs() > RESYNC_SEQ || (ts - ref_ts).abs() > max_ts;
        far.then_some(ts < ref_ts || seq < ref_seq)
    }

    /// Flushes everything held and starts over with the next packet; playout continues
    /// from what is already queued, so the output stays continuous.
    fn resync(&mut self) {
        self.stats.packets_discarded += self.packets.clear() as u64;
        self.stats.resyncs += 1;
        self.unwrap.reset();
        self.delay.restart_stream();
        self.playing = false;
        self.far_run = 0;
        self.unanchored = 0;
        self.in_dtx = false;
    }

    /// Feeds a packet's arrival to the delay estimate and updates the target; returns the
    /// packet's relative delay in ms.
    fn measure(&mut self, arrival: Instant, ts: i64, samples: usize) -> f64 {
        self.packet_ms = frames_to_ms(samples, self.rate);
        let relative_ms = self.delay.update(arrival, ts, self.packet_ms);
        self.measured = self.measured.saturating_add(1);
        self.update_target();
        relative_ms
    }

    fn update_target(&mut self) {
        if self.fixed {
            return;
        }
        let mut t = self.delay.quantile_ms() + self.packet_ms;
        if self.measured < LEARNING_PACKETS {
            t = t.max(f64::from(self.config.initial_delay_ms));
        }
        self.target_ms = t.clamp(
            f64::from(self.config.min_delay_ms),
            f64::from(self.config.max_delay_ms),
        );
    }

    /// Evicts the oldest packets beyond the packet and duration bounds; playout skips
    /// forward to the oldest one left.
    fn enforce_capacity(&mut self) {
        let max_frames = ms_to_frames(f64::from(self.config.max_buffer_ms), self.rate);
        while self.packets.len() > self.config.max_packets || self.packets.samples() > max_frames {
            let Some(p) = self.packets.pop_front() else {
                break;
            };
            self.stats.packets_discarded += 1;
            self.packets.recycle(p);
            if let (true, Some(front)) = (self.playing, self.packets.front()) {
                self.next_ts = self.next_ts.max(front.meta.ts);
                self.next_seq = self.next_seq.max(front.meta.seq);
                self.unanchored = 0;
            }
        }
    }

    fn level_frames(&self) -> usize {
        self.packets.samples() + self.sync.pending_frames()
    }

    /// Produces the next frame of interleaved PCM, played out at `now`.
    pub fn pull(&mut self, now: Instant) -> &[i16] {
        // Each step queues at least one frame, so this ends; the bound is belt and braces.
        let mut steps = 0;
        while self.sync.pending_frames() < self.frame && steps < 64 {
            self.step(now);
            steps += 1;
        }
        self.sync.take(self.frame, &mut self.out);
        self.out.resize(self.frame * self.channels, 0);
        if self.ever_played {
            self.stats.total_samples_received += self.frame as u64;
        }
        &self.out
    }

    /// Queues the next piece of audio: one decision of the playout logic.
    fn step(&mut self, now: Instant) {
        if !self.playing && !self.try_start(now) {
            let splice = self.source != Source::Idle;
            self.sync.append_silence(self.frame, splice, &mut self.work);
            self.source = Source::Idle;
            return;
        }
        while let Some(p) = self.packets.front() {
            if p.meta.ts >= self.next_ts {
                break;
            }
            // Behind the playout point (possible after an eviction skipped forward).
            if let Some(p) = self.packets.pop_front() {
                self.stats.packets_discarded += 1;
                self.stats.late_packets += 1;
                self.packets.recycle(p);
            }
        }
        let Some(front) = self.packets.front() else {
            // Underrun: nothing to decode. In DTX this is the pause continuing; otherwise
            // conceal while waiting. For up to the target delay and one packet (enough for
            // the next packet and its FEC to arrive) the playout point waits too; past that
            // the schedule moves on, so a long stall cannot add more than that to the delay
            // (the fixed schedule always moves on).
            if self.in_dtx {
                self.comfort_noise(self.frame);
            } else {
                self.conceal(self.frame);
            }
            let hold = ms_to_frames(self.target_ms + self.packet_ms, self.rate);
            if self.fixed || self.unanchored >= hold {
                self.next_ts += self.frame as i64;
            } else {
                self.unanchored += self.frame;
            }
            return;
        };
        let PacketMeta {
            ts,
            seq,
            samples,
            has_fec,
            ..
        } = front.meta;
        if ts == self.next_ts {
            self.decode_next(now);
            self.steer(now);
            return;
        }
        let gap = (ts - self.next_ts) as usize;
        if seq <= self.next_seq || self.in_dtx {
            // A timestamp gap without a sequence gap: the sender paused (DTX, RFC 7587 §3.1.3).
            let credit = self.unanchored.min(gap);
            self.unanchored = 0;
            self.next_ts += credit as i64;
            let rest = gap - credit;
            if rest == 0 {
                return;
            }
            let above = self.current_delay_ms() > self.target_ms + BAND_MS;
            if !self.fixed && above {
                // Shortening a pause is the cheapest way to cut delay.
                self.next_ts = ts;
                self.stats.removed_samples_for_acceleration += rest as u64;
                self.stats.accelerate_operations += 1;
                return;
            }
            let n = rest.min(self.frame);
            self.comfort_noise(n);
            self.next_ts += n as i64;
            return;
        }
        // Sequence numbers are missing: loss. FEC restores the whole frame before the
        // packet; if concealment already covered part of it, that part becomes extra delay
        // (as concealment while waiting does), which beats concealing the rest.
        let one_missing = seq == self.next_seq + 1;
        if has_fec && (gap == samples || (one_missing && gap < samples)) {
            self.recover_fec(now);
            return;
        }
        // Conceal only up to the frame the FEC data can restore; concealment played while
        // waiting counts towards that.
        let fec_part = if has_fec && gap > samples { samples } else { 0 };
        let credit = self.unanchored.min(gap - fec_part);
        self.unanchored = 0;
        self.next_ts += credit as i64;
        let rest = gap - credit - fec_part;
        if rest == 0 {
            return;
        }
        let n = rest.min(self.frame);
        self.conceal(n);
        self.next_ts += n as i64;
    }

    fn try_start(&mut self, now: Instant) -> bool {
        let Some(front) = self.packets.front() else {
            return false;
        };
        let waited_ms = now
            .saturating_duration_since(front.meta.arrival)
            .as_secs_f64()
            * 1000.0;
        let deep_enough = !self.fixed && self.current_delay_ms() >= self.target_ms;
        if !deep_enough && waited_ms < self.target_ms {
            return false;
        }
        self.next_ts = front.meta.ts;
        self.next_seq = front.meta.seq;
        self.playing = true;
        self.ever_played = true;
        self.buffered_ms = self.current_delay_ms() - self.packet_ms;
        true
    }

    /// Decodes the packet at the playout point.
    fn decode_next(&mut self, now: Instant) {
        let merge = self.prepare_merge();
        let Some(p) = self.packets.pop_front() else {
            return;
        };
        let ch = self.channels;
        let decoded = self.decoder.decode(&p.payload, &mut self.scratch);
        self.next_ts = p.meta.ts + p.meta.samples as i64;
        if p.meta.seq > self.next_seq {
            self.stats.packets_lost += (p.meta.seq - self.next_seq) as u64;
        }
        self.next_seq = p.meta.seq + 1;
        self.unanchored = 0;
        match decoded {
            Ok(n) if n > 0 => {
                let n = n.min(self.scratch.len() / ch);
                self.account_delay(now, p.meta.arrival, p.meta.relative_ms, n);
                self.in_dtx = self.decoder.is_dtx(&p.payload);
                self.queue_decoded(n, merge, Source::Decoded);
            }
            _ => {
                self.stats.packets_discarded += 1;
                self.conceal(p.meta.samples);
            }
        }
        self.packets.recycle(p);
    }

    /// Restores the missing frame before the front packet from its FEC data.
    fn recover_fec(&mut self, now: Instant) {
        let merge = self.prepare_merge();
        let Some(p) = self.packets.front() else {
            return;
        };
        let PacketMeta {
            ts,
            seq,
            samples,
            arrival,
            relative_ms: rel,
            ..
        } = p.meta;
        let ch = self.channels;
        let out = &mut self.scratch[..samples * ch];
        let decoded = self.decoder.decode_fec(&p.payload, samples, out);
        if seq - 1 > self.next_seq {
            self.stats.packets_lost += (seq - 1 - self.next_seq) as u64;
        }
        self.next_ts = ts;
        self.next_seq = seq;
        self.unanchored = 0;
        match decoded {
            Ok(n) if n > 0 => {
                self.stats.fec_recovered_packets += 1;
                self.account_delay(now, arrival, rel, n.min(samples));
                self.queue_decoded(n.min(samples), merge, Source::Fec);
            }
            _ => {
                self.stats.packets_lost += 1;
                self.conceal(samples);
            }
        }
    }
}

impl<D: AudioDecoder> Playout for JitterBuffer<D> {
    fn insert(
        &mut self,
        seq: u16,
        rtp_ts: u32,
        payload: &[u8],
        arrival: Instant,
    ) -> Result<(), InsertError> {
        JitterBuffer::insert(self, seq, rtp_ts, payload, arrival)
    }

    fn pull(&mut self, now: Instant) -> &[i16] {
        JitterBuffer::pull(self, now)
    }

    fn stats(&self) -> JitterStats {
        JitterBuffer::stats(self)
    }

    fn frame_samples(&self) -> usize {
        self.frame
    }
}
