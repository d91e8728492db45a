//! Adaptive audio jitter buffer in the manner of webrtc.org's NetEq.
//!
//! Packets go in with [`JitterBuffer::insert`] (sequence number, RTP timestamp, payload and
//! arrival time); 10 or 20 ms of PCM come out of each [`JitterBuffer::pull`] at the playout
//! clock. In between:
//!
//! - packets are ordered by unwrapped sequence number; duplicates, packets behind the
//!   playout point and undecodable ones are dropped and counted; capacity is bounded in
//!   packets and milliseconds (oldest evicted first), and a large jump flushes and resyncs;
//! - each packet's delay relative to the fastest packet of the last two seconds feeds a
//!   histogram with a forgetting factor (a burst released by a stall counts once); its 95%
//!   quantile plus one packet is the target delay, which rises within a few late packets
//!   and falls back over seconds;
//! - playout decodes in order; a missing packet is recovered from the next packet's in-band
//!   FEC when present, else concealed by the decoder, fading to silence on long gaps; a
//!   timestamp gap without a sequence gap is a pause in talking (DTX), not loss;
//! - each decoded packet's playout margin (its wait plus its relative delay: how late it
//!   could have been) is steered to the quantile: above it the buffer accelerates (drops a
//!   pitch period, or a stretch of silence or of a DTX pause), below it expands (repeats a
//!   period); an underrun conceals while waiting, for at most the target delay plus one
//!   packet, then moves the schedule on so a stall cannot add more delay than that;
//! - every change of source is spliced or crossfaded, so no step reaches the output.
//!
//! [`FixedDelayBuffer`] is the classic alternative (plays each packet a fixed time after
//! the first one's arrival) for comparison on the same traces.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use huddle_media::audio::jitter::{JitterBuffer, JitterConfig};
//! use huddle_media::audio::l16::L16Decoder;
//!
//! let mut jb = JitterBuffer::new(L16Decoder::new(16_000, 1), JitterConfig::default()).unwrap();
//! let t0 = Instant::now();
//! for i in 0..50u16 {
//!     let now = t0 + Duration::from_millis(20 * u64::from(i));
//!     let pcm = vec![0u8; 640]; // 20 ms of 16 kHz mono L16
//!     jb.insert(i, u32::from(i) * 320, &pcm, now).unwrap();
//!     for half in 0..2 {
//!         let frame = jb.pull(now + Duration::from_millis(10 * half));
//!         assert_eq!(frame.len(), 160);
//!     }
//! }
//! assert_eq!(jb.stats().concealed_samples, 0);
//! ```

mod buffer;
mod delay;
mod fixed;
mod packets;
mod stats;
pub(crate) mod stretch;
mod sync;

use std::time::Instant;

pub use buffer::JitterBuffer;
pub use fixed::FixedDelayBuffer;
pub use stats::JitterStats;

use crate::audio::decoder::DecodeError;

/// Longest packet accepted, in milliseconds (the longest Opus packet, RFC 6716 §3.2.5).
pub const MAX_PACKET_MS: u32 = 120;

/// Tuning of a [`JitterBuffer`].
#[derive(Debug, Clone, PartialEq)]
pub struct JitterConfig {
    /// Duration of each pulled frame: 10 or 20 ms.
    pub frame_ms: u32,
    /// Lower bound of the target delay.
    pub min_delay_ms: u32,
    /// Upper bound of the target delay (and of the delay histogram).
    pub max_delay_ms: u32,
    /// Target used until about a second of packets has been measured.
    pub initial_delay_ms: u32,
    /// Share of packets the target delay should play on time.
    pub quantile: f64,
    /// Share of the delay histogram kept per 20 ms of packets; lower forgets faster.
    pub forget_factor: f64,
    /// Most packets held.
    pub max_packets: usize,
    /// Most audio held in packets, in milliseconds.
    pub max_buffer_ms: u32,
    /// Largest payload accepted, in bytes.
    pub max_payload_bytes: usize,
    /// Concealment plays at full level this long, then fades.
    pub fade_start_ms: u32,
    /// Concealment is silent from this long on.
    pub fade_end_ms: u32,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            frame_ms: 10,
            min_delay_ms: 0,
            max_delay_ms: 1000,
            initial_delay_ms: 60,
            quantile: 0.95,
            forget_factor: 0.983,
            max_packets: 200,
            max_buffer_ms: 2000,
            max_payload_bytes: 1500,
            fade_start_ms: 40,
            fade_end_ms: 100,
        }
    }
}

/// A [`JitterConfig`] that cannot work.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ConfigError {
    /// Frames must be 10 or 20 ms.
    #[error("frame duration must be 10 or 20 ms, not {0}")]
    FrameDuration(u32),
    /// The decoder reports a rate or channel count that cannot be used.
    #[error("unsupported decoder output: {rate} Hz, {channels} channels")]
    DecoderFormat { rate: u32, channels: usize },
    /// A bound is zero, inverted or out of range.
    #[error("invalid setting: {0}")]
    Invalid(&'static str),
}

impl JitterConfig {
    pub(crate) fn validate(&self, rate: u32, channels: usize) -> Result<(), ConfigError> {
        if self.frame_ms != 10 && self.frame_ms != 20 {
            return Err(ConfigError::FrameDuration(self.frame_ms));
        }
        if !(8_000..=192_000).contains(&rate)
            || !rate.is_multiple_of(100)
            || !(1..=8).contains(&channels)
        {
            return Err(ConfigError::DecoderFormat { rate, channels });
        }
        if self.min_delay_ms > self.max_delay_ms || self.max_delay_ms > 10_000 {
            return Err(ConfigError::Invalid(
                "min_delay_ms <= max_delay_ms <= 10000",
            ));
        }
        if !(0.5..1.0).contains(&self.quantile) {
            return Err(ConfigError::Invalid("quantile in [0.5, 1)"));
        }
        if !(0.5..1.0).contains(&self.forget_factor) {
            return Err(ConfigError::Invalid("forget_factor in [0.5, 1)"));
        }
        if !(2..=10_000).contains(&self.max_packets) {
            return Err(ConfigError::Invalid("max_packets in 2..=10000"));
        }
        if self.max_buffer_ms < 2 * MAX_PACKET_MS || self.max_buffer_ms > 60_000 {
            return Err(ConfigError::Invalid("max_buffer_ms in 240..=60000"));
        }
        if self.max_payload_bytes == 0 || self.max_payload_bytes > 65_536 {
            return Err(ConfigError::Invalid("max_payload_bytes in 1..=65536"));
        }
        if self.fade_start_ms > self.fade_end_ms {
            return Err(ConfigError::Invalid("fade_start_ms <= fade_end_ms"));
        }
        Ok(())
    }
}

/// Why a packet was not taken into the buffer. None of these is fatal; each is counted.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum InsertError {
    /// A packet with this sequence number is already held.
    #[error("duplicate packet")]
    Duplicate,
    /// Its playout time has passed.
    #[error("packet arrived after its playout time")]
    Late,
    /// Far from the stream's sequence numbers or timestamps: a stray, or the first packet
    /// of a restarted stream (the buffer resyncs when more follow).
    #[error("packet far from the stream")]
    Jump,
    /// Larger than `max_payload_bytes`.
    #[error("payload of {0} bytes exceeds the limit")]
    Oversized(usize),
    /// The decoder cannot tell its duration, or it is empty or longer than 120 ms.
    #[error("undecodable packet: {0}")]
    Malformed(#[from] DecodeError),
}

/// Anything that turns received packets into a steady stream of PCM frames; implemented by
/// the adaptive and the fixed-delay buffer so they can be compared on the same traces.
pub trait Playout {
    /// Offers one received packet.
    fn insert(
        &mut self,
        seq: u16,
        rtp_ts: u32,
        payload: &[u8],
        arrival: Instant,
    ) -> Result<(), InsertError>;
    /// Produces the next frame (interleaved PCM) at playout time `now`.
    fn pull(&mut self, now: Instant) -> &[i16];
    /// A snapshot of the statistics.
    fn stats(&self) -> JitterStats;
    /// Samples per channel in each pulled frame.
    fn frame_samples(&self) -> usize;
}

/// Frames per `ms` milliseconds at `rate` Hz.
pub(crate) fn ms_to_frames(ms: f64, rate: u32) -> usize {
    (ms.max(0.0) * f64::from(rate) / 1000.0).round() as usize
}

/// Milliseconds in `frames` at `rate` Hz.
pub(crate) fn frames_to_ms(frames: usize, rate: u32) -> f64 {
    frames as f64 * 1000.0 / f64::from(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_bad_ones_are_named() {
        assert_eq!(JitterConfig::default().validate(48_000, 2), Ok(()));
        let bad = JitterConfig {
            frame_ms: 15,
            ..Default::default()
        };
        assert_eq!(bad.validate(48_000, 1), Err(ConfigError::FrameDuration(15)));
        let bad = JitterConfig {
            min_delay_ms: 500,
            max_delay_ms: 100,
            ..Default::default()
        };
        assert!(matches!(
            bad.validate(48_000, 1),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            JitterConfig::default().validate(44_101, 1),
            Err(ConfigError::DecoderFormat { .. })
        ));
    }
}
