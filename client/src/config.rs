//! Client configuration.

use std::collections::HashMap;
use std::time::Duration;

/// How to reach the server and who this device is.
#[derive(Debug, Clone)]
pub struct Config {
    /// The WebSocket endpoint, e.g. `ws://127.0.0.1:8080/v1/ws`.
    pub url: String,
    /// An access token (see `huddle token` or `POST /v1/tokens`).
    pub token: String,
    /// A stable id for this device, kept by the app across restarts; enables chat. `None`
    /// for a connection without chat.
    pub device: Option<String>,
    /// Per conversation, the last chat seq the app has stored (from
    /// [`crate::Client::cursors`] on its previous run); delivery resumes after it.
    pub cursors: HashMap<String, i64>,
    /// First and longest wait between reconnection attempts (doubling in between, with
    /// jitter).
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// How often delivered chat entries are acknowledged to the server (`chat_received`).
    pub ack_interval: Duration,
}

impl Config {
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: token.into(),
            device: None,
            cursors: HashMap::new(),
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(10),
            ack_interval: Duration::from_millis(250),
        }
    }

    /// Enables chat as `device`.
    pub fn device(mut self, device: impl Into<String>) -> Self {
        self.device = Some(device.into());
        self
    }

    pub fn cursors(mut self, cursors: HashMap<String, i64>) -> Self {
        self.cursors = cursors;
        self
    }
}
