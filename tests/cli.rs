//! The command line: configuration layering, validation errors, token minting, and the
//! admin commands against a running server.

mod common;

use std::process::Command;

use common::{API_SECRET, Server};
use serde_json::{Value, json};

fn huddle(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_huddle"));
    cmd.args(args)
        .env_remove("HUDDLE_CONFIG")
        .env_remove("HUDDLE_API_SECRET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_prints_effective_config_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.toml");
    std::fs::write(
        &path,
        "[auth]\ntoken_secret = \"super-secret-token-key-0123456789abcdef\"\napi_secret = \"api-secret-0123456789\"\n[rooms]\nmax_participants = 12\n[turn]\nexternal_ip = \"203.0.113.10\"\nauth_secret = \"turn-shared-secret-value\"\n[sfu]\npublic_ips = [\"203.0.113.10\"]\n",
    )
    .unwrap();
    let (code, out, _) = huddle(
        &["check-config", "--config", path.to_str().unwrap()],
        &[
            ("HUDDLE_ROOMS__IDLE_TIMEOUT", "90s"),
            ("HUDDLE_SOMETHING_ELSE", "not config"),
        ],
    );
    assert_eq!(code, 0);
    assert!(out.contains("max_participants = 12"), "{out}");
    assert!(
        out.contains("idle_timeout = \"1m 30s\""),
        "env overrides the file: {out}"
    );
    assert!(
        !out.contains("super-secret-token-key"),
        "secrets must be redacted"
    );
    assert!(out.contains("<redacted>"));
}

#[test]
fn bad_config_fails_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.toml");
    std::fs::write(&path, "[signal]\nmax_message_bytes = \"lots\"\n").unwrap();
    let (code, _, err) = huddle(
        &["check-config", "--dev", "--config", path.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("max_message_bytes"), "{err}");

    let (code, _, err) = huddle(&["serve", "--listen", "127.0.0.1:0"], &[]);
    assert_eq!(code, 1, "serve without secrets and without --dev must fail");
    assert!(err.contains("auth.token_secret"), "{err}");

    let (code, _, err) = huddle(
        &["check-config", "--config", "/nonexistent/huddle.toml"],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn token_command_mints_verifiable_tokens() {
    let secret = "cli-token-secret-0123456789abcdef0123";
    let env = [
        ("HUDDLE_AUTH__TOKEN_SECRET", secret),
        ("HUDDLE_AUTH__API_SECRET", "cli-api-secret-0123456789"),
    ];
    let (code, out, err) = huddle(
        &[
            "token",
            "--room",
            "r1",
            "--identity",
            "u1",
            "--name",
            "User One",
            "--ttl",
            "10m",
            "--grants",
            "subscribe,admin",
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    let issuer = huddle_signal::auth::TokenIssuer::new(
        secret.as_bytes(),
        std::time::Duration::from_secs(60),
        std::time::Duration::from_secs(3600),
    );
    let claims = issuer.verify(out.trim()).unwrap();
    assert_eq!(claims.sub, "u1");
    assert_eq!(claims.room.as_deref(), Some("r1"));
    assert!(claims.grants.subscribe && claims.grants.admin && !claims.grants.publish);
    assert!(claims.exp - claims.iat <= 600);
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["serve", "turn", "token", "check-config", "bench", "admin"] {
        let (code, out, _) = huddle(&[sub, "--help"], &[]);
        assert_eq!(code, 0, "{sub}");
        assert!(out.contains("Usage:"), "{sub}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_drive_a_running_server() {
    let server = Server::start("[sfu]\nlisten = \"127.0.0.1:0\"\n");
    let mut alice = server.connect("alice", "standup").await;
    let joined = alice.request(json!({"type": "join"}), 1).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    let url = format!("http://{}", server.addr);
    let admin = |args: &[&str]| {
        let mut all = vec!["admin", "--url", url.as_str(), "--api-secret", API_SECRET];
        all.extend_from_slice(args);
        huddle(&all, &[])
    };
    let json_of =
        |out: &str| -> Value { serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}")) };

    let (code, out, err) = admin(&["rooms"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_of(&out)["rooms"][0]["name"], "standup", "{out}");
    let (code, out, err) = admin(&["participants", "standup"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        json_of(&out)["participants"][0]["identity"],
        "alice",
        "{out}"
    );
    // A mute made before any media session is kept for it: nothing changes now.
    let (code, out, err) = admin(&["mute", "standup", "alice", "--kind", "audio"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_of(&out)["tracks"], json!([]), "{out}");
    // Errors carry the server's status and message.
    let (code, _, err) = admin(&["mute", "standup", "bob"]);
    assert_ne!(code, 0);
    assert!(err.contains("404") && err.contains("not in room"), "{err}");
    let (code, _, err) = admin(&["media", "nowhere"]);
    assert_ne!(code, 0);
    assert!(err.contains("404"), "{err}");
    let (code, _, err) = huddle(
        &[
            "admin",
            "--url",
            &url,
            "--api-secret",
            "wrong-secret",
            "rooms",
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(err.contains("401"), "{err}");
    // Without a secret from anywhere, it says where one comes from.
    let (code, _, err) = huddle(&["admin", "--url", &url, "rooms"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("no API secret"), "{err}");

    // Removing her ends her session; the room closes once.
    let (code, out, err) = admin(&["remove", "standup", "alice"]);
    assert_eq!((code, out.trim()), (0, "ok"), "{err}");
    let removed = loop {
        let m = alice.recv().await;
        if m["type"] == "removed" {
            break m;
        }
    };
    assert_eq!(removed["reason"], "removed", "{removed}");
    let (code, out, err) = admin(&["close", "standup"]);
    assert_eq!((code, out.trim()), (0, "ok"), "{err}");
    let (code, _, err) = admin(&["close", "standup"]);
    assert_ne!(code, 0);
    assert!(err.contains("404"), "{err}");
}
