//! Connection quality of one participant, from what the SFU sees of its link (sans-IO).
//!
//! Inputs, once per stats interval: the loss on what it sends us (the fraction our
//! receiver reports give, per stream), the loss on what we send it (the fraction its
//! receiver reports give), the interarrival jitter of the audio it sends us, the RTCP
//! round-trip time, whether video it receives is paused because its bandwidth cannot
//! carry even the lowest layer, and whether anything arrived from it at all.
//!
//! Loss and jitter are smoothed (exponentially, time constant [`SMOOTHING`]) and scored
//! with the ITU-T G.107 E-model (`huddle_media::quality`): one-way delay taken as half
//! the round trip plus a jitter buffer of twice the jitter plus one 20 ms audio frame,
//! and the worse direction's loss as random loss on Opus, less what redundant audio
//! repairs: on a stream carrying RED (RFC 2198, each packet with the previous frame
//! inside) a frame is lost only when its packet and the next are both lost. How often
//! that happens depends on how bursty the loss is, which receiver reports do not say:
//! random loss `p` leaves `p²`, bursts of three leave most of `p`. A loss `p` on RED
//! audio is scored as `p × max(p, ½)` ([`RED_NEXT_LOST`]): bursts of two on average. The
//! score is an estimate of how a call over this participant's link sounds, not a
//! measurement of it: the other end's link counts too, and what concealment and Opus
//! FEC repair is not known here.
//!
//! The score becomes a level (`excellent` from MOS [`EXCELLENT_FROM`], `good` from
//! [`GOOD_FROM`], `poor` below) with hysteresis: a level is left downward as soon as the
//! score falls under its threshold, but entered upward only [`HYSTERESIS`] above it, so
//! an indicator does not flicker on a border. Video paused for bandwidth caps the level
//! at `poor`; nothing received for [`LOST_AFTER`] makes it `lost`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use huddle_media::quality::emodel::{EModelInput, GilbertLoss, OPUS_PROVISIONAL};
use str0m::media::{Mid, Rid};

use crate::ids::TrackKind;

/// MOS from which a link is `excellent`.
pub const EXCELLENT_FROM: f64 = 4.0;
/// MOS from which a link is `good`.
pub const GOOD_FROM: f64 = 3.5;
/// How far above a better level's threshold the score must be to move up to it.
pub const HYSTERESIS: f64 = 0.1;
/// Time constant of the smoothing of loss and jitter.
pub const SMOOTHING: Duration = Duration::from_secs(3);
/// A kind of media whose loss has not been reported for this long no longer counts.
pub const STALE_AFTER: Duration = Duration::from_secs(15);
/// Nothing received from a connected participant for this long: `lost`.
pub const LOST_AFTER: Duration = Duration::from_secs(3);
/// The chance assumed that the packet after a lost one is lost too, for what redundant
/// audio cannot repair: a mean loss burst of two packets. Random loss `p` has `p`, less
/// below 50 %; measured against listeners (`huddle bench call`, docs/benchmarking.md),
/// `p²` read bursty links excellent whose audio measured MOS 3.0, and no credit read
/// random-loss links poor whose audio measured 4.3.
pub const RED_NEXT_LOST: f64 = 0.5;
/// One Opus frame: packetization delay in the E-model's one-way delay.
const FRAME: Duration = Duration::from_millis(20);

/// A participant's connection quality, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QualityLevel {
    /// MOS at least [`EXCELLENT_FROM`].
    Excellent,
    /// MOS at least [`GOOD_FROM`].
    Good,
    /// Below that, or video it receives paused for bandwidth.
    Poor,
    /// Nothing received from it for [`LOST_AFTER`].
    Lost,
}

impl QualityLevel {
    /// Every level, best first.
    pub const ALL: [QualityLevel; 4] = [
        QualityLevel::Excellent,
        QualityLevel::Good,
        QualityLevel::Poor,
        QualityLevel::Lost,
    ];

    /// The protocol's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            QualityLevel::Excellent => "excellent",
            QualityLevel::Good => "good",
            QualityLevel::Poor => "poor",
            QualityLevel::Lost => "lost",
        }
    }
}

/// What [`QualityMeter::tick`] concluded, with the figures behind it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnectionQuality {
    /// The level (with hysteresis).
    pub level: QualityLevel,
    /// Estimated MOS (1–4.5) from the smoothed figures below.
    pub mos: f64,
    /// Smoothed loss fraction (0–1) of what it sends us, as its link loses it (before
    /// any repair by redundant audio).
    pub loss_up: f64,
    /// Smoothed loss fraction (0–1) of what we send it, likewise.
    pub loss_down: f64,
    /// The worse direction's loss after what redundant audio repairs: what is scored.
    pub loss_scored: f64,
    /// Smoothed interarrival jitter of the audio it sends us (the worst stream's;
    /// zero without audio).
    pub jitter: Duration,
    /// Latest RTCP round-trip time, when known.
    pub rtt: Option<Duration>,
    /// Video it receives is paused because not even the lowest layer fits its
    /// bandwidth.
    pub bandwidth_limited: bool,
}

/// One direction's loss, per kind of media (audio, video).
///
/// Receiver reports count a packet repaired by retransmission in time as received, so
/// video (repaired by NACK) and audio (which browsers do not repair; Opus FEC is not
/// seen here) are kept apart and the worse counts: a lossy link shows in its audio
/// while NACK hides it in the video, and failing repairs still show. Each kind is
/// smoothed on its own clock, as reports on audio come less often (every 5 s from some
/// stacks) than on video.
#[derive(Debug, Default)]
struct LossSamples {
    /// Packets per stream at its last sample (str0m's counts are cumulative).
    packets: HashMap<(Mid, Option<Rid>), u64>,
    /// Audio's, then video's.
    kinds: [KindLoss; 2],
}

#[derive(Debug, Default, Clone, Copy)]
struct KindLoss {
    /// Sums of loss × new packets (as lost, and as left after redundant audio's
    /// repair) and the sum of new packets since the last tick.
    weighted: Loss,
    weight: u64,
    /// Smoothed loss, and the tick that last sampled it.
    smoothed: Option<(Loss, Instant)>,
}

/// A loss fraction as the link loses packets, and as frames stay lost after redundant
/// audio's repair.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Loss {
    lost: f64,
    unrepaired: f64,
}

impl Loss {
    /// Each figure through `f`.
    fn map(self, f: impl Fn(f64) -> f64) -> Loss {
        self.zip(self, |x, _| f(x))
    }

    /// Each figure of `self` combined with the same figure of `other` by `f`.
    fn zip(self, other: Loss, f: impl Fn(f64, f64) -> f64) -> Loss {
        Loss {
            lost: f(self.lost, other.lost),
            unrepaired: f(self.unrepaired, other.unrepaired),
        }
    }
}

impl LossSamples {
    fn observe(
        &mut self,
        stream: (Mid, Option<Rid>),
        kind: TrackKind,
        red: bool,
        packets: u64,
        loss: Option<f32>,
    ) {
        let before = self.packets.insert(stream, packets).unwrap_or(0);
        let new = packets.saturating_sub(before);
        if let Some(loss) = loss.filter(|l| l.is_finite())
            && new > 0
        {
            let lost = f64::from(loss.clamp(0.0, 1.0));
            let unrepaired = if red && kind == TrackKind::Audio {
                lost * lost.max(RED_NEXT_LOST)
            } else {
                lost
            };
            let k = &mut self.kinds[usize::from(kind.is_video())];
            let sample = Loss { lost, unrepaired };
            k.weighted = k.weighted.zip(sample, |sum, l| sum + l * new as f64);
            k.weight += new;
        }
    }

    /// Folds what was sampled since the last tick into each kind's smoothed loss;
    /// returns the worse kind's, if any is known (each figure the worse of its own). A
    /// kind not sampled for [`STALE_AFTER`] (its stream ended, or its reports stopped)
    /// no longer counts.
    fn fold(&mut self, now: Instant) -> Option<Loss> {
        for k in &mut self.kinds {
            if k.weight > 0 {
                let n = k.weight as f64;
                let sample = k.weighted.map(|sum| sum / n);
                let smoothed = match k.smoothed {
                    Some((s, at)) => {
                        let a = smoothing(now.saturating_duration_since(at));
                        s.zip(sample, |s, x| s + a * (x - s))
                    }
                    None => sample,
                };
                k.smoothed = Some((smoothed, now));
            } else if k
                .smoothed
                .is_some_and(|(_, at)| now.saturating_duration_since(at) >= STALE_AFTER)
            {
                k.smoothed = None;
            }
            k.weighted = Loss::default();
            k.weight = 0;
        }
        self.kinds
            .iter()
            .filter_map(|k| k.smoothed.map(|(s, _)| s))
            .reduce(|a, b| a.zip(b, f64::max))
    }
}

/// The weight of a new sample `dt` after the last one ([`SMOOTHING`]'s time constant).
fn smoothing(dt: Duration) -> f64 {
    1.0 - (-dt.as_secs_f64() / SMOOTHING.as_secs_f64()).exp()
}

/// Turns one participant's stats into a [`ConnectionQuality`] once per interval.
#[derive(Debug)]
pub struct QualityMeter {
    up: LossSamples,
    down: LossSamples,
    /// The worst audio jitter sampled this interval.
    jitter_sample: Option<Duration>,
    /// Smoothed jitter, seconds.
    jitter: Option<f64>,
    /// Datagrams received at the last tick, and when that count last moved.
    heard: (u64, Instant),
    last_tick: Instant,
    level: Option<QualityLevel>,
}

impl QualityMeter {
    /// A meter for a participant connected (or joined) at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            up: LossSamples::default(),
            down: LossSamples::default(),
            jitter_sample: None,
            jitter: None,
            heard: (0, now),
            last_tick: now,
            level: None,
        }
    }

    /// A stream it sends us (`red`: audio with redundancy negotiated): cumulative
    /// packets, the loss fraction of our last receiver report on it, and its
    /// interarrival jitter.
    pub fn observe_up(
        &mut self,
        stream: (Mid, Option<Rid>),
        kind: TrackKind,
        red: bool,
        packets: u64,
        loss: Option<f32>,
        jitter: Duration,
    ) {
        self.up.observe(stream, kind, red, packets, loss);
        // Only audio's jitter: str0m 0.25 feeds a stream's jitter with the packets RTX
        // repairs too, old timestamps arriving late, and Chrome probes by resending old
        // packets over RTX, so its lowest simulcast layer, which carries the probes,
        // reads seconds of jitter. Audio is not resent.
        if kind == TrackKind::Audio {
            self.jitter_sample = Some(self.jitter_sample.map_or(jitter, |j| j.max(jitter)));
        }
    }

    /// A stream we send it (`red`: audio sent with redundancy): cumulative packets and
    /// the loss fraction its receiver reports gave since the last sample (`None`: no
    /// report came).
    pub fn observe_down(
        &mut self,
        stream: (Mid, Option<Rid>),
        kind: TrackKind,
        red: bool,
        packets: u64,
        loss: Option<f32>,
    ) {
        self.down.observe(stream, kind, red, packets, loss);
    }

    /// The latest level, if a tick has given one.
    pub fn level(&self) -> Option<QualityLevel> {
        self.level
    }

    /// Ends an interval at `now`: `packets_in` is every datagram received from it so
    /// far. `None` until a loss figure exists in either direction (nothing to score
    /// yet) unless it went silent.
    pub fn tick(
        &mut self,
        now: Instant,
        packets_in: u64,
        rtt: Option<Duration>,
        bandwidth_limited: bool,
    ) -> Option<ConnectionQuality> {
        let alpha = smoothing(now.saturating_duration_since(self.last_tick));
        self.last_tick = now;
        let up = self.up.fold(now);
        let down = self.down.fold(now);
        if let Some(j) = self.jitter_sample.take() {
            let j = j.as_secs_f64();
            self.jitter = Some(self.jitter.map_or(j, |s| s + alpha * (j - s)));
        }
        if packets_in != self.heard.0 {
            self.heard = (packets_in, now);
        }
        let silent = now.saturating_duration_since(self.heard.1) >= LOST_AFTER;
        if up.is_none() && down.is_none() && !silent {
            return None;
        }
        let (up, down) = (up.unwrap_or_default(), down.unwrap_or_default());
        let loss_scored = up.unrepaired.max(down.unrepaired);
        let jitter = Duration::from_secs_f64(self.jitter.unwrap_or(0.0).clamp(0.0, 10.0));
        let one_way = rtt.unwrap_or_default().min(Duration::from_secs(10)) / 2 + jitter * 2 + FRAME;
        let mos = score(one_way, loss_scored);
        let level = if silent {
            QualityLevel::Lost
        } else {
            let heard = level_for(mos, self.level);
            if bandwidth_limited {
                heard.max(QualityLevel::Poor)
            } else {
                heard
            }
        };
        self.level = Some(level);
        Some(ConnectionQuality {
            level,
            mos,
            loss_up: up.lost,
            loss_down: down.lost,
            loss_scored,
            jitter,
            rtt,
            bandwidth_limited,
        })
    }
}

/// E-model MOS of a call with this one-way delay and random loss on Opus.
pub fn score(one_way: Duration, loss: f64) -> f64 {
    let loss = GilbertLoss {
        ppl_percent: (loss * 100.0).clamp(0.0, 100.0),
        burst_r: 1.0,
    };
    // The inputs are bounded above, so the E-model accepts them; a refusal would be a
    // bug in these bounds, scored as the worst.
    EModelInput::for_call(OPUS_PROVISIONAL, one_way, loss)
        .rate()
        .map_or(1.0, |r| r.mos)
}

/// The level for `mos` when the current one is `current`: downward at the thresholds,
/// upward only [`HYSTERESIS`] above them.
pub fn level_for(mos: f64, current: Option<QualityLevel>) -> QualityLevel {
    let from = |level: QualityLevel, threshold: f64| {
        if current.is_some_and(|c| c > level) {
            threshold + HYSTERESIS
        } else {
            threshold
        }
    };
    if mos >= from(QualityLevel::Excellent, EXCELLENT_FROM) {
        QualityLevel::Excellent
    } else if mos >= from(QualityLevel::Good, GOOD_FROM) {
        QualityLevel::Good
    } else {
        QualityLevel::Poor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audio() -> (Mid, Option<Rid>) {
        (Mid::from("0"), None)
    }

    /// Ticks once a second for `secs` seconds, `pps` packets a second each way at
    /// `loss_up` / `loss_down`; returns the last quality.
    fn run(
        m: &mut QualityMeter,
        t: &mut Instant,
        packets: &mut u64,
        secs: u32,
        (loss_up, loss_down): (f32, f32),
    ) -> Option<ConnectionQuality> {
        let mut last = None;
        for _ in 0..secs {
            *t += Duration::from_secs(1);
            *packets += 50;
            m.observe_up(
                audio(),
                TrackKind::Audio,
                false,
                *packets,
                Some(loss_up),
                Duration::from_millis(5),
            );
            m.observe_down(audio(), TrackKind::Audio, false, *packets, Some(loss_down));
            last = m.tick(*t, *packets, Some(Duration::from_millis(40)), false);
        }
        last
    }

    #[test]
    fn the_score_falls_with_loss_and_delay() {
        let clean = score(Duration::from_millis(40), 0.0);
        assert!(clean > 4.3, "{clean}");
        let mut last = clean;
        for loss in [0.01, 0.03, 0.05, 0.10, 0.20] {
            let s = score(Duration::from_millis(40), loss);
            assert!(s < last, "{loss}: {s} !< {last}");
            last = s;
        }
        // The levels' borders in loss, at a short delay.
        assert!(score(Duration::from_millis(40), 0.02) >= EXCELLENT_FROM);
        assert!(score(Duration::from_millis(40), 0.06) < EXCELLENT_FROM);
        assert!(score(Duration::from_millis(40), 0.06) >= GOOD_FROM);
        assert!(score(Duration::from_millis(40), 0.12) < GOOD_FROM);
        // Delay alone: half a second one way is no longer excellent.
        assert!(score(Duration::from_millis(500), 0.0) < EXCELLENT_FROM);
        // Out-of-range inputs are bounded, not refused.
        assert!(score(Duration::from_secs(3600), 7.0) >= 1.0);
    }

    /// Redundant audio repairs a lost packet whose next one arrives: 10% loss is scored
    /// as 5% (bursts of two assumed, [`RED_NEXT_LOST`]), and 60% as 36% (at that loss
    /// even random loss takes out the next packet more often), while the loss figures
    /// stay what the link lost. Video's loss is taken as reported (NACK's repairs are
    /// already in it).
    #[test]
    fn redundant_audio_is_scored_by_what_it_leaves_lost() {
        let t0 = Instant::now();
        let feed = |red: bool, kind: TrackKind, loss: f32| {
            let mut m = QualityMeter::new(t0);
            let mut last = None;
            for s in 1..=10u64 {
                let t = t0 + Duration::from_secs(s);
                m.observe_down(audio(), kind, red, s * 50, Some(loss));
                last = m.tick(t, s * 50, Some(Duration::from_millis(40)), false);
            }
            last.unwrap()
        };
        let plain = feed(false, TrackKind::Audio, 0.10);
        let red = feed(true, TrackKind::Audio, 0.10);
        assert_eq!(plain.level, QualityLevel::Poor, "{plain:?}");
        assert!(red.level < QualityLevel::Poor, "{red:?}");
        assert!(red.mos > plain.mos + 0.3, "{red:?} against {plain:?}");
        assert!((red.loss_down - 0.10).abs() < 1e-6, "{red:?}");
        assert!((red.loss_scored - 0.05).abs() < 1e-6, "{red:?}");
        assert!((plain.loss_scored - 0.10).abs() < 1e-6, "{plain:?}");
        let heavy = feed(true, TrackKind::Audio, 0.60);
        assert!((heavy.loss_scored - 0.36).abs() < 1e-6, "{heavy:?}");
        // RED means nothing on a video stream.
        let video = feed(true, TrackKind::Video, 0.10);
        assert!((video.loss_scored - 0.10).abs() < 1e-6, "{video:?}");
    }

    #[test]
    fn levels_move_down_at_the_threshold_and_up_past_the_hysteresis() {
        use QualityLevel::*;
        assert_eq!(level_for(4.05, None), Excellent);
        assert_eq!(level_for(3.95, Some(Excellent)), Good);
        assert_eq!(level_for(4.05, Some(Good)), Good, "within the hysteresis");
        assert_eq!(level_for(4.11, Some(Good)), Excellent);
        assert_eq!(level_for(3.45, Some(Good)), Poor);
        assert_eq!(level_for(3.55, Some(Poor)), Poor);
        assert_eq!(level_for(3.61, Some(Poor)), Good);
        assert_eq!(level_for(4.2, Some(Lost)), Excellent);
        assert_eq!(level_for(3.55, Some(Lost)), Poor);
    }

    #[test]
    fn nothing_is_scored_before_a_loss_figure() {
        let t = Instant::now();
        let mut m = QualityMeter::new(t);
        m.observe_up(audio(), TrackKind::Audio, false, 10, None, Duration::ZERO);
        assert_eq!(m.tick(t + Duration::from_secs(1), 10, None, false), None);
        assert_eq!(m.level(), None);
    }

    #[test]
    fn loss_in_either_direction_lowers_the_level_and_it_recovers() {
        let mut t = Instant::now();
        let mut m = QualityMeter::new(t);
        let mut n = 0;
        let q = run(&mut m, &mut t, &mut n, 5, (0.0, 0.0)).unwrap();
        assert_eq!(q.level, QualityLevel::Excellent, "{q:?}");
        assert!(q.loss_up == 0.0 && q.loss_down == 0.0);
        assert_eq!(q.jitter, Duration::from_millis(5));
        // 15% toward it: poor within a few seconds (smoothed), not at once.
        let q = run(&mut m, &mut t, &mut n, 1, (0.0, 0.15)).unwrap();
        assert_ne!(q.level, QualityLevel::Poor, "one bad second: {q:?}");
        let q = run(&mut m, &mut t, &mut n, 8, (0.0, 0.15)).unwrap();
        assert_eq!(q.level, QualityLevel::Poor, "{q:?}");
        assert!(
            (q.loss_down - 0.15).abs() < 0.02 && q.loss_up == 0.0,
            "{q:?}"
        );
        // Clean again: back to excellent.
        let q = run(&mut m, &mut t, &mut n, 15, (0.0, 0.0)).unwrap();
        assert_eq!(q.level, QualityLevel::Excellent, "{q:?}");
        // The same from its side.
        let q = run(&mut m, &mut t, &mut n, 10, (0.15, 0.0)).unwrap();
        assert_eq!(q.level, QualityLevel::Poor, "{q:?}");
        assert!((q.loss_up - 0.15).abs() < 0.02, "{q:?}");
    }

    #[test]
    fn loss_is_weighted_by_packets_within_a_kind_and_the_worse_kind_counts() {
        let t = Instant::now();
        let mut m = QualityMeter::new(t);
        let video = |rid: &str| (Mid::from("1"), Some(Rid::from(rid)));
        // Video: 900 packets at 1% and 100 at 91%: 10%.
        m.observe_up(
            video("h"),
            TrackKind::Video,
            false,
            900,
            Some(0.01),
            Duration::from_millis(30),
        );
        m.observe_up(
            video("l"),
            TrackKind::Video,
            false,
            100,
            Some(0.91),
            Duration::from_millis(30),
        );
        // A stream without new packets does not count, whatever its figure.
        m.observe_up(
            audio(),
            TrackKind::Audio,
            false,
            0,
            Some(1.0),
            Duration::from_millis(2),
        );
        let q = m
            .tick(t + Duration::from_secs(1), 1000, None, false)
            .unwrap();
        assert!((q.loss_up - 0.10).abs() < 1e-6, "{q:?}");
        // Video's jitter is not scored (and this audio had no new packets, but its
        // jitter is current).
        assert_eq!(q.jitter, Duration::from_millis(2));
        // Audio at 20% beside many clean (repaired) video packets: 20%, not their mean.
        let mut m = QualityMeter::new(t);
        m.observe_down(audio(), TrackKind::Audio, false, 50, Some(0.2));
        m.observe_down(video("h"), TrackKind::Video, false, 5000, Some(0.0));
        let q = m.tick(t + Duration::from_secs(1), 1, None, false).unwrap();
        assert!((q.loss_down - 0.2).abs() < 1e-6, "{q:?}");
        assert_eq!(q.jitter, Duration::ZERO, "no stream of its own: no jitter");
        // Non-finite or out-of-range fractions are bounded.
        m.observe_down(audio(), TrackKind::Audio, false, 60, Some(f32::NAN));
        m.observe_down(video("h"), TrackKind::Video, false, 5010, Some(7.0));
        let q = m.tick(t + Duration::from_secs(2), 2, None, false).unwrap();
        assert!(q.loss_down <= 1.0, "{q:?}");
    }

    #[test]
    fn sparse_audio_reports_are_not_diluted_by_frequent_video_ones_and_go_stale() {
        // Audio lossy at 15%, reported every 5 s; video repaired (0%) reported every
        // second, as from a receiver that NACKs video and not audio.
        let mut t = Instant::now();
        let mut m = QualityMeter::new(t);
        let video = (Mid::from("1"), None);
        let mut q = None;
        for s in 1..=20u64 {
            t += Duration::from_secs(1);
            m.observe_down(video, TrackKind::Video, false, s * 100, Some(0.0));
            if s % 5 == 0 {
                m.observe_down(audio(), TrackKind::Audio, false, s * 50, Some(0.15));
            }
            q = m.tick(t, s * 10, None, false);
        }
        let q = q.unwrap();
        assert!((q.loss_down - 0.15).abs() < 0.01, "{q:?}");
        assert_eq!(q.level, QualityLevel::Poor, "{q:?}");
        // The audio reports stop (its track ended): after STALE_AFTER only video counts.
        let mut q = None;
        for s in 21..=(21 + STALE_AFTER.as_secs()) {
            t += Duration::from_secs(1);
            m.observe_down(video, TrackKind::Video, false, s * 100, Some(0.0));
            q = m.tick(t, s * 10, None, false);
        }
        let q = q.unwrap();
        assert_eq!(q.loss_down, 0.0, "{q:?}");
        assert_eq!(q.level, QualityLevel::Excellent, "{q:?}");
    }

    #[test]
    fn silence_is_lost_and_paused_video_caps_at_poor() {
        let mut t = Instant::now();
        let mut m = QualityMeter::new(t);
        let mut n = 0;
        run(&mut m, &mut t, &mut n, 3, (0.0, 0.0));
        // Nothing arrives any more.
        let mut level = None;
        for _ in 0..3 {
            t += Duration::from_secs(1);
            level = m.tick(t, n, None, false).map(|q| q.level);
        }
        assert_eq!(level, Some(QualityLevel::Lost));
        // Back, but its video does not fit.
        t += Duration::from_secs(1);
        n += 50;
        let q = m.tick(t, n, None, true).unwrap();
        assert_eq!(q.level, QualityLevel::Poor, "{q:?}");
        assert!(q.bandwidth_limited && q.mos > EXCELLENT_FROM, "{q:?}");
        t += Duration::from_secs(1);
        n += 50;
        assert_eq!(
            m.tick(t, n, None, false).unwrap().level,
            QualityLevel::Excellent
        );
        // A silent participant never scored is lost too.
        let t0 = Instant::now();
        let mut m = QualityMeter::new(t0);
        assert_eq!(
            m.tick(t0 + LOST_AFTER, 0, None, false).map(|q| q.level),
            Some(QualityLevel::Lost)
        );
    }
}
