//! The DF bit of relay sockets (RFC 8656 §14). Linux sets DF per socket
//! (`IP_MTU_DISCOVER`), not per datagram, so each relay socket remembers its setting and
//! is switched only when a datagram asks for the other one: an allocation whose datagrams
//! all want the same setting costs no system call beyond the first.
//!
//! Without DONT-FRAGMENT an IPv4 relay sends with DF 0 (`IP_PMTUDISC_DONT`), the
//! "alternate behavior" of §14 for a server that cannot read the DF bit of what it
//! received. IPv6 has no DF bit and routers never fragment; DONT-FRAGMENT there stops
//! the relay from fragmenting at the source (`IPV6_PMTUDISC_DO`), and otherwise the
//! kernel default (`IPV6_PMTUDISC_WANT`) applies.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether this platform can set DF on a socket; where it cannot, the server answers
/// DONT-FRAGMENT in an Allocate with 420 (RFC 8656 §7.2).
pub(crate) const SUPPORTED: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// A relay socket and the DF setting it currently sends with.
#[derive(Debug)]
pub(crate) struct RelaySocket {
    pub(crate) socket: mio::net::UdpSocket,
    ipv6: bool,
    /// What the socket is set to. Atomic because senders hold the relay table's read
    /// lock; only the shard's own thread sends on it, so load-then-store does not race.
    dont_fragment: AtomicBool,
}

impl RelaySocket {
    /// Wraps a bound relay socket and gives it the default setting (DF off).
    pub(crate) fn new(socket: mio::net::UdpSocket, ipv6: bool) -> Self {
        if !ipv6 && let Err(e) = set(&socket, ipv6, false) {
            // The kernel default (DF on datagrams that fit the path MTU) stays.
            tracing::debug!(error = %e, "relay socket: DF not cleared");
        }
        Self {
            socket,
            ipv6,
            dont_fragment: AtomicBool::new(false),
        }
    }

    /// Makes the next datagrams leave with (or without) DF; a system call only when the
    /// setting changes. On error the setting is unchanged.
    pub(crate) fn set_dont_fragment(&self, on: bool) -> io::Result<()> {
        if self.dont_fragment.load(Ordering::Relaxed) == on {
            return Ok(());
        }
        set(&self.socket, self.ipv6, on)?;
        self.dont_fragment.store(on, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn set(socket: &mio::net::UdpSocket, ipv6: bool, on: bool) -> io::Result<()> {
    use rustix::net::sockopt::{
        Ipv4PathMtuDiscovery, Ipv6PathMtuDiscovery, set_ip_mtu_discover, set_ipv6_mtu_discover,
    };
    let result = if ipv6 {
        let mode = if on {
            Ipv6PathMtuDiscovery::DO
        } else {
            Ipv6PathMtuDiscovery::WANT
        };
        set_ipv6_mtu_discover(socket, mode)
    } else {
        let mode = if on {
            Ipv4PathMtuDiscovery::DO
        } else {
            Ipv4PathMtuDiscovery::DONT
        };
        set_ip_mtu_discover(socket, mode)
    };
    result.map_err(io::Error::from)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn set(_: &mio::net::UdpSocket, _: bool, _: bool) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests {
    use super::*;
    use rustix::net::sockopt::{
        Ipv4PathMtuDiscovery, Ipv6PathMtuDiscovery, ip_mtu_discover, ipv6_mtu_discover,
    };

    fn socket(addr: &str) -> mio::net::UdpSocket {
        mio::net::UdpSocket::bind(addr.parse().unwrap()).unwrap()
    }

    #[test]
    fn ipv4_switches_between_dont_and_do() {
        let r = RelaySocket::new(socket("127.0.0.1:0"), false);
        assert_eq!(ip_mtu_discover(&r.socket), Ok(Ipv4PathMtuDiscovery::DONT));
        r.set_dont_fragment(true).unwrap();
        assert_eq!(ip_mtu_discover(&r.socket), Ok(Ipv4PathMtuDiscovery::DO));
        r.set_dont_fragment(false).unwrap();
        assert_eq!(ip_mtu_discover(&r.socket), Ok(Ipv4PathMtuDiscovery::DONT));
    }

    #[test]
    fn ipv6_switches_between_want_and_do() {
        // Hosts without IPv6 loopback have nothing to test.
        let Ok(s) = mio::net::UdpSocket::bind("[::1]:0".parse().unwrap()) else {
            return;
        };
        let r = RelaySocket::new(s, true);
        assert_eq!(ipv6_mtu_discover(&r.socket), Ok(Ipv6PathMtuDiscovery::WANT));
        r.set_dont_fragment(true).unwrap();
        assert_eq!(ipv6_mtu_discover(&r.socket), Ok(Ipv6PathMtuDiscovery::DO));
        r.set_dont_fragment(false).unwrap();
        assert_eq!(ipv6_mtu_discover(&r.socket), Ok(Ipv6PathMtuDiscovery::WANT));
    }
}
