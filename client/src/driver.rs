//! The connection task: owns the WebSocket, reconnects with backoff (resuming the
//! signalling session), re-syncs chat from the last delivered seqs, resends unacked chat
//! messages with their original `client_msg_id`, drops redelivered entries, and acks
//! delivery periodically.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::wire::{ChatAck, ChatEntry, ServerError};
use crate::{ClientError, Config, Event, Shared};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A chat send unanswered for this long is sent again (same client_msg_id).
const RESEND_AFTER: Duration = Duration::from_secs(5);
/// Error codes after which a chat send is tried again rather than failed.
const RETRYABLE: &[&str] = &["rate_limited", "unavailable", "shutting_down"];

pub(crate) enum Command {
    /// A request answered by one response.
    Request {
        msg: Value,
        reply: oneshot::Sender<Result<Value, ClientError>>,
    },
    /// A chat message, kept and resent until acked.
    ChatSend {
        msg: Value,
        client_msg_id: String,
        reply: oneshot::Sender<Result<ChatAck, ClientError>>,
    },
    /// A message that gets no response (typing).
    Notify {
        msg: Value,
    },
    Close,
}

struct Outgoing {
    msg: Value,
    reply: oneshot::Sender<Result<ChatAck, ClientError>>,
    /// Not before this (after a retryable refusal).
    not_before: tokio::time::Instant,
}

pub(crate) struct Driver {
    cfg: Config,
    shared: Arc<Shared>,
    cmds: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    next_id: i64,
    resume_token: Option<String>,
    /// The room to join again after a reconnect that did not resume the session.
    room: Option<Option<String>>,
    pending: HashMap<i64, oneshot::Sender<Result<Value, ClientError>>>,
    outbox: HashMap<String, Outgoing>,
    /// Request id -> client_msg_id of chat sends on the current connection, and when.
    in_flight: HashMap<i64, (String, tokio::time::Instant)>,
    sync_id: Option<i64>,
    synced: bool,
    /// Conversations with entries delivered but not acknowledged yet.
    unacked: HashSet<String>,
}

enum End {
    Closed,
    Lost,
}

impl Driver {
    pub(crate) fn new(
        cfg: Config,
        shared: Arc<Shared>,
        cmds: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
    ) -> Self {
        Self {
            cfg,
            shared,
            cmds,
            events,
            next_id: 1,
            resume_token: None,
            room: None,
            pending: HashMap::new(),
            outbox: HashMap::new(),
            in_flight: HashMap::new(),
            sync_id: None,
            synced: false,
            unacked: HashSet::new(),
        }
    }

    fn url(&self) -> String {
        let sep = if self.cfg.url.contains('?') { '&' } else { '?' };
        let mut url = format!("{}{sep}access_token={}", self.cfg.url, self.cfg.token);
        if let Some(t) = &self.resume_token {
            url.push_str("&resume_token=");
            url.push_str(t);
        }
        url
    }

    /// Connects once; returns the socket after `welcome`.
    pub(crate) async fn dial(&mut self) -> Result<(Ws, bool), ClientError> {
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(self.url(), None, true)
            .await
            .map_err(|e| match e {
                tungstenite::Error::Http(r) => ClientError::Refused(r.status().as_u16()),
                other => ClientError::Connect(other.to_string()),
            })?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let m: Value = serde_json::from_str(&t)
                        .map_err(|e| ClientError::Protocol(e.to_string()))?;
                    if m["type"] != "welcome" {
                        return Err(ClientError::Protocol(format!("expected welcome, got {m}")));
                    }
                    self.resume_token = m["resume_token"].as_str().map(str::to_owned);
                    if let Some(id) = m["identity"].as_str() {
                        *self.shared.identity.lock().expect("not poisoned") = id.to_owned();
                    }
                    return Ok((ws, m["resumed"] == true));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(ClientError::Connect(e.to_string())),
                None => return Err(ClientError::Connect("closed before welcome".into())),
            }
        }
    }

    /// Runs until closed; `first` is the already established first connection.
    pub(crate) async fn run(mut self, first: (Ws, bool)) {
        let mut conn = Some(first);
        let mut backoff = self.cfg.reconnect_min;
        loop {
            let (ws, resumed) = match conn.take() {
                Some(c) => c,
                None => match self.dial().await {
                    Ok(c) => {
                        backoff = self.cfg.reconnect_min;
                        c
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "reconnect failed");
                        let jitter = rand::random_range(0.5..1.0);
                        if self.wait(backoff.mul_f64(jitter)).await {
                            return;
                        }
                        backoff = (backoff * 2).min(self.cfg.reconnect_max);
                        continue;
                    }
                },
            };
            let _ = self.events.send(Event::Connected { resumed }).await;
            match self.session(ws, resumed).await {
                End::Closed => return,
                End::Lost => {
                    self.synced = false;
                    self.sync_id = None;
                    self.in_flight.clear();
                    for (_, reply) in self.pending.drain() {
                        let _ = reply.send(Err(ClientError::Disconnected));
                    }
                    let _ = self.events.send(Event::Disconnected).await;
                }
            }
        }
    }

    /// Sleeps, still taking commands (requests fail while disconnected; chat sends queue).
    /// Returns true if the client was closed.
    async fn wait(&mut self, d: Duration) -> bool {
        let until = tokio::time::Instant::now() + d;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return false,
                cmd = self.cmds.recv() => match cmd {
                    None | Some(Command::Close) => return true,
                    Some(Command::Request { reply, .. }) => {
                        let _ = reply.send(Err(ClientError::Disconnected));
                    }
                    Some(Command::ChatSend { msg, client_msg_id, reply }) => {
                        self.queue_chat(msg, client_msg_id, reply);
                    }
                    Some(Command::Notify { .. }) => {}
                },
            }
        }
    }

    fn queue_chat(
        &mut self,
        msg: Value,
        client_msg_id: String,
        reply: oneshot::Sender<Result<ChatAck, ClientError>>,
    ) {
        self.outbox.insert(
            client_msg_id,
            Outgoing {
                msg,
                reply,
                not_before: tokio::time::Instant::now(),
            },
        );
    }

    fn id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    async fn session(&mut self, mut ws: Ws, resumed: bool) -> End {
        if let (false, Some(room)) = (resumed, self.room.clone()) {
            let id = self.id();
            let _ = send(&mut ws, json!({"type":"join","id":id,"room":room})).await;
        }
        if let Some(device) = self.cfg.device.clone() {
            let id = self.id();
            let cursors = self.shared.cursors.lock().expect("not poisoned").clone();
            self.sync_id = Some(id);
            let m = json!({"type":"chat_sync","id":id,"device":device,"cursors":cursors});
            if send(&mut ws, m).await.is_err() {
                return End::Lost;
            }
        }
        let mut tick = tokio::time::interval(self.cfg.ack_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                frame = ws.next() => {
                    let text = match frame {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return End::Lost,
                        Some(Ok(_)) => continue,
                    };
                    match serde_json::from_str::<Value>(&text) {
                        Ok(m) => {
                            if self.incoming(&mut ws, m).await.is_err() {
                                return End::Lost;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "undecodable frame"),
                    }
                }
                cmd = self.cmds.recv() => {
                    let ok = match cmd {
                        None | Some(Command::Close) => {
                            let _ = ws.close(None).await;
                            return End::Closed;
                        }
                        Some(Command::Request { mut msg, reply }) => {
                            let id = self.id();
                            msg["id"] = id.into();
                            if msg["type"] == "join" {
                                self.room = Some(msg["room"].as_str().map(str::to_owned));
                            } else if msg["type"] == "leave" {
                                self.room = None;
                            }
                            self.pending.insert(id, reply);
                            send(&mut ws, msg).await
                        }
                        Some(Command::ChatSend { msg, client_msg_id, reply }) => {
                            self.queue_chat(msg, client_msg_id, reply);
                            self.flush_outbox(&mut ws).await
                        }
                        Some(Command::Notify { msg }) => send(&mut ws, msg).await,
                    };
                    if ok.is_err() {
                        return End::Lost;
                    }
                }
                _ = tick.tick() => {
                    if self.ack_delivered(&mut ws).await.is_err()
                        || self.flush_outbox(&mut ws).await.is_err()
                    {
                        return End::Lost;
                    }
                }
            }
        }
    }

    /// Sends every queued chat message not in flight on this connection.
    async fn flush_outbox(&mut self, ws: &mut Ws) -> Result<(), tungstenite::Error> {
        if !self.synced {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        // An answer that does not come within RESEND_AFTER is presumed lost: send again.
        let flying: HashSet<&String> = self
            .in_flight
            .values()
            .filter(|(_, at)| now.saturating_duration_since(*at) < RESEND_AFTER)
            .map(|(cmid, _)| cmid)
            .collect();
        let due: Vec<String> = self
            .outbox
            .iter()
            .filter(|(id, o)| !flying.contains(id) && o.not_before <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for cmid in due {
            let id = self.id();
            let mut msg = self.outbox[&cmid].msg.clone();
            msg["id"] = id.into();
            self.in_flight.insert(id, (cmid, now));
            ws.feed(Message::text(msg.to_string())).await?;
        }
        ws.flush().await
    }

    async fn ack_delivered(&mut self, ws: &mut Ws) -> Result<(), tungstenite::Error> {
        if self.unacked.is_empty() || !self.synced {
            return Ok(());
        }
        let cursors = self.shared.cursors.lock().expect("not poisoned").clone();
        for conv in self.unacked.drain() {
            if let Some(seq) = cursors.get(&conv) {
                let m = json!({"type":"chat_received","conversation":conv,"seq":seq});
                ws.feed(Message::text(m.to_string())).await?;
            }
        }
        ws.flush().await
    }

    async fn incoming(&mut self, ws: &mut Ws, m: Value) -> Result<(), tungstenite::Error> {
        let kind = m["type"].as_str().unwrap_or("").to_owned();
        let id = m["id"].as_i64();
        if let Some(id) = id {
            if Some(id) == self.sync_id {
                if kind == "chat_synced" {
                    self.synced = true;
                    let _ = self.events.send(Event::ChatSynced(m)).await;
                    return self.flush_outbox(ws).await;
                }
                let _ = self.events.send(Event::Error(server_error(&m))).await;
                return Ok(());
            }
            if let Some((cmid, _)) = self.in_flight.remove(&id) {
                self.chat_answer(&cmid, kind.as_str(), m);
                return Ok(());
            }
            if let Some(reply) = self.pending.remove(&id) {
                let r = if kind == "error" {
                    Err(ClientError::Server(server_error(&m)))
                } else {
                    Ok(m)
                };
                let _ = reply.send(r);
                return Ok(());
            }
        }
        if kind == "chat_message" {
            match serde_json::from_value::<ChatEntry>(m) {
                Ok(entry) => self.deliver(entry).await,
                Err(e) => tracing::warn!(error = %e, "malformed chat_message"),
            }
            return Ok(());
        }
        if kind.starts_with("media_") {
            let sink = self.shared.media.lock().expect("not poisoned").clone();
            if let Some(sink) = sink
                && sink.send(m.clone()).is_ok()
            {
                return Ok(());
            }
        }
        let _ = self.events.send(Event::from_push(kind.as_str(), m)).await;
        Ok(())
    }

    fn chat_answer(&mut self, cmid: &str, kind: &str, m: Value) {
        if kind == "chat_ack" {
            if let Some(o) = self.outbox.remove(cmid) {
                let r = serde_json::from_value::<ChatAck>(m)
                    .map_err(|e| ClientError::Protocol(e.to_string()));
                let _ = o.reply.send(r);
            }
            return;
        }
        let err = server_error(&m);
        if RETRYABLE.contains(&err.code.as_str()) {
            if let Some(o) = self.outbox.get_mut(cmid) {
                o.not_before = tokio::time::Instant::now() + Duration::from_millis(500);
            }
        } else if let Some(o) = self.outbox.remove(cmid) {
            let _ = o.reply.send(Err(ClientError::Server(err)));
        }
    }

    /// Hands an entry to the app once: the server delivers each seq once per device, and
    /// after a reconnect it resumes after our cursor, so anything at or below it is a
    /// repeat from a connection that was cut mid-delivery.
    async fn deliver(&mut self, entry: ChatEntry) {
        {
            let mut cursors = self.shared.cursors.lock().expect("not poisoned");
            let cursor = cursors.entry(entry.conversation.clone()).or_insert(0);
            if entry.seq <= *cursor {
                return;
            }
            *cursor = entry.seq;
        }
        self.unacked.insert(entry.conversation.clone());
        let _ = self.events.send(Event::ChatMessage(entry)).await;
    }
}

fn server_error(m: &Value) -> ServerError {
    ServerError {
        code: m["code"].as_str().unwrap_or("unknown").to_owned(),
        message: m["message"].as_str().unwrap_or("").to_owned(),
    }
}

async fn send(ws: &mut Ws, m: Value) -> Result<(), tungstenite::Error> {
    ws.send(Message::text(m.to_string())).await
}
