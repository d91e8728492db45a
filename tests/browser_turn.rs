//! A real WebRTC stack through huddle's TURN server: headless Chromium (Debian's
//! `chromium`, driven by playwright-core from `tests/browser/`) connects two peer
//! connections with `iceTransportPolicy: "relay"` over UDP and over TCP to the server, and
//! a data-channel message makes the round trip. Both ends must use relay candidates.
//!
//! Needs node, chromium and `npm ci` in tests/browser; CI provides them and sets
//! HUDDLE_REQUIRE_BROWSER=1 so that their absence fails instead of skipping.

use std::path::Path;
use std::process::Command;

mod common;
use common::TurnProcess;
use common::browser_available;

#[test]
fn chromium_connects_relay_only_through_huddle_turn() {
    if !browser_available() {
        return;
    }
    let turn = TurnProcess::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--relay-ip",
            "127.0.0.1",
            "--min-port",
            "41000",
            "--max-port",
            "48999",
            "--auth-secret",
            "browser-secret",
            "--allow-loopback-peers",
        ],
        &[],
    );
    // TURN REST credentials, exactly as the signalling service hands them to browsers.
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let username = format!("{expiry}:browser");
    let password = huddle_signal::ice::turn_rest_password(b"browser-secret", &username);
    for url in [
        format!("turn:{}?transport=udp", turn.udp),
        format!("turn:{}?transport=tcp", turn.tcp),
    ] {
        let out = Command::new("node")
            .arg("turn-relay.mjs")
            .args([&url, &username, &password])
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report: serde_json::Value =
            serde_json::from_str(stdout.trim().lines().last().unwrap_or("{}"))
                .unwrap_or_else(|_| panic!("{url}: unreadable output: {stdout}"));
        assert!(out.status.success(), "{url}: {report}");
        assert_eq!(report["reply"], "echo:hello through the relay", "{url}");
        assert_eq!(report["local"], "relay", "{url}");
        assert_eq!(report["remote"], "relay", "{url}");
    }
}
