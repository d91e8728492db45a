//! Calls through a real SFU on loopback with str0m test clients: media reaches every
//! other participant, leaving frees state and stops the media, keyframe requests are
//! throttled toward the publisher, and the active speaker follows the loudest voice.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Call, VideoCodec, eventually};
use huddle_sfu::{LeaveReason, SfuEvent, TrackId, TrackKind};

const WAIT: Duration = Duration::from_secs(15);

fn receives_all(call: &Call, who: &str, from: &[&str]) -> bool {
    from.iter().all(|p| {
        call.client(who).frames_from(p, TrackKind::Audio) >= 10
            && call.client(who).frames_from(p, TrackKind::Video) >= 5
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_participants_receive_each_others_audio_and_video() {
    let mut call = Call::start().await;
    call.join("room", "alice", VideoCodec::H264).await;
    call.join("room", "bob", VideoCodec::Vp8).await;
    let ok = eventually(WAIT, || {
        receives_all(&call, "alice", &["bob"]) && receives_all(&call, "bob", &["alice"])
    })
    .await;
    let stats = call.sfu.stats().await.unwrap();
    assert!(ok, "media did not flow both ways; stats: {stats:#?}");
    // H.264 from alice and VP8 from bob both went through.
    for s in &stats {
        assert_eq!(s.tracks_published, 2, "{s:?}");
        assert_eq!(s.tracks_subscribed, 2, "{s:?}");
        assert!(
            s.frames_forwarded > 0 && s.packets_in > 0 && s.bytes_out > 0,
            "{s:?}"
        );
    }
    let published = call
        .events()
        .iter()
        .filter(|e| matches!(e, SfuEvent::TrackPublished { .. }))
        .count();
    assert_eq!(published, 4);
    assert!(call.sfu.metrics().frames_forwarded.get() > 0);
    // Periodic stats events report both participants with a sending rate.
    let rates = |call: &Call| {
        call.events().iter().rev().find_map(|e| match e {
            SfuEvent::Stats {
                participants: s, ..
            } if s.len() == 2 => Some(
                s.iter()
                    .all(|p| p.packets_out_per_sec > 10.0 && p.rtt.is_some()),
            ),
            _ => None,
        })
    };
    assert!(
        eventually(WAIT, || rates(&call) == Some(true)).await,
        "{:?}",
        call.events()
            .iter()
            .rev()
            .find(|e| matches!(e, SfuEvent::Stats { .. }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_participants_each_receive_both_others() {
    let mut call = Call::start().await;
    let names = ["alice", "bob", "carol"];
    for (i, n) in names.iter().enumerate() {
        let codec = if i % 2 == 0 {
            VideoCodec::H264
        } else {
            VideoCodec::Vp8
        };
        call.join("room", n, codec).await;
    }
    let ok = eventually(WAIT, || {
        names.iter().all(|me| {
            let others: Vec<&str> = names.iter().copied().filter(|o| o != me).collect();
            receives_all(&call, me, &others)
        })
    })
    .await;
    assert!(ok, "not everyone got both others: {:?}", {
        names
            .iter()
            .map(|n| (n, call.client(n).seen.lock().unwrap().frames.clone()))
            .collect::<Vec<_>>()
    });
    let (census, peers) = call.sfu.census().await.unwrap();
    assert_eq!(
        (
            census.participants,
            census.tracks,
            census.subscriptions,
            peers
        ),
        (3, 6, 12, 3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_whose_session_comes_up_late_gets_live_media_not_a_backlog() {
    let mut call = Call::start().await;
    call.join("room", "pub", VideoCodec::H264).await;
    // The second participant's m-lines are negotiated over signalling at once; its ICE
    // checks are lost for a second, so its session comes up that much later.
    call.silent_for = Duration::from_millis(1000);
    call.join("room", "late", VideoCodec::H264).await;
    call.silent_for = Duration::ZERO;
    assert!(
        eventually(WAIT, || {
            call.client("late").frames_from("pub", TrackKind::Audio) >= 50
                && call.client("late").frames_from("pub", TrackKind::Video) >= 5
        })
        .await
    );
    // Media written for it before its session was up would have been queued and sent
    // in one burst when it connected: audio a second old.
    let seen = call.client("late").seen.lock().unwrap();
    let worst = seen
        .audio_latency
        .iter()
        .max()
        .copied()
        .expect("audio frames");
    assert!(
        worst < Duration::from_millis(200),
        "worst write-to-receive {worst:?} over {} frames",
        seen.audio_latency.len()
    );
    // Its video starts from a keyframe asked for when it connected: the SFU forwards
    // no delta frame before it, whatever keyframe was asked for before. (The test
    // client's DTLS sometimes completes seconds after the SFU's when its first flights
    // were lost: then the SFU's keyframe came before it could decrypt, its first frame
    // is a delta, and it asks for a keyframe as a browser does.) Either way a keyframe
    // is among its first five frames, where the publisher's own schedule has one in
    // fifty.
    let first_key = seen.video_log.iter().position(|f| f.keyframe);
    assert!(
        first_key.is_some_and(|i| i < 5) && (first_key == Some(0)) == (seen.start_plis == 0),
        "first keyframe at {first_key:?}, {} asked by the client: {:?}",
        seen.start_plis,
        seen.video_log
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_stops_media_and_frees_state() {
    let mut call = Call::start().await;
    for n in ["alice", "bob", "carol"] {
        call.join("room", n, VideoCodec::H264).await;
    }
    assert!(
        eventually(WAIT, || {
            receives_all(&call, "alice", &["bob", "carol"])
                && receives_all(&call, "bob", &["alice", "carol"])
        })
        .await
    );
    let log_before_leave = call.events().len();
    call.sfu.leave("carol").await.unwrap();
    call.client("carol").stop();

    // Census right after leave: carol's session, tracks and subscriptions are gone.
    let (census, peers) = call.sfu.census().await.unwrap();
    assert_eq!(
        (
            census.participants,
            census.tracks,
            census.subscriptions,
            peers
        ),
        (2, 4, 4, 2)
    );
    // The event stream is read by another task: give it a moment.
    let left = |call: &Call| {
        let events = call.events();
        let left = events.iter().any(|e| {
            matches!(e,
            SfuEvent::ParticipantLeft { participant, reason: LeaveReason::Left, .. }
                if participant.as_str() == "carol")
        });
        let unpublished = events
            .iter()
            .filter(|e| {
                matches!(e, SfuEvent::TrackUnpublished { participant, .. }
                if participant.as_str() == "carol")
            })
            .count();
        (left, unpublished)
    };
    assert!(
        eventually(WAIT, || left(&call) == (true, 2)).await,
        "{:?}",
        left(&call)
    );

    // Whatever was in flight settles, then nothing more arrives from carol while
    // alice and bob keep hearing each other.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = [
        call.client("alice").frames_from("carol", TrackKind::Audio),
        call.client("bob").frames_from("carol", TrackKind::Video),
    ];
    let bob_before = call.client("alice").frames_from("bob", TrackKind::Audio);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = [
        call.client("alice").frames_from("carol", TrackKind::Audio),
        call.client("bob").frames_from("carol", TrackKind::Video),
    ];
    assert_eq!(before, after, "carol's media still arrives after leaving");
    assert!(call.client("alice").frames_from("bob", TrackKind::Audio) > bob_before);

    // The remaining clients were each offered a renegotiation stopping carol's m-lines.
    let reoffered = |call: &Call, who: &str| {
        call.events()[log_before_leave..].iter().any(|e| {
            matches!(e,
            SfuEvent::NeedsAnswer { participant, sdp, .. }
                if participant.as_str() == who && sdp.contains("m=video 0 "))
        })
    };
    assert!(
        eventually(WAIT, || reoffered(&call, "alice")
            && reoffered(&call, "bob"))
        .await
    );

    call.sfu.leave("alice").await.unwrap();
    call.sfu.leave("bob").await.unwrap();
    let (census, peers) = call.sfu.census().await.unwrap();
    assert_eq!(census, Default::default());
    assert_eq!(peers, 0);
    assert_eq!(call.sfu.metrics().participants.get(), 0);
    assert!(call.sfu.leave("bob").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframe_requests_reach_the_publisher_throttled() {
    let mut call = Call::start().await;
    call.join("room", "alice", VideoCodec::H264).await;
    call.join("room", "bob", VideoCodec::H264).await;
    assert!(eventually(WAIT, || receives_all(&call, "bob", &["alice"])).await);
    let base = call.client("alice").keyframe_requests();
    let started = Instant::now();
    // bob sends 100 PLIs, one every 20 ms.
    call.client("bob")
        .plis_to_send
        .store(100, std::sync::atomic::Ordering::Relaxed);
    assert!(
        eventually(WAIT, || call
            .client("bob")
            .plis_to_send
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0)
        .await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let elapsed = started.elapsed();
    let got = call.client("alice").keyframe_requests() - base;
    // At most one per 500 ms window (plus one for a window straddling the start).
    let bound = elapsed.as_millis() as u64 / 500 + 2;
    assert!(got >= 1, "no keyframe request reached the publisher");
    assert!(
        got <= bound,
        "{got} keyframe requests in {elapsed:?} (bound {bound})"
    );
    let m = call.sfu.metrics();
    assert!(
        m.keyframe_requests_received.get() >= 50,
        "{}",
        m.keyframe_requests_received.get()
    );
    assert!(m.keyframe_requests_throttled.get() >= 40);
    let stats = call.sfu.stats().await.unwrap();
    let of = |who: &str| common::stats_of(&stats, who);
    assert!(
        of("bob").keyframe_requests_received >= 50,
        "{:?}",
        of("bob")
    );
    assert!(
        of("alice").keyframe_requests_sent >= got,
        "{:?}",
        of("alice")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_speaker_follows_the_loudest_participant() {
    let mut call = Call::start().await;
    for n in ["alice", "bob", "carol"] {
        call.join("room", n, VideoCodec::Vp8).await;
    }
    let speaker = |call: &Call| {
        call.events().iter().rev().find_map(|e| match e {
            SfuEvent::ActiveSpeaker { participant, .. } => {
                Some(participant.as_ref().map(|p| p.to_string()))
            }
            _ => None,
        })
    };
    let set = |call: &Call, loud: &str| {
        for n in ["alice", "bob", "carol"] {
            let level = if n == loud { 20 } else { 85 };
            call.client(n)
                .level
                .store(level, std::sync::atomic::Ordering::Relaxed);
        }
    };
    set(&call, "bob");
    assert!(
        eventually(WAIT, || speaker(&call) == Some(Some("bob".into()))).await,
        "{:?}",
        speaker(&call)
    );
    set(&call, "carol");
    assert!(
        eventually(WAIT, || speaker(&call) == Some(Some("carol".into()))).await,
        "{:?}",
        speaker(&call)
    );
    // The speaker leaving clears the indication. Wait first until bob's smoothed level
    // has decayed below the threshold, or he would rightly take over again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(speaker(&call), Some(Some("carol".into())));
    call.sfu.leave("carol").await.unwrap();
    assert!(
        eventually(WAIT, || speaker(&call) == Some(None)).await,
        "{:?}",
        speaker(&call)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_mutes_and_unmutes_a_publisher() {
    let mut call = Call::start().await;
    call.join("room", "alice", VideoCodec::H264).await;
    call.join("room", "bob", VideoCodec::H264).await;
    assert!(eventually(WAIT, || receives_all(&call, "bob", &["alice"])).await);
    let bob = |kind| call.client("bob").frames_from("alice", kind);
    let muted_events = |call: &Call| -> Vec<(TrackKind, bool)> {
        call.events()
            .iter()
            .filter_map(|e| match e {
                SfuEvent::TrackMuted {
                    participant,
                    kind,
                    muted,
                    ..
                } if participant.as_str() == "alice" => Some((*kind, *muted)),
                _ => None,
            })
            .collect()
    };

    // Alice's microphone muted: Bob stops hearing her and still sees her.
    let tracks = call.sfu.mute("alice", Some(TrackKind::Audio), true).await;
    assert_eq!(tracks.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (audio, video) = (bob(TrackKind::Audio), bob(TrackKind::Video));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(bob(TrackKind::Audio), audio, "muted audio still arrives");
    assert!(bob(TrackKind::Video) >= video + 10, "video stopped too");
    // Muting it again changes nothing; the SFU's statistics show it.
    let again = call.sfu.mute("alice", Some(TrackKind::Audio), true).await;
    assert!(again.unwrap().is_empty());
    let stats = call.sfu.stats().await.unwrap();
    let published = &stats
        .iter()
        .find(|p| p.participant.as_str() == "alice")
        .expect("alice's stats")
        .published;
    let muted_kinds: Vec<_> = published.iter().map(|t| (t.kind, t.muted)).collect();
    assert!(
        muted_kinds.contains(&(TrackKind::Audio, true))
            && muted_kinds.contains(&(TrackKind::Video, false)),
        "{muted_kinds:?}"
    );

    // Her camera too: nothing of hers arrives.
    let tracks = call.sfu.mute("alice", Some(TrackKind::Video), true).await;
    assert_eq!(tracks.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let video = bob(TrackKind::Video);
    let log_len = call.client("bob").seen.lock().unwrap().video_log.len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(bob(TrackKind::Video), video, "muted video still arrives");

    // Bob asks for a keyframe while her camera is muted: it reaches Alice (and what she
    // sends is dropped), so the keyframe request made when unmuting, within 500 ms of
    // it, is swallowed by the throttle.
    let asked = call.client("alice").keyframe_requests();
    call.client("bob").plis_to_send.store(1, Ordering::Relaxed);
    assert!(eventually(WAIT, || call.client("alice").keyframe_requests() > asked).await);

    // Both unmuted: audio flows again, and video resumes at a keyframe, not at the
    // delta frames that come first (the publisher's own schedule has one every 2 s).
    let unmuted = Instant::now();
    let tracks = call.sfu.mute("alice", None, false).await;
    assert_eq!(tracks.unwrap().len(), 2);
    assert!(
        eventually(WAIT, || bob(TrackKind::Audio) >= audio + 10
            && bob(TrackKind::Video) >= video + 5)
        .await
    );
    let first = call.client("bob").seen.lock().unwrap().video_log[log_len..]
        .iter()
        .find(|f| f.from == "alice")
        .cloned()
        .expect("video after unmuting");
    assert!(first.keyframe, "video resumed at a delta frame: {first:?}");
    assert!(unmuted.elapsed() < Duration::from_secs(2));
    assert_eq!(
        muted_events(&call),
        [
            (TrackKind::Audio, true),
            (TrackKind::Video, true),
            (TrackKind::Audio, false),
            (TrackKind::Video, false)
        ]
    );
    // Someone the SFU does not know is an error.
    assert!(call.sfu.mute("nobody", None, true).await.is_err());
}

/// A muted microphone published again (a new track, by renegotiation) is muted from
/// the start: a client cannot undo the server's mute by republishing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_track_published_while_muted_starts_muted() {
    let mut call = Call::start().await;
    call.join("room", "alice", VideoCodec::H264).await;
    call.join("room", "bob", VideoCodec::H264).await;
    assert!(eventually(WAIT, || receives_all(&call, "bob", &["alice"])).await);
    let bob = |kind| call.client("bob").frames_from("alice", kind);
    let first = call
        .track_of("alice", TrackKind::Audio)
        .expect("alice's audio");
    let tracks = call.sfu.mute("alice", Some(TrackKind::Audio), true).await;
    assert_eq!(tracks.unwrap(), [first]);

    call.client("alice").republish_audio();
    let published = |call: &Call| -> Vec<TrackId> {
        call.events()
            .iter()
            .filter_map(|e| match e {
                SfuEvent::TrackPublished {
                    participant,
                    track,
                    kind: TrackKind::Audio,
                    ..
                } if participant.as_str() == "alice" => Some(*track),
                _ => None,
            })
            .collect()
    };
    assert!(eventually(WAIT, || published(&call).len() == 2).await);
    let second = published(&call)[1];
    assert_ne!(second, first);
    // Her audio stays silent on the new track too; her video flows.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (audio, video) = (bob(TrackKind::Audio), bob(TrackKind::Video));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        bob(TrackKind::Audio),
        audio,
        "the new track's audio arrives"
    );
    assert!(bob(TrackKind::Video) >= video + 10, "video stopped too");
    let muted: Vec<(TrackId, bool)> = call
        .events()
        .iter()
        .filter_map(|e| match e {
            SfuEvent::TrackMuted { track, muted, .. } => Some((*track, *muted)),
            _ => None,
        })
        .collect();
    assert_eq!(muted, [(first, true), (second, true)]);
    // The room hears of the new track before it hears that it is muted.
    let position = |want: &dyn Fn(&SfuEvent) -> bool| call.events().iter().position(want);
    let announced =
        position(&|e| matches!(e, SfuEvent::TrackPublished { track, .. } if *track == second));
    let told = position(&|e| matches!(e, SfuEvent::TrackMuted { track, .. } if *track == second));
    assert!(
        matches!((announced, told), (Some(a), Some(t)) if a < t),
        "{:?}",
        call.events()
    );

    // Unmuted: the new track is the one that changes, and it is heard.
    let tracks = call.sfu.mute("alice", Some(TrackKind::Audio), false).await;
    assert_eq!(tracks.unwrap(), [second]);
    assert!(eventually(WAIT, || bob(TrackKind::Audio) >= audio + 10).await);
}

/// How far apart (video minus audio, ms) the SFU's sender reports put the audio and
/// video frames `receiver` got from `publisher` that were captured together (the same
/// frame number): the median over the last 50 such pairs, and how many pairs there are.
fn reported_av_offset(call: &Call, receiver: &str, publisher: &str) -> (f64, usize) {
    let seen = call.client(receiver).seen.lock().unwrap();
    let mut pairs: Vec<(u64, f64)> = seen
        .reported_capture
        .iter()
        .filter(|((from, kind, _), _)| from == publisher && *kind == TrackKind::Video)
        .filter_map(|((_, _, n), video)| {
            let audio =
                seen.reported_capture
                    .get(&(publisher.to_string(), TrackKind::Audio, *n))?;
            let ms = match video.duration_since(*audio) {
                Ok(d) => d.as_secs_f64() * 1e3,
                Err(e) => -e.duration().as_secs_f64() * 1e3,
            };
            Some((*n, ms))
        })
        .collect();
    pairs.sort_by_key(|(n, _)| *n);
    let count = pairs.len();
    let mut last: Vec<f64> = pairs.iter().rev().take(50).map(|(_, ms)| *ms).collect();
    last.sort_by(f64::total_cmp);
    let median = last.get(last.len() / 2).copied().unwrap_or(f64::NAN);
    (median, count)
}

/// Lip sync survives the SFU: a publisher's video leaves 60 ms after the audio
/// captured with it (as an encoder and pacer delay it), and its sender reports say
/// when each was captured. The SFU's own reports toward a subscriber must put the two
/// together again, not 60 ms apart as their arrival times are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_reports_keep_the_publisher_s_audio_video_alignment() {
    let mut call = Call::start().await;
    call.video_delay_ticks = 3;
    call.join("room", "alice", VideoCodec::H264).await;
    call.video_delay_ticks = 0;
    call.join("room", "bob", VideoCodec::H264).await;
    // Until its first sender report reaches the SFU (about a second), a stream can
    // only be stamped by its arrival; the SFU's next report to the subscriber then
    // carries the publisher's alignment. Five seconds of frames, the last 50 judged.
    assert!(
        eventually(Duration::from_secs(20), || reported_av_offset(
            &call, "bob", "alice"
        )
        .1 >= 125)
        .await,
        "pairs of frames with reports: {}",
        reported_av_offset(&call, "bob", "alice").1
    );
    let (alice_to_bob, pairs) = reported_av_offset(&call, "bob", "alice");
    let (bob_to_alice, _) = reported_av_offset(&call, "alice", "bob");
    println!(
        "video minus audio by the SFU's reports: alice -> bob {alice_to_bob:.1} ms ({pairs} \
         pairs), bob -> alice {bob_to_alice:.1} ms"
    );
    assert!(
        alice_to_bob.abs() < 15.0,
        "alice's video 60 ms late on the wire is {alice_to_bob:.1} ms off her audio by the \
         SFU's reports"
    );
    assert!(bob_to_alice.abs() < 15.0, "{bob_to_alice:.1} ms");
}
