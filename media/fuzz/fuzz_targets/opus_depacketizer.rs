//! Fuzz target: `huddle_media::rtp::fuzz::opus_depacketizer` (see media/fuzz/README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| huddle_media::rtp::fuzz::opus_depacketizer(data));
