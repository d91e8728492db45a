//! Relay sockets of a shard. The core binds them on demand through [`Ports`]; each is
//! registered with the shard's own readiness poller (mio, edge-triggered) and one task per
//! shard reads every relay socket that became readable. An idle allocation therefore costs
//! a file descriptor and a map entry, not a task, a runtime registration and a buffer.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use crate::dont_fragment::RelaySocket;
use crate::driver::Shared;
use crate::server::{PortRequest, RelayPorts};

/// Kernel buffer of relay sockets (kernel memory, used only while data waits).
const RELAY_BUFFER: usize = 512 << 10;
/// Readiness events taken from the poller at once.
const EVENTS: usize = 256;
/// Receive calls per relay socket per round, so that one busy relay cannot starve the
/// others; a socket not drained within them is read again next round.
const CALLS_PER_ROUND: usize = 2;

/// Relay sockets of one shard by advertised address.
pub(crate) type RelayTable = Arc<RwLock<HashMap<SocketAddr, RelaySocket>>>;

/// Ports reserved by EVEN-PORT, held unregistered so that any shard can claim them.
pub(crate) type Reserved = Arc<Mutex<HashMap<SocketAddr, std::net::UdpSocket>>>;

/// The relay addresses of a shard; a relay socket's poll token is its family and port.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RelayAddrs {
    /// Address IPv4 relay sockets bind to.
    pub bind_v4: IpAddr,
    /// Address advertised for them (the external IP behind a NAT).
    pub advertised_v4: IpAddr,
    /// IPv6 relay address (bound and advertised), if IPv6 relaying is offered.
    pub v6: Option<IpAddr>,
}

impl RelayAddrs {
    fn token(addr: SocketAddr) -> mio::Token {
        mio::Token(usize::from(addr.is_ipv6()) << 16 | usize::from(addr.port()))
    }

    fn advertised(&self, token: mio::Token) -> Option<SocketAddr> {
        let port = u16::try_from(token.0 & 0xFFFF).ok()?;
        let ip = if token.0 >> 16 == 1 {
            self.v6?
        } else {
            self.advertised_v4
        };
        Some(SocketAddr::new(ip, port))
    }
}

/// Binds a UDP socket with enlarged kernel buffers (not yet registered with a poller).
fn bind_udp(addr: SocketAddr, buffer: usize) -> io::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Best effort: the kernel caps these at net.core.[rw]mem_max.
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Relay sockets, bound on demand by the core.
pub struct Ports {
    /// Registers relay sockets with the shard's poller.
    registry: mio::Registry,
    /// Open relay sockets, shared with the shard's reader and senders.
    sockets: RelayTable,
    addrs: RelayAddrs,
    /// Relay port range, inclusive.
    range: (u16, u16),
    /// Reserved ports of every shard.
    reserved: Reserved,
}

impl Ports {
    pub(crate) fn new(
        registry: mio::Registry,
        sockets: RelayTable,
        addrs: RelayAddrs,
        range: (u16, u16),
        reserved: Reserved,
    ) -> Self {
        Self {
            registry,
            sockets,
            addrs,
            range,
            reserved,
        }
    }

    /// Binds a relay socket; returns it and the address advertised for it.
    fn bind_socket(&self, ipv6: bool, port: u16) -> Option<(std::net::UdpSocket, SocketAddr)> {
        let (bind_ip, adv_ip) = if ipv6 {
            let ip = self.addrs.v6?;
            (ip, ip)
        } else {
            (self.addrs.bind_v4, self.addrs.advertised_v4)
        };
        match bind_udp(SocketAddr::new(bind_ip, port), RELAY_BUFFER) {
            Ok(s) => Some((s, SocketAddr::new(adv_ip, port))),
            Err(e) => {
                tracing::debug!(%bind_ip, port, error = %e, "relay port not available");
                None
            }
        }
    }

    /// Registers a relay socket with this shard's poller.
    fn activate(
        &mut self,
        socket: std::net::UdpSocket,
        advertised: SocketAddr,
    ) -> Option<SocketAddr> {
        let mut socket = mio::net::UdpSocket::from_std(socket);
        let token = RelayAddrs::token(advertised);
        if let Err(e) = self
            .registry
            .register(&mut socket, token, mio::Interest::READABLE)
        {
            tracing::warn!(%advertised, error = %e, "relay socket not registered");
            return None;
        }
        let relay = RelaySocket::new(socket, advertised.is_ipv6());
        self.sockets.write().insert(advertised, relay);
        Some(advertised)
    }

    fn try_bind(&mut self, ipv6: bool, port: u16) -> Option<SocketAddr> {
        let (socket, advertised) = self.bind_socket(ipv6, port)?;
        self.activate(socket, advertised)
    }

    /// Closes every relay socket (at shutdown).
    pub(crate) fn release_all(&mut self) {
        let open: Vec<SocketAddr> = self.sockets.read().keys().copied().collect();
        for addr in open {
            self.release(addr);
        }
    }
}

impl RelayPorts for Ports {
    fn bind(&mut self, ipv6: bool, request: PortRequest) -> Option<SocketAddr> {
        let (lo, hi) = self.range;
        match request {
            PortRequest::Exactly(p) if (lo..=hi).contains(&p) => self.try_bind(ipv6, p),
            PortRequest::Exactly(_) => None,
            PortRequest::Any | PortRequest::Even => {
                let span = u32::from(hi - lo) + 1;
                let start = rand::random::<u32>() % span;
                for i in 0..span.min(64) {
                    let mut port = lo as u32 + (start + i * 7919) % span;
                    if request == PortRequest::Even && port % 2 == 1 {
                        port = if port < hi as u32 { port + 1 } else { port - 1 };
                    }
                    if let Some(addr) = self.try_bind(ipv6, port as u16) {
                        return Some(addr);
                    }
                }
                None
            }
        }
    }

    fn release(&mut self, addr: SocketAddr) {
        if let Some(mut relay) = self.sockets.write().remove(&addr) {
            // Closing the socket would drop the registration too; deregistering first
            // keeps the poller's view exact.
            let _ = self.registry.deregister(&mut relay.socket);
        }
    }

    fn reserve(&mut self, ipv6: bool, port: u16) -> Option<SocketAddr> {
        if !(self.range.0..=self.range.1).contains(&port) {
            return None;
        }
        let (socket, advertised) = self.bind_socket(ipv6, port)?;
        self.reserved.lock().insert(advertised, socket);
        Some(advertised)
    }

    fn claim(&mut self, addr: SocketAddr) -> bool {
        let socket = self.reserved.lock().remove(&addr);
        socket.and_then(|s| self.activate(s, addr)).is_some()
    }

    fn unreserve(&mut self, addr: SocketAddr) {
        self.reserved.lock().remove(&addr);
    }
}

/// The shard's relay reader: waits for the poller, then reads every relay socket it
/// reports (and those left unfinished last round) and sends what the core produced.
pub(crate) async fn read_relays(shared: Arc<Shared>, poll: mio::Poll, addrs: RelayAddrs) {
    let mut poll = match crate::driver::register_readable(poll) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "relay poller not registered; relays will not be read");
            return;
        }
    };
    let mut events = mio::Events::with_capacity(EVENTS);
    // Relays not drained within their round, read again before waiting.
    let (mut busy, mut still_busy) = (Vec::<SocketAddr>::new(), Vec::new());
    let mut more_events = false;
    loop {
        if busy.is_empty() && !more_events {
            tokio::select! {
                _ = shared.shutdown.cancelled() => break,
                ready = poll.readable_mut() => match ready {
                    // Cleared before the poller is read: an event arriving after this
                    // point makes it readable again, so none is missed.
                    Ok(mut guard) => guard.clear_ready(),
                    Err(e) => {
                        tracing::error!(error = %e, "relay poller failed; relays are no longer read");
                        break;
                    }
                },
            }
        } else if shared.shutdown.is_cancelled() {
            break;
        }
        if poll
            .get_mut()
            .poll(&mut events, Some(Duration::ZERO))
            .is_err()
        {
            events.clear();
        }
        // A full event list may have left events in the poller.
        more_events = events.iter().count() >= EVENTS;
        let ready = events.iter().filter_map(|e| addrs.advertised(e.token()));
        for relay in ready.chain(busy.drain(..)) {
            if !shared.read_relay(relay, CALLS_PER_ROUND) {
                still_busy.push(relay);
            }
        }
        std::mem::swap(&mut busy, &mut still_busy);
        shared.flush_queued();
        if !busy.is_empty() || more_events {
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let addrs = RelayAddrs {
            bind_v4: "10.0.0.1".parse().unwrap(),
            advertised_v4: "203.0.113.7".parse().unwrap(),
            v6: Some("2001:db8::1".parse().unwrap()),
        };
        for adv in ["203.0.113.7:49152", "[2001:db8::1]:65535", "203.0.113.7:1"] {
            let adv: SocketAddr = adv.parse().unwrap();
            assert_eq!(addrs.advertised(RelayAddrs::token(adv)), Some(adv));
        }
        let v4_only = RelayAddrs { v6: None, ..addrs };
        let v6: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
        assert_eq!(v4_only.advertised(RelayAddrs::token(v6)), None);
    }
}
