//! One TURN allocation (RFC 8656 §2.2): relayed transport addresses, permissions and
//! channel bindings, each with its own expiry.

use std::collections::HashMap;
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
    /// Permissions by peer IP (ports are ignored, §9).
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, Channel>,
    by_peer: HashMap<SocketAddr, u16>,
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
            permissions: HashMap::new(),
            channels: HashMap::new(),
            by_peer: HashMap::new(),
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
        self.permissions.get(&ip).is_some_and(|t| *t > now)
    }

    pub fn permission_count(&self) -> usize {
        self.permissions.len()
    }

    /// Installs or refreshes a permission.
    pub fn permit(&mut self, ip: IpAddr, until: Instant) {
        self.permissions.insert(ip, until);
    }

    /// The live channel with this number.
    pub fn channel(&self, number: u16, now: Instant) -> Option<SocketAddr> {
        self.channels
            .get(&number)
            .filter(|c| c.expires > now)
            .map(|c| c.peer)
    }

    /// The live channel bound to `peer`.
    pub fn channel_for(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        let n = *self.by_peer.get(&peer)?;
        self.channel(n, now).map(|_| n)
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
        match (self.channels.get(&number), self.by_peer.get(&peer)) {
            (Some(c), _) if c.peer != peer => return Err(BindError::Conflict),
            (_, Some(n)) if *n != number => return Err(BindError::Conflict),
            (None, None) if self.channels.len() >= max => return Err(BindError::TooMany),
            _ => {}
        }
        self.channels.insert(
            number,
            Channel {
                peer,
                expires: until,
            },
        );
        self.by_peer.insert(peer, number);
        Ok(())
    }

    /// Drops expired permissions, and channels expired for longer than `channel_grace`.
    pub fn prune(&mut self, now: Instant, channel_grace: std::time::Duration) {
        self.permissions.retain(|_, t| *t > now);
        let by_peer = &mut self.by_peer;
        self.channels.retain(|_, c| {
            let keep = c.expires + channel_grace > now;
            if !keep {
                by_peer.remove(&c.peer);
            }
            keep
        });
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
