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
mod reads;
mod requests;
pub(crate) mod store;
mod sync;
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
use wire::{ChatOut, SyncedConversation, encode};
use writer::{Origin, WriteOp};

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
            tokio::spawn(reads::retention(pool.clone(), cfg.retention, shutdown));
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
}

/// Sends a response from a spawned task, waiting for queue space.
/// A client that reads nothing for this long loses the response (it may ask again).
const RESPONSE_PATIENCE: Duration = Duration::from_secs(10);

async fn send_wait(out: &mpsc::WeakSender<Utf8Bytes>, frame: String) {
    if let Some(out) = out.upgrade() {
        let _ = out.send_timeout(frame.into(), RESPONSE_PATIENCE).await;
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
