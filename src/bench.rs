//! `huddle bench` wiring: starts servers of this same binary and runs the scenarios.

use std::time::Duration;

use anyhow::Context;
use huddle_bench::server::Target;
use huddle_bench::signal_load::{self, Options};

use crate::cli::{
    CallArgs, ChatLoadArgs, Direction, SfuLoadArgs, SignalLoadArgs, SweepArgs, TurnLoadArgs,
};

/// Reads `--compare`'s old report of `scenario` before the run spends any time.
fn old_report(
    path: Option<&std::path::Path>,
    scenario: &str,
) -> anyhow::Result<Option<serde_json::Value>> {
    Ok(path
        .map(|p| huddle_bench::compare::load(p, scenario))
        .transpose()?)
}

/// Prints the new report against the old one, metric by metric.
fn print_comparison(
    old: Option<serde_json::Value>,
    path: Option<&std::path::Path>,
    new: &impl serde::Serialize,
) -> anyhow::Result<()> {
    if let (Some(old), Some(path)) = (old, path) {
        let cmp = huddle_bench::compare::compare(&old, &serde_json::to_value(new)?)?;
        println!("compared with {}:", path.display());
        print!("{}", huddle_bench::compare::render(&cmp));
    }
    Ok(())
}

pub async fn chat_load(args: ChatLoadArgs) -> anyhow::Result<()> {
    let old = old_report(args.compare.as_deref(), "chat-load")?;
    let exe = std::env::current_exe().context("locating the huddle binary")?;
    let mut env = vec![
        // The benchmark measures the store and delivery, not the abuse limits.
        ("HUDDLE_SIGNAL__MESSAGES_PER_SECOND", "1000000".to_string()),
        ("HUDDLE_SIGNAL__MESSAGE_BURST", "1000000".to_string()),
        ("HUDDLE_CHAT__MESSAGES_PER_SECOND", "1000000".to_string()),
        ("HUDDLE_CHAT__MESSAGE_BURST", "1000000".to_string()),
        ("HUDDLE_ROOMS__MAX_PARTICIPANTS", "10000".to_string()),
    ];
    let store = match &args.store_url {
        Some(url) => {
            env.push(("HUDDLE_STORE__URL", url.clone()));
            huddle_signal::store::Backend::of_url(url)
                .map(|b| format!("{b:?}").to_lowercase())
                .unwrap_or_else(|| "other".into())
        }
        None => "sqlite".into(),
    };
    let target = Target::spawn(&exe, &env)?;
    let mut reports = Vec::new();
    for &members in &args.members {
        anyhow::ensure!(
            members >= 2,
            "--members: a conversation has at least 2 members"
        );
        let opts = huddle_bench::chat_load::Options {
            members,
            messages: args.messages,
            window: args.window.max(1),
            rate: args.rate,
            latency_duration: Duration::from_secs(args.latency_seconds.max(1)),
            store: store.clone(),
        };
        let report =
            huddle_bench::chat_load::run(&target, &opts, |p| eprintln!("chat-load: {p}")).await?;
        eprint!(
            "{}",
            huddle_bench::chat_load::summary(std::slice::from_ref(&report))
        );
        reports.push(report);
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&reports)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    print!("{}", huddle_bench::chat_load::summary(&reports));
    println!("report written to {}", args.out.display());
    print_comparison(old, args.compare.as_deref(), &reports)
}

pub async fn signal_load(args: SignalLoadArgs) -> anyhow::Result<()> {
    let old = old_report(args.compare.as_deref(), "signal-load")?;
    let exe = std::env::current_exe().context("locating the huddle binary")?;
    let mut reports = Vec::new();
    for &n in &args.connections {
        let target = match &args.url {
            Some(url) => Target::external(url.clone(), args.api_secret.clone().unwrap_or_default()),
            None => Target::spawn(
                &exe,
                &[
                    (
                        "HUDDLE_SIGNAL__MAX_CONNECTIONS_PER_IP",
                        (n + 1000).to_string(),
                    ),
                    (
                        "HUDDLE_ROOMS__MAX_PARTICIPANTS",
                        args.room_size.max(2).to_string(),
                    ),
                ],
            )?,
        };
        eprintln!(
            "signal-load: {n} connections, rooms of {} ...",
            args.room_size
        );
        let opts = Options {
            connections: n,
            room_size: args.room_size,
            concurrency: args.concurrency,
            settle: Duration::from_secs(2),
        };
        let report = signal_load::run(&target, &opts).await?;
        eprint!("{}", signal_load::summary(std::slice::from_ref(&report)));
        reports.push(report);
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&reports)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    print!("{}", signal_load::summary(&reports));
    println!("report written to {}", args.out.display());
    print_comparison(old, args.compare.as_deref(), &reports)
}

pub async fn sfu_load(args: SfuLoadArgs) -> anyhow::Result<()> {
    let old = old_report(args.compare.as_deref(), "sfu-load")?;
    anyhow::ensure!(
        args.participants >= 2,
        "--participants: at least 2 per room"
    );
    let publishers = args.publishers.unwrap_or(args.participants);
    anyhow::ensure!(
        (1..=args.participants).contains(&publishers),
        "--publishers: 1 to --participants"
    );
    let exe = std::env::current_exe().context("locating the huddle binary")?;
    let peers = args.max_rooms.saturating_mul(args.participants);
    let target = match &args.url {
        Some(url) => Target::external(url.clone(), args.api_secret.clone().unwrap_or_default()),
        None => Target::spawn_with_sfu(
            &exe,
            &[
                // The benchmark measures forwarding, not the abuse limits.
                (
                    "HUDDLE_SIGNAL__MAX_CONNECTIONS_PER_IP",
                    (peers + 100).to_string(),
                ),
                (
                    "HUDDLE_ROOMS__MAX_PARTICIPANTS",
                    args.participants.to_string(),
                ),
                (
                    "HUDDLE_SFU__MAX_PARTICIPANTS_PER_ROOM",
                    args.participants.to_string(),
                ),
                ("HUDDLE_SFU__MAX_ROOMS", (args.max_rooms + 1).to_string()),
            ],
        )?,
    };
    let video = args.video.then(|| {
        // str0m packetizes H.264 at about 1100 payload bytes per RTP packet.
        let frame_bytes = args.video_packets.max(1) * 1100 - 100;
        huddle_bench::sfu_load::VideoSpec {
            fps: 30,
            frame_bytes,
            keyframe_bytes: frame_bytes * 4,
            keyframe_every: 30 * args.keyframe_seconds.max(1),
        }
    });
    let opts = huddle_bench::sfu_load::Options {
        rooms_per_step: args.rooms.max(1),
        participants: args.participants,
        publishers,
        max_rooms: args.max_rooms.max(1),
        step: Duration::from_secs(args.step_seconds.max(1)),
        settle: Duration::from_secs(2),
        setup_timeout: Duration::from_secs(30),
        setup_concurrency: 16,
        media: huddle_bench::sfu_load::MediaSpec {
            audio_bytes: args.audio_bytes,
            video,
            red: args.red,
        },
        client_threads: args.client_threads.max(1),
        max_loss_percent: args.max_loss_percent,
        max_p99_ms: args.max_p99_ms,
        tcp: args.tcp,
    };
    let report =
        huddle_bench::sfu_load::run(&target, &opts, |p| eprintln!("sfu-load: {p}")).await?;
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    print!("{}", huddle_bench::sfu_load::summary(&report));
    println!("report written to {}", args.out.display());
    print_comparison(old, args.compare.as_deref(), &report)
}

pub fn turn_load(args: TurnLoadArgs) -> anyhow::Result<()> {
    let old = old_report(args.compare.as_deref(), "turn-load")?;
    let exe = std::env::current_exe().context("locating the huddle binary")?;
    let opts = huddle_bench::turn_load::Options {
        clients: args.clients,
        messages: args.messages,
        length: args.length,
        interval_ms: args.interval_ms,
        threads: args.threads,
        idle_allocations: args.idle_allocations,
    };
    let report = huddle_bench::turn_load::run(&exe, &opts, |p| eprintln!("turn-load: {p}"))?;
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    print!("{}", huddle_bench::turn_load::summary(&report));
    println!("report written to {}", args.out.display());
    print_comparison(old, args.compare.as_deref(), &report)
}

pub async fn call(args: CallArgs) -> anyhow::Result<()> {
    use huddle_bench::call::{self, CallConfig, CallTarget, Impairments, VideoSetup};
    anyhow::ensure!(
        args.participants >= 2,
        "--participants: a call has at least 2"
    );
    anyhow::ensure!(
        (0.0..1.0).contains(&args.loss),
        "--loss is a fraction in [0, 1)"
    );
    anyhow::ensure!(
        args.duration > 0.0 && args.duration <= 3600.0,
        "--duration: seconds in (0, 3600]"
    );
    // A wrong --compare file fails before a call is spent on it.
    let old = old_report(args.compare.as_deref(), "call")?;
    let (target, sfu_addr) = match (&args.url, &args.api_secret, args.sfu_addr) {
        (Some(url), Some(secret), Some(sfu)) => {
            (Target::external(url.clone(), secret.clone()), sfu)
        }
        _ => {
            let exe = std::env::current_exe().context("locating the huddle binary")?;
            let target = Target::spawn_with_sfu(&exe, &[])?;
            let sfu = target
                .sfu_addr
                .context("the server did not report its SFU address")?;
            (target, sfu)
        }
    };
    let imp = Impairments {
        loss: args.loss,
        burst: args.burst,
        delay_ms: args.delay_ms,
        jitter_ms: args.jitter_ms,
        reorder: args.reorder,
        bandwidth: args.bandwidth_kbps * 1000 / 8,
    };
    let (up, down) = match args.direction {
        Direction::Down => (Impairments::default(), imp),
        Direction::Up => (imp, Impairments::default()),
        Direction::Both => (imp, imp),
    };
    let speech = match &args.wav {
        Some(path) => Some(std::sync::Arc::new(huddle_bench::call::wav::read_speech(
            path,
        )?)),
        None => None,
    };
    let cfg = CallConfig {
        participants: args.participants,
        duration: Duration::from_secs_f64(args.duration),
        up,
        down,
        video: args.video.then_some(VideoSetup {
            width: args.width,
            height: args.height,
            fps: args.fps.clamp(1, 60),
            bitrate_bps: args.video_kbps.saturating_mul(1000),
        }),
        speech,
        nack: !args.no_nack,
        fec: !args.no_fec,
        red: !args.no_red,
        seed: args.seed,
        audio_bitrate: args.audio_kbps.clamp(6, 510) * 1000,
        progress: true,
        ..CallConfig::default()
    };
    println!(
        "call: {} participants, {:.0} s, impairments {:?} ({:?})",
        cfg.participants, args.duration, imp, args.direction
    );
    let report = call::run(
        &CallTarget {
            server: &target,
            sfu_addr,
        },
        &cfg,
    )
    .await?;
    call::print_summary(&report);
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("report written to {}", args.out.display());
    print_comparison(old, args.compare.as_deref(), &report)?;
    Ok(())
}

pub async fn sweep(args: SweepArgs) -> anyhow::Result<()> {
    use huddle_bench::call::{CallConfig, CallTarget, Impairments, VideoSetup, plot, sweep};
    anyhow::ensure!(
        args.participants >= 2,
        "--participants: a call has at least 2"
    );
    anyhow::ensure!(
        args.duration > 0.0 && args.duration <= 600.0,
        "--duration: seconds per point in (0, 600]"
    );
    let (impair_up, impair_down) = match args.direction {
        Direction::Down => (false, true),
        Direction::Up => (true, false),
        Direction::Both => (true, true),
    };
    let cfg = sweep::SweepConfig {
        call: CallConfig {
            participants: args.participants,
            duration: Duration::from_secs_f64(args.duration),
            video: args.video.then_some(VideoSetup {
                width: 320,
                height: 240,
                fps: 15,
                bitrate_bps: 300_000,
            }),
            nack: !args.no_nack,
            fec: !args.no_fec,
            red: !args.no_red,
            seed: args.seed,
            audio_bitrate: args.audio_kbps.clamp(6, 510) * 1000,
            ..CallConfig::default()
        },
        template: Impairments {
            burst: args.burst,
            delay_ms: args.delay_ms,
            reorder: args.reorder,
            ..Impairments::default()
        },
        impair_up,
        impair_down,
        losses: args.loss.clone(),
        jitters_ms: args.jitter_ms.clone(),
    };
    let total = cfg.points()?.len();
    let old = old_report(args.compare.as_deref(), "sweep")?;
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    let exe = std::env::current_exe().context("locating the huddle binary")?;
    let target = Target::spawn_with_sfu(&exe, &[])?;
    let sfu_addr = target
        .sfu_addr
        .context("the server did not report its SFU address")?;
    println!(
        "sweep: {total} calls of {} participants, {} s each (plus about 3 s of setup)",
        args.participants, args.duration
    );
    let report = sweep::run(
        &CallTarget {
            server: &target,
            sfu_addr,
        },
        &cfg,
        |i, n, p| {
            println!("[{}/{n}] {}", i + 1, sweep::point_line(p));
        },
    )
    .await?;
    drop(target);
    print!("{}", sweep::table(&report));
    let json = args.out_dir.join("sweep.json");
    std::fs::write(&json, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    println!("report written to {}", json.display());
    for file in plot::draw_sweep(&report, &args.out_dir)? {
        println!("plot written to {}", file.display());
    }
    print_comparison(old, args.compare.as_deref(), &report)?;
    let failed = report.points.iter().filter(|p| p.summary.is_none()).count();
    anyhow::ensure!(
        failed == 0,
        "{failed} of {total} calls failed (see the report)"
    );
    Ok(())
}
