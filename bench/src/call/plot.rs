//! Plots of a sweep as SVG files: MOS and concealment against loss (a curve per jitter),
//! mouth-to-ear delay p50/p95 against jitter (a pair of curves per loss).
//!
//! SVG only: its text is drawn by whatever displays it, so no font file is needed here,
//! and the files are small enough to keep next to the docs.

use std::ops::Range;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::report::Summary;
use super::sweep::{SweepReport, percent};

const SIZE: (u32, u32) = (960, 540);
/// The legend sits in its own column right of the plot, so it never hides a curve.
const LEGEND_WIDTH: u32 = 170;
const FONT: &str = "sans-serif";
/// Colour-blind-safe categorical palette (Okabe–Ito), then greys for long grids.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
];

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("drawing {name}: {message}")]
    Draw { name: String, message: String },
    #[error("writing {path}: {error}")]
    Io { path: String, error: std::io::Error },
}

/// One line on a chart.
#[derive(Debug, Clone)]
pub struct Curve {
    pub label: String,
    /// In x order; non-finite points are left out.
    pub points: Vec<(f64, f64)>,
    /// Index into the palette: curves that belong together share it.
    pub colour: usize,
    pub dashed: bool,
}

/// A line chart.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    /// Under the title: what the run was.
    pub subtitle: String,
    pub x_desc: String,
    pub y_desc: String,
    /// `None`: from the data.
    pub y_range: Option<Range<f64>>,
    pub curves: Vec<Curve>,
}

fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// The data's span with a margin, never empty.
fn span(values: impl Iterator<Item = f64>, from_zero: bool) -> Range<f64> {
    let (mut lo, mut hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(v), h.max(v))
        });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if from_zero {
        lo = lo.min(0.0);
    }
    let pad = if hi > lo { (hi - lo) * 0.05 } else { 1.0 };
    let lo = if from_zero && lo >= 0.0 { lo } else { lo - pad };
    lo..hi + pad
}

/// Draws `chart` as an SVG document.
pub fn render_svg(chart: &Chart) -> Result<String, PlotError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw(&root, chart).map_err(|e| PlotError::Draw {
            name: chart.title.clone(),
            message: e.to_string(),
        })?;
        root.present().map_err(|e| PlotError::Draw {
            name: chart.title.clone(),
            message: e.to_string(),
        })?;
    }
    Ok(svg)
}

type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

fn draw(root: &DrawingArea<SVGBackend<'_>, Shift>, c: &Chart) -> DrawResult {
    root.fill(&WHITE)?;
    let (head, body) = root.split_vertically(62);
    head.draw(&Text::new(
        c.title.clone(),
        (SIZE.0 as i32 / 2, 12),
        (FONT, 22)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Top)),
    ))?;
    head.draw(&Text::new(
        c.subtitle.clone(),
        (SIZE.0 as i32 / 2, 40),
        (FONT, 14)
            .into_font()
            .color(&RGBColor(80, 80, 80))
            .pos(Pos::new(HPos::Center, VPos::Top)),
    ))?;
    let all = || c.curves.iter().flat_map(|k| k.points.iter());
    let x = span(all().map(|p| p.0), false);
    let y = c
        .y_range
        .clone()
        .unwrap_or_else(|| span(all().map(|p| p.1), true));
    let (plot, legend_area) = body.split_horizontally(SIZE.0 - LEGEND_WIDTH);
    let mut chart = ChartBuilder::on(&plot)
        .margin_left(12)
        .margin_right(16)
        .margin_bottom(10)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc(c.x_desc.as_str())
        .y_desc(c.y_desc.as_str())
        .axis_desc_style((FONT, 16))
        .label_style((FONT, 13))
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()?;
    let mut shown = Vec::new();
    for curve in &c.curves {
        let points: Vec<(f64, f64)> = curve
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        if points.is_empty() {
            continue;
        }
        let fill = colour(curve.colour).filled();
        let style = colour(curve.colour).stroke_width(2);
        if curve.dashed {
            chart.draw_series(DashedLineSeries::new(points.clone(), 7, 5, style))?;
            chart.draw_series(points.iter().map(|&p| TriangleMarker::new(p, 5, fill)))?;
        } else {
            chart.draw_series(LineSeries::new(points.clone(), style))?;
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, fill)))?;
        }
        shown.push(curve);
    }
    legend(&legend_area, &shown)
}

/// A line sample, its marker and its label per drawn curve, top down.
fn legend(area: &DrawingArea<SVGBackend<'_>, Shift>, curves: &[&Curve]) -> DrawResult {
    for (i, curve) in curves.iter().enumerate() {
        let y = 20 + 22 * i as i32;
        let style = colour(curve.colour).stroke_width(2);
        let fill = colour(curve.colour).filled();
        if curve.dashed {
            area.draw(&PathElement::new(vec![(4, y), (13, y)], style))?;
            area.draw(&PathElement::new(vec![(19, y), (28, y)], style))?;
            area.draw(&TriangleMarker::new((16, y), 5, fill))?;
        } else {
            area.draw(&PathElement::new(vec![(4, y), (28, y)], style))?;
            area.draw(&Circle::new((16, y), 4, fill))?;
        }
        area.draw(&Text::new(
            curve.label.clone(),
            (36, y),
            (FONT, 13)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
    }
    Ok(())
}

/// Axis numbers without needless decimals: `5`, `2.5`, `0.25`.
fn tick(v: f64) -> String {
    let r = (v * 100.0).round() / 100.0;
    if r == 0.0 { "0".into() } else { format!("{r}") }
}

/// What the sweep ran, in one line.
fn subtitle(r: &SweepReport) -> String {
    let t = &r.template;
    let loss = if t.burst > 1.0 {
        format!("loss in bursts of {} packets", t.burst)
    } else {
        "random loss".to_owned()
    };
    let links = match (r.impair_up, r.impair_down) {
        (true, true) => "both links of each path impaired",
        (true, false) => "participant→SFU impaired",
        _ => "SFU→participant impaired",
    };
    let mut s = format!(
        "{} participants, {} s per point, Opus {} kbit/s FEC {}, {loss}, {links}",
        r.participants,
        r.duration_s,
        r.audio_bitrate / 1000,
        if r.fec { "on" } else { "off" },
    );
    if t.delay_ms > 0.0 {
        s.push_str(&format!(", +{} ms delay", t.delay_ms));
    }
    if r.video {
        s.push_str(", with video");
    }
    s
}

/// A curve per value of one grid axis, `y` of each point along the other axis.
fn curves_by(
    r: &SweepReport,
    per_jitter: bool,
    label: impl Fn(f64) -> String,
    y: impl Fn(&Summary) -> f64,
    dashed: bool,
) -> Vec<Curve> {
    let groups: &[f64] = if per_jitter { &r.jitters_ms } else { &r.losses };
    groups
        .iter()
        .enumerate()
        .map(|(i, &g)| {
            let mut points: Vec<(f64, f64)> = r
                .points
                .iter()
                .filter(|p| (if per_jitter { p.jitter_ms } else { p.loss }) == g)
                .filter_map(|p| {
                    let s = p.summary.as_ref()?;
                    let x = if per_jitter {
                        p.loss * 100.0
                    } else {
                        p.jitter_ms
                    };
                    Some((x, y(s)))
                })
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Curve {
                label: label(g),
                points,
                colour: i,
                dashed,
            }
        })
        .collect()
}

const LOSS_DESC: &str = "packet loss on each impaired link (%)";
const JITTER_DESC: &str = "jitter added on each impaired link (ms, uniform in 0..value)";

/// The MOS chart: mean E-model MOS of all listener/speaker pairs against loss.
pub fn mos_vs_loss(r: &SweepReport) -> Chart {
    Chart {
        title: "Call quality (MOS) vs packet loss".into(),
        subtitle: subtitle(r),
        x_desc: LOSS_DESC.into(),
        y_desc: "MOS, ITU-T G.107 E-model (1–4.5)".into(),
        y_range: Some(1.0..4.6),
        curves: curves_by(r, true, |j| format!("jitter {j} ms"), |s| s.mos_mean, false),
    }
}

/// The delay chart: p50 (mean over pairs) solid, worst pair's p95 dashed, against jitter.
pub fn delay_vs_jitter(r: &SweepReport) -> Chart {
    let mut curves = Vec::new();
    let p50 = curves_by(
        r,
        false,
        |l| format!("p50, loss {}%", percent(l)),
        |s| s.delay_p50_ms,
        false,
    );
    let p95 = curves_by(
        r,
        false,
        |l| format!("p95, loss {}%", percent(l)),
        |s| s.delay_p95_ms,
        true,
    );
    for (a, b) in p50.into_iter().zip(p95) {
        curves.push(a);
        curves.push(b);
    }
    Chart {
        title: "Mouth-to-ear delay vs jitter".into(),
        subtitle: subtitle(r),
        x_desc: JITTER_DESC.into(),
        y_desc: "mouth-to-ear delay (ms)".into(),
        y_range: None,
        curves,
    }
}

/// The concealment chart: share of played audio that was concealment, against loss.
pub fn concealment_vs_loss(r: &SweepReport) -> Chart {
    let curves = curves_by(
        r,
        true,
        |j| format!("jitter {j} ms"),
        |s| s.concealed_pct_mean,
        false,
    );
    let top = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max);
    Chart {
        title: "Concealed audio vs packet loss".into(),
        subtitle: subtitle(r),
        x_desc: LOSS_DESC.into(),
        y_desc: "concealed samples (% of played audio)".into(),
        y_range: Some(0.0..top * 1.1),
        curves,
    }
}

/// Writes the sweep's three charts into `dir` and returns their paths.
pub fn draw_sweep(r: &SweepReport, dir: &Path) -> Result<Vec<PathBuf>, PlotError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |error| PlotError::Io { path, error }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let charts = [
        ("mos-vs-loss.svg", mos_vs_loss(r)),
        ("delay-vs-jitter.svg", delay_vs_jitter(r)),
        ("concealment-vs-loss.svg", concealment_vs_loss(r)),
    ];
    let mut written = Vec::new();
    for (name, chart) in charts {
        let path = dir.join(name);
        std::fs::write(&path, render_svg(&chart)?).map_err(io(&path))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::super::Impairments;
    use super::super::sweep::{SweepPoint, label};
    use super::*;

    fn report() -> SweepReport {
        let losses = vec![0.0, 0.05, 0.1];
        let jitters = vec![0.0, 40.0];
        let mut points = Vec::new();
        for &l in &losses {
            for &j in &jitters {
                let failed = l == 0.1 && j == 40.0;
                points.push(SweepPoint {
                    label: label(l, j),
                    loss: l,
                    jitter_ms: j,
                    up: Impairments::default(),
                    down: Impairments::default(),
                    summary: (!failed).then(|| Summary {
                        mos_mean: 4.4 - 10.0 * l - j / 100.0,
                        delay_p50_ms: 60.0 + j,
                        delay_p95_ms: 80.0 + 2.0 * j,
                        concealed_pct_mean: l * 80.0,
                        mos_min: f64::NAN,
                        ..Summary::default()
                    }),
                    error: failed.then(|| "failed".to_owned()),
                });
            }
        }
        SweepReport {
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
            losses,
            jitters_ms: jitters,
            points,
        }
    }

    #[test]
    fn curves_follow_the_grid_and_skip_failed_points() {
        let r = report();
        let mos = mos_vs_loss(&r);
        assert_eq!(mos.curves.len(), 2);
        assert_eq!(mos.curves[0].label, "jitter 0 ms");
        let xs: Vec<f64> = mos.curves[0].points.iter().map(|p| p.0).collect();
        assert_eq!(xs, [0.0, 5.0, 10.0]);
        // The failed point (10%, 40 ms) is missing from its curve.
        assert_eq!(mos.curves[1].points.len(), 2);
        let delay = delay_vs_jitter(&r);
        let labels: Vec<&str> = delay.curves.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "p50, loss 0%",
                "p95, loss 0%",
                "p50, loss 5%",
                "p95, loss 5%",
                "p50, loss 10%",
                "p95, loss 10%"
            ]
        );
        assert_eq!(delay.curves[1].points, vec![(0.0, 80.0), (40.0, 160.0)]);
        assert!(delay.curves[1].dashed && !delay.curves[0].dashed);
        assert_eq!(delay.curves[0].colour, delay.curves[1].colour);
        let conc = concealment_vs_loss(&r);
        assert_eq!(conc.y_range, Some(0.0..8.0 * 1.1));
    }

    #[test]
    fn svg_has_titles_axis_labels_and_legend() {
        let svg = render_svg(&delay_vs_jitter(&report())).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        for text in [
            "Mouth-to-ear delay vs jitter",
            "mouth-to-ear delay (ms)",
            "jitter added on each impaired link (ms",
            "p95, loss 10%",
            "2 participants, 6 s per point, Opus 32 kbit/s FEC on",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
        // Dashed p95 curves are drawn as many short segments.
        assert!(svg.matches("<polyline").count() > 20);
    }

    #[test]
    fn ticks_have_no_needless_decimals() {
        assert_eq!(tick(5.0), "5");
        assert_eq!(tick(2.5), "2.5");
        assert_eq!(tick(0.1 + 0.2), "0.3");
        assert_eq!(tick(-0.0), "0");
        assert_eq!(tick(120.0), "120");
    }

    #[test]
    fn empty_or_degenerate_data_still_draws() {
        let mut r = report();
        r.losses = vec![0.05];
        r.jitters_ms = vec![0.0];
        r.points.retain(|p| p.loss == 0.05 && p.jitter_ms == 0.0);
        for chart in [
            mos_vs_loss(&r),
            delay_vs_jitter(&r),
            concealment_vs_loss(&r),
        ] {
            render_svg(&chart).unwrap();
        }
        r.points.clear();
        for chart in [
            mos_vs_loss(&r),
            delay_vs_jitter(&r),
            concealment_vs_loss(&r),
        ] {
            render_svg(&chart).unwrap();
        }
    }

    #[test]
    fn draw_sweep_writes_three_files() {
        let dir = std::env::temp_dir().join(format!("huddle-plot-{}", std::process::id()));
        let files = draw_sweep(&report(), &dir).unwrap();
        assert_eq!(files.len(), 3);
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            assert!(text.contains("</svg>"), "{}", f.display());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
