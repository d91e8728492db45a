//! Real OpenH264 round trips at 320x240, 640x360 and 1280x720: a moving test pattern is
//! encoded, decoded and compared by PSNR; keyframe flags are checked against the stream,
//! and a keyframe requested mid-stream must start a fresh decoder.

use huddle_media::codec::h264::is_keyframe;
use huddle_media::codec::{H264Decoder, H264Encoder, H264EncoderConfig, I420Frame};
use huddle_media::quality::{psnr, signal};

/// Frames per resolution; a keyframe is requested before frame `FORCED`.
const FRAMES: u64 = 16;
const FORCED: u64 = 9;

/// An encoder that codes every frame: the comparisons need each one, where a live
/// sender would let rate control skip some.
fn encoder_without_skips(bitrate_bps: u32) -> H264Encoder {
    H264Encoder::new(H264EncoderConfig {
        bitrate_bps,
        skip_frames: false,
        ..H264EncoderConfig::default()
    })
    .expect("encoder")
}

fn round_trip(width: usize, height: usize, bitrate_bps: u32) {
    let mut encoder = encoder_without_skips(bitrate_bps);
    let mut decoder = H264Decoder::new().expect("decoder");
    let mut late_decoder = H264Decoder::new().expect("decoder");
    let mut source = I420Frame::new(width, height).expect("frame");
    let mut picture = I420Frame::new(2, 2).expect("frame");
    let mut late_picture = I420Frame::new(2, 2).expect("frame");
    let mut au = Vec::new();
    let mut psnrs = Vec::new();
    for index in 0..FRAMES {
        signal::moving_pattern(&mut source, index);
        if index == FORCED {
            encoder.request_keyframe();
        }
        let encoded = encoder
            .encode(&source, index * 33, &mut au)
            .expect("encode");
        assert!(!encoded.skipped);
        assert_eq!(encoded.len, au.len());
        assert!(au.starts_with(&[0, 0, 0, 1]) || au.starts_with(&[0, 0, 1]));
        let expect_key = index == 0 || index == FORCED;
        assert_eq!(encoded.keyframe, expect_key, "frame {index}");
        assert_eq!(is_keyframe(&au), expect_key, "frame {index} NAL types");

        assert!(
            decoder.decode(&au, &mut picture).expect("decode"),
            "frame {index}"
        );
        assert_eq!((picture.width(), picture.height()), (width, height));
        let p = psnr(&source, &picture).expect("psnr");
        psnrs.push(p.y);

        // A decoder that joins at the requested keyframe decodes from there on.
        if index >= FORCED {
            assert!(
                late_decoder
                    .decode(&au, &mut late_picture)
                    .expect("late decode")
            );
            let late = psnr(&source, &late_picture).expect("psnr");
            assert!(
                (late.y - p.y).abs() < 0.01,
                "late joiner differs at {index}"
            );
        }
    }
    let mean = psnrs.iter().sum::<f64>() / psnrs.len() as f64;
    let min = psnrs.iter().copied().fold(f64::INFINITY, f64::min);
    eprintln!(
        "{width}x{height} at {bitrate_bps} b/s: luma PSNR mean {mean:.2} dB, min {min:.2} dB"
    );
    assert!(mean > 30.0, "{width}x{height}: mean PSNR {mean:.2}");
    assert!(min > 28.0, "{width}x{height}: min PSNR {min:.2}");
}

#[test]
fn round_trip_320x240() {
    round_trip(320, 240, 400_000);
}

#[test]
fn round_trip_640x360() {
    round_trip(640, 360, 1_000_000);
}

#[test]
fn round_trip_1280x720() {
    round_trip(1280, 720, 2_500_000);
}

#[test]
fn decoder_survives_damaged_access_units() {
    let mut encoder = H264Encoder::new(H264EncoderConfig::default()).expect("encoder");
    let mut decoder = H264Decoder::new().expect("decoder");
    let mut source = I420Frame::new(320, 240).expect("frame");
    let mut picture = I420Frame::new(2, 2).expect("frame");
    let mut au = Vec::new();
    signal::moving_pattern(&mut source, 0);
    encoder.encode(&source, 0, &mut au).expect("encode");
    // Truncated and bit-flipped copies must give an error or a picture, never a crash.
    for cut in [5, au.len() / 3, au.len() / 2, au.len() - 1] {
        let _ = decoder.decode(&au[..cut], &mut picture);
    }
    let mut flipped = au.clone();
    for i in (40..flipped.len()).step_by(97) {
        flipped[i] ^= 0x5a;
    }
    let _ = decoder.decode(&flipped, &mut picture);
    // The decoder still works on a clean keyframe afterwards.
    let mut fresh = H264Decoder::new().expect("decoder");
    assert!(fresh.decode(&au, &mut picture).expect("decode"));
    assert_eq!((picture.width(), picture.height()), (320, 240));
}

#[test]
fn size_change_restarts_with_a_keyframe() {
    let mut encoder = encoder_without_skips(H264EncoderConfig::default().bitrate_bps);
    let mut decoder = H264Decoder::new().expect("decoder");
    let mut picture = I420Frame::new(2, 2).expect("frame");
    let mut au = Vec::new();
    for (index, (w, h)) in [(320, 240), (320, 240), (640, 360), (640, 360)]
        .into_iter()
        .enumerate()
    {
        let mut source = I420Frame::new(w, h).expect("frame");
        signal::moving_pattern(&mut source, index as u64);
        let encoded = encoder
            .encode(&source, index as u64 * 33, &mut au)
            .expect("encode");
        // A new size needs new parameter sets and an IDR picture.
        assert_eq!(encoded.keyframe, index % 2 == 0, "frame {index}");
        assert!(decoder.decode(&au, &mut picture).expect("decode"));
        assert_eq!((picture.width(), picture.height()), (w, h));
        assert!(psnr(&source, &picture).expect("psnr").y > 28.0);
    }
}
