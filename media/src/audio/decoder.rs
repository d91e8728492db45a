//! The interface the jitter buffer needs from an audio decoder: decode, recover a lost frame
//! from in-band FEC, and conceal. Implemented for libopus by `codec::opus::OpusDecoder`.

/// Why a decoder call failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The payload is not a valid packet for this codec.
    #[error("malformed audio packet: {0}")]
    Malformed(String),
    /// The output buffer cannot hold the decoded samples.
    #[error("output buffer too small: need {need} samples, have {have}")]
    BufferTooSmall { need: usize, have: usize },
    /// The codec library reported an error.
    #[error("codec error: {0}")]
    Codec(String),
}

/// A stateful audio decoder producing interleaved 16-bit PCM.
pub trait AudioDecoder {
    /// Output sample rate in Hz.
    fn sample_rate(&self) -> u32;
    /// Output channels (interleaved in `out`).
    fn channels(&self) -> usize;
    /// Samples per channel that `payload` decodes to, without decoding it.
    fn packet_samples(&self, payload: &[u8]) -> Result<usize, DecodeError>;
    /// Whether `payload` carries in-band FEC data for the frame before it.
    fn has_fec(&self, payload: &[u8]) -> bool;
    /// Decodes one packet into `out`; returns samples per channel written.
    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, DecodeError>;
    /// Recovers the lost frame *before* `payload` (`samples` per channel) from its in-band
    /// FEC; returns samples per channel written.
    fn decode_fec(
        &mut self,
        payload: &[u8],
        samples: usize,
        out: &mut [i16],
    ) -> Result<usize, DecodeError>;
    /// Conceals one lost frame of `samples` per channel (packet-loss concealment).
    fn conceal(&mut self, samples: usize, out: &mut [i16]) -> Result<usize, DecodeError>;
    /// Whether `payload` is a discontinuous-transmission (silence) packet, after which a
    /// timestamp gap is a pause in talking rather than loss. Codecs without DTX keep `false`.
    fn is_dtx(&self, payload: &[u8]) -> bool {
        let _ = payload;
        false
    }
}
