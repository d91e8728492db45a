use super::*;
use huddle_media::codec::{H264Encoder, H264EncoderConfig, I420Frame};
use proptest::prelude::*;

/// An IDR access unit (with SPS/PPS) of a `width` x `height` picture from OpenH264.
fn h264_keyframe(width: usize, height: usize) -> Vec<u8> {
    let mut encoder = H264Encoder::new(H264EncoderConfig::default()).unwrap();
    let frame = I420Frame::new(width, height).unwrap();
    let mut out = Vec::new();
    let encoded = encoder.encode(&frame, 0, &mut out).unwrap();
    assert!(encoded.keyframe, "the first picture is an IDR");
    out
}

#[test]
fn h264_sizes_come_from_the_sps_including_cropping() {
    // 180, 360 and 90 are not multiples of 16: the SPS codes whole macroblocks and a
    // crop, which the size must subtract.
    for (w, h) in [(320, 180), (640, 360), (1280, 720), (160, 90), (176, 144)] {
        let au = h264_keyframe(w, h);
        assert_eq!(
            keyframe_size(Codec::H264, &au),
            Some((w as u16, h as u16)),
            "{w}x{h}"
        );
    }
}

#[test]
fn h264_without_an_sps_has_no_size() {
    let au = h264_keyframe(320, 180);
    // Drop everything up to the first slice: PPS and IDR slice only.
    let slice_start = au
        .windows(4)
        .position(|w| w[..3] == [0, 0, 1] && w[3] & 0x1f == 8)
        .unwrap();
    assert_eq!(h264_sps_size(&au[slice_start..]), None);
    assert_eq!(h264_sps_size(&[]), None);
    // A truncated SPS does not parse.
    let sps_start = au.windows(4).position(|w| w == [0, 0, 1, 0x67]).unwrap();
    assert_eq!(h264_sps_size(&au[..sps_start + 7]), None);
}

/// A VP8 frame header (RFC 6386 §9.1) with the given key bit and size.
fn vp8_header(keyframe: bool, width: u16, height: u16) -> Vec<u8> {
    // Frame tag: key bit (0 = key), version 0, show_frame, first partition size.
    let tag: u32 = u32::from(!keyframe) | (1 << 4) | (100 << 5);
    let mut f = tag.to_le_bytes()[..3].to_vec();
    f.extend_from_slice(&[0x9d, 0x01, 0x2a]);
    // Width and height with upscaling bits set: they are not part of the size.
    f.extend_from_slice(&(width | 0x4000).to_le_bytes());
    f.extend_from_slice(&(height | 0x8000).to_le_bytes());
    f.extend_from_slice(&[0; 20]);
    f
}

#[test]
fn vp8_keyframes_give_their_size_and_delta_frames_none() {
    assert_eq!(
        keyframe_size(Codec::Vp8, &vp8_header(true, 640, 360)),
        Some((640, 360))
    );
    assert_eq!(
        keyframe_size(Codec::Vp8, &vp8_header(true, 1280, 720)),
        Some((1280, 720))
    );
    assert_eq!(vp8_keyframe_size(&vp8_header(false, 640, 360)), None);
    let mut bad_start = vp8_header(true, 640, 360);
    bad_start[4] = 0;
    assert_eq!(vp8_keyframe_size(&bad_start), None);
    assert_eq!(vp8_keyframe_size(&vp8_header(true, 640, 360)[..9]), None);
    assert_eq!(
        keyframe_size(Codec::Opus, &vp8_header(true, 640, 360)),
        None
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = keyframe_size(Codec::Vp8, &bytes);
        let mut au = vec![0, 0, 0, 1, 0x67];
        au.extend_from_slice(&bytes);
        let _ = keyframe_size(Codec::H264, &au);
        let _ = keyframe_size(Codec::H264, &bytes);
    }
}
