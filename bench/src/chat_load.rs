//! `chat-load`: end-to-end chat throughput and latency. One member sends into a
//! conversation of M members (a one-to-one conversation for M = 2, a room's chat
//! otherwise); every other member has a connected device that receives and acknowledges.
//! A message counts as delivered when it reached every other member's device.
//!
//! Two phases per size: **throughput** (the sender keeps a window of unacked messages in
//! flight; messages fully delivered per second) and **latency** (the sender paces messages
//! at a fixed rate, by default half the measured throughput; send → durable ack and
//! send → delivered percentiles).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

use crate::report::Percentiles;
use crate::server::Target;
use crate::signal_load::{Ws, next_json};
use crate::{BenchError, Result};

#[derive(Debug, Clone)]
pub struct Options {
    /// Members of the conversation (the sender included).
    pub members: usize,
    /// Messages sent in the throughput phase.
    pub messages: usize,
    /// Unacked messages the sender keeps in flight in the throughput phase.
    pub window: usize,
    /// Messages per second in the latency phase (`None`: half the measured throughput).
    pub rate: Option<f64>,
    /// Length of the latency phase.
    pub latency_duration: Duration,
    /// Label of the store the server runs on, for the report.
    pub store: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub store: String,
    pub members: usize,
    pub messages: usize,
    pub window: usize,
    /// Messages delivered to every other member per second.
    pub messages_per_second: f64,
    /// Deliveries (message × receiving device) per second.
    pub deliveries_per_second: f64,
    pub latency_rate: f64,
    /// Send → `chat_ack` (committed) at `latency_rate`.
    pub ack: Percentiles,
    /// Send → received by a member's device at `latency_rate`.
    pub delivery: Percentiles,
    /// From the server's metrics over the whole run: entries put on connections by the
    /// live path and by catch-up reads from the store (a device that fell behind).
    pub delivered_live: Option<u64>,
    pub delivered_catch_up: Option<u64>,
    /// Mean requests per store transaction (group commit).
    pub mean_commit_batch: Option<f64>,
}

/// Reads one sample of the server's Prometheus text.
async fn metric(target: &Target, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{}/metrics", target.base))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Just the fields the benchmark reads from each frame.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(default)]
    client_msg_id: Option<&'a str>,
    #[serde(default)]
    conversation: Option<&'a str>,
    #[serde(default)]
    seq: Option<i64>,
}

/// Connects, syncs as `device` and returns the socket once `chat_synced` arrived.
async fn device(target: &Target, identity: &str, room: &str) -> Result<Ws> {
    let t = target.token(identity, room).await?;
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(
        format!("{}?access_token={t}", target.ws_url()),
        None,
        true,
    )
    .await?;
    let welcome = next_json(&mut ws).await?;
    if welcome["type"] != "welcome" {
        return Err(BenchError::Protocol(format!(
            "expected welcome, got {welcome}"
        )));
    }
    ws.send(Message::text(
        json!({"type":"chat_sync","id":"s","device":format!("{identity}-bench")}).to_string(),
    ))
    .await?;
    loop {
        let m = next_json(&mut ws).await?;
        if m["id"] == "s" {
            if m["type"] != "chat_synced" {
                return Err(BenchError::Protocol(format!("sync failed: {m}")));
            }
            return Ok(ws);
        }
    }
}

/// Shared between the sender and the receivers of one phase.
struct Clock {
    start: Instant,
    /// Send time of message n, in µs since `start` (0: not sent).
    sent_us: Vec<AtomicU64>,
    /// Receptions of message n by other members' devices.
    received: Vec<AtomicUsize>,
    /// Messages received by every other member.
    complete: AtomicUsize,
    delivery_us: Mutex<Vec<u64>>,
}

impl Clock {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            sent_us: (0..n).map(|_| AtomicU64::new(0)).collect(),
            received: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            complete: AtomicUsize::new(0),
            delivery_us: Mutex::new(Vec::with_capacity(n)),
        })
    }

    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64 + 1
    }
}

fn index_of(client_msg_id: &str, prefix: &str) -> Option<usize> {
    client_msg_id.strip_prefix(prefix)?.parse().ok()
}

/// Reads a receiver's socket until it saw `n` messages of the phase.
async fn receive(
    mut ws: Ws,
    clock: Arc<Clock>,
    prefix: String,
    n: usize,
    receivers: usize,
    record: bool,
) -> Result<Ws> {
    let mut seen = 0;
    let mut lat = Vec::new();
    let mut since_ack = 0;
    while seen < n {
        let text = match ws.next().await {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => return Err(BenchError::Protocol("receiver connection ended".into())),
        };
        let f: Frame =
            serde_json::from_str(&text).map_err(|e| BenchError::Protocol(e.to_string()))?;
        if f.kind != "chat_message" {
            continue;
        }
        let Some(i) = f.client_msg_id.and_then(|id| index_of(id, &prefix)) else {
            continue;
        };
        let Some(sent) = clock.sent_us.get(i) else {
            continue;
        };
        seen += 1;
        if record {
            lat.push(clock.now_us().saturating_sub(sent.load(Ordering::Relaxed)));
        }
        if clock.received[i].fetch_add(1, Ordering::AcqRel) + 1 == receivers {
            clock.complete.fetch_add(1, Ordering::AcqRel);
        }
        since_ack += 1;
        if since_ack == 100 {
            since_ack = 0;
            if let (Some(conv), Some(seq)) = (f.conversation, f.seq) {
                ws.send(Message::text(
                    json!({"type":"chat_received","conversation":conv,"seq":seq}).to_string(),
                ))
                .await?;
            }
        }
    }
    clock.delivery_us.lock().await.extend(lat);
    Ok(ws)
}

/// Sends `n` messages; `pace` spaces them, otherwise `window` bounds those unacked.
async fn send(
    ws: Ws,
    clock: Arc<Clock>,
    conv: String,
    prefix: String,
    n: usize,
    window: usize,
    pace: Option<Duration>,
) -> Result<(Ws, Vec<u64>)> {
    let (mut sink, mut stream) = ws.split();
    let acked = Arc::new(AtomicUsize::new(0));
    let notify = Arc::new(tokio::sync::Notify::new());
    let reader_clock = clock.clone();
    let (reader_acked, reader_notify, reader_prefix) =
        (acked.clone(), notify.clone(), prefix.clone());
    // A refused message (e.g. `unavailable` while the store is saturated) is sent again
    // with the same client_msg_id, as a real client does; the server stores it once.
    let (resend_tx, mut resend_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let reader = tokio::spawn(async move {
        let mut ack_us = Vec::new();
        while reader_acked.load(Ordering::Acquire) < n {
            let text = match stream.next().await {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(_)) => continue,
                _ => break,
            };
            let Ok(f) = serde_json::from_str::<Frame>(&text) else {
                continue;
            };
            if f.kind == "chat_ack" {
                if let Some(i) = f.client_msg_id.and_then(|id| index_of(id, &reader_prefix)) {
                    let sent = reader_clock.sent_us[i].load(Ordering::Relaxed);
                    ack_us.push(reader_clock.now_us().saturating_sub(sent));
                }
                reader_acked.fetch_add(1, Ordering::AcqRel);
                reader_notify.notify_one();
            } else if f.kind == "error" {
                eprintln!("chat-load: server refused a message (resending): {text}");
                if let Some(i) = f.client_msg_id.and_then(|id| index_of(id, &reader_prefix)) {
                    let _ = resend_tx.send(i);
                }
            }
        }
        (stream, ack_us)
    });
    let body = |i: usize| {
        json!({"type":"chat_send","conversation":conv,"client_msg_id":format!("{prefix}{i}"),"text":"the quick brown fox jumps over the lazy dog"})
            .to_string()
    };
    let mut resends = 0usize;
    let mut next_at = Instant::now();
    for i in 0..n {
        match pace {
            Some(p) => {
                next_at += p;
                tokio::time::sleep_until(next_at.into()).await;
            }
            None => {
                let until = (i + 1).saturating_sub(window);
                let ctx = (&*acked, &*notify, &body, n);
                await_acks(&mut sink, &mut resend_rx, &mut resends, until, ctx).await?;
            }
        }
        while let Ok(r) = resend_rx.try_recv() {
            resends += 1;
            sink.send(Message::text(body(r))).await?;
        }
        clock.sent_us[i].store(clock.now_us(), Ordering::Relaxed);
        sink.send(Message::text(body(i))).await?;
    }
    // Refusals of the last messages: resend until everything is acked.
    let ctx = (&*acked, &*notify, &body, n);
    await_acks(&mut sink, &mut resend_rx, &mut resends, n, ctx).await?;
    let (stream, ack_us) = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .map_err(|_| BenchError::Protocol("acks did not arrive within 60 s".into()))?
        .map_err(|e| BenchError::Protocol(e.to_string()))?;
    let ws = sink
        .reunite(stream)
        .map_err(|e| BenchError::Protocol(e.to_string()))?;
    Ok((ws, ack_us))
}

/// Waits until `until` messages are acked, resending those the server refused (at most
/// `n` resends in all); fails after 60 s without an ack.
async fn await_acks(
    sink: &mut futures_util::stream::SplitSink<Ws, Message>,
    resend_rx: &mut tokio::sync::mpsc::UnboundedReceiver<usize>,
    resends: &mut usize,
    until: usize,
    (acked, notify, body, n): (
        &AtomicUsize,
        &tokio::sync::Notify,
        &impl Fn(usize) -> String,
        usize,
    ),
) -> Result<()> {
    while acked.load(Ordering::Acquire) < until {
        tokio::select! {
            _ = notify.notified() => {}
            Some(r) = resend_rx.recv() => {
                *resends += 1;
                if *resends > n {
                    return Err(BenchError::Protocol("the server keeps refusing messages".into()));
                }
                sink.send(Message::text(body(r))).await?;
            }
            _ = tokio::time::sleep(Duration::from_secs(60)) => {
                return Err(BenchError::Protocol("no ack for 60 s".into()));
            }
        }
    }
    Ok(())
}

struct Phase {
    seconds: f64,
    ack_us: Vec<u64>,
    delivery_us: Vec<u64>,
}

async fn phase(
    sender: Ws,
    receivers: Vec<Ws>,
    conv: &str,
    prefix: &str,
    n: usize,
    window: usize,
    pace: Option<Duration>,
) -> Result<(Ws, Vec<Ws>, Phase)> {
    let clock = Clock::new(n);
    let count = receivers.len();
    let tasks: Vec<_> = receivers
        .into_iter()
        .map(|ws| {
            tokio::spawn(receive(
                ws,
                clock.clone(),
                prefix.to_owned(),
                n,
                count,
                pace.is_some(),
            ))
        })
        .collect();
    let t0 = Instant::now();
    let (sender, ack_us) = send(
        sender,
        clock.clone(),
        conv.to_owned(),
        prefix.to_owned(),
        n,
        window,
        pace,
    )
    .await?;
    let mut back = Vec::with_capacity(count);
    for t in tasks {
        let ws = tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .map_err(|_| BenchError::Protocol("deliveries did not complete within 120 s".into()))?
            .map_err(|e| BenchError::Protocol(e.to_string()))??;
        back.push(ws);
    }
    let seconds = t0.elapsed().as_secs_f64();
    let complete = clock.complete.load(Ordering::Acquire);
    if complete != n {
        return Err(BenchError::Protocol(format!(
            "{complete} of {n} messages reached every member"
        )));
    }
    let delivery_us = std::mem::take(&mut *clock.delivery_us.lock().await);
    Ok((
        sender,
        back,
        Phase {
            seconds,
            ack_us,
            delivery_us,
        },
    ))
}

fn percentiles(us: &[u64]) -> Percentiles {
    let mut d: Vec<Duration> = us.iter().map(|&u| Duration::from_micros(u)).collect();
    Percentiles::of(&mut d)
}

/// Runs both phases against `target`.
pub async fn run(target: &Target, opts: &Options, progress: impl Fn(&str)) -> Result<Report> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    // Unique per run: two runs against one server (the --members list) must not share
    // identities, or the second reuses the first's client_msg_ids in another
    // conversation and is refused (duplicate_client_id).
    let run_id = format!("{:016x}", crate::server::rand_u64());
    let room = format!("chat-load-{run_id}");
    let (conv, mut sender, mut receivers) = if opts.members == 2 {
        let mut a = device(target, &format!("sender-{run_id}"), &room).await?;
        a.send(Message::text(
            json!({"type":"chat_open_direct","id":"d","with":format!("member-{run_id}-1")})
                .to_string(),
        ))
        .await?;
        let conv = loop {
            let m = next_json(&mut a).await?;
            if m["id"] == "d" {
                break m["conversation"]["id"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| BenchError::Protocol(format!("open_direct: {m}")))?;
            }
        };
        let b = device(target, &format!("member-{run_id}-1"), &room).await?;
        (conv, a, vec![b])
    } else {
        let a = device(target, &format!("sender-{run_id}"), &room).await?;
        let mut rs = Vec::with_capacity(opts.members - 1);
        for i in 1..opts.members {
            rs.push(device(target, &format!("member-{run_id}-{i}"), &room).await?);
        }
        (format!("room:{room}"), a, rs)
    };
    progress(&format!(
        "{} members connected; throughput phase, {} messages",
        opts.members, opts.messages
    ));
    // A short warm-up so that connections, caches and the database are in a steady state.
    let (s, r, _) = phase(
        sender,
        receivers,
        &conv,
        "w",
        200.min(opts.messages),
        opts.window,
        None,
    )
    .await?;
    (sender, receivers) = (s, r);
    let (s, r, tp) = phase(
        sender,
        receivers,
        &conv,
        "t",
        opts.messages,
        opts.window,
        None,
    )
    .await?;
    (sender, receivers) = (s, r);
    let mps = opts.messages as f64 / tp.seconds;
    let rate = opts.rate.unwrap_or(mps / 2.0).max(1.0);
    let n = ((rate * opts.latency_duration.as_secs_f64()) as usize).max(1);
    progress(&format!(
        "{mps:.0} msg/s; latency phase at {rate:.0} msg/s, {n} messages"
    ));
    let (_s, _r, lat) = phase(
        sender,
        receivers,
        &conv,
        "l",
        n,
        usize::MAX / 2,
        Some(Duration::from_secs_f64(1.0 / rate)),
    )
    .await?;
    let batches = metric(target, "huddle_chat_commit_batch_count").await;
    let batched = metric(target, "huddle_chat_commit_batch_sum").await;
    Ok(Report {
        delivered_live: metric(target, "huddle_chat_delivered_live_total")
            .await
            .map(|v| v as u64),
        delivered_catch_up: metric(target, "huddle_chat_delivered_catch_up_total")
            .await
            .map(|v| v as u64),
        mean_commit_batch: batched.zip(batches).map(|(s, c)| s / c.max(1.0)),
        scenario: "chat-load",
        store: opts.store.clone(),
        members: opts.members,
        messages: opts.messages,
        window: opts.window,
        messages_per_second: mps,
        deliveries_per_second: mps * (opts.members - 1) as f64,
        latency_rate: rate,
        ack: percentiles(&lat.ack_us),
        delivery: percentiles(&lat.delivery_us),
    })
}

/// A table of reports.
pub fn summary(reports: &[Report]) -> String {
    let mut s = String::from(
        "store     members  msgs/s delivered  deliveries/s  | at msgs/s  ack p50/p99 ms   delivery p50/p99 ms  | catch-up %  batch\n",
    );
    for r in reports {
        s += &format!(
            "{:<9} {:>7}  {:>16.0}  {:>12.0}  | {:>9.0}  {:>6.2} / {:<7.2}  {:>6.2} / {:<7.2}    | {:>9.1}  {:>5.1}\n",
            r.store,
            r.members,
            r.messages_per_second,
            r.deliveries_per_second,
            r.latency_rate,
            r.ack.p50_ms,
            r.ack.p99_ms,
            r.delivery.p50_ms,
            r.delivery.p99_ms,
            match (r.delivered_live, r.delivered_catch_up) {
                (Some(l), Some(c)) if l + c > 0 => 100.0 * c as f64 / (l + c) as f64,
                _ => f64::NAN,
            },
            r.mean_commit_batch.unwrap_or(f64::NAN)
        );
    }
    s
}
