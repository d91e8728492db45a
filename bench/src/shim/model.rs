//! What happens to each datagram: lost (random or in Gilbert–Elliott bursts), delayed by a
//! base delay plus jitter, held back by a bandwidth cap, or reordered. Time is a parameter.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How datagrams get lost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loss {
    None,
    /// Each datagram independently with this probability.
    Random(f64),
    /// Two-state Gilbert–Elliott: in the good state datagrams pass, in the bad state they are
    /// lost with `loss_in_bad`; `p` = P(good→bad), `r` = P(bad→good) per datagram. The mean
    /// loss is `p / (p + r) * loss_in_bad` and bursts last `1 / r` datagrams on average.
    GilbertElliott {
        p: f64,
        r: f64,
        loss_in_bad: f64,
    },
}

impl Loss {
    /// Gilbert–Elliott with a mean loss rate and a mean burst length (in datagrams),
    /// everything lost while bad.
    pub fn bursty(mean_loss: f64, mean_burst: f64) -> Loss {
        let r = 1.0 / mean_burst.max(1.0);
        let p = (mean_loss * r / (1.0 - mean_loss).max(1e-9)).clamp(0.0, 1.0);
        Loss::GilbertElliott {
            p,
            r,
            loss_in_bad: 1.0,
        }
    }
}

/// The impairments of one direction.
#[derive(Debug, Clone)]
pub struct ImpairmentConfig {
    pub loss: Loss,
    /// Added to every datagram.
    pub delay: Duration,
    /// Extra delay, uniform in `[0, jitter]`. Datagrams may overtake each other unless
    /// `keep_order` is set.
    pub jitter: Duration,
    /// Never deliver a datagram before one received earlier (jitter then delays the queue
    /// instead of reordering it).
    pub keep_order: bool,
    /// Bytes per second leaving the shim; 0: unlimited. Excess waits in a queue of at most
    /// `queue_limit` (then it is dropped, like a router's tail drop).
    pub bandwidth: u64,
    pub queue_limit: Duration,
    pub seed: u64,
}

impl Default for ImpairmentConfig {
    fn default() -> Self {
        Self {
            loss: Loss::None,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            keep_order: false,
            bandwidth: 0,
            queue_limit: Duration::from_millis(200),
            seed: 1,
        }
    }
}

/// What to do with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Deliver it at this time.
    Deliver(Instant),
    /// Lost on the path.
    Lost,
    /// Dropped because the bandwidth queue is full.
    QueueFull,
}

/// Counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImpairmentStats {
    pub received: u64,
    pub lost: u64,
    pub queue_drops: u64,
    pub delivered: u64,
}

/// The decisions of one direction, deterministic for a seed and an arrival sequence.
#[derive(Debug)]
pub struct Impairment {
    cfg: ImpairmentConfig,
    rng: StdRng,
    bad: bool,
    /// When the bandwidth-limited link is free again.
    link_free: Option<Instant>,
    /// Latest delivery time handed out (for `keep_order`).
    last_delivery: Option<Instant>,
    pub stats: ImpairmentStats,
}

impl Impairment {
    pub fn new(cfg: ImpairmentConfig) -> Self {
        Self {
            rng: StdRng::seed_from_u64(cfg.seed),
            cfg,
            bad: false,
            link_free: None,
            last_delivery: None,
            stats: ImpairmentStats::default(),
        }
    }

    fn lost(&mut self) -> bool {
        match self.cfg.loss {
            Loss::None => false,
            Loss::Random(p) => self.rng.random_bool(p.clamp(0.0, 1.0)),
            Loss::GilbertElliott { p, r, loss_in_bad } => {
                let flip = if self.bad { r } else { p };
                if self.rng.random_bool(flip.clamp(0.0, 1.0)) {
                    self.bad = !self.bad;
                }
                self.bad && self.rng.random_bool(loss_in_bad.clamp(0.0, 1.0))
            }
        }
    }

    /// Decides the fate of a datagram of `len` bytes arriving at `now`.
    pub fn on_datagram(&mut self, now: Instant, len: usize) -> Fate {
        self.stats.received += 1;
        if self.lost() {
            self.stats.lost += 1;
            return Fate::Lost;
        }
        // Serialization on the capped link: the datagram leaves when the link is free.
        let mut leaves = now;
        if self.cfg.bandwidth > 0 {
            let free = self.link_free.unwrap_or(now).max(now);
            if free.saturating_duration_since(now) > self.cfg.queue_limit {
                self.stats.queue_drops += 1;
                return Fate::QueueFull;
            }
            let tx = Duration::from_secs_f64(len as f64 / self.cfg.bandwidth as f64);
            leaves = free + tx;
            self.link_free = Some(leaves);
        }
        let jitter = if self.cfg.jitter.is_zero() {
            Duration::ZERO
        } else {
            self.cfg.jitter.mul_f64(self.rng.random::<f64>())
        };
        let mut at = leaves + self.cfg.delay + jitter;
        if let (true, Some(last)) = (self.cfg.keep_order, self.last_delivery) {
            at = at.max(last);
        }
        self.last_delivery = Some(self.last_delivery.map_or(at, |l| l.max(at)));
        self.stats.delivered += 1;
        Fate::Deliver(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fates of `n` datagrams 20 ms apart, with delivery times relative to the start.
    fn run(cfg: ImpairmentConfig, n: usize) -> (Impairment, Vec<Option<Duration>>) {
        let mut m = Impairment::new(cfg);
        let t0 = Instant::now();
        let fates = (0..n)
            .map(
                |i| match m.on_datagram(t0 + Duration::from_millis(20 * i as u64), 160) {
                    Fate::Deliver(at) => Some(at - t0),
                    Fate::Lost | Fate::QueueFull => None,
                },
            )
            .collect();
        (m, fates)
    }

    #[test]
    fn random_loss_matches_its_rate_and_is_reproducible() {
        let cfg = ImpairmentConfig {
            loss: Loss::Random(0.1),
            seed: 7,
            ..Default::default()
        };
        let (m, a) = run(cfg.clone(), 20_000);
        let rate = m.stats.lost as f64 / 20_000.0;
        assert!((rate - 0.1).abs() < 0.01, "{rate}");
        let (_, b) = run(cfg, 20_000);
        assert!(a == b, "same seed, same fates");
        let (_, c) = run(
            ImpairmentConfig {
                loss: Loss::Random(0.1),
                seed: 8,
                ..Default::default()
            },
            20_000,
        );
        assert!(a != c, "another seed, other fates");
    }

    #[test]
    fn gilbert_elliott_loss_comes_in_bursts_of_the_asked_length() {
        let (m, fates) = run(
            ImpairmentConfig {
                loss: Loss::bursty(0.05, 4.0),
                seed: 3,
                ..Default::default()
            },
            100_000,
        );
        let rate = m.stats.lost as f64 / 100_000.0;
        assert!((rate - 0.05).abs() < 0.01, "{rate}");
        let mut bursts = Vec::new();
        let mut run_len = 0;
        for f in &fates {
            if f.is_none() {
                run_len += 1;
            } else if run_len > 0 {
                bursts.push(run_len);
                run_len = 0;
            }
        }
        let mean = bursts.iter().sum::<usize>() as f64 / bursts.len() as f64;
        assert!((mean - 4.0).abs() < 0.5, "mean burst {mean}");
    }

    #[test]
    fn delay_and_jitter_stay_in_bounds_and_order_is_kept_when_asked() {
        let t0 = Instant::now();
        let mut m = Impairment::new(ImpairmentConfig {
            delay: Duration::from_millis(100),
            jitter: Duration::from_millis(30),
            keep_order: true,
            ..Default::default()
        });
        let mut last = t0;
        let mut reordered = 0;
        let mut free = Impairment::new(ImpairmentConfig {
            delay: Duration::from_millis(100),
            jitter: Duration::from_millis(30),
            ..Default::default()
        });
        let mut free_last = t0;
        for i in 0..1000 {
            let now = t0 + Duration::from_millis(5 * i);
            let Fate::Deliver(at) = m.on_datagram(now, 100) else {
                panic!("no loss configured")
            };
            let d = at - now;
            assert!(d >= Duration::from_millis(100), "{d:?}");
            assert!(at >= last, "order kept");
            last = at;
            let Fate::Deliver(at) = free.on_datagram(now, 100) else {
                panic!()
            };
            assert!(at - now <= Duration::from_millis(130));
            if at < free_last {
                reordered += 1;
            }
            free_last = free_last.max(at);
        }
        assert!(
            reordered > 50,
            "30 ms jitter at 5 ms spacing reorders: {reordered}"
        );
    }

    #[test]
    fn a_bandwidth_cap_paces_and_tail_drops() {
        let t0 = Instant::now();
        let mut m = Impairment::new(ImpairmentConfig {
            bandwidth: 100_000, // 100 kB/s: a 1,000-byte datagram takes 10 ms
            queue_limit: Duration::from_millis(50),
            ..Default::default()
        });
        let mut delivered = Vec::new();
        for _ in 0..20 {
            match m.on_datagram(t0, 1000) {
                Fate::Deliver(at) => delivered.push(at - t0),
                Fate::QueueFull => {}
                Fate::Lost => panic!("no loss configured"),
            }
        }
        // The link drains 10 ms per datagram; the queue holds 50 ms, so 6 fit.
        assert_eq!(delivered.len(), 6, "{delivered:?}");
        assert_eq!(delivered[0], Duration::from_millis(10));
        assert_eq!(delivered[5], Duration::from_millis(60));
        assert_eq!(m.stats.queue_drops, 14);
    }
}
