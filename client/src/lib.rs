//! # huddle-client
//!
//! The native Rust client SDK of huddle: the same code path an app embeds for in-app
//! calls and chat.
//!
//! - Signalling: it connects with an access token, reconnects by itself (resuming the
//!   session) and joins rooms.
//! - Chat with the server's guarantees on the client side: a message handed to
//!   [`Client::send_chat`] is resent with the same `client_msg_id` across reconnects
//!   until the server acks it (so it is stored exactly once), entries arrive as
//!   [`Event::ChatMessage`] once each in seq order per conversation, and delivery is
//!   acknowledged to the server as the app receives it.
//! - Calls ([`media`]): a WebRTC session (webrtc-rs) with the server's SFU that publishes
//!   Opus audio and H.264 video from any PCM or I420 source and hands out every other
//!   participant's tracks as decoded audio frames and pictures, through the media crate's
//!   adaptive jitter buffer and video frame buffer, with per-track statistics. It sends
//!   transport-wide congestion feedback, so the SFU estimates the bandwidth toward it
//!   (and pauses a camera that does not fit), and its camera's encoder follows the
//!   most the SFU lets it send (REMB: a configured cap, or in a one-to-one call what
//!   the other side's link can take).
//!   [`Client::ice_servers`] fetches the server's STUN/TURN servers, and
//!   `MediaOptions::relay_only` sends everything through TURN (a network that lets no
//!   UDP reach the SFU; tested against huddle's own TURN in tests/client_relay.rs).
//!   `examples/join.rs` is a runnable participant.
//!
//! ```no_run
//! # async fn demo() -> Result<(), huddle_client::ClientError> {
//! use huddle_client::{Client, Config, Event};
//! let cfg = Config::new("ws://127.0.0.1:8080/v1/ws", "<access token>").device("laptop-1");
//! let (client, mut events) = Client::connect(cfg).await?;
//! client.join(Some("standup")).await?;
//! let ack = client.send_chat("room:standup", "hello").await?;
//! println!("stored as seq {}", ack.seq);
//! while let Some(ev) = events.recv().await {
//!     if let Event::ChatMessage(m) = ev {
//!         println!("{}: {}", m.sender, m.text.unwrap_or_default());
//!     }
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod config;
mod driver;
pub mod media;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

pub use config::Config;
use driver::{Command, Driver};
pub use wire::{
    ChatAck, ChatEntry, Conversation, HistoryPage, Participant, ParticipantQuality, ServerError,
};

/// Events queued for the app, in arrival order.
const EVENT_QUEUE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The server refused the WebSocket upgrade with this HTTP status (401: bad token).
    #[error("the server refused the connection with HTTP {0}")]
    Refused(u16),
    #[error("the server answered with an error: {0:?}")]
    Server(ServerError),
    #[error("not connected; the client is reconnecting")]
    Disconnected,
    #[error("the client is closed")]
    Closed,
    #[error("unexpected message: {0}")]
    Protocol(String),
}

/// What the server told the app.
#[derive(Debug, Clone)]
pub enum Event {
    /// (Re)connected; `resumed` when the signalling session survived the drop.
    Connected {
        resumed: bool,
    },
    /// The connection was lost; the client is reconnecting.
    Disconnected,
    /// Chat delivery (re)started: `chat_synced` as the server sent it.
    ChatSynced(Value),
    /// A chat entry, once, in seq order per conversation.
    ChatMessage(ChatEntry),
    ParticipantJoined(Participant),
    ParticipantLeft {
        identity: String,
        reason: String,
    },
    /// Another member's read marker.
    ChatRead {
        conversation: String,
        identity: String,
        seq: i64,
    },
    ChatTyping {
        conversation: String,
        identity: String,
        typing: bool,
    },
    /// This identity was added to a conversation.
    ChatJoined(Conversation),
    ChatRemoved {
        conversation: String,
    },
    /// A moderator muted (or unmuted) a track of the room's participant `sid` (this
    /// session's own, if `sid` is [`MediaSession::sid`](media::MediaSession::sid)): the
    /// server forwards nothing of it meanwhile. A muted participant's application
    /// should stop sending it and say so.
    TrackMuted {
        sid: String,
        track: String,
        /// "audio" or "video".
        kind: String,
        muted: bool,
    },
    /// Connection quality of members of the room, as the SFU scores each one's link
    /// (`connection_quality`): those whose level changed, or, right after this session
    /// joined the room, every scored member.
    ConnectionQuality(Vec<ParticipantQuality>),
    /// An error the server pushed outside a request.
    Error(ServerError),
    /// Any other push (calls, shutdown, …), as sent.
    Other(Value),
}

impl Event {
    fn from_push(kind: &str, m: Value) -> Event {
        let s = |k: &str| m[k].as_str().unwrap_or("").to_owned();
        match kind {
            "participant_joined" => serde_json::from_value(m["participant"].clone())
                .map(Event::ParticipantJoined)
                .unwrap_or(Event::Other(m)),
            "participant_left" => Event::ParticipantLeft {
                identity: s("identity"),
                reason: s("reason"),
            },
            "chat_read" => Event::ChatRead {
                conversation: s("conversation"),
                identity: s("identity"),
                seq: m["seq"].as_i64().unwrap_or(0),
            },
            "chat_typing" => Event::ChatTyping {
                conversation: s("conversation"),
                identity: s("identity"),
                typing: m["typing"] == true,
            },
            "chat_joined" => serde_json::from_value(m["conversation"].clone())
                .map(Event::ChatJoined)
                .unwrap_or(Event::Other(m)),
            "chat_removed" => Event::ChatRemoved {
                conversation: s("conversation"),
            },
            "track_muted" => Event::TrackMuted {
                sid: s("sid"),
                track: s("track"),
                kind: s("kind"),
                muted: m["muted"] == true,
            },
            "connection_quality" => serde_json::from_value(m["participants"].clone())
                .map(Event::ConnectionQuality)
                .unwrap_or(Event::Other(m)),
            "error" => Event::Error(ServerError {
                code: s("code"),
                message: s("message"),
            }),
            _ => Event::Other(m),
        }
    }
}

/// State the app can read while the driver runs.
#[derive(Default)]
pub(crate) struct Shared {
    identity: Mutex<String>,
    /// Last chat seq handed to the app, per conversation.
    cursors: Mutex<HashMap<String, i64>>,
    /// Where `media_*` pushes go while a [`media::MediaSession`] runs.
    media: Mutex<Option<mpsc::UnboundedSender<Value>>>,
}

/// A connection to a huddle server. Cheap to clone; closed when [`Client::close`] is
/// called or every clone is dropped.
#[derive(Clone)]
pub struct Client {
    cmds: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

impl Client {
    /// Connects (failing fast if the first attempt is refused) and starts the connection
    /// task; later drops are reconnected by themselves.
    pub async fn connect(cfg: Config) -> Result<(Client, mpsc::Receiver<Event>), ClientError> {
        let shared = Arc::new(Shared::default());
        *shared.cursors.lock().expect("not poisoned") = cfg.cursors.clone();
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
        let mut driver = Driver::new(cfg, shared.clone(), cmd_rx, ev_tx);
        let first = driver.dial().await?;
        tokio::spawn(driver.run(first));
        Ok((
            Client {
                cmds: cmd_tx,
                shared,
            },
            ev_rx,
        ))
    }

    /// The identity of the access token.
    pub fn identity(&self) -> String {
        self.shared.identity.lock().expect("not poisoned").clone()
    }

    /// The last chat seq handed to the app, per conversation: persist it and pass it back
    /// in [`Config::cursors`] to resume there after a restart.
    pub fn cursors(&self) -> HashMap<String, i64> {
        self.shared.cursors.lock().expect("not poisoned").clone()
    }

    /// Sends a request and waits for its response. Fails with
    /// [`ClientError::Disconnected`] if the connection drops first.
    pub async fn request(&self, msg: Value) -> Result<Value, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.cmds
            .send(Command::Request { msg, reply })
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// The STUN/TURN servers the server gives this identity (`get_ice_servers`: its own
    /// TURN with fresh time-limited credentials, or the ones it is configured with), for
    /// [`media::MediaOptions::ice_servers`].
    pub async fn ice_servers(&self) -> Result<Vec<media::IceServer>, ClientError> {
        let mut resp = self.request(json!({"type": "get_ice_servers"})).await?;
        serde_json::from_value(resp["ice_servers"].take())
            .map_err(|e| ClientError::Protocol(format!("ice_servers: {e}")))
    }

    /// Joins a room (the token's room when `None`); rejoined after reconnects.
    pub async fn join(&self, room: Option<&str>) -> Result<Value, ClientError> {
        self.request(json!({"type": "join", "room": room})).await
    }

    /// Sends a chat message and waits until the server has stored it. Survives
    /// disconnects: it is resent with the same `client_msg_id` until acked.
    pub async fn send_chat(&self, conversation: &str, text: &str) -> Result<ChatAck, ClientError> {
        self.send_chat_with(
            json!({"type": "chat_send", "conversation": conversation, "text": text}),
        )
        .await
    }

    /// Like [`Client::send_chat`] with any `chat_send`, `chat_edit` or `chat_delete` body;
    /// a `client_msg_id` is added unless present.
    pub async fn send_chat_with(&self, mut msg: Value) -> Result<ChatAck, ClientError> {
        let client_msg_id = match msg["client_msg_id"].as_str() {
            Some(id) => id.to_owned(),
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                msg["client_msg_id"] = id.clone().into();
                id
            }
        };
        let (reply, rx) = oneshot::channel();
        self.cmds
            .send(Command::ChatSend {
                msg,
                client_msg_id,
                reply,
            })
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// A page of a conversation's history (see `chat_history` in docs/protocol.md).
    pub async fn history(
        &self,
        conversation: &str,
        before: Option<i64>,
        after: Option<i64>,
        limit: usize,
    ) -> Result<HistoryPage, ClientError> {
        let m = self
            .request(json!({"type": "chat_history", "conversation": conversation,
                "before": before, "after": after, "limit": limit}))
            .await?;
        serde_json::from_value(m).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// The one-to-one conversation with `identity`, created on first use.
    pub async fn open_direct(&self, identity: &str) -> Result<Conversation, ClientError> {
        let m = self
            .request(json!({"type": "chat_open_direct", "with": identity}))
            .await?;
        serde_json::from_value(m["conversation"].clone())
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// A named group with this identity as owner.
    pub async fn create_group(
        &self,
        name: &str,
        members: &[&str],
    ) -> Result<Conversation, ClientError> {
        let m = self
            .request(json!({"type": "chat_create_group", "name": name, "members": members}))
            .await?;
        serde_json::from_value(m["conversation"].clone())
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Marks everything up to `seq` as read (others see a read receipt).
    pub async fn mark_read(&self, conversation: &str, seq: i64) -> Result<(), ClientError> {
        self.request(json!({"type": "chat_read", "conversation": conversation, "seq": seq}))
            .await
            .map(|_| ())
    }

    /// Tells the other members this identity is typing (or stopped).
    pub async fn typing(&self, conversation: &str, typing: bool) -> Result<(), ClientError> {
        self.cmds
            .send(Command::Notify {
                msg: json!({"type": "chat_typing", "conversation": conversation, "typing": typing}),
            })
            .await
            .map_err(|_| ClientError::Closed)
    }

    /// Routes `media_*` pushes to `sink` (or back to the event stream with `None`).
    pub(crate) fn set_media_sink(&self, sink: Option<mpsc::UnboundedSender<Value>>) {
        *self.shared.media.lock().expect("not poisoned") = sink;
    }

    /// Closes the connection and stops reconnecting.
    pub async fn close(&self) {
        let _ = self.cmds.send(Command::Close).await;
    }
}
