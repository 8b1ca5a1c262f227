//! `trainyard-worker train`: the whole pipeline on a CSV, with no Redis and
//! no PostgreSQL. Reads the file once at the edge (typed rows, clear errors
//! naming the column), runs [`train_model`], prints every candidate's holdout
//! metrics and writes the champion, its forecast or anomaly flags, the
//! metrics and a plot into one output directory.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use chrono::{NaiveDate, Utc};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use trainyard_shared::ModelType;

use crate::training::data::fingerprint_of;
use crate::training::{
    apply_epoch_overrides, holdout_forecast, metrics, train_model, AnomalyFlag, DataReport,
    EpochReport, ForecastPoint, Metrics, RawRow, SkippedCandidate, TrainOutcome, TrainRequest,
    TrainSettings,
};

use super::plot::{self, PlotData};

const EXAMPLE: &str = "\
Examples:
  # 30-day energy forecast from a daily kWh export
  trainyard-worker train --csv meter.csv --date-col date --value-col kwh

  # emissions, a short run, machine-readable summary on stdout
  trainyard-worker train --csv site.csv --date-col day --value-col co2e_kg \\
      --model emissions_forecast --epochs 10 --json > summary.json

  # anomaly detection on three columns, scored against known labels
  trainyard-worker train --csv rows.csv --date-col date --value-col kwh \\
      --model anomaly_detection --feature-cols co2e_kg,grid_factor --label-col is_anomaly

Output directory (default ./ml-models/<csv-stem>-<model>-<UTC timestamp>/):
  model.tyd       the champion's artifact (self-describing, checksummed)
  forecast.csv    date,value: the champion's forecast after the last data day
  anomalies.csv   row,date,value,score,threshold,is_anomaly[,label] (anomaly_detection)
  metrics.json    the same document --json prints
  plot.png        history, holdout actuals, champion holdout prediction, forecast";

/// Train every candidate on a CSV and keep the champion (no services needed).
///
/// The CSV needs a header row. Dates are ISO (`2024-01-31`; a time after the
/// date is ignored). Rows of the same date are summed for forecasts. Empty or
/// non-numeric values are not fatal: they are counted and reported, and the
/// pipeline's data rules apply (short gaps interpolated, a long gap cuts the
/// older history, at least 180 usable days).
#[derive(Debug, Clone, Args)]
#[command(after_help = EXAMPLE)]
pub struct TrainArgs {
    /// The CSV file (header row required).
    #[arg(long, value_name = "FILE")]
    pub csv: PathBuf,

    /// Column holding the date of each row.
    #[arg(long, value_name = "COLUMN")]
    pub date_col: String,

    /// Column holding the series to learn (energy for energy_forecast, CO2e
    /// for emissions_forecast, the energy `value` feature for anomaly_detection).
    #[arg(long, value_name = "COLUMN")]
    pub value_col: String,

    /// Model type: energy_forecast, emissions_forecast or anomaly_detection.
    #[arg(long, default_value = "energy_forecast")]
    pub model: ModelType,

    /// anomaly_detection only: up to two more feature columns, used as the
    /// `co2e_kg` and `grid_factor` features (a missing one is held constant).
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    pub feature_cols: Vec<String>,

    /// anomaly_detection only: a 0/1 (or true/false) column of known
    /// anomalies; the champion's flags are scored against it (precision,
    /// recall, F1).
    #[arg(long, value_name = "COLUMN")]
    pub label_col: Option<String>,

    /// Days at the end held out to score every candidate.
    #[arg(long, default_value_t = 30)]
    pub holdout_days: usize,

    /// Epochs of the neural candidate (default: the production setting, 50
    /// for the LSTM, 30 for the autoencoder).
    #[arg(long)]
    pub epochs: Option<usize>,

    /// Output directory [default: ./ml-models/<csv-stem>-<model>-<UTC timestamp>/].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Print exactly one JSON document on stdout (progress and logs stay on stderr).
    #[arg(long)]
    pub json: bool,

    /// Seed of the neural models (the same seed and data give the same model).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Why a CSV could not be read into rows.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("cannot read {path}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("malformed CSV at line {line}: {message}")]
    Malformed { line: u64, message: String },
    #[error("column `{column}` not found; the header has: {available}")]
    MissingColumn { column: String, available: String },
    #[error("column `{column}`, line {line}: `{value}` is not a date (expected YYYY-MM-DD)")]
    BadDate {
        column: String,
        line: u64,
        value: String,
    },
    #[error(
        "column `{column}`, line {line}: `{value}` is not a label (expected 0/1 or true/false)"
    )]
    BadLabel {
        column: String,
        line: u64,
        value: String,
    },
    #[error("column `{column}` has no numeric value in {rows} rows")]
    NoNumbers { column: String, rows: usize },
    #[error("the CSV has a header but no rows")]
    Empty,
    #[error("the CSV file is empty (no header row)")]
    EmptyFile,
    #[error(
        "column `{column}` appears more than once in the header (columns {positions}); \
         rename or remove the extra one so it is clear which to read"
    )]
    DuplicateColumn { column: String, positions: String },
    #[error("{0}")]
    Usage(String),
}

/// Which CSV columns feed which field of [`RawRow`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSpec {
    pub date: String,
    pub value: String,
    pub model: ModelType,
    /// Anomaly features besides `value`: `co2e_kg`, then `grid_factor`.
    pub features: Vec<String>,
    pub label: Option<String>,
}

impl ColumnSpec {
    pub fn from_args(args: &TrainArgs) -> Result<ColumnSpec, CsvError> {
        let mut features: Vec<String> = args
            .feature_cols
            .iter()
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty() && *c != args.value_col)
            .collect();
        features.dedup();
        if args.model.is_forecast() && !features.is_empty() {
            return Err(CsvError::Usage(
                "--feature-cols is for anomaly_detection; forecasts learn --value-col only".into(),
            ));
        }
        if features.len() > 2 {
            return Err(CsvError::Usage(format!(
                "--feature-cols takes at most two columns besides --value-col (the co2e_kg and \
                 grid_factor features), got {}",
                features.join(",")
            )));
        }
        if args.label_col.is_some() && args.model.is_forecast() {
            return Err(CsvError::Usage(
                "--label-col is for anomaly_detection".into(),
            ));
        }
        Ok(ColumnSpec {
            date: args.date_col.clone(),
            value: args.value_col.clone(),
            model: args.model,
            features,
            label: args.label_col.clone(),
        })
    }
}

/// Rows read from a CSV, with what could not be parsed.
#[derive(Debug, Clone)]
pub struct CsvData {
    /// One per data line; `id` is the 1-based data row number.
    pub rows: Vec<RawRow>,
    /// Per data row, when a label column was given.
    pub labels: Option<Vec<bool>>,
    pub report: CsvReport,
}

/// What reading the CSV found (the pipeline's [`DataReport`] says what
/// preparation then did with the rows).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CsvReport {
    pub rows: usize,
    /// The field separator found in the header line (`,`, `;` or tab).
    pub delimiter: char,
    /// Whether numbers were read with a decimal comma (`1.234,5`), as
    /// semicolon- and tab-separated exports usually write them.
    pub decimal_comma: bool,
    /// Cells that were empty or not a number, per column (they become
    /// missing values that the pipeline rejects and counts).
    pub unparseable: Vec<(String, usize)>,
}

/// Parses a number cell: empty, `NA`, `null` or text become NaN (counted).
/// With `decimal_comma`, `1.234,5` is 1234.5 (a cell without a comma is
/// read as usual). Returns the number and whether a decimal comma was used.
fn parse_number(cell: &str, decimal_comma: bool) -> Option<(f64, bool)> {
    let t = cell.trim();
    let (text, comma) = if decimal_comma && t.contains(',') {
        (t.replace('.', "").replace(',', "."), true)
    } else {
        (t.to_string(), false)
    };
    text.parse::<f64>()
        .ok()
        .filter(|x| !x.is_nan())
        .map(|x| (x, comma))
}

/// The field separator of a CSV: whichever of `,`, `;` and tab occurs most
/// often (outside quotes) in its header line; `,` when none does.
fn sniff_delimiter(header_line: &[u8]) -> u8 {
    let mut counts = [0usize; 3];
    let mut quoted = false;
    for &b in header_line {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => counts[0] += 1,
            b';' if !quoted => counts[1] += 1,
            b'\t' if !quoted => counts[2] += 1,
            _ => {}
        }
    }
    let candidates = [b',', b';', b'\t'];
    let best = (0..3).max_by_key(|&i| (counts[i], std::cmp::Reverse(i)));
    match best {
        Some(i) if counts[i] > 0 => candidates[i],
        _ => b',',
    }
}

/// How a CSV error reads after "malformed CSV at line N: ", without the
/// record and line numbers the parser's own message repeats.
fn describe_csv_error(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields where the header has {expected_len}"),
        csv::ErrorKind::Io(io) => io.to_string(),
        _ => e.to_string(),
    }
}

/// Parses an ISO date, ignoring a time part (`2024-01-31 13:00:00`,
/// `2024-01-31T13:00:00Z`).
pub fn parse_date(cell: &str) -> Option<NaiveDate> {
    let t = cell.trim();
    let head = t.get(..10).unwrap_or(t);
    NaiveDate::parse_from_str(head, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(head, "%Y/%m/%d"))
        .ok()
        .filter(|_| matches!(t.as_bytes().get(10), None | Some(b' ' | b'T' | b't')))
}

fn parse_label(cell: &str) -> Option<bool> {
    match cell.trim().to_ascii_lowercase().as_str() {
        "1" | "1.0" | "true" | "yes" | "y" | "t" => Some(true),
        "0" | "0.0" | "false" | "no" | "n" | "f" | "" => Some(false),
        _ => None,
    }
}

/// Reads the rows `spec` asks for from CSV text.
///
/// The separator is sniffed from the header line (`,`, `;` or tab); with `;`
/// or tab, numbers may use a decimal comma. Cells are read as UTF-8 where
/// they are valid and lossily where not (a Latin-1 export reads the same),
/// and a leading byte-order mark is ignored.
pub fn read_rows(mut input: impl Read, spec: &ColumnSpec) -> Result<CsvData, CsvError> {
    let mut bytes = Vec::new();
    input
        .read_to_end(&mut bytes)
        .map_err(|e| CsvError::Malformed {
            line: 0,
            message: e.to_string(),
        })?;
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    if text.iter().all(u8::is_ascii_whitespace) {
        return Err(CsvError::EmptyFile);
    }
    let header_line = text
        .split(|b| *b == b'\n')
        .find(|l| !l.iter().all(u8::is_ascii_whitespace))
        .unwrap_or_default();
    let delimiter = sniff_delimiter(header_line);
    let decimal_comma_allowed = delimiter != b',';

    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .delimiter(delimiter)
        .from_reader(text);
    let malformed = |e: csv::Error| CsvError::Malformed {
        line: e.position().map(|p| p.line()).unwrap_or(0),
        message: describe_csv_error(&e),
    };
    let header: Vec<String> = reader
        .byte_headers()
        .map_err(malformed)?
        .iter()
        .map(|h| String::from_utf8_lossy(h).trim().to_string())
        .collect();
    let col = |name: &str| {
        let name = name.trim();
        let at: Vec<usize> = (0..header.len()).filter(|&i| header[i] == name).collect();
        match at.as_slice() {
            [i] => Ok(*i),
            [] => Err(CsvError::MissingColumn {
                column: name.to_string(),
                available: header.join(", "),
            }),
            [.., last] => Err(CsvError::DuplicateColumn {
                column: name.to_string(),
                positions: format!(
                    "{} and {}",
                    at[..at.len() - 1]
                        .iter()
                        .map(|i| (i + 1).to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    last + 1
                ),
            }),
        }
    };
    let date_i = col(&spec.date)?;
    let value_i = col(&spec.value)?;
    let feature_i = spec
        .features
        .iter()
        .map(|f| col(f))
        .collect::<Result<Vec<_>, _>>()?;
    let label_i = spec.label.as_deref().map(col).transpose()?;

    // Numeric columns in report order: value, then the features.
    let numeric: Vec<(String, usize)> = std::iter::once((spec.value.clone(), value_i))
        .chain(spec.features.iter().cloned().zip(feature_i.iter().copied()))
        .collect();
    let mut bad = vec![0usize; numeric.len()];
    let mut decimal_comma = false;
    let mut rows = Vec::new();
    let mut labels = label_i.map(|_| Vec::new());
    for (n, record) in reader.byte_records().enumerate() {
        let record = record.map_err(malformed)?;
        let line = record.position().map(|p| p.line()).unwrap_or(n as u64 + 2);
        let cell = |i: usize| String::from_utf8_lossy(record.get(i).unwrap_or_default());
        let date = parse_date(&cell(date_i)).ok_or_else(|| CsvError::BadDate {
            column: spec.date.clone(),
            line,
            value: cell(date_i).to_string(),
        })?;
        let mut nums = [f64::NAN; 3];
        for (k, (_, i)) in numeric.iter().enumerate() {
            match parse_number(&cell(*i), decimal_comma_allowed) {
                Some((x, comma)) => {
                    nums[k] = x;
                    decimal_comma |= comma;
                }
                None => bad[k] += 1,
            }
        }
        if let (Some(i), Some(labels)) = (label_i, labels.as_mut()) {
            let l = parse_label(&cell(i)).ok_or_else(|| CsvError::BadLabel {
                column: spec.label.clone().unwrap_or_default(),
                line,
                value: cell(i).to_string(),
            })?;
            labels.push(l);
        }
        // Identical lines are one record imported twice (see RawRow::fingerprint).
        let fingerprint = fingerprint_of(record.iter().map(Some));
        rows.push(to_raw_row(n as i64 + 1, date, nums, fingerprint, spec));
    }
    if rows.is_empty() {
        return Err(CsvError::Empty);
    }
    for (k, (name, _)) in numeric.iter().enumerate() {
        if bad[k] == rows.len() {
            return Err(CsvError::NoNumbers {
                column: name.clone(),
                rows: rows.len(),
            });
        }
    }
    Ok(CsvData {
        report: CsvReport {
            rows: rows.len(),
            delimiter: char::from(delimiter),
            decimal_comma,
            unparseable: numeric
                .iter()
                .zip(&bad)
                .filter(|(_, b)| **b > 0)
                .map(|((name, _), b)| (name.clone(), *b))
                .collect(),
        },
        rows,
        labels,
    })
}

/// `nums` is (value, feature 1, feature 2) as read; a feature that was not
/// asked for is the constant 1, which standardizes to 0 and so plays no part.
fn to_raw_row(
    id: i64,
    date: NaiveDate,
    nums: [f64; 3],
    fingerprint: u64,
    spec: &ColumnSpec,
) -> RawRow {
    let [value, f1, f2] = nums;
    match spec.model {
        ModelType::EnergyForecast => RawRow {
            id: Some(id),
            date,
            value,
            co2e_kg: f64::NAN,
            grid_factor: f64::NAN,
            fingerprint,
        },
        ModelType::EmissionsForecast => RawRow {
            id: Some(id),
            date,
            value: f64::NAN,
            co2e_kg: value,
            grid_factor: f64::NAN,
            fingerprint,
        },
        ModelType::AnomalyDetection => RawRow {
            id: Some(id),
            date,
            value,
            co2e_kg: if spec.features.is_empty() { 1.0 } else { f1 },
            grid_factor: if spec.features.len() < 2 { 1.0 } else { f2 },
            fingerprint,
        },
    }
}

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
}

/// The champion's flags against the label column.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LabelScores {
    pub rows: usize,
    pub labelled_anomalies: usize,
    pub flagged: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// The same on the holdout rows only.
    pub holdout_precision: f64,
    pub holdout_recall: f64,
    pub holdout_f1: f64,
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
    pub labels: Option<LabelScores>,
    pub files: OutputFiles,
    pub settings: TrainSettings,
}

/// Reads, trains, writes the output directory and returns the summary.
/// `on_epoch` sees every epoch of the neural candidate.
pub fn run_train(
    args: &TrainArgs,
    on_epoch: &mut dyn FnMut(&EpochReport),
) -> anyhow::Result<TrainSummary> {
    let spec = ColumnSpec::from_args(args)?;
    let file = fs::File::open(&args.csv).map_err(|source| CsvError::Io {
        path: args.csv.display().to_string(),
        source,
    })?;
    let csv = read_rows(std::io::BufReader::new(file), &spec)?;
    for (column, n) in &csv.report.unparseable {
        tracing::warn!(
            column,
            rows = n,
            "empty or non-numeric values; those rows are skipped"
        );
    }

    let mut settings = TrainSettings::default();
    settings.holdout_days = args.holdout_days;
    // Keep the production rule "fit window ≥ 60 days" when the holdout grows.
    settings.min_days = settings
        .min_days
        .max(args.holdout_days + settings.validation_days + 60);
    if args.model.is_forecast() {
        apply_epoch_overrides(&mut settings, args.epochs, None);
    } else {
        apply_epoch_overrides(&mut settings, None, args.epochs);
    }
    let req = TrainRequest {
        model_type: args.model,
        rows: csv.rows.clone(),
        settings: settings.clone(),
        seed: args.seed,
    };
    let outcome = train_model(&req, on_epoch).context("training failed")?;
    let holdout_prediction = if args.model.is_forecast() {
        holdout_forecast(&outcome.champion().artifact, &req)
            .context("re-running the champion on the holdout")?
    } else {
        Vec::new()
    };

    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| default_out_dir(&args.csv, args.model));
    fs::create_dir_all(&out_dir)
        .with_context(|| format!("creating the output directory {}", out_dir.display()))?;
    let model_path = out_dir.join("model.tyd");
    fs::write(&model_path, &outcome.champion().artifact)
        .with_context(|| format!("writing {}", model_path.display()))?;

    let labels = csv
        .labels
        .as_ref()
        .map(|l| score_labels(&outcome.anomalies, l, outcome.data.holdout.start));

    let (forecast_path, anomalies_path) = if args.model.is_forecast() {
        let p = out_dir.join("forecast.csv");
        write_forecast_csv(&p, &outcome.forecast)?;
        (Some(p), None)
    } else {
        let p = out_dir.join("anomalies.csv");
        write_anomalies_csv(&p, &outcome.anomalies, &csv.rows, csv.labels.as_deref())?;
        (None, Some(p))
    };

    let plot_path = out_dir.join("plot.png");
    let plot_data = plot_data(args, &csv.rows, &outcome, &holdout_prediction);
    let plot_path = match plot::write_png(&plot_path, &plot_data) {
        Ok(()) => Some(plot_path),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "the plot could not be drawn");
            None
        }
    };

    let summary = TrainSummary {
        csv: args.csv.clone(),
        model_type: args.model,
        value_col: args.value_col.clone(),
        out_dir: out_dir.clone(),
        csv_report: csv.report.clone(),
        data: outcome.data.clone(),
        training_samples: outcome.training_samples,
        candidates: outcome
            .candidates
            .iter()
            .enumerate()
            .map(|(i, c)| CandidateSummary {
                algorithm: c.algorithm.clone(),
                champion: i == outcome.champion,
                metrics: c.metrics,
                validation: c.validation,
                train_seconds: c.train_seconds,
                sha256: c.sha256.clone(),
            })
            .collect(),
        skipped: outcome.skipped.clone(),
        champion: outcome.champion().algorithm.clone(),
        holdout_prediction,
        forecast: outcome.forecast.clone(),
        anomalies_flagged: (!args.model.is_forecast())
            .then(|| outcome.anomalies.iter().filter(|a| a.is_anomaly).count()),
        labels,
        files: OutputFiles {
            model: model_path,
            forecast: forecast_path,
            anomalies: anomalies_path,
            metrics: out_dir.join("metrics.json"),
            plot: plot_path,
        },
        settings,
    };
    let json = serde_json::to_vec_pretty(&summary).context("serializing the summary")?;
    fs::write(&summary.files.metrics, json)
        .with_context(|| format!("writing {}", summary.files.metrics.display()))?;
    Ok(summary)
}

fn default_out_dir(csv: &Path, model: ModelType) -> PathBuf {
    let stem = csv
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    PathBuf::from("ml-models").join(format!(
        "{stem}-{model}-{}",
        Utc::now().format("%Y%m%dT%H%M%SZ")
    ))
}

fn score_labels(flags: &[AnomalyFlag], labels: &[bool], holdout_start: NaiveDate) -> LabelScores {
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

fn write_forecast_csv(path: &Path, forecast: &[ForecastPoint]) -> anyhow::Result<()> {
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("creating {}", path.display()))?;
    w.write_record(["date", "value"])?;
    for p in forecast {
        w.write_record([p.date.to_string(), format!("{}", p.value)])?;
    }
    w.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn write_anomalies_csv(
    path: &Path,
    flags: &[AnomalyFlag],
    rows: &[RawRow],
    labels: Option<&[bool]>,
) -> anyhow::Result<()> {
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("creating {}", path.display()))?;
    let mut header = vec!["row", "date", "value", "score", "threshold", "is_anomaly"];
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
fn plot_data(
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
        anomalies,
    }
}

/// A progress bar per candidate on stderr, driven by the epoch callback.
struct EpochBars {
    bar: Option<(String, ProgressBar)>,
}

impl EpochBars {
    fn new() -> Self {
        EpochBars { bar: None }
    }

    fn on_epoch(&mut self, r: &EpochReport) {
        let same = matches!(&self.bar, Some((a, _)) if *a == r.algorithm);
        if !same {
            self.finish();
            let bar =
                ProgressBar::with_draw_target(Some(r.epochs as u64), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>12} [{bar:30}] {pos}/{len} epochs  {msg}  ({elapsed}, eta {eta})",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            bar.set_prefix(r.algorithm.clone());
            bar.enable_steady_tick(Duration::from_millis(250));
            self.bar = Some((r.algorithm.clone(), bar));
        }
        if let Some((_, bar)) = &self.bar {
            bar.set_position(r.epoch as u64);
            bar.set_message(match r.val_loss {
                Some(v) => format!("loss {:.4} val {:.4}", r.train_loss, v),
                None => format!("loss {:.4}", r.train_loss),
            });
        }
    }

    fn finish(&mut self) {
        if let Some((_, bar)) = self.bar.take() {
            bar.finish();
        }
    }
}

/// The `train` subcommand: returns the process exit code.
pub fn execute(args: TrainArgs) -> anyhow::Result<i32> {
    let mut bars = EpochBars::new();
    if !args.json {
        eprintln!(
            "training {} on {} (column `{}`) — candidates: {}",
            args.model,
            args.csv.display(),
            args.value_col,
            crate::training::pipeline::algorithms(args.model).join(", ")
        );
    }
    let result = run_train(&args, &mut |r| bars.on_epoch(r));
    bars.finish();
    let summary = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", render_table(&summary));
    }
    Ok(0)
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
                let _ = write!(out, " {:>9.3} {:>7.3} {:>6.3}", l.precision, l.recall, l.f1);
            }
        }
        out.push('\n');
    }
    for k in &s.skipped {
        let _ = writeln!(out, "  {:<21} skipped: {}", k.algorithm, k.reason);
    }
    let _ = writeln!(
        out,
        "\nchampion: {} (lowest {} on the {} validation days before the holdout; holdout metrics above)",
        s.champion,
        if s.model_type.is_forecast() { "MAE" } else { "reconstruction RMSE" },
        s.settings.validation_days
    );
    if let Some(n) = s.anomalies_flagged {
        let _ = writeln!(out, "flagged: {n} of {} rows", d.rows_used);
    }
    if let Some(l) = &s.labels {
        let _ = writeln!(
            out,
            "labels: {} anomalies in {} rows; champion flags {}: precision {:.3}, recall {:.3}, F1 {:.3} (holdout only: {:.3} / {:.3} / {:.3})",
            l.labelled_anomalies, l.rows, l.flagged, l.precision, l.recall, l.f1,
            l.holdout_precision, l.holdout_recall, l.holdout_f1
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(model: ModelType) -> ColumnSpec {
        ColumnSpec {
            date: "day".into(),
            value: "kwh".into(),
            model,
            features: Vec::new(),
            label: None,
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "trainyard-cli-{name}-{}-{}",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A weekly pattern on a slow trend, `days` long, with a few bad cells.
    fn generated_csv(days: i64) -> String {
        let d0 = NaiveDate::from_ymd_opt(2023, 1, 1).unwrap();
        let mut s = String::from("day,kwh,note\n");
        for i in 0..days {
            let v = 100.0
                + 0.05 * i as f64
                + [0.0, 8.0, 12.0, 10.0, 9.0, -15.0, -20.0][(i % 7) as usize];
            let cell = match i {
                10 => String::new(),
                20 => "n/a".into(),
                _ => format!("{v:.3}"),
            };
            s.push_str(&format!("{},{cell},x\n", d0 + chrono::Duration::days(i)));
        }
        s
    }

    #[test]
    fn a_missing_column_is_named_with_the_columns_that_exist() {
        let err = read_rows(
            "date,kwh\n2024-01-01,1\n".as_bytes(),
            &spec(ModelType::EnergyForecast),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, CsvError::MissingColumn { .. }), "{msg}");
        assert!(msg.contains("`day`") && msg.contains("date, kwh"), "{msg}");
    }

    #[test]
    fn a_column_named_twice_is_refused_naming_it() {
        let err = read_rows(
            "day,kwh,kwh\n2024-01-01,1,2\n".as_bytes(),
            &spec(ModelType::EnergyForecast),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, CsvError::DuplicateColumn { ref column, .. } if column == "kwh"),
            "{msg}"
        );
        assert!(
            msg.contains("`kwh`") && msg.contains("columns 2 and 3"),
            "{msg}"
        );
        // A repeated column that is not read is harmless.
        let data = read_rows(
            "day,kwh,note,note\n2024-01-01,1,a,b\n".as_bytes(),
            &spec(ModelType::EnergyForecast),
        )
        .unwrap();
        assert_eq!(data.rows[0].value, 1.0);
    }

    #[test]
    fn a_semicolon_csv_with_decimal_commas_is_read() {
        let data = read_rows(
            "day;kwh\n2024-01-01;1,5\n2024-01-02;1.234,25\n2024-01-03;7\n".as_bytes(),
            &spec(ModelType::EnergyForecast),
        )
        .unwrap();
        let values: Vec<f64> = data.rows.iter().map(|r| r.value).collect();
        assert_eq!(values, vec![1.5, 1234.25, 7.0]);
        assert_eq!(data.report.delimiter, ';');
        assert!(data.report.decimal_comma);
        // A comma CSV keeps reading `1.5` as it always did.
        let data = read_rows(
            "day,kwh\n2024-01-01,1.5\n".as_bytes(),
            &spec(ModelType::EnergyForecast),
        )
        .unwrap();
        assert_eq!(data.rows[0].value, 1.5);
        assert_eq!(data.report.delimiter, ',');
        assert!(!data.report.decimal_comma);
    }

    #[test]
    fn an_empty_file_is_called_empty() {
        for input in ["", "\n", "  \r\n"] {
            let err = read_rows(input.as_bytes(), &spec(ModelType::EnergyForecast)).unwrap_err();
            assert!(matches!(err, CsvError::EmptyFile), "{input:?}: {err}");
            assert_eq!(err.to_string(), "the CSV file is empty (no header row)");
        }
    }

    #[test]
    fn each_cause_appears_once_in_an_error_chain() {
        let missing = temp_dir("missing").join("nope.csv");
        let args = TrainArgs {
            csv: missing.clone(),
            date_col: "day".into(),
            value_col: "kwh".into(),
            model: ModelType::EnergyForecast,
            feature_cols: Vec::new(),
            label_col: None,
            holdout_days: 30,
            epochs: Some(1),
            out: None,
            json: true,
            seed: 1,
        };
        let err = run_train(&args, &mut |_| {}).unwrap_err();
        let chain = format!("{err:#}");
        assert!(chain.starts_with("cannot read "), "{chain}");
        let cause = std::io::Error::from(std::io::ErrorKind::NotFound).to_string();
        let os_cause = "No such file or directory";
        assert!(
            chain.matches(os_cause).count() == 1 || chain.matches(&cause).count() == 1,
            "{chain}"
        );
        // A malformed line is named once, not once by us and once by the parser.
        let err = read_rows(
            "day,kwh\n2024-01-01,1\n2024-01-02,2,3\n".as_bytes(),
            &spec(ModelType::EnergyForecast),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert_eq!(msg.matches("line").count(), 1, "{msg}");
        assert!(
            msg.contains("line 3") && msg.contains("3 fields") && msg.contains('2'),
            "{msg}"
        );
    }

    #[test]
    fn identical_lines_are_one_record_and_differing_lines_are_not() {
        let data = read_rows(
            "day,kwh,meter\n2024-01-01,1,a\n2024-01-01,1,a\n2024-01-01,1,b\n".as_bytes(),
            &spec(ModelType::EnergyForecast),
        )
        .unwrap();
        let f: Vec<u64> = data.rows.iter().map(|r| r.fingerprint).collect();
        assert_eq!(f[0], f[1]);
        assert_ne!(f[0], f[2]);
    }

    #[test]
    fn an_unparseable_date_names_the_column_the_line_and_the_value() {
        let err = read_rows(
            "day,kwh\n2024-01-01,1\n01.02.2024,2\n".as_bytes(),
            &spec(ModelType::EnergyForecast),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("`day`") && msg.contains("line 3") && msg.contains("01.02.2024"),
            "{msg}"
        );
    }

    #[test]
    fn dates_may_carry_a_time_and_short_dates_do_not_panic() {
        let d = NaiveDate::from_ymd_opt(2024, 1, 4).unwrap();
        assert_eq!(parse_date("2024-01-04"), Some(d));
        assert_eq!(parse_date("2024-01-04T13:00:00Z"), Some(d));
        assert_eq!(parse_date("2024/01/04"), Some(d));
        assert_eq!(parse_date("2024-01-04x"), None);
        let _ = parse_date("2024-1-4");
        assert_eq!(parse_date("é"), None);
    }

    #[test]
    fn bad_values_are_counted_not_fatal_and_become_missing() {
        let data = read_rows(
            "day,kwh\n2024-01-01,1.5\n2024-01-02,\n2024-01-03,abc\n2024-01-04 13:00:00,2\n"
                .as_bytes(),
            &spec(ModelType::EnergyForecast),
        )
        .unwrap();
        assert_eq!(data.report.rows, 4);
        assert_eq!(data.report.unparseable, vec![("kwh".to_string(), 2)]);
        assert!(data.rows[1].value.is_nan() && data.rows[2].value.is_nan());
        assert_eq!(
            data.rows[3].date,
            NaiveDate::from_ymd_opt(2024, 1, 4).unwrap()
        );
        assert_eq!(data.rows[3].id, Some(4));
    }

    #[test]
    fn a_column_without_any_number_is_an_error_naming_it() {
        let err = read_rows(
            "day,kwh\n2024-01-01,x\n2024-01-02,\n".as_bytes(),
            &spec(ModelType::EnergyForecast),
        )
        .unwrap_err();
        assert!(
            matches!(err, CsvError::NoNumbers { ref column, rows: 2 } if column == "kwh"),
            "{err}"
        );
    }

    #[test]
    fn emissions_go_to_co2e_and_anomaly_features_fill_in_order() {
        let e = read_rows(
            "day,kwh\n2024-01-01,3\n".as_bytes(),
            &spec(ModelType::EmissionsForecast),
        )
        .unwrap();
        assert_eq!(e.rows[0].co2e_kg, 3.0);
        assert!(e.rows[0].value.is_nan());
        let mut s = spec(ModelType::AnomalyDetection);
        s.features = vec!["co2".into()];
        s.label = Some("bad".into());
        let a = read_rows(
            "day,kwh,co2,bad\n2024-01-01,3,7,1\n2024-01-02,4,8,false\n".as_bytes(),
            &s,
        )
        .unwrap();
        assert_eq!(
            (a.rows[0].value, a.rows[0].co2e_kg, a.rows[0].grid_factor),
            (3.0, 7.0, 1.0)
        );
        assert_eq!(a.labels, Some(vec![true, false]));
    }

    #[test]
    fn feature_columns_are_refused_for_forecasts() {
        let args = TrainArgs {
            csv: "x.csv".into(),
            date_col: "day".into(),
            value_col: "kwh".into(),
            model: ModelType::EnergyForecast,
            feature_cols: vec!["a".into()],
            label_col: None,
            holdout_days: 30,
            epochs: None,
            out: None,
            json: false,
            seed: 1,
        };
        assert!(matches!(
            ColumnSpec::from_args(&args),
            Err(CsvError::Usage(_))
        ));
    }

    #[test]
    fn the_json_summary_has_candidates_champion_forecast_and_files() {
        let dir = temp_dir("json");
        let csv_path = dir.join("meter.csv");
        fs::write(&csv_path, generated_csv(240)).unwrap();
        let out = dir.join("out");
        let args = TrainArgs {
            csv: csv_path,
            date_col: "day".into(),
            value_col: "kwh".into(),
            model: ModelType::EnergyForecast,
            feature_cols: Vec::new(),
            label_col: None,
            holdout_days: 30,
            epochs: Some(2),
            out: Some(out.clone()),
            json: true,
            seed: 7,
        };
        let mut epochs = 0;
        let summary = run_train(&args, &mut |_| epochs += 1).unwrap();
        assert_eq!(epochs, 2, "one report per LSTM epoch");
        let doc: serde_json::Value = serde_json::to_value(&summary).unwrap();

        let candidates = doc["candidates"].as_array().unwrap();
        let names: Vec<&str> = candidates
            .iter()
            .map(|c| c["algorithm"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["lstm", "seasonal_regression", "seasonal_naive"]);
        for c in candidates {
            for k in ["mae", "rmse", "r2", "mape", "accuracy", "mase"] {
                assert!(c["metrics"][k].is_number(), "{k} of {c}");
            }
        }
        let champions = candidates.iter().filter(|c| c["champion"] == true).count();
        assert_eq!(champions, 1);
        assert!(names.contains(&doc["champion"].as_str().unwrap()));
        assert_eq!(doc["forecast"].as_array().unwrap().len(), 30);
        assert!(doc["forecast"][0]["date"].is_string() && doc["forecast"][0]["value"].is_number());
        assert_eq!(doc["holdout_prediction"].as_array().unwrap().len(), 30);
        assert_eq!(doc["out_dir"].as_str().unwrap(), out.to_str().unwrap());
        assert_eq!(doc["data"]["rejected"]["nan"], 2);
        assert_eq!(doc["csv_report"]["unparseable"][0][1], 2);

        // The holdout metrics of the champion are what the table prints.
        let table = render_table(&summary);
        assert!(
            table.contains(&format!("{} ★", summary.champion)),
            "{table}"
        );

        for f in ["model.tyd", "forecast.csv", "metrics.json", "plot.png"] {
            let len = fs::metadata(out.join(f)).map(|m| m.len()).unwrap_or(0);
            assert!(len > 0, "{f} missing or empty");
        }
        let forecast = fs::read_to_string(out.join("forecast.csv")).unwrap();
        assert_eq!(forecast.lines().next(), Some("date,value"));
        assert_eq!(forecast.lines().count(), 31);
        let written: serde_json::Value =
            serde_json::from_slice(&fs::read(out.join("metrics.json")).unwrap()).unwrap();
        assert_eq!(written["champion"], doc["champion"]);
        let _ = fs::remove_dir_all(&dir);
    }
}
