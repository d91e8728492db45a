//! `huddle bench sweep`: the same call run once per point of a loss × jitter grid, one
//! call at a time against one server, so that quality can be plotted against impairment
//! (see [`super::plot`]). Every point uses the same seed: the same speech and the same
//! random draws, so points differ only by their impairment.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::report::Summary;
use super::{CallConfig, CallTarget, Impairments};

/// More points than this is a typo in a grid, not a benchmark (each point is a real-time
/// call of several seconds).
pub const MAX_POINTS: usize = 200;
/// Time a call may take beyond its warm-up and measured duration (joins, teardown)
/// before the point is recorded as failed.
pub const SETUP_LIMIT: Duration = Duration::from_secs(60);
/// Jitter beyond this is not a call any more.
pub const MAX_JITTER_MS: f64 = 5_000.0;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GridError {
    #[error("the grid is empty: give at least one loss and one jitter value")]
    Empty,
    #[error("{0} points is more than {MAX_POINTS}")]
    TooManyPoints(usize),
    #[error("loss {0} is not a fraction in [0, 1)")]
    Loss(f64),
    #[error("jitter {0} ms is not in [0, {MAX_JITTER_MS}] ms")]
    Jitter(f64),
    #[error("neither direction is impaired")]
    NoDirection,
}

/// A sweep: a call and the grid of impairments to run it under.
#[derive(Debug, Clone)]
pub struct SweepConfig {
    /// The call of every point; its `up` and `down` are replaced by each point's.
    pub call: CallConfig,
    /// What every impaired direction gets besides the point's loss and jitter (burst
    /// length, fixed delay, reordering, bandwidth); its own loss and jitter are ignored.
    pub template: Impairments,
    /// Which directions (participant → SFU, SFU → participant) carry the impairment.
    pub impair_up: bool,
    pub impair_down: bool,
    /// Loss fractions, in the order they are run and plotted.
    pub losses: Vec<f64>,
    pub jitters_ms: Vec<f64>,
}

impl SweepConfig {
    /// The grid's points, loss-major, after checking them.
    pub fn points(&self) -> Result<Vec<(f64, f64)>, GridError> {
        if self.losses.is_empty() || self.jitters_ms.is_empty() {
            return Err(GridError::Empty);
        }
        let n = self.losses.len().saturating_mul(self.jitters_ms.len());
        if n > MAX_POINTS {
            return Err(GridError::TooManyPoints(n));
        }
        if !(self.impair_up || self.impair_down) {
            return Err(GridError::NoDirection);
        }
        if let Some(&l) = self.losses.iter().find(|l| !(0.0..1.0).contains(*l)) {
            return Err(GridError::Loss(l));
        }
        if let Some(&j) = self
            .jitters_ms
            .iter()
            .find(|j| !(0.0..=MAX_JITTER_MS).contains(*j))
        {
            return Err(GridError::Jitter(j));
        }
        Ok(self
            .losses
            .iter()
            .flat_map(|&l| self.jitters_ms.iter().map(move |&j| (l, j)))
            .collect())
    }

    /// The call of one point.
    fn call_at(&self, loss: f64, jitter_ms: f64) -> CallConfig {
        let imp = Impairments {
            loss,
            jitter_ms,
            ..self.template
        };
        let pick = |on: bool| if on { imp } else { Impairments::default() };
        CallConfig {
            up: pick(self.impair_up),
            down: pick(self.impair_down),
            ..self.call.clone()
        }
    }
}

/// The sweep's JSON report (documented in docs/benchmarking.md, "Sweep").
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    /// Always `sweep`; `--compare` checks it.
    pub scenario: &'static str,
    pub participants: usize,
    /// Measured seconds per point.
    pub duration_s: f64,
    pub nack: bool,
    pub fec: bool,
    pub video: bool,
    pub seed: u64,
    pub audio_bitrate: u32,
    /// Shared by every point; loss and jitter are each point's.
    pub template: Impairments,
    pub impair_up: bool,
    pub impair_down: bool,
    pub losses: Vec<f64>,
    pub jitters_ms: Vec<f64>,
    pub points: Vec<SweepPoint>,
}

/// One call of the sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    /// `loss 5% jitter 30 ms`: how `--compare` matches points of two sweeps.
    pub label: String,
    pub loss: f64,
    pub jitter_ms: f64,
    pub up: Impairments,
    pub down: Impairments,
    /// The call report's summary; `None` when the call failed.
    pub summary: Option<Summary>,
    pub error: Option<String>,
}

/// `loss 5% jitter 30 ms`.
pub fn label(loss: f64, jitter_ms: f64) -> String {
    format!("loss {}% jitter {} ms", percent(loss), trim(jitter_ms))
}

/// A loss fraction as a short percentage: 0.05 → `5`, 0.025 → `2.5`.
pub fn percent(loss: f64) -> String {
    trim(loss * 100.0)
}

/// At most two decimals, none when whole.
fn trim(x: f64) -> String {
    let r = (x * 100.0).round() / 100.0;
    format!("{r}")
}

/// Runs every point of the grid, one call after the other, calling `on_point(index,
/// total, point)` after each. A point whose call fails is recorded with its error and the
/// sweep goes on.
pub async fn run(
    target: &CallTarget<'_>,
    cfg: &SweepConfig,
    mut on_point: impl FnMut(usize, usize, &SweepPoint),
) -> Result<SweepReport, GridError> {
    let grid = cfg.points()?;
    let total = grid.len();
    let mut points = Vec::with_capacity(total);
    for (i, (loss, jitter_ms)) in grid.into_iter().enumerate() {
        let call = cfg.call_at(loss, jitter_ms);
        // A call that hangs (a join that never completes) must not stall the whole sweep.
        let limit = call.duration + call.warmup + SETUP_LIMIT;
        let (summary, error) = match tokio::time::timeout(limit, super::run(target, &call)).await {
            Ok(Ok(report)) => (Some(report.summary), None),
            Ok(Err(e)) => (None, Some(e.to_string())),
            Err(_) => (
                None,
                Some(format!("no result within {} s", limit.as_secs())),
            ),
        };
        let point = SweepPoint {
            label: label(loss, jitter_ms),
            loss,
            jitter_ms,
            up: call.up,
            down: call.down,
            summary,
            error,
        };
        on_point(i, total, &point);
        points.push(point);
    }
    Ok(SweepReport {
        scenario: "sweep",
        participants: cfg.call.participants,
        duration_s: cfg.call.duration.as_secs_f64(),
        nack: cfg.call.nack,
        fec: cfg.call.fec,
        video: cfg.call.video.is_some(),
        seed: cfg.call.seed,
        audio_bitrate: cfg.call.audio_bitrate,
        template: Impairments {
            loss: 0.0,
            jitter_ms: 0.0,
            ..cfg.template
        },
        impair_up: cfg.impair_up,
        impair_down: cfg.impair_down,
        losses: cfg.losses.clone(),
        jitters_ms: cfg.jitters_ms.clone(),
        points,
    })
}

/// One line for a finished point.
pub fn point_line(p: &SweepPoint) -> String {
    match (&p.summary, &p.error) {
        (Some(s), _) => format!(
            "{}: MOS {:.2}, mouth-to-ear p50 {:.0} ms p95 {:.0} ms, loss {:.2}% -> {:.2}% \
             after repair, concealed {:.2}%",
            p.label,
            s.mos_mean,
            s.delay_p50_ms,
            s.delay_p95_ms,
            s.loss_before_repair_pct_mean,
            s.loss_after_repair_pct_mean,
            s.concealed_pct_mean
        ),
        (None, Some(e)) => format!("{}: failed: {e}", p.label),
        (None, None) => format!("{}: no result", p.label),
    }
}

/// The table of all points (the one in docs/benchmarking.md).
pub fn table(r: &SweepReport) -> String {
    let video = r.video;
    let mut out = String::new();
    let _ = write!(
        out,
        "| loss % | jitter ms | lost % | after FEC % | concealed % | m2e p50 ms | m2e p95 ms | SNR dB | MOS | MOS min |"
    );
    if video {
        let _ = write!(out, " fps | freezes |");
    }
    out.push('\n');
    let _ = write!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    if video {
        let _ = write!(out, "---:|---:|");
    }
    out.push('\n');
    for p in &r.points {
        let _ = write!(out, "| {} | {} |", percent(p.loss), trim(p.jitter_ms));
        match &p.summary {
            Some(s) => {
                let _ = write!(
                    out,
                    " {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {:.1} | {:.2} | {:.2} |",
                    s.loss_before_repair_pct_mean,
                    s.loss_after_repair_pct_mean,
                    s.concealed_pct_mean,
                    s.delay_p50_ms,
                    s.delay_p95_ms,
                    s.snr_db_mean,
                    s.mos_mean,
                    s.mos_min
                );
                if video {
                    let _ = write!(
                        out,
                        " {} | {} |",
                        s.video_fps_mean.map_or("-".into(), |f| format!("{f:.1}")),
                        s.video_freezes.map_or("-".into(), |f| f.to_string())
                    );
                }
            }
            None => {
                let _ = write!(out, " failed | | | | | | | |");
                if video {
                    let _ = write!(out, " | |");
                }
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(losses: &[f64], jitters: &[f64]) -> SweepConfig {
        SweepConfig {
            call: CallConfig::default(),
            template: Impairments {
                burst: 2.0,
                delay_ms: 20.0,
                loss: 0.9,
                ..Impairments::default()
            },
            impair_up: false,
            impair_down: true,
            losses: losses.to_vec(),
            jitters_ms: jitters.to_vec(),
        }
    }

    #[test]
    fn points_are_loss_major() {
        let c = cfg(&[0.0, 0.1], &[0.0, 30.0, 60.0]);
        assert_eq!(
            c.points().unwrap(),
            vec![
                (0.0, 0.0),
                (0.0, 30.0),
                (0.0, 60.0),
                (0.1, 0.0),
                (0.1, 30.0),
                (0.1, 60.0)
            ]
        );
    }

    #[test]
    fn bad_grids_are_refused() {
        assert_eq!(cfg(&[], &[0.0]).points(), Err(GridError::Empty));
        assert_eq!(cfg(&[1.0], &[0.0]).points(), Err(GridError::Loss(1.0)));
        assert_eq!(cfg(&[-0.1], &[0.0]).points(), Err(GridError::Loss(-0.1)));
        assert!(matches!(
            cfg(&[f64::NAN], &[0.0]).points(),
            Err(GridError::Loss(_))
        ));
        assert_eq!(cfg(&[0.0], &[-1.0]).points(), Err(GridError::Jitter(-1.0)));
        let many: Vec<f64> = (0..21).map(|i| i as f64).collect();
        assert_eq!(
            cfg(&[0.0; 10], &many).points(),
            Err(GridError::TooManyPoints(210))
        );
        let mut none = cfg(&[0.0], &[0.0]);
        none.impair_down = false;
        assert_eq!(none.points(), Err(GridError::NoDirection));
    }

    #[test]
    fn a_point_impairs_only_the_chosen_directions_with_the_template() {
        let c = cfg(&[0.05], &[30.0]);
        let call = c.call_at(0.05, 30.0);
        assert_eq!(call.up, Impairments::default());
        assert_eq!(
            call.down,
            Impairments {
                loss: 0.05,
                jitter_ms: 30.0,
                burst: 2.0,
                delay_ms: 20.0,
                ..Impairments::default()
            }
        );
        assert_eq!(call.participants, c.call.participants);
    }

    #[test]
    fn labels_are_short_and_stable() {
        assert_eq!(label(0.05, 30.0), "loss 5% jitter 30 ms");
        assert_eq!(label(0.025, 7.5), "loss 2.5% jitter 7.5 ms");
        assert_eq!(label(0.0, 0.0), "loss 0% jitter 0 ms");
        // 0.07 * 100 is 7.000000000000001 in binary floating point.
        assert_eq!(label(0.07, 0.0), "loss 7% jitter 0 ms");
    }

    #[test]
    fn the_table_has_a_row_per_point_and_marks_failures() {
        let report = SweepReport {
            scenario: "sweep",
            participants: 2,
            duration_s: 6.0,
            nack: true,
            fec: true,
            video: false,
            seed: 1,
            audio_bitrate: 32_000,
            template: Impairments::default(),
            impair_up: false,
            impair_down: true,
            losses: vec![0.0, 0.1],
            jitters_ms: vec![0.0],
            points: vec![
                SweepPoint {
                    label: label(0.0, 0.0),
                    loss: 0.0,
                    jitter_ms: 0.0,
                    up: Impairments::default(),
                    down: Impairments::default(),
                    summary: Some(Summary {
                        mos_mean: 4.41,
                        delay_p50_ms: 61.0,
                        ..Summary::default()
                    }),
                    error: None,
                },
                SweepPoint {
                    label: label(0.1, 0.0),
                    loss: 0.1,
                    jitter_ms: 0.0,
                    up: Impairments::default(),
                    down: Impairments::default(),
                    summary: None,
                    error: Some("server: gone".into()),
                },
            ],
        };
        let t = table(&report);
        let rows: Vec<&str> = t.lines().collect();
        assert_eq!(rows.len(), 4, "{t}");
        assert!(
            rows[2].starts_with("| 0 | 0 |") && rows[2].contains("| 4.41 |"),
            "{t}"
        );
        assert!(rows[3].starts_with("| 10 | 0 | failed"), "{t}");
        assert!(point_line(&report.points[1]).contains("failed: server: gone"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["scenario"], "sweep");
        assert_eq!(json["points"][0]["summary"]["mos_mean"], 4.41);
        assert!(json["points"][1]["summary"].is_null());
    }
}
