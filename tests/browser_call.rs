//! Real calls in the web demo through huddle's SFU, in headless Chromium with fake camera
//! and microphone: two and three participants see and hear each other, a participant who
//! leaves disappears from the others' grids; and the same with relay-only ICE through
//! huddle's TURN server.
//!
//! Needs node, chromium and `npm ci` in tests/browser; CI provides them and sets
//! HUDDLE_REQUIRE_BROWSER=1 so that their absence fails instead of skipping.

mod common;
use common::Server;
use common::{browser_available, run_browser_script};

fn call(server: &Server, mode: &str, publisher_cap: Option<u64>) -> serde_json::Value {
    let base = format!("http://{}", server.addr);
    let cap = publisher_cap.map(|c| c.to_string());
    let mut args = vec![base.as_str(), mode];
    args.extend(cap.as_deref());
    run_browser_script("call.mjs", &args, None)
}

fn assert_call(report: &serde_json::Value) {
    for who in ["alice", "bob"] {
        let r = &report["two"][who];
        assert!(
            r["audio"].as_u64().unwrap() > 0,
            "{who} receives audio: {report}"
        );
        assert!(
            r["video"].as_u64().unwrap() > 0,
            "{who} receives video: {report}"
        );
    }
    for who in ["alice", "bob", "carol"] {
        assert_eq!(report["three"][who], 2, "{who} sees two others: {report}");
    }
    assert_eq!(report["after_leave"]["alice"], 1, "{report}");
    assert_eq!(report["after_leave"]["bob"], 1, "{report}");
}

#[test]
fn browsers_see_and_hear_each_other_through_the_sfu() {
    if !browser_available() {
        return;
    }
    // A publisher cap below Chromium's 300 kbit/s start: each page's send budget
    // (availableOutgoingBitrate) only gets down to it if the SFU's REMB is obeyed.
    let cap = 200_000;
    let server = Server::start_with(
        &format!("[sfu]\nlisten = \"127.0.0.1:0\"\nmax_publisher_bitrate = {cap}\n"),
        &["--dev"],
        &[],
    );
    let report = call(&server, "direct", Some(cap));
    assert_call(&report);
    assert_eq!(report["two"]["alice"]["candidate"], "host", "{report}");
    for who in ["alice", "bob"] {
        let budget = report["send_budget"][who].as_u64();
        assert!(
            budget.is_some_and(|b| b > 0 && b <= cap),
            "{who}'s send budget is not capped at {cap}: {report}"
        );
    }
}

/// A call whose only ICE server is huddle's TURN on `port` over `transport`, with relay
/// ports from `min_port`: both pages must end up on relay candidates. TURN runs on its
/// own ports so that this can run beside other tests.
fn relay_only_call(port: u16, transport: &str, min_port: u16) {
    let server = Server::start_with(
        &format!(
            "[sfu]\nlisten = \"127.0.0.1:0\"\n\
             [turn]\nlisten_udp = [\"127.0.0.1:{port}\"]\nlisten_tcp = [\"127.0.0.1:{port}\"]\n\
             min_port = {min_port}\nmax_port = {}\n\
             [ice]\nturn_urls = [\"turn:127.0.0.1:{port}?transport={transport}\"]\n\
             turn_secret = \"relay-call-secret\"\n",
            min_port + 999
        ),
        &["--dev"],
        &[],
    );
    let report = call(&server, "relay", None);
    assert_call(&report);
    assert_eq!(report["two"]["alice"]["candidate"], "relay", "{report}");
    assert_eq!(report["two"]["bob"]["candidate"], "relay", "{report}");
}

#[test]
fn browsers_call_relay_only_through_huddle_turn() {
    if !browser_available() {
        return;
    }
    relay_only_call(34791, "udp", 45000);
}

/// Clients that cannot use UDP at all: the only ICE server is huddle's TURN over TCP
/// (RFC 6062 client leg), so every relay candidate is a TCP allocation, and the call
/// still goes through the SFU.
#[test]
fn browsers_call_over_tcp_through_huddle_turn() {
    if !browser_available() {
        return;
    }
    relay_only_call(34793, "tcp", 46000);
}
