//! One synthetic call participant: a `huddle-client` media session behind its own
//! impairment shim, publishing a known audio signal (and optionally a moving test
//! picture) in real time, and recording everything it plays out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use huddle_client::media::{
    AudioSender, MediaEvent, MediaOptions, MediaSession, RemoteMedia, RemoteTrack, SendStats,
    VideoOptions, VideoSender,
};
use huddle_client::{Client, Config};
use huddle_media::audio::jitter::JitterConfig;
use huddle_media::codec::i420::I420Frame;
use huddle_media::codec::opus::OpusEncoderConfig;
use huddle_media::quality::signal::moving_pattern;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::shim::model::ImpairmentStats;
use crate::shim::{ImpairmentConfig, Relay};
use crate::{BenchError, Result};

/// Samples per second of the audio path (Opus runs at 48 kHz).
pub const RATE: u32 = 48_000;
/// Samples per sent audio frame (20 ms).
pub const FRAME: usize = 960;

/// How a participant joins and what it sends.
#[derive(Clone)]
pub struct ParticipantSetup {
    pub name: String,
    /// Signalling WebSocket URL (`ws://host:port/v1/ws`) and an access token for the room.
    pub ws_url: String,
    pub token: String,
    /// The SFU's UDP address: the shim relays to it.
    pub sfu_addr: SocketAddr,
    /// Impairments toward the SFU and from it; `None`: no shim, direct.
    pub shim: Option<(ImpairmentConfig, ImpairmentConfig)>,
    /// The signal this participant speaks, 48 kHz mono; it loops if the call is longer.
    pub speech: Arc<Vec<i16>>,
    pub video: Option<VideoSetup>,
    pub opus: OpusEncoderConfig,
    pub jitter: JitterConfig,
    pub nack: bool,
    pub red: bool,
}

#[derive(Clone, Debug)]
pub struct VideoSetup {
    pub width: usize,
    pub height: usize,
    pub fps: u32,
    pub bitrate_bps: u32,
}

/// What one participant played out from one other participant.
#[derive(Default)]
pub struct Heard {
    /// Played-out PCM, in order, and the playout tick of each 10 ms frame in it.
    pub pcm: Vec<i16>,
    pub frame_times: Vec<Instant>,
    pub frame_len: usize,
    /// Video pictures decoded and the time of the first.
    pub pictures: u64,
    pub first_picture: Option<Instant>,
    /// Last decoded picture's size.
    pub picture_size: Option<(usize, usize)>,
    /// The remote tracks, for their statistics.
    pub tracks: Vec<Arc<RemoteTrack>>,
}

/// A participant in a running call.
pub struct Participant {
    pub name: String,
    pub sid: String,
    /// From connecting the WebSocket to ICE/DTLS up (`media_connected`).
    pub join_time: Duration,
    /// When media connected.
    pub connected_at: Instant,
    /// When the speech sample 0 was spoken (one frame before it was sent).
    pub speech_start: Instant,
    /// When the first picture was sent.
    pub video_start: Option<Instant>,
    /// Pictures its video encoder has produced so far.
    pub video_frames_encoded: Arc<AtomicU64>,
    /// What it heard, by publisher sid.
    pub heard: Arc<Mutex<HashMap<String, Heard>>>,
    client: Client,
    sfu_addr: SocketAddr,
    session: Option<MediaSession>,
    relay: Option<Relay>,
    senders: Vec<JoinHandle<SendStats>>,
    stop: CancellationToken,
    events_task: JoinHandle<()>,
}

/// What a participant sent, collected when it stops sending.
pub struct Sent {
    pub audio: Option<SendStats>,
    pub video: Option<SendStats>,
}

impl Participant {
    /// Connects, joins the room, starts the media session through the shim, waits until
    /// media is connected and starts sending.
    pub async fn join(setup: ParticipantSetup) -> Result<Participant> {
        let t0 = Instant::now();
        let (client, mut app_events) = Client::connect(Config::new(&setup.ws_url, &setup.token))
            .await
            .map_err(|e| BenchError::Server(format!("{}: {e}", setup.name)))?;
        // Signalling events are not used here; keep the queue drained.
        tokio::spawn(async move { while app_events.recv().await.is_some() {} });
        client
            .join(None)
            .await
            .map_err(|e| BenchError::Server(format!("{}: join: {e}", setup.name)))?;
        let relay = match &setup.shim {
            Some((up, down)) => Some(Relay::start(setup.sfu_addr, up.clone(), down.clone()).await?),
            None => None,
        };
        let opts = MediaOptions {
            audio: Some(setup.opus.clone()),
            video: setup.video.as_ref().map(|v| VideoOptions {
                width: v.width,
                height: v.height,
                encoder: huddle_media::codec::h264::H264EncoderConfig {
                    bitrate_bps: v.bitrate_bps,
                    max_fps: v.fps as f32,
                    ..Default::default()
                },
            }),
            bind_ip: setup.sfu_addr.ip(),
            sfu_address: relay.as_ref().map(Relay::local_addr),
            nack: setup.nack,
            red: setup.red,
            jitter: setup.jitter.clone(),
            ice_servers: Vec::new(),
            relay_only: false,
        };
        let (mut session, events) = MediaSession::start(&client, opts)
            .await
            .map_err(|e| BenchError::Server(format!("{}: media: {e}", setup.name)))?;
        let heard: Arc<Mutex<HashMap<String, Heard>>> = Arc::default();
        // Wait for media_connected, collecting tracks that may come first.
        let (connected_tx, mut connected_rx) = mpsc::channel::<()>(1);
        let events_task = tokio::spawn(consume_events(events, heard.clone(), connected_tx));
        tokio::time::timeout(Duration::from_secs(20), connected_rx.recv())
            .await
            .map_err(|_| {
                BenchError::Server(format!("{}: media did not connect in 20 s", setup.name))
            })?;
        let join_time = t0.elapsed();
        let connected_at = Instant::now();

        let stop = CancellationToken::new();
        let mut senders = Vec::new();
        let speech_start = Instant::now();
        let audio = session.take_audio().expect("audio is always published");
        senders.push(tokio::spawn(send_audio(
            audio,
            setup.speech.clone(),
            stop.clone(),
        )));
        let mut video_start = None;
        let video_frames_encoded = Arc::new(AtomicU64::new(0));
        if let (Some(v), Some(sender)) = (&setup.video, session.take_video()) {
            video_start = Some(Instant::now());
            senders.push(tokio::spawn(send_video(
                sender,
                v.clone(),
                stop.clone(),
                video_frames_encoded.clone(),
            )));
        }
        Ok(Participant {
            name: setup.name,
            sid: session.sid().to_owned(),
            join_time,
            connected_at,
            // Sample 0 of the first frame was spoken a frame's duration before the first
            // send (the first tick of the sender is immediate).
            speech_start: speech_start - Duration::from_millis(20),
            video_start,
            video_frames_encoded,
            heard,
            client,
            sfu_addr: setup.sfu_addr,
            session: Some(session),
            relay,
            senders,
            stop,
            events_task,
        })
    }

    /// Moves to another network: a new shim (a new local address toward the SFU) with
    /// these impairments replaces the old one, which stops relaying, and ICE restarts
    /// over it.
    pub async fn move_to(&mut self, up: ImpairmentConfig, down: ImpairmentConfig) -> Result<()> {
        let relay = Relay::start(self.sfu_addr, up, down).await?;
        let to = relay.local_addr();
        self.relay = Some(relay);
        let session = self
            .session
            .as_ref()
            .ok_or_else(|| BenchError::Protocol("the participant has left".into()))?;
        session
            .restart_ice(Some(to))
            .await
            .map_err(|e| BenchError::Server(format!("{}: ICE restart: {e}", self.name)))
    }

    /// Shim counters: toward the SFU, toward this participant.
    pub fn shim_stats(&self) -> Option<(ImpairmentStats, ImpairmentStats)> {
        self.relay.as_ref().map(Relay::stats)
    }

    /// Stops sending; returns the send statistics.
    pub async fn stop_sending(&mut self) -> Sent {
        self.stop.cancel();
        let mut out = Sent {
            audio: None,
            video: None,
        };
        for (i, h) in self.senders.drain(..).enumerate() {
            let stats = h.await.ok();
            if i == 0 {
                out.audio = stats;
            } else {
                out.video = stats;
            }
        }
        out
    }

    /// Leaves the call and closes the connection.
    pub async fn leave(mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.leave().await;
        }
        self.events_task.abort();
        self.client.close().await;
    }
}

async fn consume_events(
    mut events: mpsc::Receiver<MediaEvent>,
    heard: Arc<Mutex<HashMap<String, Heard>>>,
    connected: mpsc::Sender<()>,
) {
    while let Some(ev) = events.recv().await {
        match ev {
            MediaEvent::Connected => {
                let _ = connected.try_send(());
            }
            // The bench's participants publish one layer: never paused.
            MediaEvent::TrackPaused { .. } => {}
            // A server whose limits refuse it: its listeners' reports show the silence.
            MediaEvent::TrackRefused {
                kind,
                code,
                message,
            } => tracing::warn!(kind, code, "the SFU refused a track: {message}"),
            MediaEvent::Track(mut track) => {
                let media = track.media.take();
                let publisher = track.publisher.clone();
                let track = Arc::new(track);
                heard
                    .lock()
                    .expect("not poisoned")
                    .entry(publisher.clone())
                    .or_default()
                    .tracks
                    .push(track);
                match media {
                    Some(RemoteMedia::Audio(mut frames)) => {
                        let heard = heard.clone();
                        tokio::spawn(async move {
                            while let Some(f) = frames.recv().await {
                                let mut h = heard.lock().expect("not poisoned");
                                let e = h.entry(publisher.clone()).or_default();
                                e.frame_len = f.pcm.len();
                                e.pcm.extend_from_slice(&f.pcm);
                                e.frame_times.push(f.played_at);
                            }
                        });
                    }
                    Some(RemoteMedia::Video(mut frames)) => {
                        let heard = heard.clone();
                        tokio::spawn(async move {
                            while let Some(f) = frames.recv().await {
                                let mut h = heard.lock().expect("not poisoned");
                                let e = h.entry(publisher.clone()).or_default();
                                e.pictures += 1;
                                e.first_picture.get_or_insert(f.decoded_at);
                                e.picture_size = Some((f.picture.width(), f.picture.height()));
                            }
                        });
                    }
                    None => {}
                }
            }
            MediaEvent::Left { reason } => {
                tracing::debug!(%reason, "media session left");
                break;
            }
        }
    }
}

/// Sends `speech` (looped) in 20 ms frames on a real-time clock until stopped.
async fn send_audio(
    mut sender: AudioSender,
    speech: Arc<Vec<i16>>,
    stop: CancellationToken,
) -> SendStats {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    // Like a microphone: frames owed after a stall go out at once, the clock never slips.
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut pos = 0usize;
    let mut frame = vec![0i16; FRAME];
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        for s in frame.iter_mut() {
            *s = speech[pos % speech.len()];
            pos += 1;
        }
        if let Err(e) = sender.send(&frame).await {
            tracing::warn!(error = %e, "audio send failed");
            break;
        }
    }
    sender.stats()
}

/// Sends the moving test pattern at `fps` until stopped.
async fn send_video(
    mut sender: VideoSender,
    v: VideoSetup,
    stop: CancellationToken,
    encoded: Arc<AtomicU64>,
) -> SendStats {
    let Ok(mut picture) = I420Frame::new(v.width, v.height) else {
        return sender.stats();
    };
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(v.fps.max(1))));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut index = 0u64;
    loop {
        let at = tokio::select! {
            t = tick.tick() => t.into_std(),
            _ = stop.cancelled() => break,
        };
        moving_pattern(&mut picture, index);
        index += 1;
        if let Err(e) = sender.send(&picture, at).await {
            tracing::warn!(error = %e, "video send failed");
            break;
        }
        encoded.store(sender.stats().frames_encoded, Ordering::Relaxed);
    }
    sender.stats()
}
