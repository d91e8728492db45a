//! Fuzz target: `huddle_media::video::fuzz::frame_buffer` (see media/fuzz/README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| huddle_media::video::fuzz::frame_buffer(data));
