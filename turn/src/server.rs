//! The sans-IO TURN server: datagrams in, at most one datagram out per input, timers by
//! [`TurnServer::poll_timeout`]. It owns allocations, permissions, channels, nonces and
//! quotas; binding relay sockets is delegated to a [`RelayPorts`] implementation so the
//! logic can be driven with simulated time and fake ports in tests.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stun_rs::attributes::stun::Software;

use crate::allocation::Allocation;
use crate::auth::{Credentials, Nonces};
use crate::policy::PeerPolicy;
use crate::wire::{self, Kind};

/// Transport of the client leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// Stream transports pad ChannelData to 4 bytes (§12.5).
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

/// The 5-tuple that identifies an allocation (§2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FiveTuple {
    pub transport: Transport,
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// Where the output datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To a client over the listener (or stream) of this 5-tuple.
    Client(FiveTuple),
    /// From a relay socket to a peer. `dont_fragment`: send with the DF bit set, because
    /// the allocation or this Send indication carried DONT-FRAGMENT (RFC 8656 §14).
    Peer {
        relay: SocketAddr,
        peer: SocketAddr,
        dont_fragment: bool,
    },
}

/// Which port a relay socket should get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRequest {
    Any,
    /// An even port (EVEN-PORT, §14.6).
    Even,
    /// This exact port (a reservation made by EVEN-PORT with the R bit).
    Exactly(u16),
}

/// Binds and releases relay sockets. The driver's implementation binds real UDP sockets
/// in the relay port range and starts reading them.
pub trait RelayPorts {
    /// Binds a relay socket of the given family; `None` when no port is free or the
    /// family is not configured.
    fn bind(&mut self, ipv6: bool, port: PortRequest) -> Option<SocketAddr>;
    fn release(&mut self, addr: SocketAddr);
    /// Binds `port` and holds it unused (EVEN-PORT with R), so that any shard can later
    /// [`RelayPorts::claim`] it for the allocation that presents the reservation token.
    fn reserve(&mut self, ipv6: bool, port: u16) -> Option<SocketAddr>;
    /// Turns a reserved port into a live relay of this shard; false if it is gone.
    fn claim(&mut self, addr: SocketAddr) -> bool;
    /// Gives up a reservation that expired.
    fn unreserve(&mut self, addr: SocketAddr);
}

/// Tunables of the server, with RFC 8656 defaults.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub software: String,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    pub permission_lifetime: Duration,
    pub channel_lifetime: Duration,
    pub nonce_lifetime: Duration,
    pub reservation_lifetime: Duration,
    /// Allocations in total.
    pub max_allocations: usize,
    /// Allocations per username.
    pub user_quota: usize,
    pub max_permissions: usize,
    pub max_channels: usize,
    /// Failed authentications per client IP per minute before its requests are dropped.
    pub auth_failures_per_minute: u32,
    /// Relayed bytes per second per username, both directions together; 0 for no limit.
    pub user_bandwidth: u64,
    /// The driver can send with the DF bit set. When it cannot, DONT-FRAGMENT in an
    /// Allocate is answered as an unknown comprehension-required attribute (RFC 8656 §7.2).
    pub dont_fragment: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            software: format!("huddle {}", env!("CARGO_PKG_VERSION")),
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            nonce_lifetime: Duration::from_secs(600),
            reservation_lifetime: Duration::from_secs(30),
            max_allocations: 100_000,
            user_quota: 100,
            max_permissions: 256,
            max_channels: 256,
            auth_failures_per_minute: 30,
            user_bandwidth: 0,
            dont_fragment: true,
        }
    }
}

/// Why a packet was dropped, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Drop {
    Malformed,
    NoAllocation,
    NoPermission,
    NoChannel,
    PeerDenied,
    AuthRateLimited,
    BandwidthQuota,
}

impl Drop {
    pub const ALL: [Drop; 7] = [
        Drop::Malformed,
        Drop::NoAllocation,
        Drop::NoPermission,
        Drop::NoChannel,
        Drop::PeerDenied,
        Drop::AuthRateLimited,
        Drop::BandwidthQuota,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Drop::Malformed => "malformed",
            Drop::NoAllocation => "no_allocation",
            Drop::NoPermission => "no_permission",
            Drop::NoChannel => "no_channel",
            Drop::PeerDenied => "peer_denied",
            Drop::AuthRateLimited => "auth_rate_limited",
            Drop::BandwidthQuota => "bandwidth_quota",
        }
    }
}

/// Counters the driver exports as metrics.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub packets_to_peers: u64,
    pub bytes_to_peers: u64,
    pub packets_to_clients: u64,
    pub bytes_to_clients: u64,
    pub auth_failures: u64,
    pub allocations_created: u64,
    pub drops: HashMap<Drop, u64>,
}

/// A user's bandwidth allowance: a token bucket of bytes holding one second's worth.
#[derive(Debug)]
pub(crate) struct Bucket {
    tokens: f64,
    last: Instant,
    /// Allocations of the user; the bucket goes with the last one.
    pub(crate) refs: usize,
}

impl Bucket {
    pub(crate) fn new(now: Instant, rate: u64) -> Self {
        Self {
            tokens: rate as f64,
            last: now,
            refs: 0,
        }
    }

    fn take(&mut self, bytes: usize, rate: u64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate as f64).min(rate as f64);
        if self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    Allocation(FiveTuple),
    Sweep,
}

pub struct TurnServer<R> {
    pub(crate) cfg: ServerConfig,
    pub(crate) software: Software,
    pub(crate) creds: Credentials,
    pub(crate) nonces: Nonces,
    pub(crate) policy: PeerPolicy,
    pub(crate) relays: R,
    pub(crate) allocations: HashMap<FiveTuple, Allocation>,
    pub(crate) by_relay: HashMap<SocketAddr, FiveTuple>,
    /// Quotas and bandwidth buckets, shared with the other shards of the server.
    pub(crate) shared: std::sync::Arc<CoreShared>,
    pub(crate) timers: BTreeSet<(Instant, Timer)>,
    /// Failed authentications per client IP in the current minute.
    pub(crate) auth_failures: HashMap<IpAddr, (u32, Instant)>,
    pub(crate) stats: Stats,
    /// Transaction ids of Data indications.
    next_tid: u64,
    unix_base: SystemTime,
    mono_base: Instant,
}

/// What the shards of one server share: allocation counts for the quotas and the
/// per-user bandwidth buckets. Checks and updates are not one atomic step, so concurrent
/// Allocates on different shards can overshoot a quota by at most the number of shards.
#[derive(Debug, Default)]
pub struct CoreShared {
    pub(crate) total: std::sync::atomic::AtomicUsize,
    pub(crate) per_user: parking_lot::Mutex<HashMap<String, usize>>,
    pub(crate) buckets: parking_lot::Mutex<HashMap<String, Bucket>>,
    /// EVEN-PORT reservations: token → (reserved relay address, expiry). Shared because
    /// the allocation that redeems a token comes from another 5-tuple, maybe another shard.
    pub(crate) reservations: parking_lot::Mutex<HashMap<[u8; 8], (SocketAddr, Instant)>>,
}

/// Decides whether a client's payload may go to `peer`: a live permission, a relay of the
/// peer's family, the destination policy (when not already checked at ChannelBind) and
/// the user's bandwidth. Returns the relayed address to send from.
fn admit(
    alloc: &Allocation,
    shared: &CoreShared,
    policy: Option<&PeerPolicy>,
    rate: u64,
    peer: SocketAddr,
    bytes: usize,
    now: Instant,
) -> Result<SocketAddr, Drop> {
    if !alloc.has_permission(peer.ip(), now) {
        return Err(Drop::NoPermission);
    }
    let relay = alloc.relay_for(peer).ok_or(Drop::NoPermission)?;
    if policy.is_some_and(|p| !p.permits_destination(peer)) {
        return Err(Drop::PeerDenied);
    }
    if !charge(shared, &alloc.username, bytes, rate, now) {
        return Err(Drop::BandwidthQuota);
    }
    Ok(relay)
}

/// Copies a client's payload out for its peer and counts it.
fn forward(
    stats: &mut Stats,
    out: &mut Vec<u8>,
    payload: &[u8],
    relay: SocketAddr,
    peer: SocketAddr,
    dont_fragment: bool,
) -> Option<Route> {
    out.clear();
    out.extend_from_slice(payload);
    stats.packets_to_peers += 1;
    stats.bytes_to_peers += payload.len() as u64;
    Some(Route::Peer {
        relay,
        peer,
        dont_fragment,
    })
}

/// Takes `bytes` from the user's bucket; always true when there is no limit.
fn charge(shared: &CoreShared, user: &str, bytes: usize, rate: u64, now: Instant) -> bool {
    if rate == 0 {
        return true;
    }
    shared
        .buckets
        .lock()
        .get_mut(user)
        .is_none_or(|b| b.take(bytes, rate, now))
}

impl<R: RelayPorts> TurnServer<R> {
    pub fn new(
        cfg: ServerConfig,
        creds: Credentials,
        policy: PeerPolicy,
        relays: R,
        now: Instant,
    ) -> Self {
        let software = Software::new(&cfg.software)
            .unwrap_or_else(|_| Software::new("huddle").expect("valid"));
        let nonces = Nonces::new(cfg.nonce_lifetime.as_secs());
        let mut timers = BTreeSet::new();
        timers.insert((now + Duration::from_secs(60), Timer::Sweep));
        Self {
            cfg,
            software,
            creds,
            nonces,
            policy,
            relays,
            allocations: HashMap::new(),
            by_relay: HashMap::new(),
            shared: Default::default(),
            timers,
            auth_failures: HashMap::new(),
            stats: Stats::default(),
            next_tid: rand::random(),
            unix_base: SystemTime::now(),
            mono_base: now,
        }
    }

    /// Makes this core one shard of a server: quotas and bandwidth are counted in
    /// `shared`, and nonces are issued and checked with the common `nonces` key.
    pub fn with_shared(mut self, shared: std::sync::Arc<CoreShared>, nonces: Nonces) -> Self {
        self.shared = shared;
        self.nonces = nonces;
        self
    }

    pub(crate) fn unix(&self, now: Instant) -> u64 {
        (self.unix_base + now.saturating_duration_since(self.mono_base))
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    pub fn permission_count(&self) -> usize {
        self.allocations
            .values()
            .map(Allocation::permission_count)
            .sum()
    }

    pub fn channel_count(&self) -> usize {
        self.allocations
            .values()
            .map(Allocation::channel_count)
            .sum()
    }

    pub fn relays(&mut self) -> &mut R {
        &mut self.relays
    }

    pub(crate) fn drop_packet(&mut self, why: Drop) -> Option<Route> {
        *self.stats.drops.entry(why).or_default() += 1;
        None
    }

    /// Handles a datagram (or a framed stream message) from a client; writes what to send
    /// into `out` and says where.
    pub fn handle_client(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Option<Route> {
        match wire::classify(data) {
            Kind::ChannelData => {
                let Some((number, payload)) = wire::parse_channel_data(data) else {
                    return self.drop_packet(Drop::Malformed);
                };
                let Some(alloc) = self.allocations.get(&tuple) else {
                    return self.drop_packet(Drop::NoAllocation);
                };
                let Some(peer) = alloc.channel(number, now) else {
                    return self.drop_packet(Drop::NoChannel);
                };
                // The peer was checked against the policy when the channel was bound.
                match admit(
                    alloc,
                    &self.shared,
                    None,
                    self.cfg.user_bandwidth,
                    peer,
                    payload.len(),
                    now,
                ) {
                    Ok(relay) => {
                        let df = alloc.dont_fragment;
                        forward(&mut self.stats, out, payload, relay, peer, df)
                    }
                    Err(why) => self.drop_packet(why),
                }
            }
            Kind::Stun => {
                if let Some(ind) = wire::parse_send_indication(data) {
                    return self.send_indication(now, tuple, ind, out);
                }
                self.handle_stun(now, tuple, data, out)
            }
            Kind::Other => self.drop_packet(Drop::Malformed),
        }
    }

    fn send_indication(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        ind: wire::SendIndication<'_>,
        out: &mut Vec<u8>,
    ) -> Option<Route> {
        let (peer, payload) = (ind.peer, ind.data);
        let Some(alloc) = self.allocations.get(&tuple) else {
            return self.drop_packet(Drop::NoAllocation);
        };
        // DF for this datagram (§11.2), or for every datagram of the allocation.
        let df = self.cfg.dont_fragment && (ind.dont_fragment || alloc.dont_fragment);
        match admit(
            alloc,
            &self.shared,
            Some(&self.policy),
            self.cfg.user_bandwidth,
            peer,
            payload.len(),
            now,
        ) {
            Ok(relay) => forward(&mut self.stats, out, payload, relay, peer, df),
            Err(why) => self.drop_packet(why),
        }
    }

    /// Handles a datagram that a peer sent to a relayed address (§11.3, §12.6).
    pub fn handle_peer(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Option<Route> {
        let Some(tuple) = self.by_relay.get(&relay).copied() else {
            return self.drop_packet(Drop::NoAllocation);
        };
        let Some(alloc) = self.allocations.get(&tuple) else {
            return self.drop_packet(Drop::NoAllocation);
        };
        if !alloc.has_permission(peer.ip(), now) {
            return self.drop_packet(Drop::NoPermission);
        }
        if data.len() > u16::MAX as usize - 64 {
            return self.drop_packet(Drop::Malformed);
        }
        if !charge(
            &self.shared,
            &alloc.username,
            data.len(),
            self.cfg.user_bandwidth,
            now,
        ) {
            return self.drop_packet(Drop::BandwidthQuota);
        }
        match alloc.channel_for(peer, now) {
            Some(number) => {
                wire::write_channel_data(out, number, data, tuple.transport.is_stream())
            }
            None => {
                self.next_tid = self.next_tid.wrapping_add(1);
                let mut tid = [0u8; 12];
                tid[4..].copy_from_slice(&self.next_tid.to_be_bytes());
                wire::write_data_indication(out, peer, data, &tid);
            }
        }
        self.stats.packets_to_clients += 1;
        self.stats.bytes_to_clients += data.len() as u64;
        Some(Route::Client(tuple))
    }

    /// The next instant [`TurnServer::handle_timeout`] should be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Expires allocations, and every minute prunes permissions, channels, reservations
    /// and authentication-failure counters.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, _)) = self.timers.first() {
            if *at > now {
                break;
            }
            let (_, timer) = self.timers.pop_first().expect("non-empty");
            match timer {
                Timer::Allocation(tuple) => {
                    if self
                        .allocations
                        .get(&tuple)
                        .is_some_and(|a| a.expires <= now)
                    {
                        tracing::debug!(?tuple, "allocation expired");
                        self.remove_allocation(&tuple);
                    }
                }
                Timer::Sweep => {
                    let grace = Duration::from_secs(300);
                    for a in self.allocations.values_mut() {
                        a.prune(now, grace);
                    }
                    let mut expired = Vec::new();
                    self.shared.reservations.lock().retain(|_, (addr, until)| {
                        let keep = *until > now;
                        if !keep {
                            expired.push(*addr);
                        }
                        keep
                    });
                    for addr in expired {
                        self.relays.unreserve(addr);
                    }
                    self.auth_failures.retain(|_, (_, since)| {
                        now.saturating_duration_since(*since) < Duration::from_secs(60)
                    });
                    self.timers
                        .insert((now + Duration::from_secs(60), Timer::Sweep));
                }
            }
        }
    }

    /// A stream client leg closed: its allocation goes with it (RFC 8656 §3.1).
    pub fn close_connection(&mut self, tuple: &FiveTuple) {
        self.remove_allocation(tuple);
    }

    pub(crate) fn remove_allocation(&mut self, tuple: &FiveTuple) {
        if let Some(a) = self.allocations.remove(tuple) {
            for r in &a.relays {
                self.by_relay.remove(r);
                self.relays.release(*r);
            }
            let mut buckets = self.shared.buckets.lock();
            if let Some(b) = buckets.get_mut(&a.username) {
                b.refs = b.refs.saturating_sub(1);
                if b.refs == 0 {
                    buckets.remove(&a.username);
                }
            }
            drop(buckets);
            let mut per_user = self.shared.per_user.lock();
            if let Some(n) = per_user.get_mut(&a.username) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    per_user.remove(&a.username);
                }
            }
            self.shared
                .total
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Records a failed authentication; true when the IP is over its limit.
    pub(crate) fn auth_failed(&mut self, ip: IpAddr, now: Instant) {
        self.stats.auth_failures += 1;
        if self.auth_failures.len() > 100_000 {
            self.auth_failures.clear();
        }
        let entry = self.auth_failures.entry(ip).or_insert((0, now));
        if now.saturating_duration_since(entry.1) >= Duration::from_secs(60) {
            *entry = (0, now);
        }
        entry.0 += 1;
    }

    pub(crate) fn auth_blocked(&self, ip: IpAddr, now: Instant) -> bool {
        self.auth_failures.get(&ip).is_some_and(|(n, since)| {
            *n >= self.cfg.auth_failures_per_minute
                && now.saturating_duration_since(*since) < Duration::from_secs(60)
        })
    }
}
