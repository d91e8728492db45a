//! Test clients for the SFU: str0m peers on their own loopback UDP sockets (or, with
//! `Call::tcp`, ICE-TCP connections) that publish Opus-like audio (with the RFC 6464
//! level extension) and H.264- or VP8-like video, answer the SFU's renegotiation
//! offers, and record what they receive and from whom.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use huddle_sfu::{PauseReason, SfuConfig, SfuEvent, SfuEvents, SfuHandle, TrackId, TrackKind};
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

mod simulcast;
pub use simulcast::LAYERS;
use simulcast::send_simulcast;

/// Which video codec a client publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCodec {
    H264,
    Vp8,
    /// H.264 in three simulcast layers ([`LAYERS`]).
    H264Simulcast,
}

/// What a client has seen, shared with the test.
#[derive(Default, Debug)]
pub struct Seen {
    /// Frames received per (publisher, kind), from the marker in each payload.
    pub frames: HashMap<(String, TrackKind), u64>,
    /// PLI/FIR received from the SFU for our video.
    pub keyframe_requests: u64,
    /// SFU offers applied.
    pub offers_applied: u64,
    /// Receive m-lines the SFU added (mid, kind).
    pub recv_mids: Vec<(Mid, MediaKind)>,
    /// Frame numbers of the video frames received, per publisher.
    pub video_frames: HashMap<String, Vec<u64>>,
    /// Frame numbers of the audio frames received, per publisher.
    pub audio_frames: HashMap<String, Vec<u64>>,
    /// RTP/RTCP datagrams dropped by the loss shim on the way in.
    pub dropped: u64,
    /// RTP/RTCP datagrams dropped by the loss shim on the way out.
    pub dropped_sent: u64,
    /// Write-to-receive time of each audio frame from another client (client → SFU →
    /// client, both clients in this process).
    pub audio_latency: Vec<Duration>,
    /// Every video frame received, in order, with what the stream looked like.
    pub video_log: Vec<VideoRx>,
    /// Keyframe requests received per simulcast rid (our published layers).
    pub keyframe_requests_by_rid: HashMap<String, u64>,
    /// Layers whose next frame is to be a keyframe (a request arrived).
    pub force_keyframe: Vec<String>,
    /// REMBs the SFU sent this client as a publisher: when, and the bitrate.
    pub rembs: Vec<(Instant, u64)>,
    /// ICE and DTLS are up.
    pub connected: bool,
    /// Receive video m-lines that have had a frame.
    pub video_started: HashSet<Mid>,
    /// Keyframe requests this client sent because a stream began with a delta frame.
    pub start_plis: u64,
    /// An ICE-TCP client's connection was closed by the SFU.
    pub tcp_closed: bool,
    /// When each received frame (publisher, kind, frame number) was captured, by the
    /// latest sender report of its stream from the SFU (what a receiver lines audio
    /// and video up by).
    pub reported_capture: HashMap<(String, TrackKind, u64), std::time::SystemTime>,
}

/// One video frame as a subscriber received it.
#[derive(Debug, Clone)]
pub struct VideoRx {
    /// Publisher's name from the payload marker.
    pub from: String,
    /// Frame number from the marker.
    pub n: u64,
    /// Simulcast layer tag in the payload ("-" when unlayered).
    pub layer: String,
    /// Whether the publisher sent it as a keyframe.
    pub keyframe: bool,
    /// RTP sequence numbers it arrived in (extended), first and last.
    pub seq: (u64, u64),
    /// RTP timestamp (32 bits).
    pub ts: u32,
    /// str0m saw no gap before it.
    pub contiguous: bool,
    /// From the publisher's write to this client's receive (same process, one clock).
    pub latency: Option<Duration>,
}

/// A running test client.
pub struct Client {
    pub name: String,
    pub seen: Arc<Mutex<Seen>>,
    /// Audio level sent, in -dBov.
    pub level: Arc<AtomicU8>,
    /// Set > 0 to send that many PLIs (one per 20 ms) on every received video m-line.
    pub plis_to_send: Arc<AtomicU64>,
    /// Incoming SRTP/SRTCP datagrams dropped, per mille (a loss shim on the receive side).
    pub loss_permille: Arc<AtomicU64>,
    /// Outgoing SRTP/SRTCP datagrams dropped, per mille (loss between it and the SFU).
    pub send_loss_permille: Arc<AtomicU64>,
    /// Set > 0 to report this receive bitrate (REMB) on every received video m-line,
    /// every 500 ms.
    pub remb_bps: Arc<AtomicU64>,
    tx: mpsc::UnboundedSender<ClientCmd>,
}

pub enum ClientCmd {
    ApplyOffer {
        offer_id: u64,
        sdp: String,
    },
    /// Renegotiate with our video m-line inactive (unpublish it).
    StopVideo,
    /// Renegotiate with our audio m-line inactive (unpublish it).
    StopAudio,
    /// Renegotiate with our audio m-line inactive and a new one sending (the same
    /// microphone published again as a new track).
    RepublishAudio,
    /// Send this many audio packets more every 20 ms (a flood of valid media).
    Flood(u64),
    Stop,
}

impl Client {
    pub fn frames_from(&self, publisher: &str, kind: TrackKind) -> u64 {
        let seen = self.seen.lock().unwrap();
        seen.frames
            .get(&(publisher.to_string(), kind))
            .copied()
            .unwrap_or(0)
    }

    pub fn keyframe_requests(&self) -> u64 {
        self.seen.lock().unwrap().keyframe_requests
    }

    pub fn stop(&self) {
        let _ = self.tx.send(ClientCmd::Stop);
    }

    /// Sends `extra` audio packets more every 20 ms from now on (0: back to normal).
    pub fn flood(&self, extra: u64) {
        let _ = self.tx.send(ClientCmd::Flood(extra));
    }

    pub fn stop_video(&self) {
        let _ = self.tx.send(ClientCmd::StopVideo);
    }

    pub fn stop_audio(&self) {
        let _ = self.tx.send(ClientCmd::StopAudio);
    }

    pub fn republish_audio(&self) {
        let _ = self.tx.send(ClientCmd::RepublishAudio);
    }
}

/// An SFU plus the clients connected to it, with its events logged.
pub struct Call {
    pub sfu: SfuHandle,
    pub clients: HashMap<String, Client>,
    routes: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<ClientCmd>>>>,
    pub log: Arc<Mutex<Vec<SfuEvent>>>,
    /// Participants whose next SFU offer is lost on the way (a dropped message).
    pub lose_next_offer: Arc<Mutex<Vec<String>>>,
    /// When each audio frame (publisher, frame number) was written, for latency.
    pub sent_at: SentAt,
    /// The SFU's answer to each participant's first offer.
    pub answers: HashMap<String, String>,
    /// Clients joined from now on send no datagram for this long (their ICE checks
    /// are lost, so their session comes up late; signalling is not held up).
    pub silent_for: Duration,
    /// Clients joined from now on negotiate transport-wide sequence numbers, so they
    /// send the feedback the SFU estimates their bandwidth from (browsers do).
    pub twcc: bool,
    /// Clients joined from now on have no UDP: they connect to the SFU's ICE-TCP
    /// candidate (RFC 6544, as the active side) and nothing else.
    pub tcp: bool,
    /// Clients joined from now on accept redundant audio (RFC 2198 RED), as browsers do.
    pub red: bool,
    /// Clients joined from now on write each video frame this many 20 ms ticks after
    /// its capture (the audio of the same tick goes at once).
    pub video_delay_ticks: u64,
}

/// Send instants of audio frames by (publisher, frame number).
pub type SentAt = Arc<Mutex<HashMap<(String, u64), Instant>>>;

impl Call {
    pub async fn start() -> Call {
        Self::start_with(SfuConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            ..SfuConfig::default()
        })
        .await
    }

    pub async fn start_with(config: SfuConfig) -> Call {
        let (sfu, events) = huddle_sfu::Sfu::start(config).await.expect("SFU starts");
        Self::with_sfu(sfu, events)
    }

    /// Clients for an SFU started elsewhere (e.g. on its own thread).
    pub fn with_sfu(sfu: SfuHandle, events: SfuEvents) -> Call {
        let routes: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<ClientCmd>>>> = Arc::default();
        let log: Arc<Mutex<Vec<SfuEvent>>> = Arc::default();
        let lose: Arc<Mutex<Vec<String>>> = Arc::default();
        tokio::spawn(dispatch(events, routes.clone(), log.clone(), lose.clone()));
        Call {
            sfu,
            clients: HashMap::new(),
            routes,
            log,
            lose_next_offer: lose,
            sent_at: Arc::default(),
            answers: HashMap::new(),
            silent_for: Duration::ZERO,
            twcc: true,
            tcp: false,
            red: false,
            video_delay_ticks: 0,
        }
    }

    /// Joins `name` to `room`, offers audio + video, and starts its media loop.
    pub async fn join(&mut self, room: &str, name: &str, codec: VideoCodec) {
        self.join_with(room, name, Some(codec)).await
    }

    /// Joins publishing audio, and video when `video` names a codec.
    pub async fn join_with(&mut self, room: &str, name: &str, video: Option<VideoCodec>) {
        self.join_opts(room, name, video, true).await
    }

    /// Joins with auto-subscription on or off (set before the client's offer).
    pub async fn join_opts(
        &mut self,
        room: &str,
        name: &str,
        video: Option<VideoCodec>,
        auto_subscribe: bool,
    ) {
        let codec = video.unwrap_or(VideoCodec::H264);
        self.sfu.join(room, name).await.expect("join");
        if !auto_subscribe {
            self.sfu.set_auto_subscribe(name, false).await.unwrap();
        }
        let mut builder = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, self.red)
            .enable_h264(true)
            .enable_vp8(true);
        if !self.twcc {
            let mut exts = str0m::rtp::ExtensionMap::empty();
            for (id, ext) in str0m::rtp::ExtensionMap::standard().iter() {
                if *ext != str0m::rtp::Extension::TransportSequenceNumber {
                    exts.set(id, ext.clone());
                }
            }
            builder = builder.set_extension_map(exts);
        }
        let mut rtc = builder.build(Instant::now());
        let udp = if self.tcp {
            None
        } else {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let local = socket.local_addr().unwrap();
            rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
            Some(socket)
        };
        let mut api = rtc.sdp_api();
        let audio = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let simulcast = (codec == VideoCodec::H264Simulcast).then(|| {
            let mut s = str0m::media::Simulcast::new();
            for (rid, ..) in LAYERS {
                s.send.push(str0m::media::SimulcastLayer::new(rid));
            }
            s
        });
        let video = video
            .map(|_| api.add_media(MediaKind::Video, Direction::SendOnly, None, None, simulcast));
        let (offer, pending) = api.apply().unwrap();
        // Route the SFU's offers before ours is answered: they queue until the answer
        // is applied, as the signalling ordering rule requires.
        let (tx, rx) = mpsc::unbounded_channel();
        self.routes.lock().unwrap().insert(name.into(), tx.clone());
        let answer = self
            .sfu
            .offer(name, offer.to_sdp_string())
            .await
            .expect("SFU answers");
        self.answers.insert(name.into(), answer.clone());
        let link = match udp {
            Some(socket) => Link::Udp(socket),
            None => Link::connect(&mut rtc, &answer).await,
        };
        let answer = str0m::change::SdpAnswer::from_sdp_string(&answer).unwrap();
        rtc.sdp_api().accept_answer(pending, answer).unwrap();

        let client = Client {
            name: name.into(),
            seen: Arc::default(),
            level: Arc::new(AtomicU8::new(90)),
            plis_to_send: Arc::default(),
            remb_bps: Arc::default(),
            loss_permille: Arc::default(),
            send_loss_permille: Arc::default(),
            tx,
        };
        let media = Media {
            audio,
            video,
            codec,
            video_delay: self.video_delay_ticks,
            held: Default::default(),
        };
        tokio::spawn(run_client(
            name.to_string(),
            rtc,
            link,
            media,
            rx,
            self.sfu.clone(),
            client.seen.clone(),
            client.level.clone(),
            client.plis_to_send.clone(),
            [
                client.loss_permille.clone(),
                client.send_loss_permille.clone(),
            ],
            client.remb_bps.clone(),
            self.sent_at.clone(),
            Instant::now() + self.silent_for,
        ));
        self.clients.insert(name.into(), client);
    }

    pub fn client(&self, name: &str) -> &Client {
        &self.clients[name]
    }

    pub fn events(&self) -> Vec<SfuEvent> {
        self.log.lock().unwrap().clone()
    }

    /// The track of `kind` that `publisher` published, if the SFU has reported it.
    pub fn track_of(&self, publisher: &str, want: TrackKind) -> Option<TrackId> {
        self.events().iter().find_map(|e| match e {
            SfuEvent::TrackPublished {
                participant,
                track,
                kind,
                ..
            } if participant.as_str() == publisher && *kind == want => Some(*track),
            _ => None,
        })
    }

    /// The video track `publisher` published, waiting up to `limit` for the SFU to
    /// report it.
    pub async fn video_track(&self, publisher: &str, limit: Duration) -> TrackId {
        let find = || self.track_of(publisher, TrackKind::Video);
        assert!(eventually(limit, || find().is_some()).await);
        find().expect("video track published")
    }

    /// The `TrackPaused` notices for `reason` that `who` got for `track`, in order
    /// (`true`: paused).
    pub fn pause_notices(&self, who: &str, track: TrackId, reason: PauseReason) -> Vec<bool> {
        self.events()
            .iter()
            .filter_map(|e| match e {
                SfuEvent::TrackPaused {
                    participant,
                    track: t,
                    paused,
                    reason: r,
                } if participant.as_str() == who && *t == track && *r == reason => Some(*paused),
                _ => None,
            })
            .collect()
    }
}

/// Routes the SFU's offers to their clients and logs every event.
async fn dispatch(
    mut events: SfuEvents,
    routes: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<ClientCmd>>>>,
    log: Arc<Mutex<Vec<SfuEvent>>>,
    lose: Arc<Mutex<Vec<String>>>,
) {
    while let Some(ev) = events.recv().await {
        if let SfuEvent::NeedsAnswer {
            participant,
            offer_id,
            sdp,
        } = &ev
        {
            let lost = {
                let mut lose = lose.lock().unwrap();
                let i = lose.iter().position(|p| p == participant.as_str());
                i.map(|i| lose.remove(i)).is_some()
            };
            if !lost && let Some(tx) = routes.lock().unwrap().get(participant.as_str()) {
                let _ = tx.send(ClientCmd::ApplyOffer {
                    offer_id: *offer_id,
                    sdp: sdp.clone(),
                });
            }
        }
        log.lock().unwrap().push(ev);
    }
}

struct Media {
    audio: Mid,
    video: Option<Mid>,
    codec: VideoCodec,
    /// Ticks each video frame waits before it is written (as an encoder and a pacer
    /// delay it), written then with its capture time as the wallclock.
    video_delay: u64,
    /// Video frames waiting: (tick to write at, captured, RTP time, payload).
    held: std::collections::VecDeque<(u64, Instant, MediaTime, Vec<u8>)>,
}

/// Offers a client's own change of its m-lines to the SFU and applies the answer.
async fn offer_change(
    rtc: &mut Rtc,
    sfu: &SfuHandle,
    name: &str,
    (offer, pending): (SdpOffer, str0m::change::SdpPendingOffer),
) {
    let answer = sfu.offer(name, offer.to_sdp_string()).await.unwrap();
    let answer = str0m::change::SdpAnswer::from_sdp_string(&answer).unwrap();
    rtc.sdp_api().accept_answer(pending, answer).unwrap();
}

/// Whether the loss shim drops `datagram` at `permille`. RFC 7983: a first byte of
/// 128..=191 is RTP/RTCP; STUN and DTLS always pass.
fn shim_drops(permille: &AtomicU64, datagram: &[u8], rng: &mut u64) -> bool {
    let permille = permille.load(Ordering::Relaxed);
    if permille == 0 || !datagram.first().is_some_and(|b| (128..=191).contains(b)) {
        return false;
    }
    // xorshift
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng % 1000 < permille
}

/// How a client reaches the SFU.
enum Link {
    Udp(UdpSocket),
    /// An ICE-TCP connection: frames with a two-byte length (RFC 4571), read by a task
    /// of their own (so that receiving is cancel-safe in a select); an empty frame
    /// stands for the end of the connection.
    Tcp {
        write: OwnedWriteHalf,
        frames: mpsc::UnboundedReceiver<Vec<u8>>,
        local: SocketAddr,
        remote: SocketAddr,
    },
}

impl Link {
    /// Connects to the TCP passive candidate of the SFU's `answer` and adds the
    /// connection's address as this client's (active) candidate.
    async fn connect(rtc: &mut Rtc, answer: &str) -> Link {
        let remote: SocketAddr = answer
            .lines()
            .filter(|l| l.starts_with("a=candidate:") && l.contains(" tcptype passive"))
            .find_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f[2] == "tcp" && f[4].parse::<std::net::Ipv4Addr>().is_ok())
                    .then(|| format!("{}:{}", f[4], f[5]).parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no IPv4 TCP candidate in the SFU's answer:\n{answer}"));
        let stream = TcpStream::connect(remote).await.unwrap();
        let local = stream.local_addr().unwrap();
        let candidate = Candidate::builder()
            .tcp()
            .host(local)
            .tcptype(str0m::net::TcpType::Active)
            .build()
            .unwrap();
        rtc.add_local_candidate(candidate);
        let (mut read, write) = stream.into_split();
        let (tx, frames) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut len = [0u8; 2];
            while read.read_exact(&mut len).await.is_ok() {
                let mut frame = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if read.read_exact(&mut frame).await.is_err() || tx.send(frame).is_err() {
                    break;
                }
            }
            let _ = tx.send(Vec::new());
        });
        Link::Tcp {
            write,
            frames,
            local,
            remote,
        }
    }

    fn local(&self) -> SocketAddr {
        match self {
            Link::Udp(s) => s.local_addr().unwrap(),
            Link::Tcp { local, .. } => *local,
        }
    }

    fn proto(&self) -> Protocol {
        match self {
            Link::Udp(_) => Protocol::Udp,
            Link::Tcp { .. } => Protocol::Tcp,
        }
    }

    async fn send(&mut self, contents: &[u8], destination: SocketAddr) {
        match self {
            Link::Udp(s) => {
                let _ = s.send_to(contents, destination).await;
            }
            Link::Tcp { write, .. } => {
                let mut buf = (contents.len() as u16).to_be_bytes().to_vec();
                buf.extend_from_slice(contents);
                let _ = write.write_all(&buf).await;
            }
        }
    }

    /// The next datagram or frame; `None` when the SFU closed the connection.
    async fn recv(&mut self, buf: &mut [u8]) -> Option<std::io::Result<(usize, SocketAddr)>> {
        match self {
            Link::Udp(s) => Some(s.recv_from(buf).await),
            Link::Tcp { frames, remote, .. } => {
                let frame = frames.recv().await.filter(|f| !f.is_empty())?;
                buf[..frame.len()].copy_from_slice(&frame);
                Some(Ok((frame.len(), *remote)))
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_client(
    name: String,
    mut rtc: Rtc,
    mut link: Link,
    mut media: Media,
    mut rx: mpsc::UnboundedReceiver<ClientCmd>,
    sfu: SfuHandle,
    seen: Arc<Mutex<Seen>>,
    level: Arc<AtomicU8>,
    plis: Arc<AtomicU64>,
    // Receive and send loss, per mille.
    loss: [Arc<AtomicU64>; 2],
    remb_bps: Arc<AtomicU64>,
    sent_at: SentAt,
    silent_until: Instant,
) {
    let local = link.local();
    let proto = link.proto();
    let mut buf = vec![0u8; 2048];
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut n: u64 = 0;
    let mut resends_configured = false;
    let mut flood = 0;
    // xorshift state for the loss shim: deterministic per client name.
    let mut rng: u64 = name.bytes().fold(0x9e37_79b9_7f4a_7c15, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    loop {
        // Drain output.
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let lost = shim_drops(&loss[1], &t.contents, &mut rng);
                    if lost {
                        seen.lock().unwrap().dropped_sent += 1;
                    } else if Instant::now() >= silent_until {
                        link.send(&t.contents, t.destination).await;
                    }
                }
                Ok(Output::Event(e)) => on_event(&name, &mut rtc, e, &seen, &sent_at),
                Err(e) => panic!("{name}: poll_output: {e}"),
            }
        };
        if !rtc.is_alive() {
            return;
        }
        let wait = timeout.saturating_duration_since(Instant::now());
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(ClientCmd::ApplyOffer { offer_id, sdp }) => {
                    let offer = SdpOffer::from_sdp_string(&sdp).unwrap();
                    let answer = rtc.sdp_api().accept_offer(offer).unwrap();
                    seen.lock().unwrap().offers_applied += 1;
                    // Stale answers (a newer offer superseded this one) are refused;
                    // the newer offer follows.
                    let _ = sfu.answer(name.as_str(), offer_id, answer.to_sdp_string()).await;
                }
                Some(cmd @ (ClientCmd::StopVideo | ClientCmd::StopAudio)) => {
                    let mid = match cmd {
                        ClientCmd::StopVideo => media.video,
                        _ => Some(media.audio),
                    };
                    let Some(mid) = mid else { continue };
                    let mut api = rtc.sdp_api();
                    api.set_direction(mid, Direction::Inactive);
                    if let Some(change) = api.apply() {
                        offer_change(&mut rtc, &sfu, &name, change).await;
                    }
                }
                Some(ClientCmd::RepublishAudio) => {
                    let mut api = rtc.sdp_api();
                    api.set_direction(media.audio, Direction::Inactive);
                    let audio = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
                    if let Some(change) = api.apply() {
                        offer_change(&mut rtc, &sfu, &name, change).await;
                        media.audio = audio;
                    }
                }
                Some(ClientCmd::Flood(extra)) => flood = extra,
                Some(ClientCmd::Stop) | None => {
                    rtc.disconnect();
                    return;
                }
            },
            res = link.recv(&mut buf) => {
                let Some(res) = res else {
                    seen.lock().unwrap().tcp_closed = true;
                    return;
                };
                let Ok((len, source)) = res else { continue };
                if shim_drops(&loss[0], &buf[..len], &mut rng) {
                    seen.lock().unwrap().dropped += 1;
                    continue;
                }
                let Ok(contents) = buf[..len].try_into() else { continue };
                let input = Input::Receive(Instant::now(), Receive {
                    proto, source, destination: local, contents,
                });
                if let Err(e) = rtc.handle_input(input) {
                    panic!("{name}: handle_input: {e}");
                }
            }
            _ = tick.tick() => {
                n += 1;
                // Resends may take half of the video stream's bytes, as the SFU allows
                // its own streams: str0m's default (15%) is used up by a few repairs of
                // these small frames, and what the SFU's NACKs then fail to repair would
                // be this client's limit, not the SFU's. (Browsers have no such cap.)
                if !resends_configured && let Some(video) = media.video {
                    let mut api = rtc.direct_api();
                    if let Some(tx) = api.stream_tx_by_mid(video, None) {
                        tx.set_rtx_cache(1024, Duration::from_secs(3), Some(0.5));
                        resends_configured = true;
                    }
                }
                if media.codec == VideoCodec::H264Simulcast {
                    send_simulcast(&name, &mut rtc, &media, n, start, level.load(Ordering::Relaxed), &seen);
                } else {
                    // Answer a keyframe request with the next video frame.
                    let force = {
                        let mut seen = seen.lock().unwrap();
                        let asked = seen.force_keyframe.iter().any(|r| r.is_empty());
                        if asked && n.is_multiple_of(2) {
                            seen.force_keyframe.retain(|r| !r.is_empty());
                        }
                        asked && n.is_multiple_of(2)
                    };
                    send_media(&name, &mut rtc, &mut media, n, start, level.load(Ordering::Relaxed), force);
                }
                for extra in 1..=flood {
                    send_audio(&name, &mut rtc, &media, n, extra, level.load(Ordering::Relaxed));
                }
                sent_at.lock().unwrap().insert((name.clone(), n), Instant::now());
                let remb = remb_bps.load(Ordering::Relaxed);
                if remb > 0 && n.is_multiple_of(25) {
                    let mids: Vec<Mid> = seen.lock().unwrap().recv_mids.iter()
                        .filter(|(_, k)| *k == MediaKind::Video).map(|(m, _)| *m).collect();
                    for mid in mids {
                        if let Some(rx) = rtc.direct_api().stream_rx_by_mid(mid, None) {
                            rx.request_remb(str0m::bwe::Bitrate::bps(remb));
                        }
                    }
                }
                if plis.load(Ordering::Relaxed) > 0 {
                    plis.fetch_sub(1, Ordering::Relaxed);
                    let mids: Vec<Mid> = seen.lock().unwrap().recv_mids.iter()
                        .filter(|(_, k)| *k == MediaKind::Video).map(|(m, _)| *m).collect();
                    for mid in mids {
                        if let Some(mut w) = rtc.writer(mid) {
                            let _ = w.request_keyframe(None, KeyframeRequestKind::Pli);
                        }
                    }
                }
            }
            _ = tokio::time::sleep(wait) => {}
        }
        let _ = rtc.handle_input(Input::Timeout(Instant::now()));
    }
}

fn on_event(name: &str, rtc: &mut Rtc, e: Event, seen: &Mutex<Seen>, sent_at: &SentAt) {
    match e {
        Event::Connected => seen.lock().unwrap().connected = true,
        Event::MediaAdded(m) if m.direction.is_receiving() => {
            seen.lock().unwrap().recv_mids.push((m.mid, m.kind));
        }
        Event::MediaData(d) => {
            let kind = match rtc.media(d.mid).map(|m| m.kind()) {
                Some(MediaKind::Audio) => TrackKind::Audio,
                Some(MediaKind::Video) => TrackKind::Video,
                None => return,
            };
            if let Some((from, n)) = marker(&d.data) {
                assert_ne!(from, name, "{name} got its own media back");
                let mut seen = seen.lock().unwrap();
                if let Some(sr) = &d.last_sender_info {
                    // RFC 3550 §6.4.1: the report pairs an NTP time with an RTP time.
                    let ticks =
                        (d.time.numer() as u32).wrapping_sub(sr.rtp_time.numer() as u32) as i32;
                    let offset = Duration::from_secs_f64(
                        f64::from(ticks.unsigned_abs()) / f64::from(d.time.frequency().get()),
                    );
                    let at = if ticks >= 0 {
                        sr.ntp_time + offset
                    } else {
                        sr.ntp_time - offset
                    };
                    seen.reported_capture.insert((from.clone(), kind, n), at);
                }
                if kind == TrackKind::Video {
                    seen.video_frames.entry(from.clone()).or_default().push(n);
                    seen.video_log.push(VideoRx {
                        from: from.clone(),
                        n,
                        layer: layer_tag(&d.data).unwrap_or("-").to_string(),
                        keyframe: d.is_keyframe(),
                        seq: (**d.seq_range.start(), **d.seq_range.end()),
                        ts: d.time.numer() as u32,
                        contiguous: d.contiguous,
                        latency: sent_at
                            .lock()
                            .unwrap()
                            .get(&(from.clone(), n))
                            .map(|t| t.elapsed()),
                    });
                } else {
                    seen.audio_frames.entry(from.clone()).or_default().push(n);
                    if let Some(t) = sent_at.lock().unwrap().get(&(from.clone(), n)) {
                        seen.audio_latency.push(t.elapsed());
                    }
                }
                *seen.frames.entry((from, kind)).or_default() += 1;
                // As a browser does: a stream that begins with a frame it cannot decode
                // asks for a keyframe.
                if kind == TrackKind::Video
                    && seen.video_started.insert(d.mid)
                    && !d.is_keyframe()
                    && let Some(mut w) = rtc.writer(d.mid)
                    && w.request_keyframe(None, KeyframeRequestKind::Pli).is_ok()
                {
                    seen.start_plis += 1;
                }
            }
        }
        Event::EgressBitrateEstimate(str0m::bwe::BweKind::Remb { estimate, .. }) => {
            let mut seen = seen.lock().unwrap();
            seen.rembs.push((Instant::now(), estimate.as_u64()));
        }
        Event::KeyframeRequest(req) => {
            let mut seen = seen.lock().unwrap();
            seen.keyframe_requests += 1;
            // An empty rid stands for the unlayered stream.
            let rid = req.rid.map(|r| r.to_string()).unwrap_or_default();
            *seen
                .keyframe_requests_by_rid
                .entry(rid.clone())
                .or_default() += 1;
            seen.force_keyframe.push(rid);
        }
        _ => {}
    }
}

/// Reads the "layer=<rid>;" tag of simulcast test payloads.
fn layer_tag(data: &[u8]) -> Option<&str> {
    let pos = data.windows(6).position(|w| w == b"layer=")?;
    let rest = &data[pos + 6..];
    let end = rest.iter().position(|b| *b == b';')?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// Reads the "from=<name>;n=<frame>;" marker every test payload carries.
fn marker(data: &[u8]) -> Option<(String, u64)> {
    let pos = data.windows(5).position(|w| w == b"from=")?;
    let rest = &data[pos + 5..];
    let end = rest.iter().position(|b| *b == b';')?;
    let from = String::from_utf8(rest[..end].to_vec()).ok()?;
    let rest = rest[end + 1..].strip_prefix(b"n=")?;
    let end = rest.iter().position(|b| *b == b';')?;
    let n = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    Some((from, n))
}

fn pt_for(rtc: &mut Rtc, mid: Mid, codec: Codec) -> Option<str0m::media::Pt> {
    let w = rtc.writer(mid)?;

    w.payload_params()
        .find(|p| p.spec().codec == codec)
        .map(|p| p.pt())
}

/// One 20 ms Opus-like audio frame, and a video frame every other tick (keyframe every
/// 50th, or when `force`d), each carrying our name.
/// Audio frame `extra` (0: the tick's own) of tick `n`: its RTP timestamps are `extra`
/// samples apart.
fn send_audio(name: &str, rtc: &mut Rtc, media: &Media, n: u64, extra: u64, level: u8) {
    let Some(pt) = pt_for(rtc, media.audio, Codec::Opus) else {
        return;
    };
    // TOC: config 11 (SILK WB 20 ms), mono, one frame (RFC 6716 §3.1).
    let mut frame = vec![0x58];
    frame.extend_from_slice(format!("from={name};n={n};").as_bytes());
    frame.resize(60, 0x55);
    let ts = MediaTime::new(n * 960 + extra, Frequency::FORTY_EIGHT_KHZ);
    if let Some(w) = rtc.writer(media.audio) {
        let _ = w
            .audio_level(-(level.min(127) as i8), true)
            .write(pt, Instant::now(), ts, frame);
    }
}

fn send_media(
    name: &str,
    rtc: &mut Rtc,
    media: &mut Media,
    n: u64,
    start: Instant,
    level: u8,
    force: bool,
) {
    let now = Instant::now();
    let elapsed = now.duration_since(start);
    send_audio(name, rtc, media, n, 0, level);
    let Some(video) = media.video else {
        return;
    };
    let codec = match media.codec {
        VideoCodec::H264 | VideoCodec::H264Simulcast => Codec::H264,
        VideoCodec::Vp8 => Codec::Vp8,
    };
    if n.is_multiple_of(2) {
        let key = n % 100 == 2 || force;
        let mut frame = match (media.codec, key) {
            // Annex B IDR slice / non-IDR slice NAL (RFC 6184 §1.3 header byte).
            (VideoCodec::H264 | VideoCodec::H264Simulcast, true) => vec![0, 0, 0, 1, 0x65],
            (VideoCodec::H264 | VideoCodec::H264Simulcast, false) => vec![0, 0, 0, 1, 0x41],
            // VP8 frame tag (RFC 6386 §9.1): key frame with start code and 320x240.
            (VideoCodec::Vp8, true) => {
                vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00]
            }
            (VideoCodec::Vp8, false) => vec![0x11, 0x02, 0x00],
        };
        frame.extend_from_slice(format!("from={name};n={n};").as_bytes());
        frame.resize(if key { 3000 } else { 800 }, 0x42);
        let ts = MediaTime::new(elapsed.as_micros() as u64 * 9 / 100, Frequency::NINETY_KHZ);
        media
            .held
            .push_back((n + media.video_delay, now, ts, frame));
    }
    while media.held.front().is_some_and(|(due, ..)| *due <= n) {
        let Some((_, captured, ts, frame)) = media.held.pop_front() else {
            break;
        };
        if let Some(pt) = pt_for(rtc, video, codec)
            && let Some(w) = rtc.writer(video)
        {
            let _ = w.write(pt, captured, ts, frame);
        }
    }
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// The `/proc/self/task` directories of the SFU's shard threads (`huddle-sfu-N`, which
/// `Sfu::start` spawns), for their CPU time.
pub fn sfu_threads() -> Vec<std::path::PathBuf> {
    std::fs::read_dir("/proc/self/task")
        .expect("procfs")
        .flatten()
        .map(|task| task.path())
        .filter(|task| {
            std::fs::read_to_string(task.join("comm")).is_ok_and(|c| c.starts_with("huddle-sfu-"))
        })
        .collect()
}

/// CPU clock ticks (user + system) in a thread's `/proc/.../stat` text.
pub fn stat_ticks(stat: &str) -> u64 {
    // Fields after the ")" that closes the command name; utime and stime are 14 and 15.
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// The SFU's address, for tests that send raw datagrams.
pub fn sfu_addr(call: &Call) -> SocketAddr {
    call.sfu.local_addr()
}

/// The stats of participant `who` among `stats` (panics if absent).
pub fn stats_of<'a>(
    stats: &'a [huddle_sfu::ParticipantStats],
    who: &str,
) -> &'a huddle_sfu::ParticipantStats {
    stats
        .iter()
        .find(|s| s.participant.as_str() == who)
        .unwrap_or_else(|| panic!("no stats of {who}: {stats:?}"))
}
