//! Adaptive jitter buffer under loss, FEC, clock drift, stalls, long gaps and DTX, on
//! seeded simulated traces.

mod common;

use std::time::{Duration, Instant};

use common::{PER_S, RATE, adaptive, play_speech};
use huddle_media::audio::decoder::{AudioDecoder, DecodeError};
use huddle_media::audio::jitter::{FixedDelayBuffer, Playout};
use huddle_media::audio::l16::{L16Decoder, encode_l16};
use huddle_media::audio::netsim::{
    Jitter, Loss, PlayoutRun, Stalls, TraceConfig, TracePacket, play_l16, simulate, speech_like,
};
use huddle_media::quality::snr::snr_db;

#[test]
fn concealment_matches_the_loss_rate() {
    for (loss, seed) in [
        (Loss::Random(0.05), 1),
        (Loss::Random(0.10), 2),
        (
            Loss::GilbertElliott {
                p_good_to_bad: 0.03,
                p_bad_to_good: 0.4,
                loss_good: 0.01,
                loss_bad: 0.7,
            },
            3,
        ),
    ] {
        let cfg = TraceConfig {
            packets: 3000,
            loss,
            seed,
            ..Default::default()
        };
        let lost = cfg
            .generate()
            .iter()
            .filter(|p| p.arrival.is_none())
            .count();
        let s = play_speech(&mut adaptive(L16Decoder::new(RATE, 1)), &cfg).last();
        let loss_pct = lost as f64 * 100.0 / cfg.packets as f64;
        assert!(
            (s.concealed_percent() - loss_pct).abs() < 1.0,
            "{loss:?}: concealed {:.2}% for {loss_pct:.2}% loss",
            s.concealed_percent()
        );
        // Every lost packet is counted once, give or take those at the very end.
        assert!(
            s.packets_lost.abs_diff(lost as u64) <= 3,
            "lost {} counted {}",
            lost,
            s.packets_lost
        );
        assert!(s.concealment_events > 0 && s.concealment_events <= s.packets_lost);
    }
}

/// L16 with RED-style redundancy (RFC 2198 in spirit): a flag byte, the frame, and when
/// the flag is set a copy of the previous frame, which `decode_fec` recovers exactly.
struct RedundantL16(L16Decoder);

impl RedundantL16 {
    fn split(payload: &[u8]) -> Result<(&[u8], Option<&[u8]>), DecodeError> {
        let (&flag, rest) = payload
            .split_first()
            .ok_or(DecodeError::Malformed("empty".into()))?;
        if flag == 0 {
            return Ok((rest, None));
        }
        let half = rest.len() / 2;
        Ok((&rest[..half], Some(&rest[half..])))
    }

    fn packet(frame: &[i16], previous: Option<&[i16]>) -> Vec<u8> {
        let mut out = vec![u8::from(previous.is_some())];
        let mut buf = Vec::new();
        encode_l16(frame, &mut buf);
        out.extend_from_slice(&buf);
        if let Some(p) = previous {
            encode_l16(p, &mut buf);
            out.extend_from_slice(&buf);
        }
        out
    }
}

impl AudioDecoder for RedundantL16 {
    fn sample_rate(&self) -> u32 {
        self.0.sample_rate()
    }
    fn channels(&self) -> usize {
        1
    }
    fn packet_samples(&self, payload: &[u8]) -> Result<usize, DecodeError> {
        self.0.packet_samples(Self::split(payload)?.0)
    }
    fn has_fec(&self, payload: &[u8]) -> bool {
        matches!(Self::split(payload), Ok((_, Some(_))))
    }
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, DecodeError> {
        self.0.decode(Self::split(payload)?.0, out)
    }
    fn decode_fec(
        &mut self,
        payload: &[u8],
        samples: usize,
        out: &mut [i16],
    ) -> Result<usize, DecodeError> {
        let red = Self::split(payload)?
            .1
            .ok_or(DecodeError::Malformed("no redundancy".into()))?;
        let n = self.0.decode(red, out)?;
        assert_eq!(n, samples);
        Ok(n)
    }
    fn conceal(&mut self, samples: usize, out: &mut [i16]) -> Result<usize, DecodeError> {
        self.0.conceal(samples, out)
    }
}

#[test]
fn fec_recovers_isolated_losses_and_beats_concealment() {
    let cfg = TraceConfig {
        packets: 1500,
        loss: Loss::Random(0.08),
        seed: 9,
        ..Default::default()
    };
    let trace = cfg.generate();
    let signal = speech_like(RATE, cfg.packets * 320);
    let frames: Vec<&[i16]> = signal.chunks(320).collect();
    let lost = trace.iter().filter(|p| p.arrival.is_none()).count() as u64;
    // The reference is the same stream with nothing lost, through the same fixed schedule
    // (no time stretching), so the three outputs line up sample for sample.
    let play = |with_fec: bool, drop: bool| {
        let mut jb = FixedDelayBuffer::new(RedundantL16(L16Decoder::new(RATE, 1)), 60, 10).unwrap();
        let mut t = trace.clone();
        if !drop {
            for p in &mut t {
                p.arrival = Some(p.sent + Duration::from_millis(30));
            }
        }
        let mut out = Vec::new();
        simulate(
            &mut jb,
            &t,
            |i| {
                RedundantL16::packet(
                    frames[i],
                    if with_fec && i > 0 {
                        Some(frames[i - 1])
                    } else {
                        None
                    },
                )
            },
            Instant::now(),
            Duration::from_secs(30),
            10,
            |f, _| out.extend_from_slice(f),
        );
        (out, jb.stats())
    };
    let (reference, _) = play(false, false);
    let (plc, plc_stats) = play(false, true);
    let (fec, fec_stats) = play(true, true);
    assert_eq!(plc_stats.fec_recovered_packets, 0);
    // Isolated losses are all recovered; a loss right after another cannot be.
    let recoverable = trace
        .windows(2)
        .filter(|w| w[0].arrival.is_none() && w[1].arrival.is_some())
        .count() as u64;
    assert!(
        fec_stats.fec_recovered_packets >= recoverable - 2,
        "{fec_stats:?}"
    );
    assert_eq!(
        fec_stats.packets_lost + fec_stats.fec_recovered_packets,
        plc_stats.packets_lost
    );
    assert!(plc_stats.packets_lost.abs_diff(lost) <= 3);
    let snr_plc = snr_db(&reference, &plc).unwrap();
    let snr_fec = snr_db(&reference, &fec).unwrap();
    assert!(
        snr_fec > snr_plc + 10.0,
        "FEC {snr_fec:.1} dB vs PLC {snr_plc:.1} dB"
    );

    // The adaptive buffer takes the same FEC path.
    let mut jb = adaptive(RedundantL16(L16Decoder::new(RATE, 1)));
    simulate(
        &mut jb,
        &trace,
        |i| RedundantL16::packet(frames[i], if i > 0 { Some(frames[i - 1]) } else { None }),
        Instant::now(),
        Duration::from_secs(30),
        10,
        |_, _| {},
    );
    let s = jb.stats();
    assert!(
        s.fec_recovered_packets >= recoverable - 2,
        "{recoverable} recoverable: {s:?}"
    );
}

fn drift_run(p: &mut impl Playout, ppm: f64) -> PlayoutRun {
    // Five minutes with 10 ms of jitter.
    let cfg = TraceConfig {
        packets: 15_000,
        drift_ppm: ppm,
        jitter: Jitter::Uniform { max_ms: 10.0 },
        seed: 21,
        ..Default::default()
    };
    play_speech(p, &cfg)
}

#[test]
fn clock_drift_of_a_thousand_ppm_keeps_the_delay_bounded() {
    for ppm in [1000.0, -1000.0] {
        let r = drift_run(&mut adaptive(L16Decoder::new(RATE, 1)), ppm);
        // Five minutes at 1000 ppm is 300 ms of drift; the delay must not follow it.
        let end = 290 * PER_S;
        let early = r.mean_delay_between(30 * PER_S, 60 * PER_S);
        let late = r.mean_delay_between(260 * PER_S, end);
        assert!(
            (late - early).abs() < 15.0,
            "{ppm} ppm: {early:.1} ms then {late:.1} ms"
        );
        let max = r.stats[10 * PER_S..end]
            .iter()
            .map(|s| s.current_delay_ms)
            .fold(0.0, f64::max);
        assert!(max < 100.0, "{ppm} ppm: held up to {max:.1} ms");
        let s = &r.stats[end];
        assert!(
            s.concealed_percent() < 0.5,
            "{ppm} ppm: concealed {:.2}%",
            s.concealed_percent()
        );
        // At least 200 of the 290 ms of drift were taken out by acceleration, or put in by
        // expansion (pre-emptive, or concealment while a packet was late).
        if ppm > 0.0 {
            assert!(s.removed_samples_for_acceleration > 16 * 200, "{s:?}");
        } else {
            let expanded = s.inserted_samples_for_deceleration + s.concealed_samples;
            assert!(expanded > 16 * 200, "{s:?}");
        }
        // A fixed schedule cannot follow: its delay grows by the drift.
        let mut fixed = FixedDelayBuffer::new(L16Decoder::new(RATE, 1), 60, 10).unwrap();
        let f = drift_run(&mut fixed, ppm);
        let f_late = f.mean_delay_between(260 * PER_S, end);
        let f_conc = f.stats[end].concealed_percent();
        assert!(
            f_late > 200.0 || f_conc > 10.0,
            "{ppm} ppm fixed: {f_late:.1} ms, {f_conc:.1}%"
        );
    }
}

#[test]
fn a_burst_after_a_stall_is_played_and_the_delay_brought_back() {
    let cfg = TraceConfig {
        packets: 1500,
        jitter: Jitter::Uniform { max_ms: 5.0 },
        stalls: Stalls::Once {
            at_ms: 10_000.0,
            length_ms: 400.0,
        },
        ..Default::default()
    };
    let r = play_speech(&mut adaptive(L16Decoder::new(RATE, 1)), &cfg);
    let before = &r.stats[995];
    let after = &r.stats[2000];
    // The stall is bridged by concealment (fading to silence), not lost audio plus delay.
    let concealed_ms = (after.concealed_samples - before.concealed_samples) as f64 / 16.0;
    assert!(
        (300.0..=420.0).contains(&concealed_ms),
        "concealed {concealed_ms} ms"
    );
    assert!(after.silent_concealed_samples > before.silent_concealed_samples);
    // The burst leaves the buffer fuller than before; acceleration brings it back.
    let peak = r.stats[1040..1100]
        .iter()
        .map(|s| s.current_delay_ms)
        .fold(0.0, f64::max);
    let pre = r.stats[900..990]
        .iter()
        .map(|s| s.current_delay_ms)
        .fold(0.0, f64::max);
    assert!(peak > pre, "peak {peak:.1} ms vs {pre:.1} ms before");
    let settled = r.stats[1500..1600]
        .iter()
        .map(|s| s.current_delay_ms)
        .fold(0.0, f64::max);
    assert!(
        settled <= pre + 10.0,
        "settled {settled:.1} ms vs {pre:.1} ms before"
    );
    assert!(after.accelerate_operations > before.accelerate_operations);
}

/// 20 ms packets of `signal`, sent on time with 30 ms delay, except `missing` ones.
fn trace_without(n: usize, missing: impl Fn(usize) -> bool) -> Vec<TracePacket> {
    (0..n)
        .map(|i| TracePacket {
            index: i,
            seq: i as u16,
            rtp_ts: (i * 320) as u32,
            sent: Duration::from_millis(20 * i as u64),
            arrival: (!missing(i)).then(|| Duration::from_millis(20 * i as u64 + 30)),
        })
        .collect()
}

#[test]
fn a_long_gap_fades_to_silence_and_playout_resumes() {
    // One second (50 packets) missing in the middle of 6 s of a tone.
    let n = 300;
    let trace = trace_without(n, |i| (100..150).contains(&i));
    let tone: Vec<i16> = (0..n * 320)
        .map(|i| (8000.0 * (2.0 * std::f64::consts::PI * 200.0 * i as f64 / 16_000.0).sin()) as i16)
        .collect();
    let mut jb = adaptive(L16Decoder::new(RATE, 1));
    let mut out = Vec::new();
    let mut stats = Vec::new();
    simulate(
        &mut jb,
        &trace,
        |i| {
            let mut p = Vec::new();
            encode_l16(&tone[i * 320..(i + 1) * 320], &mut p);
            p
        },
        Instant::now(),
        Duration::from_secs(6),
        10,
        |f, s| {
            out.extend_from_slice(f);
            stats.push(s.clone());
        },
    );
    // Find the frame where concealment began.
    let first = stats.iter().position(|s| s.concealed_samples > 0).unwrap();
    let frame = |k: usize| &out[k * 160..(k + 1) * 160];
    let peak = |k: usize| frame(k).iter().map(|s| s.unsigned_abs()).max().unwrap();
    // Full level at first (the tone continued), silent from 100 ms on, until packets return.
    assert!(
        peak(first) > 7000,
        "first concealed frame peak {}",
        peak(first)
    );
    for k in first + 10..first + 95 {
        assert_eq!(peak(k), 0, "frame {} ms into the gap", (k - first) * 10);
    }
    let s = stats.last().unwrap();
    assert_eq!(s.concealment_events, 1);
    assert!(s.silent_concealed_samples >= 16 * 850, "{s:?}");
    // Afterwards the tone is back at full level.
    assert!(peak(first + 150) > 7000);
}

/// L16 plus a one-byte DTX packet (like Opus's, RFC 7587 §3.1.3) standing for 20 ms of
/// silence, sent when the talker falls silent.
struct DtxL16(L16Decoder);

const DTX: [u8; 1] = [0xff];

impl AudioDecoder for DtxL16 {
    fn sample_rate(&self) -> u32 {
        self.0.sample_rate()
    }
    fn channels(&self) -> usize {
        1
    }
    fn packet_samples(&self, payload: &[u8]) -> Result<usize, DecodeError> {
        if payload == DTX {
            Ok(320)
        } else {
            self.0.packet_samples(payload)
        }
    }
    fn has_fec(&self, _: &[u8]) -> bool {
        false
    }
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, DecodeError> {
        if payload == DTX {
            out[..320].fill(0);
            return Ok(320);
        }
        self.0.decode(payload, out)
    }
    fn decode_fec(&mut self, p: &[u8], n: usize, out: &mut [i16]) -> Result<usize, DecodeError> {
        self.0.decode_fec(p, n, out)
    }
    fn conceal(&mut self, samples: usize, out: &mut [i16]) -> Result<usize, DecodeError> {
        self.0.conceal(samples, out)
    }
    fn is_dtx(&self, payload: &[u8]) -> bool {
        payload == DTX
    }
}

#[test]
fn a_dtx_pause_plays_comfort_noise_and_is_not_loss() {
    // Packet 100 is a DTX packet; the next one comes ~1 s of media later with the next
    // sequence number.
    let media = |i: usize| if i <= 100 { i } else { i + 49 };
    let n = 300;
    let trace: Vec<TracePacket> = (0..n)
        .map(|i| TracePacket {
            index: i,
            seq: i as u16,
            rtp_ts: (media(i) * 320) as u32,
            sent: Duration::from_millis(20 * media(i) as u64),
            arrival: Some(Duration::from_millis(20 * media(i) as u64 + 30)),
        })
        .collect();
    let signal = speech_like(RATE, 400 * 320);
    let payload = |i: usize| {
        if i == 100 {
            return DTX.to_vec();
        }
        let mut p = Vec::new();
        encode_l16(&signal[media(i) * 320..(media(i) + 1) * 320], &mut p);
        p
    };
    // Stop before the stream ends so that only the pause is in question.
    let duration = Duration::from_millis(20 * media(n - 5) as u64);

    let mut jb = adaptive(DtxL16(L16Decoder::new(RATE, 1)));
    let mut out = Vec::new();
    simulate(
        &mut jb,
        &trace,
        payload,
        Instant::now(),
        duration,
        10,
        |f, _| out.extend_from_slice(f),
    );
    let s = jb.stats();
    assert_eq!(
        (s.packets_lost, s.late_packets, s.concealed_samples),
        (0, 0, 0),
        "{s:?}"
    );
    // The pause is comfort noise (some of it may be cut to reduce delay).
    assert!(
        s.comfort_noise_samples + s.removed_samples_for_acceleration >= 16 * 950,
        "{s:?}"
    );
    let silent_run = out.split(|&x| x != 0).map(<[i16]>::len).max().unwrap();
    assert!(
        silent_run >= 16 * 900,
        "longest silence {} ms",
        silent_run / 16
    );

    // Without DTX signalling the pause looks like a stall: concealed (and faded), but
    // still not counted as loss, and the talker is played again afterwards.
    let mut jb = adaptive(L16Decoder::new(RATE, 1));
    let plain = |i: usize| if i == 100 { payload(99) } else { payload(i) };
    simulate(
        &mut jb,
        &trace,
        plain,
        Instant::now(),
        duration,
        10,
        |_, _| {},
    );
    let s = jb.stats();
    assert_eq!((s.packets_lost, s.late_packets), (0, 0), "{s:?}");
    assert!(s.silent_concealed_samples > 16 * 700, "{s:?}");
}

#[test]
fn mode_switches_make_no_clicks() {
    // A low tone has small sample-to-sample steps; a splice without a crossfade would make
    // steps of thousands. Jitter, loss, a stall and drift exercise every mode switch.
    let cfg = TraceConfig {
        packets: 3000,
        jitter: Jitter::Pareto {
            scale_ms: 8.0,
            shape: 2.0,
        },
        loss: Loss::GilbertElliott {
            p_good_to_bad: 0.02,
            p_bad_to_good: 0.5,
            loss_good: 0.0,
            loss_bad: 0.6,
        },
        stalls: Stalls::Random {
            every_ms: (5000.0, 9000.0),
            length_ms: (100.0, 300.0),
        },
        drift_ppm: 500.0,
        seed: 5,
        ..Default::default()
    };
    let tone: Vec<i16> = (0..cfg.packets * 320)
        .map(|i| (8000.0 * (2.0 * std::f64::consts::PI * 150.0 * i as f64 / 16_000.0).sin()) as i16)
        .collect();
    let natural = tone
        .windows(2)
        .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
        .max()
        .unwrap();
    let r = play_l16(&mut adaptive(L16Decoder::new(RATE, 1)), &cfg, &tone, 0);
    let s = r.last();
    assert!(
        s.concealment_events > 10 && s.accelerate_operations > 0,
        "{s:?}"
    );
    let worst = r
        .output
        .windows(2)
        .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
        .max()
        .unwrap();
    assert!(
        worst < natural * 2,
        "largest step {worst} vs {natural} in the tone"
    );
}

/// FEC is only useful if the packet after a lost one is there when the loss reaches
/// playout: with 30 ms of jitter the adaptive target must still leave room for it.
#[test]
fn under_loss_and_jitter_fec_repairs_most_losses() {
    let cfg = TraceConfig {
        packets: 3000,
        loss: Loss::Random(0.05),
        jitter: Jitter::Uniform { max_ms: 30.0 },
        seed: 17,
        ..Default::default()
    };
    let trace = cfg.generate();
    let signal = speech_like(RATE, cfg.packets * 320);
    let frames: Vec<&[i16]> = signal.chunks(320).collect();
    let recoverable = trace
        .windows(2)
        .filter(|w| w[0].arrival.is_none() && w[1].arrival.is_some())
        .count() as u64;
    let mut jb = adaptive(RedundantL16(L16Decoder::new(RATE, 1)));
    simulate(
        &mut jb,
        &trace,
        |i| RedundantL16::packet(frames[i], if i > 0 { Some(frames[i - 1]) } else { None }),
        Instant::now(),
        Duration::from_secs(60),
        10,
        |_, _| {},
    );
    let s = jb.stats();
    assert!(
        s.fec_recovered_packets * 100 >= recoverable * 90,
        "{recoverable} recoverable: {s:?}"
    );
    assert!(s.concealed_percent() < 2.0, "{s:?}");
}
