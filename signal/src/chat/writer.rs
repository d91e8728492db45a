//! The single chat writer. Every change to chat state goes through one task that takes
//! requests in arrival order, assigns sequence numbers, and commits whatever is queued in
//! one transaction (group commit): one fsync covers many messages, yet nothing is acked
//! before the commit that makes it durable. After a commit it acks the senders and hands
//! the new entries to [`super::feed`] for delivery.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use sqlx::{Any, AnyPool, Row, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::feed::{DeviceFeed, Feeds, spawn_catch_up};
use super::metrics::ChatMetrics;
use super::store;
use super::webhook::Undelivered;
use super::wire::{ChatEntry, ChatOut, ConversationInfo, EntryKind, encode};
use super::{ROOM_PREFIX, unix_ms};
use crate::protocol::{ErrorCode, ProtocolError, RequestId};

/// Most requests committed in one transaction.
const MAX_BATCH: usize = 512;

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
        if let Some(out) = self.out.upgrade() {
            // A full queue loses only this reply; the client resends and is acked again.
            let _ = out.try_send(frame.into());
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

/// The outcome of one post inside a transaction.
enum Outcome {
    Stored(ChatEntry),
    Duplicate {
        conversation: String,
        seq: i64,
        server_ts: i64,
    },
    Refused(ProtocolError),
}

/// A conversation as seen by the current transaction.
struct ConvState {
    room: bool,
    next_seq: i64,
    members_ok: HashSet<Arc<str>>,
    touched: bool,
}

async fn flush(ctx: &WriterCtx, batch: Vec<WriteOp>) {
    if batch.is_empty() {
        return;
    }
    let now = unix_ms();
    match commit_batch(&ctx.pool, &batch, now).await {
        Ok(outcomes) => {
            ctx.metrics.commits.inc();
            ctx.metrics.commit_batch.observe(batch.len() as f64);
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

async fn commit_batch(
    pool: &AnyPool,
    batch: &[WriteOp],
    now: i64,
) -> Result<Vec<Option<Outcome>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut convs: HashMap<Arc<str>, ConvState> = HashMap::new();
    let mut seen: HashMap<(Arc<str>, String), (String, i64, i64)> = HashMap::new();
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut acks: HashMap<(Arc<str>, Arc<str>, Arc<str>), i64> = HashMap::new();
    let mut reads: HashMap<(Arc<str>, Arc<str>), i64> = HashMap::new();
    for op in batch {
        match op {
            WriteOp::Post(p) => {
                let outcome = post(&mut tx, &mut convs, &mut seen, p, now).await?;
                if let Outcome::Stored(e) = &outcome {
                    seen.insert(
                        (p.origin.identity.clone(), p.client_msg_id.clone()),
                        (e.conversation.clone(), e.seq, e.server_ts),
                    );
                }
                outcomes.push(Some(outcome));
            }
            WriteOp::DeviceAck {
                identity,
                device,
                conversation,
                seq,
            } => {
                let k = (identity.clone(), device.clone(), conversation.clone());
                let v = acks.entry(k).or_insert(*seq);
                *v = (*v).max(*seq);
                outcomes.push(None);
            }
            WriteOp::Read {
                origin,
                conversation,
                seq,
            } => {
                let k = (origin.identity.clone(), conversation.clone());
                let v = reads.entry(k).or_insert(*seq);
                *v = (*v).max(*seq);
                outcomes.push(None);
            }
            WriteOp::EnsureRoom { .. } | WriteOp::Members(_) => outcomes.push(None),
        }
    }
    for (id, c) in &convs {
        if c.touched {
            sqlx::query("UPDATE chat_conversations SET last_seq = $1 WHERE id = $2")
                .bind(c.next_seq - 1)
                .bind(id.as_ref())
                .execute(&mut *tx)
                .await?;
        }
    }
    for ((identity, device, conv), seq) in acks {
        sqlx::query(
            "INSERT INTO chat_device_cursors (identity, device, conversation_id, acked_seq, updated_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (identity, device, conversation_id) DO UPDATE \
             SET acked_seq = CASE WHEN excluded.acked_seq > chat_device_cursors.acked_seq \
             THEN excluded.acked_seq ELSE chat_device_cursors.acked_seq END, updated_at = excluded.updated_at",
        )
        .bind(identity.as_ref())
        .bind(device.as_ref())
        .bind(conv.as_ref())
        .bind(seq)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    for ((identity, conv), seq) in reads {
        sqlx::query(
            "UPDATE chat_members SET read_seq = CASE WHEN $1 > read_seq THEN $1 ELSE read_seq END \
             WHERE conversation_id = $2 AND identity = $3",
        )
        .bind(seq)
        .bind(conv.as_ref())
        .bind(identity.as_ref())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(outcomes)
}

fn refused(code: ErrorCode, msg: impl Into<String>) -> Outcome {
    Outcome::Refused(ProtocolError::new(code, msg))
}

async fn post(
    tx: &mut Transaction<'static, Any>,
    convs: &mut HashMap<Arc<str>, ConvState>,
    seen: &mut HashMap<(Arc<str>, String), (String, i64, i64)>,
    p: &Post,
    now: i64,
) -> Result<Outcome, sqlx::Error> {
    let author = &p.origin.identity;
    // Idempotency: a client message id is stored once per sender.
    let earlier = match seen.get(&(author.clone(), p.client_msg_id.clone())) {
        Some(hit) => Some(hit.clone()),
        None => sqlx::query(
            "SELECT conversation_id, seq, server_ts FROM chat_messages \
             WHERE sender = $1 AND client_msg_id = $2",
        )
        .bind(author.as_ref())
        .bind(&p.client_msg_id)
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| -> Result<_, sqlx::Error> {
            Ok((
                r.try_get("conversation_id")?,
                r.try_get("seq")?,
                r.try_get("server_ts")?,
            ))
        })
        .transpose()?,
    };
    if let Some((conversation, seq, server_ts)) = earlier {
        if conversation != p.conversation.as_ref() {
            return Ok(refused(
                ErrorCode::DuplicateClientId,
                "client_msg_id was already used for a message in another conversation",
            ));
        }
        return Ok(Outcome::Duplicate {
            conversation,
            seq,
            server_ts,
        });
    }
    if !convs.contains_key(&p.conversation) {
        let row = sqlx::query("SELECT kind, last_seq FROM chat_conversations WHERE id = $1")
            .bind(p.conversation.as_ref())
            .fetch_optional(&mut **tx)
            .await?;
        let room = p.conversation.starts_with(ROOM_PREFIX);
        let last_seq = match row {
            Some(r) => r.try_get::<i64, _>("last_seq")?,
            None if room => {
                create_room(&mut **tx, &p.conversation, now).await?;
                0
            }
            None => {
                return Ok(refused(
                    ErrorCode::NotMember,
                    "no such conversation, or not a member of it",
                ));
            }
        };
        convs.insert(
            p.conversation.clone(),
            ConvState {
                room,
                next_seq: last_seq + 1,
                members_ok: HashSet::new(),
                touched: false,
            },
        );
    }
    let conv = convs.get_mut(&p.conversation).expect("inserted above");
    if !conv.members_ok.contains(author) {
        if conv.room {
            // The caller checked the token's room claim; membership is what makes the room's
            // chat reach this identity's devices while they are offline.
            add_member(&mut **tx, &p.conversation, author, now).await?;
        } else {
            let member: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM chat_members WHERE conversation_id = $1 AND identity = $2",
            )
            .bind(p.conversation.as_ref())
            .bind(author.as_ref())
            .fetch_optional(&mut **tx)
            .await?;
            if member.is_none() {
                return Ok(refused(
                    ErrorCode::NotMember,
                    "no such conversation, or not a member of it",
                ));
            }
        }
        conv.members_ok.insert(author.clone());
    }
    let last = conv.next_seq - 1;
    if let Some(r) = p.reply_to {
        if r < 1 || r > last {
            return Ok(refused(
                ErrorCode::InvalidTarget,
                format!("reply_to {r} is not a seq of this conversation"),
            ));
        }
    }
    if let Some(target) = p.target_seq {
        let row = sqlx::query(
            "SELECT sender, kind, deleted FROM chat_messages WHERE conversation_id = $1 AND seq = $2",
        )
        .bind(p.conversation.as_ref())
        .bind(target)
        .fetch_optional(&mut **tx)
        .await?;
        let ok = match &row {
            Some(r) => {
                r.try_get::<String, _>("sender")? == author.as_ref()
                    && r.try_get::<String, _>("kind")? == "text"
                    && r.try_get::<i64, _>("deleted")? == 0
            }
            None => false,
        };
        if !ok {
            return Ok(refused(
                ErrorCode::InvalidTarget,
                format!("seq {target} is not a message of yours that can be changed"),
            ));
        }
    }
    for a in &p.attachments {
        let owned: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM chat_attachment_owners WHERE attachment_id = $1 AND identity = $2",
        )
        .bind(a)
        .bind(author.as_ref())
        .fetch_optional(&mut **tx)
        .await?;
        if owned.is_none() {
            return Ok(refused(
                ErrorCode::InvalidTarget,
                format!("attachment {a} was not uploaded by this identity"),
            ));
        }
    }
    let seq = conv.next_seq;
    conv.next_seq += 1;
    conv.touched = true;
    let attachments = if p.attachments.is_empty() {
        None
    } else {
        Some(serde_json::to_string(&p.attachments).unwrap_or_else(|_| "[]".into()))
    };
    sqlx::query(
        "INSERT INTO chat_messages (conversation_id, seq, sender, device, client_msg_id, kind, body, \
         reply_to, target_seq, metadata, attachments, server_ts, deleted) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0)",
    )
    .bind(p.conversation.as_ref())
    .bind(seq)
    .bind(author.as_ref())
    .bind(p.origin.device.as_ref())
    .bind(&p.client_msg_id)
    .bind(p.kind.as_str())
    .bind(p.text.clone())
    .bind(p.reply_to)
    .bind(p.target_seq)
    .bind(p.metadata.clone())
    .bind(attachments)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    for a in &p.attachments {
        sqlx::query(
            "INSERT INTO chat_message_attachments (attachment_id, conversation_id, seq) \
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(a)
        .bind(p.conversation.as_ref())
        .bind(seq)
        .execute(&mut **tx)
        .await?;
    }
    match (p.kind, p.target_seq) {
        (EntryKind::Edit, Some(t)) => {
            sqlx::query(
                "UPDATE chat_messages SET body = $1, edited_ts = $2 WHERE conversation_id = $3 AND seq = $4",
            )
            .bind(p.text.clone())
            .bind(now)
            .bind(p.conversation.as_ref())
            .bind(t)
            .execute(&mut **tx)
            .await?;
        }
        (EntryKind::Delete, Some(t)) => {
            sqlx::query(
                "UPDATE chat_messages SET body = NULL, metadata = NULL, attachments = NULL, deleted = 1, \
                 edited_ts = $1 WHERE conversation_id = $2 AND seq = $3",
            )
            .bind(now)
            .bind(p.conversation.as_ref())
            .bind(t)
            .execute(&mut **tx)
            .await?;
            sqlx::query(
                "DELETE FROM chat_message_attachments WHERE conversation_id = $1 AND seq = $2",
            )
            .bind(p.conversation.as_ref())
            .bind(t)
            .execute(&mut **tx)
            .await?;
        }
        _ => {}
    }
    Ok(Outcome::Stored(ChatEntry {
        conversation: p.conversation.to_string(),
        seq,
        kind: p.kind,
        sender: author.to_string(),
        client_msg_id: p.client_msg_id.clone(),
        server_ts: now,
        text: p.text.clone(),
        reply_to: p.reply_to,
        target_seq: p.target_seq,
        metadata: p
            .metadata
            .as_deref()
            .and_then(|m| serde_json::from_str(m).ok()),
        attachments: p.attachments.clone(),
        edited_ts: None,
        deleted: false,
    }))
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

async fn create_room<'c, E>(exec: E, conversation: &str, now: i64) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'c, Database = Any>,
{
    sqlx::query(
        "INSERT INTO chat_conversations (id, kind, name, owner, last_seq, created_at) \
         VALUES ($1, 'room', $2, NULL, 0, $3) ON CONFLICT (id) DO NOTHING",
    )
    .bind(conversation)
    .bind(
        conversation
            .strip_prefix(ROOM_PREFIX)
            .unwrap_or(conversation),
    )
    .bind(now)
    .execute(exec)
    .await?;
    Ok(())
}

async fn add_member<'c, E>(
    exec: E,
    conversation: &str,
    identity: &str,
    now: i64,
) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'c, Database = Any>,
{
    sqlx::query(
        "INSERT INTO chat_members (conversation_id, identity, joined_at, read_seq) \
         VALUES ($1, $2, $3, 0) ON CONFLICT (conversation_id, identity) DO NOTHING",
    )
    .bind(conversation)
    .bind(identity)
    .bind(now)
    .execute(exec)
    .await?;
    Ok(())
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
