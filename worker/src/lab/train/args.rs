//! The `train` subcommand's arguments, and their validation into the
//! [`ColumnSpec`] the CSV reader follows.

use std::path::PathBuf;

use clap::Args;
use trainyard_shared::ModelType;

use super::csv_input::{ColumnSpec, CsvError};

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
  anomalies.csv   row,date,value,score,threshold,is_anomaly,kind[,label] (anomaly_detection)
  metrics.json    the same document --json prints
  plot.png        history, holdout actuals, champion holdout prediction, forecast";

/// Train every candidate on a CSV and keep the champion (no services needed).
///
/// The CSV needs a header row. Dates are ISO (`2024-01-31`; a time after the
/// date is ignored). Rows of the same date are summed for forecasts. Empty or
/// non-numeric values are not fatal: they are counted and reported, and the
/// pipeline's data rules apply (short gaps interpolated, a long gap cuts the
/// older history). The minimum history is 180 days *with data*: days that
/// have at least one usable row (interpolated days and the calendar span do
/// not count). For anomaly_detection, rejected rows (negative, missing,
/// absurd) are flagged with their reason, not dropped silently.
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

    /// Candidates not to train (comma-separated, e.g. `lstm` or `autoencoder`).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "ALGS",
        conflicts_with = "only"
    )]
    pub exclude: Vec<String>,

    /// Train only these candidates (comma-separated, e.g. `pca`).
    #[arg(long, value_delimiter = ',', value_name = "ALGS")]
    pub only: Vec<String>,
}

impl TrainArgs {
    /// The algorithms `--exclude`/`--only` leave out, checked against the
    /// model type's candidates.
    pub fn excluded(&self) -> Result<Vec<String>, CsvError> {
        let all = crate::training::pipeline::algorithms(self.model);
        for a in self.exclude.iter().chain(&self.only) {
            if !all.contains(&a.as_str()) {
                return Err(CsvError::Usage(format!(
                    "unknown candidate `{a}` for {}; candidates: {}",
                    self.model,
                    all.join(", ")
                )));
            }
        }
        let excluded: Vec<String> = all
            .iter()
            .filter(|a| {
                self.exclude.iter().any(|e| e == *a)
                    || (!self.only.is_empty() && !self.only.iter().any(|o| o == *a))
            })
            .map(|a| a.to_string())
            .collect();
        if excluded.len() == all.len() {
            return Err(CsvError::Usage(
                "--exclude/--only leave no candidate to train".into(),
            ));
        }
        Ok(excluded)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
            exclude: Vec::new(),
            only: Vec::new(),
        };
        assert!(matches!(
            ColumnSpec::from_args(&args),
            Err(CsvError::Usage(_))
        ));
    }

    #[test]
    fn only_and_exclude_choose_candidates_and_refuse_unknown_ones() {
        let mut args = TrainArgs {
            csv: "x.csv".into(),
            date_col: "day".into(),
            value_col: "kwh".into(),
            model: ModelType::AnomalyDetection,
            feature_cols: Vec::new(),
            label_col: None,
            holdout_days: 30,
            epochs: None,
            out: None,
            json: false,
            seed: 1,
            exclude: Vec::new(),
            only: vec!["pca".into()],
        };
        assert_eq!(args.excluded().unwrap(), ["autoencoder"]);
        args.only = Vec::new();
        args.exclude = vec!["pca".into()];
        assert_eq!(args.excluded().unwrap(), ["pca"]);
        args.exclude = vec!["lstm".into()];
        assert!(args.excluded().is_err());
        args.exclude = vec!["pca".into(), "autoencoder".into()];
        assert!(args.excluded().is_err());
    }
}
