//! Codec costs: Opus encode and decode of 20 ms mono frames at 48 kHz and 32 kb/s (as
//! samples per second, so real-time factor = rate / 48 000), and H.264 encode at 640x360
//! and 1280x720 on one thread (as frames per second), for a clean moving pattern and the
//! same with sensor noise.
//!
//! Run: `cargo bench -p huddle-media --bench codec -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use huddle_media::audio::decoder::AudioDecoder;
use huddle_media::codec::opus::{MAX_PACKET_BYTES, SAMPLE_RATE};
use huddle_media::codec::{
    H264Encoder, H264EncoderConfig, I420Frame, OpusChannels, OpusDecoder, OpusEncoder,
    OpusEncoderConfig,
};
use huddle_media::quality::signal;

const FRAME: usize = 960;

fn opus(c: &mut Criterion) {
    let pcm = signal::speech_like(4.0, SAMPLE_RATE, 16_000, 3);
    let frames: Vec<&[i16]> = pcm.chunks_exact(FRAME).collect();
    let config = OpusEncoderConfig::default();
    assert_eq!(config.bitrate_bps, 32_000);

    let mut encoder = OpusEncoder::new(config.clone()).expect("encoder");
    let mut buf = [0u8; MAX_PACKET_BYTES];
    let packets: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| {
            let p = encoder.encode(f, &mut buf).expect("encode");
            buf[..p.len].to_vec()
        })
        .collect();

    let mut group = c.benchmark_group("opus_20ms_mono_32kbps");
    group.throughput(Throughput::Elements(FRAME as u64));
    let mut encoder = OpusEncoder::new(config).expect("encoder");
    let mut i = 0;
    group.bench_function("encode", |b| {
        b.iter(|| {
            i = (i + 1) % frames.len();
            black_box(encoder.encode(frames[i], &mut buf).expect("encode"))
        })
    });
    let mut decoder = OpusDecoder::new(OpusChannels::Mono).expect("decoder");
    let mut out = [0i16; FRAME];
    let mut j = 0;
    group.bench_function("decode", |b| {
        b.iter(|| {
            j = (j + 1) % packets.len();
            black_box(decoder.decode(&packets[j], &mut out).expect("decode"))
        })
    });
    group.bench_function("conceal", |b| {
        b.iter(|| black_box(decoder.conceal(FRAME, &mut out).expect("conceal")))
    });
    group.finish();
}

fn h264(c: &mut Criterion) {
    let mut group = c.benchmark_group("h264_encode_1_thread");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    let sizes = [(640, 360, 1_000_000), (1280, 720, 2_500_000)];
    // The clean pattern moves exactly, which motion search finds at once; sensor noise of
    // ±4 levels is incompressible and makes the encoder work as on a real camera or harder.
    for ((width, height, bitrate_bps), noise) in sizes.into_iter().flat_map(|s| [(s, 0), (s, 4)]) {
        // A second of the moving pattern, encoded in a loop: one IDR, then P-frames.
        let frames: Vec<I420Frame> = (0..30)
            .map(|n| {
                let mut f = I420Frame::new(width, height).expect("frame");
                signal::moving_pattern(&mut f, n);
                if noise > 0 {
                    signal::add_luma_noise(&mut f, noise, n);
                }
                f
            })
            .collect();
        let mut encoder = H264Encoder::new(H264EncoderConfig {
            bitrate_bps,
            skip_frames: false,
            threads: 1,
            ..H264EncoderConfig::default()
        })
        .expect("encoder");
        let mut au = Vec::with_capacity(1 << 20);
        let mut n = 0u64;
        let name = if noise > 0 { "noisy" } else { "pattern" };
        group.bench_function(format!("{width}x{height}_{name}"), |b| {
            b.iter(|| {
                let frame = &frames[(n % 30) as usize];
                n += 1;
                black_box(encoder.encode(frame, n * 33, &mut au).expect("encode"))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, opus, h264);
criterion_main!(benches);
