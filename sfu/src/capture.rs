//! When a publisher's frames were captured, in this machine's time, from its sender
//! reports (sans-IO).
//!
//! The SFU writes every forwarded frame with a wallclock, and str0m's sender reports
//! toward a subscriber map RTP time to that wallclock (RFC 3550 §6.4.1). A receiver
//! lines up audio and video by those reports. With the arrival time as the wallclock,
//! each stream's mapping carries that stream's own delay before the SFU: encoding and
//! pacing of a video frame (tens of milliseconds more than an audio frame's), the wait
//! for a NACK's repair, and the reports of different streams disagree by as much. The
//! publisher's own reports map every stream to its one capture clock (RFC 3550 §6.4.1:
//! "the same wallclock for all media of a participant"), so the SFU maps each frame
//! through its stream's latest report to the publisher's clock, and that clock to
//! local time by the smallest arrival lag seen: the same shift for every stream of the
//! publisher, which keeps their alignment, and never later than the arrival (str0m
//! needs a written wallclock to be in the past).

use std::time::{Duration, Instant, SystemTime};

use str0m::media::MediaTime;
use str0m::rtp::rtcp::SenderInfo;

/// The smallest lag is taken over the current and the previous window of this length,
/// so that it follows a publisher clock drifting against ours.
const LAG_WINDOW: Duration = Duration::from_secs(5);

/// A frame lagging the smallest lag by more than this means the publisher's clock (or
/// its reports) jumped: the lag starts again from it.
const MAX_LAG_SPREAD: Duration = Duration::from_secs(2);

/// A report older than this against the frame (in RTP time) is not used: a 32-bit
/// timestamp difference that large is more likely a wrap or a new source than time.
const MAX_REPORT_AGE: Duration = Duration::from_secs(60);

/// One publisher's capture clock in local time.
#[derive(Debug)]
pub struct CaptureClock {
    /// Local instant and system time read together: the publisher's NTP times (system
    /// times) are placed on the `Instant` line through it.
    anchor: (Instant, SystemTime),
    /// Smallest arrival lag (arrival minus capture, nanoseconds) in the current and the
    /// previous window.
    min_lag: [Option<i64>; 2],
    /// When the current window started.
    window_start: Instant,
}

impl CaptureClock {
    pub fn new(now: Instant) -> Self {
        Self {
            anchor: (now, SystemTime::now()),
            min_lag: [None, None],
            window_start: now,
        }
    }

    /// The wallclock to write a frame with: its capture time (RTP `time`, mapped by its
    /// stream's latest sender report `report`) shifted onto local time, or its
    /// `arrival` when there is no usable report.
    pub fn wallclock(
        &mut self,
        time: MediaTime,
        report: Option<&SenderInfo>,
        arrival: Instant,
    ) -> Instant {
        let Some(capture) = report.and_then(|r| self.capture_ns(time, r)) else {
            return arrival;
        };
        let arrival_ns = signed_ns(arrival, self.anchor.0);
        let lag = arrival_ns - capture;
        if arrival.saturating_duration_since(self.window_start) >= LAG_WINDOW {
            self.min_lag = [None, self.min_lag[0]];
            self.window_start = arrival;
        }
        let smallest = self.min_lag.iter().flatten().copied().min();
        let spread = MAX_LAG_SPREAD.as_nanos() as i64;
        match smallest {
            Some(m) if lag >= m && lag - m <= spread => {}
            Some(m) if lag < m => {}
            // Out of reach of the past lags (or the first): start again from this one.
            _ => self.min_lag = [None, None],
        }
        let current = &mut self.min_lag[0];
        *current = Some(current.map_or(lag, |c| c.min(lag)));
        let smallest = self.min_lag.iter().flatten().copied().min().unwrap_or(lag);
        // capture + smallest lag <= capture + lag = arrival.
        let behind = u64::try_from(lag - smallest).unwrap_or(0);
        arrival
            .checked_sub(Duration::from_nanos(behind))
            .unwrap_or(arrival)
    }

    /// The capture time of the frame at RTP `time`, in nanoseconds from the anchor, by
    /// `report`. `None` for a report too far from the frame.
    fn capture_ns(&self, time: MediaTime, report: &SenderInfo) -> Option<i64> {
        let rate = i64::from(time.frequency().get());
        // RTP timestamps are 32 bits; the report's comes raw (str0m keeps it unscaled).
        let frame = time.numer() as u32;
        let reported = report.rtp_time.numer() as u32;
        let ticks = i64::from(frame.wrapping_sub(reported) as i32);
        let offset_ns = ticks.checked_mul(1_000_000_000)? / rate.max(1);
        if offset_ns.unsigned_abs() > MAX_REPORT_AGE.as_nanos() as u64 {
            return None;
        }
        let report_ns = match report.ntp_time.duration_since(self.anchor.1) {
            Ok(d) => i64::try_from(d.as_nanos()).ok()?,
            Err(e) => -i64::try_from(e.duration().as_nanos()).ok()?,
        };
        report_ns.checked_add(offset_ns)
    }
}

/// `t - anchor` in nanoseconds, negative when `t` is earlier.
fn signed_ns(t: Instant, anchor: Instant) -> i64 {
    match t.checked_duration_since(anchor) {
        Some(d) => d.as_nanos() as i64,
        None => -(anchor.duration_since(t).as_nanos() as i64),
    }
}

#[cfg(test)]
mod tests {
    use str0m::media::Frequency;
    use str0m::rtp::Ssrc;

    use super::*;

    /// A sender report saying RTP time `rtp` was captured at `at` (the publisher's
    /// clock).
    fn report(at: SystemTime, rtp: u32) -> SenderInfo {
        SenderInfo {
            ssrc: Ssrc::from(1),
            ntp_time: at,
            rtp_time: MediaTime::from_secs(u64::from(rtp)),
            sender_packet_count: 0,
            sender_octet_count: 0,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A clock started now, and a report that the publisher's RTP time 0 was captured
    /// at that moment (its clock agrees with ours).
    fn clock_and_report() -> (Instant, CaptureClock, SenderInfo) {
        let t0 = Instant::now();
        let clock = CaptureClock::new(t0);
        let sr = report(clock.anchor.1, 0);
        (t0, clock, sr)
    }

    /// The RTP time of the `n`th 20 ms Opus frame.
    fn opus_frame(n: u64) -> MediaTime {
        MediaTime::new(960 * n, Frequency::FORTY_EIGHT_KHZ)
    }

    /// Audio and video captured together keep their alignment whatever each one's
    /// delay before the SFU; the result is never after the arrival.
    #[test]
    fn streams_of_one_publisher_keep_their_capture_alignment() {
        let t0 = Instant::now();
        let mut clock = CaptureClock::new(t0);
        let sys0 = clock.anchor.1;
        // The publisher's clock runs 3 s ahead of ours. Audio (48 kHz) and video
        // (90 kHz) streams have unrelated RTP bases.
        let skew = Duration::from_secs(3);
        let audio_sr = report(sys0 + skew, 1_000);
        let video_sr = report(sys0 + skew, 4_000_000_000);
        for n in 0..50u64 {
            let captured = t0 + ms(20 * n);
            // Audio arrives 10 ms after capture, video 70 ms (encoding, pacing), with
            // a few milliseconds of jitter.
            let audio_at = captured + ms(10 + n % 3);
            let video_at = captured + ms(70 + n % 5);
            let a = clock.wallclock(
                MediaTime::new(1_000 + 960 * n, Frequency::FORTY_EIGHT_KHZ),
                Some(&audio_sr),
                audio_at,
            );
            let v = clock.wallclock(
                MediaTime::new(
                    u64::from(4_000_000_000u32.wrapping_add((1_800 * n) as u32)),
                    Frequency::NINETY_KHZ,
                ),
                Some(&video_sr),
                video_at,
            );
            assert!(a <= audio_at && v <= video_at);
            // Once the smallest lag is known (the first audio frame), both map to the
            // capture time plus that lag: the same for both.
            let apart = if v > a { v - a } else { a - v };
            assert!(apart <= ms(1), "frame {n}: audio and video {apart:?} apart");
            // ... which is 10 ms after the capture.
            assert!(a - captured <= ms(11), "frame {n}: {:?}", a - captured);
        }
    }

    #[test]
    fn without_a_report_the_arrival_is_the_wallclock() {
        let t0 = Instant::now();
        let mut clock = CaptureClock::new(t0);
        let at = t0 + ms(500);
        let time = MediaTime::new(123_456, Frequency::NINETY_KHZ);
        assert_eq!(clock.wallclock(time, None, at), at);
        // A report an hour away from the frame's RTP time is not believed.
        let far = report(clock.anchor.1, 123_456u32.wrapping_add(90_000 * 3_600));
        assert_eq!(clock.wallclock(time, Some(&far), at), at);
    }

    /// A frame held up (a repair) maps to its capture, not to its late arrival; a
    /// clock that jumps is followed rather than leaving every frame far in the past.
    #[test]
    fn late_frames_map_to_their_capture_and_jumps_restart_the_lag() {
        let (t0, mut clock, sr) = clock_and_report();
        let frame = opus_frame;
        for n in 0..10 {
            clock.wallclock(frame(n), Some(&sr), t0 + ms(20 * n + 5));
        }
        // Frame 10 comes 120 ms late: stamped at its capture plus the usual 5 ms.
        let w = clock.wallclock(frame(10), Some(&sr), t0 + ms(200 + 120));
        assert_eq!(w, t0 + ms(205));
        // The publisher's clock jumps 10 s back: its frames would be 10 s late by the
        // old lag; the lag starts again and they are stamped at their arrival.
        let jumped = report(clock.anchor.1 - Duration::from_secs(10), 960 * 11);
        let at = t0 + ms(225);
        assert_eq!(clock.wallclock(frame(11), Some(&jumped), at), at);
        let at = t0 + ms(246);
        assert_eq!(clock.wallclock(frame(12), Some(&jumped), at), at - ms(1));
    }

    /// The smallest lag is forgotten after two windows, so that a publisher clock
    /// drifting slower than ours does not leave the wallclock ever further behind.
    #[test]
    fn the_smallest_lag_follows_drift() {
        let (t0, mut clock, sr) = clock_and_report();
        let frame = opus_frame;
        // One quick frame (1 ms lag), then 20 ms lags for 12 s.
        clock.wallclock(frame(0), Some(&sr), t0 + ms(1));
        let mut last = Duration::ZERO;
        for n in 1..600 {
            let at = t0 + ms(20 * n + 20);
            let w = clock.wallclock(frame(n), Some(&sr), at);
            last = at - w;
        }
        assert_eq!(
            last,
            Duration::ZERO,
            "the 1 ms lag is still used after 12 s"
        );
    }
}
