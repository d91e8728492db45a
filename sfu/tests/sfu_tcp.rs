//! ICE over TCP (RFC 6544): a client without UDP reaches the SFU through its passive
//! TCP candidate and calls a client on UDP; the connection reaches its peer whichever
//! shard accepted it; it is closed when the participant leaves; and a connection that
//! starts with anything but a frame a peer accepts is closed and counted, as is one over
//! an address's share of the connections not yet placed.

mod common;

use std::time::Duration;

use common::{Call, VideoCodec, eventually};
use huddle_sfu::{ICE_TCP_MAX_WAITING_PER_ADDRESS, SfuConfig, TrackKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const WAIT: Duration = Duration::from_secs(15);

fn with_tcp(shards: usize) -> SfuConfig {
    SfuConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        tcp_bind: Some("127.0.0.1:0".parse().unwrap()),
        shards,
        ..SfuConfig::default()
    }
}

fn receives(call: &Call, who: &str, from: &str) -> bool {
    call.client(who).frames_from(from, TrackKind::Audio) >= 10
        && call.client(who).frames_from(from, TrackKind::Video) >= 5
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_udp_calls_over_ice_tcp() {
    let mut call = Call::start_with(with_tcp(1)).await;
    call.tcp = true;
    call.join("room", "alice", VideoCodec::H264).await;
    call.tcp = false;
    call.join("room", "bob", VideoCodec::Vp8).await;
    // The SFU offers its TCP candidate below the UDP one (RFC 8445 type preference).
    let answer = &call.answers["alice"];
    let prio = |proto: &str| -> u32 {
        answer
            .lines()
            .find(|l| l.starts_with("a=candidate:") && l.split(' ').nth(2) == Some(proto))
            .and_then(|l| l.split(' ').nth(3)?.parse().ok())
            .unwrap_or_else(|| panic!("no {proto} candidate: {answer}"))
    };
    assert!(prio("tcp") < prio("udp"), "{answer}");
    assert!(answer.contains(" tcptype passive"), "{answer}");

    let ok = eventually(WAIT, || {
        receives(&call, "alice", "bob") && receives(&call, "bob", "alice")
    })
    .await;
    let m = call.sfu.metrics();
    assert!(
        ok,
        "media did not flow both ways; stats: {:#?}",
        call.sfu.stats().await.unwrap()
    );
    assert_eq!(m.tcp_connections.get(), 1);
    assert_eq!(m.tcp_rejected.get(), 0);

    // Leaving closes the connection (the client reads its end) and frees it.
    call.sfu.leave("alice").await.unwrap();
    let alice = call.client("alice").seen.clone();
    assert!(eventually(WAIT, || alice.lock().unwrap().tcp_closed).await);
    assert_eq!(m.tcp_connections.get(), 0);
    assert_eq!(call.sfu.stats().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_tcp_connections_reach_their_peer_on_any_shard() {
    // The kernel spreads connections over the two shards' listeners by address, and
    // places each room on a shard by its name: sixteen rooms of one make a connection
    // that lands on the wrong shard all but certain (a chance of 2^-16 that none does).
    let mut call = Call::start_with(with_tcp(2)).await;
    call.tcp = true;
    let names: Vec<String> = (0..16).map(|i| format!("p{i}")).collect();
    for name in &names {
        call.join_with(&format!("room-{name}"), name, None).await;
    }
    let seen: Vec<_> = names.iter().map(|n| call.client(n).seen.clone()).collect();
    let connected = eventually(WAIT, || seen.iter().all(|s| s.lock().unwrap().connected)).await;
    let m = call.sfu.metrics();
    let count = seen.iter().filter(|s| s.lock().unwrap().connected).count();
    assert!(
        connected,
        "{count} of 16 connected; handed off {}, rejected {}",
        m.tcp_handed_off.get(),
        m.tcp_rejected.get()
    );
    assert!(m.tcp_handed_off.get() > 0, "no connection crossed shards");
    assert_eq!(m.tcp_connections.get(), 16);
    assert_eq!(m.tcp_rejected.get(), 0);
    for name in &names {
        call.sfu.leave(name.as_str()).await.unwrap();
    }
    assert!(eventually(WAIT, || m.tcp_connections.get() == 0).await);
}

/// Whether the SFU closed `s` within [`WAIT`]: the read ends (0 bytes) or fails
/// (reset).
async fn closed(mut s: TcpStream) -> bool {
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(WAIT, s.read(&mut b)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_no_peer_accepts_is_closed_and_counted() {
    let mut call = Call::start_with(with_tcp(2)).await;
    call.tcp = true;
    call.join_with("room", "alice", None).await;
    let addr = call.sfu.tcp_addr().expect("ICE-TCP on");
    let m = call.sfu.metrics().clone();
    // A length prefix over the largest frame.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(&[0xff, 0xff, 1, 2, 3]).await.unwrap();
    assert!(closed(s).await, "oversized frame");
    // A well-framed datagram that is not STUN, DTLS, RTP or RTCP.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(&[0, 4, 0xff, 0xff, 0xff, 0xff]).await.unwrap();
    assert!(closed(s).await, "malformed first frame");
    // A STUN binding request for a ufrag nobody has (refused by both shards).
    let mut stun = vec![0x00, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
    stun.extend_from_slice(&[7u8; 12]); // transaction id
    stun.extend_from_slice(&[0x00, 0x06, 0x00, 0x08]); // USERNAME, 8 bytes
    stun.extend_from_slice(b"nope:who");
    let mut framed = (stun.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&stun);
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(&framed).await.unwrap();
    assert!(closed(s).await, "unknown ufrag");
    assert!(eventually(WAIT, || m.tcp_rejected.get() == 3).await);
    // Alice's own connection is untouched.
    let seen = call.client("alice").seen.clone();
    assert!(eventually(WAIT, || seen.lock().unwrap().connected).await);
    assert_eq!(m.tcp_connections.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_place_for_new_connections() {
    const CAP: usize = ICE_TCP_MAX_WAITING_PER_ADDRESS;
    let call = Call::start_with(with_tcp(1)).await;
    let addr = call.sfu.tcp_addr().expect("ICE-TCP on");
    let m = call.sfu.metrics().clone();
    // Connections from 127.0.0.1 that never send a frame wait for one, up to the cap...
    let mut idle = Vec::new();
    for _ in 0..CAP {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    assert!(
        eventually(WAIT, || m.tcp_connections.get() == CAP as i64).await,
        "{} waiting",
        m.tcp_connections.get()
    );
    assert_eq!(m.tcp_rejected.get(), 0);
    // ...the next from that address is closed at once (not after the first-frame
    // timeout), and counted...
    let started = std::time::Instant::now();
    let s = TcpStream::connect(&addr).await.unwrap();
    assert!(closed(s).await, "connection over the cap left open");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(eventually(WAIT, || m.tcp_rejected.get() == 1).await);
    // ...while one from another address still waits for its first frame.
    let other = TcpSocket::new_v4().unwrap();
    other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let other = other.connect(addr).await.unwrap();
    assert!(eventually(WAIT, || m.tcp_connections.get() == CAP as i64 + 1).await);
    // Once the idle ones are gone, 127.0.0.1 gets its places back.
    drop(idle);
    assert!(eventually(WAIT, || m.tcp_connections.get() == 1).await);
    let again = TcpStream::connect(&addr).await.unwrap();
    assert!(eventually(WAIT, || m.tcp_connections.get() == 2).await);
    // The idle ones count as closed before reaching a peer too.
    assert_eq!(m.tcp_rejected.get(), CAP as u64 + 1);
    drop((other, again));
}
