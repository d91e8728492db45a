//! The single chat writer. Every change to chat state goes through one task that takes
//! requests in arrival order, assigns sequence numbers, and commits whatever is queued in
//! one transaction (group commit): one fsync covers many messages, yet nothing is acked
//! before the commit that makes it durable. After a commit it acks the senders and hands
//! the new entries to [`super::feed`] for delivery.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use sqlx::AnyPool;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::commit::{Outcome, add_member, commit_batch, create_room};
use super::feed::{DeviceFeed, Feeds, spawn_catch_up};
use super::metrics::ChatMetrics;
use super::store;
use super::unix_ms;
use super::webhook::Undelivered;
use super::wire::{ChatOut, ConversationInfo, EntryKind, encode};
use crate::protocol::{ErrorCode, ProtocolError, RequestId};
use crate::store::Backend;

/// Most requests committed in one transaction.
const MAX_BATCH: usize = 256;
/// How long a reply may wait for room in a slow client's queue.
const REPLY_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Who asked, and where the answer goes.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub identity: Arc<str>,
    pub device: Arc<str>,
    pub out: mpsc::WeakSender<Utf8Bytes>,
    pub id: Option<RequestId>,
}

impl Origin {
    fn reply(&self, frame: String) {
        let Some(out) = self.out.upgrade() else {
            return;
        };
        if let Err(TrySendError::Full(frame)) = out.try_send(frame.into()) {
            // The writer never waits for one client; a task does. Such tasks are bounded
            // by the client's own requests in flight, and if the client stops reading
            // this reply is dropped after a while: it resends and is acked again.
            drop(out);
            let weak = self.out.clone();
            tokio::spawn(async move {
                if let Some(out) = weak.upgrade() {
                    let _ = out.send_timeout(frame, REPLY_PATIENCE).await;
                }
            });
        }
    }

    fn error(&self, e: &ProtocolError) {
        self.reply(crate::protocol::encode(&e.to_message(), self.id.as_ref()));
    }
}

/// A new log entry asked for by a client.
#[derive(Debug)]
pub(crate) struct Post {
    pub origin: Origin,
    pub conversation: Arc<str>,
    pub client_msg_id: String,
    pub kind: EntryKind,
    pub text: Option<String>,
    pub reply_to: Option<i64>,
    pub target_seq: Option<i64>,
    pub metadata: Option<String>,
    pub attachments: Vec<String>,
}

impl Post {
    /// An edit (`text` given) or a delete of message `target` as a new entry.
    pub(crate) fn change(
        origin: Origin,
        conversation: Arc<str>,
        client_msg_id: String,
        (kind, text, target): (EntryKind, Option<String>, i64),
    ) -> Self {
        Self {
            origin,
            conversation,
            client_msg_id,
            kind,
            text,
            reply_to: None,
            target_seq: Some(target),
            metadata: None,
            attachments: Vec::new(),
        }
    }
}

pub(crate) enum WriteOp {
    Post(Post),
    /// A device's cumulative delivery ack.
    DeviceAck {
        identity: Arc<str>,
        device: Arc<str>,
        conversation: Arc<str>,
        seq: i64,
    },
    /// A member's read marker; relayed to the other members' devices once stored.
    Read {
        origin: Origin,
        conversation: Arc<str>,
        seq: i64,
    },
    /// Makes `identity` a member of a room's conversation (created on first use).
    EnsureRoom {
        conversation: Arc<str>,
        identity: Arc<str>,
        done: oneshot::Sender<Result<(), ProtocolError>>,
    },
    /// Creates (if needed) a conversation with members, or changes its members.
    Members(MembersOp),
}

pub(crate) struct MembersOp {
    pub actor: Arc<str>,
    pub change: MembersChange,
    pub done: oneshot::Sender<Result<ConversationInfo, ProtocolError>>,
}

pub(crate) enum MembersChange {
    OpenDirect {
        conversation: String,
        with: String,
    },
    CreateGroup {
        conversation: String,
        name: String,
        members: Vec<String>,
    },
    Add {
        conversation: String,
        members: Vec<String>,
        max: usize,
    },
    Remove {
        conversation: String,
        members: Vec<String>,
    },
}

/// What the writer shares with the rest of chat.
pub(crate) struct WriterCtx {
    pub pool: AnyPool,
    pub backend: Backend,
    pub feeds: Arc<Feeds>,
    pub metrics: Arc<ChatMetrics>,
    pub webhook: Option<mpsc::Sender<Undelivered>>,
}

/// Runs the writer until every sender of `rx` is gone.
pub(crate) async fn run(ctx: WriterCtx, mut rx: mpsc::Receiver<WriteOp>) {
    let mut queue: Vec<WriteOp> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        queue.push(first);
        while queue.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => queue.push(op),
                Err(_) => break,
            }
        }
        let mut batch = Vec::new();
        for op in queue.drain(..) {
            match op {
                WriteOp::Members(m) => {
                    flush(&ctx, std::mem::take(&mut batch)).await;
                    members_op(&ctx, m).await;
                }
                WriteOp::EnsureRoom {
                    conversation,
                    identity,
                    done,
                } => {
                    flush(&ctx, std::mem::take(&mut batch)).await;
                    let r = ensure_room(&ctx.pool, &conversation, &identity)
                        .await
                        .map_err(|e| store_failed(&ctx, e));
                    let _ = done.send(r);
                }
                other => batch.push(other),
            }
        }
        flush(&ctx, batch).await;
    }
}

fn store_failed(ctx: &WriterCtx, e: sqlx::Error) -> ProtocolError {
    tracing::warn!(error = %e, "chat store write failed");
    ctx.metrics.store_errors.inc();
    ProtocolError::new(
        ErrorCode::Unavailable,
        "the message store is unavailable; nothing was stored, retry",
    )
}

async fn flush(ctx: &WriterCtx, batch: Vec<WriteOp>) {
    if batch.is_empty() {
        return;
    }
    let now = unix_ms();
    let started = std::time::Instant::now();
    match commit_batch(&ctx.pool, ctx.backend, &batch, now).await {
        Ok(outcomes) => {
            ctx.metrics.commits.inc();
            ctx.metrics.commit_batch.observe(batch.len() as f64);
            ctx.metrics
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
            after_commit(ctx, batch, outcomes);
        }
        Err(e) => {
            let err = store_failed(ctx, e);
            for op in &batch {
                if let WriteOp::Post(p) = op {
                    p.origin.error(&err);
                }
            }
        }
    }
}

fn after_commit(ctx: &WriterCtx, batch: Vec<WriteOp>, outcomes: Vec<Option<Outcome>>) {
    for (op, outcome) in batch.into_iter().zip(outcomes) {
        match (op, outcome) {
            (WriteOp::Post(p), Some(Outcome::Stored(entry))) => {
                ctx.metrics.entries_stored.inc();
                p.origin.reply(encode(
                    &ChatOut::ChatAck {
                        conversation: &entry.conversation,
                        client_msg_id: &entry.client_msg_id,
                        seq: entry.seq,
                        server_ts: entry.server_ts,
                        duplicate: false,
                    },
                    p.origin.id.as_ref(),
                ));
                let frame: Utf8Bytes = encode(&ChatOut::ChatMessage { entry: &entry }, None).into();
                ctx.feeds
                    .deliver(&p.conversation, entry.seq, &frame, &ctx.pool, &ctx.metrics);
                if let (Some(hook), EntryKind::Text) = (&ctx.webhook, entry.kind) {
                    let ev = Undelivered::from_entry(&entry);
                    if hook.try_send(ev).is_err() {
                        ctx.metrics.webhook_failures.inc();
                    }
                }
            }
            (
                WriteOp::Post(p),
                Some(Outcome::Duplicate {
                    conversation,
                    seq,
                    server_ts,
                }),
            ) => {
                ctx.metrics.duplicate_sends.inc();
                p.origin.reply(encode(
                    &ChatOut::ChatAck {
                        conversation: &conversation,
                        client_msg_id: &p.client_msg_id,
                        seq,
                        server_ts,
                        duplicate: true,
                    },
                    p.origin.id.as_ref(),
                ));
            }
            (WriteOp::Post(p), Some(Outcome::Refused(e))) => {
                ctx.metrics.rejected.inc();
                p.origin.error(&e);
            }
            (
                WriteOp::Read {
                    origin,
                    conversation,
                    seq,
                },
                _,
            ) => {
                let frame: Utf8Bytes = encode(
                    &ChatOut::ChatRead {
                        conversation: &conversation,
                        identity: &origin.identity,
                        seq,
                    },
                    None,
                )
                .into();
                for feed in ctx.feeds.of_conversation(&conversation) {
                    if feed.device != origin.device || feed.identity != origin.identity {
                        feed.send_ephemeral(frame.clone());
                    }
                }
            }
            _ => {}
        }
    }
}

async fn ensure_room(
    pool: &AnyPool,
    conversation: &str,
    identity: &str,
) -> Result<(), sqlx::Error> {
    let now = unix_ms();
    let mut tx = pool.begin().await?;
    create_room(&mut *tx, conversation, now).await?;
    add_member(&mut *tx, conversation, identity, now).await?;
    tx.commit().await
}

async fn members_op(ctx: &WriterCtx, op: MembersOp) {
    let r = change_members(ctx, &op.actor, op.change).await;
    let _ = op.done.send(r);
}

/// Applies a membership change and tells the devices concerned.
async fn change_members(
    ctx: &WriterCtx,
    actor: &Arc<str>,
    change: MembersChange,
) -> Result<ConversationInfo, ProtocolError> {
    let now = unix_ms();
    let pool = &ctx.pool;
    let fail = |e| store_failed(ctx, e);
    let (conversation, added, removed) = match change {
        MembersChange::OpenDirect { conversation, with } => {
            let mut tx = pool.begin().await.map_err(fail)?;
            sqlx::query(
                "INSERT INTO chat_conversations (id, kind, name, owner, last_seq, created_at) \
                 VALUES ($1, 'direct', NULL, NULL, 0, $2) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&conversation)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
            for who in [actor.as_ref(), with.as_str()] {
                add_member(&mut *tx, &conversation, who, now)
                    .await
                    .map_err(fail)?;
            }
            tx.commit().await.map_err(fail)?;
            (conversation, vec![actor.to_string(), with], vec![])
        }
        MembersChange::CreateGroup {
            conversation,
            name,
            members,
        } => {
            let mut tx = pool.begin().await.map_err(fail)?;
            sqlx::query(
                "INSERT INTO chat_conversations (id, kind, name, owner, last_seq, created_at) \
                 VALUES ($1, 'group', $2, $3, 0, $4)",
            )
            .bind(&conversation)
            .bind(&name)
            .bind(actor.as_ref())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
            let mut all = vec![actor.to_string()];
            all.extend(members.into_iter().filter(|m| m != actor.as_ref()));
            all.sort();
            all.dedup();
            for who in &all {
                add_member(&mut *tx, &conversation, who, now)
                    .await
                    .map_err(fail)?;
            }
            tx.commit().await.map_err(fail)?;
            (conversation, all, vec![])
        }
        MembersChange::Add {
            conversation,
            members,
            max,
        } => {
            let owner = group_owner(pool, &conversation).await.map_err(fail)?;
            if owner.as_deref() != Some(actor.as_ref()) {
                return Err(ProtocolError::new(
                    ErrorCode::Forbidden,
                    "only the group's owner may add members",
                ));
            }
            let current = store::members(pool, &conversation).await.map_err(fail)?;
            let new: Vec<String> = members
                .into_iter()
                .filter(|m| !current.contains(m))
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            if current.len() + new.len() > max {
                return Err(ProtocolError::new(
                    ErrorCode::InvalidMessage,
                    format!("a group has at most {max} members"),
                ));
            }
            let mut tx = pool.begin().await.map_err(fail)?;
            for who in &new {
                add_member(&mut *tx, &conversation, who, now)
                    .await
                    .map_err(fail)?;
            }
            tx.commit().await.map_err(fail)?;
            (conversation, new, vec![])
        }
        MembersChange::Remove {
            conversation,
            members,
        } => {
            let owner = group_owner(pool, &conversation).await.map_err(fail)?;
            let only_self = members.iter().all(|m| m == actor.as_ref());
            if owner.is_none() || (owner.as_deref() != Some(actor.as_ref()) && !only_self) {
                return Err(ProtocolError::new(
                    ErrorCode::Forbidden,
                    "only the group's owner may remove others; anyone may leave",
                ));
            }
            let mut tx = pool.begin().await.map_err(fail)?;
            for who in &members {
                sqlx::query(
                    "DELETE FROM chat_members WHERE conversation_id = $1 AND identity = $2",
                )
                .bind(&conversation)
                .bind(who)
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
            }
            tx.commit().await.map_err(fail)?;
            (conversation, vec![], members)
        }
    };
    let conv: Arc<str> = conversation.as_str().into();
    let last_seq = store::last_seq(pool, &conversation).await.map_err(fail)?;
    for who in &added {
        let feeds = ctx.feeds.of_identity(who);
        if feeds.is_empty() {
            continue;
        }
        let info = info_for(ctx, &conversation, who).await?;
        let frame: Utf8Bytes = encode(
            &ChatOut::ChatJoined {
                conversation: &info,
            },
            None,
        )
        .into();
        for feed in feeds {
            follow_from(ctx, &feed, &conv, last_seq);
            feed.send_ephemeral(frame.clone());
        }
    }
    for who in &removed {
        let frame: Utf8Bytes = encode(
            &ChatOut::ChatRemoved {
                conversation: &conversation,
            },
            None,
        )
        .into();
        for feed in ctx.feeds.of_identity(who) {
            ctx.feeds.unsubscribe(&feed, &conversation);
            feed.send_ephemeral(frame.clone());
        }
    }
    if removed.iter().any(|m| m == actor.as_ref()) {
        // The actor left: answer with what it left, seen from outside.
        return Ok(ConversationInfo {
            id: conversation.clone(),
            kind: "group".into(),
            name: None,
            last_seq,
            read_seq: 0,
            unread: 0,
            members: store::members(pool, &conversation).await.map_err(fail)?,
        });
    }
    info_for(ctx, &conversation, actor).await
}

/// A conversation as `who` sees it.
async fn info_for(
    ctx: &WriterCtx,
    conversation: &str,
    who: &str,
) -> Result<ConversationInfo, ProtocolError> {
    let m = store::membership(&ctx.pool, conversation, who)
        .await
        .map_err(|e| store_failed(ctx, e))?
        .ok_or_else(|| ProtocolError::new(ErrorCode::NotMember, "not a member"))?;
    store::conversation_info(&ctx.pool, &m, who)
        .await
        .map_err(|e| store_failed(ctx, e))
}

/// Makes a connected device follow a conversation it just joined, from `last_seq`.
fn follow_from(ctx: &WriterCtx, feed: &Arc<DeviceFeed>, conv: &Arc<str>, last_seq: i64) {
    if feed.follows(conv) {
        return;
    }
    ctx.feeds.subscribe(feed, conv);
    feed.start(conv, last_seq, last_seq);
    spawn_catch_up(
        feed.clone(),
        conv.clone(),
        ctx.pool.clone(),
        ctx.metrics.clone(),
    );
}

async fn group_owner(pool: &AnyPool, conversation: &str) -> Result<Option<String>, sqlx::Error> {
    let owner: Option<Option<String>> =
        sqlx::query_scalar("SELECT owner FROM chat_conversations WHERE id = $1 AND kind = 'group'")
            .bind(conversation)
            .fetch_optional(pool)
            .await?;
    Ok(owner.flatten())
}
