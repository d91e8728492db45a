//! The native client SDK behind a firewall that lets no UDP through to the SFU: it
//! fetches the server's ICE servers (huddle's own TURN with time-limited credentials),
//! uses relay candidates only, and the call goes client -> huddle TURN -> SFU and back;
//! both participants hear each other, and the TURN server shows the relayed traffic.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Server, metric_sum, token};
use huddle_client::media::{MediaEvent, MediaOptions, MediaSession, RemoteMedia};
use huddle_client::{Client, Config};
use huddle_media::quality::signal::speech_like;

/// TURN on its own port and relay range, so this runs beside the other tests.
const TURN_PORT: u16 = 34795;
const RELAY_PORTS: (u16, u16) = (47000, 47999);

/// A participant: joined, publishing a speech-like signal, counting the audio frames
/// it plays of the other.
struct Person {
    client: Client,
    session: MediaSession,
    heard: Arc<AtomicU64>,
}

async fn join(server: &Server, identity: &str) -> Person {
    let config = Config::new(
        format!("ws://{}/v1/ws", server.addr),
        token(identity, "firewalled"),
    );
    let (client, mut signalling) = Client::connect(config).await.expect("connects");
    tokio::spawn(async move { while signalling.recv().await.is_some() {} });
    client.join(Some("firewalled")).await.expect("joins");
    let ice_servers = client.ice_servers().await.expect("ICE servers");
    assert!(
        ice_servers
            .iter()
            .any(|s| s.urls.iter().any(|u| u.starts_with("turn:"))
                && !s.username.is_empty()
                && !s.credential.is_empty()),
        "the server hands out its TURN with credentials: {ice_servers:?}"
    );
    let opts = MediaOptions {
        video: None,
        bind_ip: "127.0.0.1".parse().unwrap(),
        ice_servers,
        relay_only: true,
        ..MediaOptions::default()
    };
    let (mut session, mut events) = MediaSession::start(&client, opts)
        .await
        .expect("media over the relay");
    let mic = session.take_audio().expect("audio is published");
    tokio::spawn(mic.send_looped(speech_like(4.0, 48_000, 12_000, identity.len() as u64)));
    let heard = Arc::new(AtomicU64::new(0));
    let counter = heard.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let MediaEvent::Track(mut track) = ev
                && let Some(RemoteMedia::Audio(mut rx)) = track.media.take()
            {
                let counter = counter.clone();
                tokio::spawn(async move {
                    while rx.recv().await.is_some() {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        }
    });
    Person {
        client,
        session,
        heard,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_calls_through_huddle_turn_with_relay_candidates_only() {
    let server = Server::start(&format!(
        "[sfu]\nlisten = \"127.0.0.1:0\"\n\
         [turn]\nlisten_udp = [\"127.0.0.1:{TURN_PORT}\"]\nlisten_tcp = [\"127.0.0.1:{TURN_PORT}\"]\n\
         relay_ip = \"127.0.0.1\"\nmin_port = {}\nmax_port = {}\n\
         [ice]\nturn_urls = [\"turn:127.0.0.1:{TURN_PORT}?transport=udp\"]\n\
         turn_secret = \"sdk-relay-secret\"\n",
        RELAY_PORTS.0, RELAY_PORTS.1
    ));
    let alice = join(&server, "alice").await;
    let bob = join(&server, "bob").await;
    // A second of each other's speech (played in 10 ms frames), through the relays.
    let mut heard = (0, 0);
    for _ in 0..150 {
        heard = (
            alice.heard.load(Ordering::Relaxed),
            bob.heard.load(Ordering::Relaxed),
        );
        if heard.0 >= 100 && heard.1 >= 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(heard.0 >= 100 && heard.1 >= 100, "frames heard: {heard:?}");
    // The media went through huddle's TURN: both clients hold allocations, and it
    // relayed at least the packets behind what was heard (20 ms each, so 50 per
    // listener) toward the SFU and back.
    let metrics = server.metrics();
    let allocations = metric_sum(&metrics, "huddle_turn_allocations");
    assert!(allocations >= 2.0, "TURN allocations: {allocations}");
    for name in [
        "huddle_turn_packets_to_peers_total",
        "huddle_turn_packets_to_clients_total",
    ] {
        let n = metric_sum(&metrics, name);
        assert!(n >= 100.0, "{name}: {n}");
    }
    for p in [alice, bob] {
        p.session.leave().await.expect("leaves");
        p.client.close().await;
    }
}
