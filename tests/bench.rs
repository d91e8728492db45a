//! `huddle bench signal-load` end to end at a small scale: the real binary starts a real
//! server, and every presence event the protocol promises must arrive.

use std::process::Command;

#[test]
fn signal_load_delivers_all_presence_and_reports_memory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.json");
    let status = Command::new(env!("CARGO_BIN_EXE_huddle"))
        .args([
            "bench",
            "signal-load",
            "--connections",
            "60",
            "--room-size",
            "7",
            "--concurrency",
            "20",
            "--out",
        ])
        .arg(&out)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let reports: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let r = &reports[0];
    assert_eq!(r["connections"], 60);
    assert_eq!(r["rooms"], 9);
    assert_eq!(r["join"]["count"], 60);
    // 8 rooms of 7 (21 joins each) and one of 4 (6).
    assert_eq!(r["presence_events_expected"], 8 * 21 + 6);
    assert_eq!(r["presence_events_received"], r["presence_events_expected"]);
    assert!(
        r["rss_loaded_bytes"].as_u64().unwrap() > 0,
        "memory of the spawned server is read"
    );
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(stdout.contains("RSS/idle conn"), "{stdout}");
}
