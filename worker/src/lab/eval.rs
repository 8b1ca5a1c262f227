//! `trainyard-worker eval`: the honest evaluation on real data. Every real
//! series of the shared data folder is cut at several origins (rolling
//! origin); each fold trains the whole pipeline on the history up to its
//! origin and scores every candidate on the 30 days after it, exactly as a
//! monthly run would. The origins are those of `reference_baselines.csv`
//! (so statsforecast's and Prophet's published scores on the same windows
//! can be compared), or the last three 30-day windows of a series without
//! reference figures.
//!
//! A benchmark, not a test: it reads `../shared/data`, which CI and a user's
//! clone do not have.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use chrono::{Duration, NaiveDate};
use clap::Args;
use serde::Serialize;
use trainyard_shared::ModelType;

use crate::training::{apply_epoch_overrides, train_model, RawRow, TrainRequest, TrainSettings};

use super::train::parse_date;

const HOLDOUT_DAYS: usize = 30;

/// Evaluate every candidate on the real series of the shared data folder
/// with rolling-origin folds (30 days after each origin held out).
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Example (from the repository root; about a minute per fold with the default 50 LSTM epochs):
  trainyard-worker eval --data ../shared/data --epochs 10

Series: gen_<CC> (generation_mwh, energy_forecast) and co2e_<CC> (co2e_t,
emissions_forecast) for DE, ES, FR, GB, IT from entsoe_daily_dev.csv;
uci_household_kwh (kwh_total, energy_forecast) from uci_household_power_daily.csv.")]
pub struct EvalArgs {
    /// The shared data folder (entsoe_daily_dev.csv, uci_household_power_daily.csv,
    /// reference_baselines.csv).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,

    /// LSTM epochs (default: the production 50).
    #[arg(long)]
    pub epochs: Option<usize>,

    /// Only these series (comma-separated ids, e.g. gen_DE,uci_household_kwh).
    #[arg(long, value_delimiter = ',')]
    pub series: Vec<String>,

    /// Folds per series when the reference file has no origins for it.
    #[arg(long, default_value_t = 3)]
    pub folds: usize,

    /// Print one JSON document on stdout instead of the tables.
    #[arg(long)]
    pub json: bool,

    /// Seed of the neural models.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// One real series, as daily rows for its model type.
#[derive(Debug, Clone)]
pub struct Series {
    pub id: String,
    pub model_type: ModelType,
    pub rows: Vec<RawRow>,
}

/// A published baseline score (statsforecast / Prophet) on one window.
#[derive(Debug, Clone, Serialize)]
pub struct Reference {
    pub series: String,
    pub cutoff: NaiveDate,
    pub model: String,
    pub mape: f64,
    pub mase: f64,
}

/// One candidate's holdout scores in one fold.
#[derive(Debug, Clone, Serialize)]
pub struct CandidateScore {
    pub algorithm: String,
    pub mae: f64,
    pub mape: Option<f64>,
    pub mase: Option<f64>,
}

/// One fold: trained on the days up to `cutoff`, scored on the 30 after.
#[derive(Debug, Clone, Serialize)]
pub struct Fold {
    pub series: String,
    pub cutoff: NaiveDate,
    pub champion: String,
    pub candidates: Vec<CandidateScore>,
    pub seconds: f64,
}

impl Fold {
    fn score(&self, algorithm: &str) -> Option<&CandidateScore> {
        self.candidates.iter().find(|c| c.algorithm == algorithm)
    }

    fn champion_score(&self) -> &CandidateScore {
        self.score(&self.champion)
            .expect("the champion is a candidate")
    }

    /// Whether the champion's holdout MAE is strictly below seasonal naive's.
    fn champion_beats_naive(&self) -> Option<bool> {
        self.score("seasonal_naive")
            .map(|n| self.champion_score().mae < n.mae)
    }
}

/// Medians of one model over a set of folds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub model: String,
    pub folds: usize,
    pub median_mape: Option<f64>,
    pub median_mase: Option<f64>,
}

/// The champion against seasonal naive, and against the best published
/// baseline, over a set of folds.
#[derive(Debug, Clone, Serialize)]
pub struct Wins {
    pub folds: usize,
    pub champion_beats_seasonal_naive: usize,
    /// Folds whose champion was seasonal naive itself (a tie, not a win).
    pub champion_is_seasonal_naive: usize,
    pub champion_beats_prophet: Option<usize>,
    pub champion_counts: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub name: String,
    pub ours: Vec<Summary>,
    pub reference: Vec<Summary>,
    pub wins: Wins,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub data: PathBuf,
    pub lstm_epochs: usize,
    pub holdout_days: usize,
    pub sections: Vec<Section>,
    pub folds: Vec<Fold>,
    /// Largest |our seasonal naive MAPE − statsforecast's SeasonalNaive MAPE|
    /// over the shared windows: near 0 means the windows line up.
    pub seasonal_naive_check: Option<f64>,
    pub seconds: f64,
}

/// Reads the real series from the shared data folder.
pub fn load_series(dir: &Path) -> anyhow::Result<Vec<Series>> {
    let mut out = Vec::new();
    let entsoe = dir.join("entsoe_daily_dev.csv");
    let mut by_country: BTreeMap<String, Vec<(NaiveDate, f64, f64)>> = BTreeMap::new();
    let mut r =
        csv::Reader::from_path(&entsoe).with_context(|| format!("reading {}", entsoe.display()))?;
    for rec in r.deserialize::<BTreeMap<String, String>>() {
        let rec = rec.with_context(|| format!("parsing {}", entsoe.display()))?;
        let get = |k: &str| rec.get(k).map(String::as_str).unwrap_or("");
        let date = parse_date(get("date"))
            .with_context(|| format!("bad date `{}` in {}", get("date"), entsoe.display()))?;
        let num = |k: &str| get(k).trim().parse::<f64>().unwrap_or(f64::NAN);
        by_country
            .entry(get("country").to_string())
            .or_default()
            .push((date, num("generation_mwh"), num("co2e_t")));
    }
    for (cc, rows) in &by_country {
        let mk = |kind: ModelType, f: &dyn Fn(&(NaiveDate, f64, f64)) -> f64| {
            rows.iter()
                .map(|r| daily_row(kind, r.0, f(r)))
                .collect::<Vec<_>>()
        };
        out.push(Series {
            id: format!("gen_{cc}"),
            model_type: ModelType::EnergyForecast,
            rows: mk(ModelType::EnergyForecast, &|r| r.1),
        });
        out.push(Series {
            id: format!("co2e_{cc}"),
            model_type: ModelType::EmissionsForecast,
            rows: mk(ModelType::EmissionsForecast, &|r| r.2),
        });
    }
    let uci = dir.join("uci_household_power_daily.csv");
    let mut r =
        csv::Reader::from_path(&uci).with_context(|| format!("reading {}", uci.display()))?;
    let mut rows = Vec::new();
    for rec in r.deserialize::<BTreeMap<String, String>>() {
        let rec = rec.with_context(|| format!("parsing {}", uci.display()))?;
        let get = |k: &str| rec.get(k).map(String::as_str).unwrap_or("");
        let date = parse_date(get("date"))
            .with_context(|| format!("bad date `{}` in {}", get("date"), uci.display()))?;
        let kwh = get("kwh_total").trim().parse::<f64>().unwrap_or(f64::NAN);
        rows.push(daily_row(ModelType::EnergyForecast, date, kwh));
    }
    out.push(Series {
        id: "uci_household_kwh".into(),
        model_type: ModelType::EnergyForecast,
        rows,
    });
    Ok(out)
}

fn daily_row(kind: ModelType, date: NaiveDate, x: f64) -> RawRow {
    let emissions = kind == ModelType::EmissionsForecast;
    RawRow {
        id: None,
        date,
        value: if emissions { f64::NAN } else { x },
        co2e_kg: if emissions { x } else { f64::NAN },
        grid_factor: f64::NAN,
        fingerprint: 0,
    }
}

/// Reads `reference_baselines.csv` (absent file: no references).
pub fn load_references(dir: &Path) -> anyhow::Result<Vec<Reference>> {
    let path = dir.join("reference_baselines.csv");
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut r =
        csv::Reader::from_path(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for rec in r.deserialize::<BTreeMap<String, String>>() {
        let rec = rec.with_context(|| format!("parsing {}", path.display()))?;
        let get = |k: &str| rec.get(k).map(String::as_str).unwrap_or("");
        let num = |k: &str| get(k).trim().parse::<f64>().unwrap_or(f64::NAN);
        out.push(Reference {
            series: get("series").to_string(),
            cutoff: parse_date(get("cutoff"))
                .with_context(|| format!("bad cutoff `{}` in {}", get("cutoff"), path.display()))?,
            model: get("model").to_string(),
            mape: num("MAPE%"),
            mase: num("MASE"),
        });
    }
    Ok(out)
}

/// The fold origins of a series: the reference cut-offs, or the last
/// `folds` 30-day windows. The origin is the last training day (as in
/// statsforecast's cross-validation), the holdout the 30 days after it.
fn origins(series: &Series, references: &[Reference], folds: usize) -> Vec<NaiveDate> {
    let mut cut: Vec<NaiveDate> = references
        .iter()
        .filter(|r| r.series == series.id)
        .map(|r| r.cutoff)
        .collect();
    cut.sort();
    cut.dedup();
    if cut.is_empty() {
        if let Some(last) = series.rows.iter().map(|r| r.date).max() {
            cut = (1..=folds)
                .rev()
                .map(|k| last - Duration::days((k * HOLDOUT_DAYS) as i64))
                .collect();
        }
    }
    cut
}

/// Trains and scores one fold.
pub fn run_fold(
    series: &Series,
    cutoff: NaiveDate,
    settings: &TrainSettings,
    seed: u64,
) -> anyhow::Result<Fold> {
    let end = cutoff + Duration::days(HOLDOUT_DAYS as i64);
    let rows: Vec<RawRow> = series
        .rows
        .iter()
        .filter(|r| r.date <= end)
        .copied()
        .collect();
    let req = TrainRequest {
        model_type: series.model_type,
        rows,
        settings: settings.clone(),
        seed,
    };
    let t0 = Instant::now();
    let outcome =
        train_model(&req, &mut |_| {}).with_context(|| format!("{} at {cutoff}", series.id))?;
    anyhow::ensure!(
        outcome.data.holdout.start == cutoff + Duration::days(1),
        "{} at {cutoff}: the holdout starts on {}, not the day after the origin (missing days at the end?)",
        series.id,
        outcome.data.holdout.start
    );
    Ok(Fold {
        series: series.id.clone(),
        cutoff,
        champion: outcome.champion().algorithm.clone(),
        candidates: outcome
            .candidates
            .iter()
            .map(|c| CandidateScore {
                algorithm: c.algorithm.clone(),
                mae: c.metrics.mae,
                mape: c.metrics.mape,
                mase: c.metrics.mase,
            })
            .collect(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

pub fn median(mut xs: Vec<f64>) -> Option<f64> {
    xs.retain(|x| x.is_finite());
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    Some(if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    })
}

fn summarize(name: &str, folds: &[&Fold], references: &[Reference]) -> Section {
    let mut algorithms: Vec<String> = Vec::new();
    for f in folds {
        for c in &f.candidates {
            if !algorithms.contains(&c.algorithm) {
                algorithms.push(c.algorithm.clone());
            }
        }
    }
    let summary = |model: &str, scores: Vec<&CandidateScore>| Summary {
        model: model.to_string(),
        folds: scores.len(),
        median_mape: median(scores.iter().filter_map(|s| s.mape).collect()),
        median_mase: median(scores.iter().filter_map(|s| s.mase).collect()),
    };
    let mut ours: Vec<Summary> = algorithms
        .iter()
        .map(|a| summary(a, folds.iter().filter_map(|f| f.score(a)).collect()))
        .collect();
    ours.push(summary(
        "champion",
        folds.iter().map(|f| f.champion_score()).collect(),
    ));

    // References on the same windows only.
    let same: Vec<&Reference> = references
        .iter()
        .filter(|r| {
            folds
                .iter()
                .any(|f| f.series == r.series && f.cutoff == r.cutoff)
        })
        .collect();
    let mut models: Vec<String> = Vec::new();
    for r in &same {
        if !models.contains(&r.model) {
            models.push(r.model.clone());
        }
    }
    let mut reference: Vec<Summary> = models
        .iter()
        .map(|m| {
            let rs: Vec<&&Reference> = same.iter().filter(|r| r.model == *m).collect();
            Summary {
                model: m.clone(),
                folds: rs.len(),
                median_mape: median(rs.iter().map(|r| r.mape).collect()),
                median_mase: median(rs.iter().map(|r| r.mase).collect()),
            }
        })
        .collect();
    // Best of the published models per window, chosen after the fact (an
    // oracle, so a bound rather than a competitor).
    let mut best: BTreeMap<(String, NaiveDate), (f64, f64)> = BTreeMap::new();
    for r in &same {
        let e = best
            .entry((r.series.clone(), r.cutoff))
            .or_insert((f64::INFINITY, f64::INFINITY));
        if r.mape < e.0 {
            *e = (r.mape, r.mase);
        }
    }
    if !best.is_empty() {
        reference.push(Summary {
            model: "best of the above per window (oracle)".into(),
            folds: best.len(),
            median_mape: median(best.values().map(|b| b.0).collect()),
            median_mase: median(best.values().map(|b| b.1).collect()),
        });
    }

    let prophet: Vec<(f64, f64)> = folds
        .iter()
        .filter_map(|f| {
            let p = same
                .iter()
                .find(|r| r.model == "Prophet" && r.series == f.series && r.cutoff == f.cutoff)?;
            Some((f.champion_score().mape?, p.mape))
        })
        .collect();
    let mut champion_counts = BTreeMap::new();
    for f in folds {
        *champion_counts.entry(f.champion.clone()).or_insert(0) += 1;
    }
    Section {
        name: name.to_string(),
        ours,
        reference,
        wins: Wins {
            folds: folds.len(),
            champion_beats_seasonal_naive: folds
                .iter()
                .filter(|f| f.champion_beats_naive() == Some(true))
                .count(),
            champion_is_seasonal_naive: folds
                .iter()
                .filter(|f| f.champion == "seasonal_naive")
                .count(),
            champion_beats_prophet: (!prophet.is_empty())
                .then(|| prophet.iter().filter(|(c, p)| c < p).count()),
            champion_counts,
        },
    }
}

/// Runs every fold of every series and summarizes per series and overall.
pub fn run_eval(args: &EvalArgs) -> anyhow::Result<EvalReport> {
    let t0 = Instant::now();
    let mut series = load_series(&args.data)?;
    if !args.series.is_empty() {
        for s in &args.series {
            anyhow::ensure!(
                series.iter().any(|x| x.id == *s),
                "unknown series `{s}`; known: {}",
                series
                    .iter()
                    .map(|x| x.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        series.retain(|s| args.series.contains(&s.id));
    }
    let references = load_references(&args.data)?;
    let mut settings = TrainSettings {
        holdout_days: HOLDOUT_DAYS,
        ..TrainSettings::default()
    };
    apply_epoch_overrides(&mut settings, args.epochs, None);

    let plan: Vec<(&Series, NaiveDate)> = series
        .iter()
        .flat_map(|s| {
            origins(s, &references, args.folds)
                .into_iter()
                .map(move |c| (s, c))
        })
        .collect();
    let mut folds = Vec::new();
    for (i, (s, cutoff)) in plan.iter().enumerate() {
        let fold = run_fold(s, *cutoff, &settings, args.seed)?;
        let fmt = |c: &CandidateScore| {
            format!(
                "{} {}",
                c.algorithm,
                c.mape
                    .map(|m| format!("{m:.1}%"))
                    .unwrap_or_else(|| "—".into())
            )
        };
        eprintln!(
            "[{}/{}] {} origin {}: champion {} | {} | {:.1} s",
            i + 1,
            plan.len(),
            s.id,
            cutoff,
            fold.champion,
            fold.candidates
                .iter()
                .map(fmt)
                .collect::<Vec<_>>()
                .join(", "),
            fold.seconds
        );
        folds.push(fold);
    }

    let mut sections = Vec::new();
    for s in &series {
        let fs: Vec<&Fold> = folds.iter().filter(|f| f.series == s.id).collect();
        sections.push(summarize(&s.id, &fs, &references));
    }
    sections.push(summarize(
        "all series",
        &folds.iter().collect::<Vec<_>>(),
        &references,
    ));

    let seasonal_naive_check = folds
        .iter()
        .filter_map(|f| {
            let ours = f.score("seasonal_naive")?.mape?;
            let theirs = references.iter().find(|r| {
                r.model == "SeasonalNaive" && r.series == f.series && r.cutoff == f.cutoff
            })?;
            Some((ours - theirs.mape).abs())
        })
        .reduce(f64::max);

    Ok(EvalReport {
        data: args.data.clone(),
        lstm_epochs: settings.lstm.epochs,
        holdout_days: HOLDOUT_DAYS,
        sections,
        folds,
        seasonal_naive_check,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

fn fmt_opt(x: Option<f64>, digits: usize) -> String {
    x.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "—".into())
}

/// The human-readable report.
pub fn render(report: &EvalReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "rolling-origin evaluation: {} folds, {}-day holdout after each origin, LSTM {} epochs, {:.0} s",
        report.folds.len(),
        report.holdout_days,
        report.lstm_epochs,
        report.seconds
    );
    if let Some(d) = report.seasonal_naive_check {
        let _ = writeln!(
            out,
            "window check: our seasonal naive vs statsforecast SeasonalNaive MAPE, largest difference {d:.3} points"
        );
    }
    for s in &report.sections {
        let _ = writeln!(out, "\n== {} ({} folds)", s.name, s.wins.folds);
        let _ = writeln!(
            out,
            "  {:<40} {:>6} {:>12} {:>12}",
            "model", "folds", "median MAPE", "median MASE"
        );
        for m in &s.ours {
            let _ = writeln!(
                out,
                "  {:<40} {:>6} {:>11}% {:>12}",
                m.model,
                m.folds,
                fmt_opt(m.median_mape, 1),
                fmt_opt(m.median_mase, 3)
            );
        }
        for m in &s.reference {
            let _ = writeln!(
                out,
                "  {:<40} {:>6} {:>11}% {:>12}",
                format!("ref: {}", m.model),
                m.folds,
                fmt_opt(m.median_mape, 1),
                fmt_opt(m.median_mase, 3)
            );
        }
        let w = &s.wins;
        let _ = write!(
            out,
            "  champion beats seasonal naive (holdout MAE) in {}/{} folds (seasonal naive was the champion in {})",
            w.champion_beats_seasonal_naive, w.folds, w.champion_is_seasonal_naive
        );
        if let Some(p) = w.champion_beats_prophet {
            let _ = write!(out, "; beats Prophet's MAPE in {p}/{}", w.folds);
        }
        let counts: Vec<String> = w
            .champion_counts
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(out, "\n  champions: {}", counts.join(", "));
    }
    out
}

/// The `eval` subcommand.
pub fn execute(args: EvalArgs) -> anyhow::Result<i32> {
    let report = run_eval(&args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(vec![f64::NAN]), None);
    }
}
