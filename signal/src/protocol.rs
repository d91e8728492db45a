//! Wire types of the signalling protocol (version [`PROTOCOL_VERSION`]), as documented in
//! `docs/protocol.md`. Every message is a JSON object with a `type` field; requests carry an
//! `id` that the response echoes. Unknown fields are ignored so that newer clients work with
//! older servers and the other way round.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chat::wire as chat;

/// Version of the wire protocol, sent in `welcome`. Bumped only on incompatible changes.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest request id the server echoes back; longer ids are refused.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// A client-chosen request id: a string or an integer, echoed verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    Num(i64),
    Str(String),
}

impl RequestId {
    pub fn is_valid(&self) -> bool {
        match self {
            RequestId::Num(_) => true,
            RequestId::Str(s) => s.len() <= MAX_REQUEST_ID_LEN,
        }
    }
}

/// The first pass over an incoming message: just enough to route it and to echo its id in
/// an error even when the rest of the message is invalid.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub id: Option<RequestId>,
}

/// An SDP offer or answer, shaped like the browser's `RTCSessionDescriptionInit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDescription {
    #[serde(rename = "type")]
    pub kind: SdpType,
    pub sdp: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SdpType {
    Offer,
    Answer,
    Pranswer,
    Rollback,
}

/// Requests a client may send. The set of `type` names is [`ClientMessage::TYPES`].
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Application-level heartbeat; answered with `pong`.
    Ping {},
    /// Join a room (defaults to the room named in the access token).
    Join {
        #[serde(default)]
        room: Option<String>,
        #[serde(default)]
        metadata: Option<Value>,
    },
    /// Leave the current room.
    Leave {},
    /// List the participants of the current room.
    ListParticipants {},
    /// Change one's own display name or metadata; others see `participant_updated`.
    UpdateParticipant {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        metadata: Option<Value>,
    },
    /// Fresh ICE servers (TURN credentials expire).
    GetIceServers {},
    /// Start a one-to-one call to another identity; `sdp` is an optional offer.
    CallInvite {
        to: String,
        #[serde(default)]
        sdp: Option<SessionDescription>,
        #[serde(default)]
        metadata: Option<Value>,
    },
    /// Callee: tell the caller that this device is ringing.
    CallRinging {
        call_id: String,
    },
    /// Callee: accept the call on this device, optionally with the SDP answer.
    CallAccept {
        call_id: String,
        #[serde(default)]
        sdp: Option<SessionDescription>,
    },
    /// Callee: decline (`reason` `busy` or `declined`, the default).
    CallReject {
        call_id: String,
        #[serde(default)]
        reason: Option<RejectReason>,
    },
    /// Caller: withdraw an unanswered call.
    CallCancel {
        call_id: String,
    },
    /// Either party: end an answered call.
    CallHangup {
        call_id: String,
    },
    /// Relay an SDP offer or answer to the other party (renegotiation, ICE restart).
    CallSdp {
        call_id: String,
        sdp: SessionDescription,
    },
    /// Relay a trickle ICE candidate (`RTCIceCandidateInit`, or null for end of candidates).
    CallIce {
        call_id: String,
        candidate: Value,
    },
    /// Chat: name this device and start delivery (see [`crate::chat`]).
    ChatSync(chat::SyncRequest),
    ChatSend(chat::SendRequest),
    ChatEdit(chat::EditRequest),
    ChatDelete(chat::DeleteRequest),
    /// Device delivery ack, cumulative per conversation; not answered.
    ChatReceived(chat::CursorRequest),
    ChatRead(chat::CursorRequest),
    ChatTyping(chat::TypingRequest),
    ChatHistory(chat::HistoryRequest),
    ChatConversations {},
    ChatOpenDirect(chat::OpenDirectRequest),
    ChatCreateGroup(chat::CreateGroupRequest),
    ChatAddMembers(chat::MembersRequest),
    ChatRemoveMembers(chat::MembersRequest),
    /// Media through the SFU: enter the current room's media session.
    MediaJoin {},
    /// The client's SDP offer (first, or renegotiation); answered with `media_answer`.
    MediaOffer {
        sdp: String,
    },
    /// The client's answer to the server's `media_offer` push with this `offer_id`.
    MediaAnswer {
        offer_id: u64,
        sdp: String,
    },
    /// Start (`on`, the default) or stop receiving one track.
    MediaSubscribe {
        track: String,
        #[serde(default = "yes")]
        on: bool,
        /// Best simulcast layer wanted: "low", "medium" or "high" (the default).
        #[serde(default)]
        max_quality: Option<String>,
        /// Largest picture wanted, in pixels (either or both; 0 lifts the limit).
        #[serde(default)]
        max_width: Option<u32>,
        #[serde(default)]
        max_height: Option<u32>,
    },
    /// Whether new tracks of the room are received automatically (default on).
    MediaAutoSubscribe {
        on: bool,
    },
    /// Under "last N", always receive these members' video (their `sid`s; at most 4;
    /// replaces the earlier list, empty unpins).
    MediaPin {
        participants: Vec<String>,
    },
    /// Leave the media session (the room stays joined).
    MediaLeave {},
}

fn yes() -> bool {
    true
}

impl ClientMessage {
    /// Every request type the server understands, for metrics labels and errors.
    pub const TYPES: &'static [&'static str] = &[
        "ping",
        "join",
        "leave",
        "list_participants",
        "update_participant",
        "get_ice_servers",
        "call_invite",
        "call_ringing",
        "call_accept",
        "call_reject",
        "call_cancel",
        "call_hangup",
        "call_sdp",
        "call_ice",
        "chat_sync",
        "chat_send",
        "chat_edit",
        "chat_delete",
        "chat_received",
        "chat_read",
        "chat_typing",
        "chat_history",
        "chat_conversations",
        "chat_open_direct",
        "chat_create_group",
        "chat_add_members",
        "chat_remove_members",
        "media_join",
        "media_offer",
        "media_answer",
        "media_subscribe",
        "media_auto_subscribe",
        "media_pin",
        "media_leave",
    ];

    /// Whether this request is for the SFU.
    pub fn is_media(&self) -> bool {
        matches!(
            self,
            ClientMessage::MediaJoin {}
                | ClientMessage::MediaOffer { .. }
                | ClientMessage::MediaAnswer { .. }
                | ClientMessage::MediaSubscribe { .. }
                | ClientMessage::MediaAutoSubscribe { .. }
                | ClientMessage::MediaPin { .. }
                | ClientMessage::MediaLeave {}
        )
    }

    /// Whether this request is handled by chat rather than by the hub.
    pub fn is_chat(&self) -> bool {
        matches!(
            self,
            ClientMessage::ChatSync(_)
                | ClientMessage::ChatSend(_)
                | ClientMessage::ChatEdit(_)
                | ClientMessage::ChatDelete(_)
                | ClientMessage::ChatReceived(_)
                | ClientMessage::ChatRead(_)
                | ClientMessage::ChatTyping(_)
                | ClientMessage::ChatHistory(_)
                | ClientMessage::ChatConversations {}
                | ClientMessage::ChatOpenDirect(_)
                | ClientMessage::ChatCreateGroup(_)
                | ClientMessage::ChatAddMembers(_)
                | ClientMessage::ChatRemoveMembers(_)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    Declined,
    Busy,
}

/// Why a call ended, as told to each party in `call_ended`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallEndReason {
    /// The callee declined.
    Rejected,
    /// The callee is in another call or said it is busy.
    Busy,
    /// The caller withdrew before an answer.
    Cancelled,
    /// Nobody answered within the ring timeout.
    Timeout,
    /// A party hung up.
    Hangup,
    /// Another device of the callee answered.
    AnsweredElsewhere,
    /// Another device of the callee declined.
    RejectedElsewhere,
    /// A party's connection was lost and did not come back within the resume grace period.
    PeerDisconnected,
    /// The server is shutting down.
    ServerShutdown,
}

/// A participant as others see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    /// Session id of the participant, unique per connection session.
    pub sid: String,
    pub identity: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Unix time in milliseconds when the participant joined the room.
    pub joined_at: u64,
    pub permissions: Permissions,
}

/// What a participant may do, from its access token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    #[serde(default)]
    pub publish: bool,
    #[serde(default)]
    pub subscribe: bool,
    #[serde(default)]
    pub chat: bool,
    #[serde(default)]
    pub admin: bool,
}

/// One entry of `RTCConfiguration.iceServers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// The other party of a call, as shown to the callee.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peer {
    pub identity: String,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// The participant left or closed its connection.
    Left,
    /// The connection was lost and not resumed within the grace period.
    Disconnected,
    /// An admin removed the participant.
    Removed,
    /// The same identity joined the room from another session.
    DuplicateIdentity,
    /// The room was closed.
    RoomClosed,
}

/// Every message the server sends. Responses carry the request's `id` (added by the
/// framing, see [`encode`]); pushes carry none.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Welcome {
        protocol: u32,
        server_version: &'static str,
        session_id: String,
        resume_token: String,
        resumed: bool,
        identity: String,
        name: String,
        permissions: Permissions,
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        heartbeat_interval_ms: u64,
        ice_servers: Vec<IceServer>,
    },
    Pong {},
    Joined {
        room: String,
        participant: ParticipantInfo,
        participants: Vec<ParticipantInfo>,
        ice_servers: Vec<IceServer>,
    },
    Left {
        room: String,
    },
    Participants {
        room: String,
        participants: Vec<ParticipantInfo>,
    },
    ParticipantUpdated {
        room: String,
        participant: ParticipantInfo,
    },
    IceServers {
        ice_servers: Vec<IceServer>,
    },
    ParticipantJoined {
        room: String,
        participant: ParticipantInfo,
    },
    ParticipantLeft {
        room: String,
        sid: String,
        identity: String,
        reason: LeaveReason,
    },
    /// Sent to a participant removed from its room by the server.
    Removed {
        room: String,
        reason: LeaveReason,
    },
    CallInvited {
        call_id: String,
    },
    CallIncoming {
        call_id: String,
        from: Peer,
        #[serde(skip_serializing_if = "Option::is_none")]
        sdp: Option<SessionDescription>,
        #[serde(skip_serializing_if = "Option::is_none")]
        metadata: Option<Value>,
    },
    CallRinging {
        call_id: String,
    },
    CallAccepted {
        call_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        sdp: Option<SessionDescription>,
    },
    CallEnded {
        call_id: String,
        reason: CallEndReason,
    },
    CallSdp {
        call_id: String,
        sdp: SessionDescription,
    },
    CallIce {
        call_id: String,
        candidate: Value,
    },
    /// Acknowledges a request that has no other result.
    Ok {},
    Error {
        code: ErrorCode,
        message: String,
    },
    /// The server is going away; reconnect (with the resume token) after the delay.
    Shutdown {
        reconnect_after_ms: u64,
    },
    /// Response to `media_join`: the client offers next.
    MediaJoined {
        room: String,
        /// The participant id the SFU knows this session by (its `sid`); it is the stream
        /// id in `a=msid` lines of tracks others receive from it.
        sid: String,
    },
    /// Response to `media_offer`.
    MediaAnswer {
        sdp: String,
    },
    /// The SFU offers (tracks to add or stop); answer with `media_answer` and `offer_id`.
    MediaOffer {
        offer_id: u64,
        sdp: String,
    },
    /// ICE and DTLS are up: media flows.
    MediaConnected {},
    /// A video track this session receives is paused (`paused: true`; audio
    /// continues), or flows again (`paused: false`, from a keyframe). `reason`:
    /// `bandwidth` (a simulcast track's lowest layer does not fit this session's
    /// bandwidth) or `last_n` (its publisher is not among the latest speakers).
    MediaTrackPaused {
        track: String,
        paused: bool,
        reason: &'static str,
    },
    /// A track this session offered (its m-line `mid`) is not forwarded: `code`
    /// `too_many_tracks` (it publishes `sfu.max_tracks_per_participant` already) or
    /// `too_many_publishers` (the room has `sfu.max_publishers_per_room` publishers).
    /// It waits: once admitted (a publisher left), the room's `track_published` says so.
    MediaTrackRefused {
        mid: String,
        kind: &'static str,
        code: &'static str,
        message: String,
    },
    /// The media session ended (`disconnected`, `connect_timeout`, `protocol_error`,
    /// `shutdown`, or `left`).
    MediaLeft {
        reason: &'static str,
    },
    TrackPublished {
        room: String,
        sid: String,
        identity: String,
        /// Track id (`T7`), the track id in the `a=msid` lines of receivers' SDP.
        track: String,
        kind: &'static str,
    },
    TrackUnpublished {
        room: String,
        sid: String,
        track: String,
    },
    /// The server muted or unmuted a participant's track (the admin API).
    TrackMuted {
        room: String,
        sid: String,
        track: String,
        kind: &'static str,
        muted: bool,
    },
    /// The room's loudest participant changed (`sid` null: nobody speaks).
    ActiveSpeaker {
        room: String,
        sid: Option<String>,
        identity: Option<String>,
    },
    /// Members of the room whose connection quality changed (to the room), or every
    /// scored member's (to a member who just joined the room).
    ConnectionQuality {
        room: String,
        participants: Vec<QualityUpdate>,
    },
}

/// One member's connection quality, as the SFU scores its link (`huddle_sfu::quality`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityUpdate {
    pub sid: String,
    pub identity: String,
    /// `excellent`, `good`, `poor` or `lost`.
    pub quality: &'static str,
    /// Estimated MOS (1-4.5), one decimal.
    pub score: f64,
}

#[derive(Serialize)]
struct Framed<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RequestId>,
    #[serde(flatten)]
    msg: &'a ServerMessage,
}

/// Serialises a message with an optional request id, ready to go on the wire.
pub fn encode(msg: &ServerMessage, id: Option<&RequestId>) -> String {
    // Serialising these types cannot fail: all map keys are strings.
    serde_json::to_string(&Framed { id, msg }).unwrap_or_else(|e| {
        format!(r#"{{"type":"error","code":"internal","message":"encode: {e}"}}"#)
    })
}

/// Error codes sent in `{"type":"error"}` messages and in HTTP error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not a JSON object with a string `type`.
    BadJson,
    /// The `type` is not one this server knows.
    UnknownType,
    /// The message has the right type but a missing or invalid field.
    InvalidMessage,
    /// The message is larger than `signal.max_message_bytes`.
    MessageTooLarge,
    /// Binary frames are not part of the protocol.
    BinaryNotSupported,
    /// The connection sent more messages than its rate limit allows; this one was dropped.
    RateLimited,
    /// No access token, or one that is malformed, expired or wrongly signed.
    Unauthorized,
    TokenMissing,
    TokenExpired,
    TokenInvalid,
    /// The token is valid but does not grant this action.
    Forbidden,
    /// Cross-site WebSocket upgrade refused.
    OriginNotAllowed,
    TooManyConnections,
    ServerFull,
    ShuttingDown,
    NotFound,
    InvalidRoom,
    RoomFull,
    TooManyRooms,
    NotInRoom,
    CallNotFound,
    CalleeUnavailable,
    /// The request does not fit the current state (e.g. answering an answered call).
    InvalidState,
    /// Chat: the conversation does not exist or the identity is not a member.
    NotMember,
    /// Chat: the message referred to does not exist, is not one's own, or is deleted.
    InvalidTarget,
    /// Chat: the client message id was already used for another message.
    DuplicateClientId,
    /// The server could not store the request; nothing was changed, retry later.
    Unavailable,
    /// Media: the SFU is not enabled on this server.
    MediaUnavailable,
    /// Media: the SDP could not be used (malformed, or the negotiation failed).
    BadSdp,
    /// Media: an answer to an offer the server no longer waits for.
    StaleOffer,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::BinaryNotSupported => "binary_not_supported",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TokenMissing => "token_missing",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TokenInvalid => "token_invalid",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::OriginNotAllowed => "origin_not_allowed",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::ServerFull => "server_full",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::NotInRoom => "not_in_room",
            ErrorCode::CallNotFound => "call_not_found",
            ErrorCode::CalleeUnavailable => "callee_unavailable",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::NotMember => "not_member",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::DuplicateClientId => "duplicate_client_id",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::MediaUnavailable => "media_unavailable",
            ErrorCode::BadSdp => "bad_sdp",
            ErrorCode::StaleOffer => "stale_offer",
            ErrorCode::Internal => "internal",
        }
    }
}

/// A protocol error with the code and a human-readable explanation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn to_message(&self) -> ServerMessage {
        ServerMessage::Error {
            code: self.code,
            message: self.message.clone(),
        }
    }
}

/// Outcome of decoding one text frame.
#[derive(Debug)]
pub enum Decoded {
    Request(Option<RequestId>, ClientMessage),
    Invalid(Option<RequestId>, ProtocolError),
}

/// Decodes one text frame. Never panics; every failure names what was wrong.
pub fn decode(text: &str) -> Decoded {
    let envelope: Envelope = match serde_json::from_str(text) {
        Ok(e) => e,
        Err(e) => {
            return Decoded::Invalid(
                None,
                ProtocolError::new(
                    ErrorCode::BadJson,
                    format!(
                        "expected a JSON object with a string \"type\" and an optional \"id\": {e}"
                    ),
                ),
            );
        }
    };
    let id = envelope.id.filter(RequestId::is_valid);
    if !ClientMessage::TYPES.contains(&envelope.kind.as_str()) {
        let mut kind = envelope.kind;
        kind.truncate(64);
        return Decoded::Invalid(
            id,
            ProtocolError::new(
                ErrorCode::UnknownType,
                format!("unknown message type {kind:?}"),
            ),
        );
    }
    match serde_json::from_str::<ClientMessage>(text) {
        Ok(msg) => Decoded::Request(id, msg),
        Err(e) => Decoded::Invalid(
            id,
            ProtocolError::new(
                ErrorCode::InvalidMessage,
                format!("invalid {:?} message: {e}", envelope.kind),
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_requests_and_ignores_unknown_fields() {
        match decode(r#"{"type":"join","id":7,"room":"r1","future_field":{"x":1}}"#) {
            Decoded::Request(Some(RequestId::Num(7)), ClientMessage::Join { room, .. }) => {
                assert_eq!(room.as_deref(), Some("r1"))
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            decode(r#"{"type":"ping","id":"a"}"#),
            Decoded::Request(Some(RequestId::Str(_)), ClientMessage::Ping {})
        ));
    }

    #[test]
    fn classifies_bad_input() {
        let code = |t: &str| match decode(t) {
            Decoded::Invalid(_, e) => e.code,
            Decoded::Request(..) => panic!("accepted {t}"),
        };
        assert_eq!(code("not json"), ErrorCode::BadJson);
        assert_eq!(code("[1,2]"), ErrorCode::BadJson);
        assert_eq!(code(r#"{"id":1}"#), ErrorCode::BadJson);
        assert_eq!(code(r#"{"type":"nope","id":1}"#), ErrorCode::UnknownType);
        assert_eq!(
            code(r#"{"type":"call_invite","id":1}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"call_sdp","call_id":"c","sdp":{"type":"bogus","sdp":""}}"#),
            ErrorCode::InvalidMessage
        );
    }

    #[test]
    fn invalid_message_keeps_request_id() {
        match decode(r#"{"type":"call_accept","id":"req-9"}"#) {
            Decoded::Invalid(Some(RequestId::Str(id)), e) => {
                assert_eq!(id, "req-9");
                assert!(e.message.contains("call_id"), "{}", e.message);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn overlong_request_id_is_not_echoed() {
        let long = "x".repeat(MAX_REQUEST_ID_LEN + 1);
        match decode(&format!(r#"{{"type":"ping","id":"{long}"}}"#)) {
            Decoded::Request(None, ClientMessage::Ping {}) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn responses_echo_id_and_pushes_have_none() {
        let s = encode(&ServerMessage::Pong {}, Some(&RequestId::Num(3)));
        assert_eq!(s, r#"{"id":3,"type":"pong"}"#);
        let s = encode(
            &ServerMessage::CallRinging {
                call_id: "c".into(),
            },
            None,
        );
        assert_eq!(s, r#"{"type":"call_ringing","call_id":"c"}"#);
    }

    #[test]
    fn error_codes_serialise_as_documented() {
        for code in [
            ErrorCode::BadJson,
            ErrorCode::RoomFull,
            ErrorCode::TokenExpired,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(s in ".{0,300}") {
            let _ = decode(&s);
        }

        #[test]
        fn decode_never_panics_on_near_valid(ty in proptest::sample::select(ClientMessage::TYPES), body in "[\\x20-\\x7e]{0,120}") {
            let _ = decode(&format!(r#"{{"type":"{ty}",{body}}}"#));
        }
    }
}
