//! What the SFU tells signalling: [`SfuEvent`]s on one stream ([`SfuEvents`]), with
//! negotiation events never dropped and periodic ones (stats, speaker) dropped when the
//! consumer falls behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use crate::ids::{ParticipantId, RoomId, TrackId, TrackKind};
use crate::picture::Size;
use crate::quality::ConnectionQuality;
use crate::simulcast::Quality;

/// Why a video track is paused for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseReason {
    /// A simulcast track: not even its lowest layer fits the subscriber's bandwidth.
    Bandwidth,
    /// "Last N": its publisher is not among the N latest speakers for this subscriber.
    LastN,
}

impl PauseReason {
    /// The name used in the signalling protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            PauseReason::Bandwidth => "bandwidth",
            PauseReason::LastN => "last_n",
        }
    }
}

/// Why a track a participant offered is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackRefusal {
    /// It publishes `max_tracks_per_participant` tracks already.
    TooManyTracks,
    /// Its room has `max_publishers_per_room` other publishers already.
    TooManyPublishers,
}

impl TrackRefusal {
    /// The error code used in the signalling protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            TrackRefusal::TooManyTracks => "too_many_tracks",
            TrackRefusal::TooManyPublishers => "too_many_publishers",
        }
    }
}

/// Something signalling must know or relay to clients.
#[derive(Debug, Clone)]
pub enum SfuEvent {
    /// A participant's track is now forwarded to its room. The SFU sends it to each
    /// subscriber with `a=msid:<publisher> <track>` (e.g. `a=msid:alice T7`).
    TrackPublished {
        /// The room.
        room: RoomId,
        /// Who publishes it.
        participant: ParticipantId,
        /// Its id, also the msid track id in subscribers' SDP.
        track: TrackId,
        /// Audio or video.
        kind: TrackKind,
    },
    /// The server muted or unmuted a track ([`SfuHandle::mute`]): while muted its
    /// frames reach nobody; unmuted video resumes at a keyframe.
    TrackMuted {
        /// The room.
        room: RoomId,
        /// Who publishes it.
        participant: ParticipantId,
        /// Its id.
        track: TrackId,
        /// Audio or video.
        kind: TrackKind,
        /// Muted (`true`) or flowing again.
        muted: bool,
    },
    /// A track went away (the client removed its m-line, or its publisher left).
    TrackUnpublished {
        /// The room.
        room: RoomId,
        /// Who published it.
        participant: ParticipantId,
        /// Its id.
        track: TrackId,
    },
    /// The SFU made an offer to this participant (tracks to add or stop): relay `sdp`
    /// to the client and return its answer with [`SfuHandle::answer`] and the same
    /// `offer_id`.
    ///
    /// [`SfuHandle::answer`]: crate::SfuHandle::answer
    NeedsAnswer {
        /// To whom.
        participant: ParticipantId,
        /// Identifies this offer; answers to an older one are refused as stale.
        offer_id: u64,
        /// The SDP offer.
        sdp: String,
    },
    /// A video track `participant` receives was paused (`paused: true`) or flows again
    /// (`paused: false`), for `reason`. Audio is never paused.
    TrackPaused {
        /// The subscriber.
        participant: ParticipantId,
        /// The track.
        track: TrackId,
        /// Paused or flowing again.
        paused: bool,
        /// Why.
        reason: PauseReason,
    },
    /// A track `participant` offered (its m-line `mid`) is refused: its m-line stays
    /// negotiated but nothing it carries is forwarded. It waits: when a track goes away
    /// it is tried again, and once admitted it is announced as `TrackPublished`.
    TrackRefused {
        /// Who offered it.
        participant: ParticipantId,
        /// Its m-line.
        mid: String,
        /// Audio or video.
        kind: TrackKind,
        /// Why.
        reason: TrackRefusal,
    },
    /// ICE and DTLS are up: media flows.
    Connected {
        /// Who.
        participant: ParticipantId,
    },
    /// A participant's media session ended and all its state is freed.
    ParticipantLeft {
        /// The room.
        room: RoomId,
        /// Who.
        participant: ParticipantId,
        /// Why.
        reason: LeaveReason,
    },
    /// The room's loudest participant changed (RFC 6464 levels, smoothed); `None` when
    /// the speaker left.
    ActiveSpeaker {
        /// The room.
        room: RoomId,
        /// The new speaker.
        participant: Option<ParticipantId>,
    },
    /// Periodic per-participant statistics of one shard: every participant whose
    /// session the shard holds, so a room absent from a shard's snapshot has no
    /// participants there any more (a room spread over shards has some in each
    /// holder's snapshot).
    Stats {
        /// Which shard reports (0-based; see [`crate::SfuHandle::shards`]).
        shard: usize,
        /// Its participants.
        participants: Vec<ParticipantStats>,
    },
}

impl SfuEvent {
    /// Periodic events a slow consumer may lose; the next one supersedes them.
    fn droppable(&self) -> bool {
        matches!(
            self,
            SfuEvent::Stats { .. } | SfuEvent::ActiveSpeaker { .. }
        )
    }
}

/// Why a participant's media session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// Signalling called `leave`.
    Left,
    /// ICE lost the peer (consent freshness failed, RFC 7675) or DTLS closed.
    Disconnected,
    /// ICE never connected within `connect_timeout`.
    ConnectTimeout,
    /// The peer sent something the WebRTC stack could not accept.
    ProtocolError,
    /// The SFU is shutting down.
    Shutdown,
}

/// Counters of one participant's media session.
#[derive(Debug, Clone, PartialEq)]
pub struct ParticipantStats {
    /// Who.
    pub participant: ParticipantId,
    /// Its room.
    pub room: RoomId,
    /// UDP datagrams received from the peer (all protocols).
    pub packets_in: u64,
    /// Bytes of those datagrams.
    pub bytes_in: u64,
    /// Datagrams from the peer dropped unread for coming over its incoming limits
    /// (`max_incoming_bitrate`, `max_incoming_packet_rate`); not in `packets_in`.
    pub packets_policed: u64,
    /// UDP datagrams sent to the peer.
    pub packets_out: u64,
    /// Bytes of those datagrams.
    pub bytes_out: u64,
    /// Datagrams sent per second over the last stats interval.
    pub packets_out_per_sec: f64,
    /// Media frames received from this publisher.
    pub frames_in: u64,
    /// Media frames forwarded to this subscriber.
    pub frames_forwarded: u64,
    /// NACKs this subscriber sent us (answered from the send buffer).
    pub nacks_received: u64,
    /// NACKs we sent this publisher.
    pub nacks_sent: u64,
    /// PLI/FIR this subscriber sent us.
    pub keyframe_requests_received: u64,
    /// PLI/FIR we sent this publisher (after throttling).
    pub keyframe_requests_sent: u64,
    /// Round-trip time from RTCP, when known.
    pub rtt: Option<Duration>,
    /// Send-side bandwidth estimate toward it (TWCC), in bits per second; `None`
    /// before the first estimate or with estimation off.
    pub bandwidth_estimate_bps: Option<u64>,
    /// The most it reported it can receive (REMB), a cap on what it is sent; `None`
    /// unless it sends REMB (browsers use TWCC when it is negotiated) or when it has
    /// not repeated it for 5 s.
    pub remb_bps: Option<u64>,
    /// What the SFU would like to send it (its subscriptions' best allowed layers plus
    /// audio, capped by `max_subscriber_bitrate`); the estimator probes up to it.
    pub desired_bitrate_bps: u64,
    /// The floor the SFU pads up to (within the estimate) while a video track it sends
    /// this subscriber is below the layer it could use: what the next layer up would
    /// need. 0 when every track has its best layer or the next one would not fit the
    /// caps (`max_subscriber_bitrate`, the subscriber's REMB).
    pub minimum_bitrate_bps: u64,
    /// Simulcast layer switches toward it (up or down; starting on the first layer counts as one).
    pub layer_switches: u64,
    /// Simulcast tracks it receives that are paused because not even their lowest
    /// layer fits its bandwidth.
    pub tracks_paused: usize,
    /// Tracks it publishes.
    pub tracks_published: usize,
    /// Tracks it receives (negotiated).
    pub tracks_subscribed: usize,
    /// What each track it publishes carries.
    pub published: Vec<PublishedTrackStats>,
    /// What it is sent of each track it receives (negotiated).
    pub subscribed: Vec<SubscribedTrackStats>,
    /// Its connection quality as of the last stats interval (`crate::quality`);
    /// `None` before it is connected and a loss figure exists.
    pub quality: Option<ConnectionQuality>,
}

/// A track as its publisher sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedTrackStats {
    /// The track.
    pub track: TrackId,
    /// Audio or video.
    pub kind: TrackKind,
    /// Measured bitrate of an unlayered track (0 for a simulcast one: see `layers`).
    pub bitrate_bps: u64,
    /// Picture size of its latest keyframe (unlayered video).
    pub size: Option<Size>,
    /// Its simulcast layers, low to high; empty when unlayered.
    pub layers: Vec<LayerStats>,
    /// Muted by the server ([`SfuHandle::mute`](crate::SfuHandle::mute)).
    pub muted: bool,
}

/// One simulcast layer as the publisher sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerStats {
    /// Its rid.
    pub rid: String,
    /// Measured bitrate.
    pub bitrate_bps: u64,
    /// Whether the publisher is sending it (frames within the last second or so).
    pub active: bool,
    /// Picture size of its latest keyframe, read from the bitstream (VP8 frame header,
    /// H.264 SPS): what the encoder really sends, whatever scaling was asked for.
    pub size: Option<Size>,
}

/// A track as one subscriber receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribedTrackStats {
    /// The track.
    pub track: TrackId,
    /// Who publishes it.
    pub publisher: ParticipantId,
    /// The best quality the subscriber asked for.
    pub max_quality: Quality,
    /// The largest picture the subscriber asked for, if it did.
    pub max_size: Option<Size>,
    /// Simulcast: the rid of the layer being forwarded (`None` before the first
    /// keyframe, while paused, or when unlayered).
    pub layer: Option<String>,
    /// Simulcast: the rid of the layer a switch waits for a keyframe of.
    pub pending_layer: Option<String>,
    /// Paused because not even its lowest layer fits the subscriber's bandwidth.
    pub paused: bool,
    /// Held back by "last N".
    pub held: bool,
}

/// The stream of [`SfuEvent`]s; one consumer (the signalling layer).
#[derive(Debug)]
pub struct SfuEvents {
    /// Events from the driver task.
    rx: mpsc::UnboundedReceiver<SfuEvent>,
    /// Events sent and not yet received; shared with the sender.
    backlog: Arc<AtomicUsize>,
}

impl SfuEvents {
    /// The next event; `None` once the SFU has stopped.
    pub async fn recv(&mut self) -> Option<SfuEvent> {
        let ev = self.rx.recv().await;
        if ev.is_some() {
            self.backlog.fetch_sub(1, Ordering::Relaxed);
        }
        ev
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<SfuEvent> {
        let ev = self.rx.try_recv().ok();
        if ev.is_some() {
            self.backlog.fetch_sub(1, Ordering::Relaxed);
        }
        ev
    }
}

/// The drivers' side of the event stream (one clone per shard).
#[derive(Debug, Clone)]
pub(crate) struct EventSink {
    /// To the consumer.
    tx: mpsc::UnboundedSender<SfuEvent>,
    /// Events sent and not yet received.
    backlog: Arc<AtomicUsize>,
    /// Backlog above which droppable events are dropped.
    limit: usize,
    /// Counts dropped events (a metric).
    dropped: Counter,
}

impl EventSink {
    /// A connected pair.
    pub(crate) fn new(limit: usize, dropped: Counter) -> (Self, SfuEvents) {
        let (tx, rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(AtomicUsize::new(0));
        (
            Self {
                tx,
                backlog: backlog.clone(),
                limit,
                dropped,
            },
            SfuEvents { rx, backlog },
        )
    }

    /// Sends an event; droppable ones only while the consumer keeps up. Nobody listening
    /// is not an error: the SFU keeps forwarding.
    pub(crate) fn send(&self, ev: SfuEvent) {
        if ev.droppable() && self.backlog.load(Ordering::Relaxed) >= self.limit {
            self.dropped.inc();
            return;
        }
        if self.tx.send(ev).is_ok() {
            self.backlog.fetch_add(1, Ordering::Relaxed);
        }
    }
}
