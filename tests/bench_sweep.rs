//! `huddle bench sweep` and `huddle bench call --compare`, run as a user would: the real
//! binary, real calls through a spawned server on loopback, and the files it writes.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn huddle(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_huddle"))
        .args(args)
        .output()
        .expect("huddle runs");
    eprintln!(
        "huddle {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn arg(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

fn num(v: &Value, what: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"))
}

#[test]
fn sweep_writes_every_point_and_three_labelled_plots() {
    let dir = tempfile::tempdir().unwrap();
    let out = huddle(&[
        "bench",
        "sweep",
        "--loss",
        "0,0.15",
        "--jitter-ms",
        "0",
        "--duration",
        "2",
        "--out-dir",
        arg(dir.path()),
    ]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("[1/2] loss 0% jitter 0 ms: MOS"),
        "{stdout}"
    );
    assert!(
        stdout.contains("[2/2] loss 15% jitter 0 ms: MOS"),
        "{stdout}"
    );
    assert!(stdout.contains("| loss % | jitter ms |"), "{stdout}");

    let report: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("sweep.json")).unwrap()).unwrap();
    assert_eq!(report["scenario"], "sweep");
    assert_eq!(report["fec"], true, "FEC is on by default");
    let points = report["points"].as_array().expect("points");
    assert_eq!(points.len(), 2);
    for p in points {
        let s = &p["summary"];
        assert!(p["error"].is_null(), "{p}");
        let mos = num(&s["mos_mean"], "mos_mean");
        assert!((1.0..=4.5).contains(&mos), "{p}");
        assert_eq!(s["pairs"], 2, "{p}");
        let p50 = num(&s["delay_p50_ms"], "delay_p50_ms");
        assert!(p50 > 0.0 && p50 < 1000.0, "{p}");
        // Loss after repair also counts packets that came too late to play, so it is not
        // bounded by the loss on the way; but it is a percentage.
        let after = num(&s["loss_after_repair_pct_mean"], "loss after");
        assert!((0.0..=100.0).contains(&after), "{p}");
    }
    let (clean, lossy) = (&points[0], &points[1]);
    assert_eq!(
        (num(&clean["loss"], "loss"), num(&lossy["loss"], "loss")),
        (0.0, 0.15)
    );
    assert_eq!(
        num(&clean["summary"]["loss_before_repair_pct_mean"], "loss"),
        0.0
    );
    assert_eq!(num(&clean["down"]["loss"], "down loss"), 0.0);
    assert!(
        num(&lossy["summary"]["loss_before_repair_pct_mean"], "loss") > 0.0,
        "{lossy}"
    );
    assert_eq!(num(&lossy["down"]["loss"], "down loss"), 0.15);
    assert_eq!(
        num(&lossy["up"]["loss"], "up loss"),
        0.0,
        "down is the default"
    );

    for (file, texts) in [
        (
            "mos-vs-loss.svg",
            [
                "packet loss on each impaired link (%)",
                "MOS, ITU-T G.107 E-model",
                "jitter 0 ms",
            ],
        ),
        (
            "delay-vs-jitter.svg",
            [
                "jitter added on each impaired link (ms",
                "mouth-to-ear delay (ms)",
                "p95, loss 15%",
            ],
        ),
        (
            "concealment-vs-loss.svg",
            [
                "packet loss on each impaired link (%)",
                "concealed samples (% of played audio)",
                "jitter 0 ms",
            ],
        ),
    ] {
        let svg = std::fs::read_to_string(dir.path().join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{file}"
        );
        for t in texts {
            assert!(svg.contains(t), "{file} lacks {t:?}");
        }
        assert!(svg.contains("<polyline"), "{file} has no curve");
    }
}

#[test]
fn call_compare_prints_ratios_against_an_earlier_report() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.json");
    let second = dir.path().join("second.json");
    let out = huddle(&["bench", "call", "--duration", "2", "--out", arg(&first)]);
    assert!(out.status.success());
    let out = huddle(&[
        "bench",
        "call",
        "--duration",
        "2",
        "--loss",
        "0.1",
        "--out",
        arg(&second),
        "--compare",
        arg(&first),
    ]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("compared with"), "{stdout}");
    assert!(stdout.contains("new/old"), "{stdout}");
    // The ratio column of the MOS row is new MOS / old MOS, from the two reports.
    let read = |p: &Path| -> Value { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
    let old_mos = num(&read(&first)["summary"]["mos_mean"], "old MOS");
    let new_mos = num(&read(&second)["summary"]["mos_mean"], "new MOS");
    let row: Vec<&str> = stdout
        .lines()
        .find(|l| l.starts_with("summary.mos_mean "))
        .unwrap_or_else(|| panic!("no MOS row: {stdout}"))
        .split_whitespace()
        .collect();
    let ratio: f64 = row[3]
        .parse()
        .unwrap_or_else(|_| panic!("ratio of {row:?}"));
    assert!(
        (ratio - new_mos / old_mos).abs() < 0.001,
        "{row:?} vs {new_mos}/{old_mos}"
    );
    // The loss setting differs between the runs and is said so.
    assert!(stdout.contains("down.loss: 0.0 -> 0.1"), "{stdout}");
}

#[test]
fn compare_refuses_a_report_of_another_scenario_before_running() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("sweep.json");
    std::fs::write(
        &sweep,
        r#"{"scenario":"sweep","points":[{"label":"loss 0% jitter 0 ms","summary":{"mos_mean":4.4}}]}"#,
    )
    .unwrap();
    let report = dir.path().join("call.json");
    let out = huddle(&[
        "bench",
        "call",
        "--duration",
        "2",
        "--out",
        arg(&report),
        "--compare",
        arg(&sweep),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is a `sweep` report, not a `call` report"),
        "{stderr}"
    );
    assert!(!report.exists(), "no call was run");

    let not_json = dir.path().join("notes.txt");
    std::fs::write(&not_json, "MOS went up").unwrap();
    let out_dir = dir.path().join("sweep-out");
    let out = huddle(&[
        "bench",
        "sweep",
        "--compare",
        arg(&not_json),
        "--out-dir",
        arg(&out_dir),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("notes.txt is not JSON"), "{stderr}");
    assert!(!out_dir.exists(), "no sweep was run");
}
