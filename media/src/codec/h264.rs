//! Safe OpenH264 wrappers: [`H264Encoder`] turns [`I420Frame`]s into Annex-B access units
//! (constrained-baseline friendly: one slice, no B-frames) with bitrate, frame-rate and
//! keyframe control; [`H264Decoder`] turns access units back into pictures.

use openh264::OpenH264API;
use openh264::decoder::{Decoder, DecoderConfig, Flush};
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Profile,
    RateControlMode, UsageType,
};

use super::CodecError;
use super::i420::I420Frame;

/// Largest access unit the decoder accepts; a 4K intra picture at high quality fits well.
pub const MAX_ACCESS_UNIT_BYTES: usize = 8 << 20;

/// NAL unit type of an IDR slice (H.264 Table 7-1).
const NAL_IDR_SLICE: u8 = 5;

/// Encoder settings. Defaults suit a 640x360 camera stream.
#[derive(Debug, Clone, PartialEq)]
pub struct H264EncoderConfig {
    /// Target bitrate in bits per second (10 000..=100 000 000).
    pub bitrate_bps: u32,
    /// Highest frame rate the rate control plans for, in frames per second (1..=120).
    pub max_fps: f32,
    /// Let rate control drop frames to hold the bitrate (what a real-time sender wants).
    pub skip_frames: bool,
    /// Frames between periodic keyframes; `None` sends them only on request.
    pub keyframe_interval: Option<u32>,
    /// Encoder threads; 1 keeps the cost on one core.
    pub threads: u16,
}

impl Default for H264EncoderConfig {
    fn default() -> Self {
        Self {
            bitrate_bps: 800_000,
            max_fps: 30.0,
            skip_frames: true,
            keyframe_interval: None,
            threads: 1,
        }
    }
}

/// What one `encode` call produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedVideo {
    /// Bytes of the Annex-B access unit written to the output buffer (0 when skipped).
    pub len: usize,
    /// The access unit is an IDR picture (with SPS/PPS): decodable on its own.
    pub keyframe: bool,
    /// Rate control dropped this frame; nothing is to be sent.
    pub skipped: bool,
}

/// An OpenH264 encoder producing one Annex-B access unit per input picture.
pub struct H264Encoder {
    /// The OpenH264 encoder.
    inner: Encoder,
    /// Settings in force.
    config: H264EncoderConfig,
    /// Size of the last picture encoded; OpenH264 needs one picture before it can take a
    /// keyframe request, and starts with a keyframe on every size change anyway.
    last_size: Option<(usize, usize)>,
    /// A keyframe was requested (e.g. after a PLI) and not yet produced.
    keyframe_pending: bool,
    /// The bitrate the encoder was created with (`config.bitrate_bps` may have moved
    /// since): OpenH264 is set up with it again whenever the picture size changes.
    initial_bitrate: u32,
}

impl std::fmt::Debug for H264Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Encoder")
            .field("config", &self.config)
            .field("last_size", &self.last_size)
            .field("keyframe_pending", &self.keyframe_pending)
            .finish_non_exhaustive()
    }
}

impl H264Encoder {
    /// Creates an encoder after validating `config`.
    pub fn new(config: H264EncoderConfig) -> Result<Self, CodecError> {
        if !(10_000..=100_000_000).contains(&config.bitrate_bps) {
            return Err(CodecError::Setting {
                name: "bitrate",
                value: config.bitrate_bps.into(),
            });
        }
        if !(1.0..=120.0).contains(&config.max_fps) {
            return Err(CodecError::Setting {
                name: "max fps",
                value: config.max_fps as i64,
            });
        }
        if config.threads == 0 || config.threads > 16 {
            return Err(CodecError::Setting {
                name: "threads",
                value: config.threads.into(),
            });
        }
        let lib_config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(config.bitrate_bps))
            .max_frame_rate(FrameRate::from_hz(config.max_fps))
            .rate_control_mode(RateControlMode::Bitrate)
            .usage_type(UsageType::CameraVideoRealTime)
            .profile(Profile::Baseline)
            .skip_frames(config.skip_frames)
            .intra_frame_period(IntraFramePeriod::from_num_frames(
                config.keyframe_interval.unwrap_or(0),
            ))
            .num_threads(config.threads);
        let inner =
            Encoder::with_api_config(OpenH264API::from_source(), lib_config).map_err(lib_error)?;
        Ok(Self {
            inner,
            initial_bitrate: config.bitrate_bps,
            config,
            last_size: None,
            keyframe_pending: false,
        })
    }

    /// Changes the target bitrate (10 000..=100 000 000 bit/s; not above the one it
    /// was created with, which OpenH264 takes as its ceiling) from the next picture on,
    /// without a keyframe: what a sender does when its congestion control's target
    /// moves (libwebrtc sets OpenH264's `ENCODER_OPTION_BITRATE` the same way).
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), CodecError> {
        if !(10_000..=100_000_000).contains(&bps) || bps > self.initial_bitrate {
            return Err(CodecError::Setting {
                name: "bitrate",
                value: bps.into(),
            });
        }
        self.config.bitrate_bps = bps;
        // Before the first picture OpenH264 is not set up yet; `encode` applies it then.
        if self.last_size.is_some() {
            self.apply_bitrate()?;
        }
        Ok(())
    }

    /// Hands `config.bitrate_bps` to the running OpenH264 encoder.
    #[allow(unsafe_code)]
    fn apply_bitrate(&mut self) -> Result<(), CodecError> {
        let mut info = openh264_sys2::SBitrateInfo {
            iLayer: openh264_sys2::SPATIAL_LAYER_ALL,
            iBitrate: i32::try_from(self.config.bitrate_bps).unwrap_or(i32::MAX),
        };
        // SAFETY: the encoder is initialized (a picture has been encoded, which is when
        // the `openh264` crate initializes it), ENCODER_OPTION_BITRATE takes a pointer to
        // an SBitrateInfo that it reads during the call only, and `info` outlives it.
        let rc = unsafe {
            self.inner.raw_api().set_option(
                openh264_sys2::ENCODER_OPTION_BITRATE,
                (&raw mut info).cast(),
            )
        };
        if rc != 0 {
            return Err(CodecError::Library {
                library: "openh264",
                detail: format!("setting the bitrate failed ({rc})"),
            });
        }
        Ok(())
    }

    /// Settings in force.
    pub fn config(&self) -> &H264EncoderConfig {
        &self.config
    }

    /// Makes the next encoded picture an IDR keyframe (the answer to a PLI or FIR).
    pub fn request_keyframe(&mut self) {
        self.keyframe_pending = true;
    }

    /// Encodes `frame`, captured at `timestamp_ms` (rate control paces by it), into `out`,
    /// which is cleared first and holds the Annex-B access unit afterwards.
    pub fn encode(
        &mut self,
        frame: &I420Frame,
        timestamp_ms: u64,
        out: &mut Vec<u8>,
    ) -> Result<EncodedVideo, CodecError> {
        out.clear();
        let size = (frame.width(), frame.height());
        if self.keyframe_pending && self.last_size == Some(size) {
            self.inner.force_intra_frame();
        }
        let stream = self
            .inner
            .encode_at(frame, openh264::Timestamp::from_millis(timestamp_ms))
            .map_err(lib_error)?;
        let frame_type = stream.frame_type();
        if frame_type == FrameType::Invalid {
            return Err(CodecError::Library {
                library: "openh264",
                detail: "encoder returned an invalid frame".into(),
            });
        }
        stream.write_vec(out);
        let resized = self.last_size != Some(size);
        self.last_size = Some(size);
        if resized && self.config.bitrate_bps != self.initial_bitrate {
            // A new size set OpenH264 up again with the bitrate it was created with.
            self.apply_bitrate()?;
        }
        let skipped = frame_type == FrameType::Skip || out.is_empty();
        let keyframe = !skipped && frame_type == FrameType::IDR;
        if keyframe {
            self.keyframe_pending = false;
        }
        Ok(EncodedVideo {
            len: out.len(),
            keyframe,
            skipped,
        })
    }
}

/// An OpenH264 decoder for Annex-B access units.
pub struct H264Decoder {
    /// The OpenH264 decoder.
    inner: Decoder,
}

impl std::fmt::Debug for H264Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Decoder").finish_non_exhaustive()
    }
}

impl H264Decoder {
    /// Creates a decoder.
    pub fn new() -> Result<Self, CodecError> {
        // Real-time streams have no B-frames, so every access unit yields its picture at
        // once; flushing after each call would only add work.
        let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
        let inner =
            Decoder::with_api_config(OpenH264API::from_source(), config).map_err(lib_error)?;
        Ok(Self { inner })
    }

    /// Decodes one Annex-B access unit. Returns true when a picture was written to
    /// `picture` (reshaped to the stream's size), false when the decoder needs more data
    /// (e.g. SPS/PPS alone).
    pub fn decode(
        &mut self,
        access_unit: &[u8],
        picture: &mut I420Frame,
    ) -> Result<bool, CodecError> {
        if access_unit.len() > MAX_ACCESS_UNIT_BYTES {
            return Err(CodecError::Malformed(format!(
                "access unit of {} bytes exceeds {MAX_ACCESS_UNIT_BYTES}",
                access_unit.len()
            )));
        }
        if start_code_len(access_unit).is_none() {
            return Err(CodecError::Malformed(
                "access unit does not start with an Annex-B start code".into(),
            ));
        }
        let Some(decoded) = self.inner.decode(access_unit).map_err(lib_error)? else {
            return Ok(false);
        };
        use openh264::formats::YUVSource;
        let (width, height) = decoded.dimensions();
        let (y_stride, uv_stride, _) = decoded.strides();
        picture.reshape(width, height)?;
        picture.copy_from_strided(
            (decoded.y(), y_stride),
            (decoded.u(), decoded.v(), uv_stride),
        )?;
        Ok(true)
    }
}

/// Length of the Annex-B start code (3 or 4 bytes) at the start of `data`.
fn start_code_len(data: &[u8]) -> Option<usize> {
    match data {
        [0, 0, 1, ..] => Some(3),
        [0, 0, 0, 1, ..] => Some(4),
        _ => None,
    }
}

/// NAL unit types in an Annex-B stream, in order (H.264 Annex B.2 byte stream).
pub fn nal_types(stream: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let mut rest = stream;
    std::iter::from_fn(move || {
        loop {
            let pos = rest.windows(3).position(|w| w == [0, 0, 1])?;
            rest = rest.get(pos + 3..)?;
            if let Some(&header) = rest.first() {
                return Some(header & 0x1f);
            }
        }
    })
}

/// Whether an Annex-B access unit holds an IDR slice, i.e. starts a decodable sequence.
pub fn is_keyframe(access_unit: &[u8]) -> bool {
    nal_types(access_unit).any(|t| t == NAL_IDR_SLICE)
}

fn lib_error(e: openh264::Error) -> CodecError {
    CodecError::Library {
        library: "openh264",
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn nal_scan_of_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(0u8..4, 0..300)) {
            // Bytes drawn from 0..4 make start codes frequent.
            prop_assert!(nal_types(&bytes).count() <= bytes.len() / 3);
            let _ = is_keyframe(&bytes);
        }
    }

    #[test]
    fn nal_types_of_an_annex_b_stream() {
        let stream = [0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2, 0, 0, 1, 0x65, 3];
        assert_eq!(nal_types(&stream).collect::<Vec<_>>(), vec![7, 8, 5]);
        assert!(is_keyframe(&stream));
        assert!(!is_keyframe(&[0, 0, 1, 0x41, 9]));
        assert_eq!(nal_types(&[0, 0, 1]).count(), 0);
        assert_eq!(start_code_len(&[0, 0, 1, 5]), Some(3));
        assert_eq!(start_code_len(&[0, 1]), None);
    }

    #[test]
    fn rejects_bad_settings() {
        let bad = [
            H264EncoderConfig {
                bitrate_bps: 1_000,
                ..Default::default()
            },
            H264EncoderConfig {
                max_fps: 0.0,
                ..Default::default()
            },
            H264EncoderConfig {
                threads: 0,
                ..Default::default()
            },
        ];
        for config in bad {
            assert!(matches!(
                H264Encoder::new(config),
                Err(CodecError::Setting { .. })
            ));
        }
    }

    /// Bytes the encoder produces for `frames` pictures of the moving test pattern from
    /// picture `first` on, at 25 fps.
    fn encoded_bytes(enc: &mut H264Encoder, first: u64, frames: u64) -> usize {
        let mut picture = I420Frame::new(320, 240).unwrap();
        let mut out = Vec::new();
        let mut total = 0;
        for i in first..first + frames {
            crate::quality::signal::moving_pattern(&mut picture, i);
            total += enc.encode(&picture, i * 40, &mut out).unwrap().len;
        }
        total
    }

    #[test]
    fn the_bitrate_can_be_lowered_and_raised_while_encoding() {
        let mut enc = H264Encoder::new(H264EncoderConfig {
            bitrate_bps: 600_000,
            ..Default::default()
        })
        .unwrap();
        // Before the first picture, too: applied when OpenH264 is set up.
        enc.set_bitrate(100_000).unwrap();
        let low = encoded_bytes(&mut enc, 0, 100);
        enc.set_bitrate(500_000).unwrap();
        let _settle = encoded_bytes(&mut enc, 100, 25);
        let high = encoded_bytes(&mut enc, 125, 100);
        enc.set_bitrate(100_000).unwrap();
        assert_eq!(enc.config().bitrate_bps, 100_000);
        let _settle = encoded_bytes(&mut enc, 225, 25);
        let low_again = encoded_bytes(&mut enc, 250, 100);
        // 4 s each: about 50 kB at 100 kb/s, 250 kB at 500 kb/s.
        let kbps = |bytes: usize| bytes * 8 / 4 / 1000;
        assert!(
            kbps(low) < 160 && kbps(low_again) < 160,
            "{} and {} kb/s at 100 kb/s",
            kbps(low),
            kbps(low_again)
        );
        assert!(
            kbps(high) > 3 * kbps(low).max(kbps(low_again)),
            "{} -> {} -> {} kb/s",
            kbps(low),
            kbps(high),
            kbps(low_again)
        );
        // Out of range, or above what it was created with.
        for bad in [1_000, 700_000] {
            assert!(matches!(
                enc.set_bitrate(bad),
                Err(CodecError::Setting { .. })
            ));
        }
        assert_eq!(enc.config().bitrate_bps, 100_000);
    }

    #[test]
    fn decoder_rejects_input_without_start_code() {
        let mut dec = H264Decoder::new().unwrap();
        let mut picture = I420Frame::new(2, 2).unwrap();
        assert!(matches!(
            dec.decode(&[0x65, 1, 2, 3], &mut picture),
            Err(CodecError::Malformed(_))
        ));
        assert!(dec.decode(&[], &mut picture).is_err());
    }
}
