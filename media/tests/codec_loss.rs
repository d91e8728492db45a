//! Real libopus under seeded random packet loss: speech-like and tone signals at 0, 5, 10
//! and 20 % loss, recovered with in-band FEC (decode the next packet's LBRR data) or with
//! concealment alone, and compared with the sent signal after delay alignment.

mod common;

use common::encode_opus;
use huddle_media::audio::decoder::AudioDecoder;
use huddle_media::codec::opus::SAMPLE_RATE;
use huddle_media::codec::{OpusChannels, OpusDecoder, OpusEncoderConfig, OpusSignal};
use huddle_media::quality::{SnrReport, compare_audio, signal};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// 20 ms at 48 kHz.
const FRAME: usize = 960;
/// The codec delays its output by its look-ahead (6.5 ms); search up to 20 ms.
const MAX_LAG: usize = 960;

/// Encodes `pcm` with FEC on or off, drops packets with probability `loss` (seeded, so
/// both FEC settings see the same losses), decodes with FEC recovery or concealment, and
/// returns the aligned comparison plus how many frames FEC recovered.
fn run(
    pcm: &[i16],
    signal: OpusSignal,
    loss_percent: u8,
    fec: bool,
    seed: u64,
) -> (SnrReport, usize) {
    let packets = encode_opus(
        pcm,
        OpusEncoderConfig {
            inband_fec: fec,
            signal,
            // What a sender learns from receiver reports; libopus codes LBRR only above zero.
            expected_loss_percent: loss_percent.max(1),
            ..OpusEncoderConfig::default()
        },
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let lost: Vec<bool> = packets
        .iter()
        .map(|_| rng.random_range(0..100) < u32::from(loss_percent))
        .collect();

    let mut decoder = OpusDecoder::new(OpusChannels::Mono).expect("decoder");
    let mut out = vec![0i16; FRAME];
    let mut played = Vec::with_capacity(pcm.len());
    let mut recovered = 0;
    for (i, packet) in packets.iter().enumerate() {
        let n = if !lost[i] {
            decoder.decode(packet, &mut out).expect("decode")
        } else {
            match packets
                .get(i + 1)
                .filter(|_| !lost.get(i + 1).copied().unwrap_or(true))
            {
                Some(next) if fec && decoder.has_fec(next) => {
                    recovered += 1;
                    decoder.decode_fec(next, FRAME, &mut out).expect("fec")
                }
                _ => decoder.conceal(FRAME, &mut out).expect("conceal"),
            }
        };
        assert_eq!(n, FRAME);
        played.extend_from_slice(&out);
    }
    let report = compare_audio(pcm, &played, MAX_LAG, FRAME).expect("compare");
    (report, recovered)
}

fn print(label: &str, loss: u8, fec: bool, (r, recovered): &(SnrReport, usize)) {
    eprintln!(
        "{label:>6} loss {loss:>2}% fec {fec:<5}: delay {} SNR {:6.2} dB segSNR {:6.2} dB \
         (corr {:.3}, {recovered} frames from FEC)",
        r.delay, r.snr_db, r.segmental_snr_db, r.correlation
    );
}

/// From 10 % loss on, FEC must be clearly (over 1 dB, whole and segmental SNR) better
/// than concealment alone on the same losses.
fn assert_fec_beats_concealment(loss: u8, fec: &SnrReport, plc: &SnrReport) {
    assert!(
        fec.snr_db > plc.snr_db + 1.0,
        "{loss}%: FEC {:.2} dB vs PLC {:.2} dB",
        fec.snr_db,
        plc.snr_db
    );
    assert!(
        fec.segmental_snr_db > plc.segmental_snr_db + 1.0,
        "{loss}%: FEC {:.2} dB vs PLC {:.2} dB segmental",
        fec.segmental_snr_db,
        plc.segmental_snr_db
    );
}

#[test]
fn fec_improves_speech_under_loss() {
    let pcm = signal::speech_like(12.0, SAMPLE_RATE, 16_000, 42);
    let clean = run(&pcm, OpusSignal::Auto, 0, true, 1);
    print("speech", 0, true, &clean);
    // The delay is the encoder's look-ahead, whatever the loss.
    assert!(
        (200..=480).contains(&clean.0.delay),
        "delay {}",
        clean.0.delay
    );
    assert!(clean.0.snr_db > 12.0, "clean SNR {}", clean.0.snr_db);
    assert!(clean.0.segmental_snr_db > 12.0);
    assert_eq!(clean.1, 0);

    let mut previous_fec = clean.0.segmental_snr_db;
    for (loss, seed) in [(5u8, 11u64), (10, 12), (20, 13)] {
        let with = run(&pcm, OpusSignal::Auto, loss, true, seed);
        let without = run(&pcm, OpusSignal::Auto, loss, false, seed);
        print("speech", loss, true, &with);
        print("speech", loss, false, &without);
        assert_eq!(with.0.delay, clean.0.delay);
        assert_eq!(without.1, 0);
        assert!(with.1 > 0, "FEC recovered nothing at {loss}%");
        // Loss hurts, and more loss hurts more.
        assert!(with.0.segmental_snr_db < clean.0.segmental_snr_db);
        assert!(with.0.segmental_snr_db <= previous_fec + 0.5);
        previous_fec = with.0.segmental_snr_db;
        if loss >= 10 {
            assert_fec_beats_concealment(loss, &with.0, &without.0);
        }
    }
}

#[test]
fn steady_tones_code_cleanly() {
    let pcm = signal::tones(4.0, SAMPLE_RATE, &[300.0, 1250.0], 6_000);
    let clean = run(&pcm, OpusSignal::Auto, 0, true, 1);
    print("tones", 0, true, &clean);
    assert!(clean.0.snr_db > 18.0, "clean SNR {}", clean.0.snr_db);
    assert!(clean.0.correlation > 0.99);
}

/// Pure-tone bursts at changing pitches with gaps, sent as voice. (A steady tone is not a
/// useful FEC probe: SILK's voice activity detector learns it as background noise and codes
/// no LBRR for it, and without the voice hint libopus codes tones with CELT, which has none.)
#[test]
fn fec_improves_tone_bursts_under_loss() {
    let mut pcm = Vec::new();
    let pitches = [300.0, 450.0, 700.0, 1000.0, 1250.0, 550.0, 350.0, 850.0];
    for (i, f) in pitches.iter().cycle().take(24).enumerate() {
        pcm.extend(signal::tones(0.25, SAMPLE_RATE, &[*f], 8_000));
        pcm.extend(std::iter::repeat_n(0i16, FRAME * (3 + i % 5)));
    }
    let clean = run(&pcm, OpusSignal::Voice, 0, true, 1);
    print("bursts", 0, true, &clean);
    assert!(clean.0.snr_db > 12.0, "clean SNR {}", clean.0.snr_db);
    for (loss, seed) in [(5u8, 21u64), (10, 22), (20, 23)] {
        let with = run(&pcm, OpusSignal::Voice, loss, true, seed);
        let without = run(&pcm, OpusSignal::Voice, loss, false, seed);
        print("bursts", loss, true, &with);
        print("bursts", loss, false, &without);
        assert!(with.0.snr_db < clean.0.snr_db);
        if loss >= 10 {
            assert_fec_beats_concealment(loss, &with.0, &without.0);
        }
    }
}
