//! End to end with the real codec: OpenH264 encoder → H.264 packetizer → lossy network
//! with NACK retransmission and keyframe requests → frame buffer → depacketizer →
//! OpenH264 decoder.

use super::*;
use crate::codec::{H264Decoder, H264Encoder, H264EncoderConfig, I420Frame};
use crate::quality::psnr;
use crate::quality::signal::moving_pattern;
use crate::rtp::h264::{H264Depacketizer, H264Packetizer};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

/// What one run showed.
#[derive(Debug)]
struct Run {
    /// Access units the encoder produced.
    sent: usize,
    /// Pictures decoded.
    decoded: usize,
    /// Lowest luma PSNR of a decoded picture against the picture that was encoded.
    min_psnr: f64,
    stats: FrameBufferStats,
}

/// 320x240 at 30 fps for `frames` frames through a network with one-way delay 30 ms,
/// jitter up to 10 ms and `loss` random loss; the receive loop runs every millisecond.
/// Without `nack` only keyframe requests repair loss.
fn run(seed: u64, loss: f64, frames: u64, nack: bool) -> Run {
    let mut rng = StdRng::seed_from_u64(seed);
    let config = H264EncoderConfig {
        bitrate_bps: 400_000,
        skip_frames: false,
        ..H264EncoderConfig::default()
    };
    let mut encoder = H264Encoder::new(config).unwrap();
    let mut decoder = H264Decoder::new().unwrap();
    let mut packetizer = H264Packetizer::new(1200).unwrap();
    let mut depacketizer = H264Depacketizer::default();
    let mut config = FrameBufferConfig::default();
    config.nack.enabled = nack;
    let mut buffer = FrameBuffer::new(config);
    buffer.set_rtt(Duration::from_millis(60));
    let t0 = Instant::now();
    let (mut picture, mut decoded_picture) = (
        I420Frame::new(320, 240).unwrap(),
        I420Frame::new(320, 240).unwrap(),
    );
    let mut originals: HashMap<u32, (I420Frame, Vec<u8>)> = HashMap::new();
    let mut by_seq: HashMap<u16, VideoPacket> = HashMap::new();
    let mut heap: BinaryHeap<Reverse<(u64, u64, u16)>> = BinaryHeap::new();
    let (mut seq, mut order, mut keyframe_request_at) = (rng.random::<u16>(), 0u64, None);
    let (mut au, mut packets, mut nacks) = (Vec::new(), Vec::new(), Vec::new());
    let mut result = Run {
        sent: 0,
        decoded: 0,
        min_psnr: f64::INFINITY,
        stats: FrameBufferStats::default(),
    };
    let mut transmit = |at: u64, s: u16, rng: &mut StdRng, heap: &mut BinaryHeap<_>| {
        if !rng.random_bool(loss) {
            order += 1;
            heap.push(Reverse((at + 30 + rng.random_range(0..=10), order, s)));
        }
    };
    for now_ms in 0..frames * 33 + 200 {
        if now_ms % 33 == 0 && now_ms / 33 < frames {
            let index = now_ms / 33;
            if keyframe_request_at.is_some_and(|t| t <= now_ms) {
                encoder.request_keyframe();
                keyframe_request_at = None;
            }
            moving_pattern(&mut picture, index);
            if !encoder.encode(&picture, now_ms, &mut au).unwrap().skipped {
                let timestamp = (index * 3000) as u32;
                packets.clear();
                packetizer.packetize(&au, timestamp, &mut packets).unwrap();
                for p in packets.drain(..) {
                    let packet = VideoPacket::h264(seq, timestamp, p.marker, p.payload).unwrap();
                    transmit(now_ms, seq, &mut rng, &mut heap);
                    by_seq.insert(seq, packet);
                    seq = seq.wrapping_add(1);
                }
                originals.insert(timestamp, (picture.clone(), au.clone()));
                result.sent += 1;
            }
        }
        let now = t0 + Duration::from_millis(now_ms);
        while heap.peek().is_some_and(|Reverse((t, _, _))| *t <= now_ms) {
            let Some(Reverse((_, _, s))) = heap.pop() else {
                break;
            };
            buffer.insert(by_seq[&s].clone(), now);
        }
        while let Some(frame) = buffer.poll_frame() {
            let unit = depacketizer
                .depacketize_frame(frame.timestamp, frame.payloads.iter().map(|p| &p[..]))
                .unwrap();
            let (original, sent_au) = &originals[&frame.timestamp];
            // A frame the buffer calls complete is exactly what the encoder produced.
            assert_eq!(&unit.data[..], &sent_au[..]);
            if decoder.decode(&unit.data, &mut decoded_picture).unwrap() {
                result.decoded += 1;
                result.min_psnr = result
                    .min_psnr
                    .min(psnr(original, &decoded_picture).unwrap().y);
            }
        }
        buffer.poll_nack(now, &mut nacks);
        for s in nacks.drain(..) {
            // The NACK reaches the sender after the one-way delay; it resends at once.
            transmit(now_ms + 30, s, &mut rng, &mut heap);
        }
        if buffer.poll_keyframe_request(now) && keyframe_request_at.is_none() {
            keyframe_request_at = Some(now_ms + 30);
        }
    }
    result.stats = buffer.stats(t0 + Duration::from_millis(frames * 33 + 200));
    result
}

#[test]
fn lossless_call_decodes_every_frame() {
    let run = run(1, 0.0, 60, true);
    assert_eq!(run.decoded, run.sent, "{run:?}");
    assert!(run.min_psnr > 30.0, "{run:?}");
    // Jitter reorders packets, which may cost a NACK, but nothing is lost for good.
    let stats = &run.stats;
    assert_eq!(
        (
            stats.pli_count,
            stats.frames_dropped,
            stats.packets_unrecovered
        ),
        (0, 0, 0)
    );
}

#[test]
fn lossy_call_recovers_with_nack_and_decodes_cleanly() {
    let run = run(2, 0.05, 90, true);
    // Decoding never failed (unwrap above) and every decoded picture is as good as the
    // encoder made it: no frame was decoded against a missing reference.
    assert!(run.min_psnr > 30.0, "{run:?}");
    assert!(run.stats.nack_count > 0, "{run:?}");
    assert!(run.decoded as f64 >= 0.9 * run.sent as f64, "{run:?}");
}

#[test]
fn without_nack_keyframe_requests_repair_and_no_broken_frame_is_decoded() {
    let run = run(3, 0.05, 150, false);
    assert!(run.stats.pli_count > 0, "{run:?}");
    assert!(run.stats.keyframes_decodable > 1, "{run:?}");
    assert!(run.stats.frames_dropped > 0, "{run:?}");
    assert_eq!(run.stats.nack_count, 0);
    // Frames after a loss wait for the next keyframe instead of decoding into garbage.
    assert!(run.min_psnr > 30.0, "{run:?}");
    assert!(run.decoded < run.sent, "{run:?}");
}
