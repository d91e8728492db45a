//! Opus packetizer and depacketizer tests: timestamps, DTX, loss and round trips.

use super::*;
use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng, rngs::StdRng};

/// A code 0 packet of configuration `config` with `len` frame bytes.
fn opus(config: u8, len: usize, fill: u8) -> Bytes {
    let mut p = vec![config << 3];
    p.extend(std::iter::repeat_n(fill, len));
    Bytes::from(p)
}

#[test]
fn timestamps_advance_by_toc_duration_at_48khz() {
    let mut p = OpusPacketizer::new(1000);
    // SILK 10, 20, 40, 60 ms then CELT 2.5 ms.
    let mut stamps = Vec::new();
    for config in [0u8, 1, 2, 3, 16] {
        stamps.push(p.packetize(opus(config, 40, 1)).unwrap().unwrap().timestamp);
    }
    assert_eq!(stamps, [1000, 1480, 2440, 4360, 7240]);
    assert_eq!(p.next_timestamp(), 7360);
}

#[test]
fn timestamps_wrap() {
    let mut p = OpusPacketizer::new(u32::MAX - 100);
    p.packetize(opus(1, 10, 1)).unwrap();
    assert_eq!(p.next_timestamp(), 859);
}

#[test]
fn dtx_packets_are_skipped_and_the_talkspurt_is_marked() {
    let mut p = OpusPacketizer::new(0);
    let first = p.packetize(opus(1, 50, 1)).unwrap().unwrap();
    assert!(
        !first.marker,
        "the first packet of a stream follows no silence"
    );
    // Three 1-byte DTX packets (TOC only): 60 ms of silence not sent.
    for _ in 0..3 {
        assert_eq!(p.packetize(opus(1, 0, 0)).unwrap(), None);
    }
    let next = p.packetize(opus(1, 50, 1)).unwrap().unwrap();
    assert_eq!(next.timestamp, 4 * 960);
    assert!(next.marker, "first packet after DTX starts a talkspurt");
    assert!(!p.packetize(opus(1, 50, 1)).unwrap().unwrap().marker);
}

#[test]
fn dtx_packets_are_sent_when_asked() {
    let mut p = OpusPacketizer::new(0).with_dtx_suppression(false);
    let dtx = p.packetize(opus(1, 0, 0)).unwrap().unwrap();
    assert_eq!(dtx.payload.len(), 1);
    let mut d = OpusDepacketizer::new();
    let got = d.push(7, dtx.timestamp, &dtx.payload).unwrap();
    assert!(got.dtx);
    assert_eq!(got.info.frame_lengths(), &[0]);
}

#[test]
fn skip_converts_input_rate_samples_to_48khz() {
    let mut p = OpusPacketizer::new(0);
    p.skip(320, 16_000).unwrap();
    assert_eq!(p.next_timestamp(), 960);
    assert_eq!(p.skip(100, 44_100), Err(OpusError::UnsupportedRate(44_100)));
    assert!(p.packetize(opus(1, 10, 1)).unwrap().unwrap().marker);
}

#[test]
fn malformed_payloads_are_errors() {
    let mut p = OpusPacketizer::new(0);
    assert_eq!(p.packetize(Bytes::new()), Err(OpusError::Empty));
    let mut d = OpusDepacketizer::new();
    assert_eq!(
        d.push(1, 0, &[0x09, 1, 2, 3]).unwrap_err(),
        OpusError::OddCbrLength
    );
}

#[test]
fn depacketizer_classifies_gaps() {
    let mut d = OpusDepacketizer::new();
    let p = opus(1, 20, 3);
    assert_eq!(d.push(65_535, 0, &p).unwrap().gap, Gap::None);
    // Contiguous sequence across the wrap, 3 frames of DTX silence not sent.
    assert_eq!(
        d.push(0, 4 * 960, &p).unwrap().gap,
        Gap::Silence { samples: 3 * 960 }
    );
    // Two packets lost.
    assert_eq!(
        d.push(3, 7 * 960, &p).unwrap().gap,
        Gap::Lost {
            packets: 2,
            samples: Some(2 * 960)
        }
    );
    // A late packet and a duplicate.
    assert_eq!(d.push(1, 5 * 960, &p).unwrap().gap, Gap::Late);
    assert_eq!(d.push(3, 7 * 960, &p).unwrap().gap, Gap::Late);
    assert_eq!(d.push(4, 8 * 960, &p).unwrap().gap, Gap::None);
}

/// One sent packet: its sequence number and what was sent.
#[derive(Debug, Clone)]
struct Sent {
    seq: u16,
    packet: PayloadPacket,
}

/// Packetizes a stream of random-length talk and DTX packets; returns the sent packets
/// and the timestamp at which each sent packet's predecessor ended.
fn send_stream(rng: &mut StdRng, count: usize, start_seq: u16) -> Vec<Sent> {
    let mut p = OpusPacketizer::new(rng.random());
    let mut seq = start_seq;
    let mut sent = Vec::new();
    for _ in 0..count {
        let config = [0u8, 1, 2, 3, 13, 17, 19][rng.random_range(0..7)];
        let len = if rng.random_bool(0.3) {
            rng.random_range(0..2)
        } else {
            rng.random_range(3..200)
        };
        if let Some(packet) = p.packetize(opus(config, len, rng.random())).unwrap() {
            sent.push(Sent { seq, packet });
            seq = seq.wrapping_add(1);
        }
    }
    sent
}

proptest! {
    #[test]
    fn arbitrary_payloads_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2000), seq: u16, ts: u32) {
        let mut d = OpusDepacketizer::new();
        if let Ok(got) = d.push(seq, ts, &data) {
            prop_assert!(got.duration_samples() <= MAX_PACKET_SAMPLES);
        }
    }

    /// In-order delivery with loss and duplicates: every packet delivered is what was
    /// sent, every loss is reported with its exact count and duration, and silence gaps
    /// equal the DTX time the sender skipped.
    #[test]
    fn round_trip_with_loss_and_duplicates(seed: u64, start_seq: u16) {
        let mut rng = StdRng::seed_from_u64(seed);
        let sent = send_stream(&mut rng, 200, start_seq);
        let mut d = OpusDepacketizer::new();
        let mut last_delivered: Option<usize> = None;
        for (i, s) in sent.iter().enumerate() {
            if rng.random_bool(0.1) {
                continue;
            }
            let copies = if rng.random_bool(0.1) { 2 } else { 1 };
            for copy in 0..copies {
                let got = d.push(s.seq, s.packet.timestamp, &s.packet.payload).unwrap();
                prop_assert_eq!(got.timestamp, s.packet.timestamp);
                prop_assert_eq!(got.info.clone(), parse_packet(&s.packet.payload).unwrap());
                if copy == 1 {
                    prop_assert_eq!(got.gap, Gap::Late);
                    continue;
                }
                let Some(prev) = last_delivered else { continue };
                let prev = &sent[prev];
                let prev_end = prev.packet.timestamp.wrapping_add(parse_packet(&prev.packet.payload).unwrap().duration_samples());
                let between = s.packet.timestamp.wrapping_sub(prev_end);
                let missing = u64::from(s.seq.wrapping_sub(prev.seq)) - 1;
                let expected = match (missing, between) {
                    (0, 0) => Gap::None,
                    (0, samples) => Gap::Silence { samples },
                    (packets, samples) => Gap::Lost { packets, samples: Some(samples) },
                };
                prop_assert_eq!(got.gap, expected);
            }
            last_delivered = Some(i);
        }
    }

    /// Reordered delivery: a packet older than the newest one seen is reported late,
    /// never as loss or silence, and its content is intact.
    #[test]
    fn reordered_packets_are_late(seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let start: u16 = rng.random();
        let sent = send_stream(&mut rng, 100, start);
        let mut order: Vec<usize> = (0..sent.len()).collect();
        // Local reordering: shuffle within windows of 4.
        for chunk in order.chunks_mut(4) {
            chunk.shuffle(&mut rng);
        }
        let mut d = OpusDepacketizer::new();
        let mut newest: Option<usize> = None;
        for i in order {
            let s = &sent[i];
            let got = d.push(s.seq, s.packet.timestamp, &s.packet.payload).unwrap();
            if newest.is_some_and(|n| i < n) {
                prop_assert_eq!(got.gap, Gap::Late);
            } else {
                prop_assert_ne!(got.gap, Gap::Late);
                newest = Some(i);
            }
        }
    }
}

/// Real libopus output with DTX through the packetizer and depacketizer, at every frame
/// duration: timestamps account for every 48 kHz sample (sent or suppressed), silence is
/// suppressed and marked, and every packet decodes to its TOC's duration.
#[test]
fn real_encoder_with_dtx_round_trip() {
    use crate::audio::decoder::AudioDecoder;
    use crate::codec::{
        OpusChannels, OpusDecoder, OpusEncoder, OpusEncoderConfig, OpusFrameDuration,
    };
    use crate::quality::signal::speech_like;

    let speech = speech_like(1.0, 48_000, 12_000, 5);
    let mut pcm = speech.clone();
    pcm.extend(std::iter::repeat_n(0i16, 48_000));
    pcm.extend(&speech);
    for (frame, samples) in [
        (OpusFrameDuration::Ms10, 480),
        (OpusFrameDuration::Ms20, 960),
        (OpusFrameDuration::Ms40, 1920),
        (OpusFrameDuration::Ms60, 2880),
    ] {
        let config = OpusEncoderConfig {
            dtx: true,
            frame,
            ..OpusEncoderConfig::default()
        };
        let mut encoder = OpusEncoder::new(config).unwrap();
        let mut decoder = OpusDecoder::new(OpusChannels::Mono).unwrap();
        let mut packetizer = OpusPacketizer::new(1_000_000);
        let mut depacketizer = OpusDepacketizer::new();
        let (mut out, mut decoded) = (vec![0u8; 1500], vec![0i16; 5760]);
        let (mut seq, mut covered, mut silence, mut talkspurts) = (0u16, 0u64, 0u64, 0);
        for chunk in pcm.chunks_exact(samples) {
            let encoded = encoder.encode(chunk, &mut out).unwrap();
            let packet = Bytes::copy_from_slice(&out[..encoded.len]);
            let Some(sent) = packetizer.packetize(packet).unwrap() else {
                continue;
            };
            let got = depacketizer
                .push(seq, sent.timestamp, &sent.payload)
                .unwrap();
            seq = seq.wrapping_add(1);
            assert_eq!(got.duration_samples(), samples as u32);
            match got.gap {
                Gap::None => assert!(!sent.marker),
                Gap::Silence { samples } => {
                    assert!(sent.marker, "first packet after suppressed DTX is marked");
                    silence += u64::from(samples);
                    talkspurts += 1;
                }
                other => panic!("unexpected gap {other:?}"),
            }
            covered += u64::from(got.duration_samples());
            assert_eq!(
                decoder.decode(&sent.payload, &mut decoded).unwrap(),
                samples
            );
        }
        // Every encoded sample is in a packet or in a reported silence gap, except DTX
        // packets suppressed after the last one sent (nothing follows to report them).
        let total = (pcm.len() / samples * samples) as u64;
        assert!(
            covered + silence <= total && total - (covered + silence) <= 48_000,
            "{frame:?}"
        );
        assert!(
            silence >= 24_000,
            "{frame:?}: half of the silent second suppressed, got {silence}"
        );
        assert!(talkspurts >= 1, "{frame:?}");
    }
}
