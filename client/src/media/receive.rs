//! Subscribing: each remote track's RTP goes through the media crate — Opus (unwrapped
//! from RED, RFC 2198, whose redundant copies fill lost packets) into the
//! adaptive jitter buffer played out on a 10 ms clock, H.264 into the frame buffer (which
//! asks for retransmissions and keyframes) and the decoder — and decoded audio frames and
//! pictures come out to the application with per-track statistics.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use huddle_media::audio::jitter::{JitterBuffer, JitterConfig, JitterStats};
use huddle_media::codec::h264::H264Decoder;
use huddle_media::codec::i420::I420Frame;
use huddle_media::codec::opus::{OpusChannels, OpusDecoder};
use huddle_media::rtp::SeqUnwrapper;
use huddle_media::rtp::h264::H264Depacketizer;
use huddle_media::rtp::red;
use huddle_media::video::{FrameBuffer, FrameBufferConfig, FrameBufferStats, VideoPacket};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    TransportLayerNack, nack_pairs_from_sequence_numbers,
};
use rtc::rtp;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::PeerConnection;

/// Decoded frames waiting for the application, per track; older ones are dropped (and
/// counted) when it does not keep up.
const FRAME_QUEUE: usize = 256;
/// Received sequence numbers remembered for duplicate detection.
const SEQ_MEMORY: u64 = 4096;
/// Open gaps tracked for their fill time.
const MAX_GAPS: usize = 1024;
/// Least time between two keyframe requests made because frames failed to decode.
const DECODE_ERROR_PLI_INTERVAL: Duration = Duration::from_millis(300);

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    Audio,
    Video,
}

/// 10 ms of decoded 48 kHz mono audio, as played out.
#[derive(Debug, Clone)]
pub struct AudioFrame {
    pub pcm: Vec<i16>,
    /// The playout clock's tick this frame belongs to.
    pub played_at: Instant,
}

/// A decoded picture.
#[derive(Debug, Clone)]
pub struct VideoFrame {
    pub picture: I420Frame,
    pub rtp_timestamp: u32,
    pub keyframe: bool,
    pub decoded_at: Instant,
}

/// Decoded media of a remote track.
pub enum RemoteMedia {
    Audio(mpsc::Receiver<AudioFrame>),
    Video(mpsc::Receiver<VideoFrame>),
}

/// Statistics of a received track (names follow WebRTC's `RTCInboundRtpStreamStats`).
#[derive(Debug, Clone, Default)]
pub struct TrackStats {
    /// Distinct RTP packets received.
    pub packets_received: u64,
    pub bytes_received: u64,
    /// Copies of packets already received (retransmissions that raced the original).
    pub packets_duplicated: u64,
    /// Packets that arrived after a later one: reordered or retransmitted.
    pub packets_out_of_order: u64,
    /// Sequence numbers from the first to the highest received.
    pub packets_expected: u64,
    /// Audio packets never received but rebuilt from the redundant copy (RED) the next
    /// packet carried; not in `packets_received`.
    pub packets_recovered_red: u64,
    /// Packets that filled a gap (retransmitted or reordered), and the sum and maximum of
    /// the time from the gap showing to its filling.
    pub gaps_filled: u64,
    pub gap_fill_total: Duration,
    pub gap_fill_max: Duration,
    /// Decoded pictures (video).
    pub frames_decoded: u64,
    /// Undecodable frames or payloads.
    pub decode_errors: u64,
    /// Decoded frames the application did not take in time.
    pub frames_dropped_by_app: u64,
    /// When the first packet and the first decoded frame arrived.
    pub first_packet_at: Option<Instant>,
    pub first_frame_at: Option<Instant>,
    /// Audio: the jitter buffer's statistics.
    pub audio: Option<JitterStats>,
    /// Video: the frame buffer's statistics.
    pub video: Option<FrameBufferStats>,
}

impl TrackStats {
    /// Packets never received (expected minus received), after any retransmission.
    pub fn packets_lost(&self) -> u64 {
        self.packets_expected.saturating_sub(self.packets_received)
    }

    /// Mean time a gap stayed open before a packet filled it.
    pub fn gap_fill_mean(&self) -> Duration {
        if self.gaps_filled == 0 {
            Duration::ZERO
        } else {
            self.gap_fill_total / u32::try_from(self.gaps_filled).unwrap_or(u32::MAX)
        }
    }
}

/// A track another participant publishes, as received.
pub struct RemoteTrack {
    /// The publisher's session id (`sid` in `participant_joined`).
    pub publisher: String,
    pub track_id: String,
    pub kind: TrackKind,
    /// Decoded frames; take it to consume them.
    pub media: Option<RemoteMedia>,
    stats: Arc<Mutex<TrackStats>>,
}

impl RemoteTrack {
    pub fn stats(&self) -> TrackStats {
        self.stats.lock().expect("not poisoned").clone()
    }
}

/// Receive-side settings.
#[derive(Debug, Clone)]
pub(crate) struct ReceiveConfig {
    pub jitter: JitterConfig,
    pub nack: bool,
    /// Whether RED is offered: audio packets of the payload type the server gave it
    /// are unwrapped.
    pub red: bool,
}

/// RED's payload type on `receiver`'s m-line, as negotiated.
async fn red_payload_type_of(
    pc: &Arc<dyn PeerConnection>,
    receiver: RTCRtpReceiverId,
) -> Option<u8> {
    for r in pc.get_receivers().await {
        if r.id() == receiver {
            let params = r.get_parameters().await.ok()?;
            return super::peer::red_payload_type(&params.rtp_parameters.codecs);
        }
    }
    None
}

/// Waits for the track's first packet (which says who publishes it), then starts its
/// receive pipeline and returns it.
pub(crate) async fn open(
    track: Arc<dyn TrackRemote>,
    pc: &Arc<dyn PeerConnection>,
    config: ReceiveConfig,
) -> Option<RemoteTrack> {
    let (publisher, ssrc, receiver) = loop {
        match track.poll().await? {
            TrackRemoteEvent::OnOpen(init) => {
                break (
                    init.stream_ids.first().cloned().unwrap_or_default(),
                    init.ssrc,
                    init.receiver_id,
                );
            }
            TrackRemoteEvent::OnEnded => return None,
            _ => {}
        }
    };
    let kind = match track.kind().await {
        RtpCodecKind::Video => TrackKind::Video,
        _ => TrackKind::Audio,
    };
    let track_id = track.track_id().await;
    let stats = Arc::new(Mutex::new(TrackStats::default()));
    // A reader task turns the track's events into a channel, which the pipelines can
    // select on next to their timers.
    let (packets_tx, packets) = mpsc::channel::<rtp::Packet>(1024);
    let reader = track.clone();
    tokio::spawn(async move {
        while let Some(ev) = reader.poll().await {
            let delivered = match ev {
                TrackRemoteEvent::OnRtpPacket(p) => packets_tx.send(p).await.is_ok(),
                TrackRemoteEvent::OnEnded => false,
                _ => true,
            };
            if !delivered {
                break;
            }
        }
    });
    let media = match kind {
        TrackKind::Audio => {
            // RED's payload type is the one the sender's offer gave it (not
            // necessarily the one this side offered first).
            let red_pt = if config.red {
                red_payload_type_of(pc, receiver).await
            } else {
                None
            };
            let decoder = OpusDecoder::new(OpusChannels::Mono).ok()?;
            let jb = JitterBuffer::new(decoder, config.jitter.clone()).ok()?;
            let (tx, rx) = mpsc::channel(FRAME_QUEUE);
            tokio::spawn(audio_pipeline(packets, jb, red_pt, tx, stats.clone()));
            RemoteMedia::Audio(rx)
        }
        TrackKind::Video => {
            let (tx, rx) = mpsc::channel(FRAME_QUEUE);
            let mut fb = FrameBufferConfig::default();
            fb.nack.enabled = config.nack;
            // Repairs through the SFU take a round trip (milliseconds, tens on a bad
            // path); a chain still broken after 200 ms, or a stream joined after its
            // keyframe, needs a new keyframe sooner than the default half second.
            fb.keyframe_request_delay = Duration::from_millis(200);
            tokio::spawn(video_pipeline(
                packets,
                track.clone(),
                ssrc,
                FrameBuffer::new(fb),
                tx,
                stats.clone(),
            ));
            RemoteMedia::Video(rx)
        }
    };
    Some(RemoteTrack {
        publisher,
        track_id,
        kind,
        media: Some(media),
        stats,
    })
}

/// Counts distinct, duplicate and out-of-order packets by unwrapped sequence number.
#[derive(Default)]
struct SeqCounter {
    unwrapper: SeqUnwrapper,
    first: Option<u64>,
    highest: u64,
    seen: HashSet<u64>,
    /// Missing sequence numbers and when they were noticed missing.
    gaps: HashMap<u64, Instant>,
}

impl SeqCounter {
    /// Whether `seq` was counted already (a copy of it would be a duplicate).
    fn has(&self, seq: u16) -> bool {
        self.first.is_some() && self.seen.contains(&self.unwrapper.peek(seq))
    }

    /// Returns false for a duplicate.
    fn count(&mut self, seq: u16, bytes: usize, stats: &mut TrackStats, now: Instant) -> bool {
        let s = self.unwrapper.unwrap(seq);
        let first = *self.first.get_or_insert(s);
        if s < first || (self.highest > SEQ_MEMORY && s < self.highest - SEQ_MEMORY) {
            stats.packets_duplicated += 1; // older than we remember: treat as a copy
            return false;
        }
        if !self.seen.insert(s) {
            stats.packets_duplicated += 1;
            return false;
        }
        if s < self.highest {
            stats.packets_out_of_order += 1;
            if let Some(noticed) = self.gaps.remove(&s) {
                let d = now.saturating_duration_since(noticed);
                stats.gaps_filled += 1;
                stats.gap_fill_total += d;
                stats.gap_fill_max = stats.gap_fill_max.max(d);
            }
        } else if s > self.highest + 1 && self.highest >= first {
            for missing in self.highest + 1..s {
                if self.gaps.len() < MAX_GAPS {
                    self.gaps.insert(missing, now);
                }
            }
        }
        self.highest = self.highest.max(s);
        if self.seen.len() as u64 > 2 * SEQ_MEMORY {
            let floor = self.highest.saturating_sub(SEQ_MEMORY);
            self.seen.retain(|&x| x >= floor);
            self.gaps.retain(|&x, _| x >= floor);
        }
        stats.packets_received += 1;
        stats.bytes_received += bytes as u64;
        stats.packets_expected = self.highest - first + 1;
        stats.first_packet_at.get_or_insert(now);
        true
    }
}

async fn audio_pipeline(
    mut packets: mpsc::Receiver<rtp::Packet>,
    jb: JitterBuffer<OpusDecoder>,
    red_pt: Option<u8>,
    out: mpsc::Sender<AudioFrame>,
    stats: Arc<Mutex<TrackStats>>,
) {
    let jb = Arc::new(Mutex::new(jb));
    let mut counter = SeqCounter::default();
    let mut playout: Option<tokio::time::Interval> = None;
    let mut stats_tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            p = packets.recv() => {
                let Some(p) = p else { break };
                let now = Instant::now();
                let (seq, ts) = (p.header.sequence_number, p.header.timestamp);
                let mut st = stats.lock().expect("not poisoned");
                let mut b = jb.lock().expect("not poisoned");
                if red_pt == Some(p.header.payload_type) {
                    let Ok(wrapped) = red::parse(&p.payload) else {
                        st.decode_errors += 1;
                        continue;
                    };
                    // The redundant blocks are the packets just before this one, oldest
                    // first (one, the previous packet, from browsers, the SFU and this
                    // SDK); a copy fills a packet that never came. It arrives a frame
                    // after its time and the buffer's delay estimate counts it so: under
                    // loss the buffer holds about a frame more, which is what lets the
                    // copies play (taken as not late, most came too late: 4% concealed
                    // instead of 1.3% at 10% loss).
                    let n = wrapped.redundant.len();
                    for (i, block) in wrapped.redundant.iter().enumerate() {
                        let earlier = seq.wrapping_sub((n - i) as u16);
                        if block.timestamp_offset == 0 || counter.has(earlier) {
                            continue;
                        }
                        let block_ts = ts.wrapping_sub(u32::from(block.timestamp_offset));
                        if b.insert(earlier, block_ts, block.data, now).is_ok() {
                            st.packets_recovered_red += 1;
                        }
                    }
                    if counter.count(seq, wrapped.primary.len(), &mut st, now) {
                        let _ = b.insert(seq, ts, wrapped.primary, now);
                    }
                } else if counter.count(seq, p.payload.len(), &mut st, now) {
                    // Errors are counted by the buffer (late, malformed, ...).
                    let _ = b.insert(seq, ts, &p.payload, now);
                }
                drop((st, b));
                if playout.is_none() {
                    let mut i = tokio::time::interval(Duration::from_millis(10));
                    // A late tick plays the frames it owes at once: the playout clock, like
                    // a sound card's, never slips.
                    i.set_missed_tick_behavior(MissedTickBehavior::Burst);
                    playout = Some(i);
                }
            }
            tick = async { playout.as_mut().expect("guarded").tick().await }, if playout.is_some() => {
                let at = tick.into_std();
                let pcm = jb.lock().expect("not poisoned").pull(at).to_vec();
                let frame = AudioFrame { pcm, played_at: at };
                if out.try_send(frame).is_err() {
                    stats.lock().expect("not poisoned").frames_dropped_by_app += 1;
                }
            }
            _ = stats_tick.tick() => {
                let s = jb.lock().expect("not poisoned").stats();
                stats.lock().expect("not poisoned").audio = Some(s);
            }
        }
    }
    let s = jb.lock().expect("not poisoned").stats();
    stats.lock().expect("not poisoned").audio = Some(s);
}

async fn video_pipeline(
    mut packets: mpsc::Receiver<rtp::Packet>,
    track: Arc<dyn TrackRemote>,
    ssrc: u32,
    mut fb: FrameBuffer,
    out: mpsc::Sender<VideoFrame>,
    stats: Arc<Mutex<TrackStats>>,
) {
    // Lent to a blocking thread for each decode (see below).
    let Ok(decoder) = H264Decoder::new() else {
        return;
    };
    let mut decoder = Some(decoder);
    let mut depacketizer = H264Depacketizer::default();
    let mut counter = SeqCounter::default();
    let mut nacks = Vec::new();
    let (mut last_decode_pli, mut decode_pli): (Option<Instant>, bool) = (None, false);
    loop {
        let wake = fb
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_millis(100));
        tokio::select! {
            p = packets.recv() => {
                let Some(p) = p else { break };
                let now = Instant::now();
                let fresh = {
                    let mut st = stats.lock().expect("not poisoned");
                    counter.count(p.header.sequence_number, p.payload.len(), &mut st, now)
                };
                if !fresh {
                    continue;
                }
                match VideoPacket::h264(p.header.sequence_number, p.header.timestamp, p.header.marker, p.payload) {
                    Ok(vp) => { fb.insert(vp, now); }
                    Err(_) => stats.lock().expect("not poisoned").decode_errors += 1,
                }
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
        let now = Instant::now();
        while let Some(frame) = fb.poll_frame() {
            let au = depacketizer
                .depacketize_frame(frame.timestamp, frame.payloads.iter().map(|b| &b[..]))
                .ok();
            let decoded = match (au, decoder.take()) {
                (Some(au), Some(mut d)) => {
                    // Decoding takes milliseconds of CPU: on a blocking thread, so that
                    // audio playout and network tasks are not held up behind it.
                    let job = tokio::task::spawn_blocking(move || {
                        let mut picture = I420Frame::new(16, 16).ok();
                        let ok = picture
                            .as_mut()
                            .is_some_and(|p| matches!(d.decode(&au.data, p), Ok(true)));
                        (d, picture.filter(|_| ok))
                    });
                    match job.await {
                        Ok((d, picture)) => {
                            decoder = Some(d);
                            picture
                        }
                        // The decoder panicked: nothing more can be decoded.
                        Err(_) => return,
                    }
                }
                (None, d) => {
                    decoder = d;
                    None
                }
                (Some(_), None) => return,
            };
            let mut st = stats.lock().expect("not poisoned");
            match decoded {
                Some(picture) => {
                    st.frames_decoded += 1;
                    st.first_frame_at.get_or_insert(now);
                    let f = VideoFrame {
                        picture,
                        rtp_timestamp: frame.timestamp,
                        keyframe: frame.keyframe,
                        decoded_at: now,
                    };
                    if out.try_send(f).is_err() {
                        st.frames_dropped_by_app += 1;
                    }
                }
                None => {
                    // The frame buffer saw a whole chain (an SFU that renumbers hides its
                    // gaps), yet the decoder could not use it: only a keyframe helps, as
                    // a browser would ask after a decode error.
                    st.decode_errors += 1;
                    if last_decode_pli
                        .is_none_or(|t: Instant| now.duration_since(t) >= DECODE_ERROR_PLI_INTERVAL)
                    {
                        last_decode_pli = Some(now);
                        decode_pli = true;
                    }
                }
            }
        }
        nacks.clear();
        fb.poll_nack(now, &mut nacks);
        let mut rtcp: Vec<Box<dyn rtc::rtcp::Packet>> = Vec::new();
        if !nacks.is_empty() {
            rtcp.push(Box::new(TransportLayerNack {
                sender_ssrc: 0,
                media_ssrc: ssrc,
                nacks: nack_pairs_from_sequence_numbers(&nacks),
            }));
        }
        if fb.poll_keyframe_request(now) || std::mem::take(&mut decode_pli) {
            rtcp.push(Box::new(PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: ssrc,
            }));
        }
        if !rtcp.is_empty() {
            let _ = track.write_rtcp(rtcp).await;
        }
        stats.lock().expect("not poisoned").video = Some(fb.stats(now));
    }
}
