//! Chat test helpers: a store per backend (SQLite, and PostgreSQL when
//! `HUDDLE_TEST_POSTGRES_URL` names an admin URL), and a chat client over a real WebSocket.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Client, Server, TOKEN_SECRET, issuer};
use huddle_signal::auth::{TokenRequest, default_grants};

/// A store the server under test runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }
}

/// The backends to run each chat test on: SQLite always; PostgreSQL with a fresh database
/// when `HUDDLE_TEST_POSTGRES_URL` is set (required when `HUDDLE_REQUIRE_POSTGRES` is).
pub async fn backends() -> Vec<Backend> {
    let mut out = vec![Backend::Sqlite];
    match std::env::var("HUDDLE_TEST_POSTGRES_URL") {
        Ok(admin) => out.push(Backend::Postgres(fresh_database(&admin).await)),
        Err(_) => {
            assert!(
                std::env::var_os("HUDDLE_REQUIRE_POSTGRES").is_none(),
                "HUDDLE_REQUIRE_POSTGRES is set but HUDDLE_TEST_POSTGRES_URL is not"
            );
            eprintln!("note: HUDDLE_TEST_POSTGRES_URL not set; chat tests run on SQLite only");
        }
    }
    out
}

/// Creates an empty database on the server at `admin` and returns its URL.
pub async fn fresh_database(admin: &str) -> String {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .expect("connect to HUDDLE_TEST_POSTGRES_URL");
    let name = format!("huddle_test_{}", uuid_simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
    format!("{base}/{name}")
}

fn uuid_simple() -> String {
    let mut b = [0u8; 8];
    getrandom(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn getrandom(b: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(b)
        .unwrap();
}

/// Starts a server on `backend` with `extra` TOML.
pub fn start(backend: &Backend, extra: &str) -> Server {
    match backend {
        Backend::Sqlite => Server::start(extra),
        Backend::Postgres(url) => Server::start_with(extra, &[], &[("HUDDLE_STORE__URL", url)]),
    }
}

/// A token for `identity` that may join `room` (or `*`).
pub fn chat_token(identity: &str, room: Option<&str>) -> String {
    issuer(TOKEN_SECRET)
        .mint(&TokenRequest {
            identity: identity.into(),
            name: None,
            room: room.map(String::from),
            grants: default_grants(),
            ttl: None,
        })
        .unwrap()
        .0
}

/// A chat device over a real WebSocket.
pub struct ChatClient {
    pub c: Client,
    pub identity: String,
    pub device: String,
    next_id: i64,
    /// Pushes received while waiting for a response, in arrival order.
    pub backlog: Vec<Value>,
    pub synced: Value,
}

impl ChatClient {
    /// Connects, names the device and syncs with `cursors`.
    pub async fn connect(
        server: &Server,
        identity: &str,
        room: Option<&str>,
        device: &str,
        cursors: Value,
    ) -> ChatClient {
        let c = Client::connect(&server.ws_url(&chat_token(identity, room)))
            .await
            .expect("connect");
        let mut cc = ChatClient {
            c,
            identity: identity.into(),
            device: device.into(),
            next_id: 1,
            backlog: Vec::new(),
            synced: Value::Null,
        };
        cc.synced = cc
            .request(json!({"type": "chat_sync", "device": device, "cursors": cursors}))
            .await;
        assert_eq!(cc.synced["type"], "chat_synced", "{}", cc.synced);
        cc
    }

    /// Sends a request and returns its response; pushes seen meanwhile go to `backlog`.
    pub async fn request(&mut self, mut v: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        v["id"] = id.into();
        self.c.send(v).await;
        loop {
            let m = self.c.recv().await;
            if m["id"] == id {
                return m;
            }
            self.backlog.push(m);
        }
    }

    pub async fn send_text(&mut self, conv: &str, client_msg_id: &str, text: &str) -> Value {
        self.request(json!({"type": "chat_send", "conversation": conv,
            "client_msg_id": client_msg_id, "text": text}))
            .await
    }

    /// The next push of `kind` (from the backlog first), within 5 s.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        if let Some(i) = self.backlog.iter().position(|m| m["type"] == kind) {
            return self.backlog.remove(i);
        }
        loop {
            let m = self.c.recv().await;
            if m["type"] == kind {
                return m;
            }
            self.backlog.push(m);
        }
    }

    /// Collects `chat_message` pushes until `n` have arrived (or 5 s of silence).
    pub async fn messages(&mut self, n: usize) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        self.backlog.retain(|m| {
            if m["type"] == "chat_message" && out.len() < n {
                out.push(m.clone());
                false
            } else {
                true
            }
        });
        while out.len() < n {
            match self.c.try_recv(Duration::from_secs(5)).await {
                Some(m) if m["type"] == "chat_message" => out.push(m),
                Some(m) => self.backlog.push(m),
                None => break,
            }
        }
        out
    }

    /// Asserts no `chat_message` arrives for `d`.
    pub async fn expect_no_messages(&mut self, d: Duration) {
        assert!(
            !self.backlog.iter().any(|m| m["type"] == "chat_message"),
            "unexpected {:?}",
            self.backlog
        );
        while let Some(m) = self.c.try_recv(d).await {
            assert_ne!(m["type"], "chat_message", "unexpected {m}");
            self.backlog.push(m);
        }
    }

    /// The `from_seq`/`last_seq` of each conversation in the sync response.
    pub fn synced_convs(&self) -> HashMap<String, (i64, i64)> {
        self.synced["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["id"].as_str().unwrap().to_owned(),
                    (
                        c["from_seq"].as_i64().unwrap(),
                        c["last_seq"].as_i64().unwrap(),
                    ),
                )
            })
            .collect()
    }
}

/// `seq` of each message, for order assertions.
pub fn seqs(msgs: &[Value]) -> Vec<i64> {
    msgs.iter().map(|m| m["seq"].as_i64().unwrap()).collect()
}

pub fn texts(msgs: &[Value]) -> Vec<String> {
    msgs.iter()
        .map(|m| m["text"].as_str().unwrap_or("").to_owned())
        .collect()
}
