//! A subscriber's bandwidth: its estimate from str0m, the cap, the split of what is
//! left after audio over its video tracks (simulcast layers, or an unlayered track sent
//! or paused), the desired bitrate handed back to the estimator so it probes for the
//! layers the subscriber could use; and, as a publisher, the REMB it is told.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::media::{Mid, Rid};
use str0m::rtp::Extension;

use super::{OutState, Peer};
use crate::config::BandwidthConfig;
use crate::ids::TrackId;
use crate::router::Router;
use crate::simulcast::{
    Choice, Holds, LayerInfo, LayerLimit, LayerSelector, VideoDemand, allocate,
    highest_layer_within,
};

/// How long an upgrade may wait with the estimate under the desired rate and not
/// rising before the estimator is restarted (`Peer::set_desired`).
const RESTART_ESTIMATE_AFTER: Duration = Duration::from_secs(2);
/// The longest wait between two such restarts while the upgrade keeps waiting.
const RESTART_ESTIMATE_MAX_WAIT: Duration = Duration::from_secs(32);

/// A change of the desired bitrate smaller than this fraction is not passed on (the
/// layer rates it is made of are themselves measurements that wobble).
const DESIRED_CHANGE: f64 = 0.05;

/// How long a REMB caps a subscriber without being repeated. Receivers that use REMB
/// send it every second or so (libwebrtc: at least once a second, sooner when it
/// drops); a cap that is not repeated would otherwise hold forever.
pub const REMB_TTL: Duration = Duration::from_secs(5);

/// How often a publisher is reminded of `max_publisher_bitrate` (a sender forgets a
/// REMB it is not sent again).
pub const REMB_TO_PUBLISHER_INTERVAL: Duration = Duration::from_secs(1);

/// Least a single-stream camera is asked to send for a one-to-one call's subscriber
/// whose link has less room: below this a picture is not worth having, and the
/// subscriber's side pauses it instead.
pub const FEEDBACK_FLOOR: u64 = 100_000;

impl Peer {
    /// A new send-side estimate toward this subscriber.
    pub fn on_estimate(&mut self, bps: u64) {
        if self.bandwidth.estimate.is_some_and(|before| bps < before) {
            self.bandwidth.fell = true;
        }
        self.bandwidth.estimate = Some(bps);
        self.bandwidth.no_feedback = false;
    }

    /// Whether it receives video and none of the m-lines we send it negotiated
    /// transport-wide sequence numbers (the feedback str0m estimates from is about
    /// every packet of the session, so one such m-line is enough).
    fn receives_video_without_feedback(&self) -> bool {
        let mut video = false;
        for t in &self.tracks_out {
            let OutState::Open(mid) = t.state else {
                continue;
            };
            let Some(media) = self.rtc.media(mid) else {
                continue;
            };
            if media
                .remote_extmap()
                .id_of(Extension::TransportSequenceNumber)
                .is_some()
            {
                return false;
            }
            video |= t.kind.is_video();
        }
        video
    }

    /// The subscriber reported the most it can receive (REMB, from receivers that
    /// estimate on their side): a cap on its budget until the next report, or for
    /// [`REMB_TTL`] if none follows.
    pub fn on_remb(&mut self, bps: u64, now: Instant) {
        self.bandwidth.remb = Some((bps, now));
    }

    /// The subscriber's REMB cap at `now`, unless it has not repeated it for
    /// [`REMB_TTL`] (it stopped sending REMB, or its feedback no longer gets through).
    pub fn remb(&self, now: Instant) -> Option<u64> {
        self.bandwidth
            .remb
            .filter(|(_, at)| now.saturating_duration_since(*at) < REMB_TTL)
            .map(|(bps, _)| bps)
    }

    /// What this participant's only subscriber can take of what it publishes, if that
    /// is the question: every video track it publishes is a single stream with exactly
    /// one subscriber (a one-to-one call) whose room is known (`rooms`, by track).
    /// Each camera is given at least [`FEEDBACK_FLOOR`]; its audio is added at its
    /// measured rate. Also whether that is less than its cameras send now.
    fn one_to_one_room(
        &self,
        rooms: &HashMap<TrackId, u64>,
        router: &Router,
    ) -> Option<(u64, bool)> {
        let (mut video_room, mut video_rate, mut audio, mut cameras) = (0u64, 0u64, 0u64, 0);
        for t in &self.tracks_in {
            let kind = router.track(t.track)?.kind;
            let rate = router.track_bitrate(t.track);
            if !kind.is_video() {
                audio = audio.saturating_add(rate);
                continue;
            }
            if !router.layers(t.track).is_empty() {
                return None;
            }
            let room = *rooms.get(&t.track)?;
            video_room = video_room.saturating_add(room.max(FEEDBACK_FLOOR));
            video_rate = video_rate.saturating_add(rate);
            cameras += 1;
        }
        (cameras > 0).then(|| (video_room.saturating_add(audio), video_room < video_rate))
    }

    /// Tells this participant, as a publisher, the most it may send in all: the
    /// configured cap (`max_bps`; 0: none) and, in a one-to-one call with a
    /// single-stream camera, what the other participant's link can take of it (see
    /// [`Peer::one_to_one_room`]; from the first time that is less than the camera
    /// sends, until the call is no longer one-to-one, when a lift to `lift_bps` is sent
    /// once). A REMB on one of its incoming streams, at most every
    /// [`REMB_TO_PUBLISHER_INTERVAL`] (mediasoup's `maxIncomingBitrate` works the same
    /// way); a sender takes it as a cap on its whole session, whichever SSRC it names,
    /// and keeps the last one (so it is repeated while it applies). A simulcast sender
    /// drops its top layers first. Returns the bitrate queued, if one was (not before
    /// the publisher's first packet).
    pub fn tell_publisher(
        &mut self,
        max_bps: u64,
        rooms: &HashMap<TrackId, u64>,
        lift_bps: u64,
        router: &Router,
        now: Instant,
    ) -> Option<u64> {
        if self
            .bandwidth
            .remb_sent
            .is_some_and(|t| now.saturating_duration_since(t) < REMB_TO_PUBLISHER_INTERVAL)
        {
            return None;
        }
        let room = match self.one_to_one_room(rooms, router) {
            Some((room, short)) if short || self.bandwidth.feedback_engaged => {
                self.bandwidth.feedback_engaged = true;
                Some(room)
            }
            Some(_) => None,
            None if self.bandwidth.feedback_engaged => {
                self.bandwidth.feedback_engaged = false;
                Some(lift_bps)
            }
            None => None,
        };
        let bps = match (max_bps, room) {
            (0, None) => return None,
            (0, Some(r)) => r,
            (cap, r) => cap.min(r.unwrap_or(u64::MAX)),
        };
        self.send_remb(bps, router, now).then_some(bps)
    }

    /// Queues a REMB of `bps` toward this publisher on one of its incoming streams.
    fn send_remb(&mut self, bps: u64, router: &Router, now: Instant) -> bool {
        let mut api = self.rtc.direct_api();
        for t in &self.tracks_in {
            let rid = router.layers(t.track).first().map(|l| Rid::from(&*l.rid));
            if let Some(rx) = api.stream_rx_by_mid(t.mid, rid) {
                rx.request_remb(Bitrate::bps(bps));
                self.bandwidth.remb_sent = Some(now);
                return true;
            }
        }
        false
    }

    /// Sets the best quality or the largest picture this subscriber wants of `track`;
    /// false when it does not receive the track.
    pub fn set_limit(&mut self, track: TrackId, limit: LayerLimit) -> bool {
        let Some(out) = self.tracks_out.iter_mut().find(|t| t.track == track) else {
            return false;
        };
        match limit {
            LayerLimit::Quality(quality) => {
                if let Some(s) = out.selector.as_mut() {
                    s.quality_limit_changed(out.max_quality, quality);
                }
                out.max_quality = quality;
            }
            LayerLimit::Size(size) => {
                let raised = match (out.max_size, size) {
                    (Some(_), None) => true,
                    (Some((w0, h0)), Some((w, h))) => w > w0 || h > h0,
                    (None, _) => false,
                };
                out.max_size = size;
                if raised && let Some(s) = out.selector.as_mut() {
                    // Granted without waiting out the upgrade hold, like a higher quality.
                    s.request_upgrade();
                }
            }
        }
        true
    }

    /// The simulcast layer of `track` being forwarded to this subscriber.
    pub fn current_layer(&self, track: TrackId) -> Option<usize> {
        self.tracks_out
            .iter()
            .find(|t| t.track == track)
            .and_then(|t| t.selector.as_ref())
            .and_then(|s| s.current())
    }

    /// Whether what we send it on `mid` is wrapped in RED (RFC 2198), and what it may
    /// send us there is: one of the m-line's codecs has a RED payload type, which
    /// str0m keeps only when the client negotiated it (its `remote_pts` list primary
    /// codecs only).
    pub(crate) fn sends_red(&self, mid: Mid) -> bool {
        let Some(media) = self.rtc.media(mid) else {
            return false;
        };
        let accepted = media.remote_pts();
        self.rtc
            .codec_config()
            .params()
            .iter()
            .any(|p| accepted.contains(&p.pt()) && p.red().is_some())
    }

    /// Chooses the layer of every video track this subscriber receives (an unlayered
    /// one is a single layer: sent or paused): the budget is the estimate (or the
    /// initial bitrate before one; the cap alone for a subscriber that sends no
    /// transport-wide feedback) capped by `max_subscriber_bitrate`, minus audio at its
    /// measured rate. Pushes `(track, layer)` for every switch waiting for a keyframe and
    /// `(track, paused)` for every track whose pause state changed since it was last
    /// reported, and updates the desired bitrate of the estimator.
    pub fn allocate(
        &mut self,
        router: &Router,
        config: &BandwidthConfig,
        now: Instant,
        keyframes: &mut Vec<(TrackId, usize)>,
        pauses: &mut Vec<(TrackId, bool)>,
    ) {
        let mut fixed: u64 = 0;
        // Per video track: index in `tracks_out` and its layers (one if unlayered). A few
        // tracks per subscriber, every `allocation_interval`: not a per-packet allocation.
        let mut layered: Vec<(usize, Vec<LayerInfo>)> = Vec::new();
        for (i, t) in self.tracks_out.iter().enumerate() {
            // Held-back video ("last N") leaves its share to the others.
            if !matches!(t.state, OutState::Open(_)) || t.paused {
                continue;
            }
            if !t.kind.is_video() {
                // Audio sent as RED (RFC 2198) carries each frame twice; the publisher's
                // rate is measured on the frames it sent, once.
                let copies = match t.state {
                    OutState::Open(mid) if self.sends_red(mid) => 2,
                    _ => 1,
                };
                fixed = fixed.saturating_add(router.track_bitrate(t.track).saturating_mul(copies));
            } else {
                let mut infos = Vec::new();
                router.layer_infos(t.track, now, &mut infos);
                // A size limit hides the layers above it from the allocation.
                if let Some(max) = t.max_size {
                    let sizes: Vec<_> = router.layers(t.track).iter().map(|l| l.size).collect();
                    infos.truncate(highest_layer_within(&sizes, max) + 1);
                }
                layered.push((i, infos));
            }
        }
        // The subscriber's own report (REMB) caps whatever we estimate or assume.
        let cap = config
            .max_subscriber_bitrate
            .min(self.remb(now).unwrap_or(u64::MAX));
        if config.estimate
            && !self.bandwidth.no_feedback
            && self.bandwidth.estimate.is_none()
            && self.receives_video_without_feedback()
        {
            // Left alone, str0m would pace it at `initial_bitrate` for good: a faster
            // camera would queue for up to 2 s in the pacer.
            self.bandwidth.no_feedback = true;
            self.rtc
                .bwe()
                .reset(Bitrate::bps(config.max_subscriber_bitrate));
            tracing::debug!(participant = %self.id,
                "no transport-wide feedback: sent what the caps allow, paced at the cap");
        }
        let estimating = config.estimate && !self.bandwidth.no_feedback;
        let total = match (estimating, self.bandwidth.estimate) {
            (true, Some(e)) => e.min(cap),
            (true, None) => config.initial_bitrate.min(cap),
            (false, _) => cap,
        };
        // Audio first: only the rest goes to video.
        let budget = total.saturating_sub(fixed);
        self.bandwidth.budget = budget;
        let demands: Vec<VideoDemand<'_>> = layered
            .iter()
            .map(|(i, infos)| VideoDemand {
                layers: infos,
                max_quality: self.tracks_out[*i].max_quality,
            })
            .collect();
        let mut down = Vec::with_capacity(demands.len());
        let mut up = Vec::with_capacity(demands.len());
        let mut capped = Vec::with_capacity(demands.len());
        allocate(budget, &demands, &mut down);
        let headroom = config.upgrade_headroom.max(1.0);
        allocate((budget as f64 / headroom) as u64, &demands, &mut up);
        // What the cap alone allows: a track that does not fit even that is paused at
        // once; one that only the estimate leaves out waits out a dip first.
        allocate(cap.saturating_sub(fixed), &demands, &mut capped);
        // Before the first estimate the budget is only the assumed initial bitrate: good
        // enough to pick a starting simulcast layer, not a reason to stop a
        // single-stream camera. Nor is an estimate that has only risen since: str0m
        // starts low and climbs (about 5 % per 100 ms, faster once a probe succeeds),
        // and a room of 1.6 Mbit/s cameras was paused at 2-4 Mbit/s while everything
        // arrived. Only the caps pause one until the estimate first falls (delay
        // growing or loss: a sign of a full link).
        let estimated = !estimating || self.bandwidth.estimate.is_some();
        // (It can only have fallen once there is one.)
        let trusted = !estimating || self.bandwidth.fell;
        let mut wanted = fixed;
        // What the allocation gives each track, for the room a single-stream camera has.
        let given = |infos: &[LayerInfo], choice: &Choice| match choice {
            Choice::Layer(l) => infos.get(*l).map_or(0, |i| i.bitrate_bps),
            _ => 0,
        };
        let spent: u64 = layered
            .iter()
            .zip(&down)
            .map(|((_, infos), c)| given(infos, c))
            .sum();
        self.bandwidth.rooms.clear();
        // What one more step up of every track below its best layer would send: the
        // estimator is kept fed up to that (padding) so that it can find room for it.
        let mut next_step = fixed;
        let mut below_best = false;
        for ((((i, infos), down), up), capped) in layered.iter().zip(&down).zip(&up).zip(&capped) {
            let out = &mut self.tracks_out[*i];
            let quality = out.max_quality;
            let selector = out.selector.get_or_insert_with(|| {
                if router.layers(out.track).is_empty() {
                    LayerSelector::single()
                } else {
                    LayerSelector::new()
                }
            });
            let current_active = selector
                .current()
                .is_none_or(|c| infos.get(c).is_some_and(|l| l.active));
            let holds = Holds {
                upgrade: config.upgrade_hold,
                pause: if matches!(capped, Choice::Paused(_)) {
                    Duration::ZERO
                } else {
                    config.pause_hold
                },
            };
            if selector.is_single() && estimated {
                let others = spent.saturating_sub(given(infos, down));
                self.bandwidth
                    .rooms
                    .push((out.track, budget.saturating_sub(others)));
            }
            let (down, up) = if selector.is_single() && !trusted {
                (capped, capped)
            } else {
                (down, up)
            };
            let target_before = selector.target();
            if let Some(layer) = selector.update(*down, *up, current_active, holds, now) {
                keyframes.push((out.track, layer));
            }
            if selector.target() != target_before {
                let rates: Vec<u64> = infos.iter().map(|l| l.bitrate_bps).collect();
                tracing::debug!(subscriber = %self.id, track = %out.track,
                    from = ?target_before, to = ?selector.target(), ?quality, budget,
                    estimate = ?self.bandwidth.estimate, ?rates, "video target changed");
            }
            // Reported from here, one allocation interval at most after a resume's
            // keyframe.
            if selector.paused() != out.pause_reported {
                out.pause_reported = selector.paused();
                pauses.push((out.track, out.pause_reported));
            }
            // The best layer the request allows: what the estimator should find room for.
            let max = quality.max_index(infos.len());
            let top = infos[..=max.min(infos.len().saturating_sub(1))]
                .iter()
                .rposition(|l| l.active);
            wanted = wanted.saturating_add(top.map_or(0, |t| infos[t].bitrate_bps));
            let current = selector.current().filter(|_| !selector.paused());
            let step = match (current, top) {
                (Some(c), Some(t)) if c < t => {
                    below_best = true;
                    infos[c + 1..=t].iter().find(|l| l.active)
                }
                (None, Some(_)) => {
                    below_best = true;
                    infos.iter().find(|l| l.active)
                }
                (Some(c), _) => infos.get(c),
                (None, None) => None,
            };
            next_step = next_step.saturating_add(step.map_or(0, |l| l.bitrate_bps));
        }
        // A step the caps (configured, REMB) leave no room for is not worth padding.
        let step_bps = (next_step as f64 * headroom) as u64;
        let minimum = if below_best && step_bps <= cap {
            step_bps
        } else {
            0
        };
        self.set_desired((wanted as f64 * headroom) as u64, minimum, cap, now);
    }

    /// Passes new desired and minimum bitrates to str0m's estimator when they changed
    /// enough. The desired rate is what the estimator probes for. The minimum is a
    /// floor the pacer pads up to (never above the estimate): a subscriber receiving
    /// less than its next layer would otherwise be application-limited, and an
    /// estimate that fell in a dip (scheduling stalls read as queueing) would climb
    /// back to that layer's rate only slowly (about 20 s measured with Chromium).
    ///
    /// An estimate can also stop moving altogether: after a subscriber took little for
    /// a while (a small tile), str0m's estimate freezes and neither padding nor a rise
    /// of the desired rate lifts it (seen: 157 kbit/s, not one new value in 10 s). A
    /// probe str0m sent while the subscriber took little set its link capacity, and its
    /// loss controller then holds the estimate there with no loss and sends no probes
    /// (docs/sfu.md, "Why it sticks"); only a reset clears that state. So when an
    /// upgrade (`minimum` > 0) has waited
    /// [`RESTART_ESTIMATE_AFTER`] with the estimate under the desired rate and not
    /// rising, the estimator is restarted from that estimate: it probes again from
    /// there (3 and 6 times the estimate, as at the session's start). On a link that
    /// has no more room the wait doubles after each restart, up to
    /// [`RESTART_ESTIMATE_MAX_WAIT`], so its probes do not come every 2 s; an upgrade
    /// no longer waiting starts the count again.
    fn set_desired(&mut self, wanted: u64, minimum: u64, cap: u64, now: Instant) {
        let desired = wanted.min(cap);
        let minimum = minimum.min(desired);
        let estimate = self.bandwidth.estimate.unwrap_or(0);
        let waiting = minimum > 0 && estimate > 0 && estimate < desired;
        if !waiting {
            self.bandwidth.restarts = 0;
        }
        match self.bandwidth.stuck {
            Some((since, at)) if waiting && estimate <= at => {
                let wait = RESTART_ESTIMATE_AFTER
                    .saturating_mul(1 << self.bandwidth.restarts.min(8))
                    .min(RESTART_ESTIMATE_MAX_WAIT);
                if now.saturating_duration_since(since) >= wait {
                    tracing::debug!(participant = %self.id, estimate, desired,
                        restarts = self.bandwidth.restarts,
                        "estimate stuck under an upgrade: estimator restarted");
                    self.rtc.bwe().reset(Bitrate::bps(estimate));
                    self.bandwidth.stuck = Some((now, estimate));
                    self.bandwidth.restarts += 1;
                }
            }
            _ => self.bandwidth.stuck = waiting.then_some((now, estimate)),
        }
        let changed = |new: u64, old: u64| {
            new != old
                && (old == 0 || new == 0 || new.abs_diff(old) as f64 >= DESIRED_CHANGE * old as f64)
        };
        if desired == 0
            || (!changed(desired, self.bandwidth.desired)
                && !changed(minimum, self.bandwidth.minimum))
        {
            return;
        }
        self.bandwidth.desired = desired;
        self.bandwidth.minimum = minimum;
        tracing::trace!(participant = %self.id, desired, minimum, "estimator targets");
        self.rtc
            .bwe()
            .set_bitrate(Bitrate::bps(minimum), Bitrate::bps(desired));
    }
}
