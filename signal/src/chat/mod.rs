//! Text chat with delivery guarantees: one-to-one conversations, named groups and each
//! room's chat, carried over the signalling WebSocket and stored in the store.
//!
//! The guarantees, and where each comes from:
//! - **Nothing acked is lost**: a `chat_ack` is sent only after the transaction holding the
//!   entry committed ([`writer`]; SQLite runs with `synchronous = FULL`).
//! - **No duplicates**: the client's `client_msg_id` is unique per sender in the store, so
//!   a resend after a lost ack is acked again with the same seq and not stored twice; each
//!   device's feed ([`feed`]) puts every seq on its connection at most once.
//! - **In order, no gaps**: seqs are assigned by the single writer, per conversation,
//!   without gaps; feeds deliver strictly in seq order, reading from the store whatever
//!   the live path could not deliver.
//! - **Offline delivery**: a device resumes with `chat_sync` from the seqs it has (or,
//!   failing that, its last `chat_received` ack) and is sent exactly what it missed before
//!   anything new. Members with no device online are reported to the push webhook.
//!
//! Typing indicators and read receipts are relayed, never stored as log entries; a
//! member's read marker is kept for unread counts.

pub mod attachments;
pub(crate) mod commit;
pub(crate) mod feed;
pub mod metrics;
pub(crate) mod store;
pub mod webhook;
pub mod wire;
pub(crate) mod writer;

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::Utf8Bytes;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};
use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::auth::{Claims, check_name, check_room_name};
use crate::config::ChatConfig;
use crate::protocol::{ClientMessage, ErrorCode, ProtocolError, RequestId};
use crate::store::Backend;
use feed::{DeviceFeed, Feeds, spawn_catch_up};
use metrics::ChatMetrics;
use wire::{ChatOut, EntryKind, SyncedConversation, encode};
use writer::{MembersChange, MembersOp, Origin, Post, WriteOp};

/// Conversation id prefixes: a room's chat, a one-to-one conversation, a named group.
pub const ROOM_PREFIX: &str = "room:";
pub const DIRECT_PREFIX: &str = "dm:";
pub const GROUP_PREFIX: &str = "group:";
/// Longest client message id or device id.
pub const MAX_CLIENT_ID_LEN: usize = 64;
/// Requests waiting for the writer; senders wait (backpressure) when it is full.
const WRITE_QUEUE: usize = 8192;

pub(crate) fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The id of the one-to-one conversation between two identities (order does not matter).
pub fn direct_id(a: &str, b: &str) -> String {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    let mut h = Sha256::new();
    h.update(x.as_bytes());
    h.update([0]);
    h.update(y.as_bytes());
    format!("{DIRECT_PREFIX}{}", &hex(&h.finalize())[..40])
}

/// Client-chosen ids (message ids, device ids): 1..=64 printable ASCII, no spaces.
fn check_client_id(what: &str, id: &str) -> Result<(), ProtocolError> {
    if id.is_empty() || id.len() > MAX_CLIENT_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(format!(
            "{what} must be 1 to {MAX_CLIENT_ID_LEN} printable ASCII characters"
        )));
    }
    Ok(())
}

fn invalid(msg: impl Into<String>) -> ProtocolError {
    ProtocolError::new(ErrorCode::InvalidMessage, msg)
}

fn not_member() -> ProtocolError {
    ProtocolError::new(
        ErrorCode::NotMember,
        "no such conversation, or not a member of it",
    )
}

/// Chat's share of one WebSocket connection.
pub struct ChatConn {
    claims: Claims,
    identity: Arc<str>,
    out: mpsc::WeakSender<Utf8Bytes>,
    /// Set by `chat_sync`: the device this connection is.
    feed: Option<Arc<DeviceFeed>>,
}

/// The chat service: shared by every connection.
pub struct Chat {
    pub(crate) cfg: ChatConfig,
    pub(crate) data_dir: PathBuf,
    pool: AnyPool,
    writer: mpsc::Sender<WriteOp>,
    feeds: Arc<Feeds>,
    pub(crate) metrics: Arc<ChatMetrics>,
    limiter: DefaultKeyedRateLimiter<Arc<str>>,
}

impl Chat {
    /// Starts the writer, the webhook and the retention tasks; they stop with `shutdown`
    /// (the writer once every request queued before it has been committed).
    pub fn start(
        cfg: ChatConfig,
        pool: AnyPool,
        backend: Backend,
        data_dir: PathBuf,
        registry: &mut Registry,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let metrics = Arc::new(ChatMetrics::default());
        metrics.register(registry);
        let feeds = Arc::new(Feeds::default());
        let webhook = cfg.webhook_url.clone().map(|url| {
            let (tx, rx) = mpsc::channel(webhook::QUEUE);
            let hook = webhook::Webhook {
                url,
                secret: cfg
                    .webhook_secret
                    .as_ref()
                    .map(|s| s.expose().as_bytes().to_vec()),
                pool: pool.clone(),
                feeds: feeds.clone(),
                metrics: metrics.clone(),
            };
            tokio::spawn(hook.run(rx, shutdown.clone()));
            tx
        });
        let (wtx, wrx) = mpsc::channel(WRITE_QUEUE);
        tokio::spawn(writer::run(
            writer::WriterCtx {
                pool: pool.clone(),
                backend,
                feeds: feeds.clone(),
                metrics: metrics.clone(),
                webhook,
            },
            wrx,
        ));
        if !cfg.retention.is_zero() {
            tokio::spawn(retention(pool.clone(), cfg.retention, shutdown));
        }
        let quota =
            Quota::per_second(NonZeroU32::new(cfg.messages_per_second.max(1)).expect("max(1)"))
                .allow_burst(NonZeroU32::new(cfg.message_burst.max(1)).expect("max(1)"));
        Arc::new(Self {
            cfg,
            data_dir,
            pool,
            writer: wtx,
            feeds,
            metrics,
            limiter: RateLimiter::keyed(quota),
        })
    }

    /// Chat state for a new connection; `out` is its outbound queue.
    pub fn connection(&self, claims: &Claims, out: mpsc::WeakSender<Utf8Bytes>) -> ChatConn {
        ChatConn {
            claims: claims.clone(),
            identity: claims.sub.as_str().into(),
            out,
            feed: None,
        }
    }

    /// Forgets the connection's device; what it did not acknowledge is sent on its next sync.
    pub fn disconnect(&self, conn: &ChatConn) {
        if let Some(feed) = &conn.feed {
            self.feeds.remove_device(feed);
        }
        // Keep the per-identity rate limiter from growing without bound.
        if self.limiter.len() > 10_000 {
            self.limiter.retain_recent();
        }
    }

    fn reply(conn: &ChatConn, frame: String) {
        if let Some(out) = conn.out.upgrade() {
            let _ = out.try_send(frame.into());
        }
    }

    fn origin(conn: &ChatConn, id: Option<RequestId>) -> Origin {
        Origin {
            identity: conn.identity.clone(),
            device: conn
                .feed
                .as_ref()
                .map_or_else(|| Arc::from(""), |f| f.device.clone()),
            out: conn.out.clone(),
            id,
        }
    }

    /// Handles one chat request. Never waits on the connection's own queue (the caller is
    /// the task that drains it): answers go out with `try_send` or from spawned tasks.
    pub async fn handle(
        self: &Arc<Self>,
        conn: &mut ChatConn,
        id: Option<RequestId>,
        msg: ClientMessage,
    ) {
        if let Err(e) = self.dispatch(conn, id.clone(), msg).await {
            self.metrics.rejected.inc();
            Self::reply(conn, crate::protocol::encode(&e.to_message(), id.as_ref()));
        }
    }

    async fn dispatch(
        self: &Arc<Self>,
        conn: &mut ChatConn,
        id: Option<RequestId>,
        msg: ClientMessage,
    ) -> Result<(), ProtocolError> {
        if !conn.claims.grants.chat {
            return Err(ProtocolError::new(
                ErrorCode::Forbidden,
                "the access token does not grant chat",
            ));
        }
        match msg {
            ClientMessage::ChatSync(req) => self.sync(conn, id, req),
            ClientMessage::ChatSend(req) => {
                let conversation = self.writable(conn, &req.conversation)?;
                check_client_id("client_msg_id", &req.client_msg_id)?;
                if req.text.is_empty() && req.attachments.is_empty() {
                    return Err(invalid("a message needs text or attachments"));
                }
                self.check_text(&req.text)?;
                if req.attachments.len() > self.cfg.max_attachments {
                    return Err(invalid(format!(
                        "at most {} attachments per message",
                        self.cfg.max_attachments
                    )));
                }
                if let Some(bad) = req
                    .attachments
                    .iter()
                    .find(|a| !attachments::is_attachment_id(a))
                {
                    return Err(invalid(format!("{bad:?} is not an attachment id")));
                }
                let metadata = match req.metadata {
                    Some(v) if !v.is_null() => {
                        let s = serde_json::to_string(&v).map_err(|e| invalid(e.to_string()))?;
                        if s.len() > self.cfg.max_metadata_bytes {
                            return Err(invalid(format!(
                                "metadata is limited to {} bytes",
                                self.cfg.max_metadata_bytes
                            )));
                        }
                        Some(s)
                    }
                    _ => None,
                };
                self.rate_limit(conn)?;
                self.write(WriteOp::Post(Post {
                    origin: Self::origin(conn, id),
                    conversation,
                    client_msg_id: req.client_msg_id,
                    kind: EntryKind::Text,
                    text: Some(req.text),
                    reply_to: req.reply_to,
                    target_seq: None,
                    metadata,
                    attachments: req.attachments,
                }))
                .await
            }
            ClientMessage::ChatEdit(req) => {
                let conversation = self.writable(conn, &req.conversation)?;
                check_client_id("client_msg_id", &req.client_msg_id)?;
                if req.text.is_empty() {
                    return Err(invalid(
                        "an edit needs text; use chat_delete to remove a message",
                    ));
                }
                self.check_text(&req.text)?;
                self.rate_limit(conn)?;
                self.write(WriteOp::Post(Post {
                    origin: Self::origin(conn, id),
                    conversation,
                    client_msg_id: req.client_msg_id,
                    kind: EntryKind::Edit,
                    text: Some(req.text),
                    reply_to: None,
                    target_seq: Some(req.seq),
                    metadata: None,
                    attachments: Vec::new(),
                }))
                .await
            }
            ClientMessage::ChatDelete(req) => {
                let conversation = self.writable(conn, &req.conversation)?;
                check_client_id("client_msg_id", &req.client_msg_id)?;
                self.rate_limit(conn)?;
                self.write(WriteOp::Post(Post {
                    origin: Self::origin(conn, id),
                    conversation,
                    client_msg_id: req.client_msg_id,
                    kind: EntryKind::Delete,
                    text: None,
                    reply_to: None,
                    target_seq: Some(req.seq),
                    metadata: None,
                    attachments: Vec::new(),
                }))
                .await
            }
            ClientMessage::ChatReceived(req) => {
                let feed = self.following(conn, &req.conversation)?;
                if req.seq < 0 {
                    return Err(invalid("seq must not be negative"));
                }
                self.write(WriteOp::DeviceAck {
                    identity: conn.identity.clone(),
                    device: feed.device.clone(),
                    conversation: req.conversation.as_str().into(),
                    seq: req.seq,
                })
                .await
            }
            ClientMessage::ChatRead(req) => {
                self.following(conn, &req.conversation)?;
                if req.seq < 0 {
                    return Err(invalid("seq must not be negative"));
                }
                self.write(WriteOp::Read {
                    origin: Self::origin(conn, None),
                    conversation: req.conversation.as_str().into(),
                    seq: req.seq,
                })
                .await?;
                if id.is_some() {
                    Self::reply(
                        conn,
                        crate::protocol::encode(
                            &crate::protocol::ServerMessage::Ok {},
                            id.as_ref(),
                        ),
                    );
                }
                Ok(())
            }
            ClientMessage::ChatTyping(req) => {
                let me = self.following(conn, &req.conversation)?;
                let frame: Utf8Bytes = encode(
                    &ChatOut::ChatTyping {
                        conversation: &req.conversation,
                        identity: &conn.identity,
                        typing: req.typing,
                    },
                    None,
                )
                .into();
                for feed in self.feeds.of_conversation(&req.conversation) {
                    if feed.identity != me.identity {
                        feed.send_ephemeral(frame.clone());
                    }
                }
                Ok(())
            }
            ClientMessage::ChatHistory(req) => {
                self.readable_syntax(conn, &req.conversation)?;
                if req.before.is_some() && req.after.is_some() {
                    return Err(invalid("give before or after, not both"));
                }
                let limit = req.limit.unwrap_or(50).clamp(1, self.cfg.max_history_page);
                let this = self.clone();
                let claims = conn.claims.clone();
                let out = conn.out.clone();
                tokio::spawn(async move {
                    let frame = match this
                        .history(&claims, &req.conversation, req.before, req.after, limit)
                        .await
                    {
                        Ok((messages, has_more)) => encode(
                            &ChatOut::ChatHistory {
                                conversation: &req.conversation,
                                messages: &messages,
                                has_more,
                            },
                            id.as_ref(),
                        ),
                        Err(e) => crate::protocol::encode(&e.to_message(), id.as_ref()),
                    };
                    send_wait(&out, frame).await;
                });
                Ok(())
            }
            ClientMessage::ChatConversations {} => {
                let this = self.clone();
                let identity = conn.identity.clone();
                let out = conn.out.clone();
                tokio::spawn(async move {
                    let frame = match this.conversations(&identity).await {
                        Ok(list) => encode(
                            &ChatOut::ChatConversations {
                                conversations: &list,
                            },
                            id.as_ref(),
                        ),
                        Err(e) => crate::protocol::encode(&e.to_message(), id.as_ref()),
                    };
                    send_wait(&out, frame).await;
                });
                Ok(())
            }
            ClientMessage::ChatOpenDirect(req) => {
                check_name("with", &req.with).map_err(invalid)?;
                if req.with == conn.claims.sub {
                    return Err(invalid("a one-to-one conversation needs another identity"));
                }
                let conversation = direct_id(&conn.claims.sub, &req.with);
                self.members_op(
                    conn,
                    id,
                    MembersChange::OpenDirect {
                        conversation,
                        with: req.with,
                    },
                )
                .await
            }
            ClientMessage::ChatCreateGroup(req) => {
                check_name("name", &req.name).map_err(invalid)?;
                self.check_members(&req.members)?;
                if req.members.len() + 1 > self.cfg.max_group_members {
                    return Err(invalid(format!(
                        "a group has at most {} members",
                        self.cfg.max_group_members
                    )));
                }
                let conversation = format!("{GROUP_PREFIX}{}", uuid::Uuid::new_v4().simple());
                self.members_op(
                    conn,
                    id,
                    MembersChange::CreateGroup {
                        conversation,
                        name: req.name,
                        members: req.members,
                    },
                )
                .await
            }
            ClientMessage::ChatAddMembers(req) => {
                self.check_group_id(&req.conversation)?;
                self.check_members(&req.members)?;
                let max = self.cfg.max_group_members;
                self.members_op(
                    conn,
                    id,
                    MembersChange::Add {
                        conversation: req.conversation,
                        members: req.members,
                        max,
                    },
                )
                .await
            }
            ClientMessage::ChatRemoveMembers(req) => {
                self.check_group_id(&req.conversation)?;
                self.check_members(&req.members)?;
                self.members_op(
                    conn,
                    id,
                    MembersChange::Remove {
                        conversation: req.conversation,
                        members: req.members,
                    },
                )
                .await
            }
            _ => Err(ProtocolError::new(
                ErrorCode::Internal,
                "not a chat request",
            )),
        }
    }

    fn check_text(&self, text: &str) -> Result<(), ProtocolError> {
        if text.len() > self.cfg.max_text_bytes {
            return Err(ProtocolError::new(
                ErrorCode::MessageTooLarge,
                format!(
                    "text is {} bytes; the limit is {}",
                    text.len(),
                    self.cfg.max_text_bytes
                ),
            ));
        }
        if text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(invalid(
                "text must not contain control characters other than newlines and tabs",
            ));
        }
        Ok(())
    }

    fn check_members(&self, members: &[String]) -> Result<(), ProtocolError> {
        if members.len() > self.cfg.max_group_members {
            return Err(invalid(format!(
                "a group has at most {} members",
                self.cfg.max_group_members
            )));
        }
        for m in members {
            check_name("member", m).map_err(invalid)?;
        }
        Ok(())
    }

    fn check_group_id(&self, conv: &str) -> Result<(), ProtocolError> {
        if !conv.starts_with(GROUP_PREFIX) || conv.len() > 200 {
            return Err(invalid(
                "members can only be changed in a group conversation",
            ));
        }
        Ok(())
    }

    fn rate_limit(&self, conn: &ChatConn) -> Result<(), ProtocolError> {
        self.limiter.check_key(&conn.identity).map_err(|_| {
            ProtocolError::new(
                ErrorCode::RateLimited,
                format!(
                    "more than {} chat messages per second from this identity; not stored, retry later",
                    self.cfg.messages_per_second
                ),
            )
        })
    }

    /// Checks the shape of a conversation id and, for rooms, the token's claim.
    fn readable_syntax(&self, conn: &ChatConn, conv: &str) -> Result<(), ProtocolError> {
        if conv.len() > 200 {
            return Err(invalid("conversation id too long"));
        }
        if let Some(room) = conv.strip_prefix(ROOM_PREFIX) {
            check_room_name(room).map_err(invalid)?;
            if !conn.claims.may_join(room) {
                return Err(ProtocolError::new(
                    ErrorCode::Forbidden,
                    format!("the access token does not allow room {room:?}"),
                ));
            }
            Ok(())
        } else if conv.starts_with(DIRECT_PREFIX) || conv.starts_with(GROUP_PREFIX) {
            Ok(())
        } else {
            Err(invalid(format!(
                "conversation ids start with {ROOM_PREFIX}, {DIRECT_PREFIX} or {GROUP_PREFIX}"
            )))
        }
    }

    fn writable(&self, conn: &ChatConn, conv: &str) -> Result<Arc<str>, ProtocolError> {
        self.readable_syntax(conn, conv)?;
        if conv.starts_with(ROOM_PREFIX) && !conn.claims.grants.chat {
            return Err(ProtocolError::new(ErrorCode::Forbidden, "no chat grant"));
        }
        Ok(conv.into())
    }

    /// The device feed, if this connection synced and follows `conv`.
    fn following(&self, conn: &ChatConn, conv: &str) -> Result<Arc<DeviceFeed>, ProtocolError> {
        let feed = conn.feed.as_ref().ok_or_else(|| {
            ProtocolError::new(
                ErrorCode::InvalidState,
                "send chat_sync first to name this device",
            )
        })?;
        if !feed.follows(conv) {
            return Err(not_member());
        }
        Ok(feed.clone())
    }

    async fn write(&self, op: WriteOp) -> Result<(), ProtocolError> {
        self.writer.send(op).await.map_err(|_| {
            ProtocolError::new(ErrorCode::ShuttingDown, "chat is shutting down; not stored")
        })
    }

    async fn members_op(
        self: &Arc<Self>,
        conn: &ChatConn,
        id: Option<RequestId>,
        change: MembersChange,
    ) -> Result<(), ProtocolError> {
        let (done, result) = oneshot::channel();
        self.write(WriteOp::Members(MembersOp {
            actor: conn.identity.clone(),
            change,
            done,
        }))
        .await?;
        let out = conn.out.clone();
        tokio::spawn(async move {
            let frame = match result.await {
                Ok(Ok(info)) => encode(
                    &ChatOut::ChatConversation {
                        conversation: &info,
                    },
                    id.as_ref(),
                ),
                Ok(Err(e)) => crate::protocol::encode(&e.to_message(), id.as_ref()),
                Err(_) => return,
            };
            send_wait(&out, frame).await;
        });
        Ok(())
    }

    fn sync(
        self: &Arc<Self>,
        conn: &mut ChatConn,
        id: Option<RequestId>,
        req: wire::SyncRequest,
    ) -> Result<(), ProtocolError> {
        check_client_id("device", &req.device)?;
        if conn.feed.is_some() {
            return Err(ProtocolError::new(
                ErrorCode::InvalidState,
                "this connection already synced; reconnect to sync again",
            ));
        }
        let feed = Arc::new(DeviceFeed::new(
            conn.identity.clone(),
            req.device.as_str().into(),
            conn.out.clone(),
        ));
        self.feeds.add_device(&feed);
        conn.feed = Some(feed.clone());
        let this = self.clone();
        let room = conn
            .claims
            .room
            .clone()
            .filter(|r| r != crate::auth::ANY_ROOM && check_room_name(r).is_ok());
        tokio::spawn(async move {
            match this.catch_up(&feed, room, req, id.as_ref()).await {
                Ok((frame, started)) => {
                    feed.send(frame.into()).await;
                    // Each conversation's catch-up runs only after chat_synced is queued.
                    for conv in started {
                        spawn_catch_up(feed.clone(), conv, this.pool.clone(), this.metrics.clone());
                    }
                }
                Err(e) => {
                    this.feeds.remove_device(&feed);
                    feed.send(crate::protocol::encode(&e.to_message(), id.as_ref()).into())
                        .await;
                }
            }
        });
        Ok(())
    }

    /// Subscribes the device to its conversations and works out where each resumes.
    /// Returns `chat_synced` and the conversations whose catch-up must start.
    async fn catch_up(
        &self,
        feed: &Arc<DeviceFeed>,
        room: Option<String>,
        req: wire::SyncRequest,
        id: Option<&RequestId>,
    ) -> Result<(String, Vec<Arc<str>>), ProtocolError> {
        let fail = |e: sqlx::Error| {
            tracing::warn!(error = %e, "chat sync read failed");
            self.metrics.store_errors.inc();
            ProtocolError::new(
                ErrorCode::Unavailable,
                "the message store is unavailable; reconnect and sync again",
            )
        };
        if let Some(room) = room {
            let (done, result) = oneshot::channel();
            self.write(WriteOp::EnsureRoom {
                conversation: format!("{ROOM_PREFIX}{room}").into(),
                identity: feed.identity.clone(),
                done,
            })
            .await?;
            result
                .await
                .map_err(|_| ProtocolError::new(ErrorCode::ShuttingDown, "shutting down"))??;
        }
        // Subscribe first, then read where each log ends: an entry committed in between
        // is then either in what we read or offered to the feed.
        // Hold every conversation, then read again until no new one appears: the last
        // read then saw every held conversation's log end after it was held.
        let mut ours: HashSet<Arc<str>> = HashSet::new();
        let mut members = store::memberships(&self.pool, &feed.identity)
            .await
            .map_err(fail)?;
        for _ in 0..8 {
            let mut new = false;
            for m in &members {
                let conv: Arc<str> = m.id.as_str().into();
                if feed.hold(&conv) {
                    self.feeds.subscribe(feed, &conv);
                    ours.insert(conv);
                    new = true;
                }
            }
            members = store::memberships(&self.pool, &feed.identity)
                .await
                .map_err(fail)?;
            if !new {
                break;
            }
        }
        let stored: std::collections::HashMap<String, i64> =
            store::device_cursors(&self.pool, &feed.identity, &feed.device)
                .await
                .map_err(fail)?
                .into_iter()
                .collect();
        let backlog = self.cfg.new_device_backlog as i64;
        let mut out = Vec::with_capacity(members.len());
        for m in &members {
            let conv: Arc<str> = m.id.as_str().into();
            let from = match req.cursors.get(&m.id).or_else(|| stored.get(&m.id)) {
                Some(&seq) => seq.clamp(0, m.last_seq),
                None => (m.last_seq - backlog).max(0),
            };
            if ours.contains(&conv) {
                feed.start(&conv, from, m.last_seq);
            } else if !feed.follows(&conv) {
                // Left again, or joined after the last read (then followed by the writer).
                continue;
            }
            out.push(SyncedConversation {
                id: m.id.clone(),
                kind: m.kind.clone(),
                name: m.name.clone(),
                from_seq: from,
                last_seq: m.last_seq,
                unread: store::unread(&self.pool, &m.id, &feed.identity, m.read_seq)
                    .await
                    .map_err(fail)?,
            });
        }
        let frame = encode(
            &ChatOut::ChatSynced {
                device: &feed.device,
                conversations: &out,
            },
            id,
        );
        // Held but no longer a member (left between the reads): let go.
        let current: HashSet<&str> = members.iter().map(|m| m.id.as_str()).collect();
        for conv in ours.iter().filter(|c| !current.contains(c.as_ref())) {
            self.feeds.unsubscribe(feed, conv);
        }
        ours.retain(|c| current.contains(c.as_ref()));
        Ok((frame, ours.into_iter().collect()))
    }

    async fn history(
        &self,
        claims: &Claims,
        conv: &str,
        before: Option<i64>,
        after: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<wire::ChatEntry>, bool), ProtocolError> {
        let fail = |e: sqlx::Error| {
            tracing::warn!(error = %e, "chat history read failed");
            self.metrics.store_errors.inc();
            ProtocolError::new(
                ErrorCode::Unavailable,
                "the message store is unavailable; retry",
            )
        };
        if !conv.starts_with(ROOM_PREFIX)
            && store::membership(&self.pool, conv, &claims.sub)
                .await
                .map_err(fail)?
                .is_none()
        {
            return Err(not_member());
        }
        let mut page = match after {
            Some(after) => store::entries_between(&self.pool, conv, after, i64::MAX, limit + 1)
                .await
                .map_err(fail)?,
            None => {
                let mut p =
                    store::entries_before(&self.pool, conv, before.unwrap_or(i64::MAX), limit + 1)
                        .await
                        .map_err(fail)?;
                if p.len() > limit {
                    p.remove(0);
                    return Ok((p, true));
                }
                p
            }
        };
        let has_more = page.len() > limit;
        page.truncate(limit);
        Ok((page, has_more))
    }

    async fn conversations(
        &self,
        identity: &str,
    ) -> Result<Vec<wire::ConversationInfo>, ProtocolError> {
        let fail = |e: sqlx::Error| {
            tracing::warn!(error = %e, "chat conversations read failed");
            self.metrics.store_errors.inc();
            ProtocolError::new(
                ErrorCode::Unavailable,
                "the message store is unavailable; retry",
            )
        };
        let mut out = Vec::new();
        for m in store::memberships(&self.pool, identity)
            .await
            .map_err(fail)?
        {
            out.push(
                store::conversation_info(&self.pool, &m, identity)
                    .await
                    .map_err(fail)?,
            );
        }
        Ok(out)
    }

    pub(crate) async fn record_attachment(
        &self,
        id: &str,
        content_type: &str,
        size: u64,
        uploader: &str,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO chat_attachments (id, content_type, size, uploader, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(content_type)
        .bind(size as i64)
        .bind(uploader)
        .bind(unix_ms())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO chat_attachment_owners (attachment_id, identity) VALUES ($1, $2) \
             ON CONFLICT (attachment_id, identity) DO NOTHING",
        )
        .bind(id)
        .bind(uploader)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    pub(crate) async fn attachment_type(&self, id: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT content_type FROM chat_attachments WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    pub(crate) async fn may_download(
        &self,
        id: &str,
        claims: &Claims,
    ) -> Result<bool, sqlx::Error> {
        store::may_download(&self.pool, id, &claims.sub, |room| claims.may_join(room)).await
    }
}

/// Sends a response from a spawned task, waiting for queue space.
async fn send_wait(out: &mpsc::WeakSender<Utf8Bytes>, frame: String) {
    if let Some(out) = out.upgrade() {
        let _ = out.send(frame.into()).await;
    }
}

/// Deletes entries older than the retention period, every so often.
async fn retention(pool: AnyPool, keep: Duration, stop: CancellationToken) {
    let every = (keep / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let cutoff = unix_ms() - keep.as_millis() as i64;
        let r = sqlx::query("DELETE FROM chat_messages WHERE server_ts < $1")
            .bind(cutoff)
            .execute(&pool)
            .await;
        match r {
            Ok(done) if done.rows_affected() > 0 => {
                tracing::info!(deleted = done.rows_affected(), "chat retention");
                let _ = sqlx::query(
                    "DELETE FROM chat_message_attachments WHERE NOT EXISTS (SELECT 1 FROM chat_messages m \
                     WHERE m.conversation_id = chat_message_attachments.conversation_id \
                     AND m.seq = chat_message_attachments.seq)",
                )
                .execute(&pool)
                .await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "chat retention failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_ids_are_symmetric_and_distinct() {
        assert_eq!(direct_id("alice", "bob"), direct_id("bob", "alice"));
        assert_ne!(direct_id("alice", "bob"), direct_id("alice", "carol"));
        // No ambiguity from concatenation.
        assert_ne!(direct_id("a", "bc"), direct_id("ab", "c"));
        assert!(direct_id("a", "b").starts_with(DIRECT_PREFIX));
    }

    #[test]
    fn client_ids_are_bounded_printable() {
        assert!(check_client_id("x", "0b7f5c1e-2a4b-4c1d-9f00-5a1b2c3d4e5f").is_ok());
        assert!(check_client_id("x", "").is_err());
        assert!(check_client_id("x", "has space").is_err());
        assert!(check_client_id("x", &"a".repeat(65)).is_err());
        assert!(check_client_id("x", "é").is_err());
    }
}
