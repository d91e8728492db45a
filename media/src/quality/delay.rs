//! Mouth-to-ear delay statistics from (capture time, play-out time) pairs of audio frames.

use std::time::{Duration, Instant};

use super::QualityError;

/// Summary of mouth-to-ear delays over a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelayStats {
    /// Frames measured.
    pub count: usize,
    /// Pairs dropped because play-out came before capture (clocks not comparable).
    pub invalid: usize,
    /// Mean delay; the E-model's one-way delay Ta.
    pub mean: Duration,
    /// Median delay.
    pub p50: Duration,
    /// 95th percentile delay.
    pub p95: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl DelayStats {
    /// Statistics over `(sent, played)` pairs, both read from the same clock.
    pub fn from_pairs(
        pairs: impl IntoIterator<Item = (Instant, Instant)>,
    ) -> Result<Self, QualityError> {
        let mut invalid = 0;
        let delays: Vec<Duration> = pairs
            .into_iter()
            .filter_map(|(sent, played)| {
                let d = played.checked_duration_since(sent);
                invalid += usize::from(d.is_none());
                d
            })
            .collect();
        let mut stats = Self::from_delays(delays)?;
        stats.invalid = invalid;
        Ok(stats)
    }

    /// Statistics over measured delays.
    pub fn from_delays(delays: impl IntoIterator<Item = Duration>) -> Result<Self, QualityError> {
        let mut delays: Vec<Duration> = delays.into_iter().collect();
        if delays.is_empty() {
            return Err(QualityError::NoSamples);
        }
        delays.sort_unstable();
        let count = delays.len();
        let total: Duration = delays.iter().sum();
        // Nearest-rank percentile: the smallest value with at least p% of samples at or
        // below it.
        let rank = |p: usize| delays[(count * p).div_ceil(100).clamp(1, count) - 1];
        Ok(Self {
            count,
            invalid: 0,
            mean: total / u32::try_from(count).unwrap_or(u32::MAX),
            p50: rank(50),
            p95: rank(95),
            max: delays[count - 1],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let stats = DelayStats::from_delays((1..=100).map(Duration::from_millis)).unwrap();
        assert_eq!(stats.count, 100);
        assert_eq!(stats.p50, Duration::from_millis(50));
        assert_eq!(stats.p95, Duration::from_millis(95));
        assert_eq!(stats.max, Duration::from_millis(100));
        assert_eq!(stats.mean, Duration::from_micros(50_500));
        let one = DelayStats::from_delays([Duration::from_millis(7)]).unwrap();
        assert_eq!((one.p50, one.p95, one.max), (one.mean, one.mean, one.mean));
        assert_eq!(
            DelayStats::from_delays(std::iter::empty()),
            Err(QualityError::NoSamples)
        );
    }

    #[test]
    fn pairs_before_capture_are_counted_invalid() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let pairs = [
            (t0, t0 + ms(80)),
            (t0 + ms(20), t0 + ms(140)),
            (t0 + ms(50), t0 + ms(10)),
        ];
        let stats = DelayStats::from_pairs(pairs).unwrap();
        assert_eq!((stats.count, stats.invalid), (2, 1));
        assert_eq!(stats.mean, ms(100));
        assert_eq!(stats.max, ms(120));
    }
}
