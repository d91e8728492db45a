//! Forwarding cost: the SFU runs alone on one thread (a current-thread runtime) while
//! in-process str0m clients publish; the SFU thread's CPU time (from
//! /proc/thread-self/stat) and the packets it sent give packets per CPU-second.
//! Ignored by default (a measurement, not a check); run with
//! `cargo test -p huddle-sfu --release --test sfu_load -- --ignored --nocapture`.

mod common;

use std::time::{Duration, Instant};

use common::{Call, VideoCodec, eventually};
use huddle_sfu::{Sfu, SfuConfig, SfuEvents, SfuHandle, TrackKind};
use tokio::sync::{mpsc, oneshot};

/// CPU seconds (user + system) used by the calling thread.
fn thread_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("procfs");
    // Fields after the ")" that closes the command name; utime and stime are 14 and 15.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    ticks / hz
}

type Probe = oneshot::Sender<f64>;

/// Starts the SFU on a thread of its own; the returned sender asks that thread for its
/// CPU time.
fn sfu_on_own_thread(estimate: bool) -> (SfuHandle, SfuEvents, mpsc::UnboundedSender<Probe>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new().name("sfu-driver".into());
    thread
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut config = SfuConfig {
                    bind: "127.0.0.1:0".parse().unwrap(),
                    ..SfuConfig::default()
                };
                config.bandwidth.estimate = estimate;
                let (sfu, events) = Sfu::start(config).await.unwrap();
                let (ptx, mut prx) = mpsc::unbounded_channel::<Probe>();
                tx.send((sfu, events, ptx)).unwrap();
                while let Some(p) = prx.recv().await {
                    let _ = p.send(thread_cpu_secs());
                }
            });
        })
        .unwrap();
    rx.recv().unwrap()
}

async fn cpu(probe: &mpsc::UnboundedSender<Probe>) -> f64 {
    let (tx, rx) = oneshot::channel();
    probe.send(tx).unwrap();
    rx.await.unwrap()
}

async fn measure(label: &str, participants: usize, video: Option<VideoCodec>, estimate: bool) {
    let (sfu, events, probe) = sfu_on_own_thread(estimate);
    let mut call = Call::with_sfu(sfu, events);
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
        cpu(&probe).await,
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (p1, f1, b1, c1) = (
        m.packets_out.get(),
        m.frames_forwarded.get(),
        m.bytes_out.get(),
        cpu(&probe).await,
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --release -- --ignored --nocapture"]
async fn forwarding_cost_audio_room() {
    measure("audio-only room", 12, None, true).await;
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
