//! Codec wrappers: libopus (through the `opus` crate) and OpenH264 (through `openh264`).
//!
//! Both wrap C libraries behind safe types: settings are validated before they reach the
//! library, buffer sizes are checked, and library failures come back as [`CodecError`].

pub mod h264;
pub mod i420;
pub mod opus;

pub use h264::{EncodedVideo, H264Decoder, H264Encoder, H264EncoderConfig};
pub use i420::I420Frame;
pub use opus::{
    EncodedAudio, OpusApplication, OpusChannels, OpusDecoder, OpusEncoder, OpusEncoderConfig,
    OpusFrameDuration, OpusSignal,
};

/// Why a codec call failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// A frame duration the codec (or this wrapper) does not support.
    #[error("unsupported frame size: {samples} samples per channel")]
    FrameSize { samples: usize },
    /// A setting outside the range the codec accepts.
    #[error("invalid {name}: {value}")]
    Setting { name: &'static str, value: i64 },
    /// Input of the wrong length for the configured frame.
    #[error("input has {have} samples, the frame needs {need}")]
    InputLength { need: usize, have: usize },
    /// The caller's output buffer cannot hold the result.
    #[error("output buffer too small: need {need}, have {have}")]
    BufferTooSmall { need: usize, have: usize },
    /// Malformed input (packet or picture).
    #[error("malformed input: {0}")]
    Malformed(String),
    /// The codec library reported an error.
    #[error("{library}: {detail}")]
    Library {
        library: &'static str,
        detail: String,
    },
}
