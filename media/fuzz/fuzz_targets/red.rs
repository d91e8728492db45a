//! Fuzz target: `huddle_media::rtp::fuzz::red` (see media/fuzz/README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| huddle_media::rtp::fuzz::red(data));
