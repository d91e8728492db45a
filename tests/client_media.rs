//! The native client SDK's control of what the SFU forwards: a subscriber caps a
//! received camera by quality and picture size (`MediaSession::set_limits`) and pins
//! participants for "last N" (`MediaSession::pin`), the SFU
//! records it (its admin API shows the limits per subscription), lifts it again, and
//! refuses limits that are out of range or name a track the session does not receive.
//! A moderator mutes a participant's microphone through the admin API and the SFU stops
//! forwarding it. And the SDK sends transport-wide feedback, so the SFU estimates the
//! bandwidth toward it instead of assuming one: behind a slow link a camera is paused
//! for it.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{API_SECRET, Server, token};
use huddle_bench::shim::{ImpairmentConfig, Loss, Relay};
use huddle_client::media::{
    MediaEvent, MediaOptions, MediaSession, Quality, TrackKind, TrackLimits, VideoOptions,
};
use huddle_client::{Client, ClientError, Config, Event, ParticipantQuality};
use huddle_media::codec::i420::I420Frame;
use huddle_media::quality::signal::{moving_pattern, speech_like};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const ROOM: &str = "limits";

/// Pushes a client got: `track_muted` as (sid, track, kind, muted), and
/// `connection_quality` entries in the order they came.
#[derive(Default)]
struct Pushed {
    muted: Vec<(String, String, String, bool)>,
    quality: Vec<ParticipantQuality>,
}

type Pushes = Arc<Mutex<Pushed>>;

async fn join(
    server: &Server,
    identity: &str,
    video: bool,
    sfu_address: Option<std::net::SocketAddr>,
) -> (Client, MediaSession, mpsc::Receiver<MediaEvent>, Pushes) {
    let opts = MediaOptions {
        video: video.then(VideoOptions::default),
        bind_ip: "127.0.0.1".parse().unwrap(),
        sfu_address,
        ..MediaOptions::default()
    };
    join_opts(server, identity, opts).await
}

/// [`join`] with the media options given.
async fn join_opts(
    server: &Server,
    identity: &str,
    opts: MediaOptions,
) -> (Client, MediaSession, mpsc::Receiver<MediaEvent>, Pushes) {
    let config = Config::new(format!("ws://{}/v1/ws", server.addr), token(identity, ROOM));
    let (client, mut signalling) = Client::connect(config).await.expect("connects");
    let pushes = Pushes::default();
    let seen = pushes.clone();
    tokio::spawn(async move {
        while let Some(ev) = signalling.recv().await {
            match ev {
                Event::TrackMuted {
                    sid,
                    track,
                    kind,
                    muted,
                } => seen.lock().unwrap().muted.push((sid, track, kind, muted)),
                Event::ConnectionQuality(q) => seen.lock().unwrap().quality.extend(q),
                _ => {}
            }
        }
    });
    client.join(Some(ROOM)).await.expect("joins");
    let (session, events) = MediaSession::start(&client, opts)
        .await
        .expect("media session");
    (client, session, events, pushes)
}

/// The SFU's view of the room (admin API).
async fn media(server: &Server) -> Value {
    reqwest::Client::new()
        .get(server.http(&format!("/v1/rooms/{ROOM}/media")))
        .bearer_auth(API_SECRET)
        .send()
        .await
        .expect("admin API")
        .json()
        .await
        .expect("JSON")
}

/// A participant's entry in the admin view (`Null` if absent).
fn participant(media: &Value, sid: &str) -> Value {
    media["participants"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["sid"] == sid)
        .cloned()
        .unwrap_or(Value::Null)
}

/// The tracks `sid` publishes or receives (`list`: "published" or "subscribed") in an
/// admin API view.
fn tracks_of(media: &Value, sid: &str, list: &str) -> Vec<Value> {
    participant(media, sid)[list]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Polls the admin API (refreshed every second) until `sid` receives `track` with
/// limits `want` (`max_quality`, `max_size`), or fails after 10 s.
async fn wait_for_limits(server: &Server, sid: &str, track: &str, want: (Value, Value)) {
    let mut last = Value::Null;
    for _ in 0..100 {
        let m = media(server).await;
        let sub = tracks_of(&m, sid, "subscribed")
            .into_iter()
            .find(|t| t["track"] == track);
        if let Some(t) = sub {
            if (t["max_quality"].clone(), t["max_size"].clone()) == want {
                return;
            }
            last = t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{sid} never showed limits {want:?} on {track}; last seen {last}");
}

fn refused_as(r: Result<(), huddle_client::media::MediaError>, code: &str) {
    match r {
        Err(huddle_client::media::MediaError::Signal(ClientError::Server(e))) => {
            assert_eq!(e.code, code, "{e:?}")
        }
        other => panic!("expected the server's {code}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_caps_a_camera_by_quality_and_size_and_lifts_it() {
    let server = Server::start("[sfu]\nlisten = \"127.0.0.1:0\"\n");
    let (alice_client, alice, _, _) = join(&server, "alice", true, None).await;
    let (bob_client, bob, _, _) = join(&server, "bob", false, None).await;
    // Alice's camera, as the SFU knows it, and bob's subscription to it.
    let mut camera = None;
    for _ in 0..100 {
        let m = media(&server).await;
        camera = tracks_of(&m, alice.sid(), "published")
            .into_iter()
            .find(|t| t["kind"] == "video")
            .and_then(|t| t["track"].as_str().map(str::to_owned));
        if camera.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let camera = camera.expect("alice's camera is published");
    wait_for_limits(&server, bob.sid(), &camera, (json!("high"), Value::Null)).await;

    bob.set_limits(
        &camera,
        TrackLimits {
            max_quality: Some(Quality::Low),
            max_width: Some(320),
            max_height: Some(180),
        },
    )
    .await
    .expect("limits accepted");
    wait_for_limits(
        &server,
        bob.sid(),
        &camera,
        (json!("low"), json!({"width": 320, "height": 180})),
    )
    .await;

    // One field at a time: the other keeps its setting.
    bob.set_limits(&camera, TrackLimits::quality(Quality::Medium))
        .await
        .expect("quality accepted");
    wait_for_limits(
        &server,
        bob.sid(),
        &camera,
        (json!("medium"), json!({"width": 320, "height": 180})),
    )
    .await;
    bob.set_limits(&camera, TrackLimits::size(640, 360))
        .await
        .expect("size accepted");
    wait_for_limits(
        &server,
        bob.sid(),
        &camera,
        (json!("medium"), json!({"width": 640, "height": 360})),
    )
    .await;

    bob.set_limits(&camera, TrackLimits::NONE)
        .await
        .expect("limits lifted");
    wait_for_limits(&server, bob.sid(), &camera, (json!("high"), Value::Null)).await;

    // Pinning (for "last N"): alice, yes; someone not in the session, or five, no.
    bob.pin(&[alice.sid()]).await.expect("pin accepted");
    refused_as(bob.pin(&["S_nobody"]).await, "not_found");
    refused_as(
        bob.pin(&[alice.sid(), "S_1", "S_2", "S_3", "S_4"]).await,
        "invalid_message",
    );
    bob.pin(&[]).await.expect("unpinned");

    // Out of range, or a track bob does not receive (his own has none; alice's
    // camera is not sent back to her).
    refused_as(
        bob.set_limits(&camera, TrackLimits::size(20_000, 100))
            .await,
        "invalid_message",
    );
    refused_as(
        alice.set_limits(&camera, TrackLimits::size(320, 180)).await,
        "not_found",
    );
    // The refused requests changed nothing.
    wait_for_limits(&server, bob.sid(), &camera, (json!("high"), Value::Null)).await;

    for (client, session) in [(alice_client, alice), (bob_client, bob)] {
        session.leave().await.expect("leaves");
        client.close().await;
    }
}

/// A free UDP port on loopback for the SFU (the test must know where to relay to).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port()
}

/// Feeds `session`'s camera the moving test pattern at 25 fps (about 300 kb/s at the
/// default 320x240); the returned value follows the encoder's target bitrate.
fn start_camera(session: &mut MediaSession) -> Arc<AtomicU32> {
    let mut camera = session.take_video().expect("a camera");
    let target = Arc::new(AtomicU32::new(camera.stats().target_bitrate_bps));
    let shown = target.clone();
    tokio::spawn(async move {
        let mut picture = I420Frame::new(320, 240).expect("picture");
        let mut tick = tokio::time::interval(Duration::from_millis(40));
        for index in 0.. {
            tick.tick().await;
            moving_pattern(&mut picture, index);
            if camera
                .send(&picture, std::time::Instant::now())
                .await
                .is_err()
            {
                return;
            }
            shown.store(camera.stats().target_bitrate_bps, Ordering::Relaxed);
        }
    });
    target
}

/// A relay toward the SFU on `port` that carries `bytes_per_sec` toward the client.
async fn slow_link(port: u16, bytes_per_sec: u64) -> Relay {
    impaired_link(
        port,
        ImpairmentConfig {
            bandwidth: bytes_per_sec,
            ..ImpairmentConfig::default()
        },
    )
    .await
}

/// A relay toward the SFU on `port` that impairs what goes toward the client.
async fn impaired_link(port: u16, toward_client: ImpairmentConfig) -> Relay {
    Relay::start(
        ([127, 0, 0, 1], port).into(),
        ImpairmentConfig::default(),
        toward_client,
    )
    .await
    .expect("relay")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_subscriber_on_a_slow_link_is_estimated_from_its_feedback_and_paused() {
    let port = free_udp_port();
    let server = Server::start(&format!("[sfu]\nlisten = \"127.0.0.1:{port}\"\n"));
    // Alice's camera sends about 300 kb/s to bob, on a 120 kb/s link, and carol, on
    // loopback. (With two subscribers alice is not asked to send less for bob.)
    let (_alice_client, mut alice, _, _) = join(&server, "alice", true, None).await;
    start_camera(&mut alice);
    let (_carol_client, _carol, _, _) = join(&server, "carol", false, None).await;
    let relay = slow_link(port, 15_000).await;
    let (_bob_client, bob, mut bob_events, _) =
        join(&server, "bob", false, Some(relay.local_addr())).await;
    // Only bob's transport-wide feedback can tell the SFU: its estimate falls from the
    // 1 Mbit/s it starts with, and alice's camera is paused for bob (it has not fitted
    // for 3 s). (Without feedback the SFU has no estimate, keeps sending the camera,
    // and the link's queue drops it: thousands of NACKs and keyframe requests.)
    let mut last = Value::Null;
    for _ in 0..300 {
        let m = media(&server).await;
        let me = participant(&m, bob.sid());
        let estimate = me["bandwidth_estimate_bps"].as_u64();
        let camera_paused = tracks_of(&m, bob.sid(), "subscribed")
            .iter()
            .any(|t| t["publisher"] == alice.sid() && t["paused"] == true);
        if estimate.is_some_and(|e| e < 400_000) && camera_paused {
            // And bob's app is told.
            let told = tokio::time::timeout(Duration::from_secs(5), async {
                while let Some(ev) = bob_events.recv().await {
                    if let MediaEvent::TrackPaused { paused, reason, .. } = ev {
                        return Some((paused, reason));
                    }
                }
                None
            })
            .await;
            assert_eq!(told, Ok(Some((true, "bandwidth".to_string()))));
            return;
        }
        last = me;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("bob's estimate never fell or alice's camera never paused for him in 30 s: {last}");
}

/// One-to-one: the SFU tells alice (REMB) what bob's slow link has room for, and the
/// SDK's encoder follows it, so bob gets alice's camera at a rate his link carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_one_to_one_call_the_sdk_camera_follows_the_other_side_s_link() {
    let port = free_udp_port();
    let server = Server::start(&format!("[sfu]\nlisten = \"127.0.0.1:{port}\"\n"));
    let (_alice_client, mut alice, _, _) = join(&server, "alice", true, None).await;
    let target = start_camera(&mut alice);
    assert_eq!(target.load(Ordering::Relaxed), 300_000);
    // 200 kb/s toward bob.
    let relay = slow_link(port, 25_000).await;
    let (_bob_client, bob, _, _) = join(&server, "bob", false, Some(relay.local_addr())).await;
    // Settled: alice's encoder aims below what bob's link carries, the SFU measures her
    // camera below it, and the camera flows to bob (not paused, frames forwarded).
    let mut last = Value::Null;
    let mut forwarded = Vec::new();
    for _ in 0..450 {
        let m = media(&server).await;
        let camera = tracks_of(&m, alice.sid(), "published")
            .into_iter()
            .find(|t| t["kind"] == "video")
            .unwrap_or(Value::Null);
        let flowing = tracks_of(&m, bob.sid(), "subscribed")
            .iter()
            .any(|t| t["track"] == camera["track"] && t["paused"] == false);
        forwarded.push(
            participant(&m, bob.sid())["frames_forwarded"]
                .as_u64()
                .unwrap_or(0),
        );
        // 3 s of the last 30 polls (100 ms apart): at least 30 frames of 75 sent.
        let recent = forwarded.len() >= 30
            && forwarded[forwarded.len() - 1] >= forwarded[forwarded.len() - 30] + 30;
        let rate = camera["bitrate_bps"].as_u64().unwrap_or(u64::MAX);
        let aim = target.load(Ordering::Relaxed);
        if aim < 200_000 && rate < 200_000 && flowing && recent {
            return;
        }
        last = json!({"encoder_target": aim, "camera": camera, "bob": participant(&m, bob.sid())});
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("alice's camera did not settle under bob's link in 45 s: {last}");
}

/// `POST /v1/rooms/{ROOM}/participants/{identity}/mute` with `body` (with the API secret
/// unless `anonymous`): the status and the JSON answer.
async fn mute(server: &Server, identity: &str, body: Value, anonymous: bool) -> (u16, Value) {
    let url = server.http(&format!("/v1/rooms/{ROOM}/participants/{identity}/mute"));
    let mut req = reqwest::Client::new().post(url).json(&body);
    if !anonymous {
        req = req.bearer_auth(API_SECRET);
    }
    let res = req.send().await.expect("admin API");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// A moderator mutes a participant's microphone through the admin API: the SFU stops
/// forwarding it whatever the client sends, the room is told (`track_muted`), the admin
/// view shows it, and unmuting lets it through again. Bad requests are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderator_mutes_and_unmutes_a_participant_s_microphone() {
    let server = Server::start("[sfu]\nlisten = \"127.0.0.1:0\"\n");
    let (_alice_client, mut alice, _, _) = join(&server, "alice", false, None).await;
    let (_bob_client, _bob, mut bob_events, bob_pushes) = join(&server, "bob", false, None).await;
    let microphone = alice.take_audio().expect("a microphone");
    tokio::spawn(microphone.send_looped(speech_like(4.0, 48_000, 16_000, 1)));
    // Alice's microphone as bob receives it.
    let heard = loop {
        match tokio::time::timeout(Duration::from_secs(15), bob_events.recv()).await {
            Ok(Some(MediaEvent::Track(t)))
                if t.kind == TrackKind::Audio && t.publisher == alice.sid() =>
            {
                break t;
            }
            Ok(Some(_)) => {}
            other => panic!("bob never got alice's microphone: {:?}", other.is_ok()),
        }
    };
    let packets = || heard.stats().packets_received;
    let grows = |from: u64| async move {
        for _ in 0..100 {
            if packets() >= from + 20 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(grows(0).await, "alice's audio never flowed");

    // Refused: no credentials, someone not in the room, an unknown kind.
    let muted = json!({"kind": "audio", "muted": true});
    assert_eq!(mute(&server, "alice", muted.clone(), true).await.0, 401);
    assert_eq!(mute(&server, "nobody", muted.clone(), false).await.0, 404);
    let loud = json!({"kind": "loud", "muted": true});
    assert_eq!(mute(&server, "alice", loud, false).await.0, 400);

    // Muted: nothing of hers reaches bob, and the room is told.
    let (status, answer) = mute(&server, "alice", muted.clone(), false).await;
    assert_eq!(status, 200, "{answer}");
    let track = answer["tracks"][0]
        .as_str()
        .expect("her microphone")
        .to_owned();
    assert_eq!(
        answer["tracks"].as_array().map(Vec::len),
        Some(1),
        "{answer}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = packets();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(packets(), before, "muted audio still arrives");
    let told = (
        alice.sid().to_owned(),
        track.clone(),
        "audio".to_owned(),
        true,
    );
    let pushes = bob_pushes.lock().unwrap().muted.clone();
    assert_eq!(pushes, [told], "bob is told, once");
    let mut shown = false;
    for _ in 0..30 {
        let view = media(&server).await;
        shown = tracks_of(&view, alice.sid(), "published")
            .iter()
            .any(|t| t["track"] == track.as_str() && t["muted"] == true);
        if shown {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(shown, "the admin view does not show the mute");
    // Muting again changes nothing.
    let (status, answer) = mute(&server, "alice", muted, false).await;
    assert_eq!((status, answer["tracks"].clone()), (200, json!([])));

    // Unmuted: she is heard again.
    let (status, answer) = mute(&server, "alice", json!({"muted": false}), false).await;
    assert_eq!((status, answer["tracks"].clone()), (200, json!([track])));
    assert!(grows(packets()).await, "unmuted audio does not flow");
}

/// Waits up to 15 s for `publisher`'s microphone among a session's received tracks.
/// The kind of a track of `publisher` that arrives within `wait` (the SDK shows a track
/// at its first packet), if one does.
async fn track_from(
    events: &mut mpsc::Receiver<MediaEvent>,
    publisher: &str,
    wait: Duration,
) -> Option<TrackKind> {
    tokio::time::timeout(wait, async {
        loop {
            match events.recv().await {
                Some(MediaEvent::Track(t)) if t.publisher == publisher => return t.kind,
                Some(_) => {}
                None => std::future::pending().await,
            }
        }
    })
    .await
    .ok()
}

/// Whether `track` has received `packets` within 10 s.
async fn receives(track: &huddle_client::media::RemoteTrack, packets: u64) -> bool {
    for _ in 0..100 {
        if track.stats().packets_received >= packets {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn audio_of(
    events: &mut mpsc::Receiver<MediaEvent>,
    publisher: &str,
) -> huddle_client::media::RemoteTrack {
    loop {
        match tokio::time::timeout(Duration::from_secs(15), events.recv()).await {
            Ok(Some(MediaEvent::Track(t)))
                if t.kind == TrackKind::Audio && t.publisher == publisher =>
            {
                return t;
            }
            Ok(Some(_)) => {}
            other => panic!(
                "{publisher}'s microphone never arrived: {:?}",
                other.is_ok()
            ),
        }
    }
}

/// A moderator's mute outlasts the media session it was made in: made while the
/// participant is in the room without media, it applies when its media session starts;
/// leaving that session and starting another (new tracks) does not undo it; unmuting
/// does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderators_mute_applies_to_media_sessions_started_later() {
    let server = Server::start("[sfu]\nlisten = \"127.0.0.1:0\"\n");
    let (_bob_client, _bob, mut bob_events, bob_pushes) = join(&server, "bob", false, None).await;
    let config = Config::new(format!("ws://{}/v1/ws", server.addr), token("alice", ROOM));
    let (alice_client, _alice_signalling) = Client::connect(config).await.expect("connects");
    alice_client.join(Some(ROOM)).await.expect("joins");

    // In the room, no media yet: recorded, nothing to change now.
    let muted = json!({"kind": "audio", "muted": true});
    let (status, answer) = mute(&server, "alice", muted, false).await;
    assert_eq!((status, answer["tracks"].clone()), (200, json!([])));

    let opts = || MediaOptions {
        bind_ip: "127.0.0.1".parse().unwrap(),
        ..MediaOptions::default()
    };
    for round in 0..2 {
        let earlier = bob_pushes.lock().unwrap().muted.len();
        let (mut alice, _) = MediaSession::start(&alice_client, opts())
            .await
            .expect("media session");
        let microphone = alice.take_audio().expect("a microphone");
        let sending = tokio::spawn(microphone.send_looped(speech_like(4.0, 48_000, 16_000, 1)));
        // Bob is told her new track is muted...
        let sid = alice.sid().to_owned();
        let mut track = None;
        for _ in 0..100 {
            track = bob_pushes
                .lock()
                .unwrap()
                .muted
                .iter()
                .skip(earlier)
                .find(|(s, _, kind, muted)| *s == sid && kind == "audio" && *muted)
                .map(|(_, t, _, _)| t.clone());
            if track.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let track = track.unwrap_or_else(|| panic!("round {round}: no track_muted for {sid}"));
        // ... and nothing of it reaches him (his SDK shows a track at its first packet).
        let quiet = track_from(&mut bob_events, &sid, Duration::from_millis(1500)).await;
        assert!(quiet.is_none(), "round {round}: her {quiet:?} arrives");
        if round == 0 {
            sending.abort();
            alice.leave().await.expect("leaves the media session");
            continue;
        }
        // Unmuted: heard.
        let (status, answer) = mute(&server, "alice", json!({"muted": false}), false).await;
        assert_eq!((status, answer["tracks"].clone()), (200, json!([track])));
        let heard = audio_of(&mut bob_events, &sid).await;
        assert!(receives(&heard, 20).await, "unmuted audio does not flow");
    }
}

/// With `sfu.max_publishers_per_room = 1`, the second member to publish is told its
/// microphone is refused (`media_track_refused`, through the SDK) and only receives:
/// it hears the first, the first hears nothing of it, and the admin view shows one
/// published track.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_beyond_the_room_s_publishers_is_told_and_only_receives() {
    let server = Server::start("[sfu]\nlisten = \"127.0.0.1:0\"\nmax_publishers_per_room = 1\n");
    let (_a, mut alice, mut alice_events, _) = join(&server, "alice", false, None).await;
    let sending = tokio::spawn(
        alice
            .take_audio()
            .expect("a microphone")
            .send_looped(speech_like(4.0, 48_000, 16_000, 1)),
    );
    let alice_sid = alice.sid().to_owned();
    let (_b, mut bob, mut bob_events, _) = join(&server, "bob", false, None).await;
    let bob_sending = tokio::spawn(
        bob.take_audio()
            .expect("a microphone")
            .send_looped(speech_like(4.0, 48_000, 16_000, 2)),
    );
    let refused = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match bob_events.recv().await {
                Some(MediaEvent::TrackRefused { kind, code, .. }) => return (kind, code),
                Some(_) => {}
                None => std::future::pending().await,
            }
        }
    })
    .await
    .expect("bob is told");
    assert_eq!(refused, ("audio".into(), "too_many_publishers".into()));
    // Bob hears Alice...
    let heard = audio_of(&mut bob_events, &alice_sid).await;
    assert!(
        receives(&heard, 20).await,
        "alice's audio does not reach bob"
    );
    // ... and Alice gets no track of his.
    let bob_sid = bob.sid().to_owned();
    let quiet = track_from(&mut alice_events, &bob_sid, Duration::from_millis(1500)).await;
    assert!(quiet.is_none(), "bob's {quiet:?} reaches alice");
    let view = media(&server).await;
    let published: Vec<u64> = view["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["tracks_published"].as_u64().unwrap())
        .collect();
    assert_eq!(published.iter().sum::<u64>(), 1, "{view}");
    sending.abort();
    bob_sending.abort();
}

/// The latest level of each member in a client's `connection_quality` pushes.
fn levels(pushes: &Pushes) -> HashMap<String, String> {
    let mut latest = HashMap::new();
    for q in &pushes.lock().unwrap().quality {
        latest.insert(q.sid.clone(), q.quality.clone());
    }
    latest
}

/// Connection quality: the SFU scores each member's link, and every member is told the
/// others' levels. Bob's and carol's links lose 15% of what the SFU sends them; alice's
/// is clean. Bob takes plain Opus: everyone hears that his link is poor. Carol takes
/// redundant audio (RED, the SDK's default), which repairs a lost packet whose next one
/// arrives: her link shows the same loss, but half of it is scored, and her score is
/// above bob's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_told_each_other_s_connection_quality_and_a_lossy_link_shows() {
    let port = free_udp_port();
    let server = Server::start(&format!("[sfu]\nlisten = \"127.0.0.1:{port}\"\n"));
    let (_alice_client, mut alice, _, alice_pushes) = join(&server, "alice", false, None).await;
    let lossy_relay = |seed| {
        impaired_link(
            port,
            ImpairmentConfig {
                loss: Loss::Random(0.15),
                seed,
                ..ImpairmentConfig::default()
            },
        )
    };
    let (relay, carol_relay) = (lossy_relay(7).await, lossy_relay(8).await);
    let lossy_opts = |relay: &Relay, red| MediaOptions {
        bind_ip: "127.0.0.1".parse().unwrap(),
        sfu_address: Some(relay.local_addr()),
        red,
        ..MediaOptions::default()
    };
    let (_bob_client, mut bob, _, bob_pushes) =
        join_opts(&server, "bob", lossy_opts(&relay, false)).await;
    let (_carol_client, mut carol, _, _) =
        join_opts(&server, "carol", lossy_opts(&carol_relay, true)).await;
    for session in [&mut alice, &mut bob, &mut carol] {
        let microphone = session.take_audio().expect("a microphone");
        tokio::spawn(microphone.send_looped(speech_like(4.0, 48_000, 16_000, 1)));
    }
    // Carol's level is near a border (below); that she is told of is enough here.
    let want: HashMap<String, String> = [
        (alice.sid().to_owned(), "excellent".to_owned()),
        (bob.sid().to_owned(), "poor".to_owned()),
    ]
    .into();
    let as_wanted = |pushes: &Pushes| {
        let got = levels(pushes);
        got.contains_key(carol.sid()) && want.iter().all(|(sid, l)| got.get(sid) == Some(l))
    };
    let mut told = false;
    for _ in 0..300 {
        if as_wanted(&alice_pushes) && as_wanted(&bob_pushes) {
            told = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        told,
        "alice was told {:?}, bob {:?}; want {want:?}",
        levels(&alice_pushes),
        levels(&bob_pushes)
    );
    // Each entry names its member.
    for q in &bob_pushes.lock().unwrap().quality {
        let identity = [(&alice, "alice"), (&bob, "bob"), (&carol, "carol")]
            .into_iter()
            .find(|(s, _)| s.sid() == q.sid)
            .map_or("?", |(_, name)| name);
        assert_eq!(q.identity, identity, "{q:?}");
        assert!((1.0..=4.5).contains(&q.score), "{q:?}");
    }
    // Bob's downlink loss as the SFU reads it from his receiver reports (smoothed over
    // a few seconds) against what the relay dropped (15% drawn; over a few hundred
    // datagrams the draw itself varies by points).
    let mut last = (Value::Null, 0.0);
    let mut close = false;
    for _ in 0..100 {
        let view = media(&server).await;
        let bob_q = participant(&view, bob.sid())["quality"].clone();
        let (_, toward_bob) = relay.stats();
        let dropped = 100.0 * toward_bob.lost as f64 / toward_bob.received.max(1) as f64;
        let down = bob_q["loss_down_percent"].as_f64().unwrap_or(-100.0);
        last = (bob_q.clone(), dropped);
        if (down - dropped).abs() < 4.0 && bob_q["level"] == "poor" {
            close = true;
            assert!(
                bob_q["loss_up_percent"].as_f64().unwrap_or(1.0) < 2.0,
                "{bob_q}"
            );
            // Plain Opus: what is lost is scored.
            assert_eq!(bob_q["loss_scored_percent"], bob_q["loss_down_percent"]);
            let alice_q = participant(&view, alice.sid())["quality"].clone();
            assert_eq!(alice_q["level"], "excellent", "{alice_q}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        close,
        "bob's quality {} against {:.1}% dropped",
        last.0, last.1
    );
    // Carol's link loses as much, and RED repairs part of it: the loss scored is half
    // her link's (bursts of two assumed, `huddle_sfu::quality::RED_NEXT_LOST`), and
    // her score is above bob's.
    let mut last = Value::Null;
    let mut repaired = false;
    for _ in 0..100 {
        let view = media(&server).await;
        let carol_q = participant(&view, carol.sid())["quality"].clone();
        let bob_q = participant(&view, bob.sid())["quality"].clone();
        let down = carol_q["loss_down_percent"].as_f64().unwrap_or(0.0);
        let scored = carol_q["loss_scored_percent"].as_f64().unwrap_or(100.0);
        let score = |q: &Value| q["score"].as_f64().unwrap_or(f64::NAN);
        last = json!({"carol": carol_q, "bob": bob_q});
        if down > 8.0 && (scored - down / 2.0).abs() < 0.5 && score(&carol_q) > score(&bob_q) + 0.2
        {
            repaired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(repaired, "quality {last}");
}
