//! `trainyard-worker eval`: the honest evaluation on real data. Every real
//! series of the shared data folder is cut at many origins (rolling
//! origin); each fold trains the whole pipeline on the history up to its
//! origin and scores every candidate on the 30 days after it, exactly as a
//! monthly run would.
//!
//! The default schedule (`--origins monthly`) puts an origin at every month
//! start from 2018-07 to 2020-12 for the ENTSO-E series and at every month
//! start of the household's range that leaves 180 days of history and a
//! whole holdout: 340 folds, so a method chosen on them cannot be tuned to
//! a handful of windows by accident. The cut-offs of
//! `reference_baselines.csv` are month starts too, so the same run also
//! reports those 44 folds beside statsforecast's and Prophet's published
//! scores. `--origins reference` runs those 44 folds only.
//!
//! A benchmark, not a test: it reads `../shared/data`, which CI and a user's
//! clone do not have.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use chrono::{Datelike, Duration, NaiveDate};
use clap::Args;
use serde::Serialize;
use trainyard_shared::{DataColumn, ModelType};

use crate::training::{
    apply_epoch_overrides, holdout_forecast, intervals, train_model, RawRow, TrainRequest,
    TrainSettings,
};

use super::train::parse_date;

const HOLDOUT_DAYS: usize = 30;

/// First and last monthly origin of the ENTSO-E series.
const ENTSOE_FIRST_ORIGIN: (i32, u32) = (2018, 7);
const ENTSOE_LAST_ORIGIN: (i32, u32) = (2020, 12);

/// Which cut-offs the folds use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origins {
    /// A cut-off at every month start (the broad evaluation).
    Monthly,
    /// The cut-offs of reference_baselines.csv only (44 folds).
    Reference,
}

/// Evaluate every candidate on the real series of the shared data folder
/// with rolling-origin folds (30 days after each origin held out).
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Examples (from the repository root):
  trainyard-worker eval --data ../shared/data                 # 340 monthly folds, production settings
  trainyard-worker eval --data ../shared/data --quick         # every third month (158 folds)
  trainyard-worker eval --data ../shared/data --origins reference   # the 44 reference folds

Series: gen_<CC> (generation_mwh, energy_forecast) and co2e_<CC> (co2e_t,
emissions_forecast) for DE, ES, FR, GB, IT from entsoe_daily_dev.csv;
uci_household_kwh (kwh_total, energy_forecast) from uci_household_power_daily.csv.")]
pub struct EvalArgs {
    /// The shared data folder (entsoe_daily_dev.csv, uci_household_power_daily.csv,
    /// reference_baselines.csv).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,

    /// LSTM epochs (default: the production 50). Fewer epochs change the
    /// ranking (the hybrid's LSTM needs its epochs), so compare settings at
    /// the production value.
    #[arg(long)]
    pub epochs: Option<usize>,

    /// Fold origins: a month start every month (the broad evaluation) or
    /// the reference cut-offs only.
    #[arg(long, value_enum, default_value_t = Origins::Monthly)]
    pub origins: Origins,

    /// For iteration: every third monthly origin (the reference cut-offs
    /// always included), at the production settings.
    #[arg(long)]
    pub quick: bool,

    /// Only these series (comma-separated ids, e.g. gen_DE,uci_household_kwh).
    #[arg(long, value_delimiter = ',')]
    pub series: Vec<String>,

    /// With --origins reference: folds per series when the reference file
    /// has no origins for it (the last 30-day windows).
    #[arg(long, default_value_t = 3)]
    pub folds: usize,

    /// Candidates not to train (e.g. `lstm`, or `mstl,stl_ets,combination`
    /// for the build before those existed).
    #[arg(long, value_delimiter = ',')]
    pub exclude: Vec<String>,

    /// Members of the combination candidate (default: the production
    /// setting); for choosing the setting on this evaluation.
    #[arg(long)]
    pub combination_k: Option<usize>,

    /// Rule of the combination candidate: inverse_mae, mean or median.
    #[arg(long)]
    pub combination_rule: Option<String>,

    /// Algorithms scored beside the candidates but never champion nor
    /// combination members (default: the seed LSTM alone, `lstm`, so its
    /// figures stand beside the hybrid's; `--shadow ''` for none).
    #[arg(long, value_delimiter = ',', default_value = "lstm")]
    pub shadow: Vec<String>,

    /// How the champion is named: combination (the production rule) or
    /// validation (the lowest validation MAE, the rule before it).
    #[arg(long)]
    pub champion_rule: Option<String>,

    /// Print one JSON document on stdout instead of the tables.
    #[arg(long)]
    pub json: bool,

    /// Seed of the neural models.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Folds trained at once, one thread each (default: one per core).
    #[arg(long)]
    pub jobs: Option<usize>,
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
    /// Validation MAE (what the champion was chosen on).
    pub validation_mae: f64,
    pub mae: f64,
    pub mape: Option<f64>,
    pub mase: Option<f64>,
    /// The forecasts behind `validation_mae` and the holdout scores, so a
    /// selection or combination rule can be studied offline on the same
    /// folds.
    pub validation_forecast: Vec<f64>,
    pub holdout_forecast: Vec<f64>,
}

/// One fold: trained on the days up to `cutoff`, scored on the 30 after.
#[derive(Debug, Clone, Serialize)]
pub struct Fold {
    pub series: String,
    pub cutoff: NaiveDate,
    pub champion: String,
    pub candidates: Vec<CandidateScore>,
    /// Share of the holdout days inside the champion's 80 % and 95 %
    /// intervals (absent when no interval could be calibrated).
    pub coverage_80: Option<f64>,
    pub coverage_95: Option<f64>,
    /// The 30 days before and after the origin, as read (absent days null).
    pub validation_actual: Vec<Option<f64>>,
    pub holdout_actual: Vec<Option<f64>>,
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
    /// Champion's median MAPE over seasonal naive's (the target is ≤ 0.80).
    pub champion_to_naive_mape: Option<f64>,
    /// Share of all holdout days inside the champion's 80 % / 95 % interval.
    pub coverage_80: Option<f64>,
    pub coverage_95: Option<f64>,
    pub ours: Vec<Summary>,
    pub reference: Vec<Summary>,
    pub wins: Wins,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub data: PathBuf,
    pub origins: Origins,
    pub quick: bool,
    pub lstm_epochs: usize,
    pub holdout_days: usize,
    pub sections: Vec<Section>,
    pub folds: Vec<Fold>,
    /// Largest |our seasonal naive MAPE − statsforecast's SeasonalNaive MAPE|
    /// over the shared windows: near 0 means the windows line up.
    pub seasonal_naive_check: Option<f64>,
    /// Folds that could not be trained (series id, origin and why).
    pub failed: Vec<String>,
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
    let emissions = kind.reads() == DataColumn::Co2eKg;
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

/// The reference cut-offs of a series, or (none published) the last
/// `folds` 30-day windows. The origin is the last training day (as in
/// statsforecast's cross-validation), the holdout the 30 days after it.
fn reference_origins(series: &Series, references: &[Reference], folds: usize) -> Vec<NaiveDate> {
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

/// Month starts from `first` to `last` (both month starts), inclusive.
fn month_starts(first: NaiveDate, last: NaiveDate) -> Vec<NaiveDate> {
    let mut out = Vec::new();
    let mut d = first;
    while d <= last {
        out.push(d);
        d = d
            .checked_add_months(chrono::Months::new(1))
            .expect("dates stay in range");
    }
    out
}

/// The first month start on or after `d`.
fn next_month_start(d: NaiveDate) -> NaiveDate {
    let start = d.with_day(1).expect("day 1 exists");
    if start == d {
        d
    } else {
        start
            .checked_add_months(chrono::Months::new(1))
            .expect("dates stay in range")
    }
}

/// The monthly origins of a series: ENTSO-E 2018-07 … 2020-12; any other
/// series every month start that leaves `min_days` of history before it
/// and a whole holdout after it. With `quick`, every third one (counted
/// from the first), plus the reference cut-offs.
fn monthly_origins(
    series: &Series,
    references: &[Reference],
    min_days: usize,
    quick: bool,
) -> Vec<NaiveDate> {
    let (Some(first), Some(last)) = (
        series.rows.iter().map(|r| r.date).min(),
        series.rows.iter().map(|r| r.date).max(),
    ) else {
        return Vec::new();
    };
    let ym = |(y, m): (i32, u32)| NaiveDate::from_ymd_opt(y, m, 1).expect("a valid month");
    let (lo, hi) = if series.id.starts_with("gen_") || series.id.starts_with("co2e_") {
        (ym(ENTSOE_FIRST_ORIGIN), ym(ENTSOE_LAST_ORIGIN))
    } else {
        let lo = next_month_start(first + Duration::days(min_days as i64));
        let end = last - Duration::days(HOLDOUT_DAYS as i64);
        (lo, end.with_day(1).expect("day 1 exists"))
    };
    let lo = lo.max(next_month_start(first + Duration::days(min_days as i64)));
    let all = month_starts(lo, hi)
        .into_iter()
        .filter(|d| *d + Duration::days(HOLDOUT_DAYS as i64) <= last);
    let mut cut: Vec<NaiveDate> = if quick {
        let refs = reference_origins(series, references, 0);
        all.enumerate()
            .filter(|(i, d)| i % 3 == 0 || refs.contains(d))
            .map(|(_, d)| d)
            .collect()
    } else {
        all.collect()
    };
    cut.dedup();
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
    let seconds = t0.elapsed().as_secs_f64();
    let holdout = holdout_forecast(&outcome.champion().artifact, &req, true)
        .with_context(|| format!("{} at {cutoff}: the champion's holdout forecast", series.id))?;
    let actual: BTreeMap<NaiveDate, f64> = req
        .rows
        .iter()
        .filter(|r| r.date > cutoff)
        .map(|r| (r.date, r.value.max(r.co2e_kg)))
        .collect();
    let (mut actuals, mut bands) = (Vec::new(), Vec::new());
    for p in &holdout {
        if let (Some(a), Some(lower_80), Some(upper_80), Some(lower_95), Some(upper_95)) = (
            actual.get(&p.date),
            p.lower_80,
            p.upper_80,
            p.lower_95,
            p.upper_95,
        ) {
            actuals.push(*a);
            bands.push(intervals::Band {
                lower_80,
                upper_80,
                lower_95,
                upper_95,
            });
        }
    }
    let coverage = (!bands.is_empty()).then(|| intervals::coverage(&actuals, &bands));
    let by_date: BTreeMap<NaiveDate, f64> = req
        .rows
        .iter()
        .map(|r| (r.date, r.value.max(r.co2e_kg)))
        .collect();
    let days = |first: NaiveDate| -> Vec<Option<f64>> {
        (0..HOLDOUT_DAYS as i64)
            .map(|i| by_date.get(&(first + Duration::days(i))).copied())
            .collect()
    };
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
                validation_mae: c.validation.mae,
                mae: c.metrics.mae,
                mape: c.metrics.mape,
                mase: c.metrics.mase,
                validation_forecast: c.validation_prediction.clone(),
                holdout_forecast: c.holdout_prediction.clone(),
            })
            .collect(),
        coverage_80: coverage.map(|c| c.0),
        coverage_95: coverage.map(|c| c.1),
        validation_actual: days(cutoff - Duration::days(HOLDOUT_DAYS as i64 - 1)),
        holdout_actual: days(cutoff + Duration::days(1)),
        seconds,
    })
}

/// One fold's progress line: the champion and every candidate's MAPE.
fn progress_line(fold: &Fold) -> String {
    let scores: Vec<String> = fold
        .candidates
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c.algorithm,
                c.mape
                    .map(|m| format!("{m:.1}%"))
                    .unwrap_or_else(|| "—".into())
            )
        })
        .collect();
    format!(
        "{} origin {}: champion {} | {} | {:.1} s",
        fold.series,
        fold.cutoff,
        fold.champion,
        scores.join(", "),
        fold.seconds
    )
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
    let mape_of = |m: &str| {
        ours.iter()
            .find(|s| s.model == m)
            .and_then(|s| s.median_mape)
    };
    let champion_to_naive_mape = match (mape_of("champion"), mape_of("seasonal_naive")) {
        (Some(c), Some(n)) if n > 0.0 => Some(c / n),
        _ => None,
    };
    let mean_of = |xs: Vec<f64>| (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64);
    Section {
        name: name.to_string(),
        champion_to_naive_mape,
        coverage_80: mean_of(folds.iter().filter_map(|f| f.coverage_80).collect()),
        coverage_95: mean_of(folds.iter().filter_map(|f| f.coverage_95).collect()),
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
    settings.exclude = args.exclude.clone();
    settings.shadow = args
        .shadow
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect();
    if let Some(k) = args.combination_k {
        settings.combination.k = k;
    }
    if let Some(rule) = &args.combination_rule {
        settings.combination.rule = serde_json::from_value(serde_json::Value::String(rule.clone()))
            .with_context(|| format!("unknown combination rule `{rule}`"))?;
    }
    if let Some(rule) = &args.champion_rule {
        settings.champion = serde_json::from_value(serde_json::Value::String(rule.clone()))
            .with_context(|| format!("unknown champion rule `{rule}`"))?;
    }
    let epochs = args.epochs;
    apply_epoch_overrides(&mut settings, epochs, None);

    let plan: Vec<(&Series, NaiveDate)> = series
        .iter()
        .flat_map(|s| {
            let cut = match args.origins {
                Origins::Monthly => monthly_origins(s, &references, settings.min_days, args.quick),
                Origins::Reference => reference_origins(s, &references, args.folds),
            };
            cut.into_iter().map(move |c| (s, c))
        })
        .collect();
    // Folds are independent: run them on `jobs` threads (each model trains
    // on one thread), report them in plan order.
    let jobs = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    crate::training::neural::limit_threads(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<Option<Result<Fold, String>>>> =
        std::sync::Mutex::new(vec![None; plan.len()]);
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((s, cutoff)) = plan.get(i) else {
                    break;
                };
                let result =
                    run_fold(s, *cutoff, &settings, args.seed).map_err(|e| format!("{e:#}"));
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                match &result {
                    Ok(fold) => eprintln!("[{n}/{}] {}", plan.len(), progress_line(fold)),
                    Err(e) => {
                        eprintln!("[{n}/{}] {} origin {cutoff}: failed: {e}", plan.len(), s.id)
                    }
                }
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(result);
            });
        }
    });
    let mut folds = Vec::new();
    let mut failed = Vec::new();
    for ((s, cutoff), result) in plan
        .iter()
        .zip(results.into_inner().unwrap_or_else(|e| e.into_inner()))
    {
        match result.expect("every planned fold ran") {
            Ok(fold) => folds.push(fold),
            Err(e) => failed.push(format!("{} at {cutoff}: {e}", s.id)),
        }
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
    if args.origins == Origins::Monthly {
        let on_reference: Vec<&Fold> = folds
            .iter()
            .filter(|f| {
                references
                    .iter()
                    .any(|r| r.series == f.series && r.cutoff == f.cutoff)
            })
            .collect();
        if !on_reference.is_empty() {
            sections.push(summarize(
                "reference folds (cut-offs of reference_baselines.csv)",
                &on_reference,
                &references,
            ));
        }
        let lockdown: Vec<&Fold> = folds
            .iter()
            .filter(|f| {
                f.cutoff == NaiveDate::from_ymd_opt(2020, 3, 1).expect("valid")
                    || f.cutoff == NaiveDate::from_ymd_opt(2020, 4, 1).expect("valid")
            })
            .collect();
        if !lockdown.is_empty() {
            sections.push(summarize(
                "level shift: origins 2020-03-01 and 2020-04-01",
                &lockdown,
                &references,
            ));
        }
    }

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
        origins: args.origins,
        quick: args.quick,
        lstm_epochs: settings.lstm.epochs,
        holdout_days: HOLDOUT_DAYS,
        sections,
        folds,
        seasonal_naive_check,
        failed,
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
        "rolling-origin evaluation ({:?} origins{}): {} folds, {}-day holdout after each origin, LSTM {} epochs, {:.0} s",
        report.origins,
        if report.quick { ", quick" } else { "" },
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
    for f in &report.failed {
        let _ = writeln!(out, "failed fold: {f}");
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
        if let Some(r) = s.champion_to_naive_mape {
            let _ = writeln!(out, "  champion median MAPE / seasonal naive's: {r:.3}");
        }
        let _ = write!(
            out,
            "  champion beats seasonal naive (holdout MAE) in {}/{} folds ({:.1} %; seasonal naive was the champion in {})",
            w.champion_beats_seasonal_naive,
            w.folds,
            100.0 * w.champion_beats_seasonal_naive as f64 / w.folds.max(1) as f64,
            w.champion_is_seasonal_naive
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
        if let (Some(c80), Some(c95)) = (s.coverage_80, s.coverage_95) {
            let _ = writeln!(
                out,
                "  interval coverage: 80 % band {:.1} %, 95 % band {:.1} %",
                100.0 * c80,
                100.0 * c95
            );
        }
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

    fn daily(id: &str, first: NaiveDate, days: i64) -> Series {
        Series {
            id: id.into(),
            model_type: ModelType::EnergyForecast,
            rows: (0..days)
                .map(|i| daily_row(ModelType::EnergyForecast, first + Duration::days(i), 1.0))
                .collect(),
        }
    }

    #[test]
    fn monthly_origins_cover_every_month_start_that_leaves_history_and_a_holdout() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
        let entsoe = daily("gen_XX", d(2017, 1, 1), 1461);
        let cut = monthly_origins(&entsoe, &[], 180, false);
        assert_eq!(cut.len(), 30);
        assert_eq!((cut[0], cut[29]), (d(2018, 7, 1), d(2020, 12, 1)));
        // The household: 2006-12-17 … 2010-11-25.
        let house = daily("uci_household_kwh", d(2006, 12, 17), 1440);
        let cut = monthly_origins(&house, &[], 180, false);
        assert_eq!(cut.first(), Some(&d(2007, 7, 1)));
        assert_eq!(cut.last(), Some(&d(2010, 10, 1)));
        assert_eq!(cut.len(), 40);
        let reference = Reference {
            series: "uci_household_kwh".into(),
            cutoff: d(2009, 12, 1),
            model: "Prophet".into(),
            mape: 1.0,
            mase: 1.0,
        };
        let quick = monthly_origins(&house, &[reference], 180, true);
        assert!(quick.contains(&d(2007, 7, 1)) && quick.contains(&d(2009, 12, 1)));
        assert_eq!(quick.len(), 15);
    }
}
