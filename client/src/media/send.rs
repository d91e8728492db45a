//! Publishing: PCM and I420 pictures in, Opus and H.264 RTP out, packetized by the media
//! crate (RFC 7587, RFC 6184) with the RFC 6464 audio level on every audio packet, and
//! each Opus packet wrapped with the previous one (RED, RFC 2198) when it is negotiated.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use huddle_media::codec::h264::{H264Encoder, H264EncoderConfig};
use huddle_media::codec::i420::I420Frame;
use huddle_media::codec::opus::{OpusEncoder, OpusEncoderConfig, SAMPLE_RATE};
use huddle_media::rtp::PayloadPacket;
use huddle_media::rtp::audio_level::AudioLevel;
use huddle_media::rtp::h264::H264Packetizer;
use huddle_media::rtp::opus::OpusPacketizer;
use huddle_media::rtp::red;
use rtc::rtp;
use rtc::rtp::extension::HeaderExtension;
use rtc::rtp::extension::audio_level_extension::AudioLevelExtension;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;

use super::MediaError;
use super::peer::KeyframeRequests;

/// RTP payload budget per packet: fits a 1280-byte datagram with SRTP and extensions.
const MAX_RTP_PAYLOAD: usize = 1100;
/// Largest Opus packet libopus writes for one frame (RFC 6716 §3.2.1 bound, rounded).
const MAX_OPUS_PACKET: usize = 1500;

/// Counters of a published track.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendStats {
    pub packets_sent: u64,
    pub bytes_sent: u64,
    /// Audio frames or video pictures handed to the encoder.
    pub frames_encoded: u64,
    /// Keyframe requests (PLI/FIR) received for this track.
    pub keyframe_requests: u64,
    /// Video: the encoder's target bitrate now, the configured one lowered to follow
    /// the SFU's REMB (0 for audio).
    pub target_bitrate_bps: u32,
}

/// Where an encoded stream goes: the RTP track with its negotiated SSRC and payload type.
pub(crate) struct RtpOut {
    pub track: Arc<TrackLocalStaticRTP>,
    pub ssrc: u32,
    pub payload_type: u8,
    seq: u16,
    stats: SendStats,
}

impl RtpOut {
    pub fn new(track: Arc<TrackLocalStaticRTP>, ssrc: u32, payload_type: u8) -> Self {
        Self {
            track,
            ssrc,
            payload_type,
            seq: rand::random(),
            stats: SendStats::default(),
        }
    }

    async fn write(
        &mut self,
        p: PayloadPacket,
        extensions: &[HeaderExtension],
    ) -> Result<(), MediaError> {
        self.write_as(self.payload_type, p, extensions).await
    }

    /// Writes `p` with payload type `pt` (another negotiated format of the track).
    async fn write_as(
        &mut self,
        pt: u8,
        p: PayloadPacket,
        extensions: &[HeaderExtension],
    ) -> Result<(), MediaError> {
        let packet = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                marker: p.marker,
                payload_type: pt,
                sequence_number: self.seq,
                timestamp: p.timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload: p.payload,
        };
        self.seq = self.seq.wrapping_add(1);
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += packet.payload.len() as u64;
        let r = if extensions.is_empty() {
            self.track.write_rtp(packet).await
        } else {
            self.track
                .write_rtp_with_extensions(packet, extensions)
                .await
        };
        r.map_err(|e| MediaError::WebRtc(e.to_string()))
    }
}

/// Sends microphone audio: 48 kHz mono PCM frames of the configured duration (20 ms by
/// default) are Opus-encoded and sent, each packet carrying its audio level.
pub struct AudioSender {
    out: RtpOut,
    encoder: OpusEncoder,
    packetizer: OpusPacketizer,
    buf: Vec<u8>,
    /// RED's payload type when it was negotiated: each packet then carries the
    /// previous one's frame too.
    red_pt: Option<u8>,
    /// The last packet sent (timestamp, Opus payload), the next one's redundancy.
    previous: Option<(u32, Bytes)>,
    red_buf: Vec<u8>,
}

impl AudioSender {
    pub(crate) fn new(
        out: RtpOut,
        config: OpusEncoderConfig,
        red_pt: Option<u8>,
    ) -> Result<Self, MediaError> {
        let encoder = OpusEncoder::new(config).map_err(|e| MediaError::Codec(e.to_string()))?;
        Ok(Self {
            out,
            encoder,
            packetizer: OpusPacketizer::new(rand::random()),
            buf: vec![0; MAX_OPUS_PACKET],
            red_pt,
            previous: None,
            red_buf: Vec::new(),
        })
    }

    /// Samples (per channel) each [`AudioSender::send`] takes.
    pub fn frame_samples(&mut self) -> usize {
        self.encoder.frame_len()
    }

    /// Encodes and sends one frame of PCM (exactly [`AudioSender::frame_samples`] samples).
    /// The caller paces it in real time, as a microphone would.
    pub async fn send(&mut self, pcm: &[i16]) -> Result<(), MediaError> {
        let encoded = self
            .encoder
            .encode(pcm, &mut self.buf)
            .map_err(|e| MediaError::Codec(e.to_string()))?;
        self.out.stats.frames_encoded += 1;
        let payload = Bytes::copy_from_slice(&self.buf[..encoded.len]);
        let Some(p) = self
            .packetizer
            .packetize(payload)
            .map_err(|e| MediaError::Codec(e.to_string()))?
        else {
            return Ok(()); // DTX silence suppressed; the timestamp still advanced
        };
        let level = AudioLevel::from_pcm(pcm, !encoded.dtx);
        let ext = HeaderExtension::AudioLevel(AudioLevelExtension {
            level: level.level(),
            voice: !encoded.dtx,
        });
        let Some(red_pt) = self.red_pt else {
            return self.out.write(p, &[ext]).await;
        };
        // The previous packet's frame rides along when its offset and size fit a RED
        // block header (not after a DTX pause of more than about 340 ms).
        let previous = self.previous.replace((p.timestamp, p.payload.clone()));
        let block = previous.as_ref().and_then(|(ts, data)| {
            let offset = p.timestamp.wrapping_sub(*ts);
            (offset > 0 && offset <= red::MAX_TIMESTAMP_OFFSET && data.len() <= red::MAX_BLOCK_LEN)
                .then_some((offset, &data[..]))
        });
        let blocks: &[(u32, &[u8])] = match &block {
            Some(b) => std::slice::from_ref(b),
            None => &[],
        };
        red::build(self.out.payload_type, &p.payload, blocks, &mut self.red_buf)
            .map_err(|e| MediaError::Codec(e.to_string()))?;
        let wrapped = PayloadPacket {
            payload: Bytes::copy_from_slice(&self.red_buf),
            ..p
        };
        self.out.write_as(red_pt, wrapped, &[ext]).await
    }

    pub fn stats(&self) -> SendStats {
        self.out.stats
    }

    /// Sends `pcm` (interleaved, 48 kHz) over and over, one frame per frame duration
    /// on a real-time clock, like a microphone playing a recording in a loop. Returns
    /// the error that ended it (the session closed), or at once if `pcm` is shorter
    /// than one frame.
    pub async fn send_looped(mut self, pcm: Vec<i16>) -> MediaError {
        let frame = self.frame_samples();
        let per_channel = self.encoder.config().frame.samples() as u64;
        let mut tick = tokio::time::interval(Duration::from_micros(
            per_channel * 1_000_000 / u64::from(SAMPLE_RATE),
        ));
        for chunk in pcm.chunks_exact(frame).cycle() {
            tick.tick().await;
            if let Err(e) = self.send(chunk).await {
                return e;
            }
        }
        MediaError::Codec(format!(
            "{} samples: less than one frame ({frame})",
            pcm.len()
        ))
    }
}

/// Share of what the SFU allows the session to send (its REMB, less the microphone)
/// that the camera's encoder aims at: the rest is packet overhead and resends.
const REMB_VIDEO_SHARE: f64 = 0.85;
/// Least the encoder is turned down to, whatever the REMB says.
const MIN_VIDEO_BPS: u32 = 30_000;
/// A new encoder target within this fraction of the current one is not applied.
const RETARGET_STEP: f64 = 0.05;

/// Sends camera video: I420 pictures are H.264-encoded (OpenH264) and packetized
/// (single NAL, STAP-A, FU-A); a keyframe is produced when the SFU asks for one, and the
/// encoder's bitrate follows the most the SFU lets the session send (its REMB: the
/// configured cap, or in a one-to-one call what the other side's link can take), never
/// above the configured bitrate.
pub struct VideoSender {
    out: RtpOut,
    /// Lent to a blocking thread while it encodes a picture.
    encoder: Option<H264Encoder>,
    packetizer: H264Packetizer,
    start: Instant,
    au: Vec<u8>,
    packets: Vec<PayloadPacket>,
    keyframe_wanted: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    /// The SFU's latest REMB for the whole session (0: none yet).
    remb: Arc<AtomicU64>,
    /// What the session's microphone takes of it, packets included.
    audio_bps: u64,
    /// The bitrate the encoder was configured with: the ceiling.
    configured_bps: u32,
    /// The encoder's target now.
    target_bps: u32,
}

impl VideoSender {
    pub(crate) fn new(
        out: RtpOut,
        config: H264EncoderConfig,
        remb: Arc<AtomicU64>,
        keyframes: &KeyframeRequests,
        audio_bps: u64,
    ) -> Result<Self, MediaError> {
        let configured_bps = config.bitrate_bps;
        let encoder = H264Encoder::new(config).map_err(|e| MediaError::Codec(e.to_string()))?;
        let packetizer =
            H264Packetizer::new(MAX_RTP_PAYLOAD).map_err(|e| MediaError::Codec(e.to_string()))?;
        let keyframe_wanted = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        keyframes.register(out.ssrc, keyframe_wanted.clone(), requests.clone());
        Ok(Self {
            out,
            encoder: Some(encoder),
            packetizer,
            start: Instant::now(),
            au: Vec::new(),
            packets: Vec::new(),
            keyframe_wanted,
            requests,
            remb,
            audio_bps,
            configured_bps,
            target_bps: configured_bps,
        })
    }

    /// The encoder target the SFU's latest REMB allows.
    fn wanted_bitrate(&self) -> u32 {
        match self.remb.load(Ordering::Relaxed) {
            0 => self.configured_bps,
            remb => {
                let video = remb.saturating_sub(self.audio_bps) as f64 * REMB_VIDEO_SHARE;
                (video.min(f64::from(u32::MAX)) as u32).clamp(MIN_VIDEO_BPS, self.configured_bps)
            }
        }
    }

    /// Encodes and sends one picture captured at `captured`. Returns false when rate
    /// control skipped it.
    pub async fn send(
        &mut self,
        picture: &I420Frame,
        captured: Instant,
    ) -> Result<bool, MediaError> {
        let mut encoder = self
            .encoder
            .take()
            .ok_or_else(|| MediaError::Codec("an earlier send was cancelled mid-encode".into()))?;
        if self.keyframe_wanted.swap(false, Ordering::Relaxed) {
            encoder.request_keyframe();
        }
        let want = self.wanted_bitrate();
        let step = f64::from(want.abs_diff(self.target_bps));
        // Small wobbles of the REMB are not followed, except back to the ceiling.
        if want != self.target_bps
            && (step > RETARGET_STEP * f64::from(self.target_bps) || want == self.configured_bps)
            && encoder.set_bitrate(want).is_ok()
        {
            self.target_bps = want;
        }
        let since = captured.saturating_duration_since(self.start);
        // Encoding takes milliseconds of CPU: on a blocking thread, so that audio and
        // network tasks on the runtime's workers are not held up behind it.
        let picture = picture.clone();
        let mut au = std::mem::take(&mut self.au);
        let ms = since.as_millis() as u64;
        let (encoder, au, encoded) = tokio::task::spawn_blocking(move || {
            let encoded = encoder.encode(&picture, ms, &mut au);
            (encoder, au, encoded)
        })
        .await
        .map_err(|e| MediaError::Codec(format!("encoder thread: {e}")))?;
        self.encoder = Some(encoder);
        self.au = au;
        let encoded = encoded.map_err(|e| MediaError::Codec(e.to_string()))?;
        self.out.stats.frames_encoded += 1;
        if encoded.skipped || encoded.len == 0 {
            return Ok(false);
        }
        // 90 kHz media clock (RFC 6184 §5.1).
        let timestamp = (since.as_micros() as u64 * 9 / 100) as u32;
        self.packets.clear();
        self.packetizer
            .packetize(&self.au[..encoded.len], timestamp, &mut self.packets)
            .map_err(|e| MediaError::Codec(e.to_string()))?;
        for p in std::mem::take(&mut self.packets) {
            self.out.write(p, &[]).await?;
        }
        Ok(true)
    }

    pub fn stats(&self) -> SendStats {
        SendStats {
            keyframe_requests: self.requests.load(Ordering::Relaxed),
            target_bitrate_bps: self.target_bps,
            ..self.out.stats
        }
    }
}
