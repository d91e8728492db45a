//! Deterministic tests of the TURN core: simulated time, fake relay ports, requests built
//! and responses checked with stun-rs.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stun_rs::attributes::stun::{
    ErrorCode, MessageIntegrity, Nonce, Realm, UserName, XorMappedAddress,
};
use stun_rs::attributes::turn::{
    ChannelNumber, EvenPort, LifeTime, RequestedAddressFamily, RequestedTrasport, ReservationToken,
    XorPeerAddress, XorRelayedAddress,
};
use stun_rs::methods::{ALLOCATE, BINDING, CHANNEL_BIND, CREATE_PERMMISSION, REFRESH};
use stun_rs::{
    AddressFamily, Algorithm, AlgorithmId, DecoderContextBuilder, HMACKey, MessageClass,
    MessageDecoderBuilder, MessageEncoderBuilder, MessageMethod, StunAttribute, StunMessage,
    StunMessageBuilder, TransactionId,
};

use crate::auth::Credentials;
use crate::policy::PeerPolicy;
use crate::server::{
    FiveTuple, PortRequest, RelayPorts, Route, ServerConfig, Transport, TurnServer,
};
use crate::wire;

#[derive(Default)]
pub(crate) struct FakePorts {
    next: u16,
    bound: HashSet<SocketAddr>,
    ipv6: bool,
}

impl RelayPorts for FakePorts {
    fn bind(&mut self, ipv6: bool, port: PortRequest) -> Option<SocketAddr> {
        if ipv6 && !self.ipv6 {
            return None;
        }
        let ip = if ipv6 {
            "2001:db8::100".parse().unwrap()
        } else {
            "198.51.100.1".parse().unwrap()
        };
        let port = match port {
            PortRequest::Exactly(p) => p,
            PortRequest::Even => {
                self.next += self.next % 2;
                self.next
            }
            PortRequest::Any => self.next,
        };
        let addr = SocketAddr::new(ip, port);
        if !self.bound.insert(addr) {
            return None;
        }
        self.next = self.next.max(port) + 1;
        Some(addr)
    }
    fn release(&mut self, addr: SocketAddr) {
        assert!(self.bound.remove(&addr), "released twice: {addr}");
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

pub(crate) const REALM: &str = "huddle.test";

pub(crate) fn server(t0: Instant, cfg: ServerConfig) -> TurnServer<FakePorts> {
    let mut creds = Credentials::new(REALM);
    creds.add_user("alice", "wonderland").unwrap();
    creds.set_rest_secret(b"rest-secret");
    let policy = PeerPolicy {
        relay_ports: (50000, 60000),
        ..Default::default()
    };
    TurnServer::new(
        cfg,
        creds,
        policy,
        FakePorts {
            next: 50000,
            ..Default::default()
        },
        t0,
    )
}

pub(crate) fn tuple(port: u16) -> FiveTuple {
    FiveTuple {
        transport: Transport::Udp,
        client: SocketAddr::new("203.0.113.5".parse().unwrap(), port),
        server: "198.51.100.1:3478".parse().unwrap(),
    }
}

pub(crate) struct Client {
    pub(crate) tuple: FiveTuple,
    user: String,
    key: HMACKey,
    nonce: Option<String>,
}

impl Client {
    pub(crate) fn new(tuple: FiveTuple, user: &str, password: &str) -> Self {
        let key = HMACKey::new_long_term(user, REALM, password, Algorithm::from(AlgorithmId::MD5))
            .unwrap();
        Self {
            tuple,
            user: user.into(),
            key,
            nonce: None,
        }
    }

    fn encode(
        &self,
        method: MessageMethod,
        attrs: Vec<StunAttribute>,
        tid: TransactionId,
        auth: bool,
    ) -> Vec<u8> {
        let mut b = StunMessageBuilder::new(method, MessageClass::Request).with_transaction_id(tid);
        for a in attrs {
            b = b.with_attribute(a);
        }
        if auth {
            b = b
                .with_attribute(UserName::new(&self.user).unwrap())
                .with_attribute(Realm::new(REALM).unwrap())
                .with_attribute(Nonce::new(self.nonce.as_deref().unwrap()).unwrap())
                .with_attribute(MessageIntegrity::new(self.key.clone()));
        }
        let mut buf = vec![0u8; 1500];
        let n = MessageEncoderBuilder::default()
            .build()
            .encode(&mut buf, &b.build())
            .unwrap();
        buf.truncate(n);
        buf
    }

    /// Sends with credentials, first fetching a nonce if needed; returns the response.
    pub(crate) fn call(
        &mut self,
        s: &mut TurnServer<FakePorts>,
        now: Instant,
        method: MessageMethod,
        attrs: Vec<StunAttribute>,
    ) -> StunMessage {
        self.call_tid(s, now, method, attrs, TransactionId::default())
    }

    fn call_tid(
        &mut self,
        s: &mut TurnServer<FakePorts>,
        now: Instant,
        method: MessageMethod,
        attrs: Vec<StunAttribute>,
        tid: TransactionId,
    ) -> StunMessage {
        if self.nonce.is_none() {
            let r = send(
                s,
                now,
                self.tuple,
                &self.encode(method, attrs.clone(), TransactionId::default(), false),
            );
            assert_eq!(code(&r), Some(401));
            self.nonce = Some(
                r.get::<Nonce>()
                    .unwrap()
                    .as_nonce()
                    .unwrap()
                    .as_str()
                    .to_owned(),
            );
        }
        let raw = send_raw(s, now, self.tuple, &self.encode(method, attrs, tid, true));
        let r = MessageDecoderBuilder::default()
            .build()
            .decode(&raw)
            .unwrap()
            .0;
        if !matches!(code(&r), Some(401 | 438)) {
            // Every answer to an authenticated request is signed with the same key.
            verify(&raw, &self.key);
        }
        r
    }
}

pub(crate) fn send_raw(
    s: &mut TurnServer<FakePorts>,
    now: Instant,
    tuple: FiveTuple,
    data: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    let route = s
        .handle_client(now, tuple, data, &mut out)
        .expect("a response");
    assert_eq!(route, Route::Client(tuple));
    out
}

fn send(s: &mut TurnServer<FakePorts>, now: Instant, tuple: FiveTuple, data: &[u8]) -> StunMessage {
    MessageDecoderBuilder::default()
        .build()
        .decode(&send_raw(s, now, tuple, data))
        .unwrap()
        .0
}

/// Checks a raw response's MESSAGE-INTEGRITY (and FINGERPRINT, if any) with `key`.
pub(crate) fn verify(raw: &[u8], key: &HMACKey) {
    let ctx = DecoderContextBuilder::default()
        .with_key(key.clone())
        .with_validation()
        .build();
    let (msg, _) = MessageDecoderBuilder::default()
        .with_context(ctx)
        .build()
        .decode(raw)
        .expect("response integrity must verify with the client's key");
    assert!(
        msg.get::<MessageIntegrity>().is_some(),
        "response must carry MESSAGE-INTEGRITY"
    );
}

/// Recomputes MESSAGE-INTEGRITY (the last attribute) after a test edited the message.
fn resign(msg: &mut [u8], key: &HMACKey) {
    use hmac::{Hmac, Mac};
    let mut at = 20;
    while at + 4 <= msg.len() {
        let ty = u16::from_be_bytes([msg[at], msg[at + 1]]);
        let len = u16::from_be_bytes([msg[at + 2], msg[at + 3]]) as usize;
        if ty == 0x0008 {
            let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).unwrap();
            mac.update(&msg[..at]);
            msg[at + 4..at + 24].copy_from_slice(&mac.finalize().into_bytes());
            return;
        }
        at += 4 + len.next_multiple_of(4);
    }
    panic!("no MESSAGE-INTEGRITY");
}

pub(crate) fn code(msg: &StunMessage) -> Option<u16> {
    msg.get::<ErrorCode>()
        .map(|e| e.as_error_code().unwrap().error_code().error_code())
}

pub(crate) fn relayed(msg: &StunMessage) -> SocketAddr {
    *msg.get::<XorRelayedAddress>()
        .unwrap()
        .as_xor_relayed_address()
        .unwrap()
        .socket_address()
}

pub(crate) fn udp() -> StunAttribute {
    RequestedTrasport::new(stun_rs::protocols::UDP).into()
}

pub(crate) fn peer_attr(p: &str) -> StunAttribute {
    XorPeerAddress::from(p.parse::<SocketAddr>().unwrap()).into()
}

#[test]
fn binding_reflects_the_client_address() {
    let t0 = Instant::now();
    let mut s = server(t0, ServerConfig::default());
    let c = Client::new(tuple(4000), "alice", "wonderland");
    let r = send(
        &mut s,
        t0,
        c.tuple,
        &c.encode(BINDING, vec![], TransactionId::default(), false),
    );
    assert_eq!(r.class(), MessageClass::SuccessResponse);
    let mapped = r
        .get::<XorMappedAddress>()
        .unwrap()
        .as_xor_mapped_address()
        .unwrap();
    assert_eq!(*mapped.socket_address(), c.tuple.client);
}

#[test]
fn allocate_needs_credentials_and_answers_retransmissions() {
    let t0 = Instant::now();
    let mut s = server(t0, ServerConfig::default());
    let mut c = Client::new(tuple(4000), "alice", "wonderland");
    let tid = TransactionId::default();
    let r = c.call_tid(&mut s, t0, ALLOCATE, vec![udp()], tid);
    assert_eq!(r.class(), MessageClass::SuccessResponse, "{:?}", code(&r));
    let relay = relayed(&r);
    assert_eq!(
        r.get::<LifeTime>()
            .unwrap()
            .as_life_time()
            .unwrap()
            .as_ref(),
        &600
    );
    assert_eq!(s.allocation_count(), 1);
    // Same transaction: same answer. New transaction: 437.
    let again = c.call_tid(&mut s, t0, ALLOCATE, vec![udp()], tid);
    assert_eq!(relayed(&again), relay);
    let other = c.call(&mut s, t0, ALLOCATE, vec![udp()]);
    assert_eq!(code(&other), Some(437));
    // Missing REQUESTED-TRANSPORT is a bad request.
    let mut d = Client::new(tuple(4001), "alice", "wonderland");
    assert_eq!(code(&d.call(&mut s, t0, ALLOCATE, vec![])), Some(400));
    // REQUESTED-TRANSPORT TCP (6): stun-rs only builds UDP, so patch the byte and re-sign.
    let mut msg = d.encode(ALLOCATE, vec![udp()], TransactionId::default(), true);
    let at = msg
        .windows(5)
        .position(|w| w == [0x00, 0x19, 0x00, 0x04, 17])
        .unwrap();
    msg[at + 4] = 6;
    resign(&mut msg, &d.key);
    assert_eq!(code(&send(&mut s, t0, d.tuple, &msg)), Some(442));
}

#[test]
fn wrong_password_stale_nonce_and_rate_limit() {
    let t0 = Instant::now();
    let mut s = server(
        t0,
        ServerConfig {
            auth_failures_per_minute: 3,
            ..Default::default()
        },
    );
    let mut good = Client::new(tuple(4000), "alice", "wonderland");
    assert_eq!(
        good.call(&mut s, t0, ALLOCATE, vec![udp()]).class(),
        MessageClass::SuccessResponse
    );
    // The nonce goes stale after its lifetime: 438 with a fresh nonce, then success.
    let later = t0 + Duration::from_secs(700);
    let r = send(
        &mut s,
        later,
        good.tuple,
        &good.encode(REFRESH, vec![], TransactionId::default(), true),
    );
    assert_eq!(code(&r), Some(438));
    good.nonce = Some(
        r.get::<Nonce>()
            .unwrap()
            .as_nonce()
            .unwrap()
            .as_str()
            .to_owned(),
    );
    assert_eq!(
        good.call(&mut s, later, REFRESH, vec![]).class(),
        MessageClass::SuccessResponse
    );

    let mut bad = Client::new(tuple(5000), "alice", "not-the-password");
    for _ in 0..3 {
        assert_eq!(
            code(&bad.call(&mut s, t0, ALLOCATE, vec![udp()])),
            Some(401)
        );
    }
    // Over the limit, requests from that IP are dropped without an answer...
    let mut out = Vec::new();
    let msg = bad.encode(ALLOCATE, vec![udp()], TransactionId::default(), true);
    assert_eq!(s.handle_client(t0, bad.tuple, &msg, &mut out), None);
    // ...until the minute is over.
    assert_eq!(
        code(&bad.call(&mut s, t0 + Duration::from_secs(61), ALLOCATE, vec![udp()])),
        Some(401)
    );
    let mut stranger = Client::new(tuple(5001), "mallory", "x");
    stranger.tuple.client = "192.0.2.200:1".parse().unwrap();
    assert_eq!(
        code(&stranger.call(&mut s, t0, ALLOCATE, vec![udp()])),
        Some(401)
    );
}

#[test]
fn rest_credentials_and_expiry() {
    let t0 = Instant::now();
    let mut s = server(t0, ServerConfig::default());
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let user = format!("{}:bob", now_unix + 3600);
    let password = crate::auth::rest_password(b"rest-secret", &user);
    let mut c = Client::new(tuple(4000), &user, &password);
    assert_eq!(
        c.call(&mut s, t0, ALLOCATE, vec![udp()]).class(),
        MessageClass::SuccessResponse
    );
    let user = format!("{}:bob", now_unix - 10);
    let password = crate::auth::rest_password(b"rest-secret", &user);
    let mut expired = Client::new(tuple(4001), &user, &password);
    assert_eq!(
        code(&expired.call(&mut s, t0, ALLOCATE, vec![udp()])),
        Some(401)
    );
}

#[test]
fn permissions_gate_relaying_both_ways() {
    let t0 = Instant::now();
    let mut s = server(t0, ServerConfig::default());
    let mut c = Client::new(tuple(4000), "alice", "wonderland");
    let relay = relayed(&c.call(&mut s, t0, ALLOCATE, vec![udp()]));
    let peer: SocketAddr = "11.0.0.44:7000".parse().unwrap();
    let mut out = Vec::new();
    // No permission yet: the peer's datagram is dropped.
    assert_eq!(s.handle_peer(t0, relay, peer, b"hi", &mut out), None);

    let r = c.call(
        &mut s,
        t0,
        CREATE_PERMMISSION,
        vec![peer_attr("11.0.0.44:1")],
    );
    assert_eq!(r.class(), MessageClass::SuccessResponse, "{:?}", code(&r));
    // Peer → client arrives as a Data indication (any port of a permitted IP).
    assert_eq!(
        s.handle_peer(t0, relay, peer, b"hi", &mut out),
        Some(Route::Client(c.tuple))
    );
    let mut as_send = out.clone();
    as_send[0..2].copy_from_slice(&wire::SEND_INDICATION.to_be_bytes());
    let ind = wire::parse_send_indication(&as_send).unwrap();
    assert_eq!((ind.peer, ind.data), (peer, &b"hi"[..]));
    // Client → peer by Send indication.
    let mut send_ind = Vec::new();
    wire::write_data_indication(&mut send_ind, peer, b"yo", &[3; 12]);
    send_ind[0..2].copy_from_slice(&wire::SEND_INDICATION.to_be_bytes());
    assert_eq!(
        s.handle_client(t0, c.tuple, &send_ind, &mut out),
        Some(Route::Peer {
            relay,
            peer,
            dont_fragment: false
        })
    );
    assert_eq!(out, b"yo");
    // Permissions last 5 minutes unless refreshed.
    let late = t0 + Duration::from_secs(301);
    assert_eq!(s.handle_peer(late, relay, peer, b"hi", &mut out), None);
    // A private peer is refused with 403.
    let r = c.call(
        &mut s,
        t0,
        CREATE_PERMMISSION,
        vec![peer_attr("10.0.0.1:1")],
    );
    assert_eq!(code(&r), Some(403));
    // An IPv6 peer on an IPv4 allocation: 443.
    let r = c.call(
        &mut s,
        t0,
        CREATE_PERMMISSION,
        vec![peer_attr("[2001:db8::9]:1")],
    );
    assert_eq!(code(&r), Some(443));
    // Without XOR-PEER-ADDRESS: 400.
    assert_eq!(
        code(&c.call(&mut s, t0, CREATE_PERMMISSION, vec![])),
        Some(400)
    );
}

#[test]
fn channels_carry_data_both_ways() {
    let t0 = Instant::now();
    let mut s = server(t0, ServerConfig::default());
    let mut c = Client::new(tuple(4000), "alice", "wonderland");
    let relay = relayed(&c.call(&mut s, t0, ALLOCATE, vec![udp()]));
    let peer: SocketAddr = "11.0.0.44:7000".parse().unwrap();
    let bind = |n: u16, p: &str| vec![ChannelNumber::new(n).into(), peer_attr(p)];
    assert_eq!(
        c.call(&mut s, t0, CHANNEL_BIND, bind(0x4001, "11.0.0.44:7000"))
            .class(),
        MessageClass::SuccessResponse
    );
    let mut out = Vec::new();
    let mut cd = Vec::new();
    wire::write_channel_data(&mut cd, 0x4001, b"media", false);
    assert_eq!(
        s.handle_client(t0, c.tuple, &cd, &mut out),
        Some(Route::Peer {
            relay,
            peer,
            dont_fragment: false
        })
    );
    assert_eq!(out, b"media");
    assert_eq!(
        s.handle_peer(t0, relay, peer, b"back", &mut out),
        Some(Route::Client(c.tuple))
    );
    assert_eq!(wire::parse_channel_data(&out), Some((0x4001, &b"back"[..])));
    // Conflicting bindings and bad numbers are 400.
    assert_eq!(
        code(&c.call(&mut s, t0, CHANNEL_BIND, bind(0x4001, "11.0.0.45:7000"))),
        Some(400)
    );
    assert_eq!(
        code(&c.call(&mut s, t0, CHANNEL_BIND, bind(0x4002, "11.0.0.44:7000"))),
        Some(400)
    );
    assert_eq!(
        code(&c.call(&mut s, t0, CHANNEL_BIND, bind(0x3FFF, "11.0.0.46:7000"))),
        Some(400)
    );
    // An unbound channel number is dropped.
    wire::write_channel_data(&mut cd, 0x4005, b"x", false);
    assert_eq!(s.handle_client(t0, c.tuple, &cd, &mut out), None);
}

#[test]
fn refresh_zero_deletes_and_expiry_releases() {
    let t0 = Instant::now();
    let mut s = server(t0, ServerConfig::default());
    let mut c = Client::new(tuple(4000), "alice", "wonderland");
    c.call(&mut s, t0, ALLOCATE, vec![udp()]);
    let r = c.call(&mut s, t0, REFRESH, vec![LifeTime::from(0).into()]);
    assert_eq!(r.class(), MessageClass::SuccessResponse);
    assert_eq!(s.allocation_count(), 0);
    assert!(s.relays().bound.is_empty(), "relay port released");
    assert_eq!(code(&c.call(&mut s, t0, REFRESH, vec![])), Some(437));

    c.call(&mut s, t0, ALLOCATE, vec![udp(), LifeTime::from(60).into()]);
    // Requests below the default get the default (600 s); above the maximum get 3600 s.
    s.handle_timeout(t0 + Duration::from_secs(599));
    assert_eq!(s.allocation_count(), 1);
    let r = c.call(
        &mut s,
        t0 + Duration::from_secs(599),
        REFRESH,
        vec![LifeTime::from(100_000).into()],
    );
    assert_eq!(
        r.get::<LifeTime>()
            .unwrap()
            .as_life_time()
            .unwrap()
            .as_ref(),
        &3600
    );
    s.handle_timeout(t0 + Duration::from_secs(601));
    assert_eq!(s.allocation_count(), 1, "refreshed");
    s.handle_timeout(t0 + Duration::from_secs(599 + 3600));
    assert_eq!(s.allocation_count(), 0);
    assert!(s.relays().bound.is_empty());
}

#[test]
fn quotas_and_wrong_user() {
    let t0 = Instant::now();
    let mut s = server(
        t0,
        ServerConfig {
            user_quota: 1,
            max_allocations: 2,
            ..Default::default()
        },
    );
    let mut a = Client::new(tuple(4000), "alice", "wonderland");
    a.call(&mut s, t0, ALLOCATE, vec![udp()]);
    let mut a2 = Client::new(tuple(4001), "alice", "wonderland");
    assert_eq!(code(&a2.call(&mut s, t0, ALLOCATE, vec![udp()])), Some(486));
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let user = format!("{}:x", now_unix + 60);
    let mut rest = Client::new(
        tuple(4002),
        &user,
        &crate::auth::rest_password(b"rest-secret", &user),
    );
    rest.call(&mut s, t0, ALLOCATE, vec![udp()]);
    let user2 = format!("{}:y", now_unix + 60);
    let mut full = Client::new(
        tuple(4003),
        &user2,
        &crate::auth::rest_password(b"rest-secret", &user2),
    );
    assert_eq!(
        code(&full.call(&mut s, t0, ALLOCATE, vec![udp()])),
        Some(508)
    );
    // Another user on alice's 5-tuple: 441.
    let mut other = Client::new(
        tuple(4000),
        &user2,
        &crate::auth::rest_password(b"rest-secret", &user2),
    );
    assert_eq!(code(&other.call(&mut s, t0, REFRESH, vec![])), Some(441));
}

#[test]
fn user_bandwidth_is_capped_across_allocations() {
    let t0 = Instant::now();
    let mut s = server(
        t0,
        ServerConfig {
            user_bandwidth: 1000,
            ..Default::default()
        },
    );
    let mut out = Vec::new();
    let peer: SocketAddr = "11.0.0.44:7000".parse().unwrap();
    let mut relays = Vec::new();
    let mut clients = Vec::new();
    for port in [4000, 4001] {
        let mut c = Client::new(tuple(port), "alice", "wonderland");
        relays.push(relayed(&c.call(&mut s, t0, ALLOCATE, vec![udp()])));
        let bind = vec![
            ChannelNumber::new(0x4000).into(),
            peer_attr("11.0.0.44:7000"),
        ];
        assert_eq!(
            c.call(&mut s, t0, CHANNEL_BIND, bind).class(),
            MessageClass::SuccessResponse
        );
        clients.push(c);
    }
    let mut cd = Vec::new();
    wire::write_channel_data(&mut cd, 0x4000, &[0u8; 600], false);
    assert!(
        s.handle_client(t0, clients[0].tuple, &cd, &mut out)
            .is_some()
    );
    // The second allocation of the same user shares the allowance: 400 bytes left.
    assert_eq!(s.handle_client(t0, clients[1].tuple, &cd, &mut out), None);
    // Peer-to-client traffic counts too.
    assert!(
        s.handle_peer(t0, relays[1], peer, &[0u8; 300], &mut out)
            .is_some()
    );
    assert_eq!(
        s.handle_peer(t0, relays[1], peer, &[0u8; 300], &mut out),
        None
    );
    // 100 bytes are left; half a second refills 500.
    let later = t0 + Duration::from_millis(500);
    wire::write_channel_data(&mut cd, 0x4000, &[0u8; 550], false);
    assert!(
        s.handle_client(later, clients[1].tuple, &cd, &mut out)
            .is_some()
    );
    assert_eq!(s.stats().drops[&crate::server::Drop::BandwidthQuota], 2);
}

#[test]
fn even_port_reservation_and_address_families() {
    let t0 = Instant::now();
    let mut s = server(t0, ServerConfig::default());
    let mut a = Client::new(tuple(4000), "alice", "wonderland");
    let r = a.call(
        &mut s,
        t0,
        ALLOCATE,
        vec![udp(), EvenPort::new(true).into()],
    );
    assert_eq!(r.class(), MessageClass::SuccessResponse, "{:?}", code(&r));
    let first = relayed(&r);
    assert_eq!(first.port() % 2, 0);
    let token = r
        .get::<ReservationToken>()
        .unwrap()
        .as_reservation_token()
        .unwrap()
        .token()
        .to_vec();
    let token: [u8; 8] = token.try_into().unwrap();
    let mut b = Client::new(tuple(4001), "alice", "wonderland");
    let r = b.call(
        &mut s,
        t0,
        ALLOCATE,
        vec![udp(), ReservationToken::from(token).into()],
    );
    assert_eq!(relayed(&r).port(), first.port() + 1);
    // A token is used once.
    let mut c = Client::new(tuple(4002), "alice", "wonderland");
    assert_eq!(
        code(&c.call(
            &mut s,
            t0,
            ALLOCATE,
            vec![udp(), ReservationToken::from(token).into()]
        )),
        Some(508)
    );
    // IPv6 relays are not configured on this server: 440.
    let v6 = RequestedAddressFamily::new(AddressFamily::IPv6);
    let mut d = Client::new(tuple(4003), "alice", "wonderland");
    assert_eq!(
        code(&d.call(&mut s, t0, ALLOCATE, vec![udp(), v6.into()])),
        Some(440)
    );
}

#[test]
fn sha256_integrity_is_answered_in_kind() {
    use stun_rs::attributes::stun::MessageIntegritySha256;
    let t0 = Instant::now();
    let mut s = server(t0, ServerConfig::default());
    let mut c = Client::new(tuple(4000), "alice", "wonderland");
    let r = send(
        &mut s,
        t0,
        c.tuple,
        &c.encode(ALLOCATE, vec![udp()], TransactionId::default(), false),
    );
    c.nonce = Some(
        r.get::<Nonce>()
            .unwrap()
            .as_nonce()
            .unwrap()
            .as_str()
            .to_owned(),
    );
    let msg = StunMessageBuilder::new(ALLOCATE, MessageClass::Request)
        .with_attribute(udp())
        .with_attribute(UserName::new("alice").unwrap())
        .with_attribute(Realm::new(REALM).unwrap())
        .with_attribute(Nonce::new(c.nonce.as_deref().unwrap()).unwrap())
        .with_attribute(MessageIntegritySha256::new(c.key.clone()))
        .build();
    let mut buf = vec![0u8; 1500];
    let n = MessageEncoderBuilder::default()
        .build()
        .encode(&mut buf, &msg)
        .unwrap();
    let raw = send_raw(&mut s, t0, c.tuple, &buf[..n]);
    let ctx = DecoderContextBuilder::default()
        .with_key(c.key.clone())
        .with_validation()
        .build();
    let (resp, _) = MessageDecoderBuilder::default()
        .with_context(ctx)
        .build()
        .decode(&raw)
        .unwrap();
    assert_eq!(resp.class(), MessageClass::SuccessResponse);
    assert!(resp.get::<MessageIntegritySha256>().is_some());
    assert!(resp.get::<MessageIntegrity>().is_none());
}

#[test]
fn dual_allocation_relays_each_family() {
    use stun_rs::attributes::turn::AdditionalAddressFamily;
    let t0 = Instant::now();
    let mut s = server(t0, ServerConfig::default());
    s.relays().ipv6 = true;
    let mut c = Client::new(tuple(4000), "alice", "wonderland");
    let r = c.call(
        &mut s,
        t0,
        ALLOCATE,
        vec![
            udp(),
            AdditionalAddressFamily::new(AddressFamily::IPv6).into(),
        ],
    );
    assert_eq!(r.class(), MessageClass::SuccessResponse, "{:?}", code(&r));
    let relays: Vec<SocketAddr> = r
        .attributes()
        .iter()
        .filter_map(|a| a.as_xor_relayed_address().ok())
        .map(|a| *a.socket_address())
        .collect();
    assert_eq!(relays.len(), 2);
    assert!(relays[0].is_ipv4() && relays[1].is_ipv6());
    // Permissions for both families; each peer is reached from the relay of its family.
    let r = c.call(
        &mut s,
        t0,
        CREATE_PERMMISSION,
        vec![peer_attr("11.0.0.1:1"), peer_attr("[2606:4700::1]:1")],
    );
    assert_eq!(r.class(), MessageClass::SuccessResponse, "{:?}", code(&r));
    let mut out = Vec::new();
    let v6_peer: SocketAddr = "[2606:4700::1]:9".parse().unwrap();
    assert_eq!(
        s.handle_peer(t0, relays[1], v6_peer, b"x", &mut out),
        Some(Route::Client(c.tuple))
    );
    let mut send_ind = Vec::new();
    wire::write_data_indication(&mut send_ind, v6_peer, b"y", &[1; 12]);
    send_ind[0..2].copy_from_slice(&wire::SEND_INDICATION.to_be_bytes());
    assert_eq!(
        s.handle_client(t0, c.tuple, &send_ind, &mut out),
        Some(Route::Peer {
            relay: relays[1],
            peer: v6_peer,
            dont_fragment: false
        })
    );
    // Both relayed addresses go when the allocation does.
    c.call(&mut s, t0, REFRESH, vec![LifeTime::from(0).into()]);
    assert!(s.relays().bound.is_empty());
}

#[test]
fn unknown_comprehension_required_attribute_gets_420() {
    let t0 = Instant::now();
    let mut s = server(t0, ServerConfig::default());
    // A Binding request with attribute 0x0042 (comprehension-required, unknown).
    let mut msg = vec![0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42];
    msg.extend_from_slice(&[9; 12]);
    msg.extend_from_slice(&[0x00, 0x42, 0x00, 0x04, 1, 2, 3, 4]);
    let r = send(&mut s, t0, tuple(4000), &msg);
    assert_eq!(code(&r), Some(420));
}

#[test]
fn garbage_is_dropped_and_counted() {
    let t0 = Instant::now();
    let mut s = server(t0, ServerConfig::default());
    let mut out = Vec::new();
    for junk in [
        &b""[..],
        b"\xff\xff",
        b"\x00\x01\x00\x00\x21\x12\xa4\x42short",
        &[0x40, 0x00, 0xff, 0xff, 1],
    ] {
        assert_eq!(s.handle_client(t0, tuple(1), junk, &mut out), None);
    }
    assert!(s.stats().drops.values().sum::<u64>() >= 4);
}

/// RFC 5769 §2.4: request with long-term authentication.
#[test]
fn rfc5769_long_term_vector() {
    let sample: [u8; 116] = [
        0x00, 0x01, 0x00, 0x60, 0x21, 0x12, 0xa4, 0x42, 0x78, 0xad, 0x34, 0x33, 0xc6, 0xad, 0x72,
        0xc0, 0x29, 0xda, 0x41, 0x2e, 0x00, 0x06, 0x00, 0x12, 0xe3, 0x83, 0x9e, 0xe3, 0x83, 0x88,
        0xe3, 0x83, 0xaa, 0xe3, 0x83, 0x83, 0xe3, 0x82, 0xaf, 0xe3, 0x82, 0xb9, 0x00, 0x00, 0x00,
        0x15, 0x00, 0x1c, 0x66, 0x2f, 0x2f, 0x34, 0x39, 0x39, 0x6b, 0x39, 0x35, 0x34, 0x64, 0x36,
        0x4f, 0x4c, 0x33, 0x34, 0x6f, 0x4c, 0x39, 0x46, 0x53, 0x54, 0x76, 0x79, 0x36, 0x34, 0x73,
        0x41, 0x00, 0x14, 0x00, 0x0b, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e, 0x6f, 0x72,
        0x67, 0x00, 0x00, 0x08, 0x00, 0x14, 0xf6, 0x70, 0x24, 0x65, 0x6d, 0xd6, 0x4a, 0x3e, 0x02,
        0xb8, 0xe0, 0x71, 0x2e, 0x85, 0xc9, 0xa2, 0x8c, 0xa8, 0x96, 0x66,
    ];
    let mut creds = Credentials::new("example.org");
    creds
        .add_user(
            "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}",
            "TheMatrIX",
        )
        .unwrap();
    let key = creds
        .key_for("\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}", 0)
        .unwrap();
    let ctx = DecoderContextBuilder::default()
        .with_key(key)
        .with_validation()
        .build();
    let (msg, _) = MessageDecoderBuilder::default()
        .with_context(ctx)
        .build()
        .decode(&sample)
        .unwrap();
    assert_eq!(
        msg.get::<Nonce>().unwrap().as_nonce().unwrap().as_str(),
        "f//499k954d6OL34oL9FSTvy64sA"
    );
    // One flipped bit fails the integrity check.
    let mut bad = sample;
    bad[60] ^= 1;
    let mut wrong = Credentials::new("example.org");
    wrong
        .add_user(
            "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}",
            "TheMatrIX",
        )
        .unwrap();
    let key = wrong
        .key_for("\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}", 0)
        .unwrap();
    let ctx = DecoderContextBuilder::default()
        .with_key(key)
        .with_validation()
        .build();
    assert!(
        MessageDecoderBuilder::default()
            .with_context(ctx)
            .build()
            .decode(&bad)
            .is_err()
    );
}

/// RFC 5769 §2.1: request with short-term credentials and FINGERPRINT.
#[test]
fn rfc5769_short_term_vector_with_fingerprint() {
    let sample: [u8; 108] = [
        0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74,
        0x65, 0x73, 0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e,
        0x00, 0x01, 0xff, 0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36,
        0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20,
        0x20, 0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e,
        0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5,
        0x7a, 0x3b, 0xcf,
    ];
    let key = HMACKey::new_short_term("VOkJxbRl1RmTxUk/WvJxBt").unwrap();
    let ctx = DecoderContextBuilder::default()
        .with_key(key)
        .with_validation()
        .build();
    let (msg, _) = MessageDecoderBuilder::default()
        .with_context(ctx)
        .build()
        .decode(&sample)
        .unwrap();
    assert_eq!(
        msg.get::<UserName>()
            .unwrap()
            .as_user_name()
            .unwrap()
            .as_str(),
        "evtj:h6vY"
    );
    let mut bad = sample;
    bad[107] ^= 1; // corrupt the CRC
    let key = HMACKey::new_short_term("VOkJxbRl1RmTxUk/WvJxBt").unwrap();
    let ctx = DecoderContextBuilder::default()
        .with_key(key)
        .with_validation()
        .build();
    assert!(
        MessageDecoderBuilder::default()
            .with_context(ctx)
            .build()
            .decode(&bad)
            .is_err()
    );
}

proptest::proptest! {
    #[test]
    fn core_never_panics_on_arbitrary_input(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
        let t0 = Instant::now();
        let mut s = server(t0, ServerConfig::default());
        let mut out = Vec::new();
        let _ = s.handle_client(t0, tuple(1), &data, &mut out);
        let _ = s.handle_peer(t0, "198.51.100.1:50000".parse().unwrap(), "192.0.2.1:1".parse().unwrap(), &data, &mut out);
    }
}
