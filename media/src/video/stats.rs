//! Frame buffer statistics: counters, frame rate, and freezes as WebRTC defines them
//! (`freezeCount`, `totalFreezesDuration` in W3C webrtc-stats).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Counters and rates of a [`super::FrameBuffer`], named after WebRTC's `getStats` where
/// one exists.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FrameBufferStats {
    /// Packets accepted into the buffer.
    pub packets_received: u64,
    /// Packets discarded as copies of one already buffered.
    pub packets_duplicated: u64,
    /// Packets discarded because their frame was already output or skipped.
    pub packets_late: u64,
    /// Frames whose packets all arrived (`framesReceived`).
    pub frames_received: u64,
    /// Frames output as decodable (`framesDecoded` before the decoder).
    pub frames_decodable: u64,
    /// Frames of which packets arrived but that were never output (`framesDropped`).
    pub frames_dropped: u64,
    /// Decodable keyframes (`keyFramesDecoded`).
    pub keyframes_decodable: u64,
    /// Sequence numbers sent in NACKs, retries included (`nackCount` counts packets).
    pub nack_count: u64,
    /// Packets noticed missing that arrived afterwards (reordered or retransmitted).
    pub packets_recovered: u64,
    /// Missing packets given up on (too old, too many retries, list full).
    pub packets_unrecovered: u64,
    /// Keyframe requests (`pliCount`).
    pub pli_count: u64,
    /// Freezes (`freezeCount`).
    pub freeze_count: u64,
    /// Time spent frozen (`totalFreezesDuration`).
    pub total_freezes_duration: Duration,
    /// Decodable frames during the last second (`framesPerSecond`).
    pub frames_per_second: u32,
}

/// Frame intervals averaged for the freeze threshold (WebRTC averages about 30).
const INTERVAL_WINDOW: usize = 30;
/// Intervals needed before freezes are judged.
const MIN_INTERVALS: usize = 5;
/// Most frame times kept for the frame rate (bounds memory at absurd rates).
const MAX_RATE_SAMPLES: usize = 1000;

/// Tracks when decodable frames appear: frame rate and freezes.
#[derive(Debug, Clone, Default)]
pub(crate) struct FrameTiming {
    /// When the last decodable frame appeared.
    last: Option<Instant>,
    /// Recent frame intervals and their sum.
    intervals: VecDeque<Duration>,
    sum: Duration,
    /// Times of decodable frames in the last second.
    recent: VecDeque<Instant>,
    pub(crate) freeze_count: u64,
    pub(crate) total_freezes_duration: Duration,
}

impl FrameTiming {
    /// A decodable frame appeared at `now`. A freeze is an interval of at least
    /// max(3 × average interval, average + 150 ms) (W3C webrtc-stats `freezeCount`).
    pub(crate) fn on_frame(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let interval = now.saturating_duration_since(last);
            if self.intervals.len() >= MIN_INTERVALS {
                let average = self.sum / self.intervals.len() as u32;
                let threshold = (average * 3).max(average + Duration::from_millis(150));
                if interval >= threshold {
                    self.freeze_count += 1;
                    self.total_freezes_duration += interval;
                }
            }
            if self.intervals.len() == INTERVAL_WINDOW
                && let Some(old) = self.intervals.pop_front()
            {
                self.sum -= old;
            }
            self.intervals.push_back(interval);
            self.sum += interval;
        }
        self.last = Some(now);
        if self.recent.len() == MAX_RATE_SAMPLES {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
    }

    /// Decodable frames in the second before `now`.
    pub(crate) fn frames_per_second(&self, now: Instant) -> u32 {
        let since = now.checked_sub(Duration::from_secs(1));
        self.recent
            .iter()
            .rev()
            .take_while(|&&t| since.is_none_or(|s| t > s))
            .count() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freezes_follow_the_webrtc_threshold() {
        let t0 = Instant::now();
        let mut timing = FrameTiming::default();
        let mut t = t0;
        // 30 fps: average 33 ms, threshold max(100, 183) = 183 ms.
        for _ in 0..10 {
            t += Duration::from_micros(33_333);
            timing.on_frame(t);
        }
        t += Duration::from_millis(170);
        timing.on_frame(t);
        assert_eq!(timing.freeze_count, 0, "170 ms is below the threshold");
        t += Duration::from_millis(400);
        timing.on_frame(t);
        assert_eq!(timing.freeze_count, 1);
        assert_eq!(timing.total_freezes_duration, Duration::from_millis(400));
    }

    #[test]
    fn frame_rate_counts_the_last_second() {
        let t0 = Instant::now();
        let mut timing = FrameTiming::default();
        for i in 0..60 {
            timing.on_frame(t0 + Duration::from_millis(i * 40));
        }
        // Frames at 1400..2360 ms: 25 in the second before 2360 ms (excluding 1360).
        assert_eq!(
            timing.frames_per_second(t0 + Duration::from_millis(2360)),
            25
        );
        assert_eq!(timing.frames_per_second(t0 + Duration::from_secs(10)), 0);
    }
}
