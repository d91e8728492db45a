//! The web demo as a product, in headless Chromium against the real server (`--dev`):
//! the pre-join screen and in-call controls (tests/browser/app.mjs), one-to-one calls
//! (direct.mjs), a network drop and server restarts in the middle of a call
//! (reconnect.mjs) and errors shown in plain words (errors.mjs). Screenshots of the key steps go to `target/e2e/`.
//!
//! Needs node, chromium and `npm ci` in tests/browser; CI provides them and sets
//! HUDDLE_REQUIRE_BROWSER=1 so that their absence fails instead of skipping.

use serde_json::{Value, json};

mod common;
use common::{Server, browser_available, run_browser_script};

/// The SFU on an ephemeral loopback port (its default port is fixed).
const SFU: &str = "[sfu]\nlisten = \"127.0.0.1:0\"\n";

/// Runs `script` against `server` (see `common::run_browser_script`) and logs its report.
fn run(server: &mut Server, script: &str) -> Value {
    let url = format!("http://{}", server.addr);
    let report = run_browser_script(script, &[&url], Some(server));
    eprintln!("{script}: {report}");
    report
}

fn num(v: &Value) -> f64 {
    v.as_str()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn prejoin_devices_and_in_call_controls() {
    if !browser_available() {
        return;
    }
    let mut server = Server::start_with(SFU, &["--dev"], &[]);
    let r = run(&mut server, "app.mjs");
    // Pre-join.
    assert_eq!(
        r["prefill"],
        json!({"name": "Alice", "room": "product"}),
        "{r}"
    );
    assert!(
        r["share_link"]
            .as_str()
            .unwrap()
            .ends_with("/?room=product"),
        "{r}"
    );
    assert!(!r["cameras"].as_array().unwrap().is_empty(), "{r}");
    assert!(r["microphones"].as_array().unwrap().len() >= 2, "{r}");
    assert!(r["meter_peak"].as_f64().unwrap() > 0.2, "{r}");
    assert_eq!(r["room_view_before_join"], false, "{r}");
    // Accessible names on every control; light and dark follow the browser.
    assert_eq!(r["unlabelled_prejoin"], json!([]), "{r}");
    assert_eq!(r["unlabelled_in_call"], json!([]), "{r}");
    let luminance = |v: &Value| -> f64 {
        let rgb: Vec<f64> = v
            .as_str()
            .unwrap()
            .trim_start_matches("rgb(")
            .trim_end_matches(')')
            .split(',')
            .map(|c| c.trim().parse().unwrap())
            .collect();
        (0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]) / 255.0
    };
    assert!(luminance(&r["backgrounds"]["light"]) > 0.8, "{r}");
    assert!(luminance(&r["backgrounds"]["dark"]) < 0.2, "{r}");
    // Names, mute, camera.
    assert_eq!(
        r["names"],
        json!({"at_alice": "Bob", "at_bob": "Alice"}),
        "{r}"
    );
    assert_eq!(r["local_caption"], "Alice (you)");
    assert_eq!(r["muted"]["bob_track_enabled"], false, "{r}");
    assert_eq!(r["muted"]["bob_button"], "true", "{r}");
    assert_eq!(
        r["muted"]["alice_list"],
        json!(["Alice (you)", "Bob muted"]),
        "{r}"
    );
    assert_eq!(r["unmuted_by_key"], true, "{r}");
    // A moderator's mute (admin API) turns Bob's microphone off in his page, which
    // refuses his own unmute until the moderator allows it.
    let m = &r["moderated"];
    assert_eq!(m["muted"], json!({"status": 200, "tracks": 1}), "{r}");
    assert_eq!(m["bob_button"], "true", "{r}");
    assert_eq!(m["bob_track_after_own_unmute"], false, "{r}");
    assert_eq!(m["unmuted"], json!({"status": 200, "tracks": 1}), "{r}");
    assert_eq!(m["bob_track_after_allowed"], true, "{r}");
    assert_eq!(
        m["bob_notices"],
        json!([
            "A moderator muted your microphone.",
            "A moderator muted your microphone: the others would not hear you.",
            "A moderator allowed your microphone again."
        ]),
        "{r}"
    );
    assert_eq!(r["camera_off"]["bob_track_enabled"], false, "{r}");
    // Stats: counters filled and growing from one sample to a later one.
    let (first, later) = (&r["stats"]["first"], &r["stats"]["later"]);
    for k in ["audio-packets", "frames"] {
        assert!(num(&first[k]) > 0.0, "{k}: {r}");
        assert!(num(&later[k]) > num(&first[k]), "{k} refreshes: {r}");
    }
    assert!(num(&later["bitrate"]) > 0.0, "{r}");
    assert!(later["resolution"].as_str().unwrap().contains('×'), "{r}");
    for k in ["rtt", "loss", "jitter", "concealed"] {
        num(&later[k]);
    }
    assert!(num(&r["stats"]["you"]["audio-packets"]) > 0.0, "{r}");
    // Both links are loopback: the server scores them excellent, and says so on both
    // tiles and in the panel (with the score).
    assert_eq!(r["quality"]["remote"], "excellent", "{r}");
    assert_eq!(r["quality"]["local"], "excellent", "{r}");
    assert!(
        r["quality"]["title"]
            .as_str()
            .is_some_and(|t| t.starts_with("Connection: excellent (MOS 4.")),
        "{r}"
    );
    assert!(
        r["quality"]["panel"]
            .as_str()
            .is_some_and(|t| t.starts_with("excellent (4.")),
        "{r}"
    );
    // Screen share replaces the camera and back.
    assert!(
        r["screen"]["sender"]
            .as_str()
            .unwrap()
            .starts_with("screen"),
        "{r}"
    );
    assert_eq!(r["screen"]["button"], "true", "{r}");
    let [w, h] =
        [&r["screen"]["received"][0], &r["screen"]["received"][1]].map(|v| v.as_f64().unwrap());
    assert!((w / h - 16.0 / 9.0).abs() < 0.05, "{r}");
    assert!(
        r["screen"]["sender_after_stop"]
            .as_str()
            .unwrap()
            .starts_with("fake"),
        "{r}"
    );
    // Grid: one size for all tiles, all inside the grid at 2 and 16, still readable at 25.
    for (k, n) in [("two", 2), ("sixteen", 16)] {
        let g = &r["grid"][k];
        assert_eq!(g["tiles"], n, "{r}");
        assert_eq!(g["widths"].as_array().unwrap().len(), 1, "{r}");
        assert_eq!(g["inside"], true, "{r}");
    }
    assert_eq!(r["grid"]["two"]["cols"], 2, "{r}");
    let g25 = &r["grid"]["twenty_five"];
    assert_eq!(g25["tiles"], 25, "{r}");
    assert!(g25["widths"][0].as_f64().unwrap() >= 170.0, "{r}");
    assert_eq!(r["after_leave"]["alice_tiles"], json!(["local"]), "{r}");
}

#[test]
fn one_to_one_call_rings_declines_accepts_and_hangs_up() {
    if !browser_available() {
        return;
    }
    let mut server = Server::start_with(SFU, &["--dev"], &[]);
    let r = run(&mut server, "direct.mjs");
    assert_eq!(r["offline"], "nobody is not online.", "{r}");
    assert_eq!(r["incoming"], "Alice is calling you", "{r}");
    assert_eq!(r["caller_sees"], "Ringing bob…", "{r}");
    assert_eq!(
        r["states_ringing"],
        json!({"alice": "ringing", "bob": "incoming"})
    );
    assert_eq!(r["declined"], "bob declined the call.", "{r}");
    assert_eq!(
        r["states_declined"],
        json!({"alice": "idle", "bob": "idle"})
    );
    assert_eq!(r["focus_on_ring"], "call-accept", "{r}");
    let rooms = &r["in_call"]["rooms"];
    assert_eq!(rooms[0], rooms[1], "{r}");
    assert!(rooms[0].as_str().unwrap().starts_with("call-"), "{r}");
    assert_eq!(r["in_call"]["alice_sees"], "Bob", "{r}");
    assert_eq!(r["in_call"]["bob_sees"], "Alice", "{r}");
    assert_eq!(
        r["in_call"]["states"],
        json!({"alice": "in-call", "bob": "in-call"})
    );
    assert_eq!(r["after_hangup"]["alice_notice"], "bob hung up.", "{r}");
    assert_eq!(
        r["after_hangup"]["states"],
        json!({"alice": "idle", "bob": "idle"})
    );
    assert_eq!(r["call_back"], "Bob is calling you", "{r}");
}

#[test]
fn call_resumes_after_a_drop_and_rejoins_after_server_restarts() {
    if !browser_available() {
        return;
    }
    let mut server = Server::start_with(SFU, &["--dev"], &[]);
    let r = run(&mut server, "reconnect.mjs");
    for who in ["alice", "bob"] {
        let events: Vec<&str> = r["events"][who]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e.as_str())
            .collect();
        let lost = events
            .iter()
            .position(|e| e.starts_with("Connection lost"))
            .unwrap_or_else(|| panic!("{who} was not told of the drop: {r}"));
        let back = events
            .iter()
            .position(|e| *e == "Rejoined the room.")
            .unwrap_or_else(|| panic!("{who} was not told of the rejoin: {r}"));
        assert!(lost < back, "{r}");
        // The graceful restart: the server said it was going away.
        let restarting = events
            .iter()
            .position(|e| e.starts_with("The server is restarting"))
            .unwrap_or_else(|| panic!("{who} was not told of the restart: {r}"));
        let back_again = events
            .iter()
            .rposition(|e| *e == "Rejoined the room.")
            .unwrap();
        assert!(back < restarting && restarting < back_again, "{r}");
        assert_eq!(r["status"][who], "connected", "{r}");
        assert_eq!(r["tiles"][who], 2, "{r}");
        assert_eq!(
            r["chat"][who],
            json!([
                "before the drop",
                "typed while offline",
                "before the restart",
                "after the restart",
                "after the second restart"
            ]),
            "{r}"
        );
    }
    // The network drop: the session resumed and the page said so.
    assert_eq!(r["drop"]["same_session"], true, "{r}");
    assert_eq!(
        r["drop"]["events"],
        json!(["Connection lost. Reconnecting…", "Reconnected."]),
        "{r}"
    );
    assert_eq!(
        r["drop"]["bob_chat"],
        json!(["before the drop", "typed while offline"]),
        "{r}"
    );
    assert_eq!(r["new_session"], true, "{r}");
    assert_eq!(r["video_after_restart"], true, "{r}");
}

#[test]
fn errors_are_shown_in_plain_words() {
    if !browser_available() {
        return;
    }
    let mut server = Server::start_with(
        &format!("{SFU}max_publishers_per_room = 1\n[rooms]\nmax_participants = 2\n"),
        &["--dev"],
        &[],
    );
    let r = run(&mut server, "errors.mjs");
    assert!(r["room_full"].as_str().unwrap().contains("is full"), "{r}");
    assert_eq!(r["others_unaffected"], 2, "{r}");
    // The camera and microphone of the member who offered second, refused and later
    // admitted.
    let notices = |k: &str| r[k].as_array().map_or(0, |a| a.len());
    assert_eq!((notices("refused"), notices("admitted")), (2, 2), "{r}");
    assert!(
        r["garbled_token"]
            .as_str()
            .unwrap()
            .contains("not a valid token"),
        "{r}"
    );
    assert!(
        r["expired_token"].as_str().unwrap().contains("expired"),
        "{r}"
    );
    assert!(
        r["forged_token"].as_str().unwrap().contains("refused"),
        "{r}"
    );
    assert!(r["denied"].as_str().unwrap().contains("denied"), "{r}");
    assert_eq!(r["denied_joined"]["local_video_off"], true, "{r}");
    assert_eq!(r["denied_joined"]["mic_disabled"], true, "{r}");
}
