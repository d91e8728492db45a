//! The web demo's chat in headless Chromium against the real server (`--dev`, which the
//! demo's token endpoint needs): live delivery between two pages in order, delivery state,
//! history after a reload, the unread badge, and reconnection with history intact after
//! the server is killed and restarted.
//!
//! Needs node, chromium and `npm ci` in tests/browser; CI provides them and sets
//! HUDDLE_REQUIRE_BROWSER=1 so that their absence fails instead of skipping.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

mod common;
use common::Server;
use common::browser_available;

#[test]
fn demo_chat_delivers_in_order_keeps_history_and_survives_a_restart() {
    if !browser_available() {
        return;
    }
    let mut server = Server::start_with("", &["--dev"], &[]);
    let mut node = Command::new("node")
        .arg("chat.mjs")
        .arg(format!("http://{}", server.addr))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = node.stdin.take().unwrap();
    let mut last = String::new();
    for line in BufReader::new(node.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line == "RESTART" {
            server.crash_and_restart();
            writeln!(stdin, "go").unwrap();
        }
        last = line;
    }
    let status = node.wait().unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&last).unwrap_or_else(|_| panic!("unreadable output: {last}"));
    assert!(status.success(), "{report}");
    assert_eq!(
        report["alice_states"],
        serde_json::json!(["sent", "sent", "sent"])
    );
    assert_eq!(
        report["bob_after_reload"],
        serde_json::json!(["one", "two", "three", "four"])
    );
    assert_eq!(report["bob_own_after_reload"], serde_json::json!(["four"]));
    assert_eq!(report["unread_while_hidden"], "1");
    assert_eq!(report["unread_badge_hidden_after_open"], true);
    let all = serde_json::json!(["one", "two", "three", "four", "five", "after restart"]);
    assert_eq!(report["after_restart_bob"], all);
    assert_eq!(report["after_restart_alice"], all);
}
