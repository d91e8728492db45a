//! The call report: per listener and speaker what was lost, repaired, concealed and how
//! late it played, rated by the E-model; per participant join time and shim counters.
//! Serialised as the JSON report (schema in docs/benchmarking.md, "Call quality").

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use huddle_client::media::{TrackKind, TrackStats};
use huddle_media::audio::jitter::JitterStats;
use huddle_media::quality::emodel::{EModelInput, GilbertLoss, OPUS_PROVISIONAL};
use serde::Serialize;

use super::analysis::{AudioMeasure, measure};
use super::participant::{Participant, RATE, Sent};
use super::{CallConfig, Impairments};

#[derive(Debug, Clone, Serialize)]
pub struct CallReport {
    pub participants: usize,
    pub duration_s: f64,
    pub up: Impairments,
    pub down: Impairments,
    pub nack: bool,
    pub fec: bool,
    pub red: bool,
    pub video: bool,
    pub seed: u64,
    pub joins: Vec<JoinReport>,
    pub pairs: Vec<PairReport>,
    pub summary: Summary,
    /// What the server's SFU made of each participant's link at the end of the
    /// measured window (its admin API), to set beside what the listeners measured.
    pub server_quality: Vec<ServerQuality>,
}

/// The SFU's connection quality of one participant (`quality` in the admin API's
/// `/v1/rooms/{room}/media`).
#[derive(Debug, Clone, Serialize)]
pub struct ServerQuality {
    pub name: String,
    /// `excellent`, `good`, `poor` or `lost`; empty when the server had not scored it.
    pub level: String,
    /// Estimated MOS.
    pub score: f64,
    pub loss_up_pct: f64,
    pub loss_down_pct: f64,
    /// The worse direction's loss after what redundant audio repairs: what it scored.
    pub loss_scored_pct: f64,
}

impl ServerQuality {
    /// The entries of an admin API room view (`/v1/rooms/{room}/media`).
    pub fn from_room_media(media: &serde_json::Value) -> Vec<ServerQuality> {
        let mut out: Vec<ServerQuality> = media["participants"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let q = &p["quality"];
                let f = |k: &str| q[k].as_f64().unwrap_or(f64::NAN);
                ServerQuality {
                    name: p["identity"].as_str().unwrap_or_default().to_owned(),
                    level: q["level"].as_str().unwrap_or_default().to_owned(),
                    score: f("score"),
                    loss_up_pct: f("loss_up_percent"),
                    loss_down_pct: f("loss_down_percent"),
                    loss_scored_pct: f("loss_scored_percent"),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct JoinReport {
    pub name: String,
    /// WebSocket connect to media connected, ms.
    pub join_ms: f64,
    /// Datagrams the shim saw and dropped, toward the SFU and toward the participant.
    pub shim_up: ShimCounts,
    pub shim_down: ShimCounts,
    pub audio_packets_sent: u64,
    pub video_frames_sent: u64,
    pub keyframe_requests_received: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ShimCounts {
    pub received: u64,
    pub lost: u64,
    pub queue_drops: u64,
}

/// What `listener` got from `speaker`.
#[derive(Debug, Clone, Serialize)]
pub struct PairReport {
    pub listener: String,
    pub speaker: String,
    pub audio: Option<AudioReport>,
    pub video: Option<VideoReport>,
}

/// Counters cover the measured period (after the warm-up); the jitter buffer's delay
/// and target are its state at the end.
#[derive(Debug, Clone, Serialize)]
pub struct AudioReport {
    pub packets_expected: u64,
    /// Lost on the way (before any repair), in percent of expected.
    pub loss_before_repair_pct: f64,
    /// Still missing at playout after FEC, in percent of expected.
    pub loss_after_repair_pct: f64,
    /// The loss the E-model is given: the larger of the loss after repair and the
    /// concealment (which also catches loss hidden by renumbering upstream of the
    /// listener).
    pub effective_loss_pct: f64,
    pub fec_recovered: u64,
    /// Packets rebuilt from the redundant copy the next packet carried (RED).
    pub red_recovered: u64,
    /// Played samples that were concealment, percent.
    pub concealed_pct: f64,
    pub jitter_buffer_delay_ms: f64,
    pub jitter_buffer_target_ms: f64,
    #[serde(flatten)]
    pub measured: AudioMeasure,
    /// E-model (ITU-T G.107) rating from the mean mouth-to-ear delay and the effective
    /// loss, with the provisional Opus impairment figures.
    pub r: f64,
    pub mos: f64,
    /// The jitter buffer's own statistics at the end of the measured period (WebRTC
    /// getStats names; counters since the track started).
    pub jitter_buffer: JitterStats,
}

#[derive(Debug, Clone, Serialize)]
pub struct VideoReport {
    /// Pictures the speaker's encoder produced in the measured period (it may skip
    /// pictures when its target bitrate is low) and, of them, the ones decoded.
    pub frames_sent: u64,
    pub frames_decoded: u64,
    pub fps: f64,
    /// From when the speaker sent and the listener was connected to the listener's
    /// first decoded picture, ms.
    pub time_to_first_frame_ms: Option<f64>,
    /// The same to the first video packet (the rest is waiting for a decodable keyframe).
    pub time_to_first_packet_ms: Option<f64>,
    pub freezes: u64,
    pub freeze_ms: f64,
    pub keyframe_requests: u64,
    pub nacks: u64,
    /// Frames of which packets arrived but that were never decodable, and packets that
    /// came after their frame was given up.
    pub frames_dropped: u64,
    pub packets_late: u64,
    /// Frames the decoder could not use.
    pub decode_errors: u64,
    /// Time from a gap showing to a (retransmitted) packet filling it: mean and max, ms.
    pub repair_ms_mean: f64,
    pub repair_ms_max: f64,
    pub packets_expected: u64,
    /// Packets noticed missing (recovered later or never), percent of expected.
    pub loss_before_repair_pct: f64,
    /// Never received, percent of expected.
    pub loss_after_repair_pct: f64,
    pub width: usize,
    pub height: usize,
}

/// Across all pairs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub pairs: usize,
    pub mos_mean: f64,
    pub mos_min: f64,
    pub delay_p50_ms: f64,
    /// Worst pair's p95.
    pub delay_p95_ms: f64,
    pub concealed_pct_mean: f64,
    pub loss_before_repair_pct_mean: f64,
    pub loss_after_repair_pct_mean: f64,
    pub snr_db_mean: f64,
    pub join_ms_max: f64,
    pub video_fps_mean: Option<f64>,
    pub video_freezes: Option<u64>,
}

/// The call at one moment: track statistics per (listener, speaker sid, kind is video),
/// and the pictures each speaker's encoder has produced, by sid.
#[derive(Default)]
pub(super) struct Snapshot {
    tracks: HashMap<(String, String, bool), TrackStats>,
    encoded: HashMap<String, u64>,
}

impl Snapshot {
    fn get(&self, key: &(String, String, bool)) -> Option<&TrackStats> {
        self.tracks.get(key)
    }
}

/// The statistics of every received track, and every encoder's count, now.
pub(super) fn snapshot(joined: &[Participant]) -> Snapshot {
    let mut out = Snapshot::default();
    for p in joined {
        for (speaker, h) in p.heard.lock().expect("not poisoned").iter() {
            for t in &h.tracks {
                out.tracks.insert(
                    (p.name.clone(), speaker.clone(), t.kind == TrackKind::Video),
                    t.stats(),
                );
            }
        }
        out.encoded.insert(
            p.sid.clone(),
            p.video_frames_encoded.load(Ordering::Relaxed),
        );
    }
    out
}

/// The counters of `now` minus those of `base`: what happened in the measured period.
fn since(now: TrackStats, base: Option<&TrackStats>) -> TrackStats {
    let Some(b) = base else { return now };
    let mut d = now;
    d.packets_expected = d.packets_expected.saturating_sub(b.packets_expected);
    d.packets_received = d.packets_received.saturating_sub(b.packets_received);
    d.packets_recovered_red = d
        .packets_recovered_red
        .saturating_sub(b.packets_recovered_red);
    d.frames_decoded = d.frames_decoded.saturating_sub(b.frames_decoded);
    d.decode_errors = d.decode_errors.saturating_sub(b.decode_errors);
    if let (Some(a), Some(ba)) = (d.audio.as_mut(), b.audio.as_ref()) {
        a.concealed_samples = a.concealed_samples.saturating_sub(ba.concealed_samples);
        a.total_samples_received = a
            .total_samples_received
            .saturating_sub(ba.total_samples_received);
        a.packets_lost = a.packets_lost.saturating_sub(ba.packets_lost);
        a.fec_recovered_packets = a
            .fec_recovered_packets
            .saturating_sub(ba.fec_recovered_packets);
        a.concealment_events = a.concealment_events.saturating_sub(ba.concealment_events);
        a.jitter_buffer_delay = (a.jitter_buffer_delay - ba.jitter_buffer_delay).max(0.0);
        a.jitter_buffer_emitted_count = a
            .jitter_buffer_emitted_count
            .saturating_sub(ba.jitter_buffer_emitted_count);
    }
    if let (Some(v), Some(bv)) = (d.video.as_mut(), b.video.as_ref()) {
        v.freeze_count = v.freeze_count.saturating_sub(bv.freeze_count);
        v.total_freezes_duration = v
            .total_freezes_duration
            .saturating_sub(bv.total_freezes_duration);
        v.pli_count = v.pli_count.saturating_sub(bv.pli_count);
        v.nack_count = v.nack_count.saturating_sub(bv.nack_count);
        v.packets_recovered = v.packets_recovered.saturating_sub(bv.packets_recovered);
        v.packets_unrecovered = v.packets_unrecovered.saturating_sub(bv.packets_unrecovered);
    }
    d
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// G.107 BurstR from the loss after repair and how many separate concealment runs it
/// formed: a two-state model whose mean bad run is loss / runs packets.
fn burst_r(lost: u64, runs: u64, expected: u64) -> f64 {
    if lost == 0 || expected == 0 {
        return 1.0;
    }
    let ppl = lost as f64 / expected as f64;
    let mean_run = (lost as f64 / runs.max(1) as f64).max(1.0);
    let q = 1.0 / mean_run;
    let p = (ppl * q / (1.0 - ppl).max(1e-9)).min(1.0);
    (1.0 / (p + q)).max(1.0)
}

pub(super) fn build(
    cfg: &CallConfig,
    joined: &[Participant],
    sent: &[Sent],
    speeches: &[std::sync::Arc<Vec<i16>>],
    (baseline, end, settled): (&Snapshot, &Snapshot, &Snapshot),
    ended_at: Instant,
) -> CallReport {
    // Measure only once everyone sends and the warm-up passed.
    let cut: Instant = joined
        .iter()
        .map(|p| p.speech_start)
        .max()
        .map(|t| t + cfg.warmup)
        .unwrap_or_else(Instant::now);
    let mut pairs = Vec::new();
    for listener in joined {
        let heard = listener.heard.lock().expect("not poisoned");
        for (si, speaker) in joined.iter().enumerate() {
            if speaker.sid == listener.sid {
                continue;
            }
            let Some(h) = heard.get(&speaker.sid) else {
                pairs.push(PairReport {
                    listener: listener.name.clone(),
                    speaker: speaker.name.clone(),
                    audio: None,
                    video: None,
                });
                continue;
            };
            let stats_of = |k: TrackKind| -> Option<TrackStats> {
                let key = (
                    listener.name.clone(),
                    speaker.sid.clone(),
                    k == TrackKind::Video,
                );
                let last = if k == TrackKind::Video { settled } else { end };
                last.get(&key)
                    .map(|st| since(st.clone(), baseline.get(&key)))
            };
            let full_jitter = end
                .get(&(listener.name.clone(), speaker.sid.clone(), false))
                .and_then(|t| t.audio.clone());
            let audio = stats_of(TrackKind::Audio).map(|st| {
                let first = h
                    .frame_times
                    .iter()
                    .position(|&t| t >= cut)
                    .unwrap_or(h.frame_times.len());
                let last = h
                    .frame_times
                    .iter()
                    .position(|&t| t >= ended_at)
                    .unwrap_or(h.frame_times.len())
                    .max(first);
                let from = (first * h.frame_len).min(h.pcm.len());
                let to = (last * h.frame_len).min(h.pcm.len());
                let m = measure(
                    &speeches[si],
                    speaker.speech_start,
                    &h.pcm[from..to],
                    &h.frame_times[first..last],
                    h.frame_len,
                    RATE,
                );
                let js = st.audio.clone().unwrap_or_default();
                let expected = st.packets_expected;
                let after = pct(js.packets_lost, expected);
                // What the listener lost is what was concealed as much as what its
                // sequence numbers miss: an SFU that forwards frames renumbers them, so
                // a publisher's upstream loss shows only as concealment.
                let effective = after.max(js.concealed_percent());
                let lost_equiv = (effective / 100.0 * expected as f64).round() as u64;
                let loss = GilbertLoss {
                    ppl_percent: effective,
                    burst_r: burst_r(lost_equiv, js.concealment_events, expected),
                };
                let rating = EModelInput::for_call(
                    OPUS_PROVISIONAL,
                    Duration::from_secs_f64(m.delay_mean_ms / 1000.0),
                    loss,
                )
                .rate()
                .ok();
                AudioReport {
                    packets_expected: expected,
                    loss_before_repair_pct: pct(st.packets_lost(), expected),
                    loss_after_repair_pct: after,
                    effective_loss_pct: effective,
                    fec_recovered: js.fec_recovered_packets,
                    red_recovered: st.packets_recovered_red,
                    concealed_pct: js.concealed_percent(),
                    jitter_buffer_delay_ms: js.mean_delay_ms(),
                    jitter_buffer_target_ms: js.target_delay_ms,
                    measured: m,
                    r: rating.map(|r| r.r).unwrap_or(0.0),
                    mos: rating.map(|r| r.mos).unwrap_or(1.0),
                    jitter_buffer: full_jitter.unwrap_or_default(),
                }
            });
            let first_packet = h
                .tracks
                .iter()
                .find(|t| t.kind == TrackKind::Video)
                .and_then(|t| t.stats().first_packet_at);
            let video = stats_of(TrackKind::Video).map(|st| {
                let fb = st.video.clone().unwrap_or_default();
                let span = cfg.duration;
                let (width, height) = h.picture_size.unwrap_or((0, 0));
                let encoded = |s: &Snapshot| s.encoded.get(&speaker.sid).copied().unwrap_or(0);
                VideoReport {
                    frames_sent: encoded(end).saturating_sub(encoded(baseline)),
                    frames_decoded: st.frames_decoded,
                    fps: st.frames_decoded as f64 / span.as_secs_f64(),
                    // From when both were in the call (the speaker sending, the
                    // listener connected) to the first picture.
                    time_to_first_frame_ms: match (speaker.video_start, h.first_picture) {
                        (Some(a), Some(b)) => {
                            Some(ms(b.saturating_duration_since(a.max(listener.connected_at))))
                        }
                        _ => None,
                    },
                    time_to_first_packet_ms: match (speaker.video_start, first_packet) {
                        (Some(a), Some(b)) => {
                            Some(ms(b.saturating_duration_since(a.max(listener.connected_at))))
                        }
                        _ => None,
                    },
                    freezes: fb.freeze_count,
                    freeze_ms: ms(fb.total_freezes_duration),
                    keyframe_requests: fb.pli_count,
                    nacks: fb.nack_count,
                    frames_dropped: fb.frames_dropped,
                    packets_late: fb.packets_late,
                    decode_errors: st.decode_errors,
                    repair_ms_mean: ms(st.gap_fill_mean()),
                    repair_ms_max: ms(st.gap_fill_max),
                    packets_expected: st.packets_expected,
                    loss_before_repair_pct: pct(
                        fb.packets_recovered + fb.packets_unrecovered,
                        st.packets_expected,
                    ),
                    loss_after_repair_pct: pct(st.packets_lost(), st.packets_expected),
                    width,
                    height,
                }
            });
            pairs.push(PairReport {
                listener: listener.name.clone(),
                speaker: speaker.name.clone(),
                audio,
                video,
            });
        }
    }
    let joins = joined
        .iter()
        .zip(sent)
        .map(|(p, s)| {
            let (up, down) = p.shim_stats().unwrap_or_default();
            let counts = |x: crate::shim::model::ImpairmentStats| ShimCounts {
                received: x.received,
                lost: x.lost,
                queue_drops: x.queue_drops,
            };
            JoinReport {
                name: p.name.clone(),
                join_ms: ms(p.join_time),
                shim_up: counts(up),
                shim_down: counts(down),
                audio_packets_sent: s.audio.map(|a| a.packets_sent).unwrap_or(0),
                video_frames_sent: s.video.map(|v| v.frames_encoded).unwrap_or(0),
                keyframe_requests_received: s.video.map(|v| v.keyframe_requests).unwrap_or(0),
            }
        })
        .collect::<Vec<_>>();
    let summary = summarise(&pairs, &joins);
    CallReport {
        participants: cfg.participants,
        duration_s: cfg.duration.as_secs_f64(),
        up: cfg.up,
        down: cfg.down,
        nack: cfg.nack,
        fec: cfg.fec,
        red: cfg.red,
        video: cfg.video.is_some(),
        seed: cfg.seed,
        joins,
        pairs,
        summary,
        server_quality: Vec::new(),
    }
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

fn summarise(pairs: &[PairReport], joins: &[JoinReport]) -> Summary {
    let audio: Vec<&AudioReport> = pairs.iter().filter_map(|p| p.audio.as_ref()).collect();
    let video: Vec<&VideoReport> = pairs.iter().filter_map(|p| p.video.as_ref()).collect();
    Summary {
        pairs: pairs.len(),
        mos_mean: mean(audio.iter().map(|a| a.mos)),
        mos_min: audio.iter().map(|a| a.mos).fold(f64::NAN, f64::min),
        delay_p50_ms: mean(audio.iter().map(|a| a.measured.delay_p50_ms)),
        delay_p95_ms: audio
            .iter()
            .map(|a| a.measured.delay_p95_ms)
            .fold(0.0, f64::max),
        concealed_pct_mean: mean(audio.iter().map(|a| a.concealed_pct)),
        loss_before_repair_pct_mean: mean(audio.iter().map(|a| a.loss_before_repair_pct)),
        loss_after_repair_pct_mean: mean(audio.iter().map(|a| a.loss_after_repair_pct)),
        snr_db_mean: mean(audio.iter().map(|a| a.measured.snr_db)),
        join_ms_max: joins.iter().map(|j| j.join_ms).fold(0.0, f64::max),
        video_fps_mean: (!video.is_empty()).then(|| mean(video.iter().map(|v| v.fps))),
        video_freezes: (!video.is_empty()).then(|| video.iter().map(|v| v.freezes).sum()),
    }
}

/// Prints one line per pair and the summary.
pub fn print_summary(r: &CallReport) {
    println!(
        "{:<8} {:<8} {:>7} {:>7} {:>7} {:>8} {:>8} {:>7} {:>5} {:>7} {:>6}",
        "listener",
        "speaker",
        "loss%",
        "after%",
        "concl%",
        "m2e p50",
        "m2e p95",
        "snr dB",
        "MOS",
        "video",
        "frz"
    );
    for p in &r.pairs {
        let a = p.audio.as_ref();
        let v = p.video.as_ref();
        println!(
            "{:<8} {:<8} {:>7.2} {:>7.2} {:>7.2} {:>8.1} {:>8.1} {:>7.1} {:>5.2} {:>7} {:>6}",
            p.listener,
            p.speaker,
            a.map_or(f64::NAN, |a| a.loss_before_repair_pct),
            a.map_or(f64::NAN, |a| a.loss_after_repair_pct),
            a.map_or(f64::NAN, |a| a.concealed_pct),
            a.map_or(f64::NAN, |a| a.measured.delay_p50_ms),
            a.map_or(f64::NAN, |a| a.measured.delay_p95_ms),
            a.map_or(f64::NAN, |a| a.measured.snr_db),
            a.map_or(f64::NAN, |a| a.mos),
            v.map_or("-".to_owned(), |v| format!("{:.1}fps", v.fps)),
            v.map_or("-".to_owned(), |v| v.freezes.to_string()),
        );
    }
    let s = &r.summary;
    println!(
        "summary: MOS mean {:.2} (min {:.2}), mouth-to-ear p50 {:.1} ms, worst p95 {:.1} ms, \
         concealed {:.2}%, loss {:.2}% -> {:.2}% after repair, SNR {:.1} dB, join <= {:.0} ms",
        s.mos_mean,
        s.mos_min,
        s.delay_p50_ms,
        s.delay_p95_ms,
        s.concealed_pct_mean,
        s.loss_before_repair_pct_mean,
        s.loss_after_repair_pct_mean,
        s.snr_db_mean,
        s.join_ms_max
    );
    if !r.server_quality.is_empty() {
        let each: Vec<String> = r
            .server_quality
            .iter()
            .map(|q| {
                format!(
                    "{} {} {:.1} (loss up {:.1}%, down {:.1}%, scored {:.1}%)",
                    q.name, q.level, q.score, q.loss_up_pct, q.loss_down_pct, q.loss_scored_pct
                )
            })
            .collect();
        println!("server's connection quality: {}", each.join(", "));
    }
}
