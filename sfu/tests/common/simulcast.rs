//! The simulcast test publisher: three H.264 layers on one m-line, each payload tagged
//! with its layer, each layer with its own RTP timestamp base.

use std::sync::Mutex;
use std::time::Instant;

use str0m::Rtc;
use str0m::format::Codec;
use str0m::media::{Frequency, MediaTime};

use super::{Media, Seen, pt_for, send_media};

/// Simulcast layers a simulcast test publisher sends: rid, delta frame size, keyframe
/// size, RTP timestamp base (each layer its own, one near the 32-bit wrap).
pub const LAYERS: [(&str, usize, usize, u32); 3] = [
    ("q", 200, 1500, 0),
    ("h", 700, 3000, 1_000_000_000),
    ("f", 2400, 8000, u32::MAX - 90_000 * 4),
];

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
    let audio_only = Media {
        audio: media.audio,
        video: None,
        codec: media.codec,
    };
    send_media(name, rtc, &audio_only, n, start, level, false);
    let Some(video) = media.video else { return };
    if !n.is_multiple_of(2) {
        return;
    }
    let Some(pt) = pt_for(rtc, video, Codec::H264) else {
        return;
    };
    let now = Instant::now();
    let ticks = now.duration_since(start).as_micros() as u64 * 9 / 100;
    for (rid, delta_size, key_size, base) in LAYERS {
        let requested = {
            let mut seen = seen.lock().unwrap();
            let before = seen.force_keyframe.len();
            seen.force_keyframe.retain(|r| r != rid);
            seen.force_keyframe.len() != before
        };
        let key = n % 200 == 2 || requested;
        let mut frame = if key {
            vec![0, 0, 0, 1, 0x65]
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
