//! The parts of the signalling protocol (`docs/protocol.md`) the SDK reads, as typed
//! values. Unknown fields are ignored, as the protocol asks.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A log entry of a conversation: a message, or the edit or delete of one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatEntry {
    pub conversation: String,
    pub seq: i64,
    /// `text`, `edit` or `delete`.
    pub kind: String,
    pub sender: String,
    pub client_msg_id: String,
    /// Unix milliseconds when the server stored it.
    pub server_ts: i64,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub reply_to: Option<i64>,
    #[serde(default)]
    pub target_seq: Option<i64>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub attachments: Vec<String>,
    #[serde(default)]
    pub edited_ts: Option<i64>,
    #[serde(default)]
    pub deleted: bool,
}

/// The server's acknowledgement of a stored message: it is durable under `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ChatAck {
    pub conversation: String,
    pub client_msg_id: String,
    pub seq: i64,
    pub server_ts: i64,
    /// The message had been stored before (a resend).
    pub duplicate: bool,
}

/// A conversation as listed to a member.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Conversation {
    pub id: String,
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    pub last_seq: i64,
    #[serde(default)]
    pub read_seq: i64,
    #[serde(default)]
    pub unread: i64,
    #[serde(default)]
    pub members: Vec<String>,
}

/// A page of history, oldest first.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HistoryPage {
    pub conversation: String,
    pub messages: Vec<ChatEntry>,
    pub has_more: bool,
}

/// A participant of a room.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Participant {
    pub sid: String,
    pub identity: String,
    pub name: String,
    #[serde(default)]
    pub metadata: Option<Value>,
}

/// An `error` from the server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ServerError {
    pub code: String,
    pub message: String,
}

/// One member's connection quality ([`Event::ConnectionQuality`](crate::Event::ConnectionQuality)).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ParticipantQuality {
    /// Its media session (as in [`MediaSession::sid`](crate::media::MediaSession::sid)).
    pub sid: String,
    pub identity: String,
    /// `excellent`, `good`, `poor` or `lost`.
    pub quality: String,
    /// Estimated MOS (1-4.5) of a call over its link.
    pub score: f64,
}
