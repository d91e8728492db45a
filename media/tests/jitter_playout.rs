//! Adaptive jitter buffer on simulated network traces (seeded): delay adaptation, ordering
//! and restarts. L16 keeps the audio bit-exact, so output can be compared with what was sent.

mod common;

use std::time::{Duration, Instant};

use common::{PER_S, RATE, adaptive, play_speech};
use huddle_media::audio::jitter::InsertError;
use huddle_media::audio::l16::{L16Decoder, encode_l16};
use huddle_media::audio::netsim::{
    Jitter, PlayoutRun, TraceConfig, TracePacket, packetize_l16, simulate, speech_like,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn run(cfg: &TraceConfig) -> PlayoutRun {
    play_speech(&mut adaptive(L16Decoder::new(RATE, 1)), cfg)
}

#[test]
fn steady_stream_plays_without_concealment_near_minimum_delay() {
    let cfg = TraceConfig {
        packets: 3000,
        ..Default::default()
    };
    let r = run(&cfg);
    let s = r.last();
    assert_eq!(s.concealed_samples, 0);
    assert_eq!(s.packets_discarded, 0);
    // No jitter: the target is one packet, and after the start-up delay has been worked
    // off, samples wait little more than the 10 ms pull period.
    assert_eq!(s.target_delay_ms, 20.0);
    let settled = r.mean_delay_between(30 * PER_S, 60 * PER_S);
    assert!(settled < 25.0, "settled delay {settled:.1} ms");
    assert!(
        r.mean_delay_between(0, 2 * PER_S) > settled,
        "start-up delay was worked off"
    );
}

#[test]
fn uniform_jitter_raises_the_target_and_keeps_concealment_low() {
    let cfg = TraceConfig {
        packets: 3000,
        jitter: Jitter::Uniform { max_ms: 30.0 },
        seed: 7,
        ..Default::default()
    };
    let s = run(&cfg).last();
    // 95% of relative delays lie under 28.5 ms (10 ms buckets) plus one packet.
    assert!(
        (40.0..=60.0).contains(&s.target_delay_ms),
        "target {}",
        s.target_delay_ms
    );
    assert!(
        s.concealed_percent() < 0.5,
        "concealed {:.2}%",
        s.concealed_percent()
    );
}

#[test]
fn heavy_tailed_jitter_keeps_late_loss_near_the_quantile() {
    let cfg = TraceConfig {
        packets: 3000,
        jitter: Jitter::Pareto {
            scale_ms: 10.0,
            shape: 2.0,
        },
        seed: 3,
        ..Default::default()
    };
    let s = run(&cfg).last();
    assert!(s.target_delay_ms >= 30.0, "target {}", s.target_delay_ms);
    // The 95% quantile leaves about 5% of packets late.
    let late = s.late_packets as f64 / cfg.packets as f64;
    assert!(late < 0.06, "late {:.3}", late);
    assert!(
        s.concealed_percent() < 6.0,
        "concealed {:.2}%",
        s.concealed_percent()
    );
}

#[test]
fn gaussian_jitter_and_ten_ms_packets_play_smoothly() {
    for (packet_ms, seed) in [(20, 12), (10, 13)] {
        let cfg = TraceConfig {
            packets: 60_000 / packet_ms as usize,
            packet_ms,
            jitter: Jitter::Gaussian { sigma_ms: 15.0 },
            seed,
            ..Default::default()
        };
        let s = run(&cfg).last();
        // Half-normal with sigma 15 ms: the 95% quantile is about 29 ms.
        let q = s.target_delay_ms - f64::from(packet_ms);
        assert!(
            (20.0..=40.0).contains(&q),
            "{packet_ms} ms packets: quantile {q}"
        );
        assert!(
            s.concealed_percent() < 1.0,
            "{packet_ms} ms: {:.2}%",
            s.concealed_percent()
        );
        assert!(
            s.mean_delay_ms() < 50.0,
            "{packet_ms} ms: {:.1} ms",
            s.mean_delay_ms()
        );
    }
}

/// Arrivals for 20 ms packets whose extra delay is uniform in `[0, jitter(i)]`.
fn phased_trace(n: usize, jitter: impl Fn(usize) -> f64, seed: u64) -> Vec<TracePacket> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let sent = i as f64 * 20.0;
            let arrival = sent + 30.0 + rng.random::<f64>() * jitter(i);
            TracePacket {
                index: i,
                seq: i as u16,
                rtp_ts: (i * 320) as u32,
                sent: Duration::from_secs_f64(sent / 1000.0),
                arrival: Some(Duration::from_secs_f64(arrival / 1000.0)),
            }
        })
        .collect()
}

#[test]
fn target_follows_jitter_up_quickly_and_back_down_within_seconds() {
    // 10 s clean, 10 s of 80 ms jitter, 20 s clean.
    let n = 2000;
    let trace = phased_trace(n, |i| if (500..1000).contains(&i) { 80.0 } else { 0.0 }, 11);
    let signal = speech_like(RATE, n * 320);
    let packets = packetize_l16(&signal, 320);
    let mut jb = adaptive(L16Decoder::new(RATE, 1));
    let mut stats = Vec::new();
    simulate(
        &mut jb,
        &trace,
        |i| packets[i].clone(),
        Instant::now(),
        Duration::from_secs(40),
        10,
        |_, s| stats.push(s.clone()),
    );
    let target_at = |s: f64| stats[(s * PER_S as f64) as usize].target_delay_ms;
    assert_eq!(target_at(9.9), 20.0);
    // Up within a second of the jitter starting.
    assert!(
        target_at(11.0) >= 60.0,
        "target 1 s into jitter {}",
        target_at(11.0)
    );
    assert!(
        target_at(19.9) >= 80.0,
        "target late in jitter {}",
        target_at(19.9)
    );
    // Down within seconds of it ending, and the held audio with it (by acceleration).
    let down = (2000..4000)
        .find(|&f| stats[f].target_delay_ms <= 30.0)
        .expect("target came down");
    assert!(
        down < 2600,
        "target down after {} s",
        down as f64 / 100.0 - 20.0
    );
    let removed_before = stats[2000].removed_samples_for_acceleration;
    assert!(stats[3999].removed_samples_for_acceleration > removed_before);
    let late_delay: f64 = stats[3500..4000]
        .iter()
        .map(|s| s.current_delay_ms)
        .sum::<f64>()
        / 500.0;
    assert!(late_delay < 45.0, "held {late_delay:.1} ms at the end");
    assert!(
        stats[3999].concealed_percent() < 2.0,
        "concealed {:.2}%",
        stats[3999].concealed_percent()
    );
}

/// Noise cannot be time-stretched, so the output must be the input, shifted.
fn noise(n: usize, seed: u64) -> Vec<i16> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-8000i16..8000)).collect()
}

#[test]
fn reordered_and_duplicated_packets_play_out_exactly() {
    let n = 300;
    let signal = noise(n * 320, 5);
    let packets = packetize_l16(&signal, 320);
    let mut jb = adaptive(L16Decoder::new(RATE, 1));
    let t0 = Instant::now();
    let mut out = Vec::new();
    let mut dups = 0;
    for pair in 0..n / 2 {
        // Each pair arrives swapped, and the first of them twice.
        let t = t0 + Duration::from_millis(40 * pair as u64 + 20);
        for (k, i) in [2 * pair + 1, 2 * pair, 2 * pair + 1]
            .into_iter()
            .enumerate()
        {
            let r = jb.insert(i as u16, (i * 320) as u32, &packets[i], t);
            if k == 2 {
                assert_eq!(r, Err(InsertError::Duplicate));
                dups += 1;
            } else {
                assert_eq!(r, Ok(()));
            }
        }
        for f in 0..4 {
            out.extend_from_slice(jb.pull(t + Duration::from_millis(10 * f)));
        }
    }
    let s = jb.stats();
    assert_eq!(s.duplicate_packets, dups);
    assert_eq!(s.concealed_samples, 0);
    assert_eq!(s.late_packets, 0);
    // Align on a stretch after the 5 ms fade-in, then compare everything from there.
    let start = out.iter().position(|&x| x != 0).unwrap() + 100;
    let probe = &out[start..start + 32];
    let at = signal
        .windows(32)
        .position(|w| w == probe)
        .expect("output is the input");
    let played = &out[start..];
    let sent = &signal[at..(at + played.len()).min(signal.len())];
    assert_eq!(s.accelerate_operations + s.preemptive_expand_operations, 0);
    assert!(sent.len() > 40_000);
    let played = &played[..sent.len()];
    assert!(played == sent, "output differs from input");
}

#[test]
fn a_jump_in_sequence_and_timestamp_resyncs_without_losing_playout() {
    let mut jb = adaptive(L16Decoder::new(RATE, 1));
    let t0 = Instant::now();
    let tone: Vec<i16> = speech_like(RATE, 320);
    let mut payload = Vec::new();
    encode_l16(&tone, &mut payload);
    let mut concealed_before = 0;
    for i in 0..400u32 {
        let t = t0 + Duration::from_millis(20 * u64::from(i));
        // The sender restarts at packet 200 with new sequence and timestamp bases.
        let (seq, ts) = if i < 200 {
            (i, i * 320)
        } else {
            (i + 20_000, i * 320 + 1_000_000_000)
        };
        let r = jb.insert(seq as u16, ts, &payload, t);
        // The first packet of the new stream might be a stray; the second confirms it.
        assert_eq!(r.is_err(), i == 200, "packet {i}: {r:?}");
        if i == 199 {
            concealed_before = jb.stats().concealed_samples;
        }
        for f in 0..2 {
            assert_eq!(jb.pull(t + Duration::from_millis(10 * f)).len(), 160);
        }
    }
    let s = jb.stats();
    assert_eq!(s.resyncs, 1);
    assert_eq!(s.late_packets, 0);
    // Packets after the restart are decoded, not concealed.
    assert!(s.concealed_samples - concealed_before < 160 * 10, "{s:?}");
    assert!(s.jitter_buffer_emitted_count >= 390 * 320 - 10 * 320);
}
