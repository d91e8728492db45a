//! Calls placed by the native client SDK (webrtc-rs) through `huddle serve`'s SFU (str0m),
//! measured by `huddle bench call`'s machinery: real Opus audio and H.264 video are
//! encoded, forwarded, decoded and compared with what was sent. The measurements are
//! checked where the truth is known: no loss, 10% loss (and the shim's own count of what
//! it dropped), 100 ms of added delay; NACK repairs video loss; a participant who leaves
//! stops arriving.
//!
//! Calls run in real time and one at a time (a lock), so that they do not starve each
//! other of CPU.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use huddle_bench::call::participant::{Participant, ParticipantSetup};
use huddle_bench::call::{
    CallConfig, CallReport, CallTarget, Impairments, PairReport, VideoSetup, print_summary, run,
};
use huddle_bench::server::Target;
use huddle_bench::shim::ImpairmentConfig;
use huddle_client::media::TrackKind;
use huddle_media::audio::jitter::JitterConfig;
use huddle_media::codec::opus::OpusEncoderConfig;
use huddle_media::quality::signal::speech_like;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn server() -> (Target, SocketAddr) {
    server_with(&[])
}

/// A server with `env` overrides of its configuration.
fn server_with(env: &[(&str, String)]) -> (Target, SocketAddr) {
    let exe = Path::new(env!("CARGO_BIN_EXE_huddle"));
    let target = Target::spawn_with_sfu(exe, env).expect("huddle serve starts");
    let sfu = target.sfu_addr.expect("the SFU address");
    (target, sfu)
}

async fn call(cfg: CallConfig) -> CallReport {
    let (target, sfu_addr) = server();
    let report = run(
        &CallTarget {
            server: &target,
            sfu_addr,
        },
        &cfg,
    )
    .await
    .expect("the call runs");
    print_summary(&report);
    report
}

fn video(width: usize, height: usize, fps: u32) -> Option<VideoSetup> {
    Some(VideoSetup {
        width,
        height,
        fps,
        bitrate_bps: 250_000,
    })
}

/// Participant `{prefix}{i}` of `room`, speaking its own seeded signal.
async fn setup(
    target: &Target,
    sfu_addr: SocketAddr,
    (room, prefix, i): (&str, &str, u64),
    video: Option<VideoSetup>,
    shim: Option<(ImpairmentConfig, ImpairmentConfig)>,
) -> ParticipantSetup {
    let name = format!("{prefix}{i}");
    ParticipantSetup {
        token: target.token(&name, room).await.expect("token"),
        name,
        ws_url: target.ws_url(),
        sfu_addr,
        shim,
        speech: Arc::new(speech_like(8.0, 48_000, 16_000, i)),
        video,
        opus: OpusEncoderConfig::default(),
        jitter: JitterConfig::default(),
        nack: true,
        red: true,
    }
}

fn down(imp: Impairments) -> CallConfig {
    CallConfig {
        down: imp,
        ..CallConfig::default()
    }
}

fn audio(p: &PairReport) -> &huddle_bench::call::report::AudioReport {
    p.audio
        .as_ref()
        .unwrap_or_else(|| panic!("no audio: {p:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_participants_hear_and_see_each_other_cleanly() {
    let _serial = SERIAL.lock().await;
    let report = call(CallConfig {
        duration: Duration::from_secs(5),
        video: video(320, 240, 15),
        ..CallConfig::default()
    })
    .await;
    assert_eq!(report.pairs.len(), 2);
    for p in &report.pairs {
        let a = audio(p);
        let v = p
            .video
            .as_ref()
            .unwrap_or_else(|| panic!("no video: {p:?}"));
        // 5 s in 200 ms windows, minus pauses in the speech.
        assert!(a.measured.windows >= 12, "{p:?}");
        assert_eq!(a.loss_before_repair_pct, 0.0, "{p:?}");
        // Nothing lost or late on the way; what little is concealed is playout waiting
        // out a scheduling hiccup of this 2-core machine (a sender or receiver task
        // late by more than the jitter buffer's margin, which its 95% delay quantile
        // keeps at a few ms on loopback): 0-1.2% measured over 16 runs.
        assert_eq!(a.jitter_buffer.packets_lost, 0, "{p:?}");
        assert_eq!(a.jitter_buffer.late_packets, 0, "{p:?}");
        assert!(
            a.concealed_pct < 2.0,
            "no loss, (almost) no concealment: {p:?}"
        );
        // Opus at 32 kb/s keeps the waveform roughly (it is a perceptual codec): 9-13 dB
        // in 16 listeners by hand, with time stretches realigned by the analysis.
        assert!(a.measured.snr_db > 5.0, "{p:?}");
        assert!(a.mos > 4.2, "{p:?}");
        // Loopback: framing (20 ms) + jitter buffer + transit.
        assert!(
            a.measured.delay_p50_ms > 20.0 && a.measured.delay_p50_ms < 120.0,
            "{p:?}"
        );
        assert!(v.frames_decoded >= 60, "15 fps for 5 s: {p:?}");
        assert_eq!((v.width, v.height), (320, 240), "{p:?}");
        assert!(
            v.time_to_first_frame_ms.is_some_and(|t| t < 3000.0),
            "{p:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_percent_loss_is_measured_as_ten_percent() {
    let _serial = SERIAL.lock().await;
    let report = call(CallConfig {
        duration: Duration::from_secs(8),
        nack: false,
        fec: false,
        red: false,
        ..down(Impairments {
            loss: 0.10,
            ..Impairments::default()
        })
    })
    .await;
    for p in &report.pairs {
        let a = audio(p);
        // What the shim in front of this listener dropped, of every datagram it saw.
        let shim = &report
            .joins
            .iter()
            .find(|j| j.name == p.listener)
            .expect("listener")
            .shim_down;
        let shim_pct = shim.lost as f64 * 100.0 / shim.received as f64;
        assert!((a.loss_before_repair_pct - 10.0).abs() < 3.5, "{p:?}");
        assert!(
            (a.loss_before_repair_pct - shim_pct).abs() < 2.5,
            "{shim_pct} {p:?}"
        );
        // Without FEC every loss reaches playout and is concealed.
        assert!(
            (a.loss_after_repair_pct - a.loss_before_repair_pct).abs() < 1.0,
            "{p:?}"
        );
        assert!(
            (a.concealed_pct - a.loss_after_repair_pct).abs() < 3.0,
            "{p:?}"
        );
        assert!(a.mos < 4.0, "10% loss must cost quality: {p:?}");
    }
}

/// Redundant audio (RED, offered by default and accepted by the SFU): each packet the
/// SFU sends carries the previous frame too, so of 10% random loss toward the listeners
/// only two losses in a row (about 1%) reach playout; with plain Opus every loss does.
/// FEC is off in both calls, to see RED alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redundant_audio_rebuilds_lost_packets_before_playout() {
    let _serial = SERIAL.lock().await;
    let lossy = |red| CallConfig {
        duration: Duration::from_secs(8),
        fec: false,
        red,
        ..down(Impairments {
            loss: 0.10,
            ..Impairments::default()
        })
    };
    let with = call(lossy(true)).await;
    let without = call(lossy(false)).await;
    assert!(with.red && !without.red);
    for p in &with.pairs {
        let a = audio(p);
        assert!(a.loss_before_repair_pct > 5.0, "the shim dropped: {p:?}");
        assert!(a.red_recovered > 0, "{p:?}");
        assert!(a.loss_after_repair_pct < 3.0, "RED repairs: {p:?}");
        assert!(a.concealed_pct < 4.0, "the copies play in time: {p:?}");
    }
    for p in &without.pairs {
        let a = audio(p);
        assert_eq!(a.red_recovered, 0, "{p:?}");
        assert!(a.loss_after_repair_pct > 5.0, "nothing repairs: {p:?}");
        assert!(a.concealed_pct > 5.0, "{p:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_delay_raises_mouth_to_ear_delay_by_as_much() {
    let _serial = SERIAL.lock().await;
    let base = call(CallConfig {
        duration: Duration::from_secs(4),
        ..CallConfig::default()
    })
    .await;
    let delayed = call(CallConfig {
        duration: Duration::from_secs(4),
        ..down(Impairments {
            delay_ms: 100.0,
            ..Impairments::default()
        })
    })
    .await;
    let p50 = |r: &CallReport| r.summary.delay_p50_ms;
    let added = p50(&delayed) - p50(&base);
    assert!(
        (added - 100.0).abs() < 25.0,
        "{} -> {} ms: added {added}",
        p50(&base),
        p50(&delayed)
    );
    // Delay alone is not loss: nothing lost or late, and no more concealed than in a
    // clean call (tests above: what is concealed there is playout waiting out a
    // scheduling hiccup of this 2-core machine; a CI run saw two 25 ms events in both
    // directions at once in a 4 s call, 1.25%, with nothing lost or late).
    for p in &delayed.pairs {
        let a = audio(p);
        assert_eq!(a.jitter_buffer.packets_lost, 0, "{p:?}");
        assert_eq!(a.jitter_buffer.late_packets, 0, "{p:?}");
        assert!(a.concealed_pct < 2.0, "delay alone is not loss: {p:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_repairs_video_loss_and_its_absence_shows() {
    let _serial = SERIAL.lock().await;
    let lossy = || Impairments {
        loss: 0.05,
        ..Impairments::default()
    };
    let with = call(CallConfig {
        duration: Duration::from_secs(5),
        video: video(320, 240, 15),
        ..down(lossy())
    })
    .await;
    // Without NACK a picture decodes only while its reference chain is whole, and each
    // break waits for a keyframe (which itself is lost now and then): 5 to 10 fps in most
    // runs, 1.6 fps once. 8 s gives the floor below its margin.
    let without = call(CallConfig {
        duration: Duration::from_secs(8),
        video: video(320, 240, 15),
        nack: false,
        ..down(lossy())
    })
    .await;
    for p in &with.pairs {
        let v = p.video.as_ref().expect("video");
        assert!(
            v.loss_before_repair_pct > 1.0,
            "the shim dropped packets: {p:?}"
        );
        assert!(v.nacks > 0, "{p:?}");
        assert!(v.loss_after_repair_pct < 0.5, "NACK repairs: {p:?}");
        // Of the pictures sent (up to 75: the encoder skips some when the estimate its
        // target follows falls under this loss, as low as 30), repairs that come too
        // late for their frame still freeze the picture now and then (see
        // docs/benchmarking.md), but most are decoded.
        assert!(v.frames_sent >= 25, "{p:?}");
        assert!(v.frames_decoded * 3 >= v.frames_sent * 2, "{p:?}");
    }
    for p in &without.pairs {
        let v = p.video.as_ref().expect("video");
        assert_eq!(v.nacks, 0, "{p:?}");
        assert!(v.loss_after_repair_pct > 1.0, "nothing repairs: {p:?}");
        // Lost packets break frames; the receiver asks for keyframes to recover, and
        // pictures keep coming.
        assert!(v.keyframe_requests > 0, "{p:?}");
        assert!(v.frames_decoded >= 10, "{p:?}");
    }
}

/// Four participants: each receives and decodes the other three's audio and video; one
/// leaves and nobody receives it any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_participants_and_one_leaves() {
    let _serial = SERIAL.lock().await;
    let (target, sfu_addr) = server();
    four_and_one_leaves(&target, sfu_addr).await;
}

/// The same call in a room spread over two SFU shards (`sfu.spread_rooms_above = 1`:
/// the members alternate between the shards, so most frames cross from one shard to
/// the other): the same media, and the admin API's view of the room has everyone,
/// whichever shard reported them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_participants_in_a_room_spread_over_two_shards() {
    let _serial = SERIAL.lock().await;
    let (target, sfu_addr) = server_with(&[
        ("HUDDLE_SFU__SHARDS", "2".to_string()),
        ("HUDDLE_SFU__SPREAD_ROOMS_ABOVE", "1".to_string()),
    ]);
    four_and_one_leaves(&target, sfu_addr).await;
    let metrics = reqwest::get(format!("{}/metrics", target.base))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert!(counter("huddle_sfu_frames_handed_off_total ") > 100);
    assert_eq!(counter("huddle_sfu_handoff_dropped_total "), 0);
}

async fn four_and_one_leaves(target: &Target, sfu_addr: SocketAddr) {
    let mut people = Vec::new();
    for i in 0..4 {
        let setup = setup(
            target,
            sfu_addr,
            ("four", "q", i),
            video(160, 120, 10),
            None,
        )
        .await;
        people.push(Participant::join(setup).await.expect("joins"));
    }
    // Everyone decodes everyone (within 15 s; about 3 s on a quiet machine), and the
    // admin API has the SFU's view of the room.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let checked = match everyone_hears_and_sees_everyone(&people) {
            Ok(()) => admin_view_has_everyone(target).await,
            Err(e) => Err(e),
        };
        match checked {
            Ok(()) => break,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                // What each participant received of each track, for the diagnosis.
                for p in &people {
                    for (sid, h) in p.heard.lock().unwrap().iter() {
                        for t in &h.tracks {
                            eprintln!("{} <- {sid} {:?}: {:?}", p.name, t.kind, t.stats());
                        }
                    }
                }
                panic!("{e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    let leaver = people.pop().expect("four");
    let gone = leaver.sid.clone();
    leaver.leave().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let packets = |p: &Participant| -> u64 {
        let heard = p.heard.lock().unwrap();
        heard.get(&gone).map_or(0, |h| {
            h.tracks
                .iter()
                .map(|t| t.stats().packets_received)
                .sum::<u64>()
        })
    };
    let before: Vec<u64> = people.iter().map(packets).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after: Vec<u64> = people.iter().map(packets).collect();
    assert_eq!(
        before, after,
        "packets of a participant who left still arrive"
    );
    // The others still hear each other.
    for p in &people {
        let heard = p.heard.lock().unwrap();
        for other in people.iter().filter(|o| o.sid != p.sid) {
            let kinds: Vec<TrackKind> = heard[&other.sid].tracks.iter().map(|t| t.kind).collect();
            assert!(kinds.contains(&TrackKind::Audio) && kinds.contains(&TrackKind::Video));
        }
    }
    for p in people {
        p.leave().await;
    }
}

/// Returns early with an error message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        let ok: bool = $cond;
        if !ok {
            return Err(format!($($msg)+));
        }
    };
}

/// Every participant played at least a second of every other's audio, audibly, and
/// decoded ten of its 160x120 pictures.
fn everyone_hears_and_sees_everyone(people: &[Participant]) -> Result<(), String> {
    for p in people {
        let heard = p.heard.lock().unwrap();
        for other in people.iter().filter(|o| o.sid != p.sid) {
            let Some(h) = heard.get(&other.sid) else {
                return Err(format!("{} heard nothing of {}", p.name, other.name));
            };
            let n = h.pcm.len();
            ensure!(
                n >= 48_000,
                "{} played {n} samples of {}",
                p.name,
                other.name
            );
            ensure!(h.pcm.iter().any(|&s| s.abs() > 1000), "inaudible audio");
            ensure!(
                h.pictures >= 10,
                "{} decoded {} pictures",
                p.name,
                h.pictures
            );
            ensure!(h.picture_size == Some((160, 120)), "{:?}", h.picture_size);
        }
    }
    Ok(())
}

/// The admin API's view of room "four": everyone publishes two tracks and receives the
/// other six, unpaused and unlayered, with the cameras' picture size as their keyframes'
/// SPS declares it (the 160x120 the decoders saw).
async fn admin_view_has_everyone(target: &Target) -> Result<(), String> {
    let media: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v1/rooms/four/media", target.base))
        .bearer_auth(&target.api_secret)
        .send()
        .await
        .expect("admin API")
        .json()
        .await
        .expect("JSON");
    let list = media["participants"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ensure!(list.len() == 4, "{media}");
    for p in &list {
        ensure!(p["tracks_published"] == 2, "{p}");
        ensure!(p["tracks_subscribed"] == 6, "{p}");
        ensure!(p["packets_out"].as_u64().unwrap_or(0) > 100, "{p}");
        let published = p["published"].as_array().cloned().unwrap_or_default();
        let Some(video) = published.iter().find(|t| t["kind"] == "video") else {
            return Err(format!("no video: {p}"));
        };
        let size = serde_json::json!({"width": 160, "height": 120});
        ensure!(video["size"] == size, "{p}");
        ensure!(video["bitrate_bps"].as_u64().unwrap_or(0) > 0, "{p}");
        ensure!(video["layers"] == serde_json::json!([]), "{p}");
        let subscribed = p["subscribed"].as_array().cloned().unwrap_or_default();
        ensure!(subscribed.len() == 6, "{p}");
        for t in &subscribed {
            ensure!(t["layer"].is_null() && t["paused"] == false, "{t}");
        }
        let q = p["identity"].as_str().is_some_and(|i| i.starts_with('q'));
        ensure!(q, "{p}");
    }
    let rate = media["totals"]["packets_out_per_sec"]
        .as_f64()
        .unwrap_or(0.0);
    ensure!(rate > 100.0, "{media}");
    Ok(())
}

/// A participant's network changes: its old path stops (the shim it used is gone), it
/// restarts ICE over a new one, and media flows both ways again without rejoining.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_restart_after_a_network_change_keeps_the_call() {
    let _serial = SERIAL.lock().await;
    let (target, sfu_addr) = server();
    let mut people = Vec::new();
    for i in 0..2 {
        let shim = Some(Default::default());
        let setup = setup(&target, sfu_addr, ("moving", "m", i), None, shim).await;
        people.push(Participant::join(setup).await.expect("joins"));
    }
    let received = |p: &Participant, from: &str| -> u64 {
        let heard = p.heard.lock().unwrap();
        heard.get(from).map_or(0, |h| {
            h.tracks
                .iter()
                .map(|t| t.stats().packets_received)
                .sum::<u64>()
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (a, b) = (people[0].sid.clone(), people[1].sid.clone());
    assert!(received(&people[0], &b) > 20 && received(&people[1], &a) > 20);

    people[1]
        .move_to(Default::default(), Default::default())
        .await
        .expect("ICE restarts");
    // Give the restart a moment, then media must flow again both ways on the new path.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (ab0, ba0) = (received(&people[0], &b), received(&people[1], &a));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (ab1, ba1) = (received(&people[0], &b), received(&people[1], &a));
    assert!(ab1 - ab0 >= 40, "m0 hears m1 again: {ab0} -> {ab1}");
    assert!(ba1 - ba0 >= 40, "m1 hears m0 again: {ba0} -> {ba1}");
    let (up, down) = people[1].shim_stats().expect("the new shim");
    assert!(up.delivered > 40 && down.delivered > 40, "{up:?} {down:?}");
    for p in people {
        p.leave().await;
    }
}

/// Loss between a publisher and the SFU: the SFU must not hold later audio back while
/// waiting for a lost packet (it did, 300 ms), the listeners see the loss as concealment,
/// and the SFU's NACKs toward the publisher repair its video.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_loss_adds_no_delay_and_video_is_repaired() {
    let _serial = SERIAL.lock().await;
    // Plain Opus: with RED the SFU rebuilds most of the lost audio (0.8% was concealed
    // in one run), and the audio loss this test sees the impairment by would be gone
    // (the RED tests cover that).
    let report = call(CallConfig {
        duration: Duration::from_secs(5),
        video: video(320, 240, 15),
        red: false,
        up: Impairments {
            loss: 0.05,
            ..Impairments::default()
        },
        ..CallConfig::default()
    })
    .await;
    for p in &report.pairs {
        let a = audio(p);
        assert!(a.measured.delay_p50_ms < 150.0, "audio held back: {p:?}");
        assert!(a.effective_loss_pct > 1.0, "the loss is seen: {p:?}");
        let v = p.video.as_ref().expect("video");
        assert!(v.loss_after_repair_pct < 0.5, "{p:?}");
        assert!(v.frames_decoded >= 50, "{p:?}");
    }
}

/// Jitter that reorders packets between a publisher and the SFU: the SFU puts them back
/// in order before forwarding (str0m holds an overtaken packet's successors back), and
/// writes them out in that order, so the listeners lose nothing. The SFU used to
/// forward the late packet after the ones that overtook it, under new sequence
/// numbers: 5.3-5.7% of the audio was then lost after repair, MOS 3.5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reordering_reaches_listeners_in_order() {
    let _serial = SERIAL.lock().await;
    let report = call(CallConfig {
        duration: Duration::from_secs(5),
        up: Impairments {
            jitter_ms: 30.0,
            reorder: true,
            ..Impairments::default()
        },
        ..CallConfig::default()
    })
    .await;
    for p in &report.pairs {
        let a = audio(p);
        assert!(a.loss_after_repair_pct < 0.5, "{p:?}");
        assert!(a.measured.delay_p50_ms < 150.0, "{p:?}");
    }
}
