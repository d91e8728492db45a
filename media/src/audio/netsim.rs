//! Seeded network traces for exercising jitter buffers: when each packet of a constant-rate
//! audio stream arrives, if at all, under a named delay and loss model; a driver that plays
//! a trace through any [`Playout`] at the receiver's clock; and a speech-like test signal.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::jitter::{JitterStats, Playout};
use super::l16::encode_l16;

/// Longest extra delay any model adds, so a heavy tail stays plausible.
const MAX_EXTRA_DELAY_MS: f64 = 1000.0;

/// Per-packet extra delay on top of the base delay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    /// No variation.
    None,
    /// Uniform in `[0, max_ms]`.
    Uniform { max_ms: f64 },
    /// Half-normal with this standard deviation.
    Gaussian { sigma_ms: f64 },
    /// Pareto: `scale_ms * (U^(-1/shape) - 1)`, heavy-tailed.
    Pareto { scale_ms: f64, shape: f64 },
}

/// Periods when the path holds packets and then releases them at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stalls {
    /// None.
    None,
    /// One stall of `length_ms` starting `at_ms` into the trace.
    Once { at_ms: f64, length_ms: f64 },
    /// Repeated stalls: gaps uniform in `every_ms`, lengths uniform in `length_ms`.
    Random {
        every_ms: (f64, f64),
        length_ms: (f64, f64),
    },
}

/// Packet loss model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loss {
    /// No loss.
    None,
    /// Independent loss with this probability.
    Random(f64),
    /// Two-state Gilbert–Elliott model: per-packet transition probabilities and the loss
    /// probability in each state.
    GilbertElliott {
        p_good_to_bad: f64,
        p_bad_to_good: f64,
        loss_good: f64,
        loss_bad: f64,
    },
}

/// A network path and stream to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceConfig {
    /// Media per packet.
    pub packet_ms: u32,
    /// RTP clock rate.
    pub rate: u32,
    /// Packets sent.
    pub packets: usize,
    /// One-way delay every packet has.
    pub base_delay_ms: f64,
    pub jitter: Jitter,
    pub stalls: Stalls,
    pub loss: Loss,
    /// Sender clock error: positive sends faster than the receiver plays.
    pub drift_ppm: f64,
    /// RNG seed; equal configs give equal traces.
    pub seed: u64,
}

impl Default for TraceConfig {
    fn default() -> Self {
        Self {
            packet_ms: 20,
            rate: 16_000,
            packets: 500,
            base_delay_ms: 30.0,
            jitter: Jitter::None,
            stalls: Stalls::None,
            loss: Loss::None,
            drift_ppm: 0.0,
            seed: 1,
        }
    }
}

/// The jitter profiles the adaptive and fixed-delay buffers are compared on: low jitter,
/// 30 ms uniform jitter, heavy-tailed (Pareto) jitter, and bursty delivery (stalls of
/// 100–300 ms every 2–5 s over low jitter); 1% random loss on each.
pub fn comparison_profiles(packets: usize, seed: u64) -> Vec<(&'static str, TraceConfig)> {
    let base = TraceConfig {
        packets,
        seed,
        loss: Loss::Random(0.01),
        ..TraceConfig::default()
    };
    vec![
        (
            "low (uniform 0-5 ms)",
            TraceConfig {
                jitter: Jitter::Uniform { max_ms: 5.0 },
                ..base.clone()
            },
        ),
        (
            "30 ms (uniform 0-30 ms)",
            TraceConfig {
                jitter: Jitter::Uniform { max_ms: 30.0 },
                ..base.clone()
            },
        ),
        (
            "heavy tail (Pareto 10 ms, a=2)",
            TraceConfig {
                jitter: Jitter::Pareto {
                    scale_ms: 10.0,
                    shape: 2.0,
                },
                ..base.clone()
            },
        ),
        (
            "bursty (stalls 100-300 ms / 2-5 s)",
            TraceConfig {
                jitter: Jitter::Uniform { max_ms: 5.0 },
                stalls: Stalls::Random {
                    every_ms: (2000.0, 5000.0),
                    length_ms: (100.0, 300.0),
                },
                ..base
            },
        ),
    ]
}

/// One packet of a trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TracePacket {
    /// Index in sending order (0-based).
    pub index: usize,
    pub seq: u16,
    pub rtp_ts: u32,
    /// Send time and arrival time (`None` if lost), from the trace start.
    pub sent: Duration,
    pub arrival: Option<Duration>,
}

impl TraceConfig {
    /// RTP timestamp units per packet.
    pub fn packet_samples(&self) -> usize {
        (self.rate as usize * self.packet_ms as usize) / 1000
    }

    /// Generates the trace, in sending order.
    pub fn generate(&self) -> Vec<TracePacket> {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let stalls = self.stall_windows(&mut rng);
        let mut bad = false;
        let period = f64::from(self.packet_ms) / (1.0 + self.drift_ppm * 1e-6);
        let samples = self.packet_samples() as u32;
        (0..self.packets)
            .map(|i| {
                let sent_ms = i as f64 * period;
                let lost = match self.loss {
                    Loss::None => false,
                    Loss::Random(p) => rng.random::<f64>() < p,
                    Loss::GilbertElliott {
                        p_good_to_bad,
                        p_bad_to_good,
                        loss_good,
                        loss_bad,
                    } => {
                        let flip = rng.random::<f64>();
                        bad = if bad {
                            flip >= p_bad_to_good
                        } else {
                            flip < p_good_to_bad
                        };
                        rng.random::<f64>() < if bad { loss_bad } else { loss_good }
                    }
                };
                let extra = self.extra_delay(&mut rng).min(MAX_EXTRA_DELAY_MS);
                let mut arrival_ms = sent_ms + self.base_delay_ms + extra;
                for &(start, end) in &stalls {
                    if arrival_ms >= start && arrival_ms < end {
                        // Held until the stall ends, then released in sending order.
                        arrival_ms = end + (sent_ms - start).max(0.0) * 0.01;
                    }
                }
                TracePacket {
                    index: i,
                    seq: (i % 65_536) as u16,
                    rtp_ts: (i as u32).wrapping_mul(samples),
                    sent: Duration::from_secs_f64(sent_ms / 1000.0),
                    arrival: (!lost).then(|| Duration::from_secs_f64(arrival_ms / 1000.0)),
                }
            })
            .collect()
    }

    fn extra_delay(&self, rng: &mut StdRng) -> f64 {
        match self.jitter {
            Jitter::None => 0.0,
            Jitter::Uniform { max_ms } => rng.random::<f64>() * max_ms,
            Jitter::Gaussian { sigma_ms } => {
                // Box–Muller.
                let (u1, u2) = (rng.random::<f64>().max(1e-12), rng.random::<f64>());
                ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()).abs() * sigma_ms
            }
            Jitter::Pareto { scale_ms, shape } => {
                let u = rng.random::<f64>().max(1e-12);
                scale_ms * (u.powf(-1.0 / shape) - 1.0)
            }
        }
    }

    fn stall_windows(&self, rng: &mut StdRng) -> Vec<(f64, f64)> {
        let total_ms = self.packets as f64 * f64::from(self.packet_ms) + 2000.0;
        match self.stalls {
            Stalls::None => Vec::new(),
            Stalls::Once { at_ms, length_ms } => vec![(at_ms, at_ms + length_ms)],
            Stalls::Random {
                every_ms,
                length_ms,
            } => {
                let mut v = Vec::new();
                let mut t = rng.random_range(every_ms.0..=every_ms.1);
                while t < total_ms {
                    let len = rng.random_range(length_ms.0..=length_ms.1);
                    v.push((t, t + len));
                    t += len + rng.random_range(every_ms.0..=every_ms.1);
                }
                v
            }
        }
    }
}

/// Plays `trace` through `playout`: every packet is inserted at its arrival (time `t0` plus
/// its offset) with the payload `payload(index)`, and a frame is pulled every frame
/// duration until `duration` has passed. `on_frame` sees each frame and the statistics
/// after it.
pub fn simulate<P: Playout>(
    playout: &mut P,
    trace: &[TracePacket],
    mut payload: impl FnMut(usize) -> Vec<u8>,
    t0: Instant,
    duration: Duration,
    frame_ms: u32,
    mut on_frame: impl FnMut(&[i16], &JitterStats),
) {
    let mut arrivals: Vec<(Duration, usize)> = trace
        .iter()
        .filter_map(|p| p.arrival.map(|a| (a, p.index)))
        .collect();
    arrivals.sort_by_key(|&(a, i)| (a, i));
    let step = Duration::from_millis(u64::from(frame_ms));
    let mut next = arrivals.iter().peekable();
    let mut frame = Vec::new();
    let mut now = Duration::ZERO;
    while now < duration {
        while let Some(&&(a, i)) = next.peek() {
            if a > now {
                break;
            }
            let p = &trace[i];
            // Drops (late, duplicate) are counted in the statistics.
            let _ = playout.insert(p.seq, p.rtp_ts, &payload(i), t0 + a);
            next.next();
        }
        frame.clear();
        frame.extend_from_slice(playout.pull(t0 + now));
        on_frame(&frame, &playout.stats());
        now += step;
    }
}

/// Splits `signal` into packets of `samples_per_packet` samples, each an L16 payload.
pub fn packetize_l16(signal: &[i16], samples_per_packet: usize) -> Vec<Vec<u8>> {
    signal
        .chunks(samples_per_packet.max(1))
        .map(|c| {
            let mut p = Vec::with_capacity(c.len() * 2);
            encode_l16(c, &mut p);
            p
        })
        .collect()
}

/// What a buffer made of a trace: its output and its statistics after every frame.
#[derive(Debug, Clone, Default)]
pub struct PlayoutRun {
    pub output: Vec<i16>,
    pub stats: Vec<JitterStats>,
}

impl PlayoutRun {
    /// Statistics after the last frame.
    pub fn last(&self) -> JitterStats {
        self.stats.last().cloned().unwrap_or_default()
    }

    /// Mean buffering delay (ms) of the samples decoded between frames `from` and `to`.
    pub fn mean_delay_between(&self, from: usize, to: usize) -> f64 {
        let (a, b) = (
            &self.stats[from.min(to)],
            &self.stats[to.min(self.stats.len() - 1)],
        );
        let n = b
            .jitter_buffer_emitted_count
            .saturating_sub(a.jitter_buffer_emitted_count);
        if n == 0 {
            return 0.0;
        }
        (b.jitter_buffer_delay - a.jitter_buffer_delay) * 1000.0 / n as f64
    }
}

/// Plays `cfg`'s trace of `signal` (L16, one packet per `cfg.packet_ms`) through
/// `playout` in 10 ms frames, pulling for `extra_ms` beyond the stream's duration.
pub fn play_l16<P: Playout>(
    playout: &mut P,
    cfg: &TraceConfig,
    signal: &[i16],
    extra_ms: u64,
) -> PlayoutRun {
    let packets = packetize_l16(signal, cfg.packet_samples());
    let trace = cfg.generate();
    let duration = Duration::from_millis(cfg.packets as u64 * u64::from(cfg.packet_ms) + extra_ms);
    let mut run = PlayoutRun::default();
    simulate(
        playout,
        &trace,
        |i| packets.get(i).cloned().unwrap_or_default(),
        Instant::now(),
        duration,
        10,
        |frame, stats| {
            run.output.extend_from_slice(frame);
            run.stats.push(stats.clone());
        },
    );
    run
}

/// A deterministic speech-like signal: a harmonic voice whose pitch glides between 100 and
/// 220 Hz, in syllables of about 200 ms separated by short pauses.
pub fn speech_like(rate: u32, frames: usize) -> Vec<i16> {
    let rate = f64::from(rate.max(1));
    let mut phase = 0.0f64;
    (0..frames)
        .map(|n| {
            let t = n as f64 / rate;
            let f0 = 160.0 + 60.0 * (2.0 * std::f64::consts::PI * 0.7 * t).sin();
            phase += 2.0 * std::f64::consts::PI * f0 / rate;
            // Syllable envelope: 250 ms cycle, 200 ms voiced.
            let cycle = (t * 4.0).fract();
            let env = if cycle < 0.8 {
                (std::f64::consts::PI * cycle / 0.8).sin()
            } else {
                0.0
            };
            let v: f64 = (1..=4).map(|h| (phase * h as f64).sin() / h as f64).sum();
            (env * v * 6000.0) as i16
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_are_reproducible_and_follow_their_model() {
        let cfg = TraceConfig {
            packets: 2000,
            jitter: Jitter::Uniform { max_ms: 30.0 },
            loss: Loss::Random(0.1),
            ..Default::default()
        };
        let a = cfg.generate();
        assert_eq!(a, cfg.generate());
        let lost = a.iter().filter(|p| p.arrival.is_none()).count();
        assert!((150..250).contains(&lost), "lost {lost}");
        for p in &a {
            if let Some(arr) = p.arrival {
                let d = (arr - p.sent).as_secs_f64() * 1000.0;
                assert!((30.0..=60.0 + 1e-9).contains(&d), "delay {d}");
            }
        }
        let other = TraceConfig { seed: 2, ..cfg }.generate();
        assert_ne!(a, other);
    }

    #[test]
    fn gilbert_elliott_loss_comes_in_bursts() {
        let cfg = TraceConfig {
            packets: 20_000,
            loss: Loss::GilbertElliott {
                p_good_to_bad: 0.02,
                p_bad_to_good: 0.3,
                loss_good: 0.0,
                loss_bad: 0.8,
            },
            ..Default::default()
        };
        let t = cfg.generate();
        let lost: Vec<bool> = t.iter().map(|p| p.arrival.is_none()).collect();
        let rate = lost.iter().filter(|&&l| l).count() as f64 / lost.len() as f64;
        let after_loss = lost.windows(2).filter(|w| w[0] && w[1]).count() as f64
            / lost.iter().filter(|&&l| l).count() as f64;
        // Loss after a loss is far likelier than loss overall: bursts.
        assert!(
            after_loss > 3.0 * rate,
            "p(loss|loss) {after_loss} vs {rate}"
        );
    }

    #[test]
    fn a_stall_releases_its_packets_together() {
        let cfg = TraceConfig {
            packets: 100,
            stalls: Stalls::Once {
                at_ms: 500.0,
                length_ms: 200.0,
            },
            ..Default::default()
        };
        let t = cfg.generate();
        let held: Vec<f64> = t
            .iter()
            .filter_map(|p| p.arrival)
            .map(|a| a.as_secs_f64() * 1000.0)
            .filter(|&a| (700.0..702.0).contains(&a))
            .collect();
        assert_eq!(held.len(), 10, "{held:?}");
    }
}
