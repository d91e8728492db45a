//! Chat queries that read the store: conversations, members, cursors and log pages. Writes
//! go through the single writer ([`super::writer`]) so that sequence numbers are assigned
//! in one place and commits can be grouped.

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use super::wire::{ChatEntry, ConversationInfo, EntryKind};

/// The columns [`entry_from_row`] reads, in a SELECT list.
pub(crate) const ENTRY_COLUMNS: &str = "conversation_id, seq, sender, client_msg_id, kind, body, \
     reply_to, target_seq, metadata, attachments, server_ts, edited_ts, deleted";

pub(crate) fn entry_from_row(row: &AnyRow) -> Result<ChatEntry, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    let metadata: Option<String> = row.try_get("metadata")?;
    let attachments: Option<String> = row.try_get("attachments")?;
    Ok(ChatEntry {
        conversation: row.try_get("conversation_id")?,
        seq: row.try_get("seq")?,
        kind: EntryKind::parse(&kind).unwrap_or(EntryKind::Text),
        sender: row.try_get("sender")?,
        client_msg_id: row.try_get("client_msg_id")?,
        server_ts: row.try_get("server_ts")?,
        text: row.try_get("body")?,
        reply_to: row.try_get("reply_to")?,
        target_seq: row.try_get("target_seq")?,
        metadata: metadata.and_then(|m| serde_json::from_str(&m).ok()),
        attachments: attachments
            .and_then(|a| serde_json::from_str(&a).ok())
            .unwrap_or_default(),
        edited_ts: row.try_get("edited_ts")?,
        deleted: row.try_get::<i64, _>("deleted")? != 0,
    })
}

/// A conversation the identity belongs to, with its read marker.
#[derive(Debug, Clone)]
pub(crate) struct Membership {
    pub id: String,
    pub kind: String,
    pub name: Option<String>,
    pub last_seq: i64,
    pub read_seq: i64,
}

pub(crate) async fn memberships(
    pool: &AnyPool,
    identity: &str,
) -> Result<Vec<Membership>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT c.id, c.kind, c.name, c.last_seq, m.read_seq FROM chat_members m \
         JOIN chat_conversations c ON c.id = m.conversation_id WHERE m.identity = $1 \
         ORDER BY c.id",
    )
    .bind(identity)
    .fetch_all(pool)
    .await?;
    rows.iter().map(membership_from_row).collect()
}

fn membership_from_row(r: &AnyRow) -> Result<Membership, sqlx::Error> {
    Ok(Membership {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        name: r.try_get("name")?,
        last_seq: r.try_get("last_seq")?,
        read_seq: r.try_get("read_seq")?,
    })
}

/// One membership, if the identity belongs to the conversation.
pub(crate) async fn membership(
    pool: &AnyPool,
    conversation: &str,
    identity: &str,
) -> Result<Option<Membership>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT c.id, c.kind, c.name, c.last_seq, m.read_seq FROM chat_members m \
         JOIN chat_conversations c ON c.id = m.conversation_id \
         WHERE m.conversation_id = $1 AND m.identity = $2",
    )
    .bind(conversation)
    .bind(identity)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(membership_from_row).transpose()
}

pub(crate) async fn last_seq(pool: &AnyPool, conversation: &str) -> Result<i64, sqlx::Error> {
    let v: Option<i64> =
        sqlx::query_scalar("SELECT last_seq FROM chat_conversations WHERE id = $1")
            .bind(conversation)
            .fetch_optional(pool)
            .await?;
    Ok(v.unwrap_or(0))
}

pub(crate) async fn members(
    pool: &AnyPool,
    conversation: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT identity FROM chat_members WHERE conversation_id = $1 ORDER BY identity",
    )
    .bind(conversation)
    .fetch_all(pool)
    .await
}

/// Acknowledged seq of each conversation for one device.
pub(crate) async fn device_cursors(
    pool: &AnyPool,
    identity: &str,
    device: &str,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT conversation_id, acked_seq FROM chat_device_cursors \
         WHERE identity = $1 AND device = $2",
    )
    .bind(identity)
    .bind(device)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("conversation_id")?, r.try_get("acked_seq")?)))
        .collect()
}

/// Messages from others after the read marker that are still there.
pub(crate) async fn unread(
    pool: &AnyPool,
    conversation: &str,
    identity: &str,
    read_seq: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM chat_messages WHERE conversation_id = $1 AND seq > $2 \
         AND kind = 'text' AND deleted = 0 AND sender <> $3",
    )
    .bind(conversation)
    .bind(read_seq)
    .bind(identity)
    .fetch_one(pool)
    .await
}

/// Entries with `after < seq <= upto`, oldest first, at most `limit`.
pub(crate) async fn entries_between(
    pool: &AnyPool,
    conversation: &str,
    after: i64,
    upto: i64,
    limit: usize,
) -> Result<Vec<ChatEntry>, sqlx::Error> {
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM chat_messages WHERE conversation_id = $1 AND seq > $2 \
         AND seq <= $3 ORDER BY seq ASC LIMIT $4"
    );
    let rows = sqlx::query(&sql)
        .bind(conversation)
        .bind(after)
        .bind(upto)
        .bind(limit as i64)
        .fetch_all(pool)
        .await?;
    rows.iter().map(entry_from_row).collect()
}

/// Entries with `seq < before`, newest `limit` of them, returned oldest first.
pub(crate) async fn entries_before(
    pool: &AnyPool,
    conversation: &str,
    before: i64,
    limit: usize,
) -> Result<Vec<ChatEntry>, sqlx::Error> {
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM chat_messages WHERE conversation_id = $1 AND seq < $2 \
         ORDER BY seq DESC LIMIT $3"
    );
    let rows = sqlx::query(&sql)
        .bind(conversation)
        .bind(before)
        .bind(limit as i64)
        .fetch_all(pool)
        .await?;
    let mut out = rows
        .iter()
        .map(entry_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    out.reverse();
    Ok(out)
}

pub(crate) async fn conversation_info(
    pool: &AnyPool,
    m: &Membership,
    identity: &str,
) -> Result<ConversationInfo, sqlx::Error> {
    Ok(ConversationInfo {
        id: m.id.clone(),
        kind: m.kind.clone(),
        name: m.name.clone(),
        last_seq: m.last_seq,
        read_seq: m.read_seq,
        unread: unread(pool, &m.id, identity, m.read_seq).await?,
        members: members(pool, &m.id).await?,
    })
}

/// Whether `identity` may download attachment `id`: it uploaded those bytes, or a message
/// carrying it is in a conversation it belongs to (or, for room conversations, whose room
/// `may_read_room` allows).
pub(crate) async fn may_download(
    pool: &AnyPool,
    id: &str,
    identity: &str,
    may_read_room: impl Fn(&str) -> bool,
) -> Result<bool, sqlx::Error> {
    let owner: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM chat_attachment_owners WHERE attachment_id = $1 AND identity = $2",
    )
    .bind(id)
    .bind(identity)
    .fetch_optional(pool)
    .await?;
    if owner.is_some() {
        return Ok(true);
    }
    let convs: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT conversation_id FROM chat_message_attachments WHERE attachment_id = $1",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    for conv in convs {
        if let Some(room) = conv.strip_prefix(super::ROOM_PREFIX) {
            if may_read_room(room) {
                return Ok(true);
            }
        } else if membership(pool, &conv, identity).await?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}
