//! The randomized delivery test: devices of three identities send and receive thousands of
//! messages in a room, a one-to-one conversation and a group, while a seeded chaos layer in
//! each client ignores acks (so the client resends), drops connections at random points,
//! and the server process is killed (SIGKILL) and restarted twice mid-run. Afterwards:
//! every device saw every entry of its conversations exactly once, in seq order with no
//! gaps; every send was acked once with one seq; and the store holds exactly the acked
//! messages. The seed is printed; `HUDDLE_CHAOS_SEED=<seed>` replays its decisions.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::Server;
use common::chat::{Backend, backends, chat_token, start};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const ROOM: &str = "room:chaos";
/// Messages each device sends.
const PER_DEVICE: usize = 400;
/// Sends in flight per connection.
const WINDOW: usize = 16;

/// What one device observed, checked at the end.
#[derive(Default, Debug)]
struct Seen {
    /// Per conversation: the entries received, in arrival order, as (seq, client_msg_id).
    received: HashMap<String, Vec<(i64, String)>>,
    /// client_msg_id -> (conversation, seq) from acks.
    acked: HashMap<String, (String, i64)>,
    violations: Vec<String>,
    reconnects: usize,
    dropped_acks: usize,
}

struct Device {
    identity: &'static str,
    device: String,
    convs: Vec<String>,
    rng: StdRng,
    seen: Arc<Mutex<Seen>>,
    /// Acks received by all devices, to time the crashes.
    progress: Arc<AtomicUsize>,
}

impl Device {
    fn last(&self, conv: &str) -> i64 {
        self.seen
            .lock()
            .received
            .get(conv)
            .and_then(|v| v.last())
            .map_or(0, |e| e.0)
    }

    /// One connection's life; returns when the chaos drops it or the device is done.
    async fn session(
        &mut self,
        url: &str,
        pending: &mut BTreeMap<String, (String, String)>,
        to_send: &mut usize,
        next_msg: &mut usize,
        target: Option<&HashMap<String, i64>>,
    ) -> bool {
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            return false;
        };
        let cursors: serde_json::Map<String, Value> = self
            .convs
            .iter()
            .map(|c| (c.clone(), json!(self.last(c))))
            .collect();
        let sync = json!({"type":"chat_sync","id":"sync","device":self.device,"cursors":cursors});
        if ws.send(Message::text(sync.to_string())).await.is_err() {
            return false;
        }
        let mut synced = false;
        // Sends in flight on this connection and when they went out.
        let mut in_flight: HashMap<String, tokio::time::Instant> = HashMap::new();
        let mut since_ack = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            if synced {
                // Resend what is unacked (after a reconnect, or an ack the chaos ignored).
                let now = tokio::time::Instant::now();
                let resend: Vec<String> = pending
                    .keys()
                    .filter(|id| {
                        in_flight
                            .get(*id)
                            .is_none_or(|at| now - *at > Duration::from_millis(400))
                    })
                    .take(WINDOW.saturating_sub(in_flight.len()))
                    .cloned()
                    .collect();
                for id in resend {
                    let (conv, text) = &pending[&id];
                    let m = json!({"type":"chat_send","conversation":conv,"client_msg_id":id,"text":text});
                    if ws.send(Message::text(m.to_string())).await.is_err() {
                        return false;
                    }
                    in_flight.insert(id, now);
                }
                while *to_send > 0 && in_flight.len() < WINDOW {
                    let conv = self.convs[self.rng.random_range(0..self.convs.len())].clone();
                    let id = format!("{}-{}-{}", self.identity, self.device, *next_msg);
                    *next_msg += 1;
                    *to_send -= 1;
                    let text = format!("{id} says hi");
                    pending.insert(id.clone(), (conv.clone(), text.clone()));
                    let m = json!({"type":"chat_send","conversation":conv,"client_msg_id":id,"text":text});
                    if ws.send(Message::text(m.to_string())).await.is_err() {
                        return false;
                    }
                    in_flight.insert(id, now);
                }
                if let Some(target) = target {
                    if pending.is_empty() && target.iter().all(|(c, last)| self.last(c) >= *last) {
                        let _ = ws.close(None).await;
                        return true;
                    }
                } else if pending.is_empty() && *to_send == 0 {
                    let _ = ws.close(None).await;
                    return true;
                }
            }
            let frame = tokio::select! {
                f = ws.next() => f,
                _ = tick.tick() => continue,
            };
            let text = match frame {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                _ => return false,
            };
            let v: Value = serde_json::from_str(&text).unwrap();
            // Chaos: drop the connection at a random point (no close handshake).
            if target.is_none() && self.rng.random_ratio(1, 300) {
                return false;
            }
            match v["type"].as_str().unwrap_or("") {
                "chat_synced" => synced = true,
                "chat_message" => {
                    let conv = v["conversation"].as_str().unwrap().to_owned();
                    let seq = v["seq"].as_i64().unwrap();
                    let id = v["client_msg_id"].as_str().unwrap().to_owned();
                    let last = self.last(&conv);
                    {
                        let mut seen = self.seen.lock();
                        if seq != last + 1 {
                            seen.violations
                                .push(format!("{}: {conv} seq {seq} after {last}", self.device));
                        }
                        seen.received
                            .entry(conv.clone())
                            .or_default()
                            .push((seq, id));
                    }
                    since_ack += 1;
                    if since_ack >= 25 {
                        since_ack = 0;
                        let ack = json!({"type":"chat_received","conversation":conv,"seq":seq});
                        if ws.send(Message::text(ack.to_string())).await.is_err() {
                            return false;
                        }
                    }
                }
                "chat_ack" => {
                    let id = v["client_msg_id"].as_str().unwrap().to_owned();
                    // Chaos: the ack is "lost"; the client will resend.
                    if target.is_none() && self.rng.random_ratio(1, 10) {
                        self.seen.lock().dropped_acks += 1;
                        in_flight.remove(&id);
                        continue;
                    }
                    let conv = v["conversation"].as_str().unwrap().to_owned();
                    let seq = v["seq"].as_i64().unwrap();
                    let mut seen = self.seen.lock();
                    if let Some(prev) = seen.acked.get(&id).cloned()
                        && prev != (conv.clone(), seq)
                    {
                        seen.violations
                            .push(format!("{id} acked as {prev:?} and then ({conv}, {seq})"));
                    }
                    if seen.acked.insert(id.clone(), (conv, seq)).is_none() {
                        self.progress.fetch_add(1, Ordering::Relaxed);
                    }
                    pending.remove(&id);
                    in_flight.remove(&id);
                }
                "error" if v["id"] == "sync" => return false,
                "error" => {
                    // Refused (e.g. shutting down): the send stays pending and is retried.
                    if let Some(id) = v["id"].as_str() {
                        in_flight.remove(id);
                    }
                    let code = v["code"].as_str().unwrap_or("");
                    assert!(
                        matches!(code, "unavailable" | "shutting_down" | "rate_limited"),
                        "unexpected error {v}"
                    );
                    in_flight.clear();
                }
                _ => {}
            }
        }
    }
}

async fn run_device(mut d: Device, addr: String, room: &'static str) -> Device {
    let url = format!(
        "ws://{addr}/v1/ws?access_token={}",
        chat_token(d.identity, Some(room))
    );
    let mut pending = BTreeMap::new();
    let mut to_send = PER_DEVICE;
    let mut next_msg = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never finished",
            d.device
        );
        if d.session(&url, &mut pending, &mut to_send, &mut next_msg, None)
            .await
        {
            return d;
        }
        d.seen.lock().reconnects += 1;
    }
}

/// Reconnects until the device has every entry up to `target`.
async fn drain(d: &mut Device, addr: &str, room: &str, target: &HashMap<String, i64>) {
    let url = format!(
        "ws://{addr}/v1/ws?access_token={}",
        chat_token(d.identity, Some(room))
    );
    let mut pending = BTreeMap::new();
    let (mut to_send, mut next_msg) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !d
        .session(
            &url,
            &mut pending,
            &mut to_send,
            &mut next_msg,
            Some(target),
        )
        .await
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} did not catch up",
            d.device
        );
    }
}

async fn history(addr: &str, conv: &str) -> Vec<(i64, String)> {
    let url = format!(
        "ws://{addr}/v1/ws?access_token={}",
        chat_token("alice", Some("chaos"))
    );
    let mut c = common::Client::connect(&url).await.unwrap();
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = c
            .request(
                json!({"type":"chat_history","conversation":conv,"after":after,"limit":200}),
                after + 1,
            )
            .await;
        let msgs = page["messages"].as_array().expect("history page").clone();
        for m in &msgs {
            out.push((
                m["seq"].as_i64().unwrap(),
                m["client_msg_id"].as_str().unwrap().to_owned(),
            ));
        }
        match msgs.last() {
            Some(m) if page["has_more"] == true => after = m["seq"].as_i64().unwrap(),
            _ => return out,
        }
    }
}

async fn chaos_run(backend: &Backend, seed: u64) {
    let mut server: Server = start(
        backend,
        "[signal]\nmessages_per_second = 100000\nmessage_burst = 100000\n\
         [chat]\nmessages_per_second = 100000\nmessage_burst = 100000\n",
    );
    let addr = server.addr.to_string();
    // Set-up: the one-to-one conversation and the group exist before the chaos starts.
    let mut alice =
        common::chat::ChatClient::connect(&server, "alice", Some("chaos"), "setup", json!({}))
            .await;
    let dm = alice
        .request(json!({"type":"chat_open_direct","with":"bob"}))
        .await;
    let dm = dm["conversation"]["id"].as_str().unwrap().to_owned();
    let group = alice
        .request(json!({"type":"chat_create_group","name":"chaos","members":["bob","carol"]}))
        .await;
    let group = group["conversation"]["id"].as_str().unwrap().to_owned();
    drop(alice);
    let plan: [(&'static str, Vec<String>); 3] = [
        ("alice", vec![ROOM.into(), dm.clone(), group.clone()]),
        ("bob", vec![ROOM.into(), dm.clone(), group.clone()]),
        ("carol", vec![ROOM.into(), group.clone()]),
    ];
    let mut tasks = Vec::new();
    let mut master = StdRng::seed_from_u64(seed);
    let progress = Arc::new(AtomicUsize::new(0));
    for (identity, convs) in &plan {
        for n in 0..2 {
            let d = Device {
                identity,
                device: format!("{identity}-dev{n}"),
                convs: convs.clone(),
                rng: StdRng::seed_from_u64(master.random()),
                seen: Arc::default(),
                progress: progress.clone(),
            };
            tasks.push(tokio::spawn(run_device(d, addr.clone(), "chaos")));
        }
    }
    // Kill the server twice while traffic flows: at a seeded point in the first and in
    // the second half of the run.
    let total = 6 * PER_DEVICE;
    let mut at_acks = [
        master.random_range(total / 10..total / 2),
        master.random_range(total / 2..total * 9 / 10),
    ];
    at_acks.sort();
    let mut crashed_at = Vec::new();
    for at in at_acks {
        while progress.load(Ordering::Relaxed) < at {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        crashed_at.push(progress.load(Ordering::Relaxed));
        tokio::task::block_in_place(|| server.crash_and_restart());
    }
    let mut devices = Vec::new();
    for t in tasks {
        devices.push(t.await.expect("device task"));
    }
    // Where every log ends now, from the store through the server.
    let mut target_of: HashMap<String, i64> = HashMap::new();
    let mut stored: HashMap<String, Vec<(i64, String)>> = HashMap::new();
    for conv in [ROOM, dm.as_str(), group.as_str()] {
        let h = history(&addr, conv).await;
        target_of.insert(conv.into(), h.last().map_or(0, |e| e.0));
        stored.insert(conv.into(), h);
    }
    for d in &mut devices {
        let target: HashMap<String, i64> =
            d.convs.iter().map(|c| (c.clone(), target_of[c])).collect();
        drain(d, &addr, "chaos", &target).await;
    }
    // Every ack, over all devices.
    let mut acked: HashMap<String, (String, i64)> = HashMap::new();
    let (mut reconnects, mut dropped) = (0, 0);
    for d in &devices {
        let seen = d.seen.lock();
        assert!(
            seen.violations.is_empty(),
            "seed {seed}: {:?}",
            seen.violations
        );
        reconnects += seen.reconnects;
        dropped += seen.dropped_acks;
        for (id, at) in &seen.acked {
            assert!(
                acked.insert(id.clone(), at.clone()).is_none(),
                "{id} acked on two devices"
            );
        }
    }
    assert_eq!(
        acked.len(),
        6 * PER_DEVICE,
        "seed {seed}: every send is acked"
    );
    for conv in [ROOM, dm.as_str(), group.as_str()] {
        let log = &stored[conv];
        // The store holds exactly the acked messages of this conversation, seqs 1..=n.
        let want: BTreeMap<i64, String> = acked
            .iter()
            .filter(|(_, (c, _))| c == conv)
            .map(|(id, (_, seq))| (*seq, id.clone()))
            .collect();
        let have: BTreeMap<i64, String> = log.iter().cloned().collect();
        assert_eq!(
            have.len(),
            log.len(),
            "seed {seed}: a seq stored twice in {conv}"
        );
        assert_eq!(have, want, "seed {seed}: store and acks differ in {conv}");
        assert_eq!(
            have.keys().copied().collect::<Vec<_>>(),
            (1..=have.len() as i64).collect::<Vec<_>>(),
            "seed {seed}: gaps in {conv}"
        );
        // Every member device received exactly that, once each, in order.
        for d in devices.iter().filter(|d| d.convs.iter().any(|c| c == conv)) {
            let seen = d.seen.lock();
            let got = seen.received.get(conv).cloned().unwrap_or_default();
            assert_eq!(got, *log, "seed {seed}: {} in {conv}", d.device);
        }
    }
    eprintln!(
        "chaos {} seed {seed}: {} messages, {reconnects} dropped connections, {dropped} ignored acks, \
         server killed after {crashed_at:?} acks",
        backend.name(),
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_survives_lost_acks_dropped_connections_and_server_crashes() {
    let seed: u64 = match std::env::var("HUDDLE_CHAOS_SEED") {
        Ok(s) => s.parse().expect("HUDDLE_CHAOS_SEED is a number"),
        Err(_) => rand::random(),
    };
    eprintln!("chaos seed {seed} (replay with HUDDLE_CHAOS_SEED={seed})");
    for backend in backends().await {
        chaos_run(&backend, seed).await;
    }
}
