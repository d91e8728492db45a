//! Wire types of chat: the requests a client sends over the signalling WebSocket and the
//! responses and pushes the server sends back (documented in `docs/protocol.md`, "Chat").

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::protocol::RequestId;

/// `chat_sync`: names this connection's device and starts delivery. `cursors` holds, per
/// conversation, the last seq the device has; conversations not named resume from the
/// device's last acknowledged seq.
#[derive(Debug, Clone, Deserialize)]
pub struct SyncRequest {
    pub device: String,
    #[serde(default)]
    pub cursors: HashMap<String, i64>,
}

/// `chat_send`: a new message. `client_msg_id` (a UUID the client keeps until acked) makes
/// resends idempotent.
#[derive(Debug, Clone, Deserialize)]
pub struct SendRequest {
    pub conversation: String,
    pub client_msg_id: String,
    pub text: String,
    #[serde(default)]
    pub reply_to: Option<i64>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub attachments: Vec<String>,
}

/// `chat_edit`: replaces the text of one's own message `seq`.
#[derive(Debug, Clone, Deserialize)]
pub struct EditRequest {
    pub conversation: String,
    pub client_msg_id: String,
    pub seq: i64,
    pub text: String,
}

/// `chat_delete`: turns one's own message `seq` into a tombstone.
#[derive(Debug, Clone, Deserialize)]
pub struct DeleteRequest {
    pub conversation: String,
    pub client_msg_id: String,
    pub seq: i64,
}

/// `chat_received` (device delivery ack) and `chat_read` (read marker): cumulative.
#[derive(Debug, Clone, Deserialize)]
pub struct CursorRequest {
    pub conversation: String,
    pub seq: i64,
}

/// `chat_typing`: ephemeral, relayed to the other members' connected devices.
#[derive(Debug, Clone, Deserialize)]
pub struct TypingRequest {
    pub conversation: String,
    pub typing: bool,
}

/// `chat_history`: a page of the log, newest first below `before`, or oldest first above
/// `after` (one of the two, or neither for the latest page).
#[derive(Debug, Clone, Deserialize)]
pub struct HistoryRequest {
    pub conversation: String,
    #[serde(default)]
    pub before: Option<i64>,
    #[serde(default)]
    pub after: Option<i64>,
    #[serde(default)]
    pub limit: Option<usize>,
}

/// `chat_open_direct`: the one-to-one conversation with `with`, created on first use.
#[derive(Debug, Clone, Deserialize)]
pub struct OpenDirectRequest {
    pub with: String,
}

/// `chat_create_group`: a named group; the creator is its owner and a member.
#[derive(Debug, Clone, Deserialize)]
pub struct CreateGroupRequest {
    pub name: String,
    #[serde(default)]
    pub members: Vec<String>,
}

/// `chat_add_members` / `chat_remove_members` (owner only; anyone may remove themselves).
#[derive(Debug, Clone, Deserialize)]
pub struct MembersRequest {
    pub conversation: String,
    pub members: Vec<String>,
}

/// What a log entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A message with text.
    Text,
    /// An edit of message `target_seq`.
    Edit,
    /// The deletion of message `target_seq`.
    Delete,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Text => "text",
            EntryKind::Edit => "edit",
            EntryKind::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "text" => Some(EntryKind::Text),
            "edit" => Some(EntryKind::Edit),
            "delete" => Some(EntryKind::Delete),
            _ => None,
        }
    }
}

/// One entry of a conversation's log, as delivered and as returned by history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatEntry {
    pub conversation: String,
    pub seq: i64,
    pub kind: EntryKind,
    pub sender: String,
    pub client_msg_id: String,
    /// Unix time in milliseconds when the server stored it.
    pub server_ts: i64,
    /// The text (a message's current text in history; null once deleted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<i64>,
    /// For edits and deletes: the message they change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub attachments: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edited_ts: Option<i64>,
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub deleted: bool,
}

/// A conversation as listed to a member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationInfo {
    pub id: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub last_seq: i64,
    pub read_seq: i64,
    pub unread: i64,
    pub members: Vec<String>,
}

/// Messages the server sends for chat. Responses carry the request id.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatOut<'a> {
    /// Response to `chat_send`/`chat_edit`/`chat_delete`: stored durably under `seq`.
    ChatAck {
        conversation: &'a str,
        client_msg_id: &'a str,
        seq: i64,
        server_ts: i64,
        /// True when this was a resend of an already stored message.
        duplicate: bool,
    },
    /// Response to `chat_sync`: the device's conversations; missed entries follow as
    /// `chat_message` pushes, oldest first.
    ChatSynced {
        device: &'a str,
        conversations: &'a [SyncedConversation],
    },
    /// A log entry, pushed live or while catching up, in seq order per conversation.
    ChatMessage {
        #[serde(flatten)]
        entry: &'a ChatEntry,
    },
    ChatHistory {
        conversation: &'a str,
        messages: &'a [ChatEntry],
        has_more: bool,
    },
    ChatConversations {
        conversations: &'a [ConversationInfo],
    },
    ChatConversation {
        conversation: &'a ConversationInfo,
    },
    /// Another member's read marker moved.
    ChatRead {
        conversation: &'a str,
        identity: &'a str,
        seq: i64,
    },
    ChatTyping {
        conversation: &'a str,
        identity: &'a str,
        typing: bool,
    },
    /// This identity was added to a conversation (pushed to its connected devices).
    ChatJoined {
        conversation: &'a ConversationInfo,
    },
    /// This identity was removed from a conversation.
    ChatRemoved {
        conversation: &'a str,
    },
}

/// A conversation in `chat_synced`: where delivery starts and where the log ends now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncedConversation {
    pub id: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Entries after this seq follow.
    pub from_seq: i64,
    pub last_seq: i64,
    pub unread: i64,
}

#[derive(Serialize)]
struct Framed<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RequestId>,
    #[serde(flatten)]
    msg: &'a ChatOut<'a>,
}

/// Serialises a chat message with an optional request id.
pub fn encode(msg: &ChatOut<'_>, id: Option<&RequestId>) -> String {
    serde_json::to_string(&Framed { id, msg }).unwrap_or_else(|e| {
        format!(r#"{{"type":"error","code":"internal","message":"encode: {e}"}}"#)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_serialise_flat_with_their_type() {
        let entry = ChatEntry {
            conversation: "room:a".into(),
            seq: 3,
            kind: EntryKind::Text,
            sender: "alice".into(),
            client_msg_id: "c1".into(),
            server_ts: 10,
            text: Some("hi".into()),
            reply_to: None,
            target_seq: None,
            metadata: None,
            attachments: vec![],
            edited_ts: None,
            deleted: false,
        };
        let s = encode(&ChatOut::ChatMessage { entry: &entry }, None);
        assert_eq!(
            s,
            r#"{"type":"chat_message","conversation":"room:a","seq":3,"kind":"text","sender":"alice","client_msg_id":"c1","server_ts":10,"text":"hi"}"#
        );
        let back: ChatEntry = serde_json::from_str(&s).unwrap();
        assert_eq!(back, entry);
    }

    #[test]
    fn ack_echoes_request_id() {
        let s = encode(
            &ChatOut::ChatAck {
                conversation: "room:a",
                client_msg_id: "c1",
                seq: 1,
                server_ts: 5,
                duplicate: false,
            },
            Some(&RequestId::Num(9)),
        );
        assert!(s.starts_with(r#"{"id":9,"type":"chat_ack""#), "{s}");
    }
}
