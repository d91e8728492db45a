//! Deterministic test signals for codec tests and call-quality benchmarks: a speech-like
//! voice (harmonics of a moving pitch shaped by vowel formants, in syllables with pauses),
//! pure tones, and a moving video test pattern with optional sensor noise.

use std::f64::consts::TAU;

use crate::codec::I420Frame;

/// A small seeded generator (SplitMix64) so signals are reproducible without a dependency.
#[derive(Debug, Clone)]
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo) * unit
    }
}

/// Formant frequencies (F1, F2, F3) in Hz of a few vowels, adult male averages.
const VOWELS: [[f64; 3]; 5] = [
    [730.0, 1090.0, 2440.0], // /a/
    [270.0, 2290.0, 3010.0], // /i/
    [300.0, 870.0, 2240.0],  // /u/
    [530.0, 1840.0, 2480.0], // /e/
    [570.0, 840.0, 2410.0],  // /o/
];

/// Bandwidth of each formant resonance, Hz.
const FORMANT_BANDWIDTH: f64 = 90.0;
/// Harmonics stop here: most speech energy and all that narrowband/wideband codecs keep.
const MAX_HARMONIC_HZ: f64 = 7000.0;

/// `seconds` of speech-like mono audio at `sample_rate`, peak near `peak` (≤ 32767).
///
/// Syllables of 120–320 ms, each a vowel with a rising or falling pitch between 90 and
/// 220 Hz and a raised-cosine amplitude envelope, separated by pauses of 40–400 ms; the
/// harmonic amplitudes follow the vowel's formant resonances. The same `seed` gives the
/// same signal.
pub fn speech_like(seconds: f64, sample_rate: u32, peak: i16, seed: u64) -> Vec<i16> {
    let fs = f64::from(sample_rate);
    let total = (seconds * fs) as usize;
    let mut rng = SplitMix(seed);
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        let syllable = (rng.range(0.12, 0.32) * fs) as usize;
        let vowel = VOWELS[(rng.next_u64() % VOWELS.len() as u64) as usize];
        let (f0_start, f0_end) = (rng.range(90.0, 220.0), rng.range(90.0, 220.0));
        let loudness = rng.range(0.5, 1.0);
        let harmonics = (MAX_HARMONIC_HZ / f0_start.min(f0_end)) as usize;
        let mut phases = vec![0.0f64; harmonics];
        // Normalise so the loudest syllables peak near `peak`.
        let gain: f64 = (1..=harmonics)
            .map(|k| formant_gain(&vowel, k as f64 * (f0_start + f0_end) / 2.0))
            .sum();
        for n in 0..syllable.min(total - out.len()) {
            let progress = n as f64 / syllable as f64;
            let f0 = f0_start + (f0_end - f0_start) * progress;
            let envelope = 0.5 - 0.5 * (TAU * progress).cos();
            let mut x = 0.0;
            for (k, phase) in phases.iter_mut().enumerate() {
                let f = (k + 1) as f64 * f0;
                *phase = (*phase + TAU * f / fs) % TAU;
                if f < fs / 2.0 {
                    x += formant_gain(&vowel, f) * phase.sin();
                }
            }
            let sample = f64::from(peak) * loudness * envelope * x / gain.max(1e-9);
            out.push(sample.round().clamp(-32768.0, 32767.0) as i16);
        }
        let pause = (rng.range(0.04, 0.4) * fs) as usize;
        out.extend(std::iter::repeat_n(0, pause.min(total - out.len())));
    }
    out
}

/// Resonance gain of the vowel's formants at frequency `f`.
fn formant_gain(formants: &[f64; 3], f: f64) -> f64 {
    formants
        .iter()
        .enumerate()
        .map(|(i, &fc)| {
            // Higher formants are weaker, like the glottal source's spectral tilt.
            let weight = 1.0 / (1 + i) as f64;
            weight / (1.0 + ((f - fc) / FORMANT_BANDWIDTH).powi(2))
        })
        .sum()
}

/// `seconds` of a sum of pure tones at `frequencies` Hz, each with amplitude `amplitude`.
pub fn tones(seconds: f64, sample_rate: u32, frequencies: &[f64], amplitude: i16) -> Vec<i16> {
    let fs = f64::from(sample_rate);
    (0..(seconds * fs) as usize)
        .map(|n| {
            let t = n as f64 / fs;
            let x: f64 = frequencies.iter().map(|f| (TAU * f * t).sin()).sum();
            (f64::from(amplitude) * x).round().clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

/// Frame `index` of a moving test pattern: a diagonal luma gradient scrolling right, a
/// bright square bouncing across it, fine texture, and slowly cycling chroma.
pub fn moving_pattern(frame: &mut I420Frame, index: u64) {
    let (w, h) = (frame.width(), frame.height());
    let (y_stride, uv_stride) = frame.strides();
    let shift = (index * 4) as usize;
    let side = (w.min(h) / 4).max(2);
    let span_x = w.saturating_sub(side).max(1);
    let span_y = h.saturating_sub(side).max(1);
    let bounce = |pos: usize, span: usize| {
        let p = pos % (2 * span);
        if p < span { p } else { 2 * span - p }
    };
    let (bx, by) = (bounce(shift * 2, span_x), bounce(shift, span_y));
    let (y, u, v) = frame.planes_mut();
    for row in 0..h {
        for col in 0..w {
            let in_square = (bx..bx + side).contains(&col) && (by..by + side).contains(&row);
            let value = if in_square {
                235
            } else {
                let gradient = ((col + shift + row) % 256) as u8 / 2 + 40;
                // Fine checkerboard texture gives the encoder real detail to code.
                gradient + if (col / 4 + row / 4) % 2 == 0 { 12 } else { 0 }
            };
            if let Some(s) = y.get_mut(row * y_stride + col) {
                *s = value;
            }
        }
    }
    for row in 0..h / 2 {
        for col in 0..w / 2 {
            let i = row * uv_stride + col;
            let phase = (col + row + shift / 2) % 128;
            if let Some(s) = u.get_mut(i) {
                *s = 64 + phase as u8;
            }
            if let Some(s) = v.get_mut(i) {
                *s = 192 - phase as u8;
            }
        }
    }
}

/// Adds camera-like sensor noise, uniform in ±`amplitude`, to the luma plane; `seed`
/// picks the noise (use a different one per frame, as a sensor would).
pub fn add_luma_noise(frame: &mut I420Frame, amplitude: u8, seed: u64) {
    let mut rng = SplitMix(seed);
    let span = u64::from(amplitude) * 2 + 1;
    for s in frame.planes_mut().0.iter_mut() {
        let offset = (rng.next_u64() % span) as i16 - i16::from(amplitude);
        *s = (i16::from(*s) + offset).clamp(0, 255) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speech_like_is_reproducible_with_pauses_and_level() {
        let a = speech_like(3.0, 48_000, 20_000, 7);
        assert_eq!(a.len(), 144_000);
        assert_eq!(a, speech_like(3.0, 48_000, 20_000, 7));
        assert_ne!(a, speech_like(3.0, 48_000, 20_000, 8));
        let peak = a.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!((5_000..=20_000).contains(&peak), "peak {peak}");
        // Pauses: a good share of 10 ms blocks are silent, and most are not.
        let silent = a.chunks(480).filter(|c| c.iter().all(|&s| s == 0)).count();
        let blocks = a.len() / 480;
        assert!(
            silent > blocks / 10 && silent < blocks / 2,
            "{silent} of {blocks}"
        );
    }

    #[test]
    fn tones_have_the_requested_frequency() {
        let x = tones(1.0, 8_000, &[1000.0], 1000);
        // 1 kHz at 8 kHz: eight samples per period, so x[n] == x[n + 8].
        assert!(x.iter().zip(&x[8..]).all(|(a, b)| (a - b).abs() <= 1));
        assert_eq!(x[2], 1000);
    }

    #[test]
    fn pattern_moves_between_frames() {
        let mut a = I420Frame::new(64, 48).unwrap();
        let mut b = a.clone();
        moving_pattern(&mut a, 0);
        moving_pattern(&mut b, 1);
        assert_ne!(a.y(), b.y());
        assert!(a.y().contains(&235));
        let mut noisy = a.clone();
        add_luma_noise(&mut noisy, 3, 9);
        assert_ne!(noisy, a);
        assert!(
            noisy
                .y()
                .iter()
                .zip(a.y())
                .all(|(&n, &c)| n.abs_diff(c) <= 3)
        );
        let mut again = I420Frame::new(64, 48).unwrap();
        moving_pattern(&mut again, 0);
        assert_eq!(a, again);
    }
}
