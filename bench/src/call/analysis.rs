//! Audio measurements from what was spoken and what was played out: mouth-to-ear delay
//! and SNR per 200 ms window, found by cross-correlating the played-out PCM with the
//! known signal (the delay varies as the jitter buffer adapts, so each window is aligned
//! on its own), coarse at 2 kHz and then refined sample-exact.
//!
//! The SNR compares waveforms, so it needs each stretch of audio aligned with what was
//! spoken. The jitter buffer's time stretching removes or repeats a pitch period
//! (2.5-15 ms) at a time, which shifts everything after it: a 200 ms window holding a
//! stretch point is aligned to one side of it and the other side counts as noise (a
//! clean loopback call measured 6-13 dB from run to run that way, against 12-14 dB when
//! no window held one). The SNR is therefore taken per 20 ms block, each realigned
//! within one longest pitch period of its window's alignment; the delay stays the
//! window's.

use std::time::{Duration, Instant};

use serde::Serialize;

/// Window length and hop, in samples at 48 kHz: short enough that the jitter buffer's
/// time stretching rarely falls inside one.
const WINDOW: usize = 9_600;
/// Longest mouth-to-ear delay searched.
const MAX_DELAY: usize = 96_000;
/// Decimation factor of the coarse search.
const DECIMATE: usize = 24;
/// Windows whose best normalised correlation is below this are not speech (pauses) or
/// are too damaged to align; they are counted, not measured.
const MIN_CORRELATION: f64 = 0.5;
/// Windows this well aligned in the full search anchor the delay.
const ANCHOR_CORRELATION: f64 = 0.8;
/// Pass 2 searches delays within this many samples of the anchor (400 ms): more than a
/// jitter buffer moves within a call short of a resync.
const TRACK: usize = 19_200;
/// Block over which the SNR is realigned (20 ms).
const BLOCK: usize = 960;
/// How far a block may move from its window's alignment: the longest pitch period the
/// jitter buffer removes or repeats (15 ms).
const STRETCH: usize = 720;

/// The result for one (speaker, listener) pair.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AudioMeasure {
    /// Windows aligned, and windows skipped (pauses, damage).
    pub windows: usize,
    pub windows_skipped: usize,
    /// Mouth-to-ear delay over aligned windows, in ms.
    pub delay_mean_ms: f64,
    pub delay_p50_ms: f64,
    pub delay_p95_ms: f64,
    /// SNR over all aligned windows, and the mean per window, in dB.
    pub snr_db: f64,
    pub segmental_snr_db: f64,
}

/// Measures `played` (with the playout time of each `frame_len`-sample frame) against
/// `spoken`, whose sample 0 was spoken at `spoken_at` and which loops.
pub fn measure(
    spoken: &[i16],
    spoken_at: Instant,
    played: &[i16],
    frame_times: &[Instant],
    frame_len: usize,
    rate: u32,
) -> AudioMeasure {
    let mut out = AudioMeasure::default();
    if spoken.is_empty() || frame_len == 0 {
        return out;
    }
    let fs = f64::from(rate);
    // Pass 1 aligns every window over the whole delay range; speech repeats itself
    // (similar vowels), so a damaged window can match a wrong place. The median of the
    // confident windows anchors pass 2, which searches only near it.
    let windows: Vec<Window> = (0..played.len() / WINDOW)
        .filter_map(|k| Window::new(k * WINDOW, spoken_at, frame_times, frame_len, fs))
        .collect();
    out.windows_skipped = played.len() / WINDOW - windows.len();
    let mut confident: Vec<usize> = windows
        .iter()
        .filter_map(|w| {
            let r = w.reference(spoken);
            let (offset, corr) = align(w.samples(played), &r, w.lag_room, (0, w.lag_room))?;
            (corr >= ANCHOR_CORRELATION).then_some(w.lag_room - offset)
        })
        .collect();
    confident.sort_unstable();
    let Some(&anchor) = confident.get(confident.len() / 2) else {
        out.windows_skipped += windows.len();
        return out;
    };
    let mut delays = Vec::new();
    let (mut signal, mut error, mut seg_sum) = (0.0f64, 0.0f64, 0.0f64);
    for w in &windows {
        let reference = w.reference(spoken);
        let window = w.samples(played);
        // Offsets for delays in anchor ± TRACK.
        let lo = w.lag_room.saturating_sub(anchor + TRACK);
        let hi = w.lag_room.saturating_sub(anchor.saturating_sub(TRACK));
        let found = align(window, &reference, w.lag_room, (lo, hi));
        let Some((offset, _)) = found.filter(|&(_, c)| c >= MIN_CORRELATION) else {
            out.windows_skipped += 1;
            continue;
        };
        let delay_samples = w.lag_room - offset;
        let (s, e) = realigned_energies(window, &reference, offset);
        signal += s;
        error += e;
        seg_sum += ratio_db(s, e).clamp(-10.0, 35.0);
        out.windows += 1;
        // window[0] plays at w.since after spoken_at; it was spoken (i0 - delay) / fs after.
        let spoken_time = (w.i0 - delay_samples) as f64 / fs;
        delays.push(Duration::from_secs_f64((w.since - spoken_time).max(0.0)));
    }
    if !delays.is_empty() {
        delays.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let rank = |p: usize| delays[(delays.len() * p).div_ceil(100).clamp(1, delays.len()) - 1];
        out.delay_mean_ms = delays.iter().map(|d| ms(*d)).sum::<f64>() / delays.len() as f64;
        out.delay_p50_ms = ms(rank(50));
        out.delay_p95_ms = ms(rank(95));
        out.snr_db = ratio_db(signal, error);
        out.segmental_snr_db = seg_sum / out.windows as f64;
    }
    out
}

/// One analysis window of the played stream.
struct Window {
    start: usize,
    /// Seconds from `spoken_at` to the window's playout.
    since: f64,
    /// Index of the spoken sample that would play then with no delay at all.
    i0: usize,
    /// Largest delay the reference stretch covers.
    lag_room: usize,
}

impl Window {
    fn new(
        start: usize,
        spoken_at: Instant,
        frame_times: &[Instant],
        frame_len: usize,
        fs: f64,
    ) -> Option<Window> {
        let t = *frame_times.get(start / frame_len)?;
        let since = t.checked_duration_since(spoken_at)?.as_secs_f64();
        let i0 = (since * fs) as usize;
        Some(Window {
            start,
            since,
            i0,
            lag_room: i0.min(MAX_DELAY),
        })
    }

    fn samples<'a>(&self, played: &'a [i16]) -> &'a [i16] {
        &played[self.start..self.start + WINDOW]
    }

    /// spoken[i0 - lag_room .. i0 + WINDOW + STRETCH] (looping): the window matches it
    /// at offset lag_room - delay (the last STRETCH samples are room for its blocks to
    /// move).
    fn reference(&self, spoken: &[i16]) -> Vec<i16> {
        (self.i0 - self.lag_room..self.i0 + WINDOW + STRETCH)
            .map(|i| spoken[i % spoken.len()])
            .collect()
    }
}

/// Best offset of `window` inside `reference` within `range` (inclusive, capped at
/// `max_offset`) and its normalised correlation: a coarse search on decimated signals,
/// refined around the coarse best.
fn align(
    window: &[i16],
    reference: &[i16],
    max_offset: usize,
    range: (usize, usize),
) -> Option<(usize, f64)> {
    let w = decimate(window);
    let r = decimate(reference);
    let (lo, hi) = (range.0 / DECIMATE, range.1.min(max_offset) / DECIMATE);
    let mut best: Option<(usize, f64)> = None;
    for lag in lo..=hi {
        let Some(seg) = r.get(lag..lag + w.len()) else {
            break;
        };
        let c = correlation_f(&w, seg);
        if best.is_none_or(|(_, b)| c > b) {
            best = Some((lag, c));
        }
    }
    let (coarse, _) = best?;
    let centre = coarse * DECIMATE;
    let lo = centre.saturating_sub(2 * DECIMATE);
    let hi = (centre + 2 * DECIMATE).min(max_offset);
    let mut fine: Option<(usize, f64)> = None;
    for lag in lo..=hi {
        let Some(seg) = reference.get(lag..lag + window.len()) else {
            break;
        };
        let c = correlation_i(window, seg);
        if fine.is_none_or(|(_, b)| c > b) {
            fine = Some((lag, c));
        }
    }
    fine
}

/// (signal, error) energies of `window` against `reference`, where it aligns at
/// `offset`, summed over blocks of [`BLOCK`] samples each aligned on its own within
/// [`STRETCH`] of there.
fn realigned_energies(window: &[i16], reference: &[i16], offset: usize) -> (f64, f64) {
    let (mut signal, mut error) = (0.0, 0.0);
    for (k, block) in window.chunks(BLOCK).enumerate() {
        let base = offset + k * BLOCK;
        let lo = base.saturating_sub(STRETCH);
        let near = &reference[lo..(base + STRETCH + block.len()).min(reference.len())];
        let room = near.len().saturating_sub(block.len());
        // The window's own alignment stays unless another fits the block better (the
        // coarse search can land a pitch period away from it).
        let here = correlation_i(block, &reference[base..base + block.len()]);
        let at = match align(block, near, room, (0, room)) {
            Some((at, c)) if c > here => lo + at,
            _ => base,
        };
        let (s, e) = energies(&reference[at..at + block.len()], block);
        signal += s;
        error += e;
    }
    (signal, error)
}

fn decimate(x: &[i16]) -> Vec<f32> {
    x.chunks(DECIMATE)
        .map(|c| c.iter().map(|&v| f32::from(v)).sum::<f32>() / c.len() as f32)
        .collect()
}

fn correlation_f(a: &[f32], b: &[f32]) -> f64 {
    let (mut xy, mut xx, mut yy) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        xy += x * y;
        xx += x * x;
        yy += y * y;
    }
    if xx == 0.0 || yy == 0.0 {
        0.0
    } else {
        xy / (xx * yy).sqrt()
    }
}

fn correlation_i(a: &[i16], b: &[i16]) -> f64 {
    let (mut xy, mut xx, mut yy) = (0i64, 0i64, 0i64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (i64::from(x), i64::from(y));
        xy += x * y;
        xx += x * x;
        yy += y * y;
    }
    if xx == 0 || yy == 0 {
        0.0
    } else {
        xy as f64 / ((xx as f64) * (yy as f64)).sqrt()
    }
}

fn energies(reference: &[i16], played: &[i16]) -> (f64, f64) {
    reference
        .iter()
        .zip(played)
        .fold((0.0, 0.0), |(s, e), (&r, &p)| {
            let (r, p) = (f64::from(r), f64::from(p));
            (s + r * r, e + (r - p) * (r - p))
        })
}

fn ratio_db(signal: f64, noise: f64) -> f64 {
    if noise <= 0.0 {
        100.0
    } else {
        (10.0 * (signal / noise).log10()).min(100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use huddle_media::quality::signal::speech_like;

    /// A played stream that is the spoken signal delayed by `delay` samples (silence
    /// before), in 10 ms frames played on schedule from `spoken_at`.
    fn delayed(
        spoken: &[i16],
        delay: usize,
        len: usize,
        spoken_at: Instant,
    ) -> (Vec<i16>, Vec<Instant>) {
        let played: Vec<i16> = (0..len)
            .map(|n| {
                if n < delay {
                    0
                } else {
                    spoken[(n - delay) % spoken.len()]
                }
            })
            .collect();
        let times = (0..len / 480)
            .map(|k| spoken_at + Duration::from_micros(10_000 * k as u64))
            .collect();
        (played, times)
    }

    #[test]
    fn a_known_delay_is_measured_to_the_sample() {
        let spoken = speech_like(6.0, 48_000, 12_000, 7);
        let t0 = Instant::now();
        for delay_ms in [0usize, 37, 120, 480] {
            let (played, times) = delayed(&spoken, delay_ms * 48, 48_000 * 5, t0);
            let m = measure(&spoken, t0, &played, &times, 480, 48_000);
            assert!(m.windows >= 5, "{delay_ms}: {m:?}");
            assert!(
                (m.delay_p50_ms - delay_ms as f64).abs() < 0.1,
                "{delay_ms}: {m:?}"
            );
            assert!(
                (m.delay_p95_ms - delay_ms as f64).abs() < 0.1,
                "{delay_ms}: {m:?}"
            );
            assert!(m.snr_db > 90.0, "identical copy: {m:?}");
        }
    }

    #[test]
    fn noise_lowers_the_snr_by_the_right_amount() {
        let spoken = speech_like(6.0, 48_000, 12_000, 3);
        let t0 = Instant::now();
        let (mut played, times) = delayed(&spoken, 4800, 48_000 * 5, t0);
        // Error of a fixed fraction of the signal: scaling by 0.9 gives 20 dB SNR.
        for s in &mut played {
            *s = (f64::from(*s) * 0.9) as i16;
        }
        let m = measure(&spoken, t0, &played, &times, 480, 48_000);
        assert!((m.snr_db - 20.0).abs() < 0.5, "{m:?}");
        assert!((m.delay_p50_ms - 100.0).abs() < 0.1, "{m:?}");
    }

    #[test]
    fn time_stretching_does_not_count_as_noise() {
        // The played copy skips 5 ms every 700 ms (mostly inside a window), the way the
        // jitter buffer's accelerate removes a pitch period: the delay falls by 5 ms
        // each time.
        let spoken = speech_like(6.0, 48_000, 12_000, 5);
        let t0 = Instant::now();
        let (played, times) = delayed(&spoken, 4800, 48_000 * 5, t0);
        let skipped: Vec<i16> = played
            .chunks(33_600)
            .enumerate()
            .flat_map(|(k, c)| c.iter().skip(if k == 0 { 0 } else { 240 }).copied())
            .collect();
        let m = measure(&spoken, t0, &skipped, &times, 480, 48_000);
        assert!(m.windows >= 15, "{m:?}");
        assert!(
            m.delay_p95_ms - m.delay_p50_ms >= 10.0,
            "the delay moves: {m:?}"
        );
        // Only the blocks holding a skip differ from the spoken signal. (Aligning whole
        // windows, as before, measured 19.6 dB here.)
        assert!(m.snr_db > 25.0, "{m:?}");
    }

    #[test]
    fn silence_is_skipped_not_measured() {
        let spoken = speech_like(3.0, 48_000, 12_000, 1);
        let t0 = Instant::now();
        let played = vec![0i16; 48_000 * 2];
        let times: Vec<Instant> = (0..200)
            .map(|k| t0 + Duration::from_millis(10 * k))
            .collect();
        let m = measure(&spoken, t0, &played, &times, 480, 48_000);
        assert_eq!(m.windows, 0);
        assert!(m.windows_skipped >= 3);
    }
}
