//! Fuzz target: `huddle_turn::fuzz::wire` (see turn/fuzz/README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| huddle_turn::fuzz::wire(data));
