//! Test harness: runs the real `huddle` binary on an ephemeral loopback port and talks to it
//! with real WebSocket and HTTP clients.
#![allow(dead_code)]

pub mod chat;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use huddle_signal::auth::{TokenIssuer, TokenRequest, default_grants};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const TOKEN_SECRET: &str = "test-token-secret-0123456789abcdef-xyz";
pub const API_SECRET: &str = "test-api-secret-0123456789";

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    /// How it was started, to start it again.
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Server {
    /// Starts `huddle serve` with test secrets plus `extra` TOML (sections not otherwise set).
    pub fn start(extra: &str) -> Server {
        Self::start_with(extra, &[], &[])
    }

    pub fn start_with(extra: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let cfg = format!(
            "[auth]\ntoken_secret = \"{TOKEN_SECRET}\"\napi_secret = \"{API_SECRET}\"\n\
             [store]\ndata_dir = \"{}\"\n[log]\nlevel = \"warn\"\n{extra}",
            dir.path().join("data").display()
        );
        // Tests run in parallel: TURN listens only where a test asks for it.
        let cfg = if extra.contains("[turn]") {
            cfg
        } else {
            format!("{cfg}[turn]\nenabled = false\n")
        };
        // Likewise the SFU (its default port is fixed).
        let cfg = if extra.contains("[sfu]") {
            cfg
        } else {
            format!("{cfg}[sfu]\nenabled = false\n")
        };
        let path = dir.path().join("huddle.toml");
        std::fs::write(&path, cfg).unwrap();
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if !args.iter().any(|a| a == "--listen") {
            args.extend(["--listen".into(), "127.0.0.1:0".into()]);
        }
        let mut full = vec![
            "serve".to_string(),
            "--config".into(),
            path.display().to_string(),
        ];
        full.extend(args);
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, addr) = Self::spawn(&full, &env);
        Server {
            child,
            addr,
            dir,
            args: full,
            env,
        }
    }

    fn spawn(args: &[String], env: &[(String, String)]) -> (Child, SocketAddr) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_huddle"));
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let stderr = if std::env::var_os("HUDDLE_TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        let mut child = cmd.stdout(Stdio::piped()).stderr(stderr).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("huddle exited before listening")
                .unwrap();
            if let Some(rest) = line.strip_prefix("huddle: listening on http://") {
                break rest.parse().unwrap();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        (child, addr)
    }

    /// Kills the process (SIGKILL: no graceful shutdown) and starts it again on the same
    /// address, configuration and data.
    pub fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut args = self.args.clone();
        if let Some(i) = args.iter().position(|a| a == "--listen") {
            args[i + 1] = self.addr.to_string();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            // The old socket may linger for a moment after the kill.
            let probe = std::net::TcpListener::bind(self.addr);
            if probe.is_ok() || std::time::Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (child, addr) = Self::spawn(&args, &self.env);
        assert_eq!(addr, self.addr);
        self.child = child;
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The Prometheus text of its `/metrics`.
    pub fn metrics(&self) -> String {
        metrics_at(self.addr)
    }

    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/v1/ws?access_token={}", self.addr, token)
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Connects with a fresh token for `identity` that may join `room`.
    pub async fn connect(&self, identity: &str, room: &str) -> Client {
        Client::connect(&self.ws_url(&token(identity, room)))
            .await
            .expect("connect")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn issuer(secret: &str) -> TokenIssuer {
    TokenIssuer::new(
        secret.as_bytes(),
        Duration::from_secs(3600),
        Duration::from_secs(86400),
    )
}

pub fn token(identity: &str, room: &str) -> String {
    issuer(TOKEN_SECRET)
        .mint(&TokenRequest {
            identity: identity.into(),
            name: None,
            room: Some(room.into()),
            grants: default_grants(),
            ttl: None,
        })
        .unwrap()
        .0
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub welcome: Value,
}

impl Client {
    pub async fn connect(url: &str) -> Result<Client, tungstenite::Error> {
        Self::connect_request(url.into_client_request()?).await
    }

    pub async fn connect_request(
        req: tungstenite::handshake::client::Request,
    ) -> Result<Client, tungstenite::Error> {
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        let mut c = Client {
            ws,
            welcome: Value::Null,
        };
        c.welcome = c.recv().await;
        assert_eq!(
            c.welcome["type"], "welcome",
            "first message must be welcome"
        );
        Ok(c)
    }

    pub async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.unwrap();
    }

    /// Next JSON message within 5 s (pings are answered by the library).
    pub async fn recv(&mut self) -> Value {
        self.try_recv(Duration::from_secs(5))
            .await
            .expect("timed out waiting for a message")
    }

    pub async fn try_recv(&mut self, limit: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match m {
                Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(f))) => {
                    return Some(
                        serde_json::json!({"type": "$close", "code": f.map(|f| u16::from(f.code))}),
                    );
                }
                Some(Ok(other)) => panic!("unexpected frame {other:?}"),
                Some(Err(_)) | None => return Some(serde_json::json!({"type": "$closed"})),
            }
        }
    }

    /// Sends a request with `id` and returns the response that echoes it.
    pub async fn request(&mut self, mut v: Value, id: i64) -> Value {
        v["id"] = id.into();
        self.send(v).await;
        loop {
            let m = self.recv().await;
            if m["id"] == id {
                return m;
            }
        }
    }

    /// Asserts that nothing arrives for `d` (other than what a ping round-trip proves).
    pub async fn expect_silence(&mut self, d: Duration) {
        if let Some(m) = self.try_recv(d).await {
            panic!("expected no message, got {m}");
        }
    }
}

/// `tests/browser`, where the playwright-core scripts live.
pub fn browser_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Whether node, Debian's chromium and `npm ci` in tests/browser are there. Browser tests
/// skip with a notice without them, unless HUDDLE_REQUIRE_BROWSER is set (CI), where their
/// absence fails.
pub fn browser_available() -> bool {
    let ok = browser_dir().join("node_modules/playwright-core").is_dir()
        && std::path::Path::new(
            &std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
        )
        .exists()
        && Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("HUDDLE_REQUIRE_BROWSER").is_none(),
            "browser test needs node, /usr/bin/chromium and `npm ci` in tests/browser"
        );
        eprintln!("SKIPPED: node, chromium or tests/browser/node_modules missing");
    }
    ok
}

/// Runs `node SCRIPT ARGS` in tests/browser and returns its report (its last output line,
/// JSON) after checking that the script succeeded. With a `server`, an output line
/// `RESTART` kills and restarts the server, and `GRACEFUL_RESTART` stops it with SIGTERM,
/// waits for it to exit by itself (killing it once its listener closed could cut its
/// `shutdown` frames off) and starts it again; either way the script is answered on stdin
/// once the server is back. Screenshots go to `<target>/e2e`.
pub fn run_browser_script(script: &str, args: &[&str], mut server: Option<&mut Server>) -> Value {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let mut node = Command::new("node")
        .arg(script)
        .args(args)
        .env("HUDDLE_E2E_DIR", target.join("e2e"))
        // For scripts that read the admin API (diagnostics of a failure).
        .env("HUDDLE_API_SECRET", API_SECRET)
        .current_dir(browser_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = node.stdin.take().unwrap();
    let mut last = String::new();
    for line in BufReader::new(node.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line == "RESTART" || line == "GRACEFUL_RESTART" {
            let server = server
                .as_deref_mut()
                .unwrap_or_else(|| panic!("{script} asked for {line} without a server"));
            if line == "GRACEFUL_RESTART" {
                server.sigterm();
                assert_eq!(
                    server.wait_exit(Duration::from_secs(20)),
                    Some(0),
                    "graceful shutdown"
                );
            }
            server.crash_and_restart();
            use std::io::Write;
            writeln!(stdin, "go").unwrap();
        }
        last = line;
    }
    let status = node.wait().unwrap();
    let report: Value = serde_json::from_str(&last)
        .unwrap_or_else(|_| panic!("{script} {args:?}: unreadable output: {last}"));
    assert!(status.success(), "{script} {args:?}: {report}");
    report
}

/// A `huddle turn` process on loopback and the addresses it printed.
pub struct TurnProcess {
    child: Child,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    /// Present when started with `--tls-cert`.
    pub tls: Option<SocketAddr>,
    /// Present when started with `--metrics-listen`.
    pub metrics: Option<SocketAddr>,
}

impl TurnProcess {
    /// Runs `huddle turn ARGS` and waits for every listener the arguments ask for.
    pub fn start<S: AsRef<std::ffi::OsStr>>(args: &[S], env: &[(&str, &str)]) -> TurnProcess {
        let wants = |flag: &str| args.iter().any(|a| a.as_ref() == flag);
        let (want_tls, want_metrics) = (wants("--tls-cert"), wants("--metrics-listen"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_huddle"));
        cmd.arg("turn")
            .args(args)
            .env_remove("HUDDLE_CONFIG")
            .env("HUDDLE_LOG__LEVEL", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut udp, mut tcp, mut tls, mut metrics) = (None, None, None, None);
        while udp.is_none()
            || tcp.is_none()
            || (want_tls && tls.is_none())
            || (want_metrics && metrics.is_none())
        {
            let line = lines.next().expect("huddle turn exited early").unwrap();
            let addr = |prefix: &str| {
                line.strip_prefix(prefix)
                    .map(|a| a.parse::<SocketAddr>().unwrap())
            };
            udp = udp.or(addr("huddle: turn listening on udp://"));
            tcp = tcp.or(addr("huddle: turn listening on tcp://"));
            tls = tls.or(addr("huddle: turn listening on tls://"));
            metrics = metrics.or(addr("huddle: turn metrics on http://"));
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        TurnProcess {
            child,
            udp: udp.unwrap(),
            tcp: tcp.unwrap(),
            tls,
            metrics,
        }
    }

    /// The Prometheus text of its metrics endpoint.
    pub fn metrics_text(&self) -> String {
        metrics_at(self.metrics.expect("started without --metrics-listen"))
    }
}

impl Drop for TurnProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `huddle bench ARGS --out <tmp>` (a benchmark starting its own server) and returns
/// its JSON report and stdout; fails the test with its stderr if it fails.
pub fn run_bench(args: &[&str]) -> (Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.json");
    let run = Command::new(env!("CARGO_BIN_EXE_huddle"))
        .arg("bench")
        .args(args)
        .arg("--out")
        .arg(&out)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    (report, String::from_utf8_lossy(&run.stdout).into_owned())
}

/// `GET /metrics` at `addr`: the Prometheus text.
pub fn metrics_at(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// The sum of a metric's samples (`name value` or `name{labels} value`) in Prometheus
/// text; 0 when absent.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter(|rest| rest.starts_with([' ', '{']))
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
