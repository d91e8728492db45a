//! What makes several drivers one SFU: the state they share (candidates, crypto, the
//! room count), their links (bounded channels), and the hand-off of datagrams that the
//! kernel delivered to a shard not holding their peer (see [`crate::Sfu`], "Shards").

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use str0m::Candidate;
use str0m::crypto::CryptoProvider;
use tokio::sync::mpsc;
use tracing::warn;

use super::Driver;
use crate::config::SfuConfig;
use crate::error::SfuError;
use crate::handle::Placement;

/// Datagrams and notices queued toward one shard from the others; more are dropped
/// (counted): a stalled shard must not grow memory.
pub(crate) const HANDOFF_QUEUE: usize = 4096;

/// Addresses of other shards' peers remembered per shard; when full the map is
/// cleared and relearned.
const FOREIGN_ROUTES: usize = 65_536;

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
    /// Rooms open on all shards, against `max_rooms` (each shard's router only sees
    /// its own).
    rooms_open: AtomicUsize,
}

impl Shared {
    /// Candidates from the configured public IPs and the bound address, or, when bound
    /// to a wildcard address, the node's interface addresses of that family.
    pub(crate) fn new(config: &SfuConfig, local_addr: SocketAddr) -> Result<Self, SfuError> {
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
        let candidates = ips
            .iter()
            .map(|ip| Candidate::host(SocketAddr::new(*ip, local_addr.port()), "udp"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SfuError::Config(format!("candidate: {e}")))?;
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        Ok(Self {
            candidates,
            dtls_cert: crypto.dtls_provider.generate_certificate(),
            crypto,
            rooms_open: AtomicUsize::new(0),
        })
    }

    /// Counts a new room unless `max` are open.
    pub(super) fn open_room(&self, max: usize) -> bool {
        self.rooms_open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Counts a room closed.
    pub(super) fn close_room(&self) {
        self.rooms_open.fetch_sub(1, Ordering::AcqRel);
    }

    /// The advertised addresses (for the log).
    pub(crate) fn candidate_ips(&self) -> Vec<IpAddr> {
        self.candidates.iter().map(|c| c.addr().ip()).collect()
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
    /// Which shard holds each participant (kept by the handle and the drivers).
    pub(crate) placement: Placement,
}

impl Driver {
    /// Acts on a message from another shard (the caller pumps).
    pub(super) fn handle_handoff(&mut self, msg: Handoff, now: Instant) {
        match msg {
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
                let input = self.input(contents, source, now);
                if let Some(id) = self.local_peer(&input, source) {
                    if probe {
                        let shard = self.shard.index;
                        self.hand_off(origin, Handoff::Owner { source, shard });
                    }
                    self.deliver(&id, input, bytes.len());
                    return;
                }
                let next = (self.shard.index + 1) % self.shard.count;
                if probe && next != origin {
                    self.hand_off(
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
                    self.hand_off(origin, Handoff::Forget { source });
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
        }
    }

    /// Queues a message to another shard; dropped (counted) when its queue is full.
    pub(super) fn hand_off(&self, shard: usize, msg: Handoff) {
        if matches!(msg, Handoff::Datagram { .. }) {
            self.metrics.datagrams_handed_off.inc();
        }
        if self.shard.peers[shard].try_send(msg).is_err() {
            self.metrics.handoff_dropped.inc();
        }
    }
}
