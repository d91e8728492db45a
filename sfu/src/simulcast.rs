//! Simulcast layer choice (sans-IO): per-layer bitrate measurement, the split of a
//! subscriber's bandwidth over the video tracks it receives, the per-subscription layer
//! state machine (switch only at a keyframe of the target layer, fast downgrade,
//! upgrade with hysteresis) and RTP timestamp rewriting that keeps the outgoing stream
//! continuous across switches. Time and bitrates are parameters; nothing here reads a
//! clock or touches a socket.

use std::time::{Duration, Instant};

use crate::picture::Size;

/// The best quality a subscriber asks for on one track (`media_subscribe`'s
/// `max_quality`). Maps onto the layers the publisher actually sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Quality {
    /// The lowest layer.
    Low,
    /// The second layer (the lowest when only one is sent).
    Medium,
    /// The top layer (the default).
    #[default]
    High,
}

impl Quality {
    /// Parses `"low"`, `"medium"` or `"high"`.
    pub fn parse(s: &str) -> Option<Self> {
        [Quality::Low, Quality::Medium, Quality::High]
            .into_iter()
            .find(|q| q.as_str() == s)
    }

    /// Its name in `media_subscribe` and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Low => "low",
            Quality::Medium => "medium",
            Quality::High => "high",
        }
    }

    /// The highest layer index allowed among `layers` layers ordered low to high.
    pub fn max_index(self, layers: usize) -> usize {
        let top = layers.saturating_sub(1);
        match self {
            Quality::Low => 0,
            Quality::Medium => top.min(1),
            Quality::High => top,
        }
    }
}

/// A subscriber's limit on the layers of one simulcast track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerLimit {
    /// The best quality wanted.
    Quality(Quality),
    /// The largest picture wanted (`None`: no limit).
    Size(Option<Size>),
}

/// The highest of a track's layers (sizes low to high, `None` where no keyframe has
/// told it yet) whose picture fits within `max`: the one below the first layer known to
/// be larger in either dimension; the lowest layer when even that one is larger.
pub fn highest_layer_within(sizes: &[Option<Size>], max: Size) -> usize {
    sizes
        .iter()
        .position(|s| s.is_some_and(|(w, h)| w > max.0 || h > max.1))
        .map_or(sizes.len().saturating_sub(1), |i| i.saturating_sub(1))
}

/// Orders simulcast rids from low to high quality. RFC 8853 gives rids no meaning, so
/// the common naming schemes are recognised ("q"/"h"/"f" of libwebrtc samples and
/// LiveKit, "l"/"m"/"h", "low"/"mid"/"high"); other names keep their SDP order, which
/// by the same convention lists the lowest layer first.
pub fn order_rids<S: AsRef<str>>(rids: &[S]) -> Vec<usize> {
    const SCHEMES: [&[&str]; 3] = [&["q", "h", "f"], &["l", "m", "h"], &["low", "mid", "high"]];
    let mut order: Vec<usize> = (0..rids.len()).collect();
    for scheme in SCHEMES {
        let ranks: Option<Vec<usize>> = rids
            .iter()
            .map(|r| scheme.iter().position(|s| *s == r.as_ref()))
            .collect();
        if let Some(ranks) = ranks {
            order.sort_by_key(|i| ranks[*i]);
            return order;
        }
    }
    order
}

/// Bitrate of one incoming layer (or unlayered track), measured over windows of at
/// least [`RateMeter::WINDOW`] and smoothed, so a keyframe does not look like a rate.
#[derive(Debug, Clone, Default)]
pub struct RateMeter {
    /// Bytes since `window_start`.
    bytes: u64,
    /// Start of the current window; `None` before the first frame.
    window_start: Option<Instant>,
    /// Smoothed rate in bits per second; 0 until one window has closed.
    rate_bps: u64,
    /// When the last frame arrived, to tell a layer the publisher stopped sending.
    last_frame: Option<Instant>,
}

impl RateMeter {
    /// Shortest measurement window.
    pub const WINDOW: Duration = Duration::from_secs(1);
    /// A layer silent this long is treated as stopped (publisher's own congestion
    /// control or a paused encoding) and is not chosen.
    pub const STALE: Duration = Duration::from_millis(1500);

    /// Counts a frame of `bytes` arriving at `now`.
    pub fn add(&mut self, bytes: usize, now: Instant) {
        self.bytes = self.bytes.saturating_add(bytes as u64);
        self.last_frame = Some(now);
        let start = *self.window_start.get_or_insert(now);
        let span = now.saturating_duration_since(start);
        if span >= Self::WINDOW {
            let inst = (self.bytes as f64 * 8.0 / span.as_secs_f64()) as u64;
            // Half-weight smoothing: a rate change shows within two windows.
            self.rate_bps = if self.rate_bps == 0 {
                inst
            } else {
                (self.rate_bps + inst) / 2
            };
            self.bytes = 0;
            self.window_start = Some(now);
        }
    }

    /// The smoothed rate; 0 until measured.
    pub fn rate_bps(&self) -> u64 {
        self.rate_bps
    }

    /// Whether frames arrived recently.
    pub fn active(&self, now: Instant) -> bool {
        self.last_frame
            .is_some_and(|t| now.saturating_duration_since(t) < Self::STALE)
    }
}

/// What the allocator knows of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerInfo {
    /// Measured bitrate; 0 until the first measurement window has closed.
    pub bitrate_bps: u64,
    /// Frames arrive on it.
    pub active: bool,
}

/// One simulcast video track a subscriber receives, for [`allocate`].
#[derive(Debug, Clone, Copy)]
pub struct VideoDemand<'a> {
    /// Its layers, low to high.
    pub layers: &'a [LayerInfo],
    /// The subscriber's request.
    pub max_quality: Quality,
}

/// The allocation's choice for one simulcast track of one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Nothing to choose yet: no layer is active, or an active one is not measured yet
    /// (a new publisher's first second: choosing blind would start every subscriber on
    /// the top layer).
    Unknown,
    /// Not even the lowest running layer (this one) fits: the track is to be paused
    /// for this subscriber (its audio keeps flowing), once the shortage has lasted
    /// [`Holds::pause`].
    Paused(usize),
    /// This layer.
    Layer(usize),
}

impl Choice {
    /// The layer, if one is chosen.
    pub fn layer(self) -> Option<usize> {
        match self {
            Choice::Layer(l) => Some(l),
            _ => None,
        }
    }
}

/// Splits `budget_bps` over simulcast tracks: each track in turn gets its lowest active
/// layer while the budget allows (audio was taken out of it before); a track whose
/// lowest layer no longer fits is paused. Then the tracks are raised one layer at a
/// time in turn while the budget allows, up to each request. Writes the choice per
/// track to `out`.
pub fn allocate(budget_bps: u64, tracks: &[VideoDemand<'_>], out: &mut Vec<Choice>) {
    out.clear();
    let mut spent: u64 = 0;
    for t in tracks {
        let measured = t.layers.iter().all(|l| !l.active || l.bitrate_bps > 0);
        let lowest = t.layers.iter().position(|l| l.active).filter(|_| measured);
        let choice = match lowest {
            None => Choice::Unknown,
            Some(i) if spent.saturating_add(t.layers[i].bitrate_bps) <= budget_bps => {
                spent += t.layers[i].bitrate_bps;
                Choice::Layer(i)
            }
            Some(i) => Choice::Paused(i),
        };
        out.push(choice);
    }
    loop {
        let mut raised = false;
        for (t, chosen) in tracks.iter().zip(out.iter_mut()) {
            let Choice::Layer(cur) = *chosen else {
                continue;
            };
            let max = t.max_quality.max_index(t.layers.len());
            let Some(next) = (cur + 1..=max).find(|i| t.layers.get(*i).is_some_and(|l| l.active))
            else {
                continue;
            };
            let extra = t.layers[next]
                .bitrate_bps
                .saturating_sub(t.layers[cur].bitrate_bps);
            if spent.saturating_add(extra) <= budget_bps {
                spent += extra;
                *chosen = Choice::Layer(next);
                raised = true;
            }
        }
        if !raised {
            return;
        }
    }
}

/// How long an allocation must persist before the selector follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holds {
    /// A higher layer, or resuming a paused track, must have fit this long.
    pub upgrade: Duration,
    /// The lowest layer must have not fitted this long before the track is paused; the
    /// lowest layer is forwarded meanwhile. A send-side estimate dips for a second or
    /// two when the path (or a busy host) delays packets for a moment, and a pause costs
    /// the subscriber the upgrade hold and a keyframe to come back from. Zero where the
    /// shortage is certain (a configured cap or the subscriber's REMB).
    pub pause: Duration,
}

/// What to do with a frame of one layer for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameAction {
    /// Forward it (the layer being sent).
    Forward,
    /// Forward it: a keyframe of the target layer, which is now the layer being sent.
    Switch,
    /// Not for this subscriber.
    Drop,
}

/// Layer state of one (subscriber, simulcast track) pair.
#[derive(Debug, Clone, Default)]
pub struct LayerSelector {
    /// Layer being forwarded; `None` until the first keyframe.
    current: Option<usize>,
    /// Layer wanted; the switch happens at its next keyframe.
    target: Option<usize>,
    /// Since when the allocation has allowed a higher layer than `current` without a
    /// break (upgrade hysteresis).
    upgrade_since: Option<Instant>,
    /// The next upgrade is the subscriber's own request: no hysteresis.
    requested: bool,
    /// Paused because not even the lowest layer fits the subscriber's bandwidth;
    /// resumed like an upgrade (after `hold`, with headroom) at a keyframe.
    paused: bool,
    /// Since when not even the lowest layer has fitted, while not paused yet.
    short_since: Option<Instant>,
    /// It stands for an unlayered video track (its one stream is layer 0).
    single: bool,
}

impl LayerSelector {
    /// A selector that waits for its first allocation.
    pub fn new() -> Self {
        Self::default()
    }

    /// A selector for an unlayered video track, which the allocation treats as one
    /// layer: its stream is already flowing (layer 0 is current, no keyframe awaited),
    /// so it only ever pauses when even that one does not fit, and resumes at a
    /// keyframe.
    pub fn single() -> Self {
        Self {
            current: Some(0),
            target: Some(0),
            single: true,
            ..Self::new()
        }
    }

    /// Whether it stands for an unlayered track ([`LayerSelector::single`]).
    pub fn is_single(&self) -> bool {
        self.single
    }

    /// The subscriber changed its quality limit from `before` to `after` (the limit
    /// itself is the subscription's, `Peer::set_limit`): a better one is granted
    /// without waiting out the hysteresis (the allocation still has to allow it); a
    /// worse one needs nothing, the allocation's lower target is taken at once.
    pub fn quality_limit_changed(&mut self, before: Quality, after: Quality) {
        if after > before {
            self.request_upgrade();
        }
    }

    /// The subscriber raised another limit (a larger picture): the next allocation's
    /// upgrade is granted without waiting out the hysteresis.
    pub fn request_upgrade(&mut self) {
        self.requested = true;
    }

    /// The layer being forwarded.
    pub fn current(&self) -> Option<usize> {
        self.current
    }

    /// The layer wanted.
    pub fn target(&self) -> Option<usize> {
        self.target
    }

    /// Whether the track is paused for lack of bandwidth.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Applies an allocation: `down` is the choice the full budget allows, `up` the one
    /// the budget minus upgrade headroom allows. A lower layer is taken at once
    /// (congestion); a pause once not even the lowest layer has fitted for
    /// `holds.pause` (until then the lowest layer is sent); a higher layer, or
    /// resuming, only after `up` stayed above the current layer for `holds.upgrade`.
    /// `current_active` is false when the publisher stopped sending the current layer.
    /// Returns the layer a keyframe is needed from, if a switch is pending.
    pub fn update(
        &mut self,
        down: Choice,
        up: Choice,
        current_active: bool,
        holds: Holds,
        now: Instant,
    ) -> Option<usize> {
        let hold = holds.upgrade;
        let (mut down_layer, mut up_layer) = (down.layer(), up.layer());
        let mut pause = false;
        if let Choice::Paused(lowest) = down {
            let since = *self.short_since.get_or_insert(now);
            if self.paused || now.saturating_duration_since(since) >= holds.pause {
                pause = true;
            } else {
                // Short, but not for long yet: the lowest layer meanwhile, no upgrade.
                down_layer = Some(lowest);
                up_layer = None;
            }
        } else {
            self.short_since = None;
        }
        if pause {
            self.paused = true;
            self.current = None;
            self.target = None;
            self.upgrade_since = None;
        } else if self.paused {
            match up_layer {
                Some(u) => {
                    let since = *self.upgrade_since.get_or_insert(now);
                    if self.requested || now.saturating_duration_since(since) >= hold {
                        self.target = Some(u);
                    }
                }
                None => {
                    self.target = None;
                    self.upgrade_since = None;
                }
            }
        } else {
            match self.current {
                None => self.target = down_layer,
                Some(_) if !current_active => {
                    self.target = down_layer;
                    self.upgrade_since = None;
                }
                Some(cur) if down_layer.is_some_and(|d| d < cur) => {
                    self.target = down_layer;
                    self.upgrade_since = None;
                }
                Some(cur) if up_layer.is_some_and(|u| u > cur) => {
                    let since = *self.upgrade_since.get_or_insert(now);
                    if self.requested || now.saturating_duration_since(since) >= hold {
                        self.target = up_layer;
                    }
                }
                Some(cur) => {
                    self.target = Some(cur);
                    self.upgrade_since = None;
                }
            }
        }
        self.requested = false;
        self.pending()
    }

    /// The layer a keyframe is awaited from.
    pub fn pending(&self) -> Option<usize> {
        match (self.current, self.target) {
            (c, Some(t)) if c != Some(t) => Some(t),
            _ => None,
        }
    }

    /// Decides on a frame of `layer`. The switch happens on a keyframe of the target
    /// layer only, so the subscriber's decoder never sees a frame it cannot decode.
    pub fn on_frame(&mut self, layer: usize, keyframe: bool) -> FrameAction {
        if keyframe && self.pending() == Some(layer) {
            self.current = Some(layer);
            self.upgrade_since = None;
            self.paused = false;
            return FrameAction::Switch;
        }
        if self.current == Some(layer) {
            FrameAction::Forward
        } else {
            FrameAction::Drop
        }
    }
}

/// Rewrites RTP timestamps of one outgoing stream fed from several layers, each with
/// its own random timestamp base (RFC 3550 §5.1), so the subscriber sees one stream
/// whose timestamps keep advancing with real time across switches.
#[derive(Debug, Clone, Default)]
pub struct TimestampRewriter {
    /// Added to incoming timestamps (mod 2^32).
    offset: u32,
    /// Last timestamp written and the arrival time of its frame.
    last: Option<(u32, Instant)>,
}

impl TimestampRewriter {
    /// The outgoing timestamp of a frame with timestamp `ts` (clock `clock_hz`)
    /// that arrived at `arrival`. On the first frame of a newly switched-to layer
    /// (`switched`), the offset is chosen so the timestamp advances from the last one
    /// written by the arrival-time difference (at least one tick).
    pub fn rewrite(&mut self, ts: u32, arrival: Instant, clock_hz: u32, switched: bool) -> u32 {
        if switched && let Some((last_ts, last_at)) = self.last {
            let elapsed = arrival.saturating_duration_since(last_at);
            let ticks = (elapsed.as_secs_f64() * f64::from(clock_hz)) as u64;
            let ticks = ticks.clamp(1, u64::from(u32::MAX / 2)) as u32;
            self.offset = last_ts.wrapping_add(ticks).wrapping_sub(ts);
        }
        let out = ts.wrapping_add(self.offset);
        self.last = Some((out, arrival));
        out
    }
}

#[cfg(test)]
#[path = "simulcast_tests.rs"]
mod tests;
