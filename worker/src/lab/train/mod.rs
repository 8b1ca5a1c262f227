//! `trainyard-worker train`: the whole pipeline on a CSV, with no Redis and
//! no PostgreSQL. Reads the file once at the edge (typed rows, clear errors
//! naming the column), runs [`train_model`], prints every candidate's holdout
//! metrics and writes the champion, its forecast or anomaly flags, the
//! metrics and a plot into one output directory.
//!
//! By concern: `args` (the flags and their validation), `csv_input` (reading
//! the CSV into typed rows) and `report` (the summary, the metrics table and
//! the output files); this module runs them in order.

mod args;
mod csv_input;
mod report;

use std::fs;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::training::{
    apply_epoch_overrides, holdout_forecast, predict, train_model, EpochReport, TrainRequest,
    TrainSettings,
};

use super::plot;
pub use args::TrainArgs;
pub use csv_input::{parse_date, read_rows, ColumnSpec, CsvError};
use report::{default_out_dir, plot_data, score_labels, write_anomalies_csv, write_forecast_csv};
pub use report::{render_table, CandidateSummary, OutputFiles, TrainSummary};

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
    settings.exclude = args.excluded()?;
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
        holdout_forecast(&outcome.champion().artifact, &req, false)
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
    // Every anomaly candidate's own flags, beside the champion's.
    let mut candidate_flags = Vec::new();
    if !args.model.is_forecast() {
        for c in &outcome.candidates {
            let (_, flags) = predict(&c.artifact, &req)
                .with_context(|| format!("scoring the rows with {}", c.algorithm))?;
            let p = out_dir.join(format!("anomalies-{}.csv", c.algorithm));
            write_anomalies_csv(&p, &flags, &csv.rows, csv.labels.as_deref())?;
            candidate_flags.push(Some(flags.iter().filter(|f| f.is_anomaly).count()));
        }
    }

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
                flagged: candidate_flags.get(i).copied().flatten(),
            })
            .collect(),
        skipped: outcome.skipped.clone(),
        champion: outcome.champion().algorithm.clone(),
        holdout_prediction,
        forecast: outcome.forecast.clone(),
        anomalies_flagged: (!args.model.is_forecast())
            .then(|| outcome.anomalies.iter().filter(|a| a.is_anomaly).count()),
        flags_by_kind: (!args.model.is_forecast()).then(|| {
            let mut by = std::collections::BTreeMap::new();
            for k in outcome.anomalies.iter().filter_map(|a| a.kind) {
                *by.entry(k.as_str().to_string()).or_insert(0) += 1;
            }
            by
        }),
        notes: outcome.notes.clone(),
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
    let summary = match result {
        Ok(s) => s,
        Err(e) if args.json => {
            // One JSON document on stdout even when training fails.
            println!("{}", serde_json::to_string_pretty(&error_document(&e))?);
            return Ok(1);
        }
        Err(e) => return Err(e),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", render_table(&summary));
    }
    Ok(0)
}

/// The `--json` document of a failed run: `{"error": {"message", "causes"}}`.
pub fn error_document(e: &anyhow::Error) -> serde_json::Value {
    serde_json::json!({
        "error": {
            "message": format!("{e:#}"),
            "causes": e.chain().map(|c| c.to_string()).collect::<Vec<_>>(),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use chrono::{NaiveDate, Utc};
    use trainyard_shared::ModelType;

    use super::csv_input::tests::spec;
    use super::*;

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
            exclude: Vec::new(),
            only: Vec::new(),
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
    fn a_failed_run_gives_one_json_error_document() {
        let dir = temp_dir("json-error");
        let csv_path = dir.join("short.csv");
        fs::write(&csv_path, generated_csv(40)).unwrap();
        let args = TrainArgs {
            csv: csv_path,
            date_col: "day".into(),
            value_col: "kwh".into(),
            model: ModelType::AnomalyDetection,
            feature_cols: Vec::new(),
            label_col: None,
            holdout_days: 30,
            epochs: Some(1),
            out: Some(dir.join("out")),
            json: true,
            seed: 1,
            exclude: Vec::new(),
            only: Vec::new(),
        };
        let err = run_train(&args, &mut |_| {}).unwrap_err();
        let doc = error_document(&err);
        let text = serde_json::to_string(&doc).unwrap();
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        let message = back["error"]["message"].as_str().unwrap();
        assert!(message.contains("insufficient data"), "{message}");
        assert!(back["error"]["causes"].as_array().unwrap().len() >= 2);
        let _ = fs::remove_dir_all(&dir);
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
            exclude: Vec::new(),
            only: Vec::new(),
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
        assert_eq!(
            names,
            [
                "lstm_hybrid",
                "seasonal_regression",
                "mstl",
                "stl_ets",
                "seasonal_naive",
                "combination"
            ]
        );
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
        assert_eq!(
            forecast.lines().next(),
            Some("date,value,lower_80,upper_80,lower_95,upper_95")
        );
        assert_eq!(forecast.lines().count(), 31);
        let written: serde_json::Value =
            serde_json::from_slice(&fs::read(out.join("metrics.json")).unwrap()).unwrap();
        assert_eq!(written["champion"], doc["champion"]);
        let _ = fs::remove_dir_all(&dir);
    }
}
