//! The simulcast test publisher: three H.264 layers on one m-line, each payload tagged
//! with its layer, each layer with its own RTP timestamp base.

use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use huddle_media::codec::{H264Encoder, H264EncoderConfig, I420Frame};
use str0m::Rtc;
use str0m::format::Codec;
use str0m::media::{Frequency, MediaTime};

use super::{Media, Seen, pt_for, send_media};

/// Simulcast layers a simulcast test publisher sends: rid, delta frame size, keyframe
/// size, RTP timestamp base (each layer its own, one near the 32-bit wrap), and the
/// picture size its keyframes declare in their SPS.
#[allow(clippy::type_complexity)]
pub const LAYERS: [(&str, usize, usize, u32, (u16, u16)); 3] = [
    ("q", 200, 1500, 0, (320, 180)),
    ("h", 700, 3000, 1_000_000_000, (640, 360)),
    ("f", 2400, 8000, u32::MAX - 90_000 * 4, (1280, 720)),
];

/// Real H.264 parameter sets (SPS and PPS, Annex B) for each layer's size, from
/// OpenH264, which the test keyframes start with.
fn parameter_sets() -> &'static [Vec<u8>; 3] {
    static SETS: OnceLock<[Vec<u8>; 3]> = OnceLock::new();
    SETS.get_or_init(|| {
        LAYERS.map(|(.., (w, h))| {
            let mut encoder = H264Encoder::new(H264EncoderConfig::default()).unwrap();
            let frame = I420Frame::new(w.into(), h.into()).unwrap();
            let mut au = Vec::new();
            encoder.encode(&frame, 0, &mut au).unwrap();
            // Everything before the IDR slice (NAL type 5).
            let idr = au
                .windows(4)
                .position(|x| x[..3] == [0, 0, 1] && x[3] & 0x1f == 5)
                .unwrap();
            au.truncate(idr.saturating_sub(1));
            au
        })
    })
}

/// Audio as [`send_media`], and every other tick one H.264 frame on each simulcast
/// layer of [`LAYERS`], tagged with the layer; a layer sends a keyframe every 100th
/// frame and on the frame after a keyframe request for its rid.
#[allow(clippy::too_many_arguments)]
pub(super) fn send_simulcast(
    name: &str,
    rtc: &mut Rtc,
    media: &Media,
    n: u64,
    start: Instant,
    level: u8,
    seen: &Mutex<Seen>,
) {
    let mut audio_only = Media {
        audio: media.audio,
        video: None,
        codec: media.codec,
        video_delay: 0,
        held: Default::default(),
    };
    send_media(name, rtc, &mut audio_only, n, start, level, false);
    let Some(video) = media.video else { return };
    if !n.is_multiple_of(2) {
        return;
    }
    let Some(pt) = pt_for(rtc, video, Codec::H264) else {
        return;
    };
    let now = Instant::now();
    let ticks = now.duration_since(start).as_micros() as u64 * 9 / 100;
    for (i, (rid, delta_size, key_size, base, _)) in LAYERS.into_iter().enumerate() {
        let requested = {
            let mut seen = seen.lock().unwrap();
            let before = seen.force_keyframe.len();
            seen.force_keyframe.retain(|r| r != rid);
            seen.force_keyframe.len() != before
        };
        let key = n % 200 == 2 || requested;
        let mut frame = if key {
            let mut f = parameter_sets()[i].clone();
            f.extend_from_slice(&[0, 0, 0, 1, 0x65]);
            f
        } else {
            vec![0, 0, 0, 1, 0x41]
        };
        frame.extend_from_slice(format!("from={name};n={n};layer={rid};").as_bytes());
        frame.resize(if key { key_size } else { delta_size }, 0x42);
        let ts = MediaTime::new(
            u64::from(base.wrapping_add(ticks as u32)),
            Frequency::NINETY_KHZ,
        );
        if let Some(w) = rtc.writer(video) {
            let _ = w.rid(rid.into()).write(pt, now, ts, frame);
        }
    }
}
