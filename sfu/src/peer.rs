//! One participant's WebRTC session: its str0m `Rtc`, which of its m-lines carry the
//! tracks it publishes, the send m-lines of the tracks it receives and their SDP
//! negotiation state, and its counters. No sockets here; the driver moves the bytes.

use std::collections::HashMap;
use std::time::Instant;

use str0m::Rtc;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, KeyframeRequestKind, MediaData, MediaKind, MediaTime, Mid, Rid};

use crate::capture::CaptureClock;
use crate::error::SfuError;
use crate::event::{LayerStats, ParticipantStats, PublishedTrackStats, SubscribedTrackStats};
use crate::ids::{ParticipantId, RoomId, TrackId, TrackKind};
use crate::picture::Size;
use crate::policer::Policer;
use crate::quality::{ConnectionQuality, QualityMeter};
use crate::router::Router;
use crate::simulcast::{FrameAction, LayerSelector, Quality, TimestampRewriter};

#[path = "peer_bandwidth.rs"]
mod bandwidth;

/// Timeouts already due that one drain of a peer handles itself, at most (the rest
/// wait for the event loop, so one peer's backlog cannot hold up the others).
const IMMEDIATE_TIMEOUTS: usize = 64;

/// Largest SDP accepted from a client; a real one with a dozen m-lines is ~10 KiB.
pub(crate) const MAX_SDP: usize = 64 * 1024;

/// Parses a client SDP, refusing oversized input before the parser sees it.
fn check_sdp(sdp: &str) -> Result<(), SfuError> {
    if sdp.len() > MAX_SDP {
        return Err(SfuError::BadSdp(format!(
            "{} bytes, limit {MAX_SDP}",
            sdp.len()
        )));
    }
    Ok(())
}

/// A track this participant publishes, received on one of its m-lines.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TrackIn {
    /// The m-line it arrives on.
    pub mid: Mid,
    /// Its router id.
    pub track: TrackId,
}

/// Negotiation state of a send m-line toward this participant (RFC 8829 §5.2/5.3:
/// an m-line is added or stopped only through an offer/answer round).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    /// Wanted; not yet in an offer.
    ToOpen,
    /// In our pending offer.
    Negotiating(Mid),
    /// Answered: media flows.
    Open(Mid),
    /// To be stopped (port 0) in the next offer.
    ToStop(Mid),
    /// The stop is in our pending offer.
    Stopping(Mid),
}

/// A track this participant receives.
#[derive(Debug, Clone)]
struct TrackOut {
    /// Router id of the track.
    track: TrackId,
    /// Audio or video.
    kind: TrackKind,
    /// Who sends it; the msid stream id.
    publisher: ParticipantId,
    /// Where its m-line stands.
    state: OutState,
    /// Unsubscribed while its addition was in flight: stop it once answered.
    unwanted: bool,
    /// Best quality the subscriber asked for (simulcast tracks).
    max_quality: Quality,
    /// Largest picture the subscriber asked for (simulcast tracks).
    max_size: Option<Size>,
    /// Layer choice of a video track (an unlayered one is a single layer, sent or paused
    /// for bandwidth); created by the first allocation.
    selector: Option<LayerSelector>,
    /// Whether the subscriber was last told this track is paused for bandwidth.
    pause_reported: bool,
    /// Keeps timestamps continuous when the forwarded layer changes.
    rewriter: TimestampRewriter,
    /// Video held back ("last N"): resumes at a keyframe.
    paused: bool,
    /// An unlayered video track has sent this subscriber a keyframe: before that, the
    /// publisher's delta frames are not forwarded (see [`Peer::forward`]).
    started: bool,
    /// Whether the subscriber was last told this track is held back ("last N").
    held_reported: bool,
    /// Its send stream's resend cache has been set up (see [`RESEND_SHARE_CAP`]).
    resends_configured: bool,
    /// Wallclock of the last frame written (see [`Peer::forward`]).
    last_wallclock: Option<Instant>,
}

/// Share of a stream's bytes over the last second that resends may take before str0m
/// drops every queued resend. Its default (15%) is hit by a keyframe's repairs at a few
/// percent loss, after which lost packets are never repaired; half keeps a NACK storm
/// bounded without giving up on ordinary loss.
const RESEND_SHARE_CAP: f32 = 0.5;
/// Packets kept for resends per stream and how long (str0m's defaults).
const RESEND_CACHE_PACKETS: usize = 1024;
const RESEND_CACHE_AGE: std::time::Duration = std::time::Duration::from_secs(3);

/// What [`Peer::forward`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forwarded {
    /// Not sent (not subscribed, not negotiated yet, or another layer).
    No,
    /// Written to the subscriber's stream.
    Yes,
    /// Written, and it is the first frame of a newly chosen layer.
    Switched,
    /// Not sent: the track starts, or resumes after a pause, at a keyframe.
    NeedsKeyframe,
}

/// Our outstanding offer.
#[derive(Debug)]
struct PendingOffer {
    /// Id given to signalling with the offer.
    id: u64,
    /// str0m's record of the changes in it.
    offer: SdpPendingOffer,
    /// When it went out, to withdraw it after the answer timeout.
    sent_at: Instant,
}

/// Counters kept per participant.
#[derive(Debug, Default, Clone)]
pub(crate) struct PeerCounters {
    /// Datagrams and bytes in both directions.
    pub packets_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Datagrams dropped for coming over its incoming limits (counted in neither
    /// `packets_in` nor `bytes_in`).
    pub packets_policed: u64,
    /// Datagrams sent.
    pub packets_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// `packets_out` at the previous stats tick, for the rate.
    pub packets_out_at_tick: u64,
    /// Datagrams sent per second over the last stats interval.
    pub packets_out_rate: f64,
    /// Frames received from it.
    pub frames_in: u64,
    /// Frames forwarded to it.
    pub frames_forwarded: u64,
    /// PLI/FIR it sent us.
    pub keyframe_requests_received: u64,
    /// PLI/FIR we sent it.
    pub keyframe_requests_sent: u64,
    /// NACKs it sent us, cumulative per send m-line (str0m egress stats).
    pub nacks_received: HashMap<Mid, u64>,
    /// NACKs we sent it, cumulative per receive m-line (str0m ingress stats).
    pub nacks_sent: HashMap<Mid, u64>,
    /// Latest RTCP round-trip time.
    pub rtt: Option<std::time::Duration>,
    /// Simulcast layer switches toward it.
    pub layer_switches: u64,
}

/// Bandwidth state of one subscriber.
#[derive(Debug, Default, Clone)]
pub(crate) struct PeerBandwidth {
    /// Latest send-side estimate toward it (bits per second), once str0m has one.
    pub estimate: Option<u64>,
    /// Bitrate last given to str0m as the desired one (it probes up to it).
    pub desired: u64,
    /// Bitrate last given to str0m as the minimum (it pads up to it, within the
    /// estimate): what the next layer up would need; 0 when every track has its best.
    pub minimum: u64,
    /// Budget the last allocation split over its tracks (after the cap).
    pub budget: u64,
    /// Latest REMB (receiver estimated maximum bitrate) from the subscriber and when it
    /// came: a cap until the next one, for `REMB_TTL` at most.
    pub remb: Option<(u64, Instant)>,
    /// When `max_publisher_bitrate` was last sent to it as a REMB.
    pub remb_sent: Option<Instant>,
    /// It receives video but negotiated transport-wide feedback on nothing we send it:
    /// it will never have an estimate, so it is sent what the caps allow (as with
    /// estimation off) and str0m's pacer is set to the cap instead of the assumed
    /// starting rate.
    pub no_feedback: bool,
    /// What the last allocation could give each single-stream camera it receives
    /// (its budget less what everything else it receives takes), while its budget is
    /// known (an estimate, or the caps): the feedback a one-to-one call's publisher
    /// gets.
    pub rooms: Vec<(TrackId, u64)>,
    /// As a publisher: it is being told the room of its only subscriber (see
    /// `Peer::tell_publisher`); a lift is sent when that stops.
    pub feedback_engaged: bool,
    /// The estimate has fallen at least once. Until then it has only been climbing
    /// from str0m's starting rate, which is no sign of a full link, and a single-stream
    /// camera is paused by the caps only.
    pub fell: bool,
    /// Since when an upgrade has waited with the estimate below the desired rate and
    /// not rising, and the estimate then: see `Peer::set_desired`.
    pub stuck: Option<(Instant, u64)>,
    /// Restarts of the estimator for a stuck upgrade since the last upgrade that did
    /// not wait (each doubles the wait before the next).
    pub restarts: u32,
}

/// One drain of a peer's output (a run of [`Peer::poll`] calls until a timeout).
pub(crate) struct Drain<C> {
    /// Reads the clock (the driver's is `Instant::now`; tests simulate it).
    clock: C,
    /// The latest time read.
    now: Instant,
    /// Due timeouts handled so far.
    immediate: usize,
}

impl<C: FnMut() -> Instant> Drain<C> {
    /// A drain starting at `now`.
    pub fn new(now: Instant, clock: C) -> Self {
        Self {
            clock,
            now,
            immediate: 0,
        }
    }
}

/// One participant's session.
pub(crate) struct Peer {
    /// Who.
    pub id: ParticipantId,
    /// Its room.
    pub room: RoomId,
    /// The WebRTC state machine.
    pub rtc: Rtc,
    /// When it joined, for the connect timeout.
    pub joined_at: Instant,
    /// ICE and DTLS are up.
    pub connected: bool,
    /// When str0m wants `handle_timeout` next.
    pub next_timeout: Instant,
    /// Queued in the driver's dirty list (has output to poll).
    pub dirty: bool,
    /// str0m refused its input; it is being disconnected for that.
    pub protocol_error: bool,
    /// Tracks it publishes.
    tracks_in: Vec<TrackIn>,
    /// When its frames were captured, in local time (the wallclock they are forwarded
    /// with).
    pub capture: CaptureClock,
    /// Tracks it receives.
    tracks_out: Vec<TrackOut>,
    /// Our offer awaiting its answer.
    pending: Option<PendingOffer>,
    /// A client offer has been accepted: the session exists, we may offer.
    has_session: bool,
    /// Something [`Peer::wants_negotiation`] looks at changed since it last said no
    /// (it is asked after every pump; most of the time nothing changed).
    negotiation_check: bool,
    /// Counters.
    pub counters: PeerCounters,
    /// Estimate, desired bitrate and budget.
    pub bandwidth: PeerBandwidth,
    /// Tracks whose "last N" hold changed since the driver last looked: (track, held).
    pub hold_changes: Vec<(TrackId, bool)>,
    /// Its limits on what it may send us (none until the driver sets them).
    pub policer: Policer,
    /// Its connection quality, fed from str0m's stats and ticked with ours.
    pub quality_meter: QualityMeter,
    /// What the meter said at the last stats tick.
    pub quality: Option<ConnectionQuality>,
    /// Our ICE ufrag the driver last filed it under.
    pub ufrag: String,
}

impl Peer {
    /// Video tracks it receives that are paused because not even their lowest layer
    /// fits its bandwidth.
    pub fn tracks_paused(&self) -> usize {
        self.tracks_out
            .iter()
            .filter(|t| t.selector.as_ref().is_some_and(|s| s.paused()))
            .count()
    }

    /// A peer with no session yet (the client offers first).
    pub fn new(id: ParticipantId, room: RoomId, rtc: Rtc, now: Instant) -> Self {
        Self {
            id,
            room,
            rtc,
            joined_at: now,
            connected: false,
            next_timeout: now,
            dirty: false,
            protocol_error: false,
            tracks_in: Vec::new(),
            capture: CaptureClock::new(now),
            tracks_out: Vec::new(),
            pending: None,
            has_session: false,
            negotiation_check: false,
            counters: PeerCounters::default(),
            bandwidth: PeerBandwidth::default(),
            hold_changes: Vec::new(),
            policer: Policer::new(0, 0),
            quality_meter: QualityMeter::new(now),
            quality: None,
            ufrag: String::new(),
        }
    }

    /// The session's next output; a `Timeout` ends the drain (`next_timeout` is set to
    /// it). A timeout that is already due is handled here rather than returned: str0m
    /// packetizes a written frame, and its pacer releases each next packet, only on a
    /// timeout (the pacer's is 1 µs after its last, so that its clock advances). Left
    /// to the event loop, each would wait for the runtime's next timer tick (tokio's
    /// timers round up to the millisecond), so a frame of 6 packets to a subscriber
    /// left over 1.3 ms (p50) instead of at once.
    pub fn poll<C: FnMut() -> Instant>(
        &mut self,
        drain: &mut Drain<C>,
    ) -> Result<str0m::Output, str0m::RtcError> {
        use str0m::{Input, Output};
        loop {
            if !self.rtc.is_alive() {
                self.next_timeout = drain.now;
                return Ok(Output::Timeout(drain.now));
            }
            match self.rtc.poll_output()? {
                Output::Transmit(t) => {
                    self.counters.packets_out += 1;
                    self.counters.bytes_out += t.contents.len() as u64;
                    return Ok(Output::Transmit(t));
                }
                Output::Event(e) => return Ok(Output::Event(e)),
                Output::Timeout(t) => {
                    if t > drain.now {
                        drain.now = drain.now.max((drain.clock)());
                    }
                    if t > drain.now || drain.immediate == IMMEDIATE_TIMEOUTS {
                        self.next_timeout = t;
                        return Ok(Output::Timeout(t));
                    }
                    drain.immediate += 1;
                    self.rtc.handle_input(Input::Timeout(drain.now))?;
                }
            }
        }
    }

    /// Accepts a client offer and returns the answer. A pending offer of ours is rolled
    /// back (the SFU is the polite peer in glare, RFC 8829 §4.1.8.2 rollback) and its
    /// changes are offered again afterwards.
    pub fn accept_offer(&mut self, sdp: &str) -> Result<String, SfuError> {
        check_sdp(sdp)?;
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let answer = self
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SfuError::Negotiation(e.to_string()))?;
        if self.pending.take().is_some() {
            self.rollback();
        }
        self.has_session = true;
        self.negotiation_check = true;
        Ok(answer.to_sdp_string())
    }

    /// Accepts the client's answer to our offer `offer_id`. Returns the video tracks
    /// that just opened (they need a keyframe from their publisher).
    pub fn accept_answer(&mut self, offer_id: u64, sdp: &str) -> Result<Vec<TrackId>, SfuError> {
        match &self.pending {
            Some(p) if p.id == offer_id => {}
            _ => return Err(SfuError::StaleAnswer(offer_id)),
        }
        check_sdp(sdp)?;
        let answer =
            SdpAnswer::from_sdp_string(sdp).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let Some(pending) = self.pending.take() else {
            return Err(SfuError::StaleAnswer(offer_id));
        };
        self.negotiation_check = true;
        if let Err(e) = self.rtc.sdp_api().accept_answer(pending.offer, answer) {
            self.rollback();
            return Err(SfuError::Negotiation(e.to_string()));
        }
        let mut opened = Vec::new();
        for t in &mut self.tracks_out {
            match t.state {
                OutState::Negotiating(m) if t.unwanted => t.state = OutState::ToStop(m),
                OutState::Negotiating(m) => {
                    t.state = OutState::Open(m);
                    if t.kind.is_video() {
                        opened.push(t.track);
                    }
                }
                _ => {}
            }
        }
        self.tracks_out
            .retain(|t| !matches!(t.state, OutState::Stopping(_)));
        Ok(opened)
    }

    /// Withdraws our offer if unanswered since `deadline`; its changes go in the next.
    pub fn expire_offer(&mut self, deadline: Instant) -> bool {
        if self.pending.as_ref().is_some_and(|p| p.sent_at <= deadline) {
            self.pending = None;
            self.rollback();
            return true;
        }
        false
    }

    /// Undoes the in-flight states of a dropped offer.
    fn rollback(&mut self) {
        self.negotiation_check = true;
        self.tracks_out.retain_mut(|t| match t.state {
            OutState::Negotiating(_) if t.unwanted => false,
            OutState::Negotiating(_) => {
                t.state = OutState::ToOpen;
                true
            }
            OutState::Stopping(m) => {
                t.state = OutState::ToStop(m);
                true
            }
            _ => true,
        });
    }

    /// Makes an offer for the wanted changes, if any and if none is outstanding.
    pub fn negotiate(&mut self, offer_id: u64, now: Instant) -> Option<String> {
        if !self.has_session || self.pending.is_some() {
            return None;
        }
        let mut api = self.rtc.sdp_api();
        for t in &mut self.tracks_out {
            match t.state {
                OutState::ToOpen => {
                    let kind = match t.kind {
                        TrackKind::Audio => MediaKind::Audio,
                        TrackKind::Video => MediaKind::Video,
                    };
                    // msid "<publisher> <track>" (RFC 8830) lets the client tell whose
                    // media an m-line carries.
                    let mid = api.add_media(
                        kind,
                        Direction::SendOnly,
                        Some(t.publisher.to_string()),
                        Some(t.track.to_string()),
                        None,
                    );
                    t.state = OutState::Negotiating(mid);
                }
                OutState::ToStop(m) => {
                    api.stop_media(m);
                    t.state = OutState::Stopping(m);
                }
                _ => {}
            }
        }
        if !api.has_changes() {
            return None;
        }
        let Some((offer, pending)) = api.apply() else {
            self.rollback();
            return None;
        };
        self.pending = Some(PendingOffer {
            id: offer_id,
            offer: pending,
            sent_at: now,
        });
        Some(offer.to_sdp_string())
    }

    /// Starts sending `track` (a subscription); negotiated by the next offer.
    pub fn add_out(&mut self, track: TrackId, kind: TrackKind, publisher: ParticipantId) {
        if self.tracks_out.iter().any(|t| t.track == track) {
            return;
        }
        self.negotiation_check = true;
        self.tracks_out.push(TrackOut {
            track,
            kind,
            publisher,
            state: OutState::ToOpen,
            unwanted: false,
            max_quality: Quality::default(),
            max_size: None,
            selector: None,
            pause_reported: false,
            rewriter: TimestampRewriter::default(),
            resends_configured: false,
            last_wallclock: None,
            paused: false,
            started: false,
            held_reported: false,
        });
    }

    /// Stops sending `track`; its m-line is stopped by the next offer.
    pub fn remove_out(&mut self, track: TrackId) {
        self.negotiation_check = true;
        self.tracks_out.retain_mut(|t| {
            if t.track != track {
                return true;
            }
            match t.state {
                OutState::ToOpen => false,
                OutState::Negotiating(_) => {
                    t.unwanted = true;
                    true
                }
                OutState::Open(m) => {
                    t.state = OutState::ToStop(m);
                    true
                }
                OutState::ToStop(_) | OutState::Stopping(_) => true,
            }
        });
    }

    /// [`Peer::wants_negotiation`], answered without looking when nothing it depends on
    /// changed since it was last false.
    pub fn may_want_negotiation(&mut self) -> bool {
        if !self.negotiation_check {
            return false;
        }
        let wants = self.wants_negotiation();
        self.negotiation_check = wants;
        wants
    }

    /// Whether an offer would change anything.
    pub fn wants_negotiation(&self) -> bool {
        self.has_session
            && self.pending.is_none()
            && self
                .tracks_out
                .iter()
                .any(|t| matches!(t.state, OutState::ToOpen | OutState::ToStop(_)))
    }

    /// The video tracks it receives whose m-lines are open.
    pub fn open_video_tracks(&self) -> Vec<TrackId> {
        self.tracks_out
            .iter()
            .filter(|t| t.kind.is_video() && matches!(t.state, OutState::Open(_)))
            .map(|t| t.track)
            .collect()
    }

    /// Records a published track arriving on `mid`.
    pub fn add_in(&mut self, mid: Mid, track: TrackId) {
        self.tracks_in.push(TrackIn { mid, track });
    }

    /// Whether a track it sends is admitted (it counts as a publisher of its room).
    pub fn publishes(&self) -> bool {
        !self.tracks_in.is_empty()
    }

    /// Forgets the published track on `mid`, returning it.
    pub fn remove_in(&mut self, mid: Mid) -> Option<TrackId> {
        let i = self.tracks_in.iter().position(|t| t.mid == mid)?;
        Some(self.tracks_in.swap_remove(i).track)
    }

    /// The published track arriving on `mid`.
    pub fn track_in(&self, mid: Mid) -> Option<TrackId> {
        self.tracks_in
            .iter()
            .find(|t| t.mid == mid)
            .map(|t| t.track)
    }

    /// The m-line on which we receive `track` from this publisher.
    pub fn mid_in(&self, track: TrackId) -> Option<Mid> {
        self.tracks_in
            .iter()
            .find(|t| t.track == track)
            .map(|t| t.mid)
    }

    /// The track we send on `mid`, whatever its state.
    pub fn track_out(&self, mid: Mid) -> Option<TrackId> {
        self.tracks_out
            .iter()
            .find(|t| match t.state {
                OutState::Negotiating(m)
                | OutState::Open(m)
                | OutState::ToStop(m)
                | OutState::Stopping(m) => m == mid,
                OutState::ToOpen => false,
            })
            .map(|t| t.track)
    }

    /// Writes a frame of `track` (of simulcast `layer`, if layered) to this subscriber
    /// if its session is connected, its m-line is open and, for simulcast, the layer is
    /// the one chosen for it.
    /// `allowed` false holds the track back ("last N"); once allowed again it resumes
    /// at a keyframe. str0m packetizes it with this session's SSRC, sequence numbers
    /// and payload type, and keeps it for NACK retransmission (RFC 4585 §6.2.1).
    pub fn forward(
        &mut self,
        track: TrackId,
        layer: Option<usize>,
        data: &MediaData,
        allowed: bool,
    ) -> Result<Forwarded, str0m::RtcError> {
        // Nothing is written before the session is up: str0m would queue it and send
        // it all at once when DTLS completes, a burst of stale media the subscriber's
        // jitter buffer then has to drain.
        if !self.connected {
            return Ok(Forwarded::No);
        }
        let Some(out) = self
            .tracks_out
            .iter_mut()
            .find(|t| t.track == track && matches!(t.state, OutState::Open(_)))
        else {
            return Ok(Forwarded::No);
        };
        let OutState::Open(mid) = out.state else {
            return Ok(Forwarded::No);
        };
        if !allowed {
            // A simulcast track starts over from a fresh layer choice when resumed.
            out.paused = true;
            out.selector = None;
            if !out.held_reported {
                out.held_reported = true;
                self.hold_changes.push((track, true));
            }
            return Ok(Forwarded::No);
        }
        if out.paused {
            // Simulcast: the next allocation chooses a layer and asks for its keyframe.
            if layer.is_none() && !data.is_keyframe() {
                return Ok(Forwarded::NeedsKeyframe);
            }
            out.paused = false;
        }
        let (time, done) = match layer {
            None => {
                // An unlayered video track paused for bandwidth resumes at a keyframe;
                // its timestamps are the publisher's (one stream, nothing to join up).
                if let Some(selector) = out.selector.as_mut().filter(|s| s.is_single())
                    && selector.on_frame(0, data.is_keyframe()) == FrameAction::Drop
                {
                    return Ok(Forwarded::No);
                }
                // A subscriber's video starts at a keyframe: the delta frames before it
                // cannot be decoded. Each one refused asks the publisher again (the
                // throttle lets one through per interval), so a keyframe asked for
                // before this subscriber could receive it, which would swallow the
                // request made when it connected, delays it by one interval at most.
                if out.kind.is_video() && !out.started && !data.is_keyframe() {
                    return Ok(Forwarded::NeedsKeyframe);
                }
                (data.time, Forwarded::Yes)
            }
            Some(layer) => {
                // No allocation yet: nothing chosen, nothing sent.
                let Some(selector) = out.selector.as_mut() else {
                    return Ok(Forwarded::No);
                };
                let switched = match selector.on_frame(layer, data.is_keyframe()) {
                    FrameAction::Drop => return Ok(Forwarded::No),
                    FrameAction::Forward => false,
                    FrameAction::Switch => true,
                };
                // str0m writes the timestamp it is given as is (truncated to 32 bits):
                // each layer has its own base, so the rewriter keeps the stream whole.
                let freq = data.time.frequency();
                let ts = out.rewriter.rewrite(
                    data.time.numer() as u32,
                    data.network_time,
                    freq.get(),
                    switched,
                );
                let done = if switched {
                    Forwarded::Switched
                } else {
                    Forwarded::Yes
                };
                (MediaTime::new(u64::from(ts), freq), done)
            }
        };
        if !out.resends_configured
            && let Some(tx) = self.rtc.direct_api().stream_tx_by_mid(mid, None)
        {
            tx.set_rtx_cache(
                RESEND_CACHE_PACKETS,
                RESEND_CACHE_AGE,
                Some(RESEND_SHARE_CAP),
            );
            // A single stream is not paced: the SFU cannot thin it (it pauses it when it
            // does not fit), and str0m paces at 1.1 times its estimate, which delays a
            // keyframe by hundreds of milliseconds (libwebrtc paces at 2.5 times).
            // Simulcast layers stay paced. (A simulcast track whose publisher sends no
            // rid is forwarded as one stream, so it is not paced either.)
            if layer.is_none() && out.kind.is_video() {
                tx.set_unpaced(true);
            }
            out.resends_configured = true;
        }
        let Some(writer) = self.rtc.writer(mid) else {
            return Ok(Forwarded::No);
        };
        let Some(pt) = writer.match_params(data.params) else {
            return Ok(Forwarded::No);
        };
        // Pass the RFC 6464 level on so clients can show who speaks.
        let writer = match (data.ext_vals.audio_level, data.ext_vals.voice_activity) {
            (Some(level), voice) => writer.audio_level(level, voice.unwrap_or(false)),
            _ => writer,
        };
        // The wallclock is the frame's capture time in local time (`network_time` as
        // the driver set it, capture.rs; its arrival until the publisher's first
        // sender report). str0m queues written frames by their wallclock until it
        // packetizes them, so frames written while another waits go out in wallclock
        // order, and that is not always the release order: a frame stamped by arrival
        // that was overtaken (reordering, or lost and resent) is released together with
        // the ones behind it, which arrived earlier; a large keyframe of one simulcast
        // layer starts arriving before a small frame of another completes; a new
        // publisher on a "last N" slot has its own capture clock. The write order is
        // the order to send in: the wallclock never goes back.
        let wallclock = out
            .last_wallclock
            .map_or(data.network_time, |last| last.max(data.network_time));
        out.last_wallclock = Some(wallclock);
        writer.write(pt, wallclock, time, data.data.clone())?;
        out.started = true;
        self.counters.frames_forwarded += 1;
        if out.held_reported {
            // Flowing again, from a keyframe.
            out.held_reported = false;
            self.hold_changes.push((track, false));
        }
        if done == Forwarded::Switched {
            self.counters.layer_switches += 1;
        }
        Ok(done)
    }

    /// Asks this publisher for a keyframe on `track` (of simulcast layer `rid`, if
    /// given) with PLI, or FIR if PLI was not negotiated. Returns whether a request was
    /// queued.
    pub fn request_keyframe(&mut self, track: TrackId, rid: Option<&str>) -> bool {
        let Some(mid) = self.mid_in(track) else {
            return false;
        };
        let Some(mut writer) = self.rtc.writer(mid) else {
            return false;
        };
        let kind = if writer.is_request_keyframe_possible(KeyframeRequestKind::Pli) {
            KeyframeRequestKind::Pli
        } else {
            KeyframeRequestKind::Fir
        };
        let ok = writer.request_keyframe(rid.map(Rid::from), kind).is_ok();
        if ok {
            self.counters.keyframe_requests_sent += 1;
        }
        ok
    }

    /// A stats snapshot; `interval` is the time since the previous stats tick, for the
    /// packet rate (`None`: a snapshot between ticks).
    pub fn stats(
        &mut self,
        interval: Option<std::time::Duration>,
        router: &Router,
    ) -> ParticipantStats {
        let now = Instant::now();
        let remb_bps = self.remb(now);
        let published = self
            .tracks_in
            .iter()
            .filter_map(|t| {
                let kind = router.track(t.track)?.kind;
                let layers = router
                    .layers(t.track)
                    .iter()
                    .map(|l| LayerStats {
                        rid: l.rid.to_string(),
                        bitrate_bps: l.bitrate_bps(),
                        active: l.active(now),
                        size: l.size,
                    })
                    .collect();
                Some(PublishedTrackStats {
                    track: t.track,
                    kind,
                    bitrate_bps: router.track_bitrate(t.track),
                    size: router.keyframe_size(t.track, None),
                    layers,
                    muted: router.is_muted(t.track),
                })
            })
            .collect();
        let rid = |track: TrackId, layer: Option<usize>| {
            layer.and_then(|i| router.layers(track).get(i).map(|l| l.rid.to_string()))
        };
        let subscribed = self
            .tracks_out
            .iter()
            .filter(|t| matches!(t.state, OutState::Open(_)))
            .map(|t| SubscribedTrackStats {
                track: t.track,
                publisher: t.publisher.clone(),
                max_quality: t.max_quality,
                max_size: t.max_size,
                layer: rid(t.track, t.selector.as_ref().and_then(|s| s.current())),
                pending_layer: rid(t.track, t.selector.as_ref().and_then(|s| s.pending())),
                paused: t.selector.as_ref().is_some_and(|s| s.paused()),
                held: t.paused,
            })
            .collect();
        let c = &mut self.counters;
        // A snapshot between ticks (no interval) reports the last tick's rate and
        // leaves the tick's base alone.
        if let Some(secs) = interval.map(|i| i.as_secs_f64()).filter(|s| *s > 0.0) {
            c.packets_out_rate = (c.packets_out - c.packets_out_at_tick) as f64 / secs;
            c.packets_out_at_tick = c.packets_out;
        }
        let rate = c.packets_out_rate;
        ParticipantStats {
            participant: self.id.clone(),
            room: self.room.clone(),
            packets_in: c.packets_in,
            bytes_in: c.bytes_in,
            packets_policed: c.packets_policed,
            packets_out: c.packets_out,
            bytes_out: c.bytes_out,
            packets_out_per_sec: rate,
            frames_in: c.frames_in,
            frames_forwarded: c.frames_forwarded,
            nacks_received: c.nacks_received.values().sum(),
            nacks_sent: c.nacks_sent.values().sum(),
            keyframe_requests_received: c.keyframe_requests_received,
            keyframe_requests_sent: c.keyframe_requests_sent,
            rtt: c.rtt,
            bandwidth_estimate_bps: self.bandwidth.estimate,
            remb_bps,
            desired_bitrate_bps: self.bandwidth.desired,
            minimum_bitrate_bps: self.bandwidth.minimum,
            layer_switches: c.layer_switches,
            tracks_paused: self.tracks_paused(),
            tracks_published: self.tracks_in.len(),
            tracks_subscribed: self
                .tracks_out
                .iter()
                .filter(|t| matches!(t.state, OutState::Open(_)))
                .count(),
            published,
            subscribed,
            quality: self.quality,
        }
    }
}

#[cfg(test)]
#[path = "peer_tests.rs"]
mod tests;
