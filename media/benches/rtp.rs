//! Per-packet cost of RTP depacketizing (Opus, H.264) and of the video frame buffer.
//! Each benchmark processes a whole stream per iteration; throughput is per packet.
//!
//! `cargo bench -p huddle-media --bench rtp -- --warm-up-time 1 --measurement-time 3`

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use huddle_media::rtp::PayloadPacket;
use huddle_media::rtp::h264::{H264Depacketizer, H264Packetizer, Output};
use huddle_media::rtp::opus::OpusDepacketizer;
use huddle_media::video::{FrameBuffer, FrameBufferConfig, VideoPacket};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// 1000 Opus packets of 20 ms at about 32 kbit/s (80 bytes).
fn opus_stream() -> Vec<(u16, u32, Vec<u8>)> {
    (0..1000u32)
        .map(|i| {
            let mut p = vec![0x78u8]; // CELT FB 20 ms, code 0
            p.extend((0..79).map(|j| (i * 7 + j) as u8 | 1));
            (i as u16, i * 960, p)
        })
        .collect()
}

/// Two seconds of 30 fps H.264 at about 1.5 Mbit/s: a 40 kB keyframe (SPS, PPS, IDR)
/// then delta frames of 3–9 kB, packetized at 1200 bytes.
fn h264_stream() -> Vec<(u16, PayloadPacket)> {
    let mut packetizer = H264Packetizer::new(1200).unwrap();
    let mut packets = Vec::new();
    for frame in 0..60u32 {
        let mut au = Vec::new();
        let nal = |au: &mut Vec<u8>, header: u8, len: usize| {
            au.extend_from_slice(&[0, 0, 0, 1, header]);
            au.extend((0..len).map(|i| (i % 251 + 1) as u8));
        };
        if frame == 0 {
            nal(&mut au, 0x67, 12);
            nal(&mut au, 0x68, 4);
            nal(&mut au, 0x65, 40_000);
        } else {
            nal(&mut au, 0x41, 3_000 + (frame as usize * 997) % 6_000);
        }
        packetizer
            .packetize(&au, frame * 3000, &mut packets)
            .unwrap();
    }
    packets
        .into_iter()
        .enumerate()
        .map(|(i, p)| (i as u16, p))
        .collect()
}

fn opus(c: &mut Criterion) {
    let stream = opus_stream();
    let mut group = c.benchmark_group("opus");
    group.throughput(Throughput::Elements(stream.len() as u64));
    group.bench_function("depacketize", |b| {
        b.iter_batched_ref(
            OpusDepacketizer::new,
            |d| {
                for (seq, ts, payload) in &stream {
                    black_box(d.push(*seq, *ts, payload).unwrap());
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn h264(c: &mut Criterion) {
    let stream = h264_stream();
    let mut group = c.benchmark_group("h264");
    group.throughput(Throughput::Elements(stream.len() as u64));
    group.bench_function("depacketize", |b| {
        b.iter_batched_ref(
            H264Depacketizer::default,
            |d| {
                for (seq, p) in &stream {
                    d.push(*seq, p.timestamp, p.marker, &p.payload).unwrap();
                    while let Some(out) = d.poll_output() {
                        assert!(matches!(out, Output::AccessUnit(_)));
                        black_box(out);
                    }
                }
            },
            BatchSize::SmallInput,
        )
    });
    let units: Vec<(u32, Vec<u8>)> = {
        let mut d = H264Depacketizer::default();
        let mut units = Vec::new();
        for (seq, p) in &stream {
            d.push(*seq, p.timestamp, p.marker, &p.payload).unwrap();
            while let Some(Output::AccessUnit(au)) = d.poll_output() {
                units.push((au.timestamp, au.data.to_vec()));
            }
        }
        units
    };
    group.bench_function("packetize", |b| {
        let mut packetizer = H264Packetizer::new(1200).unwrap();
        let mut out = Vec::with_capacity(64);
        b.iter(|| {
            for (ts, au) in &units {
                out.clear();
                packetizer.packetize(au, *ts, &mut out).unwrap();
                black_box(&out);
            }
        })
    });
    group.finish();
}

fn frame_buffer(c: &mut Criterion) {
    let stream = h264_stream();
    let t0 = Instant::now();
    let packets: Vec<(VideoPacket, Instant)> = stream
        .iter()
        .map(|(seq, p)| {
            let arrival = t0 + Duration::from_micros(u64::from(p.timestamp) * 100 / 9);
            (
                VideoPacket::h264(*seq, p.timestamp, p.marker, p.payload.clone()).unwrap(),
                arrival,
            )
        })
        .collect();
    let mut group = c.benchmark_group("frame_buffer");
    group.throughput(Throughput::Elements(packets.len() as u64));
    // Every 50th packet late by 3 positions: frames wait, NACK entries come and go.
    let mut reordered = packets.clone();
    for i in (50..reordered.len() - 3).step_by(50) {
        reordered[i..=i + 3].rotate_left(1);
    }
    // Polling frames and NACKs after every packet as a receive loop would.
    for (name, input) in [
        ("insert_in_order", &packets),
        ("insert_reordered", &reordered),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    (
                        FrameBuffer::new(FrameBufferConfig::default()),
                        input.clone(),
                    )
                },
                |(mut buffer, packets)| run(&mut buffer, packets),
                BatchSize::SmallInput,
            )
        });
    }
    group.bench_function("inspect_h264_payload", |b| {
        b.iter(|| {
            for (seq, p) in &stream {
                black_box(
                    VideoPacket::h264(*seq, p.timestamp, p.marker, p.payload.clone()).unwrap(),
                );
            }
        })
    });
    group.finish();
}

fn run(buffer: &mut FrameBuffer, packets: Vec<(VideoPacket, Instant)>) -> usize {
    let count = packets.len();
    let mut nacks = Vec::new();
    let mut frames = 0;
    for (packet, arrival) in packets {
        buffer.insert(packet, arrival);
        while let Some(frame) = buffer.poll_frame() {
            frames += black_box(frame).payloads.len();
        }
        buffer.poll_nack(arrival, &mut nacks);
    }
    // Every packet came out in a frame: the stream was fully processed.
    assert_eq!(frames, count);
    frames
}

criterion_group!(benches, opus, h264, frame_buffer);
criterion_main!(benches);
