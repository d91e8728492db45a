//! Time stretching without clicks: find the pitch period of a stretch of audio, then remove
//! one period (accelerate) or repeat one (pre-emptive expand) by overlap-adding the two
//! neighbouring periods, WSOLA-style, so the waveform stays continuous at both ends.

/// Shortest pitch period looked for: 2.5 ms (400 Hz).
const MIN_PERIOD_MS: usize = 2_500;
/// Longest pitch period looked for: 15 ms (67 Hz).
const MAX_PERIOD_MS: usize = 15_000;
/// Rate the coarse search runs at; the winner is refined at the full rate.
const COARSE_RATE: usize = 4_000;
/// Below this normalised correlation a period is not repeated or removed (audible).
pub(crate) const MIN_CORRELATION: f32 = 0.85;
/// Mean square below this (about -55 dBFS) counts as silence, stretchable at any length.
const SILENCE_POWER: f32 = 60.0;

/// Result of analysing a buffer for stretching.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Period {
    /// Too quiet to matter: any length may be removed or inserted.
    Silence,
    /// Periodic with this many frames per period and this correlation.
    Voiced { frames: usize, correlation: f32 },
    /// Neither: stretching would be audible.
    Unsuitable,
}

/// Reusable work buffers for the period search.
#[derive(Debug, Default, Clone)]
pub(crate) struct PeriodFinder {
    mono: Vec<f32>,
    coarse: Vec<f32>,
}

impl PeriodFinder {
    /// Analyses `pcm` (interleaved, `channels`) for a period short enough that two of them
    /// fit in it.
    pub(crate) fn analyse(&mut self, pcm: &[i16], channels: usize, rate: u32) -> Period {
        let channels = channels.max(1);
        let frames = pcm.len() / channels;
        let rate = rate as usize;
        let min_p = (rate * MIN_PERIOD_MS / 1_000_000).max(2);
        let max_p = (rate * MAX_PERIOD_MS / 1_000_000).min(frames / 2);
        if frames == 0 {
            return Period::Unsuitable;
        }
        self.mono.clear();
        self.mono.extend(
            pcm.chunks_exact(channels)
                .map(|f| f.iter().map(|&s| f32::from(s)).sum::<f32>() / channels as f32),
        );
        let power = self.mono.iter().map(|s| s * s).sum::<f32>() / frames as f32;
        if power < SILENCE_POWER {
            return Period::Silence;
        }
        if max_p < min_p {
            return Period::Unsuitable;
        }

        // Coarse search on a decimated copy keeps the cost per stretch to a few thousand MACs.
        let d = (rate / COARSE_RATE).max(1);
        self.coarse.clear();
        self.coarse.extend(
            self.mono
                .chunks_exact(d)
                .map(|c| c.iter().sum::<f32>() / d as f32),
        );
        let (lo, hi) = ((min_p / d).max(1), (max_p / d).max(1));
        let best_coarse = best_lag(&self.coarse, lo, hi).map_or(lo, |(lag, _)| lag);
        let lo = (best_coarse.saturating_sub(1) * d).max(min_p);
        let hi = ((best_coarse + 1) * d).min(max_p);
        match best_lag(&self.mono, lo, hi) {
            Some((frames, correlation)) if correlation >= MIN_CORRELATION => Period::Voiced {
                frames,
                correlation,
            },
            _ => Period::Unsuitable,
        }
    }
}

/// The lag in `lo..=hi` whose two adjacent segments of that length correlate best.
fn best_lag(x: &[f32], lo: usize, hi: usize) -> Option<(usize, f32)> {
    let mut best: Option<(usize, f32)> = None;
    for lag in lo..=hi.min(x.len() / 2) {
        let (a, b) = (&x[..lag], &x[lag..2 * lag]);
        let (mut ab, mut aa, mut bb) = (0.0f32, 0.0f32, 0.0f32);
        for (&p, &q) in a.iter().zip(b) {
            ab += p * q;
            aa += p * p;
            bb += q * q;
        }
        let c = if aa > 0.0 && bb > 0.0 {
            ab / (aa * bb).sqrt()
        } else {
            0.0
        };
        if best.is_none_or(|(_, bc)| c > bc) {
            best = Some((lag, c));
        }
    }
    best
}

/// Removes `period` frames from the start of `pcm` (at least two periods long): the first
/// period becomes a crossfade from itself into the second, which is then dropped.
pub(crate) fn remove_period(pcm: &mut Vec<i16>, start: usize, channels: usize, period: usize) {
    let n = period * channels;
    debug_assert!(pcm.len() >= start + 2 * n);
    for i in 0..period {
        let w = (i + 1) as f32 / (period + 1) as f32;
        for c in 0..channels {
            let k = start + i * channels + c;
            pcm[k] = mix(pcm[k], pcm[k + n], w);
        }
    }
    pcm.drain(start + n..start + 2 * n);
}

/// Inserts `period` frames after the first period of `pcm[start..]` (at least two periods
/// long): a crossfade from the second period back into the first, so one period repeats.
pub(crate) fn insert_period(
    pcm: &mut Vec<i16>,
    start: usize,
    channels: usize,
    period: usize,
    scratch: &mut Vec<i16>,
) {
    let n = period * channels;
    debug_assert!(pcm.len() >= start + 2 * n);
    scratch.clear();
    for i in 0..period {
        let w = (i + 1) as f32 / (period + 1) as f32;
        for c in 0..channels {
            let k = start + i * channels + c;
            scratch.push(mix(pcm[k + n], pcm[k], w));
        }
    }
    let at = start + n;
    pcm.splice(at..at, scratch.drain(..));
}

/// `a` faded out and `b` faded in by weight `w` of `b`.
pub(crate) fn mix(a: i16, b: i16, w: f32) -> i16 {
    (f32::from(a) * (1.0 - w) + f32::from(b) * w)
        .round()
        .clamp(-32768.0, 32767.0) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f32, rate: u32, frames: usize, amp: f32) -> Vec<i16> {
        (0..frames)
            .map(|i| {
                (amp * (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin()) as i16
            })
            .collect()
    }

    fn max_step(x: &[i16]) -> i32 {
        x.windows(2)
            .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn finds_the_period_of_a_tone() {
        let mut f = PeriodFinder::default();
        // 200 Hz at 16 kHz: 80 samples; at 48 kHz: 240.
        for (rate, want) in [(16_000u32, 80usize), (48_000, 240)] {
            let x = tone(200.0, rate, rate as usize * 30 / 1000, 10_000.0);
            match f.analyse(&x, 1, rate) {
                Period::Voiced {
                    frames,
                    correlation,
                } => {
                    assert!(frames.abs_diff(want) <= 1, "rate {rate}: {frames}");
                    assert!(correlation > 0.99);
                }
                other => panic!("rate {rate}: {other:?}"),
            }
        }
    }

    #[test]
    fn silence_and_noise_are_told_apart() {
        let mut f = PeriodFinder::default();
        assert_eq!(f.analyse(&[3; 480], 1, 16_000), Period::Silence);
        // A deterministic pseudo-random signal has no period.
        let mut s = 12345u32;
        let noise: Vec<i16> = (0..480)
            .map(|_| {
                s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
                ((s >> 16) as i16) / 2
            })
            .collect();
        assert_eq!(f.analyse(&noise, 1, 16_000), Period::Unsuitable);
    }

    #[test]
    fn removing_and_inserting_a_period_keep_the_waveform_smooth() {
        let x = tone(200.0, 16_000, 480, 10_000.0);
        let natural = max_step(&x);
        let mut y = x.clone();
        remove_period(&mut y, 0, 1, 80);
        assert_eq!(y.len(), 400);
        assert!(max_step(&y) <= natural + 2, "{} vs {natural}", max_step(&y));
        let mut z = x.clone();
        insert_period(&mut z, 0, 1, 80, &mut Vec::new());
        assert_eq!(z.len(), 560);
        assert!(max_step(&z) <= natural + 2, "{} vs {natural}", max_step(&z));
    }

    #[test]
    fn stereo_is_stretched_per_channel() {
        let l = tone(250.0, 16_000, 320, 8_000.0);
        let stereo: Vec<i16> = l.iter().flat_map(|&s| [s, -s]).collect();
        let mut y = stereo.clone();
        remove_period(&mut y, 0, 2, 64);
        assert_eq!(y.len(), stereo.len() - 128);
        assert!(
            y.chunks_exact(2)
                .all(|f| i32::from(f[0]) == -i32::from(f[1]))
        );
    }
}
