//! Property tests: arbitrary sequences of inserts (any sequence numbers, timestamps,
//! payloads, arrival times) and pulls never panic and keep the buffer within its bounds.

use std::time::{Duration, Instant};

use huddle_media::audio::decoder::{AudioDecoder, DecodeError};
use huddle_media::audio::jitter::{FixedDelayBuffer, JitterBuffer, JitterConfig, Playout};
use huddle_media::audio::l16::L16Decoder;
use proptest::prelude::*;

/// L16 whose payloads' first byte also decides whether FEC is claimed and whether
/// recovering it fails, so the FEC and error paths get arbitrary inputs too.
struct Erratic(L16Decoder);

impl AudioDecoder for Erratic {
    fn sample_rate(&self) -> u32 {
        self.0.sample_rate()
    }
    fn channels(&self) -> usize {
        self.0.channels()
    }
    fn packet_samples(&self, payload: &[u8]) -> Result<usize, DecodeError> {
        self.0.packet_samples(payload)
    }
    fn has_fec(&self, payload: &[u8]) -> bool {
        payload.first().is_some_and(|b| b % 2 == 1)
    }
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, DecodeError> {
        if payload.first() == Some(&0xee) {
            return Err(DecodeError::Codec("refused".into()));
        }
        self.0.decode(payload, out)
    }
    fn decode_fec(
        &mut self,
        payload: &[u8],
        samples: usize,
        out: &mut [i16],
    ) -> Result<usize, DecodeError> {
        if payload.first().is_some_and(|b| b % 3 == 0) {
            return Err(DecodeError::Codec("no fec".into()));
        }
        self.0.conceal(samples, out)
    }
    fn conceal(&mut self, samples: usize, out: &mut [i16]) -> Result<usize, DecodeError> {
        self.0.conceal(samples, out)
    }
    fn is_dtx(&self, payload: &[u8]) -> bool {
        payload.first() == Some(&0xdd)
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// A packet: sequence and timestamp steps from the previous one, payload, delay.
    Insert {
        seq_step: i32,
        ts_step: i64,
        payload: Vec<u8>,
        after_ms: u64,
    },
    Pull {
        after_ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let step = prop_oneof![8 => -3i32..4, 1 => any::<i32>()];
    let ts = prop_oneof![8 => -2i64..4, 1 => any::<i32>().prop_map(i64::from)];
    prop_oneof![
        (
            step,
            ts,
            proptest::collection::vec(any::<u8>(), 0..1000),
            0u64..40
        )
            .prop_map(|(seq_step, ts_step, payload, after_ms)| Op::Insert {
                seq_step,
                ts_step,
                payload,
                after_ms
            }),
        (0u64..25).prop_map(|after_ms| Op::Pull { after_ms }),
    ]
}

fn check(p: &mut impl Playout, ops: &[Op], rate: u32, channels: usize, max_ms: u32) {
    let t0 = Instant::now();
    let (mut now, mut seq, mut ts) = (Duration::ZERO, 0u16, 0u32);
    let frame = p.frame_samples() * channels;
    for op in ops {
        match op {
            Op::Insert {
                seq_step,
                ts_step,
                payload,
                after_ms,
            } => {
                now += Duration::from_millis(*after_ms);
                seq = seq.wrapping_add(*seq_step as u16);
                // Timestamp steps are in 10 ms units, or arbitrary when large.
                let unit = i64::from(rate / 100);
                ts = ts.wrapping_add((ts_step.wrapping_mul(unit)) as u32);
                let _ = p.insert(seq, ts, payload, t0 + now);
            }
            Op::Pull { after_ms } => {
                now += Duration::from_millis(*after_ms);
                assert_eq!(p.pull(t0 + now).len(), frame);
            }
        }
        let s = p.stats();
        assert!(
            s.current_delay_ms <= f64::from(max_ms) + 3.0 * 120.0,
            "{s:?}"
        );
        assert!(s.silent_concealed_samples <= s.concealed_samples);
        assert!(s.late_packets <= s.packets_discarded);
        assert!(s.packets_received <= ops.len() as u64);
    }
}

fn small_config() -> JitterConfig {
    JitterConfig {
        max_packets: 20,
        max_buffer_ms: 400,
        max_payload_bytes: 960,
        ..JitterConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn adaptive_buffer_survives_anything(ops in proptest::collection::vec(op(), 1..300)) {
        let mut jb = JitterBuffer::new(Erratic(L16Decoder::new(8000, 1)), small_config()).unwrap();
        check(&mut jb, &ops, 8000, 1, 400);
        prop_assert!(jb.packet_count() <= 20);
    }

    #[test]
    fn stereo_and_twenty_ms_frames_survive_anything(ops in proptest::collection::vec(op(), 1..200)) {
        let cfg = JitterConfig { frame_ms: 20, ..small_config() };
        let mut jb = JitterBuffer::new(Erratic(L16Decoder::new(16_000, 2)), cfg).unwrap();
        check(&mut jb, &ops, 16_000, 2, 400);
        prop_assert!(jb.packet_count() <= 20);
    }

    #[test]
    fn fixed_buffer_survives_anything(ops in proptest::collection::vec(op(), 1..300)) {
        let mut jb = FixedDelayBuffer::new(Erratic(L16Decoder::new(8000, 1)), 40, 10).unwrap();
        check(&mut jb, &ops, 8000, 1, 2000);
    }
}
