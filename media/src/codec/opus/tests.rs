//! Unit tests of the libopus wrappers against the real library.

use super::*;
use proptest::prelude::*;

/// A 440 Hz + 1 kHz tone mix with a slow amplitude envelope, `frames` frames of `frame`.
fn tone(frames: usize, frame: usize) -> Vec<i16> {
    (0..frames * frame)
        .map(|n| {
            let t = n as f64 / f64::from(SAMPLE_RATE);
            let env = 0.6 + 0.4 * (2.0 * std::f64::consts::PI * 3.0 * t).sin();
            let x = (2.0 * std::f64::consts::PI * 440.0 * t).sin()
                + 0.5 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin();
            (8000.0 * env * x) as i16
        })
        .collect()
}

fn encoder(config: OpusEncoderConfig) -> OpusEncoder {
    OpusEncoder::new(config).expect("valid config")
}

#[test]
fn rejects_settings_out_of_range() {
    let bad = [
        OpusEncoderConfig {
            bitrate_bps: 5_999,
            ..Default::default()
        },
        OpusEncoderConfig {
            complexity: 11,
            ..Default::default()
        },
        OpusEncoderConfig {
            expected_loss_percent: 101,
            ..Default::default()
        },
    ];
    for config in bad {
        assert!(matches!(
            OpusEncoder::new(config),
            Err(CodecError::Setting { .. })
        ));
    }
    assert!(OpusFrameDuration::from_samples(700).is_err());
    assert_eq!(
        OpusFrameDuration::from_samples(1920),
        Ok(OpusFrameDuration::Ms40)
    );
}

#[test]
fn encode_checks_the_frame_length() {
    let mut enc = encoder(OpusEncoderConfig::default());
    let mut out = [0u8; MAX_PACKET_BYTES];
    assert_eq!(
        enc.encode(&[0; 959], &mut out),
        Err(CodecError::InputLength {
            need: 960,
            have: 959
        })
    );
    let mut stereo = encoder(OpusEncoderConfig {
        channels: OpusChannels::Stereo,
        frame: OpusFrameDuration::Ms10,
        ..Default::default()
    });
    assert_eq!(stereo.frame_len(), 960);
    assert!(stereo.encode(&[0; 960], &mut out).is_ok());
}

#[test]
fn packet_samples_match_libopus_for_every_frame_duration() {
    let durations = [
        OpusFrameDuration::Ms10,
        OpusFrameDuration::Ms20,
        OpusFrameDuration::Ms40,
        OpusFrameDuration::Ms60,
    ];
    for app in [OpusApplication::Voip, OpusApplication::Audio] {
        for frame in durations {
            let mut enc = encoder(OpusEncoderConfig {
                application: app,
                frame,
                bitrate_bps: 64_000,
                ..Default::default()
            });
            let dec = OpusDecoder::new(OpusChannels::Mono).unwrap();
            let pcm = tone(3, frame.samples());
            let mut out = [0u8; MAX_PACKET_BYTES];
            for chunk in pcm.chunks(frame.samples()) {
                let packet = enc.encode(chunk, &mut out).unwrap();
                let bytes = &out[..packet.len];
                let ours = dec.packet_samples(bytes).unwrap();
                let theirs = ::opus::packet::get_nb_samples(bytes, SAMPLE_RATE).unwrap();
                assert_eq!(ours, theirs);
                assert_eq!(ours, frame.samples());
            }
        }
    }
}

#[test]
fn round_trip_decodes_every_sample_with_energy_kept() {
    let mut enc = encoder(OpusEncoderConfig::default());
    let mut dec = OpusDecoder::new(OpusChannels::Mono).unwrap();
    let pcm = tone(50, 960);
    let mut packet = [0u8; MAX_PACKET_BYTES];
    let mut decoded = Vec::new();
    let mut frame = [0i16; 960];
    for chunk in pcm.chunks(960) {
        let p = enc.encode(chunk, &mut packet).unwrap();
        assert!(!p.dtx);
        let n = dec.decode(&packet[..p.len], &mut frame).unwrap();
        assert_eq!(n, 960);
        decoded.extend_from_slice(&frame);
    }
    // Skip the start-up; compare signal energy (the codec delays, so not sample by sample).
    let energy = |x: &[i16]| x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>();
    let ratio = energy(&decoded[9600..]) / energy(&pcm[9600..]);
    assert!((0.7..1.3).contains(&ratio), "energy ratio {ratio}");
}

#[test]
fn lbrr_flag_follows_the_fec_setting() {
    for fec in [true, false] {
        let mut enc = encoder(OpusEncoderConfig {
            inband_fec: fec,
            expected_loss_percent: 20,
            ..Default::default()
        });
        let dec = OpusDecoder::new(OpusChannels::Mono).unwrap();
        let pcm = tone(50, 960);
        let mut out = [0u8; MAX_PACKET_BYTES];
        let with_fec = pcm
            .chunks(960)
            .filter(|chunk| {
                let p = enc.encode(chunk, &mut out).unwrap();
                dec.has_fec(&out[..p.len])
            })
            .count();
        if fec {
            // The first packet has no frame before it, and the encoder skips LBRR for frames
            // it judges unimportant, so not every packet carries it.
            assert!(with_fec > 30, "only {with_fec} of 50 packets carry LBRR");
        } else {
            assert_eq!(with_fec, 0);
        }
    }
}

#[test]
fn dtx_marks_silence_packets() {
    let mut enc = encoder(OpusEncoderConfig {
        dtx: true,
        ..Default::default()
    });
    let mut out = [0u8; MAX_PACKET_BYTES];
    let silence = [0i16; 960];
    let dec = OpusDecoder::new(OpusChannels::Mono).unwrap();
    let dtx = (0..50)
        .filter(|_| {
            let p = enc.encode(&silence, &mut out).unwrap();
            assert_eq!(p.dtx, dec.is_dtx(&out[..p.len]));
            p.dtx
        })
        .count();
    assert!(dtx > 30, "only {dtx} of 50 silent frames were DTX");
    let p = enc.encode(&tone(1, 960), &mut out).unwrap();
    assert!(!p.dtx && !dec.is_dtx(&out[..p.len]));
    assert!(!dec.is_dtx(&[]));
}

#[test]
fn conceal_and_fec_check_sizes() {
    let mut dec = OpusDecoder::new(OpusChannels::Stereo).unwrap();
    let mut out = [0i16; 1920];
    assert_eq!(dec.conceal(960, &mut out), Ok(960));
    assert!(dec.conceal(100, &mut out).is_err());
    assert!(dec.conceal(0, &mut out).is_err());
    assert_eq!(
        dec.conceal(1920, &mut out),
        Err(DecodeError::BufferTooSmall {
            need: 3840,
            have: 1920
        })
    );
    assert!(matches!(
        dec.decode_fec(&[], 960, &mut out),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn decode_refuses_a_small_buffer_and_empty_payload() {
    let mut enc = encoder(OpusEncoderConfig::default());
    let mut dec = OpusDecoder::new(OpusChannels::Mono).unwrap();
    let mut packet = [0u8; MAX_PACKET_BYTES];
    let p = enc.encode(&tone(1, 960), &mut packet).unwrap();
    let mut small = [0i16; 480];
    assert_eq!(
        dec.decode(&packet[..p.len], &mut small),
        Err(DecodeError::BufferTooSmall {
            need: 960,
            have: 480
        })
    );
    assert!(matches!(
        dec.decode(&[], &mut small),
        Err(DecodeError::Malformed(_))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn hostile_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut dec = OpusDecoder::new(OpusChannels::Stereo).unwrap();
        let mut out = vec![0i16; MAX_PACKET_SAMPLES * 2];
        if let Ok(n) = dec.decode(&bytes, &mut out) {
            prop_assert!(n <= MAX_PACKET_SAMPLES);
        }
        let _ = dec.has_fec(&bytes);
        let _ = dec.decode_fec(&bytes, 960, &mut out);
    }
}
