//! Calls: audio and video through the server's SFU, over one WebRTC peer connection
//! (webrtc-rs) negotiated on the signalling connection (`media_join`, `media_offer`,
//! `media_answer`; docs/protocol.md "Media (SFU)").
//!
//! The client offers first with what it publishes; afterwards the SFU offers whenever the
//! set of tracks this client receives changes, and the session answers each offer by
//! itself. Publishing takes PCM or I420 pictures from any source ([`AudioSender`],
//! [`VideoSender`]); each track received comes out as a [`RemoteTrack`] with decoded
//! frames (through the media crate's jitter buffer and frame buffer) and statistics.
//!
//! ```no_run
//! # async fn demo(client: huddle_client::Client) -> Result<(), huddle_client::media::MediaError> {
//! use huddle_client::media::{MediaEvent, MediaOptions, MediaSession, RemoteMedia};
//! client.join(Some("standup")).await?;
//! let (mut session, mut events) = MediaSession::start(&client, MediaOptions::audio_only()).await?;
//! let mut mic = session.take_audio().expect("audio was asked for");
//! let silence = vec![0i16; mic.frame_samples()];
//! mic.send(&silence).await?; // every 20 ms, from a real source
//! while let Some(ev) = events.recv().await {
//!     if let MediaEvent::Track(mut track) = ev {
//!         if let Some(RemoteMedia::Audio(mut frames)) = track.media.take() {
//!             while let Some(f) = frames.recv().await { /* play f.pcm */ }
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```

mod peer;
mod receive;
mod send;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use huddle_media::audio::jitter::JitterConfig;
use huddle_media::codec::h264::H264EncoderConfig;
use huddle_media::codec::opus::OpusEncoderConfig;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::{PeerConnection, RTCPeerConnectionState};
use webrtc::rtp_transceiver::RtpSender;

pub use receive::{AudioFrame, RemoteMedia, RemoteTrack, TrackKind, TrackStats, VideoFrame};
pub use send::{AudioSender, SendStats, VideoSender};

use crate::{Client, ClientError};

/// How long ICE candidate gathering may take before the offer goes out anyway.
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error(transparent)]
    Signal(#[from] ClientError),
    #[error("webrtc: {0}")]
    WebRtc(String),
    #[error("codec: {0}")]
    Codec(String),
    #[error("the media session ended: {0}")]
    Ended(String),
}

/// A simulcast quality, lowest to highest (`media_subscribe`'s `max_quality`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Quality {
    Low,
    Medium,
    High,
}

impl Quality {
    /// Its name in the protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Low => "low",
            Quality::Medium => "medium",
            Quality::High => "high",
        }
    }
}

/// Limits on the layer forwarded of one received track ([`MediaSession::set_limits`]).
/// `None` keeps the current setting; a width or height of 0 lifts that limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackLimits {
    pub max_quality: Option<Quality>,
    /// Largest picture width wanted, in pixels.
    pub max_width: Option<u32>,
    /// Largest picture height wanted, in pixels.
    pub max_height: Option<u32>,
}

impl TrackLimits {
    /// No limit: the best layer the bandwidth allows.
    pub const NONE: TrackLimits = TrackLimits {
        max_quality: Some(Quality::High),
        max_width: Some(0),
        max_height: Some(0),
    };

    /// At most `width` x `height` pixels (the size of the tile it is shown in).
    pub fn size(width: u32, height: u32) -> Self {
        Self {
            max_width: Some(width),
            max_height: Some(height),
            ..Self::default()
        }
    }

    /// At most `quality`.
    pub fn quality(quality: Quality) -> Self {
        Self {
            max_quality: Some(quality),
            ..Self::default()
        }
    }
}

/// A STUN/TURN server for ICE (as `get_ice_servers` returns them; a STUN server has no
/// username or credential).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub credential: String,
}

/// Video publishing settings.
#[derive(Debug, Clone)]
pub struct VideoOptions {
    pub width: usize,
    pub height: usize,
    pub encoder: H264EncoderConfig,
}

impl Default for VideoOptions {
    fn default() -> Self {
        Self {
            width: 320,
            height: 240,
            encoder: H264EncoderConfig {
                bitrate_bps: 300_000,
                ..H264EncoderConfig::default()
            },
        }
    }
}

/// What a media session publishes and how it receives.
#[derive(Debug, Clone)]
pub struct MediaOptions {
    /// Publish a microphone track with this encoder.
    pub audio: Option<OpusEncoderConfig>,
    /// Publish a camera track.
    pub video: Option<VideoOptions>,
    /// Local address the peer connection's UDP socket binds (port chosen by the OS).
    pub bind_ip: IpAddr,
    /// Send media to this address instead of the SFU's own candidates: a relay in front
    /// of the SFU (an impairment shim, a port forward).
    pub sfu_address: Option<SocketAddr>,
    /// Ask for and answer retransmissions (RFC 4585 generic NACK).
    pub nack: bool,
    /// Offer redundant audio (RFC 2198 RED, as browsers do): when the SFU accepts it,
    /// the microphone's packets carry the previous frame too, and so do the packets the
    /// SFU sends, so a single lost packet is rebuilt from the next without a
    /// retransmission, at about the audio's bitrate again.
    pub red: bool,
    /// Jitter buffer of every received audio track.
    pub jitter: JitterConfig,
    /// STUN/TURN servers ([`crate::Client::ice_servers`] fetches the server's).
    pub ice_servers: Vec<IceServer>,
    /// Use only relay candidates (through a TURN server of `ice_servers`), as a client
    /// behind a firewall that lets no UDP through to the SFU would.
    pub relay_only: bool,
}

impl Default for MediaOptions {
    fn default() -> Self {
        Self {
            audio: Some(OpusEncoderConfig::default()),
            video: Some(VideoOptions::default()),
            bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            sfu_address: None,
            nack: true,
            red: true,
            jitter: JitterConfig::default(),
            ice_servers: Vec::new(),
            relay_only: false,
        }
    }
}

impl MediaOptions {
    /// Publishes audio only.
    pub fn audio_only() -> Self {
        Self {
            video: None,
            ..Self::default()
        }
    }

    /// Publishes nothing; receives everyone.
    pub fn receive_only() -> Self {
        Self {
            audio: None,
            video: None,
            ..Self::default()
        }
    }
}

/// What happens in a media session.
pub enum MediaEvent {
    /// ICE and DTLS are up on both sides (the SFU's `media_connected` and this peer
    /// connection's own `connected`): media flows.
    Connected,
    /// A track of another participant arrived.
    Track(RemoteTrack),
    /// The SFU paused a video track this session receives (`paused`), or resumed it;
    /// `track` is the track id (as in `RemoteTrack::track_id`); `reason` is `bandwidth`
    /// (not even a simulcast track's lowest layer, or a camera sent as one stream, fits
    /// this session's bandwidth, which the SFU estimates from the transport-wide
    /// feedback this session sends) or `last_n` (its publisher is not among the latest
    /// speakers).
    TrackPaused {
        track: String,
        paused: bool,
        reason: String,
    },
    /// The SFU refused a track this session publishes (`kind` "audio" or "video"):
    /// nothing of it is forwarded. `code` is `too_many_publishers` (the room has as many
    /// publishers as it may: this session only receives) or `too_many_tracks`. The
    /// track waits: once a publisher leaves, the SFU may admit it, which the room's
    /// `track_published` for this session's sid ([`Event::Other`](crate::Event::Other))
    /// tells.
    TrackRefused {
        kind: String,
        code: String,
        message: String,
    },
    /// The session ended (`media_left` reason, or the peer connection failed).
    Left { reason: String },
}

/// A participant's media session in the room the client has joined.
pub struct MediaSession {
    client: Client,
    pc: Arc<dyn PeerConnection>,
    /// Where media to the SFU goes instead of its candidates (see
    /// [`MediaOptions::sfu_address`]); shared with the session task.
    redirect_to: Arc<std::sync::Mutex<Option<SocketAddr>>>,
    sid: String,
    audio: Option<AudioSender>,
    video: Option<VideoSender>,
    task: tokio::task::JoinHandle<()>,
}

impl MediaSession {
    /// Enters the room's media session: offers what `opts` publishes, applies the SFU's
    /// answer, and from then on answers the SFU's offers and delivers received tracks as
    /// [`MediaEvent::Track`]. The client must have joined a room.
    pub async fn start(
        client: &Client,
        opts: MediaOptions,
    ) -> Result<(MediaSession, mpsc::Receiver<MediaEvent>), MediaError> {
        let (pushes_tx, pushes) = mpsc::unbounded_channel();
        client.set_media_sink(Some(pushes_tx));
        let joined = client.request(json!({"type": "media_join"})).await?;
        let sid = joined["sid"].as_str().unwrap_or_default().to_owned();

        let (pc, peer_events) = peer::build(&opts).await?;
        let mut outs = Vec::new();
        if opts.audio.is_some() {
            outs.push(add_track(&pc, RtpCodecKind::Audio, peer::opus_codec(), &sid).await?);
        }
        if opts.video.is_some() {
            outs.push(add_track(&pc, RtpCodecKind::Video, peer::h264_codec(), &sid).await?);
        }
        if outs.is_empty() {
            // Something to negotiate: a receive-only audio m-line.
            use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
            pc.add_transceiver_from_kind(
                RtpCodecKind::Audio,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )
            .await
            .map_err(peer::webrtc_error)?;
        }

        let offer = pc.create_offer(None).await.map_err(peer::webrtc_error)?;
        pc.set_local_description(offer)
            .await
            .map_err(peer::webrtc_error)?;
        let mut gathered = peer_events.gathered.clone();
        let _ = tokio::time::timeout(GATHER_TIMEOUT, gathered.wait_for(|g| *g)).await;
        let local = pc
            .local_description()
            .await
            .ok_or_else(|| MediaError::WebRtc("no local description".into()))?;
        offer_to_sfu(client, &pc, local.sdp, opts.sfu_address).await?;

        let (mut audio, mut video) = (None, None);
        // Whether the microphone goes out as RED (it is added, and so handled, first).
        let mut audio_red = false;
        for (kind, track, sender, ssrc) in outs {
            let (pt, red_pt) = negotiated_payload_types(&sender).await?;
            let out = send::RtpOut::new(track, ssrc, pt);
            match kind {
                RtpCodecKind::Audio => {
                    let red_pt = red_pt.filter(|_| opts.red);
                    audio_red = red_pt.is_some();
                    audio = Some(AudioSender::new(
                        out,
                        opts.audio.clone().unwrap_or_default(),
                        red_pt,
                    )?)
                }
                _ => {
                    let v = opts.video.clone().unwrap_or_default();
                    // The microphone's share of a REMB: its bitrate (twice, as RED
                    // carries each frame twice) and about 24 kb/s of packet headers at
                    // 50 packets a second.
                    let copies = if audio_red { 2 } else { 1 };
                    let audio_bps = opts
                        .audio
                        .as_ref()
                        .map_or(0, |a| u64::from(a.bitrate_bps) * copies + 24_000);
                    video = Some(VideoSender::new(
                        out,
                        v.encoder,
                        peer_events.remb.clone(),
                        &peer_events.keyframes,
                        audio_bps,
                    )?);
                }
            }
        }

        let redirect_to = Arc::new(std::sync::Mutex::new(opts.sfu_address));
        let (events_tx, events) = mpsc::channel(64);
        let task = tokio::spawn(run(
            redirect_to.clone(),
            client.clone(),
            pc.clone(),
            opts,
            pushes,
            peer_events,
            events_tx,
        ));
        Ok((
            MediaSession {
                client: client.clone(),
                pc,
                redirect_to,
                sid,
                audio,
                video,
                task,
            },
            events,
        ))
    }

    /// This session's id, as others see it in `RemoteTrack::publisher`.
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// The microphone track's sender (once).
    pub fn take_audio(&mut self) -> Option<AudioSender> {
        self.audio.take()
    }

    /// The camera track's sender (once).
    pub fn take_video(&mut self) -> Option<VideoSender> {
        self.video.take()
    }

    /// Receive (`on`) or stop receiving one track (`T…` id from `track_published`).
    pub async fn subscribe(&self, track: &str, on: bool) -> Result<(), MediaError> {
        self.client
            .request(json!({"type": "media_subscribe", "track": track, "on": on}))
            .await?;
        Ok(())
    }

    /// Caps the simulcast layer the SFU forwards of one received video track (the
    /// `track_id` of a [`RemoteTrack`]): by quality (`Low` for a thumbnail; `High`
    /// lets the bandwidth decide) and by the picture size rendered, the SFU then
    /// sending the best layer whose keyframes declare a picture within it. Fields left
    /// `None` keep their current setting; [`TrackLimits::NONE`] lifts them all. A track
    /// without layers is forwarded as it is whatever the limits. The server refuses a
    /// track this session does not receive and sizes over 16384 pixels.
    pub async fn set_limits(&self, track: &str, limits: TrackLimits) -> Result<(), MediaError> {
        let mut msg = json!({"type": "media_subscribe", "track": track, "on": true});
        if let Some(q) = limits.max_quality {
            msg["max_quality"] = json!(q.as_str());
        }
        if let Some(w) = limits.max_width {
            msg["max_width"] = json!(w);
        }
        if let Some(h) = limits.max_height {
            msg["max_height"] = json!(h);
        }
        self.client.request(msg).await?;
        Ok(())
    }

    /// Under the server's "last N" (`sfu.last_n`), always receives these participants'
    /// video (their `sid`s, at most 4), in the first of the N slots: a presenter who is
    /// not speaking, a participant the user picked. Replaces the earlier list; an empty
    /// one unpins. The server refuses anyone not in the room's media session.
    pub async fn pin(&self, participants: &[&str]) -> Result<(), MediaError> {
        self.client
            .request(json!({"type": "media_pin", "participants": participants}))
            .await?;
        Ok(())
    }

    /// Restarts ICE (RFC 8445 §9) after a network change: new credentials are offered,
    /// the SFU answers with its own, and connectivity checks find the path again while
    /// DTLS and the media streams go on. `sfu_address` replaces the address media is sent
    /// to instead of the SFU's candidates (a relay on the new network), if given.
    pub async fn restart_ice(&self, sfu_address: Option<SocketAddr>) -> Result<(), MediaError> {
        if sfu_address.is_some() {
            *self.redirect_to.lock().expect("not poisoned") = sfu_address;
        }
        self.pc.restart_ice().await.map_err(peer::webrtc_error)?;
        let offer = self
            .pc
            .create_offer(None)
            .await
            .map_err(peer::webrtc_error)?;
        self.pc
            .set_local_description(offer)
            .await
            .map_err(peer::webrtc_error)?;
        // Candidates are gathered again; wait until the description carries one.
        let deadline = tokio::time::Instant::now() + GATHER_TIMEOUT;
        let local = loop {
            let d = self.pc.local_description().await;
            if d.as_ref().is_some_and(|d| d.sdp.contains("a=candidate:"))
                || tokio::time::Instant::now() >= deadline
            {
                break d.ok_or_else(|| MediaError::WebRtc("no local description".into()))?;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let to = *self.redirect_to.lock().expect("not poisoned");
        offer_to_sfu(&self.client, &self.pc, local.sdp, to).await
    }

    /// Leaves the media session (the room stays joined) and closes the connection.
    pub async fn leave(self) -> Result<(), MediaError> {
        let r = self.client.request(json!({"type": "media_leave"})).await;
        self.client.set_media_sink(None);
        self.task.abort();
        let _ = self.pc.close().await;
        r.map(|_| ()).map_err(MediaError::from)
    }
}

type Outgoing = (
    RtpCodecKind,
    Arc<TrackLocalStaticRTP>,
    Arc<dyn RtpSender>,
    u32,
);

async fn add_track(
    pc: &Arc<dyn PeerConnection>,
    kind: RtpCodecKind,
    codec: rtc::rtp_transceiver::rtp_sender::RTCRtpCodec,
    stream: &str,
) -> Result<Outgoing, MediaError> {
    let ssrc: u32 = rand::random();
    let label = if kind == RtpCodecKind::Audio {
        "microphone"
    } else {
        "camera"
    };
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        stream.to_owned(),
        format!("{label}-{ssrc:08x}"),
        label.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    )));
    let sender = pc
        .add_track(track.clone() as Arc<dyn TrackLocal>)
        .await
        .map_err(peer::webrtc_error)?;
    Ok((kind, track, sender, ssrc))
}

/// The payload type a published track's media goes out with (the first negotiated
/// codec that is not RED), and RED's, if it was negotiated too.
async fn negotiated_payload_types(
    sender: &Arc<dyn RtpSender>,
) -> Result<(u8, Option<u8>), MediaError> {
    let params = sender.get_parameters().await.map_err(peer::webrtc_error)?;
    let codecs = &params.rtp_parameters.codecs;
    let pt = codecs
        .iter()
        .find(|c| !peer::is_red(c))
        .map(|c| c.payload_type)
        .ok_or_else(|| MediaError::WebRtc("no codec negotiated for a published track".into()))?;
    Ok((pt, peer::red_payload_type(codecs)))
}

/// Sends our offer (`media_offer`) and applies the SFU's answer, its candidates
/// redirected to `to` if given.
async fn offer_to_sfu(
    client: &Client,
    pc: &Arc<dyn PeerConnection>,
    sdp: String,
    to: Option<SocketAddr>,
) -> Result<(), MediaError> {
    let answer = client
        .request(json!({"type": "media_offer", "sdp": sdp}))
        .await?;
    let sdp = answer["sdp"]
        .as_str()
        .ok_or_else(|| MediaError::WebRtc("media_answer without sdp".into()))?;
    pc.set_remote_description(
        RTCSessionDescription::answer(redirect(sdp, to)).map_err(peer::webrtc_error)?,
    )
    .await
    .map_err(peer::webrtc_error)
}

fn redirect(sdp: &str, to: Option<SocketAddr>) -> String {
    match to {
        Some(addr) => peer::redirect_candidates(sdp, addr),
        None => sdp.to_owned(),
    }
}

/// The session task: answers the SFU's offers, reports connection changes and opens
/// received tracks.
async fn run(
    redirect_to: Arc<std::sync::Mutex<Option<SocketAddr>>>,
    client: Client,
    pc: Arc<dyn PeerConnection>,
    opts: MediaOptions,
    mut pushes: mpsc::UnboundedReceiver<Value>,
    mut peer: peer::PeerEvents,
    events: mpsc::Sender<MediaEvent>,
) {
    let receive = receive::ReceiveConfig {
        jitter: opts.jitter.clone(),
        nack: opts.nack,
        red: opts.red,
    };
    let (mut server_up, mut client_up, mut announced) = (false, false, false);
    let reason = loop {
        tokio::select! {
            push = pushes.recv() => {
                let Some(m) = push else { break "signalling closed".to_owned() };
                match m["type"].as_str().unwrap_or("") {
                    "media_offer" => {
                        let to = *redirect_to.lock().expect("not poisoned");
                        if let Err(e) = answer_offer(&client, &pc, &m, to).await {
                            tracing::warn!(error = %e, "cannot answer the SFU's offer");
                        }
                    }
                    "media_connected" => {
                        server_up = true;
                        if client_up && !announced {
                            announced = true;
                            let _ = events.send(MediaEvent::Connected).await;
                        }
                    }
                    "media_left" => {
                        break m["reason"].as_str().unwrap_or("left").to_owned();
                    }
                    "media_track_refused" => {
                        let s = |k: &str| m[k].as_str().unwrap_or("").to_owned();
                        let ev = MediaEvent::TrackRefused {
                            kind: s("kind"),
                            code: s("code"),
                            message: s("message"),
                        };
                        let _ = events.send(ev).await;
                    }
                    "media_track_paused" => {
                        if let (Some(track), Some(paused)) =
                            (m["track"].as_str(), m["paused"].as_bool())
                        {
                            let track = track.to_owned();
                            let reason = m["reason"].as_str().unwrap_or("bandwidth").to_owned();
                            let ev = MediaEvent::TrackPaused {
                                track,
                                paused,
                                reason,
                            };
                            let _ = events.send(ev).await;
                        }
                    }
                    _ => {}
                }
            }
            track = peer.tracks.recv() => {
                let Some(track) = track else { continue };
                let events = events.clone();
                let receive = receive.clone();
                let pc = pc.clone();
                tokio::spawn(async move {
                    if let Some(t) = receive::open(track, &pc, receive).await {
                        let _ = events.send(MediaEvent::Track(t)).await;
                    }
                });
            }
            changed = peer.state.changed() => {
                if changed.is_err() {
                    break "peer connection closed".to_owned();
                }
                let state = *peer.state.borrow();
                if state == RTCPeerConnectionState::Failed {
                    break "peer connection failed".to_owned();
                }
                // The SFU may finish its side of DTLS before we do (when our last
                // flight is lost, its retransmission timer decides): media flows once
                // both sides are up.
                client_up = state == RTCPeerConnectionState::Connected;
                if client_up && server_up && !announced {
                    announced = true;
                    let _ = events.send(MediaEvent::Connected).await;
                }
            }
        }
    };
    let _ = events.send(MediaEvent::Left { reason }).await;
}

async fn answer_offer(
    client: &Client,
    pc: &Arc<dyn PeerConnection>,
    m: &Value,
    sfu_address: Option<SocketAddr>,
) -> Result<(), MediaError> {
    let offer_id = m["offer_id"].clone();
    let sdp = redirect(m["sdp"].as_str().unwrap_or_default(), sfu_address);
    pc.set_remote_description(RTCSessionDescription::offer(sdp).map_err(peer::webrtc_error)?)
        .await
        .map_err(peer::webrtc_error)?;
    let answer = pc.create_answer(None).await.map_err(peer::webrtc_error)?;
    pc.set_local_description(answer)
        .await
        .map_err(peer::webrtc_error)?;
    let local = pc
        .local_description()
        .await
        .ok_or_else(|| MediaError::WebRtc("no local description".into()))?;
    client
        .request(json!({"type": "media_answer", "offer_id": offer_id, "sdp": local.sdp}))
        .await?;
    Ok(())
}
