//! "Last N" forwarding through a real SFU on loopback: with `last_n = 1`, a subscriber
//! receives the video of only the most recent active speaker among the others (the
//! earliest joiner before anyone spoke), the audio of everyone, and a camera that comes
//! back into view resumes at a keyframe; a pinned member's camera takes the slot.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Call, VideoCodec, eventually};
use huddle_sfu::{PauseReason, RouterConfig, SfuConfig, SfuEvent, TrackKind};

const WAIT: Duration = Duration::from_secs(15);
/// -dBov of a speaking client; quiet clients send 90.
const LOUD: u8 = 20;
const QUIET: u8 = 90;

fn counts(call: &Call, who: &str, kind: TrackKind) -> [u64; 3] {
    ["a", "b", "c"].map(|p| call.client(who).frames_from(p, kind))
}

fn is_speaker(call: &Call, who: &str) -> bool {
    call.events().iter().rev().find_map(|e| match e {
        SfuEvent::ActiveSpeaker { participant, .. } => Some(participant.clone()),
        _ => None,
    }) == Some(Some(who.into()))
}

/// Frames `d` receives over 1.5 s, per publisher a, b, c: (video, audio).
async fn window(call: &Call) -> ([u64; 3], [u64; 3]) {
    // Frames already in flight when the speaker changed settle first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (v0, a0) = (
        counts(call, "d", TrackKind::Video),
        counts(call, "d", TrackKind::Audio),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (v1, a1) = (
        counts(call, "d", TrackKind::Video),
        counts(call, "d", TrackKind::Audio),
    );
    (
        [0, 1, 2].map(|i| v1[i] - v0[i]),
        [0, 1, 2].map(|i| a1[i] - a0[i]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_last_speakers_video_is_forwarded() {
    let mut call = Call::start_with(SfuConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        router: RouterConfig {
            last_n: Some(1),
            ..RouterConfig::default()
        },
        ..SfuConfig::default()
    })
    .await;
    for n in ["a", "b", "c", "d"] {
        call.join("room", n, VideoCodec::H264).await;
    }
    assert!(
        eventually(WAIT, || counts(&call, "d", TrackKind::Audio)
            .iter()
            .all(|n| *n >= 10))
        .await
    );

    // Nobody has spoken: the earliest joiner's camera.
    let (video, audio) = window(&call).await;
    assert!(
        video[0] >= 10 && video[1] == 0 && video[2] == 0,
        "{video:?}"
    );
    assert!(audio.iter().all(|n| *n >= 30), "{audio:?}");

    call.client("b").level.store(LOUD, Ordering::Relaxed);
    assert!(eventually(WAIT, || is_speaker(&call, "b")).await);
    let (video, audio) = window(&call).await;
    assert!(
        video[0] == 0 && video[1] >= 10 && video[2] == 0,
        "{video:?}"
    );
    assert!(audio.iter().all(|n| *n >= 30), "{audio:?}");

    call.client("b").level.store(QUIET, Ordering::Relaxed);
    call.client("c").level.store(LOUD, Ordering::Relaxed);
    assert!(eventually(WAIT, || is_speaker(&call, "c")).await);
    let (video, audio) = window(&call).await;
    assert!(
        video[0] == 0 && video[1] == 0 && video[2] >= 10,
        "{video:?}"
    );
    assert!(audio.iter().all(|n| *n >= 30), "{audio:?}");

    // Each camera that came into view started with a keyframe.
    let log = call.client("d").seen.lock().unwrap().video_log.clone();
    for p in ["b", "c"] {
        let first = log.iter().find(|f| f.from == p).expect("video received");
        assert!(first.keyframe, "{first:?}");
    }
    // Everyone's one camera is now c's, e.g. a's.
    assert!(call.client("a").frames_from("c", TrackKind::Video) > 0);
    // d was told of each hold and resume: a's camera held since b spoke, b's held at
    // first, shown while b spoke, held again; c's held until c spoke.
    let mut told = Vec::new();
    for p in ["a", "b", "c"] {
        let track = call.video_track(p, WAIT).await;
        told.push(call.pause_notices("d", track, PauseReason::LastN));
    }
    assert_eq!(
        told,
        [vec![true], vec![true, false, true], vec![true, false]],
        "last-N notices to d for a, b, c"
    );

    // d pins quiet b: b's camera takes d's one slot while c speaks on; a still sees c.
    call.sfu.set_pinned("d", vec!["b".into()]).await.unwrap();
    let (video, audio) = window(&call).await;
    assert!(
        video[0] == 0 && video[1] >= 10 && video[2] == 0,
        "{video:?}"
    );
    assert!(audio.iter().all(|n| *n >= 30), "{audio:?}");
    let seen_by_a = call.client("a").frames_from("c", TrackKind::Video);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(call.client("a").frames_from("c", TrackKind::Video) > seen_by_a);
    // Unpinned: back to the speaker.
    call.sfu.set_pinned("d", Vec::new()).await.unwrap();
    let (video, _) = window(&call).await;
    assert!(
        video[0] == 0 && video[1] == 0 && video[2] >= 10,
        "{video:?}"
    );
    // Only members of the room can be pinned, and only by a participant.
    assert!(call.sfu.set_pinned("d", vec!["zed".into()]).await.is_err());
    assert!(call.sfu.set_pinned("zed", Vec::new()).await.is_err());
}
