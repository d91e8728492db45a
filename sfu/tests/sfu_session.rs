//! Session changes over real UDP: a client unpublishing its video by renegotiation,
//! selective subscription, a client that vanishes without leaving (read as lost, then
//! removed), connection quality under loss and redundant audio.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Call, VideoCodec, eventually};
use huddle_sfu::{LeaveReason, QualityLevel, SfuConfig, SfuError, SfuEvent, TrackKind};

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_offer_with_video_inactive_unpublishes_it() {
    let mut call = Call::start().await;
    call.join("room", "alice", VideoCodec::H264).await;
    call.join("room", "bob", VideoCodec::H264).await;
    assert!(
        eventually(WAIT, || call
            .client("bob")
            .frames_from("alice", TrackKind::Video)
            >= 5)
        .await
    );
    let video = call.track_of("alice", TrackKind::Video).unwrap();
    call.client("alice").stop_video();
    let unpublished = eventually(WAIT, || {
        call.events().iter().any(|e| {
            matches!(e,
            SfuEvent::TrackUnpublished { track, .. } if *track == video)
        })
    })
    .await;
    assert!(unpublished, "{:?}", call.events());
    let (census, _) = call.sfu.census().await.unwrap();
    assert_eq!((census.tracks, census.subscriptions), (3, 3));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let video_before = call.client("bob").frames_from("alice", TrackKind::Video);
    let audio_before = call.client("bob").frames_from("alice", TrackKind::Audio);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        call.client("bob").frames_from("alice", TrackKind::Video),
        video_before
    );
    assert!(call.client("bob").frames_from("alice", TrackKind::Audio) > audio_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selective_subscriber_gets_only_what_it_asks_for() {
    let mut call = Call::start().await;
    call.join_opts("room", "carol", Some(VideoCodec::Vp8), false)
        .await;
    call.join("room", "alice", VideoCodec::H264).await;
    call.join("room", "bob", VideoCodec::H264).await;
    // alice and bob (auto) hear each other and carol.
    assert!(
        eventually(WAIT, || {
            call.client("alice").frames_from("bob", TrackKind::Audio) >= 10
                && call.client("alice").frames_from("carol", TrackKind::Audio) >= 10
        })
        .await
    );
    let video = call.track_of("alice", TrackKind::Video).unwrap();
    call.sfu.subscribe("carol", video).await.unwrap();
    assert!(
        eventually(WAIT, || call
            .client("carol")
            .frames_from("alice", TrackKind::Video)
            >= 5)
        .await
    );
    let seen = call.client("carol").seen.lock().unwrap().frames.clone();
    assert_eq!(seen.len(), 1, "carol got more than alice's video: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_vanishes_is_removed_and_freed() {
    let mut call = Call::start().await;
    call.join("room", "alice", VideoCodec::H264).await;
    call.join("room", "bob", VideoCodec::H264).await;
    assert!(
        eventually(WAIT, || call
            .client("alice")
            .frames_from("bob", TrackKind::Audio)
            >= 10)
        .await
    );
    // bob's process dies: no leave, no more packets.
    let t0 = Instant::now();
    call.client("bob").stop();
    // Before his session times out, his link reads as lost (nothing for 3 s), and the
    // gauge counts him there.
    let (lost, stats) = stats_until(&call, WAIT, |s| {
        s.iter().any(|p| {
            p.participant.as_str() == "bob"
                && p.quality.is_some_and(|q| q.level == QualityLevel::Lost)
        })
    })
    .await;
    assert!(
        lost,
        "bob never read as lost: {:?}",
        levels(&stats, &["alice"])
    );
    println!("vanished peer read as lost after {:?}", t0.elapsed());
    let lost_gauge = call
        .sfu
        .metrics()
        .connection_quality
        .get_or_create(&huddle_sfu::metrics::QualityLabel { quality: "lost" })
        .get();
    assert_eq!(lost_gauge, 1);
    let gone = eventually(Duration::from_secs(60), || {
        call.events().iter().any(|e| {
            matches!(e,
            SfuEvent::ParticipantLeft { participant, reason: LeaveReason::Disconnected, .. }
                if participant.as_str() == "bob")
        })
    })
    .await;
    assert!(gone, "bob never timed out");
    println!("vanished peer removed after {:?}", t0.elapsed());
    let (census, peers) = call.sfu.census().await.unwrap();
    assert_eq!((census.participants, census.tracks, peers), (1, 2, 1));
    // Removed, he leaves the gauge at the next stats tick.
    let metrics = call.sfu.metrics();
    let lost = metrics
        .connection_quality
        .get_or_create(&huddle_sfu::metrics::QualityLabel { quality: "lost" });
    assert!(
        eventually(WAIT, || lost.get() == 0).await,
        "still counted lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_sfu_offer_is_withdrawn_and_made_again() {
    let mut call = Call::start_with(SfuConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        answer_timeout: Duration::from_millis(500),
        stats_interval: Duration::from_millis(100),
        ..SfuConfig::default()
    })
    .await;
    call.join("room", "alice", VideoCodec::H264).await;
    call.lose_next_offer.lock().unwrap().push("bob".into());
    call.join("room", "bob", VideoCodec::Vp8).await;
    assert!(
        eventually(WAIT, || call
            .client("bob")
            .frames_from("alice", TrackKind::Video)
            >= 5)
        .await,
        "bob never got alice's video"
    );
    let offers: Vec<u64> = call
        .events()
        .iter()
        .filter_map(|e| match e {
            SfuEvent::NeedsAnswer {
                participant,
                offer_id,
                ..
            } if participant.as_str() == "bob" => Some(*offer_id),
            _ => None,
        })
        .collect();
    assert!(offers.len() >= 2, "no second offer: {offers:?}");
    assert!(call.lose_next_offer.lock().unwrap().is_empty());
    // An answer to the lost offer is now stale.
    assert!(matches!(
        call.sfu.answer("bob", offers[0], "v=0").await,
        Err(SfuError::StaleAnswer(_))
    ));
}

/// Alice publishes H.264 video to Bob; once Bob has five of her frames, the loss shim
/// `shim` picks (one of theirs, per mille) drops 5% for 6 s, then nothing for 1.5 s.
/// Returns the call, the numbers of Alice's frames Bob got from the lossy window on, in
/// the order he got them, and how many of the numbers in that span he is missing.
async fn video_through_a_lossy_window(
    shim: impl Fn(&common::Client) -> Arc<AtomicU64>,
    who: &str,
) -> (Call, Vec<u64>, usize) {
    let mut call = Call::start().await;
    call.join("room", "alice", VideoCodec::H264).await;
    call.join("room", "bob", VideoCodec::H264).await;
    assert!(
        eventually(WAIT, || call
            .client("bob")
            .frames_from("alice", TrackKind::Video)
            >= 5)
        .await
    );
    let first = call.client("bob").seen.lock().unwrap().video_frames["alice"].len();
    let loss = shim(call.client(who));
    loss.store(50, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(6)).await;
    loss.store(0, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let frames = call.client("bob").seen.lock().unwrap().video_frames["alice"][first..].to_vec();
    let (lo, hi) = (*frames.iter().min().unwrap(), *frames.iter().max().unwrap());
    // Alice sends a video frame on every even tick.
    let got: HashSet<u64> = frames.iter().copied().collect();
    let missing = (lo..=hi).filter(|n| n % 2 == 0 && !got.contains(n)).count();
    (call, frames, missing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacks_from_a_lossy_subscriber_are_answered_from_the_sfu_buffer() {
    // What the SFU sends bob is lost: bob NACKs, the SFU resends from its buffer.
    let (call, frames, missing) =
        video_through_a_lossy_window(|c| c.loss_permille.clone(), "bob").await;
    let dropped = call.client("bob").seen.lock().unwrap().dropped;
    let nacks = call.sfu.metrics().nacks_received.get();
    println!(
        "dropped {dropped} datagrams; {missing} of {} video frames missing after NACK; SFU got {nacks} NACKs",
        frames.len() + missing
    );
    assert!(dropped >= 10, "the shim dropped too little to test");
    assert!(nacks > 0, "no NACK reached the SFU");
    assert!(
        missing * 100 <= frames.len(),
        "{missing} frames lost despite NACK"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossy_publisher_is_repaired_by_the_sfu_and_subscribers_get_frames_in_order() {
    // What alice sends the SFU is lost: the SFU NACKs it and forwards the repaired
    // frames, in order.
    let (call, frames, missing) =
        video_through_a_lossy_window(|c| c.send_loss_permille.clone(), "alice").await;
    let dropped = call.client("alice").seen.lock().unwrap().dropped_sent;
    let nacks = call.sfu.metrics().nacks_sent.get();
    let out_of_order: Vec<_> = frames.windows(2).filter(|w| w[1] <= w[0]).collect();
    println!(
        "alice lost {dropped} datagrams; bob misses {missing} of {} frames; SFU sent {nacks} NACKs",
        frames.len() + missing
    );
    assert!(dropped >= 10, "the shim dropped too little to test");
    assert!(nacks > 0, "the SFU asked for no resend");
    assert!(
        missing * 100 <= frames.len(),
        "{missing} frames lost despite NACK"
    );
    assert!(
        out_of_order.is_empty(),
        "frames out of order: {out_of_order:?}"
    );
}

/// Every session is answered with the SFU's one DTLS certificate (made once at start, not
/// per join on the driver thread), and both still connect and exchange media.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_share_one_dtls_certificate() {
    let mut call = Call::start().await;
    call.join("r", "a", VideoCodec::H264).await;
    call.join("r", "b", VideoCodec::H264).await;
    let fingerprint = |who: &str| -> String {
        call.answers[who]
            .lines()
            .find(|l| l.starts_with("a=fingerprint:"))
            .expect("a fingerprint")
            .to_owned()
    };
    assert_eq!(fingerprint("a"), fingerprint("b"));
    let flowing = eventually(Duration::from_secs(10), || {
        call.client("a").frames_from("b", TrackKind::Audio) > 0
            && call.client("b").frames_from("a", TrackKind::Audio) > 0
    })
    .await;
    assert!(flowing, "media flows with the shared certificate");
}

/// Polls the SFU's stats until `cond` holds of them or `limit` passes; returns the last.
async fn stats_until(
    call: &Call,
    limit: Duration,
    cond: impl Fn(&[huddle_sfu::ParticipantStats]) -> bool,
) -> (bool, Vec<huddle_sfu::ParticipantStats>) {
    let end = Instant::now() + limit;
    loop {
        let stats = call.sfu.stats().await.unwrap();
        if cond(&stats) {
            return (true, stats);
        }
        if Instant::now() >= end {
            return (false, stats);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The connection-quality levels of `who`, in order.
fn levels(stats: &[huddle_sfu::ParticipantStats], who: &[&str]) -> Vec<Option<QualityLevel>> {
    who.iter()
        .map(|w| common::stats_of(stats, w).quality.map(|q| q.level))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_quality_follows_loss_on_each_participant_s_own_link() {
    // Three members; then 15% of what the SFU sends bob is lost, and 15% of what carol
    // sends the SFU. Each is scored from its own link: bob's loss downstream, carol's
    // upstream; alice, whose link is clean, stays excellent (carol's lost audio is not
    // forwarded to her as a gap: str0m numbers what it sends her itself).
    let mut call = Call::start().await;
    for who in ["alice", "bob", "carol"] {
        call.join("room", who, VideoCodec::H264).await;
    }
    let who = ["alice", "bob", "carol"];
    let excellent = Some(QualityLevel::Excellent);
    let (clean, stats) = stats_until(&call, WAIT, |s| {
        levels(s, &who).iter().all(|l| *l == excellent)
    })
    .await;
    assert!(clean, "a clean call: {:?}", levels(&stats, &who));

    call.client("bob")
        .loss_permille
        .store(150, Ordering::Relaxed);
    call.client("carol")
        .send_loss_permille
        .store(150, Ordering::Relaxed);
    // Wait for the loss figures too, not only the levels: bob's video may be paused for
    // bandwidth first (the loss brings his estimate down), which makes him poor before
    // a receiver report on his audio (every 5 s from str0m) has shown the loss.
    let poor = Some(QualityLevel::Poor);
    let lossy_enough = |s: &[huddle_sfu::ParticipantStats], who: &str, down: bool| {
        common::stats_of(s, who)
            .quality
            .is_some_and(|q| (if down { q.loss_down } else { q.loss_up }) > 0.08)
    };
    let (lossy, stats) = stats_until(&call, WAIT, |s| {
        levels(s, &who)[1..] == [poor, poor]
            && lossy_enough(s, "bob", true)
            && lossy_enough(s, "carol", false)
    })
    .await;
    let q = |who| common::stats_of(&stats, who).quality.unwrap();
    println!("lossy: {:?}", who.map(q));
    assert!(lossy, "bob and carol poor: {:?}", levels(&stats, &who));
    assert!(
        q("bob").loss_down > 0.08 && q("bob").loss_up < 0.02,
        "{:?}",
        q("bob")
    );
    assert!(
        q("carol").loss_up > 0.08 && q("carol").loss_down < 0.02,
        "{:?}",
        q("carol")
    );
    assert_eq!(
        q("alice").level,
        QualityLevel::Excellent,
        "{:?}",
        q("alice")
    );
    let gauge = |level: &'static str| {
        call.sfu
            .metrics()
            .connection_quality
            .get_or_create(&huddle_sfu::metrics::QualityLabel { quality: level })
            .get()
    };
    assert_eq!((gauge("excellent"), gauge("poor")), (1, 2));

    // The loss ends: all excellent again, once the smoothing lets go of it.
    call.client("bob").loss_permille.store(0, Ordering::Relaxed);
    call.client("carol")
        .send_loss_permille
        .store(0, Ordering::Relaxed);
    let (recovered, stats) = stats_until(&call, Duration::from_secs(30), |s| {
        levels(s, &who).iter().all(|l| *l == excellent)
    })
    .await;
    assert!(recovered, "recovered: {:?}", levels(&stats, &who));
    assert_eq!((gauge("excellent"), gauge("poor")), (3, 0));
}

/// Alice's audio reaches bob through a window of 10% loss that `shim` picks (one of
/// `who`'s, per mille) for 5 s; the SFU offers redundant audio when `sfu_red`, the
/// clients accept it when `clients_red`. Returns how many of alice's audio frames in
/// the span bob got are missing, of how many, and how many datagrams the shim dropped.
async fn audio_through_loss(
    sfu_red: bool,
    clients_red: bool,
    shim: impl Fn(&common::Client) -> Arc<AtomicU64>,
    who: &str,
) -> (usize, usize, u64) {
    let mut call = Call::start_with(SfuConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        audio_red: sfu_red,
        ..SfuConfig::default()
    })
    .await;
    call.red = clients_red;
    call.join_with("room", "alice", None).await;
    call.join_with("room", "bob", None).await;
    let heard = |call: &Call| {
        call.client("bob")
            .seen
            .lock()
            .unwrap()
            .audio_frames
            .get("alice")
            .map_or(0, Vec::len)
    };
    assert!(eventually(WAIT, || heard(&call) >= 25).await, "no audio");
    let first = heard(&call);
    let loss = shim(call.client(who));
    loss.store(100, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(5)).await;
    loss.store(0, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = call.client(who).seen.lock().unwrap();
    let dropped = seen.dropped + seen.dropped_sent;
    drop(seen);
    let frames = call.client("bob").seen.lock().unwrap().audio_frames["alice"][first..].to_vec();
    let (lo, hi) = (*frames.iter().min().unwrap(), *frames.iter().max().unwrap());
    let got: HashSet<u64> = frames.iter().copied().collect();
    let missing = (lo..=hi).filter(|n| !got.contains(n)).count();
    (missing, (hi - lo + 1) as usize, dropped)
}

/// Runs `audio_through_loss` with RED on both sides, then with `plain` (sfu_red,
/// clients_red): at most 4% of the frames may be missing with RED, at least 5% without
/// (so that the loss is seen at all).
async fn red_against_plain(
    shim: impl Fn(&common::Client) -> Arc<AtomicU64> + Copy,
    who: &str,
    plain: (bool, bool),
) {
    let (missing, span, dropped) = audio_through_loss(true, true, shim, who).await;
    println!("RED: bob misses {missing} of {span} audio frames; {who} lost {dropped} datagrams");
    assert!(dropped >= 10, "the shim dropped too little to test");
    assert!(
        missing * 100 <= span * 4,
        "{missing} of {span} missing with RED"
    );
    let (plain_missing, plain_span, _) = audio_through_loss(plain.0, plain.1, shim, who).await;
    println!("plain: bob misses {plain_missing} of {plain_span} audio frames");
    assert!(
        plain_missing * 100 >= plain_span * 5,
        "without RED only {plain_missing} of {plain_span} missing: the loss is not seen"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redundant_audio_rebuilds_what_a_lossy_subscriber_misses() {
    // 10% of what the SFU sends bob is lost. With RED each packet also carries the
    // frame before it, so only two losses in a row cost a frame (about 1%); without
    // (the SFU's `audio_red` off), every loss does (audio is not retransmitted).
    red_against_plain(|c| c.loss_permille.clone(), "bob", (false, true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redundant_audio_from_a_lossy_publisher_is_rebuilt_by_the_sfu() {
    // 10% of what alice sends the SFU is lost. Her packets carry RED: the SFU (str0m)
    // rebuilds a lost frame from the next packet and forwards it to bob. In the
    // control run the clients do not accept RED.
    red_against_plain(|c| c.send_loss_permille.clone(), "alice", (true, false)).await;
}
