//! `sfu-load`: forwarding capacity of the SFU. Rooms of synthetic WebRTC participants
//! (str0m peers in this process: real ICE, DTLS-SRTP and RTP) join through the real
//! signalling protocol; each publishes a 20 ms Opus-like audio track (50 packets/s, with
//! the RFC 6464 level extension) and, in video mode, an H.264-like track, and receives
//! everyone else in its room. Each step adds rooms, waits until every participant
//! receives every other, then measures over a window:
//!
//! - forwarded packets/s as received by all subscribers, and the server's own
//!   `huddle_sfu_packets_out` rate;
//! - CPU of the server process (user + system, in cores) and forwarded packets per
//!   CPU-second, its RSS, and the CPU of this process (the clients compete for the same
//!   cores on a small machine);
//! - frame loss (gaps in the senders' frame numbers, end to end) and added latency:
//!   the time the frame's last datagram reached the subscriber's socket (the kernel's
//!   stamp) minus its send time, which on loopback is the SFU's latency plus the
//!   sender's packetizing; and the time the subscriber read it, which adds the clients'
//!   own scheduling.
//!
//! The ramp stops at the first step whose loss or p99 latency exceeds the limits, or
//! where a participant misses a sender; the last good step is the capacity.
//!
//! JSON report: see docs/benchmarking.md "SFU load" ([`Report`], [`Step`]).

mod link;
mod payload;
mod peer;
mod probe;
mod shards;
mod signalling;
mod stamp;
mod tally;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use peer::{MediaSpec, VideoSpec};

use crate::report::Percentiles;
use crate::server::Target;
use crate::{BenchError, Result};
use peer::PeerStats;
use shards::Shards;
use signalling::{Participant, SignalStats};
use tally::{Kind, Window};

#[derive(Debug, Clone)]
pub struct Options {
    /// Rooms added at each step.
    pub rooms_per_step: usize,
    /// Participants per room.
    pub participants: usize,
    /// Of those, how many publish (the first ones); the others only receive.
    pub publishers: usize,
    /// The ramp ends at this many rooms.
    pub max_rooms: usize,
    /// Measurement window of a step.
    pub step: Duration,
    /// Time between everyone receiving everyone and the window.
    pub settle: Duration,
    /// How long a step's new participants may take to join and receive every other.
    pub setup_timeout: Duration,
    /// Participants set up at the same time.
    pub setup_concurrency: usize,
    pub media: MediaSpec,
    /// Threads of synthetic peers.
    pub client_threads: usize,
    /// A step with more frame loss than this is degraded.
    pub max_loss_percent: f64,
    /// A step with a higher p99 added latency than this is degraded.
    pub max_p99_ms: f64,
    /// Participants connect over ICE-TCP (RFC 6544, to the SFU's passive candidates)
    /// instead of UDP; their latency is then taken when a frame is read (no kernel
    /// stamp).
    pub tcp: bool,
}

/// One step of the ramp.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub rooms: usize,
    pub participants: usize,
    /// Length of the measurement window.
    pub seconds: f64,
    /// (sender, kind) streams every participant should receive, summed.
    pub streams_expected: u64,
    /// Of those, streams that delivered frames in the window.
    pub streams_active: u64,
    pub frames_expected: u64,
    pub frames_received: u64,
    pub loss_percent: f64,
    /// Audio frames (= packets) received per second by all subscribers, and what the
    /// rooms should deliver: publishers × (participants − 1) × 50 per room.
    pub audio_packets_per_second: f64,
    pub audio_packets_per_second_expected: f64,
    /// RTP packets received per second by all subscribers, audio and video.
    pub forwarded_packets_per_second: f64,
    /// The server's `huddle_sfu_packets_in`/`_out` rates (datagrams, RTCP and STUN too).
    pub server_packets_in_per_second: Option<f64>,
    pub server_packets_out_per_second: Option<f64>,
    /// Increase of every `huddle_sfu_*_total` counter over the window (drops, NACKs,
    /// keyframe requests…), to see why a step degraded.
    pub server_counters: BTreeMap<String, f64>,
    /// Every other `huddle_sfu_*` value at the window's end (gauges: peers, rooms, ICE-TCP
    /// connections…).
    pub server_gauges: BTreeMap<String, f64>,
    /// CPU of the server process, in cores (user + system over the window).
    pub sfu_cpu_cores: Option<f64>,
    /// `forwarded_packets_per_second` / `sfu_cpu_cores`.
    pub packets_per_cpu_second: Option<f64>,
    pub rss_bytes: Option<u64>,
    /// CPU of the benchmark process (clients and signalling), in cores.
    pub client_cpu_cores: Option<f64>,
    /// Times a client sender fell over 100 ms behind schedule (its thread was overloaded).
    pub client_send_slips: u64,
    /// Arrival at the subscriber's socket (kernel stamp) minus send time of every frame
    /// received in the window.
    pub latency: Percentiles,
    /// The same to when the subscriber read it (adds the clients' scheduling); the
    /// latency limit applies to this one.
    pub read_latency: Percentiles,
    /// Within the loss and latency limits, with every stream delivering.
    pub good: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Capacity {
    pub rooms: usize,
    pub participants: usize,
    pub forwarded_packets_per_second: f64,
    pub packets_per_cpu_second: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    /// `audio` or `video`.
    pub mode: &'static str,
    /// How the participants reach the SFU: `udp` or `tcp` (ICE-TCP).
    pub transport: &'static str,
    pub participants_per_room: usize,
    /// Participants per room that publish; the others only receive.
    pub publishers_per_room: usize,
    pub rooms_per_step: usize,
    pub max_rooms: usize,
    pub step_seconds: f64,
    pub audio_bytes: usize,
    pub video_fps: Option<u32>,
    pub video_frame_bytes: Option<usize>,
    pub video_keyframe_bytes: Option<usize>,
    pub client_threads: usize,
    pub max_loss_percent: f64,
    pub max_p99_ms: f64,
    pub steps: Vec<Step>,
    /// The last good step; `None` when the first step already degraded.
    pub capacity: Option<Capacity>,
    pub stop_reason: String,
    /// Signalling `error` responses (other than `stale_offer`) and `media_left` pushes.
    pub signalling_errors: u64,
    pub media_left: u64,
}

struct Member {
    /// The participant's sender id in media markers.
    id: u32,
    /// Index of the participant's room.
    room: usize,
    /// Whether it publishes (else it only receives).
    publishes: bool,
    stats: Arc<PeerStats>,
}

/// Everything a run keeps while it ramps.
struct Run<'a> {
    target: &'a Target,
    opts: &'a Options,
    http: reqwest::Client,
    run_id: String,
    epoch: Instant,
    /// Between which addresses the participants' media goes.
    route: signalling::Route,
    shards: Shards,
    cancel: CancellationToken,
    signals: Arc<SignalStats>,
    members: Vec<Member>,
    signal_tasks: Vec<tokio::task::JoinHandle<()>>,
    rooms: usize,
}

fn kinds(opts: &Options) -> u64 {
    if opts.media.video.is_some() { 2 } else { 1 }
}

/// Streams a member should receive: every kind of every other publisher of its room.
fn streams_wanted(opts: &Options, m: &Member) -> u64 {
    (opts.publishers as u64 - u64::from(m.publishes)) * kinds(opts)
}

impl Run<'_> {
    /// Adds rooms up to `rooms`, each with `participants` members joined and negotiated.
    async fn grow(&mut self, rooms: usize) -> Result<()> {
        let mut new = Vec::new();
        for room in self.rooms..rooms {
            for i in 0..self.opts.participants {
                let publishes = i < self.opts.publishers;
                let id = u32::try_from(self.members.len() + new.len())
                    .map_err(|_| BenchError::Protocol("too many participants".into()))?;
                let stats = Arc::new(PeerStats::default());
                new.push((
                    Participant {
                        id,
                        room: format!("sfu-load-{}-{room}", self.run_id),
                        identity: format!("p{}-{id}", self.run_id),
                        spec: self.opts.media.clone(),
                        publish: publishes,
                        epoch: self.epoch,
                        stats: stats.clone(),
                        shard: self.shards.next(),
                        route: self.route,
                        tcp: self.opts.tcp,
                    },
                    Member {
                        id,
                        room,
                        publishes,
                        stats,
                    },
                ));
            }
        }
        let (target, http, signals, cancel) =
            (self.target, &self.http, &self.signals, &self.cancel);
        let timeout = self.opts.setup_timeout;
        let mut joins = futures_util::stream::iter(new.into_iter().map(|(p, m)| async move {
            let r = tokio::time::timeout(
                timeout,
                signalling::connect(http, target, p, signals.clone(), cancel.clone()),
            )
            .await;
            (r, m)
        }))
        .buffer_unordered(self.opts.setup_concurrency.max(1));
        while let Some((r, m)) = joins.next().await {
            match r {
                Ok(Ok(task)) => {
                    self.signal_tasks.push(task);
                    self.members.push(m);
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(BenchError::Protocol(format!(
                        "a participant did not join within {timeout:?}"
                    )));
                }
            }
        }
        self.rooms = rooms;
        Ok(())
    }

    /// Waits until every participant receives every stream of its room.
    async fn wait_flowing(&self) -> Result<()> {
        for m in &self.members {
            if let Ok(mut t) = m.stats.tally.lock() {
                let _ = t.take_window();
            }
        }
        let deadline = Instant::now() + self.opts.setup_timeout;
        loop {
            let mut missing = 0;
            let mut short = Vec::new();
            for (i, m) in self.members.iter().enumerate() {
                if m.stats.ended.load(Ordering::Acquire) {
                    return Err(BenchError::Protocol(format!(
                        "participant {i}'s media ended"
                    )));
                }
                let active = m
                    .stats
                    .tally
                    .lock()
                    .map(|t| t.active_streams())
                    .unwrap_or(0);
                let want = streams_wanted(self.opts, m);
                let lacking = want.saturating_sub(active as u64);
                if lacking > 0 {
                    missing += lacking;
                    short.push(format!(
                        "peer {} (room {}): {active} of {want} streams, {}connected (ICE {}), {} SFU offers applied, {} receive m-lines, nothing from {}",
                        m.id,
                        m.room,
                        if m.stats.connected.load(Ordering::Relaxed) { "" } else { "not " },
                        m.stats.ice_state.lock().map(|s| s.clone()).unwrap_or_default(),
                        m.stats.offers_applied.load(Ordering::Relaxed),
                        m.stats.recv_mlines.load(Ordering::Relaxed),
                        self.silent_senders(m)
                    ));
                }
            }
            if missing == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                short.truncate(8);
                return Err(BenchError::Protocol(format!(
                    "{missing} streams were not received within {:?}: {}",
                    self.opts.setup_timeout,
                    short.join("; ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The room mates `m` has received nothing from, with what they sent, for diagnostics.
    fn silent_senders(&self, m: &Member) -> String {
        let Ok(tally) = m.stats.tally.lock() else {
            return String::new();
        };
        let mut out = Vec::new();
        for o in self
            .members
            .iter()
            .filter(|o| o.room == m.room && o.id != m.id && o.publishes)
        {
            for kind in [Kind::Audio, Kind::Video] {
                let publishes = kind == Kind::Audio || self.opts.media.video.is_some();
                if publishes && !tally.is_active(o.id, kind) {
                    out.push(format!(
                        "{} {kind:?} ({} frames sent)",
                        o.id,
                        o.stats.frames_sent.load(Ordering::Relaxed)
                    ));
                }
            }
        }
        out.join(", ")
    }

    fn take_windows(&self) -> (Window, u64) {
        let mut all = Window::default();
        let mut silent = 0;
        for m in &self.members {
            let w = m
                .stats
                .tally
                .lock()
                .map(|mut t| t.take_window())
                .unwrap_or_default();
            silent += streams_wanted(self.opts, m).saturating_sub(w.senders.len() as u64);
            all.merge(w);
        }
        (all, silent)
    }

    fn slips(&self) -> u64 {
        self.members
            .iter()
            .map(|m| m.stats.send_slips.load(Ordering::Relaxed))
            .sum()
    }

    /// Measures one window at the current size.
    async fn measure(&self) -> Step {
        let pid = self.target.pid().map(|p| p.to_string());
        let server_cpu = || pid.as_deref().and_then(probe::cpu_seconds);
        let _ = self.take_windows();
        let (m0, cpu0, own0, slips0) = (
            probe::sfu_metrics(&self.http, &self.target.base).await,
            server_cpu(),
            probe::cpu_seconds("self"),
            self.slips(),
        );
        let t0 = Instant::now();
        tokio::time::sleep(self.opts.step).await;
        let (window, silent) = self.take_windows();
        let secs = t0.elapsed().as_secs_f64();
        let (m1, cpu1, own1) = (
            probe::sfu_metrics(&self.http, &self.target.base).await,
            server_cpu(),
            probe::cpu_seconds("self"),
        );
        let rate = |name: &str| {
            let get =
                |m: &HashMap<String, f64>| m.get(&format!("{name}_total")).or(m.get(name)).copied();
            Some((get(&m1)? - get(&m0)?) / secs)
        };
        let server_counters = m1
            .iter()
            .filter(|(k, _)| k.ends_with("_total"))
            .filter_map(|(k, v)| {
                let d = v - m0.get(k)?;
                Some((k.trim_start_matches("huddle_sfu_").to_owned(), d))
            })
            .collect();
        let server_gauges = m1
            .iter()
            .filter(|(k, _)| !k.ends_with("_total"))
            .map(|(k, v)| (k.trim_start_matches("huddle_sfu_").to_owned(), *v))
            .collect();
        let cores = |a: Option<f64>, b: Option<f64>| Some((b? - a?) / secs);
        let sfu_cpu_cores = cores(cpu0, cpu1);
        let forwarded = window.packets as f64 / secs;
        let (n, publishers) = (self.opts.participants as f64, self.opts.publishers as f64);
        let loss_percent = if window.frames_expected == 0 {
            100.0
        } else {
            100.0
                * window
                    .frames_expected
                    .saturating_sub(window.frames_received) as f64
                / window.frames_expected as f64
        };
        let percentiles = |us: &[u32]| {
            let mut lat: Vec<Duration> = us
                .iter()
                .map(|&us| Duration::from_micros(u64::from(us)))
                .collect();
            Percentiles::of(&mut lat)
        };
        let latency = percentiles(&window.latency_us);
        let read_latency = percentiles(&window.read_latency_us);
        let streams_expected = self
            .members
            .iter()
            .map(|m| streams_wanted(self.opts, m))
            .sum();
        let good = silent == 0
            && loss_percent <= self.opts.max_loss_percent
            && read_latency.p99_ms <= self.opts.max_p99_ms;
        Step {
            rooms: self.rooms,
            participants: self.members.len(),
            seconds: secs,
            streams_expected,
            streams_active: streams_expected.saturating_sub(silent),
            frames_expected: window.frames_expected,
            frames_received: window.frames_received,
            loss_percent,
            audio_packets_per_second: window.audio_frames as f64 / secs,
            audio_packets_per_second_expected: self.rooms as f64 * publishers * (n - 1.0) * 50.0,
            forwarded_packets_per_second: forwarded,
            server_packets_in_per_second: rate("huddle_sfu_packets_in"),
            server_packets_out_per_second: rate("huddle_sfu_packets_out"),
            server_counters,
            server_gauges,
            sfu_cpu_cores,
            packets_per_cpu_second: sfu_cpu_cores.filter(|c| *c > 0.0).map(|c| forwarded / c),
            rss_bytes: self.target.rss_bytes(),
            client_cpu_cores: cores(own0, own1),
            client_send_slips: self.slips() - slips0,
            latency,
            read_latency,
            good,
        }
    }
}

/// Ramps the load on `target` (whose SFU must be on) and reports every step.
pub async fn run(target: &Target, opts: &Options, progress: impl Fn(&str)) -> Result<Report> {
    if opts.participants < 2 || opts.rooms_per_step == 0 || opts.max_rooms == 0 {
        return Err(BenchError::Protocol(
            "sfu-load needs at least 2 participants per room and 1 room".into(),
        ));
    }
    if !(1..=opts.participants).contains(&opts.publishers) {
        return Err(BenchError::Protocol(
            "sfu-load needs 1 to `participants` publishers per room".into(),
        ));
    }
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let epoch = Instant::now();
    let mut run = Run {
        target,
        opts,
        http: reqwest::Client::new(),
        // Unique per run, so two runs against one server never share rooms or
        // identities (as in chat-load).
        run_id: format!("{:016x}", crate::server::rand_u64()),
        epoch,
        route: signalling::route_to(&target.base)?,
        shards: Shards::start(opts.client_threads)?,
        cancel: CancellationToken::new(),
        signals: Arc::default(),
        members: Vec::new(),
        signal_tasks: Vec::new(),
        rooms: 0,
    };
    let mut steps: Vec<Step> = Vec::new();
    let stop_reason = loop {
        let rooms = (run.rooms + opts.rooms_per_step).min(opts.max_rooms);
        let setup = async {
            run.grow(rooms).await?;
            run.wait_flowing().await
        };
        if let Err(e) = setup.await {
            break format!("{rooms} rooms could not be set up: {e}");
        }
        tokio::time::sleep(opts.settle).await;
        let step = run.measure().await;
        progress(&step_line(&step));
        let good = step.good;
        steps.push(step);
        if !good {
            break "quality degraded (loss, p99 latency or a silent stream)".into();
        }
        if run.rooms >= opts.max_rooms {
            break "reached the maximum number of rooms".into();
        }
    };
    run.cancel.cancel();
    for t in run.signal_tasks.drain(..) {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    let shards = run.shards;
    let _ = tokio::task::spawn_blocking(move || shards.stop()).await;
    let capacity = steps
        .iter()
        .take_while(|s| s.good)
        .last()
        .map(|s| Capacity {
            rooms: s.rooms,
            participants: s.participants,
            forwarded_packets_per_second: s.forwarded_packets_per_second,
            packets_per_cpu_second: s.packets_per_cpu_second,
        });
    let video = opts.media.video.as_ref();
    Ok(Report {
        scenario: "sfu-load",
        mode: if video.is_some() { "video" } else { "audio" },
        transport: if opts.tcp { "tcp" } else { "udp" },
        participants_per_room: opts.participants,
        publishers_per_room: opts.publishers,
        rooms_per_step: opts.rooms_per_step,
        max_rooms: opts.max_rooms,
        step_seconds: opts.step.as_secs_f64(),
        audio_bytes: opts.media.audio_bytes,
        video_fps: video.map(|v| v.fps),
        video_frame_bytes: video.map(|v| v.frame_bytes),
        video_keyframe_bytes: video.map(|v| v.keyframe_bytes),
        client_threads: opts.client_threads,
        max_loss_percent: opts.max_loss_percent,
        max_p99_ms: opts.max_p99_ms,
        steps,
        capacity,
        stop_reason,
        signalling_errors: run.signals.errors.load(Ordering::Relaxed),
        media_left: run.signals.media_left.load(Ordering::Relaxed),
    })
}

fn opt(v: Option<f64>, scale: f64, prec: usize) -> String {
    v.map_or("-".into(), |v| format!("{:.prec$}", v * scale))
}

fn step_line(s: &Step) -> String {
    format!(
        "{} rooms, {} peers: {:.0} pkt/s forwarded (server out {}/s), SFU {} cores, {} pkt/CPU-s, \
         clients {} cores, loss {:.2}%, latency p50 {:.2} / p99 {:.2} ms (read: p99 {:.2} ms){}",
        s.rooms,
        s.participants,
        s.forwarded_packets_per_second,
        opt(s.server_packets_out_per_second, 1.0, 0),
        opt(s.sfu_cpu_cores, 1.0, 2),
        opt(s.packets_per_cpu_second, 1.0, 0),
        opt(s.client_cpu_cores, 1.0, 2),
        s.loss_percent,
        s.latency.p50_ms,
        s.latency.p99_ms,
        s.read_latency.p99_ms,
        if s.good { "" } else { "  DEGRADED" }
    )
}

/// The steps as a table, and the capacity.
pub fn summary(r: &Report) -> String {
    let mut s = format!(
        "sfu-load ({} over {}, {} per room, {} publishing)\nrooms  peers  fwd pkt/s  srv out/s  SFU cores  pkt/CPU-s  RSS MiB  client cores  loss %  p50/p99 ms      read p99    ok\n",
        r.mode, r.transport, r.participants_per_room, r.publishers_per_room
    );
    for st in &r.steps {
        s += &format!(
            "{:>5}  {:>5}  {:>9.0}  {:>9}  {:>9}  {:>9}  {:>7}  {:>12}  {:>6.2}  {:>5.2} / {:<6.2}  {:>8.2}  {}\n",
            st.rooms,
            st.participants,
            st.forwarded_packets_per_second,
            opt(st.server_packets_out_per_second, 1.0, 0),
            opt(st.sfu_cpu_cores, 1.0, 2),
            opt(st.packets_per_cpu_second, 1.0, 0),
            opt(st.rss_bytes.map(|b| b as f64), 1.0 / 1048576.0, 1),
            opt(st.client_cpu_cores, 1.0, 2),
            st.loss_percent,
            st.latency.p50_ms,
            st.latency.p99_ms,
            st.read_latency.p99_ms,
            if st.good { "yes" } else { "no" }
        );
    }
    match &r.capacity {
        Some(c) => {
            s += &format!(
                "capacity: {} rooms, {} participants, {:.0} forwarded pkt/s ({} pkt per SFU CPU-second)\n",
                c.rooms,
                c.participants,
                c.forwarded_packets_per_second,
                opt(c.packets_per_cpu_second, 1.0, 0)
            );
        }
        None => s += "capacity: none (the first step degraded)\n",
    }
    s += &format!("stopped: {}\n", r.stop_reason);
    s
}
