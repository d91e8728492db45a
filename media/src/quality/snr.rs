//! Signal-to-noise ratio between the PCM a sender captured and what the receiver played,
//! after finding the receiver's delay by cross-correlation over a bounded lag window.
//!
//! SNR counts every sample; segmental SNR averages per-segment SNRs over speech-active
//! segments, each clamped to [`SEGMENT_SNR_FLOOR_DB`, `SEGMENT_SNR_CEIL_DB`], which tracks
//! perceived quality better because a few loud segments cannot dominate it.

use super::QualityError;

/// Most samples the delay search correlates, so its cost stays bounded on long calls.
pub const MAX_SEARCH_SAMPLES: usize = 96_000;
/// Largest lag window the delay search accepts (2 s at 48 kHz).
pub const MAX_LAG: usize = 96_000;
/// A value no SNR exceeds here: identical signals score this rather than infinity.
pub const MAX_SNR_DB: f64 = 100.0;
/// Per-segment floor: a segment worse than this counts as this (it is just "lost").
pub const SEGMENT_SNR_FLOOR_DB: f64 = -10.0;
/// Per-segment ceiling: beyond this listeners hear no difference.
pub const SEGMENT_SNR_CEIL_DB: f64 = 35.0;
/// Segments whose reference energy is this far below the loudest are silence, skipped.
const SILENCE_BELOW_PEAK_DB: f64 = 40.0;

/// The result of comparing a reference with a delayed, degraded copy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SnrReport {
    /// Samples the received signal lags the reference by.
    pub delay: usize,
    /// Normalised cross-correlation at that delay (1 = identical shape).
    pub correlation: f64,
    /// SNR over all aligned samples, in dB.
    pub snr_db: f64,
    /// Mean SNR of speech-active segments, in dB.
    pub segmental_snr_db: f64,
}

/// Finds the delay of `received` against `reference` in `0..=max_lag` samples, maximising
/// the normalised cross-correlation over at most [`MAX_SEARCH_SAMPLES`] samples.
/// Returns (delay, correlation).
pub fn find_delay(
    reference: &[i16],
    received: &[i16],
    max_lag: usize,
) -> Result<(usize, f64), QualityError> {
    if max_lag > MAX_LAG {
        return Err(QualityError::LagTooLarge { max_lag });
    }
    let mut best: Option<(usize, f64)> = None;
    for lag in 0..=max_lag {
        let Some(shifted) = received.get(lag..) else {
            break;
        };
        let n = reference.len().min(shifted.len()).min(MAX_SEARCH_SAMPLES);
        if n == 0 {
            break;
        }
        let (mut xy, mut xx, mut yy) = (0.0f64, 0.0f64, 0.0f64);
        for (&x, &y) in reference[..n].iter().zip(&shifted[..n]) {
            let (x, y) = (f64::from(x), f64::from(y));
            xy += x * y;
            xx += x * x;
            yy += y * y;
        }
        if xx == 0.0 || yy == 0.0 {
            continue;
        }
        let c = xy / (xx * yy).sqrt();
        if best.is_none_or(|(_, b)| c > b) {
            best = Some((lag, c));
        }
    }
    best.ok_or(QualityError::NoSignal)
}

/// SNR in dB of `degraded` against `reference`, sample by sample over their common length.
pub fn snr_db(reference: &[i16], degraded: &[i16]) -> Result<f64, QualityError> {
    let (signal, noise) = energies(reference, degraded);
    if signal == 0.0 {
        return Err(QualityError::NoSignal);
    }
    Ok(ratio_db(signal, noise))
}

/// Segmental SNR in dB over `segment`-sample segments (e.g. 20 ms), skipping segments
/// that are silent in the reference.
pub fn segmental_snr_db(
    reference: &[i16],
    degraded: &[i16],
    segment: usize,
) -> Result<f64, QualityError> {
    if segment == 0 {
        return Err(QualityError::EmptySegment);
    }
    let n = reference.len().min(degraded.len());
    let segments: Vec<(f64, f64)> = reference[..n]
        .chunks_exact(segment)
        .zip(degraded[..n].chunks_exact(segment))
        .map(|(r, d)| energies(r, d))
        .collect();
    let peak = segments.iter().map(|&(s, _)| s).fold(0.0, f64::max);
    if peak == 0.0 {
        return Err(QualityError::NoSignal);
    }
    let threshold = peak * 10f64.powf(-SILENCE_BELOW_PEAK_DB / 10.0);
    let active: Vec<f64> = segments
        .iter()
        .filter(|&&(s, _)| s > threshold)
        .map(|&(s, noise)| ratio_db(s, noise).clamp(SEGMENT_SNR_FLOOR_DB, SEGMENT_SNR_CEIL_DB))
        .collect();
    Ok(active.iter().sum::<f64>() / active.len() as f64)
}

/// Aligns `received` to `reference` (delay search up to `max_lag`) and measures both SNRs
/// over the aligned overlap with `segment`-sample segments.
pub fn compare(
    reference: &[i16],
    received: &[i16],
    max_lag: usize,
    segment: usize,
) -> Result<SnrReport, QualityError> {
    let (delay, correlation) = find_delay(reference, received, max_lag)?;
    let aligned = received.get(delay..).unwrap_or(&[]);
    Ok(SnrReport {
        delay,
        correlation,
        snr_db: snr_db(reference, aligned)?,
        segmental_snr_db: segmental_snr_db(reference, aligned, segment)?,
    })
}

/// (signal energy, error energy) over the common length.
fn energies(reference: &[i16], degraded: &[i16]) -> (f64, f64) {
    reference
        .iter()
        .zip(degraded)
        .fold((0.0, 0.0), |(s, e), (&r, &d)| {
            let (r, d) = (f64::from(r), f64::from(d));
            (s + r * r, e + (r - d) * (r - d))
        })
}

fn ratio_db(signal: f64, noise: f64) -> f64 {
    if noise == 0.0 {
        return MAX_SNR_DB;
    }
    (10.0 * (signal / noise).log10()).min(MAX_SNR_DB)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn noise(len: usize, amplitude: i16, seed: u64) -> Vec<i16> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..len)
            .map(|_| rng.random_range(-amplitude..=amplitude))
            .collect()
    }

    #[test]
    fn finds_a_known_delay_in_noise() {
        let reference = noise(20_000, 10_000, 1);
        let mut received = vec![0i16; 437];
        received.extend_from_slice(&reference);
        let (delay, c) = find_delay(&reference, &received, 960).unwrap();
        assert_eq!(delay, 437);
        assert!(c > 0.999);
        assert!(matches!(
            find_delay(&reference, &received, MAX_LAG + 1),
            Err(QualityError::LagTooLarge { .. })
        ));
        assert_eq!(
            find_delay(&[0; 100], &[0; 100], 10),
            Err(QualityError::NoSignal)
        );
    }

    #[test]
    fn snr_of_known_noise_levels() {
        // Error at 1/10 of the amplitude (same distribution) is 20 dB down.
        let reference = noise(48_000, 10_000, 2);
        let err = noise(48_000, 1_000, 3);
        let degraded: Vec<i16> = reference.iter().zip(&err).map(|(&r, &e)| r + e).collect();
        let snr = snr_db(&reference, &degraded).unwrap();
        assert!((snr - 20.0).abs() < 0.3, "snr {snr}");
        assert_eq!(snr_db(&reference, &reference).unwrap(), MAX_SNR_DB);
        // Halving every sample leaves an error of half the signal: 6 dB.
        let half: Vec<i16> = reference.iter().map(|&r| r / 2).collect();
        assert!((snr_db(&reference, &half).unwrap() - 6.02).abs() < 0.05);
    }

    #[test]
    fn segmental_snr_skips_silence_and_clamps_losses() {
        // Loud first half, silence, then a loud segment that was lost entirely.
        let mut reference = noise(960 * 4, 8_000, 4);
        reference.extend(std::iter::repeat_n(0, 960 * 4));
        reference.extend(noise(960, 8_000, 5));
        let mut degraded = reference.clone();
        for s in &mut degraded[960 * 8..] {
            *s = 0;
        }
        let seg = segmental_snr_db(&reference, &degraded, 960).unwrap();
        // Four perfect segments at the ceiling, one lost one at 0 dB: (4 * 35 + 0) / 5.
        assert!((seg - 28.0).abs() < 1e-9, "segmental snr {seg}");
        assert_eq!(
            segmental_snr_db(&reference, &degraded, 0),
            Err(QualityError::EmptySegment)
        );
    }

    #[test]
    fn compare_aligns_before_measuring() {
        let reference = noise(9_600, 10_000, 6);
        let mut received = vec![0i16; 300];
        received.extend(reference.iter().map(|&r| r / 2));
        let report = compare(&reference, &received, 480, 480).unwrap();
        assert_eq!(report.delay, 300);
        assert!((report.snr_db - 6.02).abs() < 0.05);
        assert!((report.segmental_snr_db - 6.02).abs() < 0.1);
    }
}
