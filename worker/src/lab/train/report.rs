//! What `train` reports and writes: the summary (the JSON document printed
//! with `--json` and written to `metrics.json`), the metrics table, and the
//! files of the output directory (forecast or anomaly CSV, plot data).

use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{NaiveDate, Utc};
use serde::Serialize;
use trainyard_shared::ModelType;

use crate::training::{
    metrics, AnomalyFlag, DataReport, ForecastPoint, Metrics, RawRow, SkippedCandidate,
    TrainOutcome, TrainSettings,
};

use super::args::TrainArgs;
use super::csv_input::CsvReport;
use crate::lab::plot::PlotData;

/// One candidate in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct CandidateSummary {
    pub algorithm: String,
    pub champion: bool,
    /// Holdout metrics.
    pub metrics: Metrics,
    /// Validation metrics (what the champion was chosen on).
    pub validation: Metrics,
    pub train_seconds: f64,
    pub sha256: String,
    /// Rows this candidate flags on its own (anomaly detection: its score
    /// above its threshold, or a built-in detector; written to
    /// `anomalies-<algorithm>.csv`).
    pub flagged: Option<usize>,
}

/// The champion's flags against the label column.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LabelScores {
    pub rows: usize,
    pub labelled_anomalies: usize,
    pub flagged: usize,
    /// `null` when undefined (nothing flagged).
    pub precision: Option<f64>,
    /// `null` when undefined (nothing labelled).
    pub recall: Option<f64>,
    pub f1: Option<f64>,
    /// The same on the holdout rows only.
    pub holdout_precision: Option<f64>,
    pub holdout_recall: Option<f64>,
    pub holdout_f1: Option<f64>,
}

/// The files written.
#[derive(Debug, Clone, Serialize)]
pub struct OutputFiles {
    pub model: PathBuf,
    pub forecast: Option<PathBuf>,
    pub anomalies: Option<PathBuf>,
    pub metrics: PathBuf,
    pub plot: Option<PathBuf>,
}

/// Everything `train` reports: printed as a table, or as JSON with `--json`,
/// and written to `metrics.json`.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub csv: PathBuf,
    pub model_type: ModelType,
    pub value_col: String,
    pub out_dir: PathBuf,
    pub csv_report: CsvReport,
    pub data: DataReport,
    pub training_samples: usize,
    pub candidates: Vec<CandidateSummary>,
    pub skipped: Vec<SkippedCandidate>,
    pub champion: String,
    /// The champion's holdout predictions (forecasts only).
    pub holdout_prediction: Vec<ForecastPoint>,
    pub forecast: Vec<ForecastPoint>,
    /// Rows flagged by the champion (anomaly detection only).
    pub anomalies_flagged: Option<usize>,
    /// The champion's flags by reason (anomaly detection only).
    pub flags_by_kind: Option<std::collections::BTreeMap<String, usize>>,
    /// Warnings about the run (e.g. nothing for the multivariate model to learn).
    pub notes: Vec<String>,
    pub labels: Option<LabelScores>,
    pub files: OutputFiles,
    pub settings: TrainSettings,
}

pub(super) fn default_out_dir(csv: &Path, model: ModelType) -> PathBuf {
    let stem = csv
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    PathBuf::from("ml-models").join(format!(
        "{stem}-{model}-{}",
        Utc::now().format("%Y%m%dT%H%M%SZ")
    ))
}

pub(super) fn score_labels(
    flags: &[AnomalyFlag],
    labels: &[bool],
    holdout_start: NaiveDate,
) -> LabelScores {
    // Flags carry the row id (1-based data row); rows the pipeline rejected
    // have no flag and count as not flagged.
    let mut flagged = vec![false; labels.len()];
    let mut in_holdout = vec![false; labels.len()];
    for f in flags {
        if let Some(i) = f.row_id.and_then(|id| usize::try_from(id - 1).ok()) {
            if i < labels.len() {
                flagged[i] = f.is_anomaly;
                in_holdout[i] = f.date >= holdout_start;
            }
        }
    }
    let (precision, recall, f1) = metrics::classification(&flagged, labels);
    let pick = |xs: &[bool]| -> Vec<bool> {
        xs.iter()
            .zip(&in_holdout)
            .filter(|(_, h)| **h)
            .map(|(x, _)| *x)
            .collect()
    };
    let (holdout_precision, holdout_recall, holdout_f1) =
        metrics::classification(&pick(&flagged), &pick(labels));
    LabelScores {
        rows: labels.len(),
        labelled_anomalies: labels.iter().filter(|l| **l).count(),
        flagged: flagged.iter().filter(|f| **f).count(),
        precision,
        recall,
        f1,
        holdout_precision,
        holdout_recall,
        holdout_f1,
    }
}

pub(super) fn write_forecast_csv(path: &Path, forecast: &[ForecastPoint]) -> anyhow::Result<()> {
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("creating {}", path.display()))?;
    w.write_record([
        "date", "value", "lower_80", "upper_80", "lower_95", "upper_95",
    ])?;
    let opt = |x: Option<f64>| x.map(|v| format!("{v}")).unwrap_or_default();
    for p in forecast {
        w.write_record([
            p.date.to_string(),
            format!("{}", p.value),
            opt(p.lower_80),
            opt(p.upper_80),
            opt(p.lower_95),
            opt(p.upper_95),
        ])?;
    }
    w.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub(super) fn write_anomalies_csv(
    path: &Path,
    flags: &[AnomalyFlag],
    rows: &[RawRow],
    labels: Option<&[bool]>,
) -> anyhow::Result<()> {
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("creating {}", path.display()))?;
    let mut header = vec![
        "row",
        "date",
        "value",
        "score",
        "threshold",
        "is_anomaly",
        "kind",
    ];
    if labels.is_some() {
        header.push("label");
    }
    w.write_record(header)?;
    for f in flags {
        let i = f.row_id.map(|id| (id - 1) as usize);
        let value = i
            .and_then(|i| rows.get(i))
            .map(|r| r.value)
            .unwrap_or(f64::NAN);
        let mut rec = vec![
            f.row_id.map(|id| id.to_string()).unwrap_or_default(),
            f.date.to_string(),
            format!("{value}"),
            format!("{}", f.score),
            format!("{}", f.threshold),
            u8::from(f.is_anomaly).to_string(),
            f.kind.map(|k| k.as_str().to_string()).unwrap_or_default(),
        ];
        if let Some(l) = labels {
            rec.push(
                i.and_then(|i| l.get(i))
                    .map(|b| u8::from(*b).to_string())
                    .unwrap_or_default(),
            );
        }
        w.write_record(rec)?;
    }
    w.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The series as the pipeline saw it, for the plot: the daily totals of the
/// target column (forecasts), or each row's value (anomaly detection).
pub(super) fn plot_data(
    args: &TrainArgs,
    rows: &[RawRow],
    outcome: &TrainOutcome,
    holdout_prediction: &[ForecastPoint],
) -> PlotData {
    let holdout_start = outcome.data.holdout.start;
    let target = |r: &RawRow| match args.model {
        ModelType::EmissionsForecast => r.co2e_kg,
        _ => r.value,
    };
    let mut daily: std::collections::BTreeMap<NaiveDate, f64> = Default::default();
    for r in rows {
        let x = target(r);
        if x.is_finite() && x >= 0.0 && r.date >= outcome.data.train.start {
            *daily.entry(r.date).or_default() += x;
        }
    }
    let (history, holdout): (Vec<_>, Vec<_>) =
        daily.into_iter().partition(|(d, _)| *d < holdout_start);
    let anomalies = outcome
        .anomalies
        .iter()
        .filter(|a| a.is_anomaly)
        .filter_map(|a| {
            let r = rows.get(usize::try_from(a.row_id? - 1).ok()?)?;
            Some((a.date, r.value))
        })
        .collect();
    PlotData {
        title: format!(
            "{} · {} · champion: {}",
            args.csv
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            args.model,
            outcome.champion().algorithm
        ),
        y_label: args.value_col.clone(),
        history,
        holdout,
        holdout_prediction: holdout_prediction
            .iter()
            .map(|p| (p.date, p.value))
            .collect(),
        forecast: outcome.forecast.iter().map(|p| (p.date, p.value)).collect(),
        band_80: outcome
            .forecast
            .iter()
            .filter_map(|p| Some((p.date, p.lower_80?, p.upper_80?)))
            .collect(),
        band_95: outcome
            .forecast
            .iter()
            .filter_map(|p| Some((p.date, p.lower_95?, p.upper_95?)))
            .collect(),
        anomalies,
    }
}

fn fmt_opt(x: Option<f64>, digits: usize) -> String {
    x.filter(|v| v.is_finite())
        .map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "—".into())
}

/// The human-readable report.
pub fn render_table(s: &TrainSummary) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let d = &s.data;
    let _ = writeln!(
        out,
        "\ndata: {} rows read, {} used; {} days {}…{} ({} gap days filled, {} older days dropped, {} identical rows counted once, {} rejected: {} missing/non-numeric, {} negative, {} infinite, {} absurd, {} future-dated)",
        d.rows_in,
        d.rows_used,
        d.days,
        d.train.start,
        d.holdout.end,
        d.gaps_filled,
        d.dropped_days,
        d.duplicate_rows,
        d.rejected.total(),
        d.rejected.nan,
        d.rejected.negative,
        d.rejected.infinite,
        d.rejected.absurd,
        d.rejected.future,
    );
    if s.csv_report.delimiter != ',' || s.csv_report.decimal_comma {
        let _ = writeln!(
            out,
            "      read as {}-separated{}",
            match s.csv_report.delimiter {
                '\t' => "tab",
                ';' => "semicolon",
                _ => "comma",
            },
            if s.csv_report.decimal_comma {
                ", with decimal commas"
            } else {
                ""
            }
        );
    }
    for (column, n) in &s.csv_report.unparseable {
        let _ = writeln!(
            out,
            "      column `{column}`: {n} empty or non-numeric cells"
        );
    }
    let _ = writeln!(
        out,
        "holdout: {} … {} ({} days); candidates fitted on {} {}\n",
        d.holdout.start,
        d.holdout.end,
        d.holdout.days(),
        s.training_samples,
        if s.model_type.is_forecast() {
            "days"
        } else {
            "rows"
        }
    );
    let labelled = s.labels.is_some();
    let _ = write!(
        out,
        "  {:<21} {:>12} {:>12} {:>8} {:>8} {:>9} {:>6}",
        "candidate", "MAE", "RMSE", "R²", "MAPE %", "accuracy", "MASE"
    );
    if labelled {
        let _ = write!(out, " {:>9} {:>7} {:>6}", "precision", "recall", "F1");
    }
    out.push('\n');
    for c in &s.candidates {
        let m = &c.metrics;
        let name = if c.champion {
            format!("{} ★", c.algorithm)
        } else {
            c.algorithm.clone()
        };
        let _ = write!(
            out,
            "  {:<21} {:>12} {:>12} {:>8} {:>8} {:>9} {:>6}",
            name,
            fmt_opt(Some(m.mae), 2),
            fmt_opt(Some(m.rmse), 2),
            fmt_opt(Some(m.r2), 3),
            fmt_opt(m.mape, 2),
            fmt_opt(Some(m.accuracy), 1),
            fmt_opt(m.mase, 3),
        );
        if let Some(l) = &s.labels {
            if c.champion {
                let _ = write!(
                    out,
                    " {:>9} {:>7} {:>6}",
                    fmt_opt(l.precision, 3),
                    fmt_opt(l.recall, 3),
                    fmt_opt(l.f1, 3)
                );
            }
        }
        out.push('\n');
    }
    for k in &s.skipped {
        let _ = writeln!(out, "  {:<21} skipped: {}", k.algorithm, k.reason);
    }
    let _ = writeln!(
        out,
        "\nchampion: {} ({} the {} validation days before the holdout; holdout metrics above)",
        s.champion,
        if s.model_type.is_forecast() {
            "lowest MAE on"
        } else {
            "most spikes and dips found among those injected into copies of"
        },
        s.settings.validation_days
    );
    if let Some(n) = s.anomalies_flagged {
        let kinds = s
            .flags_by_kind
            .iter()
            .flatten()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(out, "flagged: {n} of {} rows ({kinds})", d.rows_in);
        for c in &s.candidates {
            if let Some(f) = c.flagged {
                let _ = writeln!(out, "  {} alone would flag {f}", c.algorithm);
            }
        }
    }
    for note in &s.notes {
        let _ = writeln!(out, "warning: {note}");
    }
    if let Some(l) = &s.labels {
        let _ = writeln!(
            out,
            "labels: {} anomalies in {} rows; champion flags {}: precision {}, recall {}, F1 {} (holdout only: {} / {} / {})",
            l.labelled_anomalies,
            l.rows,
            l.flagged,
            fmt_opt(l.precision, 3),
            fmt_opt(l.recall, 3),
            fmt_opt(l.f1, 3),
            fmt_opt(l.holdout_precision, 3),
            fmt_opt(l.holdout_recall, 3),
            fmt_opt(l.holdout_f1, 3)
        );
    }
    if let (Some(first), Some(last)) = (s.forecast.first(), s.forecast.last()) {
        let total: f64 = s.forecast.iter().map(|p| p.value).sum();
        let _ = writeln!(
            out,
            "forecast: {} … {}, {} days, total {:.2}",
            first.date,
            last.date,
            s.forecast.len(),
            total
        );
    }
    let _ = writeln!(out, "written to {}/", s.out_dir.display());
    let f = &s.files;
    for p in [
        Some(&f.model),
        f.forecast.as_ref(),
        f.anomalies.as_ref(),
        Some(&f.metrics),
        f.plot.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        let _ = writeln!(
            out,
            "  {}",
            p.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        );
    }
    out
}
