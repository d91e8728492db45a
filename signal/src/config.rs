//! Configuration of the signalling service. The binary loads these sections from TOML,
//! `HUDDLE_*` environment variables and flags (see `docs/deployment.md`); every field has a
//! default except the secrets, which production deployments must set.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret string. Serialises as `"<redacted>"` and prints as such in `Debug`, so it can
/// never leak through `check-config` or logs; [`Secret::expose`] is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// `[http]`: the HTTP/WebSocket listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the HTTP API, WebSocket and web demo.
    pub listen: SocketAddr,
    /// URL under which users reach this server (printed at start, used in docs links).
    pub public_url: Option<String>,
    /// Origins (`scheme://host[:port]`) allowed to open WebSockets, besides same-origin.
    pub allowed_origins: Vec<String>,
    /// Allow browser pages served from this same host (Origin host == Host header).
    pub allow_same_origin: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            public_url: None,
            allowed_origins: Vec::new(),
            allow_same_origin: true,
        }
    }
}

/// `[auth]`: access tokens and the API secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 key that signs access tokens (at least 32 bytes).
    pub token_secret: Option<Secret>,
    /// Secret an app backend presents (Bearer) to mint tokens and call admin endpoints.
    pub api_secret: Option<Secret>,
    /// Token lifetime when the request names none.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// Longest lifetime a minted token may have.
    #[serde(with = "humantime_serde")]
    pub max_token_ttl: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            token_secret: None,
            api_secret: None,
            token_ttl: Duration::from_secs(6 * 3600),
            max_token_ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// `[signal]`: WebSocket sessions, their liveness and their limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignalConfig {
    /// How often the server pings each connection.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A connection silent for this long is closed.
    #[serde(with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
    /// How long a lost session waits for its client to resume before it leaves.
    #[serde(with = "humantime_serde")]
    pub resume_grace: Duration,
    /// Largest message the protocol accepts; larger ones get `message_too_large`.
    pub max_message_bytes: usize,
    /// Sustained messages per second per connection.
    pub messages_per_second: u32,
    /// Burst of messages per connection above the sustained rate.
    pub message_burst: u32,
    /// Connections the server holds at once.
    pub max_connections: usize,
    /// Connections one IP address may hold at once.
    pub max_connections_per_ip: usize,
    /// Messages queued for one connection before it counts as too slow and is closed.
    pub outbound_queue: usize,
    /// Pushes kept for a lost session to replay when it resumes.
    pub resume_buffer: usize,
}

impl Default for SignalConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(15),
            heartbeat_timeout: Duration::from_secs(45),
            resume_grace: Duration::from_secs(30),
            max_message_bytes: 64 * 1024,
            messages_per_second: 50,
            message_burst: 200,
            max_connections: 100_000,
            max_connections_per_ip: 200,
            outbound_queue: 256,
            resume_buffer: 512,
        }
    }
}

/// `[rooms]`: room limits and lifetime.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomsConfig {
    /// Most participants one room holds.
    pub max_participants: usize,
    /// Most rooms open at once.
    pub max_rooms: usize,
    /// An empty room is closed after this long.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Largest participant metadata (serialised JSON).
    pub max_metadata_bytes: usize,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self {
            max_participants: 100,
            max_rooms: 10_000,
            idle_timeout: Duration::from_secs(300),
            max_metadata_bytes: 4096,
        }
    }
}

/// `[calls]`: one-to-one peer-to-peer calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallsConfig {
    /// An unanswered call ends with `timeout` after this long.
    #[serde(with = "humantime_serde")]
    pub ring_timeout: Duration,
}

impl Default for CallsConfig {
    fn default() -> Self {
        Self {
            ring_timeout: Duration::from_secs(45),
        }
    }
}

/// `[ice]`: the STUN/TURN servers handed to clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IceConfig {
    /// `stun:` URLs, sent without credentials.
    pub stun_urls: Vec<String>,
    /// `turn:`/`turns:` URLs, sent with TURN REST credentials made from `turn_secret`.
    pub turn_urls: Vec<String>,
    /// Shared secret of the TURN server(s) (coturn's `static-auth-secret`).
    pub turn_secret: Option<Secret>,
    /// Lifetime of the TURN credentials.
    #[serde(with = "humantime_serde")]
    pub credential_ttl: Duration,
}

impl Default for IceConfig {
    fn default() -> Self {
        Self {
            stun_urls: Vec::new(),
            turn_urls: Vec::new(),
            turn_secret: None,
            credential_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// `[store]`: where durable state lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Directory for the SQLite database and uploaded files.
    pub data_dir: PathBuf,
    /// Database URL; defaults to `sqlite://<data_dir>/huddle.db`.
    pub url: Option<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            url: None,
        }
    }
}

impl StoreConfig {
    pub fn effective_url(&self) -> String {
        self.url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("huddle.db").display()))
    }
}

/// `[chat]`: text chat, its limits, attachments, retention and the push webhook.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatConfig {
    /// Longest message text, in bytes of UTF-8.
    pub max_text_bytes: usize,
    /// Largest client metadata of a message (serialised JSON).
    pub max_metadata_bytes: usize,
    /// Most attachments one message carries.
    pub max_attachments: usize,
    /// Messages (sends, edits, deletes) one identity may post per second, over all its devices.
    pub messages_per_second: u32,
    /// Burst allowed above `messages_per_second`.
    pub message_burst: u32,
    /// Most members of a named group.
    pub max_group_members: usize,
    /// Most messages returned by one history request.
    pub max_history_page: usize,
    /// A device seen for the first time gets this many recent messages of each conversation
    /// on sync (older ones through history); a known device gets everything it missed.
    pub new_device_backlog: usize,
    /// Messages older than this are deleted; `0s` keeps them forever.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Largest attachment upload, in bytes.
    pub max_attachment_bytes: u64,
    /// Content types accepted for attachments.
    pub attachment_types: Vec<String>,
    /// Called (POST, JSON) for messages whose recipients had no device connected, so the
    /// app server can send push notifications.
    pub webhook_url: Option<String>,
    /// Signs webhook bodies: header `X-Huddle-Signature: sha256=<hex HMAC-SHA256>`.
    pub webhook_secret: Option<Secret>,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            max_text_bytes: 16 * 1024,
            max_metadata_bytes: 4096,
            max_attachments: 10,
            messages_per_second: 20,
            message_burst: 100,
            max_group_members: 1000,
            max_history_page: 200,
            new_device_backlog: 100,
            retention: Duration::ZERO,
            max_attachment_bytes: 25 * 1024 * 1024,
            attachment_types: [
                "image/jpeg",
                "image/png",
                "image/gif",
                "image/webp",
                "audio/ogg",
                "audio/webm",
                "audio/mpeg",
                "audio/mp4",
                "audio/wav",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            webhook_url: None,
            webhook_secret: None,
        }
    }
}
