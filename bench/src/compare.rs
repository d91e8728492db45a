//! Comparison of two benchmark reports of the same scenario (`--compare old.json`): the
//! numeric leaves of their `summary` objects side by side, with the ratio new/old and the
//! difference, and the settings in which the two runs differ.
//!
//! It works on the JSON documents, not on the report types, so that any report with
//! `summary` objects can be compared, including one written by an older build. Paths name
//! array elements by their `label` field when they have one (a sweep's points), so that
//! two sweeps over different grids are matched point by point, not index by index.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

/// Reports larger than this are not benchmark reports of ours.
const MAX_REPORT_BYTES: u64 = 64 * 1024 * 1024;
/// Deeper nesting than this is not a report either (and would only cost stack).
const MAX_DEPTH: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    // The cause is in the message, not a `source`: one line, not repeated in a chain.
    #[error("reading {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path} is larger than {MAX_REPORT_BYTES} bytes: not a benchmark report")]
    TooLarge { path: String },
    #[error("{path} is not JSON: {error}")]
    Json {
        path: String,
        error: serde_json::Error,
    },
    #[error("{what} is not a benchmark report (no `summary` to compare)")]
    NotAReport { what: String },
    #[error(
        "{what} is a `{found}` report, not a `{expected}` report: compare runs of the same scenario"
    )]
    OtherScenario {
        what: String,
        found: String,
        expected: String,
    },
    #[error("the two reports have no summary metric in common")]
    NothingInCommon,
}

/// Which scenario wrote `report`: its `scenario` field, or `call` for a call report (which
/// predates that field and is recognised by its `pairs` and `summary`).
pub fn scenario_of(report: &Value) -> Option<&str> {
    // Scenarios run at several sizes (signal-load, chat-load) write a list of reports.
    if let Some(first) = report.as_array().and_then(|a| a.first()) {
        return first.get("scenario").and_then(Value::as_str);
    }
    let obj = report.as_object()?;
    if let Some(s) = obj.get("scenario").and_then(Value::as_str) {
        return Some(s);
    }
    (obj.contains_key("pairs") && obj.get("summary").is_some_and(Value::is_object))
        .then_some("call")
}

/// Reads a report and checks that `expected` wrote it.
pub fn load(path: &Path, expected: &str) -> Result<Value, CompareError> {
    let shown = path.display().to_string();
    let io = |error| CompareError::Io {
        path: shown.clone(),
        error,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_REPORT_BYTES {
        return Err(CompareError::TooLarge { path: shown });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|error| CompareError::Json {
        path: shown.clone(),
        error,
    })?;
    check_scenario(&value, expected, &shown)?;
    Ok(value)
}

/// Fails unless `report` is a report of `expected` with something to compare.
pub fn check_scenario(report: &Value, expected: &str, what: &str) -> Result<(), CompareError> {
    match scenario_of(report) {
        Some(found) if found == expected => {}
        Some(found) => {
            return Err(CompareError::OtherScenario {
                what: what.to_owned(),
                found: found.to_owned(),
                expected: expected.to_owned(),
            });
        }
        None => {
            return Err(CompareError::NotAReport {
                what: what.to_owned(),
            });
        }
    }
    if summaries(report).is_empty() {
        return Err(CompareError::NotAReport {
            what: what.to_owned(),
        });
    }
    Ok(())
}

/// One metric in both runs.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    /// Path of the leaf, e.g. `summary.mos_mean` or `points[loss 5% jitter 30 ms].summary.mos_mean`.
    pub path: String,
    pub old: Option<f64>,
    pub new: Option<f64>,
}

impl MetricRow {
    /// new / old; `None` when either is missing or old is 0.
    pub fn ratio(&self) -> Option<f64> {
        match (self.old, self.new) {
            (Some(o), Some(n)) if o != 0.0 => Some(n / o),
            _ => None,
        }
    }

    /// new − old.
    pub fn difference(&self) -> Option<f64> {
        Some(self.new? - self.old?)
    }
}

/// A setting (a leaf outside the summaries and outside arrays) whose value differs.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingChange {
    pub path: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// In path order (keys sorted) of the new report, then metrics only the old report has.
    pub metrics: Vec<MetricRow>,
    pub settings: Vec<SettingChange>,
}

/// Compares two reports of the same scenario.
pub fn compare(old: &Value, new: &Value) -> Result<Comparison, CompareError> {
    let expected = scenario_of(new).ok_or_else(|| CompareError::NotAReport {
        what: "the new report".into(),
    })?;
    check_scenario(new, expected, "the new report")?;
    check_scenario(old, expected, "the old report")?;
    let old_m = summaries(old);
    let new_m = summaries(new);
    let old_map: BTreeMap<&str, Option<f64>> =
        old_m.iter().map(|(p, v)| (p.as_str(), *v)).collect();
    let new_map: BTreeMap<&str, Option<f64>> =
        new_m.iter().map(|(p, v)| (p.as_str(), *v)).collect();
    if !new_map.keys().any(|k| old_map.contains_key(k)) {
        return Err(CompareError::NothingInCommon);
    }
    let mut metrics: Vec<MetricRow> = new_m
        .iter()
        .map(|(path, v)| MetricRow {
            path: path.clone(),
            old: old_map.get(path.as_str()).copied().flatten(),
            new: *v,
        })
        .collect();
    metrics.extend(
        old_m
            .iter()
            .filter(|(p, _)| !new_map.contains_key(p.as_str()))
            .map(|(path, v)| MetricRow {
                path: path.clone(),
                old: *v,
                new: None,
            }),
    );
    let old_s = settings(old);
    let new_s = settings(new);
    let mut changes = Vec::new();
    for (path, nv) in &new_s {
        let ov = old_s.get(path);
        if ov != Some(nv) {
            changes.push(SettingChange {
                path: path.clone(),
                old: ov.cloned(),
                new: Some(nv.clone()),
            });
        }
    }
    for (path, ov) in &old_s {
        if !new_s.contains_key(path) {
            changes.push(SettingChange {
                path: path.clone(),
                old: Some(ov.clone()),
                new: None,
            });
        }
    }
    Ok(Comparison {
        metrics,
        settings: changes,
    })
}

/// Numeric leaves (and nulls, which a summary uses for "not measured") under every
/// `summary` object, by path, object keys sorted. A report without summaries (the load
/// scenarios) is its own summary: all its numeric leaves.
fn summaries(report: &Value) -> Vec<(String, Option<f64>)> {
    let found = summary_leaves(report);
    if !found.is_empty() {
        return found;
    }
    let mut out = Vec::new();
    walk(report, String::new(), true, 0, &mut |path, v, _| {
        if let Value::Number(n) = v {
            out.push((path, n.as_f64()));
        }
    });
    out
}

fn summary_leaves(report: &Value) -> Vec<(String, Option<f64>)> {
    let mut out = Vec::new();
    walk(
        report,
        String::new(),
        false,
        0,
        &mut |path, v, in_summary| {
            if !in_summary {
                return;
            }
            match v {
                Value::Number(n) => out.push((path, n.as_f64())),
                Value::Null => out.push((path, None)),
                _ => {}
            }
        },
    );
    out
}

/// Scalar leaves outside summaries and outside arrays: what the run was configured with.
fn settings(report: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    walk(
        report,
        String::new(),
        false,
        0,
        &mut |path, v, in_summary| {
            if !in_summary && !path.contains('[') {
                out.insert(path, v.clone());
            }
        },
    );
    out
}

/// Calls `leaf(path, value, under_a_summary)` for every scalar leaf.
fn walk(
    v: &Value,
    path: String,
    in_summary: bool,
    depth: usize,
    leaf: &mut dyn FnMut(String, &Value, bool),
) {
    if depth > MAX_DEPTH {
        return;
    }
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(child, p, in_summary || k == "summary", depth + 1, leaf);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let key = match child.get("label").and_then(Value::as_str) {
                    Some(label) => label.to_owned(),
                    None => i.to_string(),
                };
                walk(child, format!("{path}[{key}]"), in_summary, depth + 1, leaf);
            }
        }
        scalar => leaf(path, scalar, in_summary),
    }
}

fn num(x: Option<f64>) -> String {
    match x {
        Some(x) if x.abs() >= 1000.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.3}"),
        None => "-".into(),
    }
}

/// The comparison as a table: metric, old, new, new/old, new − old; then the settings
/// that differ.
pub fn render(c: &Comparison) -> String {
    let width = c
        .metrics
        .iter()
        .map(|m| m.path.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$} {:>12} {:>12} {:>9} {:>12}",
        "metric", "old", "new", "new/old", "new-old"
    );
    for m in &c.metrics {
        let ratio = m.ratio().map_or("-".into(), |r| format!("{r:.3}"));
        let diff = m.difference().map_or("-".into(), |d| format!("{d:+.3}"));
        let _ = writeln!(
            out,
            "{:<width$} {:>12} {:>12} {:>9} {:>12}",
            m.path,
            num(m.old),
            num(m.new),
            ratio,
            diff
        );
    }
    if c.settings.is_empty() {
        let _ = writeln!(out, "settings: identical");
    } else {
        let _ = writeln!(out, "settings that differ (old -> new):");
        let show = |v: &Option<Value>| v.as_ref().map_or("(absent)".into(), Value::to_string);
        for s in &c.settings {
            let _ = writeln!(out, "  {}: {} -> {}", s.path, show(&s.old), show(&s.new));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn call(mos: f64, p50: f64, fec: bool) -> Value {
        json!({
            "participants": 2,
            "fec": fec,
            "up": { "loss": 0.0 },
            "pairs": [{ "listener": "p0", "audio": { "mos": mos } }],
            "summary": { "pairs": 2, "mos_mean": mos, "delay_p50_ms": p50, "video_fps_mean": null }
        })
    }

    #[test]
    fn call_reports_are_compared_by_summary_path() {
        let c = compare(&call(4.0, 100.0, true), &call(3.0, 50.0, true)).unwrap();
        let paths: Vec<&str> = c.metrics.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "summary.delay_p50_ms",
                "summary.mos_mean",
                "summary.pairs",
                "summary.video_fps_mean"
            ]
        );
        let mos = &c.metrics[1];
        assert_eq!(mos.ratio(), Some(0.75));
        assert_eq!(mos.difference(), Some(-1.0));
        assert_eq!(c.metrics[0].ratio(), Some(0.5));
        // Unmeasured on both sides: shown, without a ratio.
        assert_eq!(c.metrics[3].ratio(), None);
        assert!(c.settings.is_empty());
        // Per-pair values are not summary metrics.
        assert!(!paths.iter().any(|p| p.starts_with("pairs")));
    }

    #[test]
    fn load_reports_without_summaries_compare_every_number() {
        let run = |pps: f64| json!([{ "scenario": "signal-load", "connections": 100, "join_ms": { "p99": pps } }]);
        let c = compare(&run(10.0), &run(12.0)).unwrap();
        let m = c
            .metrics
            .iter()
            .find(|m| m.path == "[0].join_ms.p99")
            .expect("nested number");
        assert_eq!(m.ratio(), Some(1.2));
        let other = json!([{ "scenario": "chat-load", "x": 1 }]);
        assert!(compare(&other, &run(1.0)).is_err());
    }

    #[test]
    fn a_zero_old_value_has_a_difference_but_no_ratio() {
        let mut old = call(4.0, 100.0, true);
        old["summary"]["delay_p50_ms"] = json!(0.0);
        let c = compare(&old, &call(4.0, 20.0, true)).unwrap();
        let row = c
            .metrics
            .iter()
            .find(|m| m.path == "summary.delay_p50_ms")
            .unwrap();
        assert_eq!(row.ratio(), None);
        assert_eq!(row.difference(), Some(20.0));
    }

    #[test]
    fn differing_settings_are_listed_but_arrays_are_not_settings() {
        let c = compare(&call(4.0, 100.0, true), &call(4.1, 100.0, false)).unwrap();
        assert_eq!(
            c.settings,
            vec![SettingChange {
                path: "fec".into(),
                old: Some(json!(true)),
                new: Some(json!(false)),
            }]
        );
        let table = render(&c);
        assert!(table.contains("fec: true -> false"), "{table}");
        assert!(table.contains("summary.mos_mean"), "{table}");
        assert!(table.contains("1.025"), "{table}");
    }

    fn sweep(points: &[(&str, f64)]) -> Value {
        json!({
            "scenario": "sweep",
            "fec": true,
            "points": points.iter().map(|(label, mos)| json!({
                "label": label,
                "loss": 0.0,
                "summary": { "mos_mean": mos }
            })).collect::<Vec<_>>()
        })
    }

    #[test]
    fn sweep_points_are_matched_by_label_not_index() {
        let old = sweep(&[("loss 0% jitter 0 ms", 4.4), ("loss 5% jitter 0 ms", 4.0)]);
        let new = sweep(&[("loss 5% jitter 0 ms", 3.0), ("loss 10% jitter 0 ms", 2.5)]);
        let c = compare(&old, &new).unwrap();
        let row = |p: &str| c.metrics.iter().find(|m| m.path == p).cloned().unwrap();
        let five = row("points[loss 5% jitter 0 ms].summary.mos_mean");
        assert_eq!((five.old, five.new), (Some(4.0), Some(3.0)));
        let ten = row("points[loss 10% jitter 0 ms].summary.mos_mean");
        assert_eq!((ten.old, ten.new), (None, Some(2.5)));
        let zero = row("points[loss 0% jitter 0 ms].summary.mos_mean");
        assert_eq!((zero.old, zero.new), (Some(4.4), None));
    }

    #[test]
    fn reports_of_other_scenarios_are_refused() {
        let err = compare(&sweep(&[("a", 1.0)]), &call(4.0, 1.0, true)).unwrap_err();
        assert!(matches!(err, CompareError::OtherScenario { ref found, .. } if found == "sweep"));
        assert!(err.to_string().contains("not a `call` report"), "{err}");
        let err = compare(&json!({ "rows": [1, 2] }), &call(4.0, 1.0, true)).unwrap_err();
        assert!(matches!(err, CompareError::NotAReport { .. }), "{err}");
        let err = compare(&json!([1, 2]), &call(4.0, 1.0, true)).unwrap_err();
        assert!(matches!(err, CompareError::NotAReport { .. }), "{err}");
        // Same scenario name but nothing numeric to compare.
        let empty = json!({ "scenario": "sweep", "points": [] });
        let err = compare(&empty, &sweep(&[("a", 1.0)])).unwrap_err();
        assert!(matches!(err, CompareError::NotAReport { .. }), "{err}");
    }

    #[test]
    fn load_names_the_file_in_its_errors() {
        let dir = std::env::temp_dir().join(format!("huddle-compare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.json");
        std::fs::write(&bad, b"{ not json").unwrap();
        let err = load(&bad, "call").unwrap_err();
        assert!(matches!(err, CompareError::Json { .. }));
        assert!(err.to_string().contains("bad.json"), "{err}");
        let good = dir.join("good.json");
        std::fs::write(&good, call(4.0, 80.0, true).to_string()).unwrap();
        assert!(load(&good, "call").is_ok());
        let err = load(&good, "sweep").unwrap_err();
        assert!(err.to_string().contains("good.json"), "{err}");
        let err = load(&dir.join("missing.json"), "call").unwrap_err();
        assert!(matches!(err, CompareError::Io { .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let mut v = json!({ "summary": { "x": 1.0 } });
        for _ in 0..200 {
            v = json!({ "a": v });
        }
        // Recognised as neither scenario, and walking it does not overflow the stack.
        assert!(summaries(&v).is_empty());
        let mut inner = json!(1.0);
        for _ in 0..200 {
            inner = json!([inner]);
        }
        let report = json!({ "scenario": "x", "summary": { "deep": inner, "y": 2.0 } });
        assert_eq!(
            summaries(&report),
            vec![("summary.y".to_owned(), Some(2.0))]
        );
    }
}
