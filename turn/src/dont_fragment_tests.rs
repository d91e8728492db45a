//! DONT-FRAGMENT (RFC 8656 §7.2, §11.2, §14): the core marks which datagrams leave with
//! the DF bit, and the driver sets it on the relay socket that sends them, checked on real
//! loopback sockets by reading `IP_MTU_DISCOVER` back.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use rustix::net::sockopt::{
    Ipv4PathMtuDiscovery, Ipv6PathMtuDiscovery, ip_mtu_discover, ipv6_mtu_discover,
};
use stun_rs::attributes::stun::{MessageIntegrity, Nonce, Realm, UnknownAttributes, UserName};
use stun_rs::attributes::turn::{ChannelNumber, DontFragment, RequestedAddressFamily};
use stun_rs::methods::{ALLOCATE, CHANNEL_BIND, CREATE_PERMMISSION};
use stun_rs::{
    AddressFamily, Algorithm, AlgorithmId, HMACKey, MessageClass, MessageDecoderBuilder,
    MessageEncoderBuilder, MessageMethod, StunAttribute, StunMessage, StunMessageBuilder,
    TransactionId,
};
use tokio_util::sync::CancellationToken;

use crate::auth::Credentials;
use crate::driver::{TurnOptions, TurnService};
use crate::policy::PeerPolicy;
use crate::server::{Route, ServerConfig};
use crate::server_tests::{Client, REALM, code, peer_attr, relayed, send_raw, server, tuple, udp};
use crate::wire;

/// A Send indication to `peer`, with DONT-FRAGMENT when `df`.
fn send_indication(peer: SocketAddr, data: &[u8], df: bool) -> Vec<u8> {
    let mut msg = Vec::new();
    wire::write_data_indication(&mut msg, peer, data, &rand::random());
    msg[0..2].copy_from_slice(&wire::SEND_INDICATION.to_be_bytes());
    if df {
        // DONT-FRAGMENT has no value (§18.8).
        msg.extend_from_slice(&wire::ATTR_DONT_FRAGMENT.to_be_bytes());
        msg.extend_from_slice(&[0, 0]);
        let body = (msg.len() - wire::HEADER_LEN) as u16;
        msg[2..4].copy_from_slice(&body.to_be_bytes());
    }
    msg
}

fn to_peer(route: Option<Route>) -> Option<bool> {
    match route {
        Some(Route::Peer { dont_fragment, .. }) => Some(dont_fragment),
        _ => None,
    }
}

#[test]
fn allocation_with_dont_fragment_marks_all_its_datagrams() {
    let t0 = Instant::now();
    let mut s = server(t0, ServerConfig::default());
    let mut c = Client::new(tuple(4000), "alice", "wonderland");
    let r = c.call(
        &mut s,
        t0,
        ALLOCATE,
        vec![udp(), DontFragment::default().into()],
    );
    assert_eq!(r.class(), MessageClass::SuccessResponse, "{:?}", code(&r));
    let peer: SocketAddr = "11.0.0.44:7000".parse().unwrap();
    let bind = vec![
        ChannelNumber::new(0x4001).into(),
        peer_attr("11.0.0.44:7000"),
    ];
    let r = c.call(&mut s, t0, CHANNEL_BIND, bind);
    assert_eq!(r.class(), MessageClass::SuccessResponse);
    let mut out = Vec::new();
    let mut cd = Vec::new();
    wire::write_channel_data(&mut cd, 0x4001, b"media", false);
    assert_eq!(
        to_peer(s.handle_client(t0, c.tuple, &cd, &mut out)),
        Some(true)
    );
    let ind = send_indication(peer, b"x", false);
    assert_eq!(
        to_peer(s.handle_client(t0, c.tuple, &ind, &mut out)),
        Some(true)
    );
}

#[test]
fn send_indication_dont_fragment_marks_only_its_datagram() {
    let t0 = Instant::now();
    let mut s = server(t0, ServerConfig::default());
    let mut c = Client::new(tuple(4000), "alice", "wonderland");
    relayed(&c.call(&mut s, t0, ALLOCATE, vec![udp()]));
    let peer: SocketAddr = "11.0.0.44:7000".parse().unwrap();
    let bind = vec![
        ChannelNumber::new(0x4001).into(),
        peer_attr("11.0.0.44:7000"),
    ];
    let r = c.call(&mut s, t0, CHANNEL_BIND, bind);
    assert_eq!(r.class(), MessageClass::SuccessResponse);
    let mut out = Vec::new();
    for df in [true, false, true] {
        let ind = send_indication(peer, b"probe", df);
        assert_eq!(
            to_peer(s.handle_client(t0, c.tuple, &ind, &mut out)),
            Some(df)
        );
        assert_eq!(out, b"probe");
    }
    let mut cd = Vec::new();
    wire::write_channel_data(&mut cd, 0x4001, b"media", false);
    assert_eq!(
        to_peer(s.handle_client(t0, c.tuple, &cd, &mut out)),
        Some(false)
    );
}

#[test]
fn without_df_support_allocate_with_dont_fragment_gets_420() {
    let t0 = Instant::now();
    let cfg = ServerConfig {
        dont_fragment: false,
        ..Default::default()
    };
    let mut s = server(t0, cfg);
    let msg = StunMessageBuilder::new(ALLOCATE, MessageClass::Request)
        .with_attribute(udp())
        .with_attribute(DontFragment::default())
        .build();
    let r = decode(&send_raw(&mut s, t0, tuple(4000), &encode(&msg)));
    assert_eq!(code(&r), Some(420));
    let unknown = r.get::<UnknownAttributes>().unwrap();
    let listed: Vec<u16> = unknown
        .as_unknown_attributes()
        .unwrap()
        .iter()
        .copied()
        .collect();
    assert_eq!(listed, vec![wire::ATTR_DONT_FRAGMENT]);
    // Without the attribute the Allocate proceeds (to the credentials challenge).
    let plain = StunMessageBuilder::new(ALLOCATE, MessageClass::Request)
        .with_attribute(udp())
        .build();
    let r = decode(&send_raw(&mut s, t0, tuple(4000), &encode(&plain)));
    assert_eq!(code(&r), Some(401));
    // Send indications asking for DF are relayed without it (the server cannot set it).
    let mut c = Client::new(tuple(4001), "alice", "wonderland");
    relayed(&c.call(&mut s, t0, ALLOCATE, vec![udp()]));
    let r = c.call(
        &mut s,
        t0,
        CREATE_PERMMISSION,
        vec![peer_attr("11.0.0.44:1")],
    );
    assert_eq!(r.class(), MessageClass::SuccessResponse);
    let ind = send_indication("11.0.0.44:1".parse().unwrap(), b"x", true);
    let mut out = Vec::new();
    assert_eq!(
        to_peer(s.handle_client(t0, c.tuple, &ind, &mut out)),
        Some(false)
    );
}

fn encode(msg: &StunMessage) -> Vec<u8> {
    let mut buf = vec![0u8; 1500];
    let n = MessageEncoderBuilder::default()
        .build()
        .encode(&mut buf, msg)
        .unwrap();
    buf.truncate(n);
    buf
}

fn decode(raw: &[u8]) -> StunMessage {
    MessageDecoderBuilder::default()
        .build()
        .decode(raw)
        .unwrap()
        .0
}

/// A TURN client over a real UDP socket on loopback.
struct UdpClient {
    socket: UdpSocket,
    server: SocketAddr,
    key: HMACKey,
    nonce: Option<String>,
}

impl UdpClient {
    fn new(server: SocketAddr) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let key = HMACKey::new_long_term(
            "alice",
            REALM,
            "wonderland",
            Algorithm::from(AlgorithmId::MD5),
        )
        .unwrap();
        Self {
            socket,
            server,
            key,
            nonce: None,
        }
    }

    fn exchange(&self, msg: &StunMessage) -> StunMessage {
        self.socket.send_to(&encode(msg), self.server).unwrap();
        let mut buf = [0u8; 1500];
        let n = self.socket.recv(&mut buf).expect("a response");
        decode(&buf[..n])
    }

    /// Sends a request with credentials (fetching a nonce first); returns the answer.
    fn call(&mut self, method: MessageMethod, attrs: Vec<StunAttribute>) -> StunMessage {
        let build = |nonce: Option<&str>| {
            let mut b = StunMessageBuilder::new(method, MessageClass::Request)
                .with_transaction_id(TransactionId::default());
            for a in &attrs {
                b = b.with_attribute(a.clone());
            }
            if let Some(nonce) = nonce {
                b = b
                    .with_attribute(UserName::new("alice").unwrap())
                    .with_attribute(Realm::new(REALM).unwrap())
                    .with_attribute(Nonce::new(nonce).unwrap())
                    .with_attribute(MessageIntegrity::new(self.key.clone()));
            }
            b.build()
        };
        if self.nonce.is_none() {
            let r = self.exchange(&build(None));
            assert_eq!(code(&r), Some(401));
            let nonce = r.get::<Nonce>().unwrap().as_nonce().unwrap();
            self.nonce = Some(nonce.as_str().to_owned());
        }
        let r = self.exchange(&build(self.nonce.as_deref()));
        assert_eq!(r.class(), MessageClass::SuccessResponse, "{:?}", code(&r));
        r
    }

    fn send(&self, peer: SocketAddr, data: &[u8], df: bool) {
        let ind = send_indication(peer, data, df);
        self.socket.send_to(&ind, self.server).unwrap();
    }
}

/// A peer on loopback that checks each relayed datagram arrives.
struct Peer(UdpSocket);

impl Peer {
    fn on(ip: &str) -> Option<Self> {
        let socket = UdpSocket::bind((ip, 0)).ok()?;
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Some(Self(socket))
    }

    fn addr(&self) -> SocketAddr {
        self.0.local_addr().unwrap()
    }

    fn expect(&self, data: &[u8]) {
        let mut buf = [0u8; 1500];
        let n = self.0.recv(&mut buf).expect("the relayed datagram");
        assert_eq!(&buf[..n], data);
    }
}

async fn start(v6: bool) -> (TurnService, CancellationToken) {
    let mut credentials = Credentials::new(REALM);
    credentials.add_user("alice", "wonderland").unwrap();
    let opts = TurnOptions {
        listen_udp: vec!["127.0.0.1:0".parse().unwrap()],
        listen_tcp: vec![],
        listen_tls: vec![],
        tls: None,
        relay_ip: "127.0.0.1".parse().unwrap(),
        external_ip: None,
        relay_ip_v6: v6.then(|| "::1".parse().unwrap()),
        // Above the usual ephemeral range (32768–60999), where the test peers bind.
        ports: (61_000, 61_999),
        server: ServerConfig::default(),
        credentials,
        policy: PeerPolicy {
            allow_loopback: true,
            ..Default::default()
        },
        threads: 1,
        max_stream_connections: 10,
        max_stream_connections_per_ip: 10,
    };
    let shutdown = CancellationToken::new();
    let service = TurnService::start(opts, shutdown.clone()).await.unwrap();
    (service, shutdown)
}

/// The IPv4 relay socket's `IP_MTU_DISCOVER`.
fn ipv4_mode(service: &TurnService, relay: SocketAddr) -> Ipv4PathMtuDiscovery {
    let relays = service.shards()[0].relays.read();
    ip_mtu_discover(&relays.get(&relay).expect("a live relay socket").socket).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn relay_sockets_get_df_as_allocations_and_indications_ask() {
    let (service, shutdown) = start(false).await;
    let server = service.udp_addrs[0];
    let peer = Peer::on("127.0.0.1").unwrap();
    let permit = || vec![peer_attr(&peer.addr().to_string())];

    // Allocate with DONT-FRAGMENT: the relay sends with DF (IP_PMTUDISC_DO).
    let mut with = UdpClient::new(server);
    let relay = relayed(&with.call(ALLOCATE, vec![udp(), DontFragment::default().into()]));
    with.call(CREATE_PERMMISSION, permit());
    with.send(peer.addr(), b"one", false);
    peer.expect(b"one");
    assert_eq!(ipv4_mode(&service, relay), Ipv4PathMtuDiscovery::DO);

    // Allocate without it: DF 0 (IP_PMTUDISC_DONT), except for a Send indication that
    // asks for DF, and back after it.
    let mut without = UdpClient::new(server);
    let relay = relayed(&without.call(ALLOCATE, vec![udp()]));
    without.call(CREATE_PERMMISSION, permit());
    for (i, df) in [false, true, false].into_iter().enumerate() {
        let data = format!("datagram {i}");
        without.send(peer.addr(), data.as_bytes(), df);
        peer.expect(data.as_bytes());
        let expected = if df {
            Ipv4PathMtuDiscovery::DO
        } else {
            Ipv4PathMtuDiscovery::DONT
        };
        assert_eq!(ipv4_mode(&service, relay), expected, "after datagram {i}");
    }
    shutdown.cancel();
    service.stopped().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn ipv6_relay_stops_fragmenting_at_the_source_when_asked() {
    // Hosts without IPv6 loopback have nothing to test.
    let Some(peer) = Peer::on("::1") else {
        return;
    };
    let (service, shutdown) = start(true).await;
    let server = service.udp_addrs[0];
    let mut client = UdpClient::new(server);
    let family = RequestedAddressFamily::new(AddressFamily::IPv6).into();
    let relay = relayed(&client.call(ALLOCATE, vec![udp(), family]));
    assert!(relay.is_ipv6());
    client.call(
        CREATE_PERMMISSION,
        vec![peer_attr(&peer.addr().to_string())],
    );
    let mode = |service: &TurnService| {
        let relays = service.shards()[0].relays.read();
        ipv6_mtu_discover(&relays.get(&relay).expect("a live relay socket").socket).unwrap()
    };
    for (i, df) in [true, false].into_iter().enumerate() {
        let data = format!("v6 datagram {i}");
        client.send(peer.addr(), data.as_bytes(), df);
        peer.expect(data.as_bytes());
        let expected = if df {
            Ipv6PathMtuDiscovery::DO
        } else {
            Ipv6PathMtuDiscovery::WANT
        };
        assert_eq!(mode(&service), expected, "after datagram {i}");
    }
    shutdown.cancel();
    service.stopped().await;
}
