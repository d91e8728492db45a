//! The tokio task that owns the media socket, every peer's `Rtc` and the router: it
//! routes each datagram to its peer (`Rtc::accepts`), drives str0m's
//! `poll_output`/`handle_input` loop with timeouts, forwards frames between peers, and
//! turns router changes into renegotiation and [`SfuEvent`]s.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::bwe::BweKind;
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, trace, warn};

use crate::config::SfuConfig;
use crate::error::SfuError;
use crate::event::{EventSink, LeaveReason, SfuEvent};
use crate::handle::Command;
use crate::ids::{ParticipantId, TrackId, TrackKind};
use crate::metrics::SfuMetrics;
use crate::peer::{Drain, Peer};
use crate::policer::Policer;
use crate::router::Router;

mod control;
mod media;
mod outbox;
mod shard;
mod spread;
mod tcp;
pub use tcp::ICE_TCP_MAX_WAITING_PER_ADDRESS;

pub(crate) use shard::{HANDOFF_QUEUE, Handoff, Mirror, ShardLink, Shared};

/// Largest datagram read; WebRTC keeps below ~1200 bytes, bigger is truncated and
/// then fails to parse (counted as malformed).
const RECV_BUFFER: usize = 2048;

/// Handed-off messages taken per wake before the peers are polled.
const HANDOFF_BATCH: usize = 64;

/// The driver task's state (one per shard).
pub(crate) struct Driver {
    /// Timings, limits, addresses.
    config: SfuConfig,
    /// This shard's socket (all shards' share one address).
    socket: UdpSocket,
    /// Its bound address.
    local_addr: SocketAddr,
    /// Candidates and crypto.
    shared: Arc<Shared>,
    /// The other shards.
    shard: ShardLink,
    /// Sources whose peer another shard holds, learned from probes.
    foreign: HashMap<SocketAddr, usize>,
    /// Rooms, tracks, subscriptions.
    router: Router,
    /// Every participant's session.
    peers: HashMap<ParticipantId, Peer>,
    /// Which peer a remote address belongs to, filled on first acceptance; saves
    /// asking every peer's `accepts` per datagram.
    by_addr: HashMap<SocketAddr, ParticipantId>,
    /// Which peer an ICE ufrag of ours belongs to: a connectivity check from a new
    /// source names its session, found with one lookup however many peers there are.
    by_ufrag: HashMap<String, ParticipantId>,
    /// Budget of scans over every peer's `accepts` for other datagrams from unknown
    /// sources (`SfuConfig::unknown_source_scans` a second), so that a flood of them
    /// from forged addresses costs little more than its reads.
    scans: Policer,
    /// Tracks refused by a room limit, in the order refused, waiting for room
    /// (see `publish`); a track gone or a participant removed leaves it.
    refused: Vec<(ParticipantId, str0m::media::Mid, str0m::media::MediaKind)>,
    /// A track went away since the refused ones were last tried.
    retry_refused: bool,
    /// Peers with output to poll.
    dirty: Vec<ParticipantId>,
    /// Requests from handles.
    commands: mpsc::Receiver<Command>,
    /// Events to signalling.
    events: EventSink,
    /// Shared counters.
    metrics: SfuMetrics,
    /// What this shard last added to the room/participant/track gauges (shards add
    /// their own counts).
    gauges: (i64, i64, i64),
    /// What this shard last added to the connection-quality gauges, per level
    /// (`QualityLevel::ALL`'s order).
    quality_gauges: [i64; 4],
    /// Next offer id; ids are unique across peers and shards.
    next_offer_id: u64,
    /// When stats are gathered next.
    next_stats: Instant,
    /// When stats were gathered last.
    last_stats: Instant,
    /// When every subscriber's simulcast layers are chosen next.
    next_allocation: Instant,
    /// Reused list of layer keyframes the allocation asks for.
    scratch_keyframes: Vec<(TrackId, usize)>,
    /// Reused map of single-stream cameras with one subscriber to that subscriber's
    /// room (see `Peer::tell_publisher`).
    scratch_rooms: HashMap<TrackId, u64>,
    /// Reused per-frame list of subscribers, so forwarding does not allocate.
    scratch_subscribers: Vec<ParticipantId>,
    /// Reused list of one peer's str0m events.
    scratch_events: Vec<Event>,
    /// Datagrams produced by the current pump, sent in batches.
    outbox: outbox::Outbox,
    /// ICE-TCP connections (RFC 6544) and the listener.
    tcp: tcp::TcpLinks,
    /// What the connection tasks report.
    tcp_events: mpsc::Receiver<tcp::TcpEvent>,
    /// Members of this shard's rooms held by other shards, and which (rooms spread
    /// over shards, see `spread.rs`).
    remote: HashMap<ParticipantId, usize>,
    /// Rooms are spread over shards (`spread_rooms_above` > 0 and several shards).
    spread: bool,
    /// Shards a frame goes to (reused).
    scratch_shards: Vec<usize>,
    /// The room of a local publisher's camera whose one subscriber is on another
    /// shard, as that shard last said, and when.
    remote_rooms: HashMap<TrackId, (u64, Instant)>,
}

/// Cached address routes per peer on average before new ones stop being cached (a peer
/// spraying STUN from many ports must not grow the map; uncached routes still work).
const ROUTES_PER_PEER: usize = 4;

/// Where a datagram goes.
enum Route {
    /// To this shard's peer.
    Local(ParticipantId),
    /// To the shard that holds its peer.
    Shard(usize),
    /// Nobody known.
    Unknown,
}

/// What one shard's driver is made of.
pub(crate) struct DriverParts {
    pub(crate) config: SfuConfig,
    pub(crate) shared: Arc<Shared>,
    pub(crate) socket: std::net::UdpSocket,
    /// The ICE-TCP listener, if ICE-TCP is on.
    pub(crate) tcp: Option<std::net::TcpListener>,
    pub(crate) shard: ShardLink,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) events: EventSink,
    pub(crate) metrics: SfuMetrics,
}

impl Driver {
    /// A shard's driver on its socket; must be called inside the runtime that runs it.
    pub(crate) fn new(parts: DriverParts) -> Result<Self, SfuError> {
        let DriverParts {
            config,
            shared,
            socket,
            tcp,
            shard,
            commands,
            events,
            metrics,
        } = parts;
        let socket = UdpSocket::from_std(socket)?;
        let (tcp, tcp_events) = tcp::TcpLinks::new(tcp, metrics.clone())?;
        let local_addr = socket.local_addr()?;
        let config_spread = config.spread_rooms_above > 0 && shard.count > 1;
        // A datagram rate of 0 would mean no limit.
        let scans = Policer::new(0, config.unknown_source_scans.max(1));
        let now = Instant::now();
        let router = Router::with_track_ids(
            config.router.clone(),
            shard.index as u64 + 1,
            shard.count as u64,
        );
        Ok(Self {
            router,
            next_stats: now + config.stats_interval,
            last_stats: now,
            next_allocation: now + config.bandwidth.allocation_interval,
            scratch_keyframes: Vec::new(),
            scratch_rooms: HashMap::new(),
            config,
            socket,
            local_addr,
            shared,
            foreign: HashMap::new(),
            peers: HashMap::new(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            scans,
            refused: Vec::new(),
            retry_refused: false,
            dirty: Vec::new(),
            commands,
            events,
            metrics,
            gauges: (0, 0, 0),
            quality_gauges: [0; 4],
            next_offer_id: shard.index as u64 + 1,
            shard,
            scratch_subscribers: Vec::new(),
            scratch_events: Vec::new(),
            outbox: outbox::Outbox::new(),
            tcp,
            tcp_events,
            remote: HashMap::new(),
            spread: config_spread,
            scratch_shards: Vec::new(),
            remote_rooms: HashMap::new(),
        })
    }

    /// Runs until shutdown or until every handle is dropped.
    pub(crate) async fn run(mut self) {
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut handed = Vec::with_capacity(HANDOFF_BATCH);
        let mut tcp_events = Vec::with_capacity(HANDOFF_BATCH);
        loop {
            let deadline = self.next_deadline();
            let accepting = self.tcp.accepting();
            tokio::select! {
                // Commands, then other shards' messages (an owner's notice must be
                // learned before the next datagram from that source is read), then
                // ICE-TCP frames, then the socket, then new ICE-TCP connections.
                biased;
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Shutdown { reply }) => {
                        self.close_all();
                        // Closed before the answer, so that no request sent after it
                        // is queued for a shard that is gone (tokio may keep a message
                        // sent as the receiver drops until the last sender drops: its
                        // caller waited forever). Requests queued before are dropped
                        // (their callers get `Closed`); another shutdown is answered.
                        self.commands.close();
                        while let Some(cmd) = self.commands.recv().await {
                            if let Command::Shutdown { reply } = cmd {
                                let _ = reply.send(());
                            }
                        }
                        let _ = reply.send(());
                        return;
                    }
                    Some(cmd) => {
                        self.handle_command(cmd, Instant::now());
                        self.update_gauges();
                    }
                    None => {
                        self.close_all();
                        return;
                    }
                },
                Some(msg) = self.shard.mirror.recv() => {
                    let now = Instant::now();
                    self.handle_mirror(msg, now);
                    self.pump(now);
                }
                n = self.shard.handoff.recv_many(&mut handed, HANDOFF_BATCH) => {
                    // Never 0: this shard holds a sender to itself.
                    debug_assert!(n > 0);
                    let now = Instant::now();
                    for msg in handed.drain(..) {
                        self.handle_handoff(msg, now);
                    }
                    self.pump(now);
                    // Another shard's frames must not starve this shard's socket (the
                    // select is biased toward them). The socket carries this shard's
                    // own subscribers' feedback, which delayed reads as congestion.
                    self.read_socket(n, &mut buf);
                }
                n = self.tcp_events.recv_many(&mut tcp_events, HANDOFF_BATCH) => {
                    // Never 0: the links hold a sender.
                    let now = Instant::now();
                    for ev in tcp_events.drain(..) {
                        self.handle_tcp_event(ev, now);
                    }
                    self.pump(now);
                    // Likewise, a client flooding its TCP connection must not starve
                    // the socket.
                    self.read_socket(n, &mut buf);
                }
                res = self.socket.recv_from(&mut buf) => match res {
                    Ok((n, source)) => {
                        let now = Instant::now();
                        self.handle_datagram(&buf[..n], source, now);
                        // Reading on until the socket is empty before polling the peers
                        // was measured slower here: at these rates the queue is mostly
                        // one datagram deep, so the extra read only adds a syscall.
                        self.pump(now);
                    }
                    // ICMP port unreachable surfaces here on some systems; not fatal.
                    Err(e) => debug!("recv_from: {e}"),
                },
                res = tcp::accept(self.tcp.listener()), if accepting => match res {
                    Ok((stream, source)) => self.tcp.start(stream, source),
                    // Out of file descriptors, or the connection was reset before it
                    // was taken: try again shortly.
                    Err(e) => {
                        debug!("accept: {e}");
                        self.tcp.pause(Instant::now());
                    }
                },
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            self.handle_timeouts(Instant::now());
        }
    }

    /// The earliest timer of any peer, the router, the stats and allocation ticks, and
    /// the end of a pause in accepting ICE-TCP connections.
    fn next_deadline(&self) -> Instant {
        let mut t = self.next_stats.min(self.next_allocation);
        for p in self.peers.values() {
            t = t.min(p.next_timeout);
        }
        if let Some(r) = self.router.poll_timeout() {
            t = t.min(r);
        }
        if let Some(r) = self.tcp.resume_at().filter(|&r| r > Instant::now()) {
            t = t.min(r);
        }
        t
    }

    /// Routes one datagram received on this shard's socket to the peer that accepts
    /// it, here or on another shard (the caller pumps).
    fn handle_datagram(&mut self, bytes: &[u8], source: SocketAddr, now: Instant) {
        self.metrics.packets_in.inc();
        self.metrics.bytes_in.inc_by(bytes.len() as u64);
        // RFC 7983 demultiplexing; anything else is dropped here.
        let Ok(contents) = bytes.try_into() else {
            self.metrics.malformed_dropped.inc();
            trace!(%source, len = bytes.len(), "malformed datagram");
            return;
        };
        let input = self.input(contents, source, Protocol::Udp, now);
        match self.route(&input, bytes, source) {
            Route::Local(id) => self.deliver(&id, input, bytes),
            Route::Shard(shard) => {
                let _ = self.hand_off(
                    shard,
                    Handoff::Datagram {
                        bytes: bytes.to_vec(),
                        source,
                        origin: self.shard.index,
                        probe: false,
                    },
                );
            }
            // A new source's first datagram is a STUN check (ICE precedes DTLS and
            // media): ask the other shards whose it is. DTLS or media may overtake the
            // owner's notice, so they ask too.
            Route::Unknown if self.shard.count > 1 => {
                let next = (self.shard.index + 1) % self.shard.count;
                let _ = self.hand_off(
                    next,
                    Handoff::Datagram {
                        bytes: bytes.to_vec(),
                        source,
                        origin: self.shard.index,
                        probe: true,
                    },
                );
            }
            Route::Unknown => {
                self.metrics.unrouted_dropped.inc();
            }
        }
    }

    /// str0m's input for a received datagram (or ICE-TCP frame).
    fn input<'a>(
        &self,
        contents: DatagramRecv<'a>,
        source: SocketAddr,
        proto: Protocol,
        now: Instant,
    ) -> Input<'a> {
        Input::Receive(
            now,
            Receive {
                proto,
                source,
                destination: self.destination_for(source, proto),
                contents,
            },
        )
    }

    /// Reads up to `n` datagrams that are already waiting on the socket, handling
    /// each (after a batch of other work, which the biased select put first).
    fn read_socket(&mut self, n: usize, buf: &mut [u8]) {
        for _ in 0..n {
            let Ok((len, source)) = self.socket.try_recv_from(buf) else {
                break;
            };
            let now = Instant::now();
            self.handle_datagram(&buf[..len], source, now);
            self.pump(now);
        }
    }

    /// Where a datagram from `source` goes: a peer of this shard, the shard that holds
    /// its peer, or nobody known.
    fn route(&mut self, input: &Input, datagram: &[u8], source: SocketAddr) -> Route {
        if let Some(id) = self.local_peer(input, datagram, source) {
            return Route::Local(id);
        }
        match self.foreign.get(&source) {
            Some(&shard) => Route::Shard(shard),
            None => Route::Unknown,
        }
    }

    /// This shard's peer that accepts `input` (read from `datagram`), remembered by
    /// source address: the one the source last reached, else the one a STUN check's
    /// ufrag names, else (within the scan budget) the first that accepts it.
    fn local_peer(
        &mut self,
        input: &Input,
        datagram: &[u8],
        source: SocketAddr,
    ) -> Option<ParticipantId> {
        let accepts =
            |id: &&ParticipantId| self.peers.get(*id).is_some_and(|p| p.rtc.accepts(input));
        if let Some(id) = self.by_addr.get(&source).filter(accepts) {
            return Some(id.clone());
        }
        let named = stun_local_ufrag(datagram)
            .and_then(|ufrag| self.by_ufrag.get(ufrag))
            .filter(accepts)
            .cloned();
        let id = match named {
            Some(id) => id,
            None => {
                let Input::Receive(now, _) = input else {
                    return None;
                };
                if !self.scans.admit(0, *now) {
                    trace!(%source, "scan budget spent: not looked for here");
                    return None;
                }
                self.peers
                    .iter()
                    .find(|(_, p)| p.rtc.accepts(input))
                    .map(|(id, _)| id.clone())?
            }
        };
        if self.by_addr.len() < ROUTES_PER_PEER * self.peers.len() + 16 {
            self.by_addr.insert(source, id.clone());
        }
        // It moved here (a new shard never holds a peer another one held, but a stale
        // guess must not outlive the truth).
        self.foreign.remove(&source);
        Some(id)
    }

    /// Files peer `id` under its current ICE ufrag (set when its session is created,
    /// new after an ICE restart).
    fn index_ufrag(&mut self, id: &ParticipantId) {
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        let ufrag = peer.rtc.direct_api().local_ice_credentials().ufrag;
        if ufrag == peer.ufrag {
            return;
        }
        if self.by_ufrag.get(&peer.ufrag) == Some(id) {
            self.by_ufrag.remove(&peer.ufrag);
        }
        self.by_ufrag.insert(ufrag.clone(), id.clone());
        peer.ufrag = ufrag;
    }

    /// Gives `datagram`, read as `input`, to peer `id`, unless it comes over the peer's
    /// incoming limits (STUN apart).
    fn deliver(&mut self, id: &ParticipantId, input: Input, datagram: &[u8]) {
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        let len = datagram.len();
        if !is_stun(datagram)
            && let Input::Receive(now, _) = &input
            && !peer.policer.admit(len, *now)
        {
            if peer.counters.packets_policed == 0 {
                warn!(participant = %id, "sending over its incoming limits: the excess is dropped");
            }
            peer.counters.packets_policed += 1;
            self.metrics.policed_dropped.inc();
            return;
        }
        peer.counters.packets_in += 1;
        peer.counters.bytes_in += len as u64;
        if let Err(e) = peer.rtc.handle_input(input) {
            self.metrics.peer_errors.inc();
            warn!(participant = %id, "peer input refused, disconnecting: {e}");
            peer.protocol_error = true;
            peer.rtc.disconnect();
        }
        self.mark_dirty(id);
    }

    /// The local address a datagram (or ICE-TCP frame) from `source` was sent to: the
    /// first candidate of its protocol and address family (str0m matches it against
    /// the local candidates).
    fn destination_for(&self, source: SocketAddr, proto: Protocol) -> SocketAddr {
        self.shared
            .candidates
            .iter()
            .filter(|c| c.proto() == proto)
            .map(|c| c.addr())
            .find(|a| a.is_ipv4() == source.is_ipv4())
            .unwrap_or(self.local_addr)
    }

    /// Runs due timers: peers' str0m timeouts, speaker evaluation, stats, hygiene.
    fn handle_timeouts(&mut self, now: Instant) {
        if !self.peers.values().any(|p| p.next_timeout <= now)
            && self.router.poll_timeout().is_none_or(|t| t > now)
            && self.next_stats > now
            && self.next_allocation > now
        {
            // Nothing due; peers a command touched still get polled.
            if !self.dirty.is_empty() {
                self.pump(now);
            }
            return;
        }
        let due: Vec<ParticipantId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.next_timeout <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            if let Some(p) = self.peers.get_mut(&id)
                && let Err(e) = p.rtc.handle_input(Input::Timeout(now))
            {
                warn!(participant = %id, "timeout handling failed: {e}");
                p.rtc.disconnect();
            }
            self.mark_dirty(&id);
        }
        if self.router.poll_timeout().is_some_and(|t| t <= now) {
            self.router.handle_timeout(now);
        }
        if self.next_stats <= now {
            self.tick_stats(now);
        }
        if self.next_allocation <= now {
            self.allocate_layers(now);
        }
        self.pump(now);
    }

    /// Once per stats interval: stats event, connect and answer timeouts.
    fn tick_stats(&mut self, now: Instant) {
        let interval = now.saturating_duration_since(self.last_stats);
        self.last_stats = now;
        self.next_stats = now + self.config.stats_interval;
        // Gauges are refreshed here and after commands, not per datagram: the census
        // walks every track.
        self.update_gauges();
        for p in self.peers.values_mut().filter(|p| p.connected) {
            let limited = p.tracks_paused() > 0;
            let rtt = p.counters.rtt;
            p.quality = p
                .quality_meter
                .tick(now, p.counters.packets_in, rtt, limited);
        }
        self.update_quality_gauges();
        let router = &self.router;
        let stats: Vec<_> = self
            .peers
            .values_mut()
            .map(|p| p.stats(Some(interval), router))
            .collect();
        for s in &stats {
            if let Some(e) = s.bandwidth_estimate_bps {
                self.metrics.subscriber_estimate.observe(e as f64);
            }
        }
        // Sent even when empty: the consumer learns that the last participant left.
        self.events.send(SfuEvent::Stats {
            shard: self.shard.index,
            participants: stats,
        });
        let connect_deadline = now.checked_sub(self.config.connect_timeout);
        let answer_deadline = now.checked_sub(self.config.answer_timeout);
        let mut late = Vec::new();
        for (id, p) in &mut self.peers {
            if !p.connected && connect_deadline.is_some_and(|d| p.joined_at <= d) {
                late.push(id.clone());
            }
            if answer_deadline.is_some_and(|d| p.expire_offer(d)) {
                debug!(participant = %id, "offer unanswered, offering again");
            }
        }
        for id in late {
            self.remove_participant(&id, LeaveReason::ConnectTimeout);
        }
    }

    /// Polls dirty peers until they are idle, propagating what they produce, then
    /// applies router changes and negotiates; repeats until nothing is left.
    fn pump(&mut self, now: Instant) {
        loop {
            while let Some(id) = self.dirty.pop() {
                let mut events = std::mem::take(&mut self.scratch_events);
                self.drain_peer(&id, now, &mut events);
                for ev in events.drain(..) {
                    self.handle_peer_event(&id, ev, now);
                }
                self.scratch_events = events;
            }
            self.apply_router_events();
            if std::mem::take(&mut self.retry_refused) && !self.refused.is_empty() {
                self.retry_refused();
                self.apply_router_events();
            }
            self.negotiate_all(now);
            self.reap_dead();
            if self.dirty.is_empty() {
                break;
            }
        }
        self.outbox.flush(&self.socket, &self.metrics);
    }

    /// Sends a peer's transmits and collects its events until str0m wants a timeout
    /// that is not due yet.
    fn drain_peer(&mut self, id: &ParticipantId, now: Instant, events: &mut Vec<Event>) {
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        peer.dirty = false;
        let mut drain = Drain::new(now, Instant::now);
        loop {
            match peer.poll(&mut drain) {
                Ok(Output::Transmit(t)) if t.proto == Protocol::Udp => {
                    if self.outbox.push(t) {
                        self.outbox.flush(&self.socket, &self.metrics);
                    }
                }
                Ok(Output::Transmit(t)) => {
                    let len = t.contents.len() as u64;
                    if self.tcp.send(t.destination, t.contents.into()) {
                        self.metrics.packets_out.inc();
                        self.metrics.bytes_out.inc_by(len);
                    } else {
                        self.metrics.send_dropped.inc();
                    }
                }
                Ok(Output::Event(e)) => events.push(e),
                Ok(Output::Timeout(_)) => return,
                Err(e) => {
                    self.metrics.peer_errors.inc();
                    warn!(participant = %id, "session failed, disconnecting: {e}");
                    peer.rtc.disconnect();
                }
            }
        }
    }

    /// Acts on one str0m event of peer `id`.
    fn handle_peer_event(&mut self, id: &ParticipantId, ev: Event, now: Instant) {
        match ev {
            Event::Connected => {
                let mut video = Vec::new();
                if let Some(p) = self.peers.get_mut(id) {
                    p.connected = true;
                    video = p.open_video_tracks();
                }
                // Media is forwarded from now on.
                self.request_start_keyframes(video, now);
                info!(participant = %id, "media connected");
                self.events.send(SfuEvent::Connected {
                    participant: id.clone(),
                });
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                // No ICE restart yet: a lost peer is removed (the client rejoins).
                if let Some(p) = self.peers.get_mut(id) {
                    p.rtc.disconnect();
                }
            }
            Event::MediaAdded(m) if m.direction.is_receiving() => {
                self.publish(id, m.mid, m.kind);
            }
            Event::MediaChanged(m) => {
                let known = self.peers.get(id).and_then(|p| p.track_in(m.mid));
                match (known, m.direction.is_receiving()) {
                    (Some(_), false) => {
                        if let Some(peer) = self.peers.get_mut(id)
                            && let Some(track) = peer.remove_in(m.mid)
                        {
                            // Its last track gone, it no longer counts as a publisher
                            // (released before the other shards hear of it, so that
                            // their waiting tracks can take its place).
                            if !peer.publishes() {
                                self.shared.release_publisher(&peer.room);
                            }
                            let room = self.router.track(track).map(|t| t.room.clone());
                            let _ = self.router.unpublish(track);
                            if self.spread
                                && let Some(room) = room
                            {
                                self.mirror_unpublish(&room, track);
                            }
                        }
                    }
                    (None, true) => {
                        let kind = self
                            .peers
                            .get(id)
                            .and_then(|p| p.rtc.media(m.mid))
                            .map(|md| md.kind());
                        if let Some(kind) = kind {
                            self.publish(id, m.mid, kind);
                        }
                    }
                    _ => {}
                }
            }
            Event::MediaData(data) => self.forward(id, data, now),
            Event::KeyframeRequest(req) => {
                self.metrics.keyframe_requests_received.inc();
                let Some(p) = self.peers.get_mut(id) else {
                    return;
                };
                p.counters.keyframe_requests_received += 1;
                if let Some(track) = p.track_out(req.mid) {
                    // A simulcast subscriber lost pictures of the layer it receives.
                    let layer = p.current_layer(track);
                    debug!(subscriber = %id, %track, ?layer, kind = ?req.kind, "keyframe request from subscriber");
                    if layer.is_some() || self.router.layers(track).is_empty() {
                        self.request_keyframe(track, layer, now);
                    }
                }
            }
            Event::MediaEgressStats(s) => {
                if let Some(p) = self.peers.get_mut(id) {
                    let kind = kind_of(p, s.mid);
                    let red = p.sends_red(s.mid);
                    p.quality_meter
                        .observe_down((s.mid, s.rid), kind, red, s.packets, s.loss);
                    let old = p
                        .counters
                        .nacks_received
                        .insert(s.mid, s.nacks)
                        .unwrap_or(0);
                    self.metrics
                        .nacks_received
                        .inc_by(s.nacks.saturating_sub(old));
                    if s.rtt.is_some() {
                        p.counters.rtt = s.rtt;
                    }
                }
            }
            Event::MediaIngressStats(s) => {
                if let Some(p) = self.peers.get_mut(id) {
                    let kind = kind_of(p, s.mid);
                    // RTP clocks: Opus 48 kHz, video 90 kHz (RFC 7587, RFC 6184/7741).
                    let clock = match kind {
                        TrackKind::Audio => 48_000.0,
                        TrackKind::Video => 90_000.0,
                    };
                    let jitter = Duration::from_secs_f64(f64::from(s.jitter) / clock);
                    // RED negotiated on the m-line: the publisher sends it (browsers
                    // and the SDK do when it is negotiated) and str0m rebuilds from it.
                    let red = p.sends_red(s.mid);
                    p.quality_meter.observe_up(
                        (s.mid, s.rid),
                        kind,
                        red,
                        s.packets,
                        s.loss,
                        jitter,
                    );
                    let old = p.counters.nacks_sent.insert(s.mid, s.nacks).unwrap_or(0);
                    self.metrics.nacks_sent.inc_by(s.nacks.saturating_sub(old));
                }
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                trace!(participant = %id, bps = estimate.as_u64(), "send-side estimate");
                if let Some(p) = self.peers.get_mut(id) {
                    p.on_estimate(estimate.as_u64());
                }
            }
            Event::EgressBitrateEstimate(BweKind::Remb { estimate, .. }) => {
                trace!(participant = %id, bps = estimate.as_u64(), "REMB from the subscriber");
                if let Some(p) = self.peers.get_mut(id) {
                    p.on_remb(estimate.as_u64(), now);
                }
            }
            Event::PeerStats(s) => {
                if let (Some(p), Some(rtt)) = (self.peers.get_mut(id), s.rtt) {
                    p.counters.rtt = Some(rtt);
                }
            }
            _ => {}
        }
    }

    /// Queues a peer for polling.
    fn mark_dirty(&mut self, id: &ParticipantId) {
        if let Some(p) = self.peers.get_mut(id)
            && !p.dirty
        {
            p.dirty = true;
            self.dirty.push(id.clone());
        }
    }
}

/// The kind of what `peer` carries on `mid` (video if it has no such m-line).
fn kind_of(peer: &Peer, mid: str0m::media::Mid) -> TrackKind {
    peer.rtc
        .media(mid)
        .map_or(TrackKind::Video, |m| media::track_kind(m.kind()))
}

/// Whether `datagram` is STUN by its first byte (0-3, RFC 7983 §7).
fn is_stun(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|&b| b <= 3)
}

/// The ufrag of ours that a STUN request names: the first part of its USERNAME
/// ("ours:theirs", RFC 8445 §7.2.2), if `datagram` is a STUN message (RFC 8489 §5: its
/// first byte and the magic cookie) that has one.
fn stun_local_ufrag(datagram: &[u8]) -> Option<&str> {
    const USERNAME: u16 = 0x0006;
    const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
    if datagram.len() < 20 || !is_stun(datagram) || datagram[4..8] != MAGIC_COOKIE {
        return None;
    }
    let mut rest = &datagram[20..];
    while rest.len() >= 4 {
        let kind = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let value = rest.get(4..4 + len)?;
        if kind == USERNAME {
            let name = std::str::from_utf8(value).ok()?;
            return name.split(':').next();
        }
        // Attributes are padded to 4 bytes.
        rest = rest.get((4 + len).next_multiple_of(4)..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::stun_local_ufrag;

    /// A STUN message: header (Binding request) and these attributes (type, value),
    /// each padded to 4 bytes.
    fn stun(attributes: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, value) in attributes {
            body.extend_from_slice(&kind.to_be_bytes());
            body.extend_from_slice(&(value.len() as u16).to_be_bytes());
            body.extend_from_slice(value);
            body.resize(body.len().next_multiple_of(4), 0);
        }
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(body.len() as u16).to_be_bytes());
        m.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn the_ufrag_of_ours_is_read_from_a_check_s_username() {
        // PRIORITY before USERNAME, an odd-length name (padding), MESSAGE-INTEGRITY after.
        let m = stun(&[
            (0x0024, &[0, 0, 0, 1]),
            (0x0006, b"sfuUfrag:abc"),
            (0x0008, &[9; 20]),
        ]);
        assert_eq!(stun_local_ufrag(&m), Some("sfuUfrag"));
        let m = stun(&[(0x8022, b"x"), (0x0006, b"odd:y")]);
        assert_eq!(stun_local_ufrag(&m), Some("odd"));
    }

    #[test]
    fn anything_else_names_no_ufrag() {
        // No USERNAME (a binding indication, say).
        assert_eq!(stun_local_ufrag(&stun(&[(0x8028, &[0; 4])])), None);
        // Not STUN: RTP, no magic cookie, too short.
        let mut rtp = stun(&[(0x0006, b"a:b")]);
        rtp[0] = 0x80;
        assert_eq!(stun_local_ufrag(&rtp), None);
        let mut cookie = stun(&[(0x0006, b"a:b")]);
        cookie[5] = 0;
        assert_eq!(stun_local_ufrag(&cookie), None);
        assert_eq!(stun_local_ufrag(&[0; 19]), None);
        // An attribute running past the end, a truncated header, a name not UTF-8.
        let mut long = stun(&[(0x0006, b"a:b")]);
        long[22..24].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(stun_local_ufrag(&long), None);
        let m = stun(&[(0x0006, b"a:b")]);
        assert_eq!(stun_local_ufrag(&m[..22]), None);
        assert_eq!(stun_local_ufrag(&stun(&[(0x0006, &[0xff, 0xfe])])), None);
    }
}
