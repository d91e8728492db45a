//! The web demo's chat in headless Chromium against the real server (`--dev`, which the
//! demo's token endpoint needs): live delivery between two pages in order, delivery state,
//! history after a reload, the unread badge, and reconnection with history intact after
//! the server is killed and restarted.
//!
//! Needs node, chromium and `npm ci` in tests/browser; CI provides them and sets
//! HUDDLE_REQUIRE_BROWSER=1 so that their absence fails instead of skipping.

mod common;
use common::Server;
use common::{browser_available, run_browser_script};

#[test]
fn demo_chat_delivers_in_order_keeps_history_and_survives_a_restart() {
    if !browser_available() {
        return;
    }
    let mut server = Server::start_with("", &["--dev"], &[]);
    let url = format!("http://{}", server.addr);
    let report = run_browser_script("chat.mjs", &[&url], Some(&mut server));
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
