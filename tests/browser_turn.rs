//! A real WebRTC stack through huddle's TURN server: headless Chromium (Debian's
//! `chromium`, driven by playwright-core from `tests/browser/`) connects two peer
//! connections with `iceTransportPolicy: "relay"` over UDP and over TCP to the server, and
//! a data-channel message makes the round trip. Both ends must use relay candidates.
//!
//! Needs node, chromium and `npm ci` in tests/browser; CI provides them and sets
//! HUDDLE_REQUIRE_BROWSER=1 so that their absence fails instead of skipping.

mod common;
use common::TurnProcess;
use common::{browser_available, run_browser_script};

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
        let report = run_browser_script("turn-relay.mjs", &[&url, &username, &password], None);
        assert_eq!(report["reply"], "echo:hello through the relay", "{url}");
        assert_eq!(report["local"], "relay", "{url}");
        assert_eq!(report["remote"], "relay", "{url}");
    }
}
