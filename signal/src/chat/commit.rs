//! One group commit: the writer's queued requests applied in a single transaction.
//! Reads are batched (one query per sender for idempotency, one per conversation and
//! member), new entries are inserted with multi-row INSERTs, and only the rare edits,
//! deletes and attachments are checked row by row. Per-request refusals (not a member, bad
//! target) change nothing and do not fail the batch; a store error fails all of it, and
//! then nothing was acked.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlx::{Any, AnyPool, Row, Transaction};

use super::ROOM_PREFIX;
use super::wire::{ChatEntry, EntryKind};
use super::writer::{Post, WriteOp};
use crate::protocol::{ErrorCode, ProtocolError};
use crate::store::Backend;

/// Rows per multi-row INSERT statement, largest first (13 parameters per row, well under
/// SQLite's and PostgreSQL's limits); any count is a sum of these.
const INSERT_SHAPES: [usize; 4] = [64, 16, 4, 1];
/// Client message ids per idempotency lookup.
const LOOKUP_CHUNK: usize = 500;

/// The outcome of one post.
pub(crate) enum Outcome {
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

type Earlier = HashMap<(Arc<str>, String), (String, i64, i64)>;
/// (identity, device, conversation).
type DeviceKey = (Arc<str>, Arc<str>, Arc<str>);

fn refused(code: ErrorCode, msg: impl Into<String>) -> Outcome {
    Outcome::Refused(ProtocolError::new(code, msg))
}

/// Applies `batch` in one transaction; `None` for requests that have no outcome to report.
pub(crate) async fn commit_batch(
    pool: &AnyPool,
    backend: Backend,
    batch: &[WriteOp],
    now: i64,
) -> Result<Vec<Option<Outcome>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let posts: Vec<&Post> = batch
        .iter()
        .filter_map(|op| match op {
            WriteOp::Post(p) => Some(p),
            _ => None,
        })
        .collect();
    let mut earlier = stored_ids(&mut tx, &posts).await?;
    let mut convs: HashMap<Arc<str>, ConvState> = HashMap::new();
    let mut pending: Vec<ChatEntry> = Vec::new();
    let mut devices: Vec<Arc<str>> = Vec::new();
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut acks: HashMap<DeviceKey, i64> = HashMap::new();
    let mut reads: HashMap<(Arc<str>, Arc<str>), i64> = HashMap::new();
    for op in batch {
        match op {
            WriteOp::Post(p) => {
                if p.target_seq.is_some() || !p.attachments.is_empty() {
                    // Row-level checks read what this batch wrote so far.
                    insert_entries(&mut tx, backend, &pending, &devices).await?;
                    pending.clear();
                    devices.clear();
                }
                let outcome = post(&mut tx, backend, &mut convs, &earlier, p, now).await?;
                if let Outcome::Stored(e) = &outcome {
                    earlier.insert(
                        (p.origin.identity.clone(), p.client_msg_id.clone()),
                        (e.conversation.clone(), e.seq, e.server_ts),
                    );
                    pending.push(e.clone());
                    devices.push(p.origin.device.clone());
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
    insert_entries(&mut tx, backend, &pending, &devices).await?;
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

/// The stored (conversation, seq, server_ts) of every client message id in `posts` that
/// was stored before, one query per sender and chunk.
async fn stored_ids(
    tx: &mut Transaction<'static, Any>,
    posts: &[&Post],
) -> Result<Earlier, sqlx::Error> {
    let mut by_sender: HashMap<&Arc<str>, Vec<&str>> = HashMap::new();
    for p in posts {
        by_sender
            .entry(&p.origin.identity)
            .or_default()
            .push(&p.client_msg_id);
    }
    let mut out = Earlier::new();
    for (sender, ids) in by_sender {
        for chunk in ids.chunks(LOOKUP_CHUNK) {
            let list = (0..chunk.len())
                .map(|i| format!("${}", i + 2))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "SELECT client_msg_id, conversation_id, seq, server_ts FROM chat_messages \
                 WHERE sender = $1 AND client_msg_id IN ({list})"
            );
            let mut q = sqlx::query(&sql).bind(sender.as_ref());
            for id in chunk {
                q = q.bind(*id);
            }
            for r in q.fetch_all(&mut **tx).await? {
                out.insert(
                    (sender.clone(), r.try_get("client_msg_id")?),
                    (
                        r.try_get("conversation_id")?,
                        r.try_get("seq")?,
                        r.try_get("server_ts")?,
                    ),
                );
            }
        }
    }
    Ok(out)
}

/// Inserts `entries` with as few statements as possible, in a few fixed shapes (rows per
/// statement: [`INSERT_SHAPES`]) so that prepared statements are reused.
async fn insert_entries(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    entries: &[ChatEntry],
    devices: &[Arc<str>],
) -> Result<(), sqlx::Error> {
    let mut at = 0;
    while at < entries.len() {
        let left = entries.len() - at;
        let rows = INSERT_SHAPES
            .iter()
            .copied()
            .find(|&n| n <= left)
            .unwrap_or(1);
        let sql = insert_sql(backend, rows);
        let mut q = sqlx::query(&sql);
        for (e, device) in entries[at..at + rows].iter().zip(&devices[at..at + rows]) {
            let attachments = if e.attachments.is_empty() {
                None
            } else {
                Some(serde_json::to_string(&e.attachments).unwrap_or_else(|_| "[]".into()))
            };
            q = q
                .bind(e.conversation.clone())
                .bind(e.seq)
                .bind(e.sender.clone())
                .bind(device.to_string())
                .bind(e.client_msg_id.clone())
                .bind(e.kind.as_str())
                .bind(e.text.clone())
                .bind(e.reply_to)
                .bind(e.target_seq)
                .bind(e.metadata.as_ref().map(|m| m.to_string()))
                .bind(attachments)
                .bind(e.server_ts)
                .bind(0i64);
        }
        q.execute(&mut **tx).await?;
        at += rows;
    }
    Ok(())
}

/// The multi-row INSERT for `rows` entries. SQLite gets anonymous `?` parameters: it
/// looks named ones up by a linear scan per parameter, quadratic in a long statement.
fn insert_sql(backend: Backend, rows: usize) -> String {
    const COLS: usize = 13;
    let values = (0..rows)
        .map(|r| {
            let ps: Vec<String> = (1..=COLS)
                .map(|c| match backend {
                    Backend::Sqlite => "?".to_string(),
                    Backend::Postgres => format!("${}", r * COLS + c),
                })
                .collect();
            format!("({})", ps.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO chat_messages (conversation_id, seq, sender, device, client_msg_id, kind, \
         body, reply_to, target_seq, metadata, attachments, server_ts, deleted) VALUES {values}"
    )
}

async fn post(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    convs: &mut HashMap<Arc<str>, ConvState>,
    earlier: &Earlier,
    p: &Post,
    now: i64,
) -> Result<Outcome, sqlx::Error> {
    let author = &p.origin.identity;
    // Idempotency: a client message id is stored once per sender.
    if let Some((conversation, seq, server_ts)) =
        earlier.get(&(author.clone(), p.client_msg_id.clone()))
    {
        if conversation != p.conversation.as_ref() {
            return Ok(refused(
                ErrorCode::DuplicateClientId,
                "client_msg_id was already used for a message in another conversation",
            ));
        }
        return Ok(Outcome::Duplicate {
            conversation: conversation.clone(),
            seq: *seq,
            server_ts: *server_ts,
        });
    }
    if !convs.contains_key(&p.conversation) {
        // On PostgreSQL the row lock makes seq assignment safe even if another process
        // writes the same conversation (SQLite transactions are serialised anyway).
        let sql = match backend {
            Backend::Postgres => {
                "SELECT kind, last_seq FROM chat_conversations WHERE id = $1 FOR UPDATE"
            }
            Backend::Sqlite => "SELECT kind, last_seq FROM chat_conversations WHERE id = $1",
        };
        let row = sqlx::query(sql)
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
            // The caller checked the token's room claim; membership is what makes the
            // room's chat reach this identity's devices while they are offline.
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
    if let Some(r) = p.reply_to
        && (r < 1 || r > last)
    {
        return Ok(refused(
            ErrorCode::InvalidTarget,
            format!("reply_to {r} is not a seq of this conversation"),
        ));
    }
    if let Some(target) = p.target_seq
        && !own_live_message(tx, &p.conversation, target, author).await?
    {
        return Ok(refused(
            ErrorCode::InvalidTarget,
            format!("seq {target} is not a message of yours that can be changed"),
        ));
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
    if let Some(t) = p.target_seq {
        change_target(tx, p, t, now).await?;
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

/// Whether `seq` is a text message of `author` that is not deleted.
async fn own_live_message(
    tx: &mut Transaction<'static, Any>,
    conversation: &str,
    seq: i64,
    author: &str,
) -> Result<bool, sqlx::Error> {
    let row = sqlx::query(
        "SELECT sender, kind, deleted FROM chat_messages WHERE conversation_id = $1 AND seq = $2",
    )
    .bind(conversation)
    .bind(seq)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(match row {
        Some(r) => {
            r.try_get::<String, _>("sender")? == author
                && r.try_get::<String, _>("kind")? == "text"
                && r.try_get::<i64, _>("deleted")? == 0
        }
        None => false,
    })
}

/// Applies an edit or delete to the message it targets.
async fn change_target(
    tx: &mut Transaction<'static, Any>,
    p: &Post,
    target: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    match p.kind {
        EntryKind::Edit => {
            sqlx::query(
                "UPDATE chat_messages SET body = $1, edited_ts = $2 WHERE conversation_id = $3 AND seq = $4",
            )
            .bind(p.text.clone())
            .bind(now)
            .bind(p.conversation.as_ref())
            .bind(target)
            .execute(&mut **tx)
            .await?;
        }
        EntryKind::Delete => {
            sqlx::query(
                "UPDATE chat_messages SET body = NULL, metadata = NULL, attachments = NULL, deleted = 1, \
                 edited_ts = $1 WHERE conversation_id = $2 AND seq = $3",
            )
            .bind(now)
            .bind(p.conversation.as_ref())
            .bind(target)
            .execute(&mut **tx)
            .await?;
            sqlx::query(
                "DELETE FROM chat_message_attachments WHERE conversation_id = $1 AND seq = $2",
            )
            .bind(p.conversation.as_ref())
            .bind(target)
            .execute(&mut **tx)
            .await?;
        }
        EntryKind::Text => {}
    }
    Ok(())
}

pub(crate) async fn create_room<'c, E>(
    exec: E,
    conversation: &str,
    now: i64,
) -> Result<(), sqlx::Error>
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

pub(crate) async fn add_member<'c, E>(
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
