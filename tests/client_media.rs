//! The native client SDK's control of what the SFU forwards: a subscriber caps a
//! received camera by quality and picture size (`MediaSession::set_limits`), the SFU
//! records it (its admin API shows the limits per subscription), lifts it again, and
//! refuses limits that are out of range or name a track the session does not receive.

mod common;

use std::time::Duration;

use common::{API_SECRET, Server, token};
use huddle_client::media::{MediaOptions, MediaSession, Quality, TrackLimits, VideoOptions};
use huddle_client::{Client, ClientError, Config};
use serde_json::{Value, json};

const ROOM: &str = "limits";

async fn join(server: &Server, identity: &str, video: bool) -> (Client, MediaSession) {
    let config = Config::new(format!("ws://{}/v1/ws", server.addr), token(identity, ROOM));
    let (client, mut signalling) = Client::connect(config).await.expect("connects");
    tokio::spawn(async move { while signalling.recv().await.is_some() {} });
    client.join(Some(ROOM)).await.expect("joins");
    let opts = MediaOptions {
        video: video.then(VideoOptions::default),
        bind_ip: "127.0.0.1".parse().unwrap(),
        ..MediaOptions::default()
    };
    let (session, _events) = MediaSession::start(&client, opts)
        .await
        .expect("media session");
    (client, session)
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

/// The tracks `sid` publishes or receives (`list`: "published" or "subscribed") in an
/// admin API view.
fn tracks_of(media: &Value, sid: &str, list: &str) -> Vec<Value> {
    media["participants"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["sid"] == sid)
        .flat_map(|p| p[list].as_array().cloned().unwrap_or_default())
        .collect()
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
    let (alice_client, alice) = join(&server, "alice", true).await;
    let (bob_client, bob) = join(&server, "bob", false).await;
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
