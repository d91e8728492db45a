//! `signal-load`: N authenticated WebSocket clients join rooms of a given size; reports the
//! connect and join latency percentiles, the presence events delivered against those
//! expected, and the server's resident memory per idle connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::report::Percentiles;
use crate::server::Target;
use crate::{BenchError, Result};

#[derive(Debug, Clone)]
pub struct Options {
    /// Connections to hold open at once.
    pub connections: usize,
    /// Participants per room (presence fan-out grows with it).
    pub room_size: usize,
    /// Connections being set up at the same time.
    pub concurrency: usize,
    /// Quiet time before memory is sampled.
    pub settle: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub connections: usize,
    pub room_size: usize,
    pub rooms: usize,
    pub concurrency: usize,
    /// TCP connect + WebSocket upgrade + `welcome`.
    pub connect: Percentiles,
    /// `join` sent to `joined` received, while other clients are joining.
    pub join: Percentiles,
    pub presence_events_expected: u64,
    pub presence_events_received: u64,
    pub rss_baseline_bytes: Option<u64>,
    pub rss_loaded_bytes: Option<u64>,
    /// (loaded − baseline) / connections.
    pub bytes_per_idle_connection: Option<f64>,
    pub setup_seconds: f64,
}

async fn mint_tokens(
    target: &Target,
    n: usize,
    room_size: usize,
    prefix: &str,
) -> Result<Vec<String>> {
    let http = reqwest::Client::new();
    let url = format!("{}/v1/tokens", target.base);
    let sem = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (http, url, sem, secret) = (
            http.clone(),
            url.clone(),
            sem.clone(),
            target.api_secret.clone(),
        );
        let body = json!({"identity": format!("{prefix}-{i}"), "room": format!("{prefix}-room-{}", i / room_size.max(1))});
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore open");
            let resp: Value = http
                .post(url)
                .bearer_auth(secret)
                .json(&body)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            resp["token"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| BenchError::Protocol(format!("no token in {resp}")))
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.map_err(|e| BenchError::Protocol(e.to_string()))??);
    }
    Ok(out)
}

fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next JSON text message, skipping pings.
pub(crate) async fn next_json(ws: &mut Ws) -> Result<Value> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(&t).map_err(|e| BenchError::Protocol(e.to_string()));
            }
            Some(Ok(Message::Close(f))) => {
                return Err(BenchError::Protocol(format!("closed: {f:?}")));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => return Err(BenchError::Protocol("connection ended".into())),
        }
    }
}

/// Connects and joins; returns (connect latency, join latency, the open socket).
async fn join_one(url: String) -> Result<(Duration, Duration, Ws, u64)> {
    let t0 = Instant::now();
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(url, Some(client_config()), false).await?;
    let welcome = next_json(&mut ws).await?;
    if welcome["type"] != "welcome" {
        return Err(BenchError::Protocol(format!(
            "expected welcome, got {welcome}"
        )));
    }
    let connect = t0.elapsed();
    let t1 = Instant::now();
    ws.send(Message::text(r#"{"type":"join","id":1}"#)).await?;
    let mut early_events = 0;
    loop {
        let m = next_json(&mut ws).await?;
        if m["id"] == 1 {
            if m["type"] != "joined" {
                return Err(BenchError::Protocol(format!("join failed: {m}")));
            }
            break;
        }
        if m["type"] == "participant_joined" {
            early_events += 1;
        }
    }
    Ok((connect, t1.elapsed(), ws, early_events))
}

/// Runs the scenario against `target`.
pub async fn run(target: &Target, opts: &Options) -> Result<Report> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let tokens = mint_tokens(target, opts.connections, opts.room_size, "load").await?;
    // Warm the server up (worker threads, allocator arenas) before the baseline.
    let warm = mint_tokens(target, 16, 16, "warm").await?;
    for t in warm {
        let (_, _, mut ws, _) = join_one(format!("{}?access_token={t}", target.ws_url())).await?;
        let _ = ws.close(None).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_baseline = target.rss_bytes();

    let started = Instant::now();
    let events = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let sem = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let mut tasks = Vec::with_capacity(tokens.len());
    for t in tokens {
        let url = format!("{}?access_token={t}", target.ws_url());
        let (sem, events, mut stop) = (sem.clone(), events.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            let permit = sem.acquire_owned().await.expect("semaphore open");
            let (connect, join, mut ws, early) = join_one(url).await?;
            drop(permit);
            events.fetch_add(early, Ordering::Relaxed);
            // Hold the connection: read (which also answers pings) and count presence.
            let holder = tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.changed() => break,
                        m = ws.next() => match m {
                            Some(Ok(Message::Text(t))) if t.contains("\"participant_joined\"") => {
                                events.fetch_add(1, Ordering::Relaxed);
                            }
                            Some(Ok(_)) => {}
                            _ => break,
                        }
                    }
                }
                let _ = ws.close(None).await;
            });
            Ok::<_, BenchError>((connect, join, holder))
        }));
    }
    let mut connects = Vec::with_capacity(tasks.len());
    let mut joins = Vec::with_capacity(tasks.len());
    let mut holders = Vec::with_capacity(tasks.len());
    let mut failures = Vec::new();
    for t in tasks {
        match t.await.map_err(|e| BenchError::Protocol(e.to_string()))? {
            Ok((c, j, h)) => {
                connects.push(c);
                joins.push(j);
                holders.push(h);
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    if !failures.is_empty() {
        return Err(BenchError::Protocol(format!(
            "{} of {} connections failed, first: {}",
            failures.len(),
            opts.connections,
            failures[0]
        )));
    }
    let setup = started.elapsed();
    tokio::time::sleep(opts.settle).await;
    let rss_loaded = target.rss_bytes();

    let rooms = opts.connections.div_ceil(opts.room_size.max(1));
    let mut expected = 0u64;
    for r in 0..rooms {
        let k = (opts.connections - r * opts.room_size).min(opts.room_size) as u64;
        expected += k * k.saturating_sub(1) / 2;
    }
    let _ = stop_tx.send(true);
    for h in holders {
        let _ = h.await;
    }
    let per_conn = match (rss_baseline, rss_loaded) {
        (Some(b), Some(l)) => Some((l.saturating_sub(b)) as f64 / opts.connections as f64),
        _ => None,
    };
    Ok(Report {
        scenario: "signal-load",
        connections: opts.connections,
        room_size: opts.room_size,
        rooms,
        concurrency: opts.concurrency,
        connect: Percentiles::of(&mut connects),
        join: Percentiles::of(&mut joins),
        presence_events_expected: expected,
        presence_events_received: events.load(Ordering::Relaxed),
        rss_baseline_bytes: rss_baseline,
        rss_loaded_bytes: rss_loaded,
        bytes_per_idle_connection: per_conn,
        setup_seconds: setup.as_secs_f64(),
    })
}

/// The table printed after a run.
pub fn summary(reports: &[Report]) -> String {
    let mut s = String::from(
        "connections  room  connect p50/p99 ms  join p50/p99 ms  presence recv/expected  RSS/idle conn\n",
    );
    for r in reports {
        let mem = r
            .bytes_per_idle_connection
            .map(|b| format!("{:.1} KiB", b / 1024.0))
            .unwrap_or_else(|| "n/a".into());
        s.push_str(&format!(
            "{:>11}  {:>4}  {:>8.2} / {:<8.2}  {:>6.2} / {:<7.2}  {:>11} / {:<10}  {}\n",
            r.connections,
            r.room_size,
            r.connect.p50_ms,
            r.connect.p99_ms,
            r.join.p50_ms,
            r.join.p99_ms,
            r.presence_events_received,
            r.presence_events_expected,
            mem
        ));
    }
    s
}
