//! Bodies of the fuzz targets in `turn/fuzz` (cargo-fuzz), kept in the library so that the
//! unit tests run them over a proptest corpus: the hot-path wire parsers with round trips,
//! and the whole core fed a hostile sequence of client and peer datagrams against an
//! allocation that has a permission and a channel. Each body panics only on a broken
//! invariant.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stun_rs::attributes::stun::{MessageIntegrity, Nonce, Realm, UserName};
use stun_rs::attributes::turn::{ChannelNumber, RequestedTrasport, XorPeerAddress};
use stun_rs::methods::{ALLOCATE, CHANNEL_BIND, CREATE_PERMMISSION};
use stun_rs::{
    Algorithm, AlgorithmId, HMACKey, MessageClass, MessageDecoderBuilder, MessageEncoderBuilder,
    MessageMethod, StunAttribute, StunMessageBuilder, TransactionId,
};

use crate::auth::Credentials;
use crate::policy::PeerPolicy;
use crate::server::{
    FiveTuple, PortRequest, RelayPorts, Route, ServerConfig, Transport, TurnServer,
};
use crate::wire::{self, Kind};

/// The wire parsers: no panic, results inside the input, and what parses survives a
/// write → parse round trip.
pub fn wire(data: &[u8]) {
    let kind = wire::classify(data);
    if let Some((channel, payload)) = wire::parse_channel_data(data) {
        assert_eq!(kind, Kind::ChannelData);
        assert!((wire::CHANNEL_MIN..=0x7FFF).contains(&channel));
        assert_eq!(
            payload.len(),
            usize::from(u16::from_be_bytes([data[2], data[3]]))
        );
        for pad in [false, true] {
            let mut out = Vec::new();
            wire::write_channel_data(&mut out, channel, payload, pad);
            assert_eq!(wire::parse_channel_data(&out), Some((channel, payload)));
        }
    }
    if let Some((_, len)) = wire::stun_header(data) {
        assert_eq!(kind, Kind::Stun);
        assert!(wire::HEADER_LEN + len <= data.len() && len % 4 == 0);
    }
    if let Some(ind) = wire::parse_send_indication(data) {
        assert!(ind.data.len() < data.len());
        // A Data indication is laid out like a Send indication (§11.4, §11.6).
        let mut out = Vec::new();
        let tid: [u8; 12] = data[8..20].try_into().expect("a STUN header was parsed");
        wire::write_data_indication(&mut out, ind.peer, ind.data, &tid);
        out[0..2].copy_from_slice(&wire::SEND_INDICATION.to_be_bytes());
        let dont_fragment = false; // a Data indication never carries DONT-FRAGMENT
        assert_eq!(
            wire::parse_send_indication(&out),
            Some(wire::SendIndication {
                dont_fragment,
                ..ind
            })
        );
    }
    let tid = data.get(..12).unwrap_or(&[0; 12]);
    let _ = wire::decode_xor_address(data, tid);
}

/// The realm, user and password of the allocation the server body sets up.
const REALM: &str = "fuzz";
const USER: &str = "fuzzer";
const PASSWORD: &str = "fuzz-password";
/// The peer the allocation has a permission and channel 0x4000 for.
const PEER: &str = "11.0.0.44:7000";

/// Relay ports that only record what is bound.
#[derive(Default)]
struct RecordingPorts {
    next: u16,
    bound: HashSet<SocketAddr>,
}

impl RelayPorts for RecordingPorts {
    fn bind(&mut self, ipv6: bool, port: PortRequest) -> Option<SocketAddr> {
        let ip = if ipv6 {
            "2001:db8::100"
        } else {
            "198.51.100.1"
        };
        let port = match port {
            PortRequest::Exactly(p) => p,
            PortRequest::Even => 50_000 + (self.next & !1),
            PortRequest::Any => 50_000 + self.next,
        };
        self.next = self.next.wrapping_add(2) % 10_000;
        let addr = SocketAddr::new(ip.parse().ok()?, port);
        self.bound.insert(addr).then_some(addr)
    }
    fn release(&mut self, addr: SocketAddr) {
        assert!(self.bound.remove(&addr), "{addr} released but not bound");
    }
    fn reserve(&mut self, ipv6: bool, port: u16) -> Option<SocketAddr> {
        self.bind(ipv6, PortRequest::Exactly(port))
    }
    fn claim(&mut self, addr: SocketAddr) -> bool {
        self.bound.contains(&addr)
    }
    fn unreserve(&mut self, addr: SocketAddr) {
        self.release(addr);
    }
}

fn request(
    method: MessageMethod,
    attrs: Vec<StunAttribute>,
    auth: Option<(&str, &HMACKey)>,
) -> Vec<u8> {
    let mut b = StunMessageBuilder::new(method, MessageClass::Request)
        .with_transaction_id(TransactionId::default());
    for a in attrs {
        b = b.with_attribute(a);
    }
    if let Some((nonce, key)) = auth {
        b = b
            .with_attribute(UserName::new(USER).expect("valid"))
            .with_attribute(Realm::new(REALM).expect("valid"))
            .with_attribute(Nonce::new(nonce).expect("valid"))
            .with_attribute(MessageIntegrity::new(key.clone()));
    }
    let mut buf = vec![0u8; 1500];
    let n = MessageEncoderBuilder::default()
        .build()
        .encode(&mut buf, &b.build())
        .expect("encodable");
    buf.truncate(n);
    buf
}

/// A server with one UDP allocation holding a permission and channel 0x4000 for
/// [`PEER`]; returns it, the client's 5-tuple and the relayed address.
fn allocated(now: Instant) -> (TurnServer<RecordingPorts>, FiveTuple, SocketAddr) {
    let mut creds = Credentials::new(REALM);
    creds.add_user(USER, PASSWORD).expect("valid user");
    let policy = PeerPolicy {
        relay_ports: (50_000, 60_000),
        ..Default::default()
    };
    let cfg = ServerConfig::default();
    let mut s = TurnServer::new(cfg, creds, policy, RecordingPorts::default(), now);
    let tuple = FiveTuple {
        transport: Transport::Udp,
        client: "203.0.113.5:40000".parse().expect("valid"),
        server: "198.51.100.1:3478".parse().expect("valid"),
    };
    let mut out = Vec::new();
    let transport = || -> StunAttribute { RequestedTrasport::new(stun_rs::protocols::UDP).into() };
    let decode = |raw: &[u8]| MessageDecoderBuilder::default().build().decode(raw);
    s.handle_client(
        now,
        tuple,
        &request(ALLOCATE, vec![transport()], None),
        &mut out,
    );
    let challenge = decode(&out).expect("a 401").0;
    let nonce = challenge
        .get::<Nonce>()
        .expect("a nonce")
        .as_nonce()
        .expect("nonce");
    let nonce = nonce.as_str().to_owned();
    let key = HMACKey::new_long_term(USER, REALM, PASSWORD, Algorithm::from(AlgorithmId::MD5))
        .expect("valid key");
    let auth = Some((nonce.as_str(), &key));
    s.handle_client(
        now,
        tuple,
        &request(ALLOCATE, vec![transport()], auth),
        &mut out,
    );
    let relay = *s.relays().bound.iter().next().expect("allocated");
    let peer = || -> StunAttribute {
        XorPeerAddress::from(PEER.parse::<SocketAddr>().expect("valid")).into()
    };
    s.handle_client(
        now,
        tuple,
        &request(CREATE_PERMMISSION, vec![peer()], auth),
        &mut out,
    );
    let bind = vec![ChannelNumber::new(0x4000).into(), peer()];
    s.handle_client(now, tuple, &request(CHANNEL_BIND, bind, auth), &mut out);
    assert_eq!((s.allocation_count(), s.channel_count()), (1, 1), "setup");
    (s, tuple, relay)
}

/// The core fed a sequence of datagrams, each `[control, length (2 bytes), bytes…]`: the
/// control byte's low bit says client or peer, the next picks UDP or TCP for a client
/// datagram (or the known or another peer), and the rest advance the clock in seconds.
/// Checks that every output goes where it may and stays within its bounds.
pub fn server(data: &[u8]) {
    let t0 = Instant::now();
    let (mut s, tuple, relay) = allocated(t0);
    let tcp = FiveTuple {
        transport: Transport::Tcp,
        ..tuple
    };
    let known_peer: SocketAddr = PEER.parse().expect("valid");
    let other_peer: SocketAddr = "11.0.0.45:9".parse().expect("valid");
    let mut now = t0;
    let mut rest = data;
    let mut out = Vec::new();
    while let [control, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (datagram, next) = tail.split_at(len);
        rest = next;
        now += Duration::from_secs(u64::from(control >> 2));
        if s.poll_timeout().is_some_and(|t| t <= now) {
            s.handle_timeout(now);
        }
        if control & 1 == 0 {
            let from = if control & 2 == 0 { tuple } else { tcp };
            match s.handle_client(now, from, datagram, &mut out) {
                None => {}
                Some(Route::Client(to)) => {
                    assert_eq!(to, from, "a reply goes back on the request's 5-tuple");
                    assert!(!out.is_empty() && out.len() <= crate::message::MAX_RESPONSE);
                }
                Some(Route::Peer { relay: r, .. }) => {
                    assert!(s.relays().bound.contains(&r), "relayed from a bound relay");
                    assert!(
                        out.len() < datagram.len(),
                        "a payload is part of its message"
                    );
                }
            }
        } else {
            let peer = if control & 2 == 0 {
                known_peer
            } else {
                other_peer
            };
            match s.handle_peer(now, relay, peer, datagram, &mut out) {
                None => {}
                Some(Route::Client(to)) => {
                    assert_eq!(to, tuple, "peer data goes to the allocation's client");
                    // ChannelData adds 4 bytes; a Data indication at most 52 (§11.6).
                    assert!(out.len() <= datagram.len() + 52);
                }
                Some(route) => panic!("peer data routed to {route:?}"),
            }
        }
    }
    assert!(
        s.allocation_count() <= 1,
        "no datagram creates a second allocation"
    );
    assert!(s.relays().bound.len() >= s.allocation_count());
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A STUN message of a TURN method and class with attributes of the types the core
    /// reads, with arbitrary values (and sometimes a wrong length or cookie).
    fn stun_message() -> impl Strategy<Value = Vec<u8>> {
        let attr_types = prop::sample::select(vec![
            0x0006u16, 0x0008, 0x000C, 0x000D, 0x0012, 0x0013, 0x0014, 0x0015, 0x0016, 0x0017,
            0x0018, 0x0019, 0x001A, 0x001C, 0x0022, 0x8022, 0x8028, 0x002F, 0xC001,
        ]);
        let attr = (attr_types, prop::collection::vec(any::<u8>(), 0..40));
        let method = prop::sample::select(vec![0x001u16, 0x003, 0x004, 0x006, 0x007, 0x008, 0x009]);
        let class = prop::sample::select(vec![0x0000u16, 0x0010, 0x0100, 0x0110]);
        (
            method,
            class,
            prop::collection::vec(attr, 0..6),
            any::<u8>(),
        )
            .prop_map(|(method, class, attrs, twist)| {
                let mut m = Vec::new();
                m.extend_from_slice(&(method | class).to_be_bytes());
                m.extend_from_slice(&[0, 0]);
                m.extend_from_slice(&wire::MAGIC_COOKIE.to_be_bytes());
                m.extend_from_slice(&[twist; 12]);
                for (ty, value) in attrs {
                    m.extend_from_slice(&ty.to_be_bytes());
                    m.extend_from_slice(&(value.len() as u16).to_be_bytes());
                    m.extend_from_slice(&value);
                    m.resize(m.len().next_multiple_of(4), 0);
                }
                let mut len = (m.len() - wire::HEADER_LEN) as u16;
                match twist % 16 {
                    0 => len = len.wrapping_add(4),
                    1 => m[4] ^= 1,
                    _ => {}
                }
                m[2..4].copy_from_slice(&len.to_be_bytes());
                m
            })
    }

    /// ChannelData near and inside the valid channel range, with any declared length.
    fn channel_data() -> impl Strategy<Value = Vec<u8>> {
        (
            0x3FFEu16..0x4003,
            any::<u16>(),
            prop::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(channel, len, payload)| {
                let len = if len % 2 == 0 {
                    payload.len() as u16
                } else {
                    len
                };
                let mut m = channel.to_be_bytes().to_vec();
                m.extend_from_slice(&len.to_be_bytes());
                m.extend_from_slice(&payload);
                m
            })
    }

    fn datagram() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            stun_message(),
            channel_data(),
            prop::collection::vec(any::<u8>(), 0..80),
        ]
    }

    /// A sequence in the server body's format.
    fn sequence() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec((any::<u8>(), datagram()), 0..12).prop_map(|items| {
            let mut data = Vec::new();
            for (control, d) in items {
                // Small clock steps mostly, a long one sometimes (expiries).
                let control = if control & 0xF0 == 0xF0 {
                    control
                } else {
                    control & 0x0F
                };
                data.push(control);
                data.extend_from_slice(&(d.len() as u16).to_be_bytes());
                data.extend_from_slice(&d);
            }
            data
        })
    }

    proptest! {
        #[test]
        fn wire_body_over_the_corpus(d in datagram()) {
            wire(&d);
        }

        #[test]
        fn server_body_over_the_corpus(data in sequence()) {
            server(&data);
        }

        #[test]
        fn server_body_over_raw_bytes(data in prop::collection::vec(any::<u8>(), 0..400)) {
            server(&data);
        }
    }

    #[test]
    fn server_body_relays_both_ways() {
        // The setup alone must leave a working channel: ChannelData out, peer data back.
        let (mut s, tuple, relay) = allocated(Instant::now());
        let now = Instant::now();
        let mut out = Vec::new();
        let cd = [0x40, 0x00, 0x00, 0x03, 1, 2, 3];
        let route = s.handle_client(now, tuple, &cd, &mut out);
        assert_eq!(
            route,
            Some(Route::Peer {
                relay,
                peer: PEER.parse().unwrap(),
                dont_fragment: false,
            })
        );
        assert_eq!(out, [1, 2, 3]);
        let route = s.handle_peer(now, relay, PEER.parse().unwrap(), b"back", &mut out);
        assert_eq!(route, Some(Route::Client(tuple)));
        assert_eq!(out, [0x40, 0x00, 0x00, 0x04, b'b', b'a', b'c', b'k']);
        // The same sequence in the body's format runs clean.
        let mut seq = vec![0u8, 0, 7];
        seq.extend_from_slice(&cd);
        server(&seq);
    }
}
