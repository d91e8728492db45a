//! `huddle bench sfu-load` end to end at a tiny size: the real binary starts a real server
//! with its SFU, synthetic WebRTC participants join through the signalling protocol, and
//! every participant must receive every other at the rate they send.

mod common;

/// Runs `huddle bench sfu-load ARGS` at one room for 3 s and returns its JSON report and
/// stdout.
fn sfu_load(args: &[&str]) -> (serde_json::Value, String) {
    let mut all = vec!["sfu-load", "--max-rooms", "1", "--step-seconds", "3"];
    // The latency limit is loose: CI machines are shared, and this test checks delivery,
    // not speed.
    all.extend(["--max-p99-ms", "2000"]);
    all.extend_from_slice(args);
    common::run_bench(&all)
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Checks shared by both modes on the single step of a one-room run whose first
/// `publishers` participants publish.
fn check_step(
    r: &serde_json::Value,
    participants: u64,
    publishers: u64,
    kinds: u64,
) -> &serde_json::Value {
    assert_eq!(r["scenario"], "sfu-load");
    assert_eq!(r["participants_per_room"], participants);
    assert_eq!(r["publishers_per_room"], publishers);
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{r}");
    let s = &steps[0];
    assert_eq!(s["rooms"], 1);
    assert_eq!(s["participants"], participants);
    // Every participant received every other publisher's every track in the window: no
    // silent zero. Each of the publishers reaches the participants - 1 others.
    let streams = publishers * (participants - 1) * kinds;
    assert_eq!(s["streams_expected"], streams);
    assert_eq!(s["streams_active"], streams);
    assert!(f(&s["loss_percent"]) < 1.0, "{s}");
    assert!(
        s["frames_received"].as_u64().unwrap() > 0
            && s["frames_received"].as_u64() <= s["frames_expected"].as_u64()
    );
    // Audio: publishers × (participants − 1) × 50 packets per second reach subscribers
    // (the window's edges may cut a frame per stream, and a busy machine may delay a
    // sender).
    let expected = (publishers * (participants - 1) * 50) as f64;
    assert_eq!(f(&s["audio_packets_per_second_expected"]), expected);
    let audio = f(&s["audio_packets_per_second"]);
    assert!(
        (audio - expected).abs() <= expected * 0.1,
        "{audio} audio packets/s against {expected}"
    );
    assert!(f(&s["forwarded_packets_per_second"]) >= audio);
    // The server's own counter agrees that it sent at least what the clients received.
    assert!(f(&s["server_packets_out_per_second"]) >= audio * 0.9, "{s}");
    // Measurements of the spawned server and of the clients are present.
    assert!(f(&s["sfu_cpu_cores"]) >= 0.0);
    assert!(f(&s["client_cpu_cores"]) >= 0.0);
    assert!(s["rss_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        s["latency"]["count"], s["frames_received"],
        "one latency sample per frame"
    );
    assert!(f(&s["latency"]["p50_ms"]) > 0.0);
    assert!(f(&s["latency"]["p99_ms"]) >= f(&s["latency"]["p50_ms"]));
    // A datagram is read after the kernel queued it: every frame's read latency is at
    // least its socket latency, so every percentile is too.
    assert_eq!(s["read_latency"]["count"], s["latency"]["count"]);
    for p in ["p50_ms", "p90_ms", "p99_ms", "max_ms"] {
        assert!(f(&s["read_latency"][p]) >= f(&s["latency"][p]), "{p}: {s}");
    }
    assert_eq!(s["good"], true, "{s}");
    assert_eq!(r["max_p99_ms"], 2000.0);
    assert_eq!(r["capacity"]["rooms"], 1);
    assert_eq!(r["stop_reason"], "reached the maximum number of rooms");
    s
}

#[test]
fn sfu_load_audio_room_of_three_forwards_everything() {
    let (r, stdout) = sfu_load(&["--participants", "3"]);
    assert_eq!(r["mode"], "audio");
    assert_eq!(r["transport"], "udp");
    let s = check_step(&r, 3, 3, 1);
    assert_eq!(s["server_gauges"]["tcp_connections"], 0.0, "{s}");
    assert!(
        stdout.contains("capacity: 1 rooms, 3 participants"),
        "{stdout}"
    );
}

#[test]
fn sfu_load_video_pair_forwards_audio_and_video() {
    let (r, _) = sfu_load(&["--participants", "2", "--video", "--video-packets", "4"]);
    assert_eq!(r["mode"], "video");
    assert_eq!(r["video_fps"], 30);
    let s = check_step(&r, 2, 2, 2);
    // Video adds 2 × 30 frames/s of about 4 packets each on top of 2 × 50 audio packets.
    let video = f(&s["forwarded_packets_per_second"]) - f(&s["audio_packets_per_second"]);
    assert!(video > 2.0 * 30.0 * 3.0, "{video} video packets/s");
}

#[test]
fn sfu_load_audience_receives_the_publishers() {
    // One publisher and three listeners: the listeners each receive the publisher, the
    // publisher receives nobody.
    let (r, stdout) = sfu_load(&["--participants", "4", "--publishers", "1"]);
    check_step(&r, 4, 1, 1);
    assert!(stdout.contains("4 per room, 1 publishing"), "{stdout}");
}

#[test]
fn sfu_load_over_ice_tcp_forwards_everything() {
    let (r, stdout) = sfu_load(&["--participants", "3", "--tcp"]);
    assert_eq!(r["transport"], "tcp");
    let s = check_step(&r, 3, 3, 1);
    // The participants have no UDP socket: each is on an ICE-TCP connection of the SFU's.
    assert_eq!(s["server_gauges"]["tcp_connections"], 3.0, "{s}");
    assert!(stdout.contains("audio over tcp, 3 per room"), "{stdout}");
}
