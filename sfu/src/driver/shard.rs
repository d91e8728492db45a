//! What makes several drivers one SFU: the state they share (candidates, crypto, the
//! room count), their links (bounded channels), and the hand-off of datagrams that the
//! kernel delivered to a shard not holding their peer (see [`crate::Sfu`], "Shards").

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use str0m::Candidate;
use str0m::crypto::CryptoProvider;
use str0m::media::MediaData;
use str0m::net::{Protocol, TcpType};
use tokio::sync::mpsc;
use tracing::warn;

use super::Driver;
use crate::config::SfuConfig;
use crate::error::{RouterError, SfuError};
use crate::handle::Placement;
use crate::ids::{ParticipantId, RoomId, TrackId, TrackKind};

/// Datagrams and notices queued toward one shard from the others; more are dropped
/// (counted): a stalled shard must not grow memory.
pub(crate) const HANDOFF_QUEUE: usize = 4096;

/// Addresses of other shards' peers remembered per shard; when full the map is
/// cleared and relearned.
const FOREIGN_ROUTES: usize = 65_536;

/// An open room in the shared table.
#[derive(Debug)]
struct RoomCount {
    /// The shard of its first member, which takes its next ones up to
    /// `spread_above`.
    home: usize,
    /// Its members on each shard.
    members: Vec<usize>,
    /// Its members on any shard with a track admitted, for
    /// `max_publishers_per_room`: two shards admitting a first track at once each
    /// see the other's here, not yet in their routers' mirrors.
    publishers: usize,
}

/// What every shard uses alike: candidates, crypto, the DTLS certificate.
pub(crate) struct Shared {
    /// ICE host candidates given to every peer (ICE-lite, RFC 8445 §2.5).
    pub(super) candidates: Vec<Candidate>,
    /// DTLS/SRTP crypto shared by every `Rtc`.
    pub(super) crypto: Arc<CryptoProvider>,
    /// One DTLS certificate for every session (RFC 8827 lets an endpoint reuse one; its
    /// fingerprint is in each SDP): a join does not pay for a key generation on the
    /// driver thread. `None` if the provider cannot make one (each `Rtc` then does).
    pub(super) dtls_cert: Option<str0m::config::DtlsCert>,
    /// Every open room's home shard and members per shard: `max_rooms` and the room
    /// size hold across shards, and a room's next member is placed by it. Locked on
    /// joins and leaves only.
    rooms: Mutex<HashMap<RoomId, RoomCount>>,
    /// Shards running.
    shards: usize,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("candidates", &self.candidate_ips())
            .field("rooms_open", &self.rooms_open())
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Candidates from the configured public IPs and the bound address, or, when bound
    /// to a wildcard address, the node's interface addresses of that family.
    pub(crate) fn new(
        config: &SfuConfig,
        local_addr: SocketAddr,
        tcp_port: Option<u16>,
        shards: usize,
    ) -> Result<Self, SfuError> {
        let mut ips: Vec<IpAddr> = config.public_ips.clone();
        let bound = if local_addr.ip().is_unspecified() {
            interface_ips(local_addr.is_ipv4())
        } else {
            vec![local_addr.ip()]
        };
        for ip in bound {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        if ips.is_empty() {
            return Err(SfuError::Config(format!(
                "bound to {local_addr} and no interface has an address of its family: set \
                 public_ips to the addresses peers reach"
            )));
        }
        let mut candidates = ips
            .iter()
            .map(|ip| Candidate::host(SocketAddr::new(*ip, local_addr.port()), "udp"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SfuError::Config(format!("candidate: {e}")))?;
        // ICE-TCP (RFC 6544): passive candidates on the same addresses; their type
        // preference is below UDP's, so a client with UDP never picks them.
        if let Some(port) = tcp_port {
            for ip in &ips {
                let c = Candidate::builder()
                    .tcp()
                    .host(SocketAddr::new(*ip, port))
                    .tcptype(TcpType::Passive)
                    .build()
                    .map_err(|e| SfuError::Config(format!("candidate: {e}")))?;
                candidates.push(c);
            }
        }
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        Ok(Self {
            candidates,
            dtls_cert: crypto.dtls_provider.generate_certificate(),
            crypto,
            rooms: Mutex::new(HashMap::new()),
            shards: shards.max(1),
        })
    }

    /// Counts a member of `room` on `shard`, unless the room is full or it would be a
    /// room over `max_rooms`.
    pub(super) fn admit(
        &self,
        room: &RoomId,
        shard: usize,
        max_rooms: usize,
        max_members: usize,
    ) -> Result<(), RouterError> {
        let mut rooms = self.rooms.lock();
        self.count_in(&mut rooms, room, shard, max_rooms, max_members)
    }

    /// Places a new member of `room` (see [`Shared::placed`]; `hashed` is the shard
    /// its name hashes to) and counts it there, in one step, so that members joining
    /// at once are placed by each other's counts.
    pub(crate) fn place_and_admit(
        &self,
        room: &RoomId,
        hashed: usize,
        spread_above: usize,
        max_rooms: usize,
        max_members: usize,
    ) -> Result<usize, RouterError> {
        let mut rooms = self.rooms.lock();
        let shard = self.placed(&rooms, room, hashed, spread_above);
        self.count_in(&mut rooms, room, shard, max_rooms, max_members)?;
        Ok(shard)
    }

    fn count_in(
        &self,
        rooms: &mut HashMap<RoomId, RoomCount>,
        room: &RoomId,
        shard: usize,
        max_rooms: usize,
        max_members: usize,
    ) -> Result<(), RouterError> {
        match rooms.get(room) {
            None if rooms.len() >= max_rooms => return Err(RouterError::TooManyRooms),
            Some(r) if r.members.iter().sum::<usize>() >= max_members => {
                return Err(RouterError::RoomFull(room.clone()));
            }
            _ => {}
        }
        let r = rooms.entry(room.clone()).or_insert_with(|| RoomCount {
            home: shard,
            members: vec![0; self.shards],
            publishers: 0,
        });
        r.members[shard] += 1;
        Ok(())
    }

    /// Uncounts a member of `room` on `shard`; the room closes with its last member.
    pub(crate) fn release(&self, room: &RoomId, shard: usize) {
        let mut rooms = self.rooms.lock();
        if let Some(r) = rooms.get_mut(room) {
            r.members[shard] = r.members[shard].saturating_sub(1);
            if r.members.iter().all(|&n| n == 0) {
                rooms.remove(room);
            }
        }
    }

    /// Counts a new publisher of `room` unless it has `limit` already (0: no limit).
    /// False when refused, or when the room is not open.
    pub(super) fn claim_publisher(&self, room: &RoomId, limit: usize) -> bool {
        let mut rooms = self.rooms.lock();
        let Some(r) = rooms.get_mut(room) else {
            return false;
        };
        if limit > 0 && r.publishers >= limit {
            return false;
        }
        r.publishers += 1;
        true
    }

    /// Uncounts a publisher of `room` (its last track went, or it left).
    pub(super) fn release_publisher(&self, room: &RoomId) {
        if let Some(r) = self.rooms.lock().get_mut(room) {
            r.publishers = r.publishers.saturating_sub(1);
        }
    }

    /// The shards holding members of `room`.
    pub(super) fn holders(&self, room: &RoomId) -> Vec<usize> {
        self.rooms.lock().get(room).map_or_else(Vec::new, |r| {
            (0..r.members.len()).filter(|&s| r.members[s] > 0).collect()
        })
    }

    /// Rooms open on all shards.
    pub(crate) fn rooms_open(&self) -> usize {
        self.rooms.lock().len()
    }

    /// The shard for a new member of `room` (`rooms` locked). A new room's first
    /// member goes to the shard with the fewest sessions (of those, the one its name
    /// hashes to, else the lowest), which becomes the room's home. Later members go to
    /// the home shard while it holds fewer than `spread_above` of the room's members
    /// (always, with 0); then to a shard already holding fewer than that many of them;
    /// then to the shard with the fewest sessions of all that holds none; once every
    /// shard holds `spread_above`, to the one holding the fewest. Rooms thus share
    /// the shards out by load, a room spreads over as few shards as its size needs,
    /// and each frame crosses to as few.
    fn placed(
        &self,
        rooms: &HashMap<RoomId, RoomCount>,
        room: &RoomId,
        hashed: usize,
        spread_above: usize,
    ) -> usize {
        let shards = 0..self.shards;
        let load = |s: usize| rooms.values().map(|r| r.members[s]).sum::<usize>();
        let Some(RoomCount {
            home,
            members: counts,
            ..
        }) = rooms.get(room)
        else {
            return shards
                .min_by_key(|&s| (load(s), s != hashed, s))
                .unwrap_or(0);
        };
        let home = *home;
        if spread_above == 0 || counts[home] < spread_above {
            return home;
        }
        if let Some(s) = shards
            .clone()
            .filter(|&s| (1..spread_above).contains(&counts[s]))
            .min_by_key(|&s| counts[s])
        {
            return s;
        }
        if let Some(s) = shards
            .clone()
            .filter(|&s| counts[s] == 0)
            .min_by_key(|&s| load(s))
        {
            return s;
        }
        shards.min_by_key(|&s| counts[s]).unwrap_or(home)
    }

    /// The advertised addresses (for the log).
    pub(crate) fn candidate_ips(&self) -> Vec<IpAddr> {
        self.candidates
            .iter()
            .filter(|c| c.proto() == Protocol::Udp)
            .map(|c| c.addr().ip())
            .collect()
    }
}

/// The addresses of the node's interfaces that peers could reach on a socket bound to
/// the IPv4 (or IPv6) wildcard: not loopback, not IPv6 link-local (which needs a scope
/// the SDP cannot carry).
fn interface_ips(v4: bool) -> Vec<IpAddr> {
    let interfaces = match if_addrs::get_if_addrs() {
        Ok(i) => i,
        Err(e) => {
            warn!("listing network interfaces: {e}");
            return Vec::new();
        }
    };
    let mut ips: Vec<IpAddr> = interfaces
        .iter()
        .map(|i| i.ip())
        .filter(|ip| ip.is_ipv4() == v4 && !ip.is_loopback())
        .filter(|ip| match ip {
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
            IpAddr::V4(_) => true,
        })
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// A message from one shard to another.
pub(crate) enum Handoff {
    /// A datagram that arrived on the sender's socket for a peer it does not hold.
    Datagram {
        /// Its bytes.
        bytes: Vec<u8>,
        /// Where it came from.
        source: SocketAddr,
        /// The shard whose socket received it.
        origin: usize,
        /// The origin does not know the owner: a shard that does not hold the peer
        /// passes it on to the next one; the owner tells the origin.
        probe: bool,
    },
    /// `source`'s peer is held by `shard`.
    Owner { source: SocketAddr, shard: usize },
    /// `source` is no longer held by the shard the origin thought.
    Forget { source: SocketAddr },
    /// An ICE-TCP connection whose first frame no peer of the sender accepts (the
    /// kernel spreads connections over the shards' listeners). `hops`: shards that
    /// have refused it so far.
    Tcp {
        stream: std::net::TcpStream,
        source: SocketAddr,
        frame: Vec<u8>,
        hops: usize,
    },
    /// A frame of `track`, published on the sender's shard, for this shard's
    /// subscribers of it (a room spread over shards).
    Frame {
        track: TrackId,
        data: Box<MediaData>,
    },
}

/// A change of a room spread over shards, sent to the other shards holding it so that
/// each router holds the whole room (members and tracks of all shards): never dropped.
#[derive(Debug, Clone)]
pub(crate) enum Mirror {
    /// `participant` is a member of `room` on `shard`; with `answer`, it just joined
    /// and `shard` wants this shard's members and tracks of the room.
    Join {
        room: RoomId,
        participant: ParticipantId,
        shard: usize,
        answer: bool,
    },
    /// `participant` of `shard` left.
    Leave {
        participant: ParticipantId,
        shard: usize,
    },
    /// `participant` published `track` (with its simulcast rids).
    Publish {
        participant: ParticipantId,
        track: TrackId,
        kind: TrackKind,
        rids: Vec<String>,
    },
    /// `track` went away.
    Unpublish { track: TrackId },
    /// A subscriber on another shard needs a keyframe of `track` (of `layer`).
    Keyframe {
        track: TrackId,
        layer: Option<usize>,
    },
    /// `track`'s only subscriber, on the sender's shard, has room for `bps` for it
    /// (the one-to-one feedback to its publisher; sent every allocation).
    Room { track: TrackId, bps: u64 },
}

/// One shard's links to the others.
pub(crate) struct ShardLink {
    /// This shard's number.
    pub(crate) index: usize,
    /// How many shards run.
    pub(crate) count: usize,
    /// Messages from other shards.
    pub(crate) handoff: mpsc::Receiver<Handoff>,
    /// To every shard (this one included, unused).
    pub(crate) peers: Vec<mpsc::Sender<Handoff>>,
    /// Room changes from other shards (rooms spread over shards).
    pub(crate) mirror: mpsc::UnboundedReceiver<Mirror>,
    /// To every shard's mirror queue (this one included, unused).
    pub(crate) mirrors: Vec<mpsc::UnboundedSender<Mirror>>,
    /// Which shard holds each participant (kept by the handle and the drivers).
    pub(crate) placement: Placement,
}

impl Driver {
    /// Acts on a message from another shard (the caller pumps).
    pub(super) fn handle_handoff(&mut self, msg: Handoff, now: Instant) {
        match msg {
            Handoff::Tcp {
                stream,
                source,
                frame,
                hops,
            } => {
                if let Some(stream) = self.tcp.adopt(stream, source) {
                    self.tcp_first(stream, source, frame, hops, now);
                }
            }
            Handoff::Datagram {
                bytes,
                source,
                origin,
                probe,
            } => {
                // Checked by the shard that received it.
                let Ok(contents) = bytes.as_slice().try_into() else {
                    return;
                };
                let input = self.input(contents, source, Protocol::Udp, now);
                if let Some(id) = self.local_peer(&input, &bytes, source) {
                    if probe {
                        let shard = self.shard.index;
                        let _ = self.hand_off(origin, Handoff::Owner { source, shard });
                    }
                    self.deliver(&id, input, &bytes);
                    return;
                }
                let next = (self.shard.index + 1) % self.shard.count;
                if probe && next != origin {
                    let _ = self.hand_off(
                        next,
                        Handoff::Datagram {
                            bytes,
                            source,
                            origin,
                            probe,
                        },
                    );
                    return;
                }
                if !probe {
                    // The peer left this shard: the origin asks around next time.
                    let _ = self.hand_off(origin, Handoff::Forget { source });
                }
                self.metrics.unrouted_dropped.inc();
            }
            Handoff::Owner { source, shard } => {
                if self.foreign.len() >= FOREIGN_ROUTES {
                    self.foreign.clear();
                }
                self.foreign.insert(source, shard);
            }
            Handoff::Forget { source } => {
                self.foreign.remove(&source);
            }
            Handoff::Frame { track, data } => self.frame_from_shard(track, data, now),
        }
    }

    /// Queues a message to another shard; dropped (counted) when its queue is full.
    /// Returns whether it was queued.
    pub(super) fn hand_off(&self, shard: usize, msg: Handoff) -> bool {
        match msg {
            Handoff::Datagram { .. } => {
                self.metrics.datagrams_handed_off.inc();
            }
            Handoff::Frame { .. } => {
                self.metrics.frames_handed_off.inc();
            }
            _ => {}
        }
        let queued = self.shard.peers[shard].try_send(msg).is_ok();
        if !queued {
            self.metrics.handoff_dropped.inc();
        }
        queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(shards: usize) -> Shared {
        let config = SfuConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            ..SfuConfig::default()
        };
        Shared::new(&config, "127.0.0.1:7882".parse().unwrap(), None, shards).unwrap()
    }

    #[test]
    fn a_room_stays_home_until_it_is_big_then_spills_over_as_few_shards_as_it_needs() {
        let s = shared(3);
        let room = RoomId::from("big");
        let join = |room: &RoomId, hashed, spread| s.place_and_admit(room, hashed, spread, 10, 100);
        // Off: always home (the first member's shard: its hash's, all being empty).
        assert_eq!(join(&RoomId::from("off"), 1, 0), Ok(1));
        assert_eq!(join(&RoomId::from("off"), 1, 0), Ok(1));
        // Home is the shard with the fewest sessions (0, though the name hashes to 1,
        // where "off" has two); two there, then two on the shard with the fewest
        // sessions that holds none of the room (2), then two on the last one, then the
        // one holding the fewest.
        let placed: Vec<usize> = (0..7).map(|_| join(&room, 1, 2).unwrap()).collect();
        assert_eq!(placed, [0, 0, 2, 2, 1, 1, 0]);
        assert_eq!(s.holders(&room), [0, 1, 2]);
        // Another room is placed on its own.
        assert_eq!(join(&RoomId::from("small"), 2, 2), Ok(2));
        // Leaving frees the counts; the last member closes the room.
        for shard in [0, 0, 0, 1, 1, 2, 2] {
            s.release(&room, shard);
        }
        assert!(s.holders(&room).is_empty());
        assert_eq!(s.rooms_open(), 2);
    }

    #[test]
    fn new_rooms_go_to_the_shard_with_the_fewest_sessions() {
        let s = shared(2);
        let join = |room: &str, hashed| s.place_and_admit(&RoomId::from(room), hashed, 16, 10, 100);
        // Both empty: the shard the name hashes to.
        assert_eq!(join("a", 1), Ok(1));
        assert_eq!(join("a", 1), Ok(1));
        // "b" hashes to 1 too, but 0 is emptier; its next member follows it home.
        assert_eq!(join("b", 1), Ok(0));
        assert_eq!(join("b", 1), Ok(0));
        assert_eq!(join("b", 1), Ok(0));
        // Now 1 is emptier, whatever "c" hashes to.
        assert_eq!(join("c", 0), Ok(1));
        // A closed room's shard is free again: "a" leaves, "d" goes to 1.
        s.release(&RoomId::from("a"), 1);
        s.release(&RoomId::from("a"), 1);
        assert_eq!(join("d", 0), Ok(1));
        assert_eq!(s.holders(&RoomId::from("b")), [0]);
        assert_eq!(s.holders(&RoomId::from("d")), [1]);
    }

    #[test]
    fn limits_count_every_shard() {
        let s = shared(2);
        let (a, b) = (RoomId::from("a"), RoomId::from("b"));
        s.admit(&a, 0, 1, 2).unwrap();
        s.admit(&a, 1, 1, 2).unwrap();
        // Two members in all, one on each shard: full.
        assert_eq!(s.admit(&a, 0, 1, 2), Err(RouterError::RoomFull(a.clone())));
        // One room open: a second one is refused.
        assert_eq!(s.admit(&b, 1, 1, 2), Err(RouterError::TooManyRooms));
        s.release(&a, 0);
        s.release(&a, 1);
        s.admit(&b, 1, 1, 2).unwrap();
        assert_eq!(s.holders(&b), [1]);
    }
}
