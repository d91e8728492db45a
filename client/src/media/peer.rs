//! The WebRTC peer connection (webrtc-rs) a media session drives: codecs and RTCP
//! feedback negotiated with the SFU, the interceptor chain, and the callbacks turned into
//! channel messages for the session task.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use rtc::interceptor::NackResponderBuilder;
use rtc::interceptor::{Interceptor, Packet, Registry, Slot, StreamInfo, TaggedPacket};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_RTX, MediaEngine,
};
use rtc::peer_connection::configuration::{RTCConfigurationBuilder, RTCIceTransportPolicy};
use rtc::peer_connection::transport::RTCIceServer;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtp_transceiver::rtp_sender::RTCPFeedback;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::sansio::Protocol;
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState,
};

use super::{MediaError, MediaOptions};

/// RFC 6464 client-to-mixer audio level, which the SFU reads for active speaker.
pub(crate) const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
/// Payload types offered; the SFU answers with the same numbers, and offers them too.
const OPUS_PT: u8 = 111;
/// RFC 2198 redundant audio around Opus.
const RED_PT: u8 = 63;
const MIME_TYPE_RED: &str = "audio/red";
const H264_PT: u8 = 102;
const H264_RTX_PT: u8 = 103;

pub(crate) fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// Whether a negotiated codec is RED (RFC 2198).
pub(crate) fn is_red(codec: &RTCRtpCodecParameters) -> bool {
    codec
        .rtp_codec
        .mime_type
        .eq_ignore_ascii_case(MIME_TYPE_RED)
}

/// RED's payload type among an m-line's negotiated codecs.
pub(crate) fn red_payload_type(codecs: &[RTCRtpCodecParameters]) -> Option<u8> {
    codecs.iter().find(|c| is_red(c)).map(|c| c.payload_type)
}

/// RED (RFC 2198) whose blocks are all Opus, as WebRTC offers it.
fn red_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_RED.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: format!("{OPUS_PT}/{OPUS_PT}"),
        rtcp_feedback: vec![],
    }
}

pub(crate) fn h264_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        // Constrained Baseline 3.1, the profile every WebRTC endpoint decodes (RFC 6184).
        sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
            .to_owned(),
        rtcp_feedback: vec![],
    }
}

/// What the peer connection reports to the session task.
pub(crate) struct PeerEvents {
    pub tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
    pub state: watch::Receiver<RTCPeerConnectionState>,
    pub gathered: watch::Receiver<bool>,
    /// The latest REMB the SFU sent (bit/s; 0 before one): the most this session
    /// should send in all.
    pub remb: Arc<AtomicU64>,
    /// Keyframe requests about the cameras this session sends.
    pub keyframes: Arc<KeyframeRequests>,
}

/// Keyframe requests (PLI, FIR) the SFU sent about the cameras this client sends, by
/// SSRC: the inbound RTCP interceptor flags them, the camera's encoder takes the flag.
/// (webrtc-rs hands a compound RTCP packet to the track its *first* packet names, and
/// routes feedback to a sent track only when no received track claims that SSRC; a
/// camera that relied on that routing missed the SFU's requests in some calls, so every
/// later subscriber waited for a picture that never came.)
#[derive(Default)]
pub(crate) struct KeyframeRequests {
    cameras: std::sync::Mutex<Vec<Camera>>,
}

/// One camera's keyframe flag and request count.
struct Camera {
    ssrc: u32,
    wanted: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
}

impl KeyframeRequests {
    /// Flags `wanted` and counts in `count` each request about `ssrc` from now on.
    pub fn register(&self, ssrc: u32, wanted: Arc<AtomicBool>, count: Arc<AtomicU64>) {
        let mut cameras = self.cameras.lock().expect("not poisoned");
        cameras.retain(|c| c.ssrc != ssrc);
        cameras.push(Camera {
            ssrc,
            wanted,
            count,
        });
    }

    /// A request about `ssrc` arrived.
    fn asked(&self, ssrc: u32) {
        let cameras = self.cameras.lock().expect("not poisoned");
        for c in cameras.iter().filter(|c| c.ssrc == ssrc) {
            c.count.fetch_add(1, Ordering::Relaxed);
            c.wanted.store(true, Ordering::Relaxed);
        }
    }
}

#[derive(Clone)]
struct Handler {
    tracks: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
    state: Arc<watch::Sender<RTCPeerConnectionState>>,
    gathered: Arc<watch::Sender<bool>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.send(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.tracks.send(track);
    }
}

/// Builds the peer connection: Opus and H.264 with the audio-level extension, RTCP
/// reports, NACK (answering the SFU's requests for what this client sent; requests for
/// what it receives come from the video frame buffer), and keyframe requests handed to
/// the application.
pub(crate) async fn build(
    opts: &MediaOptions,
) -> Result<(Arc<dyn PeerConnection>, PeerEvents), MediaError> {
    let mut engine = MediaEngine::default();
    if opts.red {
        // Listed before Opus, as libwebrtc does, so that it is preferred.
        engine
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: red_codec(),
                    payload_type: RED_PT,
                },
                RtpCodecKind::Audio,
            )
            .map_err(webrtc_error)?;
    }
    engine
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: opus_codec(),
                payload_type: OPUS_PT,
            },
            RtpCodecKind::Audio,
        )
        .map_err(webrtc_error)?;
    engine
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: h264_codec(),
                payload_type: H264_PT,
            },
            RtpCodecKind::Video,
        )
        .map_err(webrtc_error)?;
    if opts.nack {
        // Retransmissions from the SFU come on an RTX stream (RFC 4588), which webrtc-rs
        // unwraps into the primary one.
        engine
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: RTCRtpCodec {
                        mime_type: MIME_TYPE_RTX.to_owned(),
                        clock_rate: 90_000,
                        channels: 0,
                        sdp_fmtp_line: format!("apt={H264_PT}"),
                        rtcp_feedback: vec![],
                    },
                    payload_type: H264_RTX_PT,
                },
                RtpCodecKind::Video,
            )
            .map_err(webrtc_error)?;
    }
    engine
        .register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: AUDIO_LEVEL_URI.to_owned(),
            },
            RtpCodecKind::Audio,
            None,
        )
        .map_err(webrtc_error)?;
    // Transport-wide feedback on what we receive (draft-holmer-rmcat-transport-wide-cc):
    // the SFU estimates its bandwidth toward us from it and paces and picks layers by
    // that estimate. Without it the SFU only has its assumed starting rate, and its
    // pacer holds a faster stream to that rate.
    let registry =
        configure_twcc_receiver_only(Registry::new(), &mut engine).map_err(webrtc_error)?;
    let mut registry = configure_rtcp_reports(registry);
    if opts.nack {
        // NACK is negotiated for video and answered by webrtc-rs's responder (it
        // retransmits what we sent). Requests for what we receive come from the media
        // crate's frame buffer only: a second requester would double every resend, and an
        // SFU caps resends at a share of its bitrate (str0m: 15%), past which it drops them.
        for parameter in ["", "pli"] {
            engine.register_feedback(
                RTCPFeedback {
                    typ: "nack".to_owned(),
                    parameter: parameter.to_owned(),
                },
                RtpCodecKind::Video,
            );
        }
        registry = registry.with(Slot::NackResponder, NackResponderBuilder::new().build());
    }
    let remb = Arc::new(AtomicU64::new(0));
    let keyframes = Arc::new(KeyframeRequests::default());
    let registry = registry.with(
        Slot::from(14_000),
        SenderFeedback {
            remb: remb.clone(),
            keyframes: keyframes.clone(),
            ..SenderFeedback::default()
        },
    );

    let ice_servers = opts
        .ice_servers
        .iter()
        .map(|s| RTCIceServer {
            urls: s.urls.clone(),
            username: s.username.clone(),
            credential: s.credential.clone(),
        })
        .collect();
    let policy = if opts.relay_only {
        RTCIceTransportPolicy::Relay
    } else {
        RTCIceTransportPolicy::All
    };
    let config = RTCConfigurationBuilder::new()
        .with_ice_servers(ice_servers)
        .with_ice_transport_policy(policy)
        .build();

    let (tracks_tx, tracks) = mpsc::unbounded_channel();
    let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
    let (gathered_tx, gathered) = watch::channel(false);
    let handler = Arc::new(Handler {
        tracks: tracks_tx,
        state: Arc::new(state_tx),
        gathered: Arc::new(gathered_tx),
    });
    let bind = SocketAddr::new(opts.bind_ip, 0);
    let pc = PeerConnectionBuilder::new()
        .with_configuration(config)
        .with_media_engine(engine)
        .with_interceptor_registry(registry)
        .with_handler(handler)
        .with_udp_addrs(vec![bind])
        .build()
        .await
        .map_err(webrtc_error)?;
    Ok((
        Arc::new(pc),
        PeerEvents {
            tracks,
            state,
            gathered,
            remb,
            keyframes,
        },
    ))
}

pub(crate) fn webrtc_error(e: impl std::fmt::Display) -> MediaError {
    MediaError::WebRtc(e.to_string())
}

/// Rewrites every ICE candidate of a description from the SFU to `to`, so that media goes
/// through a relay there (an impairment shim, a port forward). Candidates of another
/// address family than `to` are dropped.
pub(crate) fn redirect_candidates(sdp: &str, to: SocketAddr) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let ending = &line[body.len()..];
        if let Some(rest) = body.strip_prefix("a=candidate:") {
            // foundation component transport priority address port typ ...
            let mut fields: Vec<&str> = rest.split(' ').collect();
            if fields.len() < 8 {
                continue;
            }
            let Ok(ip) = fields[4].parse::<IpAddr>() else {
                continue;
            };
            if ip.is_ipv4() != to.is_ipv4() || !fields[2].eq_ignore_ascii_case("udp") {
                continue;
            }
            let (addr, port) = (to.ip().to_string(), to.port().to_string());
            fields[4] = &addr;
            fields[5] = &port;
            out.push_str("a=candidate:");
            out.push_str(&fields.join(" "));
            out.push_str(ending);
        } else {
            out.push_str(line);
        }
    }
    out
}

/// Flags the cameras the SFU asks for a keyframe (PLI, FIR; see [`KeyframeRequests`])
/// and keeps the bitrate of the SFU's latest REMB (the most the session may send: its
/// cap, or in a one-to-one call what the other side's link can take); every other
/// inbound RTCP has been acted on by the interceptors before this one, and all of it
/// stops here.
#[derive(Default)]
struct SenderFeedback {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
    remb: Arc<AtomicU64>,
    keyframes: Arc<KeyframeRequests>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for SenderFeedback {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            for p in packets {
                let any = p.as_any();
                if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>()
                    && remb.bitrate.is_finite()
                    && remb.bitrate >= 0.0
                {
                    self.remb.store(remb.bitrate as u64, Ordering::Relaxed);
                } else if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                    self.keyframes.asked(pli.media_ssrc);
                } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                    for entry in &fir.fir {
                        self.keyframes.asked(entry.ssrc);
                    }
                }
            }
            return Ok(());
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for SenderFeedback {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_redirected_and_other_families_dropped() {
        let sdp = "v=0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 7882 typ host\r\n\
                   a=candidate:2 1 udp 2130706431 ::1 7882 typ host\r\n\
                   a=candidate:3 1 tcp 2130706431 127.0.0.1 7882 typ host tcptype passive\r\n\
                   a=candidate:bad\r\na=mid:0\r\n";
        let out = redirect_candidates(sdp, "127.0.0.1:40000".parse().unwrap());
        assert_eq!(
            out,
            "v=0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\na=mid:0\r\n"
        );
    }
}
