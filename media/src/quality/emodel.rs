//! The ITU-T G.107 (06/2015) E-model: transmission rating R = Ro − Is − Id − Ie,eff + A,
//! and its mapping to an estimated MOS (G.107 Annex B).
//!
//! Every G.107 input is a field of [`EModelInput`], defaulting to the G.107 Table 3 values
//! (with which R = 93.2). Equation numbers below are those of G.107 §7.

use std::time::Duration;

use super::QualityError;

/// A codec's impairment figures: Ie (equipment impairment, error-free) and Bpl (packet-loss
/// robustness) on the narrowband E-model scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CodecImpairment {
    /// Equipment impairment factor Ie.
    pub ie: f64,
    /// Packet-loss robustness factor Bpl (larger = more robust).
    pub bpl: f64,
}

/// G.711 without packet-loss concealment: Ie = 0, Bpl = 4.3 (ITU-T G.113 Appendix I,
/// random loss).
pub const G711_NO_PLC: CodecImpairment = CodecImpairment { ie: 0.0, bpl: 4.3 };

/// G.711 with the G.711 Appendix I concealment: Ie = 0, Bpl = 25.1 (ITU-T G.113
/// Appendix I, random loss).
pub const G711_PLC: CodecImpairment = CodecImpairment { ie: 0.0, bpl: 25.1 };

/// Opus (SILK/hybrid speech modes, ≥ 16 kb/s) with its own concealment: a provisional
/// planning value, not an ITU-T one. G.113 Appendix I (11/2007) lists no Opus entry and no
/// narrowband Ie/Bpl for Opus has been standardised, so Ie = 0 (Opus speech at these rates
/// is at least as good as G.711, the scale's zero) and Bpl = 25.1 (the G.711 + PLC figure,
/// a conservative stand-in for a codec whose concealment is at least as good). Replace it
/// when measured P.833/P.834 figures are available.
pub const OPUS_PROVISIONAL: CodecImpairment = CodecImpairment { ie: 0.0, bpl: 25.1 };

/// All E-model inputs (G.107 Table 3 names). Levels in dB, delays in ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EModelInput {
    /// Send loudness rating SLR.
    pub slr: f64,
    /// Receive loudness rating RLR.
    pub rlr: f64,
    /// Sidetone masking rating STMR.
    pub stmr: f64,
    /// Listener sidetone rating LSTR.
    pub lstr: f64,
    /// D-value of the telephone, send side (Ds).
    pub ds: f64,
    /// Talker echo loudness rating TELR.
    pub telr: f64,
    /// Weighted echo path loss WEPL.
    pub wepl: f64,
    /// Mean one-way delay of the echo path T, ms.
    pub t_ms: f64,
    /// Round-trip delay in a 4-wire loop Tr, ms.
    pub tr_ms: f64,
    /// Absolute one-way delay in echo-free connections Ta, ms.
    pub ta_ms: f64,
    /// Quantisation distortion units qdu.
    pub qdu: f64,
    /// Equipment impairment factor Ie.
    pub ie: f64,
    /// Packet-loss robustness factor Bpl.
    pub bpl: f64,
    /// Random packet-loss probability Ppl, percent.
    pub ppl: f64,
    /// Burst ratio BurstR (1 = random loss, > 1 = bursty).
    pub burst_r: f64,
    /// Circuit noise referred to the 0 dBr point Nc, dBm0p.
    pub nc: f64,
    /// Noise floor at the receive side Nfor, dBmp.
    pub nfor: f64,
    /// Room noise at the send side Ps, dB(A).
    pub ps: f64,
    /// Room noise at the receive side Pr, dB(A).
    pub pr: f64,
    /// Advantage factor A.
    pub a: f64,
    /// Delay sensitivity sT.
    pub s_t: f64,
    /// Minimum perceivable delay mT, ms.
    pub m_t: f64,
}

impl Default for EModelInput {
    /// G.107 Table 3 default values.
    fn default() -> Self {
        Self {
            slr: 8.0,
            rlr: 2.0,
            stmr: 15.0,
            lstr: 18.0,
            ds: 3.0,
            telr: 65.0,
            wepl: 110.0,
            t_ms: 0.0,
            tr_ms: 0.0,
            ta_ms: 0.0,
            qdu: 1.0,
            ie: 0.0,
            bpl: 4.3,
            ppl: 0.0,
            burst_r: 1.0,
            nc: -70.0,
            nfor: -64.0,
            ps: 35.0,
            pr: 35.0,
            a: 0.0,
            s_t: 1.0,
            m_t: 100.0,
        }
    }
}

/// R and the impairments it is made of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RFactor {
    /// Basic signal-to-noise ratio Ro.
    pub ro: f64,
    /// Simultaneous impairment Is.
    pub is: f64,
    /// Delay impairment Id = Idte + Idle + Idd.
    pub id: f64,
    /// Effective equipment impairment Ie,eff (codec plus loss).
    pub ie_eff: f64,
    /// Advantage factor A.
    pub a: f64,
    /// Transmission rating R.
    pub r: f64,
    /// Estimated conversational MOS from R.
    pub mos: f64,
}

impl EModelInput {
    /// Inputs for a packet call: default terminals, `codec`, mouth-to-ear delay `one_way`
    /// (used for Ta and for the echo path T, with the 4-wire loop Tr = 2·T as in G.108) and
    /// observed `loss`.
    pub fn for_call(codec: CodecImpairment, one_way: Duration, loss: GilbertLoss) -> Self {
        let ms = one_way.as_secs_f64() * 1000.0;
        Self {
            t_ms: ms,
            tr_ms: 2.0 * ms,
            ta_ms: ms,
            ie: codec.ie,
            bpl: codec.bpl,
            ppl: loss.ppl_percent,
            burst_r: loss.burst_r,
            ..Self::default()
        }
    }

    /// Computes R and the estimated MOS.
    pub fn rate(&self) -> Result<RFactor, QualityError> {
        self.check()?;
        let lg = f64::log10;
        // §7.2, basic signal-to-noise ratio.
        let olr = self.slr + self.rlr;
        let nos =
            self.ps - self.slr - self.ds - 100.0 + 0.004 * (self.ps - olr - self.ds - 14.0).powi(2); // (7-3)
        let pre = self.pr + 10.0 * lg(1.0 + 10f64.powf((10.0 - self.lstr) / 10.0)); // (7-5)
        let nor = self.rlr - 121.0 + pre + 0.008 * (pre - 35.0).powi(2); // (7-4)
        let nfo = self.nfor + self.rlr; // (7-7)
        let no = 10.0
            * lg(10f64.powf(self.nc / 10.0)
                + 10f64.powf(nos / 10.0)
                + 10f64.powf(nor / 10.0)
                + 10f64.powf(nfo / 10.0)); // (7-2)
        let ro = 15.0 - 1.5 * (self.slr + no); // (7-1)

        // §7.3, simultaneous impairment.
        let xolr = olr + 0.2 * (64.0 + no - self.rlr); // (7-10)
        let iolr = 20.0 * ((1.0 + (xolr / 8.0).powi(8)).powf(1.0 / 8.0) - xolr / 8.0); // (7-9)
        let stmro = -10.0
            * lg(10f64.powf(-self.stmr / 10.0)
                + (-self.t_ms / 4.0).exp() * 10f64.powf(-self.telr / 10.0)); // (7-12)
        let ist = 12.0 * (1.0 + ((stmro - 13.0) / 6.0).powi(8)).powf(1.0 / 8.0)
            - 28.0 * (1.0 + ((stmro + 1.0) / 19.4).powi(35)).powf(1.0 / 35.0)
            - 13.0 * (1.0 + ((stmro - 3.0) / 33.0).powi(13)).powf(1.0 / 13.0)
            + 29.0; // (7-11)
        let q = 37.0 - 15.0 * lg(self.qdu); // (7-17)
        let g = 1.07 + 0.258 * q + 0.0602 * q * q; // (7-16)
        let y = (ro - 100.0) / 15.0 + 46.0 / 8.4 - g / 9.0; // (7-14)
        let z = 46.0 / 30.0 - g / 40.0; // (7-15)
        let iq = 15.0 * lg(1.0 + 10f64.powf(y) + 10f64.powf(z)); // (7-13)
        let is = iolr + ist + iq; // (7-8)

        // §7.4, delay impairment.
        let roe = -1.5 * (no - self.rlr); // (7-20)
        let mut terv = self.telr - 40.0 * lg((1.0 + self.t_ms / 10.0) / (1.0 + self.t_ms / 150.0))
            + 6.0 * (-0.3 * self.t_ms * self.t_ms).exp(); // (7-22)
        if self.stmr < 9.0 {
            terv += ist / 2.0; // (7-23)
        }
        let re = 80.0 + 2.5 * (terv - 14.0); // (7-21)
        // Below 1 ms the talker echo is heard as sidetone, not echo.
        let idte = if self.t_ms < 1.0 {
            0.0
        } else {
            ((roe - re) / 2.0 + ((roe - re).powi(2) / 4.0 + 100.0).sqrt() - 1.0)
                * (1.0 - (-self.t_ms).exp()) // (7-19)
        };
        let rle = 10.5 * (self.wepl + 7.0) * (self.tr_ms + 1.0).powf(-0.25); // (7-25)
        let idle = (ro - rle) / 2.0 + ((ro - rle).powi(2) / 4.0 + 169.0).sqrt(); // (7-24)
        let idd = if self.ta_ms <= self.m_t {
            0.0
        } else {
            let x = (self.ta_ms / self.m_t).log2();
            let e = 6.0 * self.s_t;
            25.0 * ((1.0 + x.powf(e)).powf(1.0 / e) - 3.0 * (1.0 + (x / 3.0).powf(e)).powf(1.0 / e)
                + 2.0) // (7-27)
        };
        let id = idte + idle + idd;

        // §7.5, effective equipment impairment under packet loss.
        let ie_eff = self.ie + (95.0 - self.ie) * self.ppl / (self.ppl / self.burst_r + self.bpl); // (7-29)

        let r = ro - is - id - ie_eff + self.a;
        if !r.is_finite() {
            return Err(QualityError::Parameter("E-model inputs give no finite R"));
        }
        Ok(RFactor {
            ro,
            is,
            id,
            ie_eff,
            a: self.a,
            r,
            mos: mos_from_r(r),
        })
    }

    fn check(&self) -> Result<(), QualityError> {
        let nonneg = [self.t_ms, self.tr_ms, self.ta_ms];
        if nonneg.iter().any(|d| !d.is_finite() || *d < 0.0) {
            return Err(QualityError::Parameter(
                "delays must be finite and non-negative",
            ));
        }
        if !(0.0..=100.0).contains(&self.ppl) {
            return Err(QualityError::Parameter("Ppl must be 0..=100 %"));
        }
        if self.burst_r < 1.0 || self.bpl <= 0.0 || self.qdu < 1.0 {
            return Err(QualityError::Parameter("BurstR >= 1, Bpl > 0 and qdu >= 1"));
        }
        if self.m_t <= 0.0 || self.s_t <= 0.0 {
            return Err(QualityError::Parameter("mT and sT must be positive"));
        }
        Ok(())
    }
}

/// Estimated conversational MOS from R (G.107 Annex B, eq. B-4), within 1..=4.5.
pub fn mos_from_r(r: f64) -> f64 {
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        // The cubic dips just below 1 for R < 6.5; MOS has no meaning there.
        (1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7.0e-6).max(1.0)
    }
}

/// Loss statistics for the E-model, from a two-state Gilbert model fitted to what a
/// receiver saw: p = P(loss | previous received), q = P(received | previous lost).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertLoss {
    /// Loss probability Ppl in percent (p / (p + q) for the fitted chain).
    pub ppl_percent: f64,
    /// BurstR = 1 / (p + q) (G.107 §7.5): 1 for random loss, larger for bursts.
    pub burst_r: f64,
}

impl GilbertLoss {
    /// No loss at all.
    pub const NONE: Self = Self {
        ppl_percent: 0.0,
        burst_r: 1.0,
    };

    /// Fits the model to a sequence of packet outcomes in sending order (`true` = lost).
    pub fn from_outcomes(lost: impl IntoIterator<Item = bool>) -> Self {
        // Transition counts out of the received state and out of the lost state.
        let (mut from_recv, mut recv_to_lost, mut from_lost, mut lost_to_recv) =
            (0u64, 0u64, 0u64, 0u64);
        let (mut total, mut losses) = (0u64, 0u64);
        let mut prev: Option<bool> = None;
        for l in lost {
            total += 1;
            losses += u64::from(l);
            match prev {
                Some(false) => {
                    from_recv += 1;
                    recv_to_lost += u64::from(l);
                }
                Some(true) => {
                    from_lost += 1;
                    lost_to_recv += u64::from(!l);
                }
                None => {}
            }
            prev = Some(l);
        }
        if losses == 0 {
            return Self::NONE;
        }
        let ppl_percent = 100.0 * losses as f64 / total as f64;
        // With too few transitions to fit p and q, treat the loss as random.
        if from_recv == 0 || from_lost == 0 || recv_to_lost + lost_to_recv == 0 {
            return Self {
                ppl_percent,
                burst_r: 1.0,
            };
        }
        let p = recv_to_lost as f64 / from_recv as f64;
        let q = lost_to_recv as f64 / from_lost as f64;
        Self {
            ppl_percent,
            // Below 1 means loss more scattered than random; G.107 defines BurstR >= 1.
            burst_r: (1.0 / (p + q)).max(1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn default_inputs_give_r_93_2_and_mos_4_41() {
        let r = EModelInput::default().rate().unwrap();
        assert!(close(r.r, 93.2, 0.05), "R = {}", r.r);
        assert!(close(r.mos, 4.41, 0.005), "MOS = {}", r.mos);
        // G.107's own breakdown of the default: Ro 94.77, Is 1.41.
        assert!(close(r.ro, 94.77, 0.01), "Ro = {}", r.ro);
        assert!(close(r.is, 1.41, 0.01), "Is = {}", r.is);
    }

    #[test]
    fn mos_mapping_end_points_and_known_values() {
        assert_eq!(mos_from_r(-5.0), 1.0);
        assert_eq!(mos_from_r(120.0), 4.5);
        // R = 50 → 1 + 1.75 + 50·(−10)·50·7e-6 = 2.575.
        assert!(close(mos_from_r(50.0), 2.575, 1e-9));
        assert!(close(mos_from_r(80.0), 4.024, 1e-9));
        assert_eq!(mos_from_r(3.0), 1.0);
    }

    #[test]
    fn idd_follows_the_delay_formula() {
        let at = |ta_ms| {
            let r = EModelInput {
                ta_ms,
                ..Default::default()
            }
            .rate()
            .unwrap();
            r.id
        };
        let base = at(0.0);
        assert_eq!(at(100.0), base);
        // X = 1 at 200 ms: 25·(2^(1/6) − 3·(1 + 3^-6)^(1/6) + 2) = 3.0444.
        assert!(
            close(at(200.0) - base, 3.0444, 0.001),
            "{}",
            at(200.0) - base
        );
        // X = 2 at 400 ms: 25·(65^(1/6) − 3·(1 + (2/3)^6)^(1/6) + 2) = 24.070.
        assert!(
            close(at(400.0) - base, 24.070, 0.001),
            "{}",
            at(400.0) - base
        );
    }

    #[test]
    fn loss_impairment_follows_bpl_and_burst_ratio() {
        let rate = |codec: CodecImpairment, loss| {
            EModelInput::for_call(codec, Duration::ZERO, loss)
                .rate()
                .unwrap()
        };
        let one_pct = GilbertLoss {
            ppl_percent: 1.0,
            burst_r: 1.0,
        };
        // 95·1/(1 + 4.3) = 17.92 without concealment, 95/(1 + 25.1) = 3.64 with it.
        assert!(close(rate(G711_NO_PLC, one_pct).ie_eff, 17.925, 0.001));
        assert!(close(rate(G711_PLC, one_pct).ie_eff, 3.640, 0.001));
        let bursty = GilbertLoss {
            ppl_percent: 10.0,
            burst_r: 3.0,
        };
        let random = GilbertLoss {
            ppl_percent: 10.0,
            burst_r: 1.0,
        };
        assert!(rate(OPUS_PROVISIONAL, bursty).r < rate(OPUS_PROVISIONAL, random).r);
        assert_eq!(
            rate(G711_PLC, GilbertLoss::NONE).r,
            EModelInput::default().rate().unwrap().r
        );
    }

    #[test]
    fn delay_lowers_a_calls_rating() {
        let r = |ms| {
            EModelInput::for_call(G711_PLC, Duration::from_millis(ms), GilbertLoss::NONE)
                .rate()
                .unwrap()
                .r
        };
        assert!(r(50) < r(0));
        assert!(r(150) < r(50));
        assert!(r(300) < r(150) - 5.0);
    }

    #[test]
    fn rejects_out_of_range_inputs() {
        let bad = [
            EModelInput {
                ppl: 120.0,
                ..Default::default()
            },
            EModelInput {
                burst_r: 0.5,
                ..Default::default()
            },
            EModelInput {
                ta_ms: -1.0,
                ..Default::default()
            },
            EModelInput {
                t_ms: f64::NAN,
                ..Default::default()
            },
        ];
        for input in bad {
            assert!(matches!(input.rate(), Err(QualityError::Parameter(_))));
        }
    }

    #[test]
    fn gilbert_fit_from_outcomes() {
        assert_eq!(GilbertLoss::from_outcomes([false; 50]), GilbertLoss::NONE);
        // Alternating loss: p = 1, q = 1 → BurstR 0.5, clamped to 1; Ppl 50 %.
        let alt = GilbertLoss::from_outcomes((0..100).map(|i| i % 2 == 0));
        assert_eq!((alt.ppl_percent, alt.burst_r), (50.0, 1.0));
        // Bursts of 4 lost after 16 received: 5 of 80 received packets are followed by a loss,
        // 4 of the 19 lost ones with a successor by a received one.
        let bursts: Vec<bool> = (0..100).map(|i| i % 20 >= 16).collect();
        let g = GilbertLoss::from_outcomes(bursts);
        assert!(close(g.ppl_percent, 20.0, 1e-9));
        let expected = 1.0 / (5.0 / 80.0 + 4.0 / 19.0);
        assert!(
            close(g.burst_r, expected, 1e-9),
            "{} vs {expected}",
            g.burst_r
        );
    }
}
