//! The classic fixed-delay playout buffer, kept as a baseline for the adaptive one: the
//! first packet is played a fixed time after it arrived, every later packet at its
//! timestamp's offset from that; packets arriving after their slot are lost.

use std::time::Instant;

use super::buffer::JitterBuffer;
use super::{ConfigError, InsertError, JitterConfig, JitterStats, Playout};
use crate::audio::decoder::AudioDecoder;

/// Fixed-delay buffer: same packet handling, FEC and concealment as [`JitterBuffer`], but
/// no delay estimation and no time stretching. Driven through [`Playout`].
#[derive(Debug)]
pub struct FixedDelayBuffer<D: AudioDecoder>(JitterBuffer<D>);

impl<D: AudioDecoder> FixedDelayBuffer<D> {
    /// A buffer playing `delay_ms` after the first packet's arrival, in `frame_ms` frames.
    pub fn new(decoder: D, delay_ms: u32, frame_ms: u32) -> Result<Self, ConfigError> {
        let config = JitterConfig {
            frame_ms,
            min_delay_ms: delay_ms,
            max_delay_ms: delay_ms,
            initial_delay_ms: delay_ms,
            ..JitterConfig::default()
        };
        JitterBuffer::with_policy(decoder, config, true).map(Self)
    }
}

impl<D: AudioDecoder> Playout for FixedDelayBuffer<D> {
    fn insert(
        &mut self,
        seq: u16,
        rtp_ts: u32,
        payload: &[u8],
        arrival: Instant,
    ) -> Result<(), InsertError> {
        self.0.insert(seq, rtp_ts, payload, arrival)
    }

    fn pull(&mut self, now: Instant) -> &[i16] {
        self.0.pull(now)
    }

    fn stats(&self) -> JitterStats {
        self.0.stats()
    }

    fn frame_samples(&self) -> usize {
        self.0.frame_samples()
    }
}
