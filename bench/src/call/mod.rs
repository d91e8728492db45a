//! `huddle bench call`: synthetic calls through a real huddle under a seeded impairment
//! shim per participant, measured the way a listener would experience them.
//!
//! Each participant is a `huddle-client` media session (webrtc-rs to the SFU) that speaks
//! a known speech-like signal (or a WAV file) through Opus in real time and, optionally,
//! sends an H.264 moving pattern. Its UDP traffic goes through its own
//! [`crate::shim::Relay`] (loss, bursts, delay, jitter, reordering, bandwidth, each
//! direction). Every participant plays out everyone else through the client's jitter
//! buffer; afterwards [`analysis`] aligns the played audio with the spoken signal to get
//! mouth-to-ear delay and SNR, the jitter buffer says what was concealed, the E-model
//! (ITU-T G.107) turns delay and loss into R and MOS, and the frame buffer and decoder
//! say how video fared.

pub mod analysis;
pub mod participant;
pub mod plot;
pub mod report;
pub mod sweep;
pub mod wav;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use huddle_media::audio::jitter::JitterConfig;
use huddle_media::codec::opus::{OpusEncoderConfig, OpusSignal};
use huddle_media::quality::signal::speech_like;
use serde::{Deserialize, Serialize};

pub use participant::VideoSetup;
pub use report::{CallReport, PairReport, print_summary};

use crate::shim::{ImpairmentConfig, Loss};
use crate::{BenchError, Result};
use participant::{Participant, ParticipantSetup, RATE};

/// Impairments of one direction, as given on the command line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Impairments {
    /// Mean loss, 0..1.
    pub loss: f64,
    /// Mean loss burst length in packets; 1 (or less) is random loss, more is
    /// Gilbert–Elliott bursts.
    pub burst: f64,
    pub delay_ms: f64,
    pub jitter_ms: f64,
    /// Let jitter reorder packets (otherwise it only delays the queue).
    pub reorder: bool,
    /// Bytes per second; 0 is unlimited.
    pub bandwidth: u64,
}

impl Impairments {
    fn to_config(self, seed: u64) -> ImpairmentConfig {
        let loss = if self.loss <= 0.0 {
            Loss::None
        } else if self.burst > 1.0 {
            Loss::bursty(self.loss, self.burst)
        } else {
            Loss::Random(self.loss)
        };
        ImpairmentConfig {
            loss,
            delay: Duration::from_secs_f64(self.delay_ms.max(0.0) / 1000.0),
            jitter: Duration::from_secs_f64(self.jitter_ms.max(0.0) / 1000.0),
            keep_order: !self.reorder,
            bandwidth: self.bandwidth,
            seed,
            ..ImpairmentConfig::default()
        }
    }
}

/// One call to run.
#[derive(Debug, Clone)]
pub struct CallConfig {
    pub participants: usize,
    pub duration: Duration,
    /// Toward the SFU and from it, for every participant.
    pub up: Impairments,
    pub down: Impairments,
    pub video: Option<VideoSetup>,
    /// 48 kHz mono speech to send; default a seeded speech-like signal.
    pub speech: Option<Arc<Vec<i16>>>,
    pub nack: bool,
    pub fec: bool,
    /// Offer redundant audio (RED); the SFU sends and takes it when it accepts it.
    pub red: bool,
    pub seed: u64,
    /// Opus bitrate.
    pub audio_bitrate: u32,
    /// Settling time before measuring (joins, first keyframes, jitter buffer start).
    pub warmup: Duration,
    /// Print progress lines to stderr.
    pub progress: bool,
}

impl Default for CallConfig {
    fn default() -> Self {
        Self {
            participants: 2,
            duration: Duration::from_secs(10),
            up: Impairments::default(),
            down: Impairments::default(),
            video: None,
            speech: None,
            nack: true,
            fec: true,
            red: true,
            seed: 1,
            audio_bitrate: 32_000,
            warmup: Duration::from_secs(1),
            progress: false,
        }
    }
}

/// Where the call runs: signalling URL and a way to mint tokens, and the SFU address.
pub struct CallTarget<'a> {
    pub server: &'a crate::server::Target,
    pub sfu_addr: SocketAddr,
}

/// Runs one call and measures it.
pub async fn run(target: &CallTarget<'_>, cfg: &CallConfig) -> Result<CallReport> {
    if cfg.participants < 2 {
        return Err(BenchError::Protocol(
            "a call needs at least 2 participants".into(),
        ));
    }
    let room = format!("bench-call-{:08x}", rand::random::<u32>());
    let seconds = cfg.duration.as_secs_f64() + cfg.warmup.as_secs_f64() + 2.0;
    let speeches: Vec<Arc<Vec<i16>>> = (0..cfg.participants)
        .map(|i| {
            cfg.speech.clone().unwrap_or_else(|| {
                Arc::new(speech_like(
                    seconds,
                    RATE,
                    16_000,
                    cfg.seed.wrapping_add(i as u64),
                ))
            })
        })
        .collect();
    let mut joined = Vec::new();
    for (i, speech) in speeches.iter().enumerate() {
        let name = format!("p{i}");
        let token = target.server.token(&name, &room).await?;
        let seed = cfg.seed.wrapping_mul(1000).wrapping_add(2 * i as u64);
        let setup = ParticipantSetup {
            name,
            ws_url: target.server.ws_url(),
            token,
            sfu_addr: target.sfu_addr,
            shim: Some((cfg.up.to_config(seed), cfg.down.to_config(seed + 1))),
            speech: speech.clone(),
            video: cfg.video.clone(),
            opus: OpusEncoderConfig {
                bitrate_bps: cfg.audio_bitrate,
                inband_fec: cfg.fec,
                expected_loss_percent: if cfg.fec { 10 } else { 0 },
                signal: OpusSignal::Voice,
                ..OpusEncoderConfig::default()
            },
            jitter: JitterConfig::default(),
            nack: cfg.nack,
            red: cfg.red,
        };
        let p = Participant::join(setup).await?;
        if cfg.progress {
            eprintln!(
                "  {} joined in {:.0} ms",
                p.name,
                p.join_time.as_secs_f64() * 1000.0
            );
        }
        joined.push(p);
    }
    if cfg.progress {
        eprintln!(
            "  warming up {:.1} s, then measuring {:.1} s",
            cfg.warmup.as_secs_f64(),
            cfg.duration.as_secs_f64()
        );
    }
    tokio::time::sleep(cfg.warmup).await;
    let baseline = report::snapshot(&joined);
    tokio::time::sleep(cfg.duration).await;
    let end = report::snapshot(&joined);
    let ended_at = std::time::Instant::now();
    // The server's view of each link over the same window (it smooths over seconds).
    let server_quality = match target.server.room_media(&room).await {
        Ok(media) => report::ServerQuality::from_room_media(&media),
        Err(e) => {
            tracing::debug!(error = %e, "no admin view of the call's room");
            Vec::new()
        }
    };
    let mut sent = Vec::new();
    for p in &mut joined {
        sent.push(p.stop_sending().await);
    }
    // Video packets lost just before the end are still being repaired: count video once
    // retransmissions had time to arrive (audio has no retransmission; its counters stop
    // at the end, before the senders' silence would count as concealment).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let settled = report::snapshot(&joined);
    let mut report = report::build(
        cfg,
        &joined,
        &sent,
        &speeches,
        (&baseline, &end, &settled),
        ended_at,
    );
    report.server_quality = server_quality;
    for p in joined {
        p.leave().await;
    }
    Ok(report)
}
