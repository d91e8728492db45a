//! One TURN allocation (RFC 8656 §2.2): relayed transport addresses, permissions and
//! channel bindings, each with its own expiry.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use stun_rs::HMACKey;

/// A channel bound to a peer (§12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    pub peer: SocketAddr,
    pub expires: Instant,
}

/// Why a ChannelBind cannot be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindError {
    /// The channel is bound to another peer, or the peer to another channel.
    Conflict,
    /// The allocation has as many channels as allowed.
    TooMany,
}

pub struct Allocation {
    /// The username that created it; later requests must use the same (§5).
    pub username: String,
    /// The long-term key, for the integrity of responses.
    pub key: HMACKey,
    /// Relayed transport addresses: one, or one per address family (RFC 8656 dual allocation).
    pub relays: Vec<SocketAddr>,
    pub expires: Instant,
    /// Transaction id of the Allocate that created it, to answer retransmissions.
    pub created_by: [u8; 12],
    /// Lifetime granted by the last Allocate or Refresh, in seconds.
    pub lifetime: u32,
    /// The Allocate carried DONT-FRAGMENT. A client sends it there to learn whether the
    /// server can set DF (RFC 8656 §7.1); it is also taken as asking DF for all of the
    /// allocation's datagrams, since ChannelData cannot ask per datagram (§14).
    pub dont_fragment: bool,
    /// Permissions by peer IP (ports are ignored, §9). A few per allocation, bounded by
    /// the server (256): a vector costs far less memory than a map, and a scan only ever
    /// costs this allocation's own client.
    permissions: Vec<(IpAddr, Instant)>,
    /// Channel bindings, bounded the same way.
    channels: Vec<(u16, Channel)>,
}

impl Allocation {
    pub fn new(
        username: String,
        key: HMACKey,
        relays: Vec<SocketAddr>,
        expires: Instant,
        created_by: [u8; 12],
        lifetime: u32,
    ) -> Self {
        Self {
            username,
            key,
            relays,
            expires,
            created_by,
            lifetime,
            dont_fragment: false,
            permissions: Vec::new(),
            channels: Vec::new(),
        }
    }

    /// The relayed address of the peer's family.
    pub fn relay_for(&self, peer: SocketAddr) -> Option<SocketAddr> {
        self.relays
            .iter()
            .copied()
            .find(|r| r.is_ipv4() == peer.is_ipv4())
    }

    pub fn has_permission(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.iter().any(|(p, t)| *p == ip && *t > now)
    }

    pub fn permission_count(&self) -> usize {
        self.permissions.len()
    }

    /// Installs or refreshes a permission.
    pub fn permit(&mut self, ip: IpAddr, until: Instant) {
        match self.permissions.iter_mut().find(|(p, _)| *p == ip) {
            Some(entry) => entry.1 = until,
            None => {
                // Most allocations talk to one peer: grow one entry at a time.
                self.permissions.reserve_exact(1);
                self.permissions.push((ip, until));
            }
        }
    }

    /// The live channel with this number.
    pub fn channel(&self, number: u16, now: Instant) -> Option<SocketAddr> {
        self.channels
            .iter()
            .find(|(n, c)| *n == number && c.expires > now)
            .map(|(_, c)| c.peer)
    }

    /// The live channel bound to `peer`.
    pub fn channel_for(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        self.channels
            .iter()
            .find(|(_, c)| c.peer == peer && c.expires > now)
            .map(|(n, _)| *n)
    }

    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Binds or refreshes a channel (§11.2). A channel stays tied to its peer, and the
    /// peer to its channel, while the binding exists (expired bindings are kept until
    /// pruned, which RFC 8656 asks for 5 minutes after expiry).
    pub fn bind(
        &mut self,
        number: u16,
        peer: SocketAddr,
        until: Instant,
        max: usize,
    ) -> Result<(), BindError> {
        // A number stays tied to its peer, and the peer to its number.
        if self
            .channels
            .iter()
            .any(|(n, c)| (*n == number) != (c.peer == peer))
        {
            return Err(BindError::Conflict);
        }
        if let Some((_, c)) = self.channels.iter_mut().find(|(n, _)| *n == number) {
            c.expires = until;
        } else if self.channels.len() >= max {
            return Err(BindError::TooMany);
        } else {
            self.channels.reserve_exact(1);
            self.channels.push((
                number,
                Channel {
                    peer,
                    expires: until,
                },
            ));
        }
        Ok(())
    }

    /// Drops expired permissions, and channels expired for longer than `channel_grace`.
    pub fn prune(&mut self, now: Instant, channel_grace: std::time::Duration) {
        self.permissions.retain(|(_, t)| *t > now);
        self.channels
            .retain(|(_, c)| c.expires + channel_grace > now);
        self.permissions.shrink_to_fit();
        self.channels.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn alloc(now: Instant) -> Allocation {
        let key = HMACKey::new_short_term("k").unwrap();
        Allocation::new(
            "u".into(),
            key,
            vec!["127.0.0.1:50000".parse().unwrap()],
            now + Duration::from_secs(600),
            [0; 12],
            600,
        )
    }

    #[test]
    fn permissions_expire() {
        let t0 = Instant::now();
        let mut a = alloc(t0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(!a.has_permission(ip, t0));
        a.permit(ip, t0 + Duration::from_secs(300));
        assert!(a.has_permission(ip, t0 + Duration::from_secs(299)));
        assert!(!a.has_permission(ip, t0 + Duration::from_secs(300)));
        a.prune(t0 + Duration::from_secs(301), Duration::from_secs(300));
        assert_eq!(a.permission_count(), 0);
    }

    #[test]
    fn channels_are_one_to_one_and_expire() {
        let t0 = Instant::now();
        let mut a = alloc(t0);
        let p1: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        let p2: SocketAddr = "192.0.2.2:1000".parse().unwrap();
        let until = t0 + Duration::from_secs(600);
        a.bind(0x4000, p1, until, 10).unwrap();
        a.bind(0x4000, p1, until, 10).unwrap(); // refresh
        assert_eq!(a.bind(0x4000, p2, until, 10), Err(BindError::Conflict));
        assert_eq!(a.bind(0x4001, p1, until, 10), Err(BindError::Conflict));
        assert_eq!(a.channel(0x4000, t0), Some(p1));
        assert_eq!(a.channel_for(p1, t0), Some(0x4000));
        assert_eq!(a.channel(0x4000, until), None, "expired");
        // Expired but within the grace period: still reserved for the same peer.
        a.prune(until + Duration::from_secs(10), Duration::from_secs(300));
        assert_eq!(
            a.bind(0x4000, p2, until + Duration::from_secs(600), 10),
            Err(BindError::Conflict)
        );
        a.prune(until + Duration::from_secs(300), Duration::from_secs(300));
        assert!(
            a.bind(0x4000, p2, until + Duration::from_secs(900), 10)
                .is_ok()
        );
        assert_eq!(
            a.bind(0x4002, "192.0.2.3:1".parse().unwrap(), until, 1),
            Err(BindError::TooMany)
        );
    }
}
