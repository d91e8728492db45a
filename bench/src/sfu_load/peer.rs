//! One synthetic WebRTC participant: a str0m `Rtc` (real ICE, DTLS-SRTP, RTP/RTCP) on its
//! own UDP socket, or on one ICE-TCP connection ([`Link`]). It publishes a 20 ms
//! Opus-like audio track with the RFC 6464 audio level extension and optionally an
//! H.264-like video track, answers the SFU's renegotiation offers, and tallies every
//! frame it receives.
//!
//! The drive loop is str0m's: feed `Input::Receive`/`Input::Timeout` with the time they
//! happened, then poll `Output`s until the next timeout. Peers run as tasks on the shard
//! runtimes (one thread each) of [`super::shards`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::link::{Incoming, Link};
use super::payload::{self, Marker};
use super::stamp;
use super::tally::{Arrival, Kind, Tally};
use crate::{BenchError, Result};

/// Audio frame interval (Opus 20 ms frames: 50 packets per second).
pub const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
/// A sender further behind its schedule than this skips ahead instead of bursting.
const MAX_SLIP: Duration = Duration::from_millis(100);
/// Datagrams read in one go before the loop looks at timers and commands again.
const RECV_BATCH: usize = 32;
/// Due timeouts one drain handles before returning to the loop.
const DUE_TIMEOUTS: usize = 64;
/// Audio level sent (−dBov, RFC 6464 §3): a talker at a normal level.
const AUDIO_LEVEL: i8 = -30;

/// What a participant sends.
#[derive(Debug, Clone)]
pub struct MediaSpec {
    /// Bytes of each audio frame (one RTP packet).
    pub audio_bytes: usize,
    /// The video track, if any.
    pub video: Option<VideoSpec>,
    /// Accept redundant audio (RFC 2198 RED) when the SFU offers it, as browsers do:
    /// each audio packet each way then carries the previous frame too.
    pub red: bool,
}

#[derive(Debug, Clone)]
pub struct VideoSpec {
    pub fps: u32,
    /// Bytes of a delta frame; str0m packetizes at about 1100 bytes per RTP packet.
    pub frame_bytes: usize,
    /// Bytes of a keyframe.
    pub keyframe_bytes: usize,
    /// A keyframe every this many frames (and when the SFU asks for one).
    pub keyframe_every: u32,
}

/// State of a peer that the run's coordinator reads.
#[derive(Debug, Default)]
pub struct PeerStats {
    pub tally: Mutex<Tally>,
    /// ICE and DTLS are up.
    pub connected: AtomicBool,
    /// The peer's loop ended (closed, refused by the SFU, or an error).
    pub ended: AtomicBool,
    /// Frames sent, audio and video.
    pub frames_sent: AtomicU64,
    /// Times the sender fell more than 100 ms behind its schedule (client overload).
    pub send_slips: AtomicU64,
    /// SFU offers applied.
    pub offers_applied: AtomicU64,
    /// The last ICE connection state, for diagnostics.
    pub ice_state: Mutex<String>,
    /// Receiving m-lines the SFU's offers added (one per track of another participant).
    pub recv_mlines: AtomicU64,
    /// str0m refused input or output: the peer stops.
    pub errors: AtomicU64,
}

/// A request from the peer's signalling task.
pub enum MediaCmd {
    /// Apply the SFU's offer; the answer's SDP goes back.
    ApplyOffer {
        sdp: String,
        reply: oneshot::Sender<Result<String>>,
    },
}

/// A peer before its media loop runs: created by the signalling task, which exchanges the
/// first offer and answer, then handed to a shard.
pub struct Peer {
    id: u32,
    rtc: Rtc,
    /// Its UDP socket; none when it connects over TCP.
    socket: Option<std::net::UdpSocket>,
    /// Its ICE-TCP connection, once made ([`Peer::connect_tcp`]).
    tcp: Option<std::net::TcpStream>,
    audio: Mid,
    video: Option<Mid>,
    /// Whether it sends media; a listener only receives.
    publish: bool,
}

fn rtc_err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Protocol(format!("webrtc: {e}"))
}

impl Peer {
    /// Binds a socket on `local` (the address this host reaches the server from) and
    /// makes the first offer: send-only audio, and video when `video` (RFC 8829 §5.2:
    /// the client offers first, as huddle's protocol asks). A participant that does not
    /// `publish` offers one receive-only audio m-line (as a browser without a microphone
    /// does); the tracks it receives come in the SFU's offers either way. With `tcp` it
    /// offers no candidate and binds nothing: [`Peer::connect_tcp`] follows the answer.
    pub fn offer(
        id: u32,
        publish: bool,
        video: bool,
        local: std::net::IpAddr,
        tcp: bool,
        red: bool,
    ) -> Result<(Self, String, SdpPendingOffer)> {
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, red)
            .enable_h264(true)
            .build(Instant::now());
        let socket = if tcp {
            None
        } else {
            let socket = std::net::UdpSocket::bind((local, 0))?;
            socket.set_nonblocking(true)?;
            if !stamp::enable(&socket) {
                tracing::debug!("no kernel receive stamps here: latency is taken at read time");
            }
            let local = socket.local_addr()?;
            rtc.add_local_candidate(Candidate::host(local, "udp").map_err(rtc_err)?);
            Some(socket)
        };
        let mut api = rtc.sdp_api();
        let direction = if publish {
            Direction::SendOnly
        } else {
            Direction::RecvOnly
        };
        let audio = api.add_media(MediaKind::Audio, direction, None, None, None);
        let video = (video && publish)
            .then(|| api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None));
        let (offer, pending) = api
            .apply()
            .ok_or_else(|| BenchError::Protocol("nothing to offer".into()))?;
        let peer = Self {
            id,
            rtc,
            socket,
            tcp: None,
            audio,
            video,
            publish,
        };
        Ok((peer, offer.to_sdp_string(), pending))
    }

    /// Connects to the passive TCP candidate of the SFU's `answer` (the one on `server`,
    /// if advertised), as a peer offered with `tcp` does before applying the answer.
    pub async fn connect_tcp(&mut self, answer: &str, server: std::net::IpAddr) -> Result<()> {
        let remote = Link::tcp_candidate(answer, server)?;
        self.tcp = Some(Link::connect_tcp(&mut self.rtc, remote).await?);
        Ok(())
    }

    /// Applies the SFU's answer to our first offer.
    pub fn accept_answer(&mut self, pending: SdpPendingOffer, sdp: &str) -> Result<()> {
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(rtc_err)?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(rtc_err)
    }

    /// Runs the media loop until `cancel` or the connection ends. Must run inside a tokio
    /// runtime (the socket registers with it).
    pub async fn run(
        self,
        spec: MediaSpec,
        epoch: Instant,
        stats: Arc<PeerStats>,
        cmds: mpsc::Receiver<MediaCmd>,
        cancel: CancellationToken,
    ) {
        let id = self.id;
        if let Err(e) = self.drive(spec, epoch, &stats, cmds, cancel).await {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(peer = id, error = %e, "sfu-load peer ended");
        }
        stats.ended.store(true, Ordering::Release);
    }

    async fn drive(
        self,
        spec: MediaSpec,
        epoch: Instant,
        stats: &PeerStats,
        mut cmds: mpsc::Receiver<MediaCmd>,
        cancel: CancellationToken,
    ) -> Result<()> {
        let Self {
            id,
            mut rtc,
            socket,
            tcp,
            audio,
            video,
            publish,
        } = self;
        let mut link = match (socket, tcp) {
            (Some(socket), _) => Link::Udp(UdpSocket::from_std(socket)?),
            (None, Some(stream)) => Link::tcp(stream)?,
            (None, None) => return Err(BenchError::Protocol("no transport".into())),
        };
        let local = link.local()?;
        let proto = link.proto();
        let mut sender = Sender::new(id, audio, video, spec);
        let mut buf = vec![0u8; 2048];
        let mut rx_at = Arrival::default();
        loop {
            let timeout = drain(&mut rtc, &mut link, stats, rx_at, &mut sender).await?;
            if !rtc.is_alive() {
                return Ok(());
            }
            let wake = sender.next_due().map_or(timeout, |d| d.min(timeout));
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    rtc.disconnect();
                    let _ = drain(&mut rtc, &mut link, stats, rx_at, &mut sender).await;
                    return Ok(());
                }
                cmd = cmds.recv() => match cmd {
                    Some(MediaCmd::ApplyOffer { sdp, reply }) => {
                        let answer = SdpOffer::from_sdp_string(&sdp)
                            .map_err(rtc_err)
                            .and_then(|o| rtc.sdp_api().accept_offer(o).map_err(rtc_err))
                            .map(|a| a.to_sdp_string());
                        if answer.is_ok() {
                            stats.offers_applied.fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = reply.send(answer);
                    }
                    None => {
                        rtc.disconnect();
                        return Ok(());
                    }
                },
                r = link.wait() => match r? {
                    Incoming::Readable => for _ in 0..RECV_BATCH {
                        let d = match link.try_recv_udp(&mut buf) {
                            Ok(d) => d,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(e.into()),
                        };
                        rx_at = Arrival::of(&d, epoch);
                        // str0m gets the read time: its clock must not go back.
                        receive(&mut rtc, &buf[..d.len], d.source, local, proto, d.read)?;
                        drain(&mut rtc, &mut link, stats, rx_at, &mut sender).await?;
                    },
                    // Over TCP there is no kernel stamp: the frame's time is its read.
                    Incoming::Frame(frame) => {
                        let now = Instant::now();
                        rx_at = Arrival::read_at(now, epoch);
                        let source = link.remote().unwrap_or(local);
                        receive(&mut rtc, &frame, source, local, proto, now)?;
                        drain(&mut rtc, &mut link, stats, rx_at, &mut sender).await?;
                    }
                    Incoming::Closed => {
                        return Err(BenchError::Protocol("the SFU closed the TCP connection".into()));
                    }
                },
                () = tokio::time::sleep_until(wake.into()) => {}
            }
            let now = Instant::now();
            if publish && stats.connected.load(Ordering::Relaxed) {
                sender.send_due(&mut rtc, now, epoch, stats);
            }
            rtc.handle_input(Input::Timeout(now)).map_err(rtc_err)?;
        }
    }
}

fn receive(
    rtc: &mut Rtc,
    data: &[u8],
    source: SocketAddr,
    destination: SocketAddr,
    proto: Protocol,
    now: Instant,
) -> Result<()> {
    // Datagrams str0m cannot classify (not STUN, DTLS, RTP or RTCP) are dropped here.
    let Ok(contents) = data.try_into() else {
        return Ok(());
    };
    let input = Input::Receive(
        now,
        Receive {
            proto,
            source,
            destination,
            contents,
        },
    );
    rtc.handle_input(input).map_err(rtc_err)
}

/// Sends every transmit and handles every event until str0m wants a timeout that is
/// not due yet. A due one is handled here, as the SFU does (docs/sfu.md): str0m
/// releases each next packet of a frame only on a timeout, 1 µs after the last, and
/// the loop's timer rounds up to the millisecond. (Measured at 4 video rooms of 4: no
/// difference in the added latency, as datagrams arriving wake the loop often enough
/// at that load; it keeps a sender's frame from depending on that.)
async fn drain(
    rtc: &mut Rtc,
    link: &mut Link,
    stats: &PeerStats,
    rx_at: Arrival,
    sender: &mut Sender,
) -> Result<Instant> {
    let mut due = 0;
    loop {
        match rtc.poll_output().map_err(rtc_err)? {
            Output::Timeout(t) => {
                let now = Instant::now();
                if t > now || due == DUE_TIMEOUTS {
                    return Ok(t);
                }
                due += 1;
                rtc.handle_input(Input::Timeout(now)).map_err(rtc_err)?;
            }
            Output::Transmit(t) => {
                link.send(&t.contents, t.destination).await?;
            }
            Output::Event(Event::Connected) => stats.connected.store(true, Ordering::Release),
            Output::Event(Event::IceConnectionStateChange(s)) => {
                if let Ok(mut state) = stats.ice_state.lock() {
                    *state = format!("{s:?}");
                }
            }
            Output::Event(Event::MediaAdded(m)) if m.direction.is_receiving() => {
                stats.recv_mlines.fetch_add(1, Ordering::Relaxed);
            }
            Output::Event(Event::MediaData(d)) => {
                let kind = match rtc.media(d.mid).map(|m| m.kind()) {
                    Some(MediaKind::Audio) => Kind::Audio,
                    Some(MediaKind::Video) => Kind::Video,
                    None => continue,
                };
                // Extended (64-bit) sequence numbers: no wrap-around to handle.
                let (first, last): (u64, u64) = (**d.seq_range.start(), **d.seq_range.end());
                let packets = last.saturating_sub(first).saturating_add(1);
                let marker = payload::find(&d.data);
                if let Ok(mut t) = stats.tally.lock() {
                    t.frame(kind, marker, packets, rx_at);
                }
            }
            Output::Event(Event::KeyframeRequest(r)) if Some(r.mid) == sender.video => {
                sender.keyframe_requested = true;
            }
            Output::Event(_) => {}
        }
    }
}

/// The publishing side: when each track's next frame is due, and what it contains.
struct Sender {
    id: u32,
    audio: Mid,
    video: Option<Mid>,
    spec: MediaSpec,
    audio_pt: Option<Pt>,
    video_pt: Option<Pt>,
    next_audio: Option<Instant>,
    next_video: Option<Instant>,
    audio_frame: u32,
    video_frame: u32,
    keyframe_requested: bool,
    /// Where this sender's RTP timestamps start (RFC 3550 §5.1: not zero, and not the
    /// same for every sender, so that a capture of the SFU's traffic can pair each
    /// forwarded packet with the one it came from by timestamp alone).
    ts_base: u64,
    buf: Vec<u8>,
}

/// A well-spread 31-bit timestamp origin for sender `id` (Knuth's multiplicative hash).
fn ts_base(id: u32) -> u64 {
    u64::from(id.wrapping_add(1).wrapping_mul(2_654_435_761) >> 1)
}

impl Sender {
    fn new(id: u32, audio: Mid, video: Option<Mid>, spec: MediaSpec) -> Self {
        Self {
            id,
            audio,
            video,
            spec,
            audio_pt: None,
            video_pt: None,
            next_audio: None,
            next_video: None,
            audio_frame: 0,
            video_frame: 0,
            keyframe_requested: false,
            ts_base: ts_base(id),
            buf: Vec::with_capacity(2048),
        }
    }

    fn video_interval(&self) -> Option<Duration> {
        let fps = self.spec.video.as_ref()?.fps.max(1);
        Some(Duration::from_micros(1_000_000 / u64::from(fps)))
    }

    fn next_due(&self) -> Option<Instant> {
        match (self.next_audio, self.next_video) {
            (Some(a), Some(v)) => Some(a.min(v)),
            (a, v) => a.or(v),
        }
    }

    /// Writes the frames that are due at `now`. Senders start at an offset derived from
    /// their id so that peers do not all send in the same instant.
    fn send_due(&mut self, rtc: &mut Rtc, now: Instant, epoch: Instant, stats: &PeerStats) {
        if self.next_audio.is_none() {
            let phase = Duration::from_micros(u64::from(self.id).wrapping_mul(7919) % 20_000);
            self.next_audio = Some(now + phase);
            self.next_video = self.video.map(|_| now + phase);
            self.audio_pt = pt_for(rtc, self.audio, Codec::Opus);
            self.video_pt = self.video.and_then(|v| pt_for(rtc, v, Codec::H264));
        }
        let sent_us = |at: Instant| at.saturating_duration_since(epoch).as_micros() as u64;
        if let (Some(due), Some(pt)) = (self.next_audio, self.audio_pt)
            && due <= now
        {
            self.audio_frame += 1;
            let marker = Marker {
                sender: self.id,
                frame: self.audio_frame,
                sent_us: sent_us(now),
            };
            payload::audio_frame(marker, self.spec.audio_bytes, &mut self.buf);
            let ts = MediaTime::new(
                self.ts_base + u64::from(self.audio_frame) * 960,
                Frequency::FORTY_EIGHT_KHZ,
            );
            if let Some(w) = rtc.writer(self.audio) {
                let _ = w
                    .audio_level(AUDIO_LEVEL, true)
                    .write(pt, now, ts, self.buf.as_slice());
                stats.frames_sent.fetch_add(1, Ordering::Relaxed);
            }
            self.next_audio = Some(reschedule(due, AUDIO_INTERVAL, now, stats));
        }
        let (Some(video), Some(pt), Some(v), Some(due), Some(interval)) = (
            self.video,
            self.video_pt,
            self.spec.video.clone(),
            self.next_video,
            self.video_interval(),
        ) else {
            return;
        };
        if due > now {
            return;
        }
        self.video_frame += 1;
        // The first frame, then every `keyframe_every` frames from a phase derived from
        // the id: cameras' keyframe clocks are not in step (in step, every publisher's
        // keyframe would reach the SFU within the same 20 ms every interval).
        let every = v.keyframe_every.max(1);
        let phase = self.id.wrapping_mul(7919) % every;
        let key = self.keyframe_requested
            || self.video_frame == 1
            || (self.video_frame - 1 + phase).is_multiple_of(every);
        self.keyframe_requested = false;
        let marker = Marker {
            sender: self.id,
            frame: self.video_frame,
            sent_us: sent_us(now),
        };
        let size = if key { v.keyframe_bytes } else { v.frame_bytes };
        payload::video_frame(marker, key, size, &mut self.buf);
        let ts = MediaTime::new(
            self.ts_base + u64::from(self.video_frame) * 90_000 / u64::from(v.fps.max(1)),
            Frequency::NINETY_KHZ,
        );
        if let Some(w) = rtc.writer(video) {
            let _ = w.write(pt, now, ts, self.buf.as_slice());
            stats.frames_sent.fetch_add(1, Ordering::Relaxed);
        }
        self.next_video = Some(reschedule(due, interval, now, stats));
    }
}

/// The next send time after `due`; a sender that fell far behind (its thread was busy)
/// skips ahead rather than sending a burst, and the slip is counted.
fn reschedule(due: Instant, interval: Duration, now: Instant, stats: &PeerStats) -> Instant {
    let next = due + interval;
    if now.saturating_duration_since(next) > MAX_SLIP {
        stats.send_slips.fetch_add(1, Ordering::Relaxed);
        now + interval
    } else {
        next
    }
}

fn pt_for(rtc: &mut Rtc, mid: Mid, codec: Codec) -> Option<Pt> {
    let w = rtc.writer(mid)?;
    w.payload_params()
        .find(|p| p.spec().codec == codec)
        .map(|p| p.pt())
}
