//! Safe libopus wrappers: [`OpusEncoder`] with the settings a call needs (bitrate, complexity,
//! in-band FEC, expected loss, DTX, frame duration) and [`OpusDecoder`], which decodes,
//! recovers a lost frame from the next packet's FEC data, and conceals, and implements the
//! jitter buffer's [`AudioDecoder`].
//!
//! Everything runs at 48 kHz, the RTP clock rate of Opus (RFC 7587 §4.1).

use super::CodecError;
use crate::audio::decoder::{AudioDecoder, DecodeError};
use crate::rtp::opus::{DTX_MAX_BYTES, parse_packet};

/// Sample rate of every encoder and decoder here, in Hz.
pub const SAMPLE_RATE: u32 = 48_000;

/// Output buffer size that always holds one encoded packet: libopus recommends 4000 bytes.
pub const MAX_PACKET_BYTES: usize = 4000;

/// Samples per channel in the longest packet, 120 ms (RFC 6716 §3.2.5).
const MAX_PACKET_SAMPLES: usize = crate::rtp::opus::MAX_PACKET_SAMPLES as usize;

/// Samples per channel in 2.5 ms at 48 kHz, the granularity of Opus frame durations.
const SAMPLES_PER_2_5_MS: usize = 120;

/// Audio channel layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpusChannels {
    /// One channel.
    Mono,
    /// Two channels, interleaved left/right.
    Stereo,
}

impl OpusChannels {
    /// Number of interleaved channels.
    pub fn count(self) -> usize {
        match self {
            Self::Mono => 1,
            Self::Stereo => 2,
        }
    }

    fn to_lib(self) -> ::opus::Channels {
        match self {
            Self::Mono => ::opus::Channels::Mono,
            Self::Stereo => ::opus::Channels::Stereo,
        }
    }
}

/// What the encoder tunes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpusApplication {
    /// Speech: favours intelligibility, uses SILK (and so LBRR FEC) at call bitrates.
    Voip,
    /// Music or mixed content: favours fidelity to the input.
    Audio,
}

/// A hint about the content, steering libopus between SILK (speech, with LBRR FEC) and
/// CELT (music, no FEC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpusSignal {
    /// Let the encoder classify the input.
    Auto,
    /// Speech: prefer SILK/hybrid modes.
    Voice,
    /// Music: prefer CELT.
    Music,
}

/// Duration of one encoded frame. 2.5 and 5 ms frames are CELT-only and carry no FEC, so
/// they are not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpusFrameDuration {
    /// 10 ms.
    Ms10,
    /// 20 ms, the usual choice for calls.
    Ms20,
    /// 40 ms.
    Ms40,
    /// 60 ms.
    Ms60,
}

impl OpusFrameDuration {
    /// Samples per channel at 48 kHz.
    pub fn samples(self) -> usize {
        match self {
            Self::Ms10 => 480,
            Self::Ms20 => 960,
            Self::Ms40 => 1920,
            Self::Ms60 => 2880,
        }
    }

    /// The duration whose frame holds `samples` per channel at 48 kHz, if there is one.
    pub fn from_samples(samples: usize) -> Result<Self, CodecError> {
        match samples {
            480 => Ok(Self::Ms10),
            960 => Ok(Self::Ms20),
            1920 => Ok(Self::Ms40),
            2880 => Ok(Self::Ms60),
            _ => Err(CodecError::FrameSize { samples }),
        }
    }
}

/// Encoder settings. Defaults suit a mono voice call: 32 kb/s, 20 ms, FEC on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusEncoderConfig {
    /// Mono or stereo input.
    pub channels: OpusChannels,
    /// Speech or general audio tuning.
    pub application: OpusApplication,
    /// Target bitrate in bits per second (6 000..=510 000).
    pub bitrate_bps: u32,
    /// CPU/quality trade-off, 0 (fastest) ..= 10 (best).
    pub complexity: u8,
    /// Whether to add in-band FEC (LBRR) to packets.
    pub inband_fec: bool,
    /// Loss the encoder expects, in percent (0..=100). libopus only codes LBRR data when
    /// this is above zero, and spends more bits on it as it grows.
    pub expected_loss_percent: u8,
    /// Discontinuous transmission: near-empty packets during silence.
    pub dtx: bool,
    /// Content hint.
    pub signal: OpusSignal,
    /// Frame duration.
    pub frame: OpusFrameDuration,
}

impl Default for OpusEncoderConfig {
    fn default() -> Self {
        Self {
            channels: OpusChannels::Mono,
            application: OpusApplication::Voip,
            bitrate_bps: 32_000,
            complexity: 9,
            inband_fec: true,
            expected_loss_percent: 10,
            dtx: false,
            signal: OpusSignal::Auto,
            frame: OpusFrameDuration::Ms20,
        }
    }
}

/// One encoded packet written into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedAudio {
    /// Bytes written at the start of the output buffer.
    pub len: usize,
    /// The packet carries no audio (DTX silence): the sender may skip it.
    pub dtx: bool,
}

/// A libopus encoder at 48 kHz.
pub struct OpusEncoder {
    /// The libopus encoder state.
    inner: ::opus::Encoder,
    /// Settings in force, kept so callers can read them back cheaply.
    config: OpusEncoderConfig,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OpusEncoder {
    /// Creates an encoder with `config`, validating every setting first.
    pub fn new(config: OpusEncoderConfig) -> Result<Self, CodecError> {
        let application = match config.application {
            OpusApplication::Voip => ::opus::Application::Voip,
            OpusApplication::Audio => ::opus::Application::Audio,
        };
        let inner = ::opus::Encoder::new(SAMPLE_RATE, config.channels.to_lib(), application)
            .map_err(lib_error)?;
        let mut encoder = Self {
            inner,
            config: config.clone(),
        };
        encoder.set_bitrate(config.bitrate_bps)?;
        encoder.set_complexity(config.complexity)?;
        encoder.set_inband_fec(config.inband_fec)?;
        encoder.set_expected_loss(config.expected_loss_percent)?;
        encoder.set_dtx(config.dtx)?;
        encoder.set_signal(config.signal)?;
        encoder.set_frame_duration(config.frame);
        Ok(encoder)
    }

    /// Settings in force.
    pub fn config(&self) -> &OpusEncoderConfig {
        &self.config
    }

    /// Interleaved samples one `encode` call takes.
    pub fn frame_len(&self) -> usize {
        self.config.frame.samples() * self.config.channels.count()
    }

    /// Changes the target bitrate (6 000..=510 000 b/s), e.g. on a bandwidth estimate.
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), CodecError> {
        if !(6_000..=510_000).contains(&bps) {
            return Err(setting("bitrate", bps));
        }
        // In range, so it fits an i32.
        let bits = i32::try_from(bps).map_err(|_| setting("bitrate", bps))?;
        self.inner
            .set_bitrate(::opus::Bitrate::Bits(bits))
            .map_err(lib_error)?;
        self.config.bitrate_bps = bps;
        Ok(())
    }

    /// Changes the complexity (0..=10).
    pub fn set_complexity(&mut self, complexity: u8) -> Result<(), CodecError> {
        if complexity > 10 {
            return Err(setting("complexity", complexity));
        }
        self.inner
            .set_complexity(i32::from(complexity))
            .map_err(lib_error)?;
        self.config.complexity = complexity;
        Ok(())
    }

    /// Turns in-band FEC (LBRR) on or off.
    pub fn set_inband_fec(&mut self, on: bool) -> Result<(), CodecError> {
        self.inner.set_inband_fec(on).map_err(lib_error)?;
        self.config.inband_fec = on;
        Ok(())
    }

    /// Tells the encoder how much loss to expect (0..=100 %), e.g. from RTCP receiver reports.
    pub fn set_expected_loss(&mut self, percent: u8) -> Result<(), CodecError> {
        if percent > 100 {
            return Err(setting("expected loss percent", percent));
        }
        self.inner
            .set_packet_loss_perc(i32::from(percent))
            .map_err(lib_error)?;
        self.config.expected_loss_percent = percent;
        Ok(())
    }

    /// Turns discontinuous transmission on or off.
    pub fn set_dtx(&mut self, on: bool) -> Result<(), CodecError> {
        self.inner.set_dtx(on).map_err(lib_error)?;
        self.config.dtx = on;
        Ok(())
    }

    /// Changes the content hint.
    pub fn set_signal(&mut self, signal: OpusSignal) -> Result<(), CodecError> {
        let lib = match signal {
            OpusSignal::Auto => ::opus::Signal::Auto,
            OpusSignal::Voice => ::opus::Signal::Voice,
            OpusSignal::Music => ::opus::Signal::Music,
        };
        self.inner.set_signal(lib).map_err(lib_error)?;
        self.config.signal = signal;
        Ok(())
    }

    /// Changes the frame duration for the next `encode` call.
    pub fn set_frame_duration(&mut self, frame: OpusFrameDuration) {
        // libopus takes the frame size from each call, so only the check in `encode` changes.
        self.config.frame = frame;
    }

    /// Encodes one frame of interleaved PCM (exactly [`Self::frame_len`] samples) into
    /// `out`, which should hold [`MAX_PACKET_BYTES`].
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<EncodedAudio, CodecError> {
        let need = self.frame_len();
        if pcm.len() != need {
            return Err(CodecError::InputLength {
                need,
                have: pcm.len(),
            });
        }
        if out.is_empty() {
            return Err(CodecError::BufferTooSmall { need: 1, have: 0 });
        }
        let len = self.inner.encode(pcm, out).map_err(lib_error)?;
        Ok(EncodedAudio {
            len,
            dtx: len <= DTX_MAX_BYTES,
        })
    }

    /// Samples per channel the encoder delays its output by (its look-ahead).
    pub fn lookahead(&mut self) -> Result<usize, CodecError> {
        let samples = self.inner.get_lookahead().map_err(lib_error)?;
        usize::try_from(samples).map_err(|_| lib_detail("negative look-ahead"))
    }
}

/// A libopus decoder at 48 kHz.
pub struct OpusDecoder {
    /// The libopus decoder state.
    inner: ::opus::Decoder,
    /// Output channels.
    channels: OpusChannels,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl OpusDecoder {
    /// Creates a decoder producing `channels` interleaved channels at 48 kHz.
    pub fn new(channels: OpusChannels) -> Result<Self, CodecError> {
        let inner = ::opus::Decoder::new(SAMPLE_RATE, channels.to_lib()).map_err(lib_error)?;
        Ok(Self { inner, channels })
    }

    /// Checks `out` holds `samples` per channel and returns the slice libopus may fill.
    fn output<'a>(&self, samples: usize, out: &'a mut [i16]) -> Result<&'a mut [i16], DecodeError> {
        let need = samples * self.channels.count();
        let have = out.len();
        out.get_mut(..need)
            .ok_or(DecodeError::BufferTooSmall { need, have })
    }
}

/// Samples for a lost stretch must be a whole number of 2.5 ms steps, at most 120 ms.
fn check_lost_samples(samples: usize) -> Result<(), DecodeError> {
    if samples == 0 || !samples.is_multiple_of(SAMPLES_PER_2_5_MS) || samples > MAX_PACKET_SAMPLES {
        return Err(DecodeError::Codec(format!(
            "cannot conceal {samples} samples: not a multiple of 2.5 ms up to 120 ms"
        )));
    }
    Ok(())
}

impl AudioDecoder for OpusDecoder {
    fn sample_rate(&self) -> u32 {
        SAMPLE_RATE
    }

    fn channels(&self) -> usize {
        self.channels.count()
    }

    fn packet_samples(&self, payload: &[u8]) -> Result<usize, DecodeError> {
        parse_packet(payload)
            .map(|info| info.duration_samples() as usize)
            .map_err(|e| DecodeError::Malformed(e.to_string()))
    }

    fn has_fec(&self, payload: &[u8]) -> bool {
        parse_packet(payload).is_ok_and(|info| info.has_lbrr(payload))
    }

    fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, DecodeError> {
        // An empty payload means "lost" to libopus; here loss goes through `conceal`.
        let samples = self.packet_samples(payload)?;
        let out = self.output(samples, out)?;
        self.inner.decode(payload, out, false).map_err(decode_error)
    }

    fn decode_fec(
        &mut self,
        payload: &[u8],
        samples: usize,
        out: &mut [i16],
    ) -> Result<usize, DecodeError> {
        check_lost_samples(samples)?;
        self.packet_samples(payload)?;
        let out = self.output(samples, out)?;
        // Without LBRR data libopus conceals instead, which is still the best available.
        self.inner.decode(payload, out, true).map_err(decode_error)
    }

    fn conceal(&mut self, samples: usize, out: &mut [i16]) -> Result<usize, DecodeError> {
        check_lost_samples(samples)?;
        let out = self.output(samples, out)?;
        self.inner.decode(&[], out, false).map_err(decode_error)
    }

    fn is_dtx(&self, payload: &[u8]) -> bool {
        // libopus marks silence with packets of at most two bytes (a TOC byte and at most
        // one byte of frame data), which carry no audio.
        payload.len() <= DTX_MAX_BYTES && parse_packet(payload).is_ok()
    }
}

fn setting(name: &'static str, value: impl Into<i64>) -> CodecError {
    CodecError::Setting {
        name,
        value: value.into(),
    }
}

fn lib_detail(detail: &str) -> CodecError {
    CodecError::Library {
        library: "libopus",
        detail: detail.to_owned(),
    }
}

fn lib_error(e: ::opus::Error) -> CodecError {
    lib_detail(&e.to_string())
}

fn decode_error(e: ::opus::Error) -> DecodeError {
    match e.code() {
        ::opus::ErrorCode::InvalidPacket | ::opus::ErrorCode::BadArg => {
            DecodeError::Malformed(e.to_string())
        }
        _ => DecodeError::Codec(e.to_string()),
    }
}

#[cfg(test)]
mod tests;
