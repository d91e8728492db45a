//! Helpers shared by the media integration tests: the adaptive buffer under test, speech
//! traces played through a buffer, and Opus encoding of test signals.
// Each test binary compiles this module and uses only some of it.
#![allow(dead_code)]

use huddle_media::audio::decoder::AudioDecoder;
use huddle_media::audio::jitter::{JitterBuffer, JitterConfig, Playout};
use huddle_media::audio::netsim::{PlayoutRun, TraceConfig, play_l16, speech_like};
use huddle_media::codec::opus::MAX_PACKET_BYTES;
use huddle_media::codec::{OpusEncoder, OpusEncoderConfig};

/// Clock rate of the L16 traces (the default of [`TraceConfig`]).
pub const RATE: u32 = 16_000;
/// Frames pulled per second (10 ms each).
pub const PER_S: usize = 100;

/// An adaptive buffer with the default configuration over `decoder`.
pub fn adaptive<D: AudioDecoder>(decoder: D) -> JitterBuffer<D> {
    JitterBuffer::new(decoder, JitterConfig::default()).expect("default config is valid")
}

/// Plays `cfg`'s trace of a speech-like L16 signal through `playout`.
pub fn play_speech(playout: &mut impl Playout, cfg: &TraceConfig) -> PlayoutRun {
    let signal = speech_like(cfg.rate, cfg.packets * cfg.packet_samples());
    play_l16(playout, cfg, &signal, 0)
}

/// Encodes `signal` (48 kHz) into one Opus packet per frame of `config.frame`.
pub fn encode_opus(signal: &[i16], config: OpusEncoderConfig) -> Vec<Vec<u8>> {
    let frame = config.frame.samples() * config.channels.count();
    let mut encoder = OpusEncoder::new(config).expect("encoder");
    let mut buf = [0u8; MAX_PACKET_BYTES];
    signal
        .chunks_exact(frame)
        .map(|pcm| {
            let e = encoder.encode(pcm, &mut buf).expect("encode");
            buf[..e.len].to_vec()
        })
        .collect()
}
