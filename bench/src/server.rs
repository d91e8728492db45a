//! A huddle server under test: a child `huddle serve` started by the benchmark (so that its
//! memory can be read from `/proc`), or an already running server given by URL.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{BenchError, Result};

/// A server the benchmark talks to.
pub struct Target {
    /// `http://host:port`
    pub base: String,
    pub api_secret: String,
    /// The SFU's UDP address as the child printed it (`None`: SFU off, or external).
    pub sfu_addr: Option<std::net::SocketAddr>,
    child: Option<Child>,
    _dir: Option<PathBuf>,
}

impl Target {
    /// An external server; its memory cannot be measured.
    pub fn external(base: String, api_secret: String) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            api_secret,
            sfu_addr: None,
            child: None,
            _dir: None,
        }
    }

    /// Starts `exe serve` on a free loopback port with fresh secrets and `env` overrides.
    pub fn spawn(exe: &Path, env: &[(&str, String)]) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("huddle-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let api_secret = format!("bench-api-secret-{:016x}", rand_u64());
        let mut cmd = Command::new(exe);
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "warn",
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .env(
            "HUDDLE_AUTH__TOKEN_SECRET",
            format!("bench-token-secret-{:016x}{:016x}", rand_u64(), rand_u64()),
        )
        .env("HUDDLE_AUTH__API_SECRET", &api_secret)
        .env("HUDDLE_TURN__ENABLED", "false")
        .env("HUDDLE_SFU__ENABLED", "false")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Server("no stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let mut sfu_addr = None;
        let base = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(addr) = line.strip_prefix("huddle: sfu listening on udp://") {
                        sfu_addr = addr.parse().ok();
                    }
                    if let Some(addr) = line.strip_prefix("huddle: listening on ") {
                        break addr.to_owned();
                    }
                }
                _ => {
                    return Err(BenchError::Server(
                        "huddle serve exited before listening".into(),
                    ));
                }
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Ok(Self {
            base,
            api_secret,
            sfu_addr,
            child: Some(child),
            _dir: Some(dir),
        })
    }

    /// Like [`Target::spawn`] with the SFU on, bound to a free loopback port (which it
    /// also advertises as its ICE candidate).
    pub fn spawn_with_sfu(exe: &Path, env: &[(&str, String)]) -> Result<Self> {
        let mut all = vec![
            ("HUDDLE_SFU__ENABLED", "true".to_string()),
            ("HUDDLE_SFU__LISTEN", "127.0.0.1:0".to_string()),
        ];
        all.extend(env.iter().cloned());
        let target = Self::spawn(exe, &all)?;
        if target.sfu_addr.is_none() {
            return Err(BenchError::Server(
                "the server did not start its SFU".into(),
            ));
        }
        Ok(target)
    }

    /// An access token for `identity` in `room`, minted with the API secret.
    pub async fn token(&self, identity: &str, room: &str) -> Result<String> {
        let resp: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/v1/tokens", self.base))
            .bearer_auth(&self.api_secret)
            .json(&serde_json::json!({"identity": identity, "room": room}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        resp["token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| BenchError::Protocol(format!("no token in {resp}")))
    }

    /// The SFU's view of `room` (admin API `/v1/rooms/{room}/media`).
    pub async fn room_media(&self, room: &str) -> Result<serde_json::Value> {
        Ok(reqwest::Client::new()
            .get(format!("{}/v1/rooms/{room}/media", self.base))
            .bearer_auth(&self.api_secret)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Process id of the server, when it is our child.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident memory of the server process in bytes, when it is our child.
    pub fn rss_bytes(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    pub fn ws_url(&self) -> String {
        format!("{}/v1/ws", self.base.replacen("http", "ws", 1))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(d) = &self._dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A random 64-bit number (std's per-instance hash keys, seeded by the OS).
pub(crate) fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
