//! How the buffer makes sound other than plain decoding: merges into decoded audio,
//! concealment with its fade, comfort noise, and steering the delay by time stretching.

use std::time::Instant;

use super::{BAND_MS, DELAY_SMOOTHING, JitterBuffer, MIN_MARGIN_MS, STRETCH_WINDOW_MS, Source};
use crate::audio::decoder::AudioDecoder;
use crate::audio::jitter::stretch::{self, Period};
use crate::audio::jitter::{frames_to_ms, ms_to_frames};

impl<D: AudioDecoder> JitterBuffer<D> {
    /// Before decoding after concealment or silence: the waveform that decoded audio must
    /// fade in over (the concealment's continuation, or silence). Returns whether to merge.
    pub(super) fn prepare_merge(&mut self) -> bool {
        match self.source {
            Source::Decoded | Source::Fec => false,
            Source::Concealed => {
                let gain_start = self.conceal_gain(self.conceal_run);
                self.tail.fill(0);
                if gain_start > 0.0 {
                    let tail = &mut self.tail[..self.overlap * self.channels];
                    if self.decoder.conceal(self.overlap, tail).is_err() {
                        tail.fill(0);
                    }
                    self.apply_fade(self.overlap, true);
                }
                true
            }
            Source::Idle | Source::ComfortNoise => {
                self.tail.fill(0);
                true
            }
        }
    }

    /// Queues `n` decoded frames from `scratch`, crossfading from `tail` when merging.
    pub(super) fn queue_decoded(&mut self, n: usize, merge: bool, source: Source) {
        let ch = self.channels;
        if merge {
            let m = self.overlap.min(n);
            for i in 0..m {
                let w = (i + 1) as f32 / (m + 1) as f32;
                for c in 0..ch {
                    let k = i * ch + c;
                    self.scratch[k] = stretch::mix(self.tail[k], self.scratch[k], w);
                }
            }
        }
        let splice = self.source != source;
        self.sync.append(&mut self.scratch[..n * ch], splice);
        self.source = source;
        self.conceal_run = 0;
    }

    /// Accounts a decoded packet's delay (getStats sums it per sample) and its margin.
    pub(super) fn account_delay(
        &mut self,
        now: Instant,
        arrival: Instant,
        relative_ms: f64,
        frames: usize,
    ) {
        let waited = now.saturating_duration_since(arrival).as_secs_f64();
        let queued = self.sync.pending_frames() as f64 / f64::from(self.rate);
        self.packet_margin_ms = waited * 1000.0 + relative_ms;
        self.stats.jitter_buffer_delay += (waited + queued) * frames as f64;
        self.stats.jitter_buffer_target_delay += self.target_ms / 1000.0 * frames as f64;
        self.stats.jitter_buffer_emitted_count += frames as u64;
    }

    /// Gain of concealment `run` frames into a gap: full, then a linear fade to silence.
    pub(super) fn conceal_gain(&self, run: usize) -> f32 {
        let start = ms_to_frames(f64::from(self.config.fade_start_ms), self.rate);
        let end = ms_to_frames(f64::from(self.config.fade_end_ms), self.rate).max(start + 1);
        if run <= start {
            1.0
        } else if run >= end {
            0.0
        } else {
            1.0 - (run - start) as f32 / (end - start) as f32
        }
    }

    /// Applies the concealment fade to the first `frames` frames of `tail` (or `scratch`),
    /// which continue the current concealment run.
    pub(super) fn apply_fade(&mut self, frames: usize, to_tail: bool) {
        let ch = self.channels;
        for i in 0..frames {
            let g = self.conceal_gain(self.conceal_run + i);
            let buf = if to_tail {
                &mut self.tail
            } else {
                &mut self.scratch
            };
            for s in &mut buf[i * ch..(i + 1) * ch] {
                *s = (f32::from(*s) * g).round() as i16;
            }
        }
    }

    /// Queues `n` frames of loss concealment, fading to silence on long gaps.
    pub(super) fn conceal(&mut self, n: usize) {
        let n = n.min(self.max_packet);
        let ch = self.channels;
        if self.source != Source::Concealed {
            self.stats.concealment_events += 1;
            self.conceal_run = 0;
        }
        let out = &mut self.scratch[..n * ch];
        let silent_from = ms_to_frames(f64::from(self.config.fade_end_ms), self.rate);
        if self.conceal_run >= silent_from {
            out.fill(0);
            self.stats.silent_concealed_samples += n as u64;
        } else {
            if self.decoder.conceal(n, out).is_err() {
                out.fill(0);
            }
            self.apply_fade(n, false);
            let silent = (self.conceal_run + n).saturating_sub(silent_from);
            self.stats.silent_concealed_samples += silent as u64;
        }
        let splice = self.source != Source::Concealed;
        self.sync.append(&mut self.scratch[..n * ch], splice);
        self.stats.concealed_samples += n as u64;
        self.conceal_run += n;
        self.source = Source::Concealed;
    }

    /// Queues `n` frames of comfort noise (silence) for a DTX pause.
    pub(super) fn comfort_noise(&mut self, n: usize) {
        let splice = self.source != Source::ComfortNoise;
        self.sync.append_silence(n, splice, &mut self.work);
        self.stats.comfort_noise_samples += n as u64;
        self.source = Source::ComfortNoise;
    }

    /// After a decode: steer the playout margin (how late a packet could arrive and still
    /// be played) into `[quantile, quantile + 10 ms]` of the relative delay: above, compress
    /// time; below, expand. Unlike a count of buffered packets (NetEq's level) the margin is
    /// not quantised to packet durations, so the band can be narrow.
    pub(super) fn steer(&mut self, now: Instant) {
        if self.fixed {
            return;
        }
        let d = DELAY_SMOOTHING;
        self.buffered_ms = d * self.buffered_ms + (1.0 - d) * self.packet_margin_ms;
        // The margin covering the delay quantile; below it packets start being late.
        let target = (self.target_ms - self.packet_ms).max(MIN_MARGIN_MS);
        let (low, high) = (target, target + BAND_MS);
        if self.buffered_ms > high {
            // Two long pitch periods make the analysis reliable; the packets are there.
            let want = ms_to_frames(STRETCH_WINDOW_MS, self.rate);
            while self.sync.pending_frames() < want
                && self
                    .packets
                    .front()
                    .is_some_and(|p| p.meta.ts == self.next_ts)
            {
                self.decode_next(now);
            }
            let excess = ms_to_frames(self.buffered_ms - target, self.rate);
            // Far above the band (after a stall), compress harder: up to half the audio.
            let fast = self.buffered_ms > 2.0 * high + BAND_MS;
            if let Some(removed) = self.stretch(excess, true, fast) {
                self.stats.removed_samples_for_acceleration += removed as u64;
                self.stats.accelerate_operations += 1;
                self.buffered_ms -= frames_to_ms(removed, self.rate);
            }
        } else if self.buffered_ms < low {
            let deficit = ms_to_frames(target - self.buffered_ms, self.rate);
            if let Some(inserted) = self.stretch(deficit, false, false) {
                self.stats.inserted_samples_for_deceleration += inserted as u64;
                self.stats.preemptive_expand_operations += 1;
                self.buffered_ms += frames_to_ms(inserted, self.rate);
            }
        }
    }

    /// Removes (`accelerate`) or inserts about `amount` frames in the queued audio;
    /// returns how many, or `None` when the audio does not allow it. The crossfades leave
    /// the first queued sample (nearly) as it was, so the join with what was played holds.
    /// With `fast`, removes several periods, up to half of the queued audio.
    pub(super) fn stretch(&mut self, amount: usize, accelerate: bool, fast: bool) -> Option<usize> {
        let ch = self.channels;
        let avail = self.sync.pending_frames();
        if avail < 2 || amount == 0 {
            return None;
        }
        let (pcm, start) = self.sync.unplayed_mut();
        let period = match self.finder.analyse(&pcm[start..], ch, self.rate) {
            Period::Silence => amount.min(avail / 2).max(1),
            Period::Voiced { frames, .. } => frames,
            Period::Unsuitable => return None,
        };
        if 2 * period > avail {
            return None;
        }
        if !accelerate {
            stretch::insert_period(pcm, start, ch, period, &mut self.work);
            self.sync.refresh_tail();
            return Some(period);
        }
        let budget = if fast { amount.min(avail / 2) } else { period };
        let (mut removed, mut at, mut left) = (0, start, avail);
        while removed + period <= budget.max(period) && 2 * period <= left {
            stretch::remove_period(pcm, at, ch, period);
            removed += period;
            // The next removal starts after the crossfaded period, on unchanged audio.
            at += period * ch;
            left -= 2 * period;
        }
        self.sync.refresh_tail();
        Some(removed)
    }
}
