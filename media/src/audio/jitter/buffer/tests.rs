//! Unit tests of packet intake and bounds; playout behaviour on traces is tested in
//! `media/tests/jitter_*.rs`.

use std::time::{Duration, Instant};

use super::*;
use crate::audio::l16::{L16Decoder, encode_l16};

fn buffer(config: JitterConfig) -> JitterBuffer<L16Decoder> {
    JitterBuffer::new(L16Decoder::new(8000, 1), config).unwrap()
}

fn packet(value: i16) -> Vec<u8> {
    let mut p = Vec::new();
    encode_l16(&[value; 160], &mut p);
    p
}

/// Inserts packets 0..n (20 ms each at 8 kHz) on time and pulls through them.
fn play(jb: &mut JitterBuffer<L16Decoder>, t0: Instant, n: u16) {
    for i in 0..n {
        let t = t0 + Duration::from_millis(20 * u64::from(i));
        jb.insert(i, u32::from(i) * 160, &packet(1000), t).unwrap();
        jb.pull(t);
        jb.pull(t + Duration::from_millis(10));
    }
}

#[test]
fn silence_before_the_first_packet_is_not_counted() {
    let mut jb = buffer(JitterConfig::default());
    let t0 = Instant::now();
    for k in 0..10 {
        assert_eq!(jb.pull(t0 + Duration::from_millis(10 * k)), &[0; 80][..]);
    }
    assert_eq!(
        jb.stats(),
        JitterStats {
            target_delay_ms: 60.0,
            ..Default::default()
        }
    );
}

#[test]
fn late_oversized_and_malformed_packets_are_refused_and_counted() {
    let mut jb = buffer(JitterConfig {
        max_payload_bytes: 400,
        ..Default::default()
    });
    let t0 = Instant::now();
    play(&mut jb, t0, 20);
    let t = t0 + Duration::from_millis(400);
    assert_eq!(jb.insert(3, 3 * 160, &packet(1), t), Err(InsertError::Late));
    assert_eq!(
        jb.insert(20, 20 * 160, &[0; 402], t),
        Err(InsertError::Oversized(402))
    );
    assert!(matches!(
        jb.insert(20, 20 * 160, &[0; 3], t),
        Err(InsertError::Malformed(_))
    ));
    assert!(matches!(
        jb.insert(20, 20 * 160, &[], t),
        Err(InsertError::Malformed(_))
    ));
    let s = jb.stats();
    assert_eq!((s.late_packets, s.packets_discarded), (1, 4));
    assert_eq!(s.packets_received, 20);
}

#[test]
fn one_stray_packet_far_ahead_does_not_flush_the_stream() {
    let mut jb = buffer(JitterConfig::default());
    let t0 = Instant::now();
    play(&mut jb, t0, 20);
    let t = t0 + Duration::from_millis(400);
    assert_eq!(
        jb.insert(20_020, 99_999_999, &packet(1), t),
        Err(InsertError::Jump)
    );
    // The stream goes on undisturbed.
    jb.insert(20, 20 * 160, &packet(1000), t).unwrap();
    assert_eq!(jb.stats().resyncs, 0);
    assert!(jb.packet_count() >= 1);
}

#[test]
fn capacity_is_bounded_in_packets_and_time_oldest_first() {
    let mut jb = buffer(JitterConfig {
        max_packets: 10,
        max_buffer_ms: 240,
        ..Default::default()
    });
    let t0 = Instant::now();
    // Nothing is pulled: everything piles up.
    for i in 0..50u16 {
        let _ = jb.insert(i, u32::from(i) * 160, &packet(100 * i as i16), t0);
        assert!(jb.packet_count() <= 10);
        assert!(jb.current_delay_ms() <= 240.0);
    }
    let s = jb.stats();
    assert_eq!(s.packets_received, 50);
    assert_eq!(s.packets_discarded, 50 - jb.packet_count() as u64);
    // The newest were kept: playout starts with packet 40 and goes on to 49.
    let mut out = Vec::new();
    for k in 0..20 {
        out.extend_from_slice(jb.pull(t0 + Duration::from_millis(10 * k)));
    }
    // After the 5 ms fade-in comes packet 40 (4000, maybe crossfading into 41).
    assert!(out[40..80].iter().all(|x| (4000..=4100).contains(x)));
    assert!(out.iter().filter(|&&x| x == 4900).count() > 80);
}

#[test]
fn twenty_ms_frames_and_stereo_are_supported() {
    let mut jb = JitterBuffer::new(
        L16Decoder::new(48_000, 2),
        JitterConfig {
            frame_ms: 20,
            max_payload_bytes: 4000,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(jb.frame_samples(), 960);
    let t0 = Instant::now();
    let mut p = Vec::new();
    encode_l16(&vec![500; 960 * 2], &mut p);
    for i in 0..50u16 {
        let t = t0 + Duration::from_millis(20 * u64::from(i));
        jb.insert(i, u32::from(i) * 960, &p, t).unwrap();
        assert_eq!(jb.pull(t).len(), 1920);
    }
    let s = jb.stats();
    assert_eq!(s.concealed_samples, 0);
    assert!(s.jitter_buffer_emitted_count >= 40 * 960);
}
