//! Configuration of the SFU: socket, advertised addresses, limits and timings.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Default UDP port for all media (ICE, DTLS, SRTP), every peer multiplexed on it.
pub const DEFAULT_PORT: u16 = 7882;

/// Default TCP port for ICE over TCP, the fallback for clients without UDP.
pub const DEFAULT_TCP_PORT: u16 = 7881;

/// Everything the SFU needs to start.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Where the media socket binds; port 0 picks a free port (tests).
    pub bind: SocketAddr,
    /// Where ICE over TCP listens (RFC 6544, passive candidates; RFC 4571 framing), for
    /// clients whose network blocks UDP; `None`: UDP only. Advertised with lower
    /// priority than UDP, on the same addresses. Port 0 picks a free port.
    pub tcp_bind: Option<SocketAddr>,
    /// Addresses advertised as ICE host candidates (with the bound port), first. Bound
    /// to a specific address, that address is advertised too; bound to a wildcard
    /// address, every interface address of its family (not loopback, not IPv6
    /// link-local). Behind NAT, name the public address here.
    pub public_ips: Vec<IpAddr>,
    /// Routing limits and timings of the core.
    pub router: RouterConfig,
    /// Per-subscriber bandwidth estimation, caps and simulcast layer choice.
    pub bandwidth: BandwidthConfig,
    /// How often per-participant stats are gathered and emitted as `SfuEvent::Stats`.
    pub stats_interval: Duration,
    /// A peer whose ICE has not connected this long after joining is removed.
    pub connect_timeout: Duration,
    /// An SFU offer not answered this long is withdrawn and issued again.
    pub answer_timeout: Duration,
    /// Most one participant may send the SFU, in bits per second: more is dropped before
    /// it is decrypted (one second's worth may come at once; STUN is not counted), so a
    /// peer that floods costs its shard little and its room gets none of the excess.
    /// 0: no limit. Far above what a camera, a screen and a microphone send.
    pub max_incoming_bitrate: u64,
    /// Likewise in datagrams per second (small datagrams flood by count). 0: no limit.
    pub max_incoming_packet_rate: u64,
    /// Per shard and second, how many datagrams from unknown source addresses that are
    /// not a STUN check naming one of our ufrags (those are found by it) may be looked
    /// for by asking every peer; the rest are treated as no peer's. Bounds what a flood
    /// from forged addresses costs; joins need a few a second. At least 1.
    pub unknown_source_scans: u64,
    /// Droppable events (stats, active speaker) are dropped once this many events wait
    /// unread, so a stalled consumer cannot grow memory; negotiation events never are.
    pub event_backlog: usize,
    /// Driver threads, each with its own socket on the same address (SO_REUSEPORT) and
    /// its own rooms; 0 means one per available core. See [`crate::Sfu`].
    pub shards: usize,
    /// Spread big rooms over the shards: once this many of a room's members are on its
    /// home shard (the one with the fewest sessions when it opened), the next ones fill
    /// another shard up to as many (the least loaded), and so on, and each frame
    /// crosses to the shards of its subscribers. 0: a room stays on its home shard. See
    /// [`crate::Sfu`].
    pub spread_rooms_above: usize,
    /// Offer RFC 2198 redundant audio (RED) on every audio m-line, listed before Opus:
    /// a peer that accepts it (browsers do) sends each Opus frame with the previous one
    /// inside, and is sent likewise, so a lost packet is rebuilt from the next one, by
    /// the SFU (str0m) from a publisher and by the browser from the SFU, without a
    /// retransmission. Costs about the audio's bitrate again on those links; peers that
    /// do not accept it get plain Opus.
    pub audio_red: bool,
}

impl Default for SfuConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_PORT),
            tcp_bind: None,
            public_ips: Vec::new(),
            router: RouterConfig::default(),
            bandwidth: BandwidthConfig::default(),
            stats_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(30),
            answer_timeout: Duration::from_secs(5),
            max_incoming_bitrate: 50_000_000,
            max_incoming_packet_rate: 10_000,
            unknown_source_scans: 1000,
            event_backlog: 1024,
            shards: 0,
            spread_rooms_above: 16,
            audio_red: true,
        }
    }
}

/// How much the SFU sends each subscriber: str0m's send-side bandwidth estimate
/// (transport-wide congestion control feedback, draft-holmer-rmcat-transport-wide-cc)
/// capped per subscriber, split over its tracks with audio first, and turned into a
/// simulcast layer per video track.
#[derive(Debug, Clone)]
pub struct BandwidthConfig {
    /// Run the estimator for each subscriber. Off: every subscriber is assumed to have
    /// `max_subscriber_bitrate`, and str0m neither paces nor probes.
    pub estimate: bool,
    /// Estimate a new session starts from, in bits per second (libwebrtc starts at
    /// 300 kbit/s too; a slow link congests less in the first seconds).
    pub initial_bitrate: u64,
    /// Most the SFU sends one subscriber, in bits per second: the desired bitrate given
    /// to the estimator and the budget for layer choice never exceed it.
    pub max_subscriber_bitrate: u64,
    /// Most one publisher may send, in bits per second, told to it by REMB every
    /// second; 0: no cap (the publisher's own congestion control alone).
    pub max_publisher_bitrate: u64,
    /// How often each subscriber's layers are chosen again.
    pub allocation_interval: Duration,
    /// A higher layer must have fit this long before a subscriber is moved up (a lower
    /// one is taken at once).
    pub upgrade_hold: Duration,
    /// A higher layer must fit in the budget divided by this to count as fitting for
    /// an upgrade, so an estimate hovering at a layer's rate does not flap.
    pub upgrade_headroom: f64,
    /// A simulcast track is paused for a subscriber once the estimate has left no room
    /// for its lowest layer this long (the lowest layer is sent meanwhile); at once
    /// when the cap or the subscriber's REMB leaves none.
    pub pause_hold: Duration,
}

impl Default for BandwidthConfig {
    fn default() -> Self {
        Self {
            estimate: true,
            initial_bitrate: 300_000,
            max_subscriber_bitrate: 8_000_000,
            max_publisher_bitrate: 0,
            allocation_interval: Duration::from_millis(200),
            upgrade_hold: Duration::from_secs(2),
            upgrade_headroom: 1.15,
            pause_hold: Duration::from_secs(3),
        }
    }
}

impl SfuConfig {
    /// The number of shards to run: `shards`, or one per available core for 0.
    pub fn shard_count(&self) -> usize {
        match self.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// Limits and timings of the sans-IO routing core.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Rooms open at once on this SFU.
    pub max_rooms: usize,
    /// Participants in one room.
    pub max_participants_per_room: usize,
    /// Tracks one participant may publish (an m-line each).
    pub max_tracks_per_participant: usize,
    /// Members of one room who may publish (a webinar: a few speakers, many
    /// listeners); a track of a member beyond it is refused, the others still
    /// receive. 0: every member may.
    pub max_publishers_per_room: usize,
    /// At most one keyframe request per track toward its publisher in this interval;
    /// many subscribers losing the same keyframe must not make the encoder spin.
    pub keyframe_min_interval: Duration,
    /// Active speaker detection.
    pub speaker: SpeakerConfig,
    /// "Last N": forward each subscriber the video of only the N other members who
    /// were the active speaker most recently (then the earliest joiners); audio is
    /// always forwarded. `None` forwards all video.
    pub last_n: Option<usize>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            max_rooms: 1000,
            max_participants_per_room: 50,
            max_tracks_per_participant: 4,
            max_publishers_per_room: 0,
            keyframe_min_interval: Duration::from_millis(500),
            speaker: SpeakerConfig::default(),
            last_n: None,
        }
    }
}

/// Active speaker detection from RFC 6464 audio levels.
#[derive(Debug, Clone)]
pub struct SpeakerConfig {
    /// Time constant of the exponential smoothing of each participant's level.
    pub smoothing: Duration,
    /// How often the room's loudest participant is re-evaluated.
    pub interval: Duration,
    /// A smoothed level quieter than this (in -dBov) does not count as speaking.
    pub threshold_dbov: u8,
    /// A challenger must be this many dB louder than the current speaker to take over,
    /// so two similar voices do not make the indication flap.
    pub hysteresis_db: f32,
    /// A participant whose audio stopped arriving this long ago counts as silent
    /// (muted, DTX, or gone).
    pub stale_after: Duration,
}

impl Default for SpeakerConfig {
    fn default() -> Self {
        Self {
            smoothing: Duration::from_millis(300),
            interval: Duration::from_millis(300),
            threshold_dbov: 60,
            hysteresis_db: 3.0,
            stale_after: Duration::from_millis(500),
        }
    }
}
