//! Forwarding cost: the SFU runs with one shard (its own thread) while in-process str0m
//! clients publish; that thread's CPU time (from /proc/self/task/*/stat) and the
//! packets it sent give packets per CPU-second.
//! Ignored by default (a measurement, not a check); run with
//! `cargo test -p huddle-sfu --release --test sfu_load -- --ignored --nocapture`.

mod common;

use std::time::{Duration, Instant};

use common::{Call, VideoCodec, eventually, sfu_threads, stat_ticks};
use huddle_sfu::{Sfu, SfuConfig, SfuEvents, SfuHandle, TrackKind};

/// CPU seconds (user + system) used so far by the SFU's shard threads (`huddle-sfu-N`,
/// which `Sfu::start` spawns).
fn sfu_cpu_secs() -> f64 {
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    let ticks: u64 = sfu_threads()
        .iter()
        .filter_map(|task| std::fs::read_to_string(task.join("stat")).ok())
        .map(|stat| stat_ticks(&stat))
        .sum();
    ticks as f64 / hz
}

/// An SFU with one shard (one thread, `huddle-sfu-0`).
async fn one_shard_sfu(estimate: bool, tcp: bool) -> (SfuHandle, SfuEvents) {
    let mut config = SfuConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        shards: 1,
        ..SfuConfig::default()
    };
    config.bandwidth.estimate = estimate;
    if tcp {
        config.tcp_bind = Some("127.0.0.1:0".parse().unwrap());
    }
    Sfu::start(config).await.unwrap()
}

/// What one measurement found: packets per SFU CPU-second, and the p50 and p99 of
/// audio write-to-receive.
struct Found {
    per_cpu_s: f64,
    p50: Duration,
    p99: Duration,
}

async fn measure(
    label: &str,
    participants: usize,
    video: Option<VideoCodec>,
    estimate: bool,
) -> Found {
    measure_on(label, participants, video, estimate, false).await
}

/// `tcp`: every client reaches the SFU over ICE-TCP instead of UDP.
async fn measure_on(
    label: &str,
    participants: usize,
    video: Option<VideoCodec>,
    estimate: bool,
    tcp: bool,
) -> Found {
    let (sfu, events) = one_shard_sfu(estimate, tcp).await;
    let mut call = Call::with_sfu(sfu, events);
    call.tcp = tcp;
    let names: Vec<String> = (0..participants).map(|i| format!("p{i}")).collect();
    for n in &names {
        call.join_with("load", n, video).await;
    }
    let everyone = eventually(Duration::from_secs(30), || {
        names.iter().all(|me| {
            names
                .iter()
                .filter(|o| *o != me)
                .all(|o| call.client(me).frames_from(o, TrackKind::Audio) > 0)
        })
    })
    .await;
    assert!(everyone, "{label}: not every pair connected");
    tokio::time::sleep(Duration::from_secs(2)).await;

    for c in call.clients.values() {
        c.seen.lock().unwrap().audio_latency.clear();
    }
    let m = call.sfu.metrics().clone();
    let (p0, f0, b0, c0, t0) = (
        m.packets_out.get(),
        m.frames_forwarded.get(),
        m.bytes_out.get(),
        sfu_cpu_secs(),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (p1, f1, b1, c1) = (
        m.packets_out.get(),
        m.frames_forwarded.get(),
        m.bytes_out.get(),
        sfu_cpu_secs(),
    );
    let wall = t0.elapsed().as_secs_f64();
    let cpu_s = c1 - c0;
    let pps = (p1 - p0) as f64 / wall;
    println!(
        "{label}: {participants} participants, {:.0} packets/s out ({:.0} frames/s, {:.1} Mbit/s), \
         SFU thread CPU {:.2} s in {:.1} s ({:.0}% of a core) -> {:.0} packets per CPU-second",
        pps,
        (f1 - f0) as f64 / wall,
        (b1 - b0) as f64 * 8.0 / wall / 1e6,
        cpu_s,
        wall,
        100.0 * cpu_s / wall,
        (p1 - p0) as f64 / cpu_s.max(1e-9),
    );
    let mut lat: Vec<Duration> = call
        .clients
        .values()
        .flat_map(|c| c.seen.lock().unwrap().audio_latency.clone())
        .collect();
    lat.sort();
    let q = |f: f64| lat[((lat.len() - 1) as f64 * f) as usize];
    println!(
        "{label}: audio write-to-receive through the SFU (client -> SFU -> client, {} frames): \
         p50 {:?}, p99 {:?}, max {:?}",
        lat.len(),
        q(0.5),
        q(0.99),
        q(1.0)
    );
    assert!(p1 > p0);
    call.sfu.shutdown().await.unwrap();
    Found {
        per_cpu_s: (p1 - p0) as f64 / cpu_s.max(1e-9),
        p50: q(0.5),
        p99: q(0.99),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --release -- --ignored --nocapture"]
async fn forwarding_cost_audio_room() {
    measure("audio-only room", 12, None, true).await;
}

/// The same audio room with every client on ICE-TCP, against UDP in the same run
/// (alternating, two rounds each), as a ratio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --release -- --ignored --nocapture"]
async fn forwarding_cost_audio_room_over_ice_tcp() {
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    for round in 0..2 {
        udp.push(measure_on(&format!("udp {round}"), 12, None, true, false).await);
        tcp.push(measure_on(&format!("tcp {round}"), 12, None, true, true).await);
    }
    let mean = |f: &[Found]| f.iter().map(|x| x.per_cpu_s).sum::<f64>() / f.len() as f64;
    println!(
        "ICE-TCP against UDP: {:.0} against {:.0} packets per CPU-second (ratio {:.2}); \
         audio p50/p99 {:?}/{:?} against {:?}/{:?}",
        mean(&tcp),
        mean(&udp),
        mean(&tcp) / mean(&udp),
        tcp.iter().map(|f| f.p50).collect::<Vec<_>>(),
        tcp.iter().map(|f| f.p99).collect::<Vec<_>>(),
        udp.iter().map(|f| f.p50).collect::<Vec<_>>(),
        udp.iter().map(|f| f.p99).collect::<Vec<_>>(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --release -- --ignored --nocapture"]
async fn forwarding_cost_video_room() {
    measure("audio+video room", 6, Some(VideoCodec::H264), true).await;
}

/// The same room with bandwidth estimation off: what str0m's estimator, pacer and
/// probing cost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --release -- --ignored --nocapture"]
async fn forwarding_cost_video_room_without_estimation() {
    measure(
        "audio+video room, no estimation",
        6,
        Some(VideoCodec::H264),
        false,
    )
    .await;
}

/// Every participant publishes three simulcast layers; each subscriber gets one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --release -- --ignored --nocapture"]
async fn forwarding_cost_simulcast_room() {
    measure("simulcast room", 6, Some(VideoCodec::H264Simulcast), true).await;
}
