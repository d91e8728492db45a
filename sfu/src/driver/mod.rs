//! The tokio task that owns the media socket, every peer's `Rtc` and the router: it
//! routes each datagram to its peer (`Rtc::accepts`), drives str0m's
//! `poll_output`/`handle_input` loop with timeouts, forwards frames between peers, and
//! turns router changes into renegotiation and [`SfuEvent`]s.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use str0m::bwe::BweKind;
use str0m::crypto::CryptoProvider;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, trace, warn};

use crate::config::SfuConfig;
use crate::error::SfuError;
use crate::event::{EventSink, LeaveReason, SfuEvent, SfuEvents};
use crate::handle::Command;
use crate::ids::{ParticipantId, TrackId};
use crate::metrics::SfuMetrics;
use crate::peer::Peer;
use crate::router::Router;

mod control;
mod media;

/// Largest datagram read; WebRTC keeps below ~1200 bytes, bigger is truncated and
/// then fails to parse (counted as malformed).
const RECV_BUFFER: usize = 2048;

/// The driver task's state.
pub(crate) struct Driver {
    /// Timings, limits, addresses.
    config: SfuConfig,
    /// The one media socket all peers share.
    socket: UdpSocket,
    /// Its bound address.
    local_addr: SocketAddr,
    /// ICE host candidates given to every peer (ICE-lite, RFC 8445 §2.5).
    candidates: Vec<Candidate>,
    /// DTLS/SRTP crypto shared by every `Rtc`.
    crypto: Arc<CryptoProvider>,
    /// One DTLS certificate for every session (RFC 8827 lets an endpoint reuse one; its
    /// fingerprint is in each SDP): a join does not pay for a key generation on the
    /// driver thread. `None` if the provider cannot make one (each `Rtc` then does).
    dtls_cert: Option<str0m::config::DtlsCert>,
    /// Rooms, tracks, subscriptions.
    router: Router,
    /// Every participant's session.
    peers: HashMap<ParticipantId, Peer>,
    /// Which peer a remote address belongs to, filled on first acceptance; saves
    /// asking every peer's `accepts` per datagram.
    by_addr: HashMap<SocketAddr, ParticipantId>,
    /// Peers with output to poll.
    dirty: Vec<ParticipantId>,
    /// Requests from handles.
    commands: mpsc::Receiver<Command>,
    /// Events to signalling.
    events: EventSink,
    /// Shared counters.
    metrics: SfuMetrics,
    /// Next offer id; ids are unique across peers.
    next_offer_id: u64,
    /// When stats are gathered next.
    next_stats: Instant,
    /// When stats were gathered last.
    last_stats: Instant,
    /// When every subscriber's simulcast layers are chosen next.
    next_allocation: Instant,
    /// Reused list of layer keyframes the allocation asks for.
    scratch_keyframes: Vec<(TrackId, usize)>,
    /// Reused per-frame list of subscribers, so forwarding does not allocate.
    scratch_subscribers: Vec<ParticipantId>,
    /// Reused list of one peer's str0m events.
    scratch_events: Vec<Event>,
}

/// Cached address routes per peer on average before new ones stop being cached (a peer
/// spraying STUN from many ports must not grow the map; uncached routes still work).
const ROUTES_PER_PEER: usize = 4;

impl Driver {
    /// Binds the socket and prepares the candidates.
    pub(crate) async fn bind(
        config: SfuConfig,
        commands: mpsc::Receiver<Command>,
        metrics: SfuMetrics,
    ) -> Result<(Self, SfuEvents), SfuError> {
        let socket = UdpSocket::bind(config.bind).await?;
        let local_addr = socket.local_addr()?;
        let mut ips: Vec<IpAddr> = config.public_ips.clone();
        if !local_addr.ip().is_unspecified() && !ips.contains(&local_addr.ip()) {
            ips.push(local_addr.ip());
        }
        if ips.is_empty() {
            return Err(SfuError::Config(
                "bind is a wildcard address: set public_ips to the addresses peers reach".into(),
            ));
        }
        let candidates = ips
            .iter()
            .map(|ip| Candidate::host(SocketAddr::new(*ip, local_addr.port()), "udp"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SfuError::Config(format!("candidate: {e}")))?;
        let (events, stream) = EventSink::new(config.event_backlog, metrics.events_dropped.clone());
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        let now = Instant::now();
        info!(%local_addr, candidates = ?ips, "SFU media socket bound");
        Ok((
            Self {
                router: Router::new(config.router.clone()),
                next_stats: now + config.stats_interval,
                last_stats: now,
                next_allocation: now + config.bandwidth.allocation_interval,
                scratch_keyframes: Vec::new(),
                config,
                socket,
                local_addr,
                candidates,
                dtls_cert: crypto.dtls_provider.generate_certificate(),
                crypto,
                peers: HashMap::new(),
                by_addr: HashMap::new(),
                dirty: Vec::new(),
                commands,
                events,
                metrics,
                next_offer_id: 1,
                scratch_subscribers: Vec::new(),
                scratch_events: Vec::new(),
            },
            stream,
        ))
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Runs until shutdown or until every handle is dropped.
    pub(crate) async fn run(mut self) {
        let mut buf = vec![0u8; RECV_BUFFER];
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Shutdown { reply }) => {
                        self.close_all();
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
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            self.handle_timeouts(Instant::now());
        }
    }

    /// The earliest timer of any peer, the router, the stats and allocation ticks.
    fn next_deadline(&self) -> Instant {
        let mut t = self.next_stats.min(self.next_allocation);
        for p in self.peers.values() {
            t = t.min(p.next_timeout);
        }
        if let Some(r) = self.router.poll_timeout() {
            t = t.min(r);
        }
        t
    }

    /// Routes one datagram to the peer that accepts it (the caller pumps).
    fn handle_datagram(&mut self, bytes: &[u8], source: SocketAddr, now: Instant) {
        self.metrics.packets_in.inc();
        self.metrics.bytes_in.inc_by(bytes.len() as u64);
        // RFC 7983 demultiplexing; anything else is dropped here.
        let Ok(contents) = bytes.try_into() else {
            self.metrics.malformed_dropped.inc();
            trace!(%source, len = bytes.len(), "malformed datagram");
            return;
        };
        let destination = self.destination_for(source);
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents,
            },
        );
        let cached = self
            .by_addr
            .get(&source)
            .filter(|id| self.peers.get(*id).is_some_and(|p| p.rtc.accepts(&input)))
            .cloned();
        let id = match cached {
            Some(id) => id,
            None => {
                let Some(id) = self
                    .peers
                    .iter()
                    .find(|(_, p)| p.rtc.accepts(&input))
                    .map(|(id, _)| id.clone())
                else {
                    self.metrics.unrouted_dropped.inc();
                    return;
                };
                if self.by_addr.len() < ROUTES_PER_PEER * self.peers.len() + 16 {
                    self.by_addr.insert(source, id.clone());
                }
                id
            }
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        peer.counters.packets_in += 1;
        peer.counters.bytes_in += bytes.len() as u64;
        if let Err(e) = peer.rtc.handle_input(input) {
            self.metrics.peer_errors.inc();
            warn!(participant = %id, "peer input refused, disconnecting: {e}");
            peer.protocol_error = true;
            peer.rtc.disconnect();
        }
        self.mark_dirty(&id);
    }

    /// The local address a datagram from `source` was sent to: the first candidate of
    /// its address family (str0m matches it against the local candidates).
    fn destination_for(&self, source: SocketAddr) -> SocketAddr {
        self.candidates
            .iter()
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
        let stats: Vec<_> = self.peers.values_mut().map(|p| p.stats(interval)).collect();
        for s in &stats {
            if let Some(e) = s.bandwidth_estimate_bps {
                self.metrics.subscriber_estimate.observe(e as f64);
            }
        }
        // Sent even when empty: the consumer learns that the last participant left.
        self.events.send(SfuEvent::Stats(stats));
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
            self.negotiate_all(now);
            self.reap_dead();
            if self.dirty.is_empty() {
                break;
            }
        }
    }

    /// Sends a peer's transmits and collects its events until str0m wants a timeout.
    fn drain_peer(&mut self, id: &ParticipantId, now: Instant, events: &mut Vec<Event>) {
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        peer.dirty = false;
        loop {
            if !peer.rtc.is_alive() {
                peer.next_timeout = now;
                return;
            }
            match peer.rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    let len = t.contents.len() as u64;
                    match self.socket.try_send_to(&t.contents, t.destination) {
                        Ok(_) => {
                            self.metrics.packets_out.inc();
                            self.metrics.bytes_out.inc_by(len);
                            peer.counters.packets_out += 1;
                            peer.counters.bytes_out += len;
                        }
                        Err(e) => {
                            // A full buffer drops the datagram: RTP tolerates loss and
                            // waiting here would stall every other peer.
                            self.metrics.send_dropped.inc();
                            trace!("send to {}: {e}", t.destination);
                        }
                    }
                }
                Ok(Output::Timeout(t)) => {
                    peer.next_timeout = t;
                    return;
                }
                Ok(Output::Event(e)) => events.push(e),
                Err(e) => {
                    self.metrics.peer_errors.inc();
                    warn!(participant = %id, "poll_output failed, disconnecting: {e}");
                    peer.rtc.disconnect();
                }
            }
        }
    }

    /// Acts on one str0m event of peer `id`.
    fn handle_peer_event(&mut self, id: &ParticipantId, ev: Event, now: Instant) {
        match ev {
            Event::Connected => {
                if let Some(p) = self.peers.get_mut(id) {
                    p.connected = true;
                }
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
                        if let Some(track) = self.peers.get_mut(id).and_then(|p| p.remove_in(m.mid))
                        {
                            let _ = self.router.unpublish(track);
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
                    if layer.is_some() || self.router.layers(track).is_empty() {
                        self.request_keyframe(track, layer, now);
                    }
                }
            }
            Event::MediaEgressStats(s) => {
                if let Some(p) = self.peers.get_mut(id) {
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
                    let old = p.counters.nacks_sent.insert(s.mid, s.nacks).unwrap_or(0);
                    self.metrics.nacks_sent.inc_by(s.nacks.saturating_sub(old));
                }
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                if let Some(p) = self.peers.get_mut(id) {
                    p.on_estimate(estimate.as_u64());
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
