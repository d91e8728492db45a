//! Which peer addresses an allocation may relay to. By default the relay refuses
//! loopback, private, link-local, multicast and other special-purpose addresses and the
//! server's own addresses, so it cannot be used to reach an operator's internal network.

use std::net::IpAddr;

/// An IP network, `addr/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let bits = u32::from(self.prefix.min(32));
                let mask = if bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - bits)
                };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let bits = u32::from(self.prefix.min(128));
                let mask = if bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - bits)
                };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: bad prefix"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

/// The peer address policy.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    /// Networks always allowed, even if special-purpose (checked first).
    pub allow: Vec<IpNet>,
    /// Networks always denied.
    pub deny: Vec<IpNet>,
    /// Allow loopback peers (tests and single-machine setups).
    pub allow_loopback: bool,
    /// The server's own addresses: denied as peers except on relay ports, so that two
    /// parties relayed by this same server can still reach each other's relay address.
    pub own: Vec<IpAddr>,
    /// The relay port range (inclusive).
    pub relay_ports: (u16, u16),
}

fn special_purpose(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xC0) == 64) // 100.64/10 shared address space
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0/24 protocol assignments
                || (o[0] == 198 && (o[1] & 0xFE) == 18) // 198.18/15 benchmarking
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xFE00) == 0xFC00 // unique local
                || (seg[0] & 0xFFC0) == 0xFE80 // link-local
                || (seg[0] == 0x2001 && seg[1] == 0x0DB8) // documentation
                || (seg[0] == 0x0064 && seg[1] == 0xFF9B) // NAT64 could reach private v4
        }
    }
}

impl PeerPolicy {
    /// Whether the relay may send to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        // Judge IPv4-mapped IPv6 addresses by their IPv4 meaning.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if self.allow.iter().any(|n| n.contains(ip)) {
            return true;
        }
        if self.deny.iter().any(|n| n.contains(ip)) {
            return false;
        }
        if self.own.contains(&ip) {
            return true;
        }
        if ip.is_loopback() {
            return self.allow_loopback;
        }
        !special_purpose(ip)
    }

    /// Whether the relay may send to `addr`: its IP is permitted, and if it is one of the
    /// server's own addresses, the port is a relay port (never a listener).
    pub fn permits_destination(&self, addr: std::net::SocketAddr) -> bool {
        let ip = match addr.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr.ip()),
            v4 => v4,
        };
        if self.own.contains(&ip) && !self.allow.iter().any(|n| n.contains(ip)) {
            return (self.relay_ports.0..=self.relay_ports.1).contains(&addr.port());
        }
        self.permits(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_deny_internal_networks() {
        let p = PeerPolicy::default();
        for denied in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!p.permits(ip(denied)), "{denied} must be denied");
        }
        for allowed in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(p.permits(ip(allowed)), "{allowed} must be allowed");
        }
    }

    #[test]
    fn allow_list_own_addresses_and_loopback_switch() {
        let mut p = PeerPolicy {
            allow_loopback: true,
            relay_ports: (50000, 50010),
            ..Default::default()
        };
        assert!(p.permits(ip("127.0.0.1")));
        assert!(p.permits(ip("::1")));
        p.own.push(ip("203.0.113.7"));
        assert!(
            p.permits(ip("203.0.113.7")),
            "permissions for our own relay addresses"
        );
        assert!(
            p.permits_destination("203.0.113.7:50005".parse().unwrap()),
            "relay to relay"
        );
        assert!(
            !p.permits_destination("203.0.113.7:3478".parse().unwrap()),
            "never to a listener"
        );
        p.allow.push("10.0.0.0/8".parse().unwrap());
        assert!(p.permits(ip("10.9.9.9")));
        p.deny.push("8.8.0.0/16".parse().unwrap());
        assert!(!p.permits(ip("8.8.8.8")));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
    }
}
