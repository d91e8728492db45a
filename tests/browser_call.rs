//! Real calls in the web demo through huddle's SFU, in headless Chromium with fake camera
//! and microphone: two and three participants see and hear each other, cameras go out in
//! simulcast layers the SFU chooses from, a participant who leaves disappears from the
//! others' grids; and the same with relay-only ICE through huddle's TURN server, with a
//! publisher cap the pages' send budgets come down to; the same over the SFU's ICE-TCP
//! candidate alone; a camera held back by "last N"; a single-stream camera that follows
//! its one subscriber's room; redundant audio (RED) both ways.
//!
//! Needs node, chromium and `npm ci` in tests/browser; CI provides them and sets
//! HUDDLE_REQUIRE_BROWSER=1 so that their absence fails instead of skipping.

mod common;
use common::Server;
use common::{browser_available, metric_sum, run_browser_script};

/// This file's browser scenarios run one at a time: two at once (the test harness runs
/// two tests at a time on a 2-core machine) starved Chromium until a page's estimate, or
/// the SFU's toward it, held a camera to its lowest layer for 20 s, failing the layer
/// checks (seen with two three-page calls, then with a call beside the "last N" and
/// single-stream scenarios).
static BROWSERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Waits for the browsers; a failed scenario poisons the lock, and the next runs anyway.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    BROWSERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn call(server: &Server, mode: &str, publisher_cap: Option<u64>) -> serde_json::Value {
    let _browsers = one_at_a_time();
    let base = format!("http://{}", server.addr);
    let cap = publisher_cap.map(|c| c.to_string());
    let mut args = vec![base.as_str(), mode];
    args.extend(cap.as_deref());
    let report = run_browser_script("call.mjs", &args, None);
    // Timings and rates for whoever reads the log (`--nocapture`).
    eprintln!("call.mjs {mode}: {report}");
    report
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
    let server = Server::start_with("[sfu]\nlisten = \"127.0.0.1:0\"\n", &["--dev"], &[]);
    let report = call(&server, "direct", None);
    assert_call(&report);
    assert_eq!(report["two"]["alice"]["candidate"], "host", "{report}");
    // The demo publishes its camera in simulcast: the fake 640x480 camera is big enough
    // for Chromium to send at least two of the three layers, and the SFU chose a layer
    // for each receiver (a first choice counts as a switch).
    let layers = report["two"]["alice"]["layers_sent"].as_array().unwrap();
    assert!(layers.len() >= 2, "simulcast layers sent: {report}");
    let switches = metric_sum(&server.metrics(), "huddle_sfu_layer_switches_total");
    assert!(switches >= 2.0, "no simulcast layer chosen: {switches}");
    // Bob's page asked for layers by tile size (media_subscribe max_width, 1.5 times the
    // tile): more than 320 px wide for its medium tiles, at most 320 in a small window,
    // more again after.
    let bob = &report["two"]["bob"];
    let w = |k: &str| bob[k].as_u64().unwrap_or(0);
    assert!(w("width_small") > 0 && w("width_small") <= 320, "{report}");
    assert!(
        w("width_before") > 320 && w("width_after") > 320,
        "{report}"
    );
}

/// Clients whose network blocks UDP to the SFU and that have no TURN server: each page
/// is left only the SFU's ICE-TCP candidate (RFC 6544; the script drops the UDP ones
/// from what the pages receive), connects to it from its TCP active candidate, and the
/// call (audio and video both ways, a third participant, a leave) runs over TCP.
#[test]
fn browsers_call_the_sfu_over_ice_tcp() {
    if !browser_available() {
        return;
    }
    let server = Server::start_with("[sfu]\nlisten = \"127.0.0.1:0\"\n", &["--dev"], &[]);
    let report = call(&server, "tcp", None);
    assert_call(&report);
    // (The pages' own end of the pair is peer-reflexive: an active TCP candidate has no
    // port until it connects, so the browser learns its address from the SFU's answer
    // to its check.)
    for who in ["alice", "bob"] {
        assert_eq!(report["two"][who]["protocol"], "tcp", "{report}");
    }
    // Alice's and Bob's connections were open after Carol left (hers was closed), and
    // none is once the browser has closed its pages.
    assert_eq!(report["tcp_open"], 2, "{report}");
    let mut open = f64::NAN;
    for _ in 0..50 {
        open = metric_sum(&server.metrics(), "huddle_sfu_tcp_connections");
        if open == 0.0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(open, 0.0, "{report}");
}

/// A call whose only ICE server is huddle's TURN on `port` over `transport`, with relay
/// ports from `min_port`: both pages must end up on relay candidates. TURN runs on its
/// own ports so that this can run beside other tests.
///
/// The SFU caps publishers below Chromium's 300 kbit/s start: each page's send budget
/// (availableOutgoingBitrate) only gets down to it if the SFU's REMB is obeyed.
fn relay_only_call(port: u16, transport: &str, min_port: u16) {
    let cap = 200_000;
    let server = Server::start_with(
        &format!(
            "[sfu]\nlisten = \"127.0.0.1:0\"\nmax_publisher_bitrate = {cap}\n\
             [turn]\nlisten_udp = [\"127.0.0.1:{port}\"]\nlisten_tcp = [\"127.0.0.1:{port}\"]\n\
             min_port = {min_port}\nmax_port = {}\n\
             [ice]\nturn_urls = [\"turn:127.0.0.1:{port}?transport={transport}\"]\n\
             turn_secret = \"relay-call-secret\"\n",
            min_port + 999
        ),
        &["--dev"],
        &[],
    );
    let report = call(&server, "relay", Some(cap));
    assert_call(&report);
    assert_eq!(report["two"]["alice"]["candidate"], "relay", "{report}");
    assert_eq!(report["two"]["bob"]["candidate"], "relay", "{report}");
    for who in ["alice", "bob"] {
        let budget = report["send_budget"][who].as_u64();
        assert!(
            budget.is_some_and(|b| b > 0 && b <= cap),
            "{who}'s send budget is not capped at {cap}: {report}"
        );
    }
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

/// Redundant audio (`sfu.audio_red`, RFC 2198): the SFU offers RED before Opus,
/// Chromium accepts it and sends its microphone wrapped in RED, and the SFU sends it
/// RED too. Chromium's stats name Opus either way (the primary codec), so the evidence
/// is the payload: about twice the bytes per audio packet, each way, against the same
/// call with `audio_red = false`.
#[test]
fn chromium_sends_and_receives_redundant_audio() {
    if !browser_available() {
        return;
    }
    let payload = |red: bool| {
        let server = Server::start_with(
            &format!("[sfu]\nlisten = \"127.0.0.1:0\"\naudio_red = {red}\n"),
            &["--dev"],
            &[],
        );
        let base = format!("http://{}", server.addr);
        let _browsers = one_at_a_time();
        let report = run_browser_script("red.mjs", &[&base], None);
        eprintln!("red.mjs (audio_red = {red}): {report}");
        for way in ["in", "out"] {
            assert_eq!(report[way]["codec"], "audio/opus", "{report}");
            assert!(
                report[way]["packets"].as_u64().unwrap_or(0) >= 50,
                "{report}"
            );
        }
        let bytes = |way: &str| report[way]["bytes_per_packet"].as_f64().unwrap_or(0.0);
        (bytes("in"), bytes("out"))
    };
    let (red_in, red_out) = payload(true);
    let (plain_in, plain_out) = payload(false);
    assert!(
        red_out > 1.6 * plain_out && red_in > 1.6 * plain_in,
        "bytes per audio packet with RED in {red_in:.0} / out {red_out:.0}, \
         without in {plain_in:.0} / out {plain_out:.0}"
    );
}

/// `sfu.last_n = 1`: a third participant sees one camera; the other tile shows the
/// avatar, titled as held back, because the SFU said so (media_track_paused, last_n).
/// Pinning it (the tile's Pin button) brings that camera into view instead.
#[test]
fn a_camera_held_back_by_last_n_shows_as_paused() {
    if !browser_available() {
        return;
    }
    let server = Server::start_with(
        "[sfu]\nlisten = \"127.0.0.1:0\"\nlast_n = 1\n",
        &["--dev"],
        &[],
    );
    let base = format!("http://{}", server.addr);
    let _browsers = one_at_a_time();
    let report = run_browser_script("lastn.mjs", &[&base], None);
    let tiles = report["tiles"].as_array().expect("tiles");
    assert_eq!(tiles.len(), 2, "{report}");
    let held: Vec<_> = tiles.iter().filter(|t| t["paused"] == true).collect();
    assert_eq!(held.len(), 1, "one camera held back: {report}");
    assert_eq!(
        held[0]["title"], "Video paused: not among the latest speakers",
        "{report}"
    );
    assert!(
        tiles
            .iter()
            .any(|t| t["paused"] == false && t["width"].as_u64().unwrap_or(0) > 0),
        "the other camera plays: {report}"
    );
    // Pinned, the held-back camera plays and the other is held, for 2 s running.
    let pinned = &report["pinned"];
    assert!(
        pinned["settled_ms"].as_u64().unwrap_or(0) >= 2000,
        "pinning did not bring the camera into view: {report}"
    );
}

/// A one-to-one call where Alice's browser sends its camera as one stream (no
/// simulcast) and Bob's budget is capped (`sfu.max_subscriber_bitrate`): the SFU tells
/// Alice by REMB what Bob has room for (docs/sfu.md, "A one-to-one call's publisher is
/// told its subscriber's room"), Chromium's send budget comes down to it, and her camera
/// plays at Bob's.
#[test]
fn a_single_stream_browser_follows_its_one_subscriber_s_room() {
    if !browser_available() {
        return;
    }
    // Low enough that Chromium's camera soon sends more than Bob's room (it took about
    // 10 s here: the SFU speaks up only then).
    const CAP: u64 = 250_000;
    let server = Server::start_with(
        &format!("[sfu]\nlisten = \"127.0.0.1:0\"\nmax_subscriber_bitrate = {CAP}\n"),
        &["--dev"],
        &[],
    );
    let base = format!("http://{}", server.addr);
    let _browsers = one_at_a_time();
    let report = run_browser_script("single.mjs", &[&base, &CAP.to_string()], None);
    eprintln!("single.mjs: {report}");
    // One stream, no rids.
    assert_eq!(report["alice"]["streams"], 1, "{report}");
    assert_eq!(report["alice"]["rids"], serde_json::json!([]), "{report}");
    // Bob's room: the cap less the audio he receives, plus Alice's audio.
    let budget = report["alice"]["budget_bps"].as_u64().unwrap_or(u64::MAX);
    assert!(budget <= CAP, "Alice's send budget {budget}: {report}");
    let sent = report["alice_video_bps"].as_u64().unwrap();
    assert!(sent <= CAP, "Alice's camera sends {sent} b/s: {report}");
    assert!(
        report["bob_fps"].as_u64().unwrap() >= 5,
        "Bob decodes Alice's camera: {report}"
    );
}
