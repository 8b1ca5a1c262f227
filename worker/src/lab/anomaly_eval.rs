//! `trainyard-worker eval-anomaly`: does anomaly detection find what
//! operators care about? Labelled cases are built from the shared data
//! folder, the whole pipeline runs on each (as a monthly cycle would), and
//! the flags are scored per event against classical baselines computed on
//! the same days.
//!
//! ## Cases
//! - **NAB** (`nab_subset_labelled.csv`, Numenta Anomaly Benchmark, MIT):
//!   `nyc_taxi` summed per day and `ambient_temperature_system_failure`
//!   averaged per day; one event per official anomaly window, labelling the
//!   days the window intersects. Only a value column: CO2e and the grid
//!   factor are constant, as `train` holds a feature that is not given.
//! - **ENTSO-E** (5 countries: value = generation_mwh, co2e = co2e_t,
//!   factor = grid_intensity_g_per_kwh) and the **UCI household** (value =
//!   kwh_total, co2e = kwh × a constant 0.06 kg/kWh, factor 0.06), with
//!   events injected by [`inject`], seeded per series.
//!
//! ## The injector
//! One event every 40–60 days after the first 70 (so every event has six
//! weeks of history), kinds in turn: spike, dip, ratio break, level shift,
//! stuck run. Sizes are in robust standard deviations (`sd`: 1.4826 × MAD of
//! the clean series' same-weekday residuals, `anomaly::context`):
//! - spike / dip: one day, value and CO2e moved together by 3.5–7 sd (a dip
//!   never below 10 % of the day's value);
//! - ratio break: one day, CO2e multiplied by 1.1–1.4 or 0.6–0.9 (value and
//!   factor untouched);
//! - level shift: 3–5 days, value and CO2e moved by 2.5–4 sd;
//! - stuck run: 3–6 days repeating the value and CO2e of the day before.
//!
//! ## Scores
//! Days before day 56 of a case are not scored (no weekday history yet).
//! - **event recall**: events with at least one flagged day;
//! - **false alarms per 100 days**: runs of consecutive flagged days that
//!   touch no event (an operator sees a run as one alarm), per 100 scored
//!   days;
//! - **average precision** of the day scores against the event days.
//!
//! Detectors: the champion (`trainyard`), each candidate alone (its own
//! score and threshold plus the built-in detectors), and baselines on the
//! same days: same-weekday robust z-score (the larger of value and CO2e,
//! flag at 3.5), rolling 28-day robust z-score (same), and an isolation
//! forest on the daily (value, CO2e, factor, weekday) rows (100 trees of
//! 256 days, flag above 0.6). smartcore 0.7 and linfa 0.8 have no
//! isolation forest; this one follows Liu, Ting & Zhou (2008).
//!
//! A benchmark, not a test: it reads `../shared/data`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{Datelike, Duration, NaiveDate};
use clap::Args;
use serde::Serialize;
use trainyard_shared::ModelType;

use crate::training::anomaly::context::{self, robust_sd, Day};
use crate::training::anomaly::detectors::FlagKind;
use crate::training::{predict, train_model, AnomalyFlag, RawRow, TrainRequest, TrainSettings};

use super::train::parse_date;

/// Evaluate anomaly detection on labelled and injected cases.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Example (from the repository root):
  trainyard-worker eval-anomaly --data ../shared/data

Cases: NAB nyc_taxi and ambient_temperature_system_failure per day (official
windows), ENTSO-E DE/ES/FR/GB/IT and the UCI household with seeded injected
spikes, dips, ratio breaks, level shifts and stuck runs (see the module docs
of worker/src/lab/anomaly_eval.rs and docs/anomaly-eval.md).")]
pub struct AnomalyEvalArgs {
    /// The shared data folder (nab_subset_labelled.csv, entsoe_daily_dev.csv,
    /// uci_household_power_daily.csv).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,

    /// Only these cases (comma-separated ids, e.g. nab_nyc_taxi,entsoe_DE).
    #[arg(long, value_delimiter = ',')]
    pub cases: Vec<String>,

    /// Seed of the injector and of the neural models.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Write each case as `<DIR>/<case>.csv` (date,value,co2e_kg,grid_factor,
    /// label,event,kind), e.g. to run another build's `train` on them.
    #[arg(long, value_name = "DIR")]
    pub write_cases: Option<PathBuf>,

    /// Also score the flags another build wrote: `<DIR>/<case>/anomalies.csv`
    /// (its `train --out <DIR>/<case>` on the written cases), as `external`.
    #[arg(long, value_name = "DIR")]
    pub external: Option<PathBuf>,

    /// Print one JSON document on stdout instead of the tables.
    #[arg(long)]
    pub json: bool,
}

/// One labelled event: its days and kind.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub kind: String,
    pub first: NaiveDate,
    pub last: NaiveDate,
}

/// A case: daily rows and its events.
#[derive(Debug, Clone)]
pub struct Case {
    pub id: String,
    pub group: String,
    pub days: Vec<Day>,
    pub factor: Vec<f64>,
    pub events: Vec<Event>,
}

/// How one detector did on one set of cases.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Score {
    pub events: usize,
    pub found: usize,
    pub recall: Option<f64>,
    pub false_alarms: usize,
    pub days: usize,
    pub false_alarms_per_100_days: f64,
    pub average_precision: Option<f64>,
    /// False alarms by the reason of their first flagged day.
    pub false_alarm_kinds: BTreeMap<String, usize>,
}

/// Per-day verdicts of one detector on one case.
#[derive(Debug, Clone)]
struct Verdicts {
    flagged: Vec<bool>,
    score: Vec<f64>,
    /// The reason of each day's first flag, when the detector gives one.
    kind: Vec<Option<FlagKind>>,
}

/// One case's results.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub id: String,
    pub group: String,
    pub champion: String,
    pub cpu_seconds: f64,
    pub notes: Vec<String>,
    /// Detector → score on this case.
    pub scores: BTreeMap<String, Score>,
    /// Detector → kind → (events, found).
    pub by_kind: BTreeMap<String, BTreeMap<String, (usize, usize)>>,
}

/// The whole evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct AnomalyEvalReport {
    pub cases: Vec<CaseResult>,
    /// Group → detector → pooled score (and `all`).
    pub groups: BTreeMap<String, BTreeMap<String, Score>>,
    /// Detector → kind → recall over every case.
    pub kinds: BTreeMap<String, BTreeMap<String, (usize, usize)>>,
    pub cpu_seconds_per_case: f64,
}

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

fn read_csv(path: &Path) -> anyhow::Result<Vec<BTreeMap<String, String>>> {
    let mut r =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    r.deserialize::<BTreeMap<String, String>>()
        .map(|rec| rec.with_context(|| format!("parsing {}", path.display())))
        .collect()
}

fn date_of(rec: &BTreeMap<String, String>) -> anyhow::Result<NaiveDate> {
    let cell = rec.get("date").map(String::as_str).unwrap_or("");
    parse_date(cell).with_context(|| format!("bad date `{cell}`"))
}

fn num(rec: &BTreeMap<String, String>, k: &str) -> f64 {
    rec.get(k)
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(f64::NAN)
}

/// NAB series per day, with one event per official window.
fn nab_cases(dir: &Path) -> anyhow::Result<Vec<Case>> {
    let recs = read_csv(&dir.join("nab_subset_labelled.csv"))?;
    let mut out = Vec::new();
    for (series, mean) in [
        ("nyc_taxi", false),
        ("ambient_temperature_system_failure", true),
    ] {
        let mut by_day: BTreeMap<NaiveDate, (f64, usize, bool)> = BTreeMap::new();
        for r in recs
            .iter()
            .filter(|r| r.get("series").map(String::as_str) == Some(series))
        {
            let ts = r.get("timestamp").map(String::as_str).unwrap_or("");
            let date = parse_date(ts).with_context(|| format!("bad timestamp `{ts}`"))?;
            let e = by_day.entry(date).or_default();
            e.0 += num(r, "value");
            e.1 += 1;
            e.2 |= r.get("in_window").map(String::as_str) == Some("1");
        }
        let mut days = Vec::new();
        let mut events: Vec<Event> = Vec::new();
        let mut prev_in = false;
        for (date, (sum, n, in_window)) in &by_day {
            let value = if mean { sum / *n as f64 } else { *sum };
            days.push(Day {
                date: *date,
                value,
                co2e: 1.0,
            });
            if *in_window {
                match events.last_mut() {
                    Some(e) if prev_in => e.last = *date,
                    _ => events.push(Event {
                        kind: "nab_window".into(),
                        first: *date,
                        last: *date,
                    }),
                }
            }
            prev_in = *in_window;
        }
        let factor = vec![1.0; days.len()];
        out.push(Case {
            id: format!("nab_{series}"),
            group: format!("nab_{series}"),
            days,
            factor,
            events,
        });
    }
    Ok(out)
}

/// ENTSO-E countries and the UCI household, clean.
fn energy_series(dir: &Path) -> anyhow::Result<Vec<Case>> {
    let mut by_cc: BTreeMap<String, (Vec<Day>, Vec<f64>)> = BTreeMap::new();
    for r in read_csv(&dir.join("entsoe_daily_dev.csv"))? {
        let date = date_of(&r)?;
        let cc = r.get("country").cloned().unwrap_or_default();
        let e = by_cc.entry(cc).or_default();
        e.0.push(Day {
            date,
            value: num(&r, "generation_mwh"),
            co2e: num(&r, "co2e_t"),
        });
        e.1.push(num(&r, "grid_intensity_g_per_kwh"));
    }
    let mut out: Vec<Case> = by_cc
        .into_iter()
        .map(|(cc, (days, factor))| Case {
            id: format!("entsoe_{cc}"),
            group: "entsoe".into(),
            days,
            factor,
            events: Vec::new(),
        })
        .collect();
    const HOUSEHOLD_FACTOR: f64 = 0.06;
    let mut days = Vec::new();
    for r in read_csv(&dir.join("uci_household_power_daily.csv"))? {
        let date = date_of(&r)?;
        let kwh = num(&r, "kwh_total");
        days.push(Day {
            date,
            value: kwh,
            co2e: kwh * HOUSEHOLD_FACTOR,
        });
    }
    let factor = vec![HOUSEHOLD_FACTOR; days.len()];
    out.push(Case {
        id: "household_uci".into(),
        group: "household".into(),
        days,
        factor,
        events: Vec::new(),
    });
    Ok(out)
}

/// Injects events into a clean case (see the module docs).
pub fn inject(case: &mut Case, seed: u64) {
    let mut rng = Rng(seed
        ^ case
            .id
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31) ^ b as u64));
    let values: Vec<f64> = case.days.iter().map(|d| d.value).collect();
    let residuals: Vec<f64> = context::weekday_residuals(&case.days, &values)
        .into_iter()
        .filter(|r| r.is_finite())
        .collect();
    let sd = robust_sd(&residuals).unwrap_or(0.0);
    let kinds = ["spike", "dip", "ratio_break", "level_shift", "stuck"];
    let mut i = 70 + rng.range(0, 20);
    let mut k = 0;
    while i + 8 < case.days.len() {
        let kind = kinds[k % kinds.len()];
        let len = match kind {
            "level_shift" => rng.range(3, 5),
            "stuck" => rng.range(3, 6),
            _ => 1,
        };
        match kind {
            "spike" | "dip" => {
                let size = rng.uniform(3.5, 7.0) * sd;
                let d = &mut case.days[i];
                let new = if kind == "spike" {
                    d.value + size
                } else {
                    (d.value - size).max(0.1 * d.value)
                };
                let f = new / d.value;
                d.value *= f;
                d.co2e *= f;
            }
            "ratio_break" => {
                let f = if rng.next().is_multiple_of(2) {
                    rng.uniform(1.1, 1.4)
                } else {
                    rng.uniform(0.6, 0.9)
                };
                case.days[i].co2e *= f;
            }
            "level_shift" => {
                let up = rng.next().is_multiple_of(2);
                let size = rng.uniform(2.5, 4.0) * sd;
                for d in &mut case.days[i..i + len] {
                    let new = if up {
                        d.value + size
                    } else {
                        (d.value - size).max(0.1 * d.value)
                    };
                    let f = new / d.value;
                    d.value *= f;
                    d.co2e *= f;
                }
            }
            _ => {
                let before = case.days[i - 1];
                for d in &mut case.days[i..i + len] {
                    d.value = before.value;
                    d.co2e = before.co2e;
                }
            }
        }
        case.events.push(Event {
            kind: kind.into(),
            first: case.days[i].date,
            last: case.days[i + len - 1].date,
        });
        i += len + rng.range(40, 60);
        k += 1;
    }
}

fn rows_of(case: &Case) -> Vec<RawRow> {
    case.days
        .iter()
        .zip(&case.factor)
        .enumerate()
        .map(|(i, (d, f))| RawRow {
            id: Some(i as i64 + 1),
            date: d.date,
            value: d.value,
            co2e_kg: d.co2e,
            grid_factor: *f,
            fingerprint: 0,
        })
        .collect()
}

/// The first day scored: six weeks of weekday history and two more.
const WARMUP_DAYS: usize = 56;

/// A composite day score from flags (for average precision): ratio breaks,
/// stuck runs and rejected readings first, then the other flagged days by
/// score / threshold, then the unflagged days by score / threshold.
fn verdicts_from_flags(case: &Case, flags: &[AnomalyFlag]) -> Verdicts {
    let index: BTreeMap<NaiveDate, usize> = case
        .days
        .iter()
        .enumerate()
        .map(|(i, d)| (d.date, i))
        .collect();
    let mut flagged = vec![false; case.days.len()];
    let mut score = vec![0.0f64; case.days.len()];
    let mut kind = vec![None; case.days.len()];
    for f in flags {
        let Some(&i) = index.get(&f.date) else {
            continue;
        };
        flagged[i] |= f.is_anomaly;
        if kind[i].is_none() && f.is_anomaly {
            kind[i] = f.kind;
        }
        // Certain data-quality findings first, then flagged days by the
        // model's score, then the rest by the model's score.
        let certain = matches!(
            f.kind,
            Some(
                FlagKind::RatioBreak
                    | FlagKind::Stuck
                    | FlagKind::Negative
                    | FlagKind::Missing
                    | FlagKind::Absurd
                    | FlagKind::FutureDated
            )
        );
        let ratio = f.score / f.threshold.max(1e-300);
        let s = if certain || !f.score.is_finite() {
            1e6
        } else if f.is_anomaly {
            1e3 + ratio
        } else {
            ratio
        };
        score[i] = score[i].max(s);
    }
    Verdicts {
        flagged,
        score,
        kind,
    }
}

/// The expected value and spread of column `c` at day `i`, if known.
type Expectation = dyn Fn(&[f64], usize) -> Option<(f64, f64)>;

/// Day scores and their labels, pooled for average precision.
type Ranked = (Vec<f64>, Vec<bool>);

/// `|x − expectation| / spread` from the larger of value and CO2e.
fn zscore_baseline(case: &Case, expect: &Expectation) -> Verdicts {
    let cols: [Vec<f64>; 2] = [
        case.days.iter().map(|d| d.value).collect(),
        case.days.iter().map(|d| d.co2e).collect(),
    ];
    let score: Vec<f64> = (0..case.days.len())
        .map(|i| {
            cols.iter()
                .filter_map(|c| {
                    expect(c, i).map(|(m, s)| {
                        let floor = 1e-6 * m.abs().max(1e-9);
                        (c[i] - m).abs() / s.max(floor)
                    })
                })
                .fold(0.0, f64::max)
        })
        .collect();
    Verdicts {
        flagged: score.iter().map(|s| *s > 3.5).collect(),
        kind: vec![None; score.len()],
        score,
    }
}

fn weekday_baseline(case: &Case) -> Verdicts {
    // Precompute raw residuals and their trailing spread per column.
    let cols: [Vec<f64>; 2] = [
        case.days.iter().map(|d| d.value).collect(),
        case.days.iter().map(|d| d.co2e).collect(),
    ];
    let z: Vec<Vec<f64>> = cols
        .iter()
        .map(|c| {
            let raw = context::weekday_residuals(&case.days, c);
            let mut out = Vec::with_capacity(raw.len());
            for i in 0..raw.len() {
                let lo = i.saturating_sub(context::SCALE_DAYS);
                let recent: Vec<f64> = raw[lo..i]
                    .iter()
                    .copied()
                    .filter(|x| x.is_finite())
                    .collect();
                let s = robust_sd(&recent).unwrap_or(0.0);
                let floor = 1e-6 * c[i].abs().max(1e-9);
                out.push(if raw[i].is_finite() && recent.len() >= 14 {
                    raw[i].abs() / s.max(floor)
                } else {
                    0.0
                });
            }
            out
        })
        .collect();
    let score: Vec<f64> = (0..case.days.len()).map(|i| z[0][i].max(z[1][i])).collect();
    Verdicts {
        flagged: score.iter().map(|s| *s > 3.5).collect(),
        kind: vec![None; score.len()],
        score,
    }
}

fn rolling_baseline(case: &Case) -> Verdicts {
    zscore_baseline(case, &|c, i| {
        if i < 28 {
            return None;
        }
        let window = &c[i - 28..i];
        let mut w = window.to_vec();
        let m = context::median(&mut w)?;
        Some((m, robust_sd(window)?))
    })
}

/// The average path length of an unsuccessful search in a binary search
/// tree of `m` items (the forest's normalization).
fn c_factor(m: usize) -> f64 {
    if m <= 1 {
        return 0.0;
    }
    let m = m as f64;
    2.0 * ((m - 1.0).ln() + 0.577_215_664_9) - 2.0 * (m - 1.0) / m
}

/// One isolation tree, grown and walked at once: `targets` are the rows
/// whose path lengths are added to `out`.
struct Isolation<'a> {
    rows: &'a [Vec<f64>],
    limit: usize,
}

impl Isolation<'_> {
    fn walk(
        &self,
        rng: &mut Rng,
        sample: Vec<usize>,
        targets: Vec<usize>,
        depth: usize,
        out: &mut [f64],
    ) {
        let leaf = |out: &mut [f64], targets: Vec<usize>, size: usize| {
            for t in targets {
                out[t] += depth as f64 + c_factor(size);
            }
        };
        if depth >= self.limit || sample.len() <= 1 || targets.is_empty() {
            return leaf(out, targets, sample.len());
        }
        let f = rng.range(0, self.rows[0].len() - 1);
        let (lo, hi) = sample
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &i| {
                (lo.min(self.rows[i][f]), hi.max(self.rows[i][f]))
            });
        if hi <= lo {
            return leaf(out, targets, sample.len());
        }
        let split = rng.uniform(lo, hi);
        let left = |i: &usize| self.rows[*i][f] < split;
        let (sl, sr): (Vec<usize>, Vec<usize>) = sample.into_iter().partition(left);
        let (tl, tr): (Vec<usize>, Vec<usize>) = targets.into_iter().partition(left);
        self.walk(rng, sl, tl, depth + 1, out);
        self.walk(rng, sr, tr, depth + 1, out);
    }
}

/// Isolation-forest anomaly scores (Liu, Ting & Zhou 2008) of standardized
/// rows: 100 trees of 256 rows, score `2^(−E[h] / c(256))`.
fn isolation_forest(rows: &[Vec<f64>], seed: u64) -> Vec<f64> {
    const TREES: usize = 100;
    const SAMPLE: usize = 256;
    let n = rows.len();
    let psi = SAMPLE.min(n);
    let forest = Isolation {
        rows,
        limit: (psi as f64).log2().ceil() as usize,
    };
    let mut rng = Rng(seed);
    let mut depth_sum = vec![0.0f64; n];
    for _ in 0..TREES {
        let sample: Vec<usize> = (0..psi).map(|_| rng.range(0, n - 1)).collect();
        forest.walk(&mut rng, sample, (0..n).collect(), 0, &mut depth_sum);
    }
    depth_sum
        .into_iter()
        .map(|h| 2f64.powf(-(h / TREES as f64) / c_factor(psi)))
        .collect()
}

fn forest_baseline(case: &Case, seed: u64) -> Verdicts {
    let raw: Vec<Vec<f64>> = case
        .days
        .iter()
        .zip(&case.factor)
        .map(|(d, f)| {
            vec![
                d.value,
                d.co2e,
                *f,
                d.date.weekday().num_days_from_monday() as f64,
            ]
        })
        .collect();
    let d = raw[0].len();
    let stats: Vec<(f64, f64)> = (0..d)
        .map(|j| {
            let n = raw.len() as f64;
            let m = raw.iter().map(|r| r[j]).sum::<f64>() / n;
            let s = (raw.iter().map(|r| (r[j] - m).powi(2)).sum::<f64>() / n).sqrt();
            (m, if s > 0.0 { s } else { 1.0 })
        })
        .collect();
    let rows: Vec<Vec<f64>> = raw
        .iter()
        .map(|r| {
            r.iter()
                .zip(&stats)
                .map(|(x, (m, s))| (x - m) / s)
                .collect()
        })
        .collect();
    let score = isolation_forest(&rows, seed);
    Verdicts {
        flagged: score.iter().map(|s| *s > 0.6).collect(),
        kind: vec![None; score.len()],
        score,
    }
}

/// Average precision of `score` against `labels`.
fn average_precision(score: &[f64], labels: &[bool]) -> Option<f64> {
    let positives = labels.iter().filter(|l| **l).count();
    if positives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..score.len()).collect();
    order.sort_by(|&a, &b| score[b].total_cmp(&score[a]));
    let (mut tp, mut ap) = (0usize, 0.0);
    for (rank, &i) in order.iter().enumerate() {
        if labels[i] {
            tp += 1;
            ap += tp as f64 / (rank + 1) as f64;
        }
    }
    Some(ap / positives as f64)
}

/// Scores `v` on the scored days of `case`, pooled into `score` and `kinds`.
fn score_case(
    case: &Case,
    v: &Verdicts,
    score: &mut Score,
    kinds: &mut BTreeMap<String, (usize, usize)>,
    ap_parts: &mut Ranked,
) {
    let n = case.days.len();
    let mut event_of = vec![None; n];
    for (e_i, e) in case.events.iter().enumerate() {
        for (i, d) in case.days.iter().enumerate() {
            if d.date >= e.first && d.date <= e.last {
                event_of[i] = Some(e_i);
            }
        }
    }
    let mut found = vec![false; case.events.len()];
    let mut counted = vec![false; case.events.len()];
    let mut in_alarm = false;
    let mut alarm_touches_event = false;
    let mut alarm_kind = None;
    for i in WARMUP_DAYS..n {
        if let Some(e) = event_of[i] {
            counted[e] = true;
            found[e] |= v.flagged[i];
        }
        if v.flagged[i] {
            if !in_alarm {
                in_alarm = true;
                alarm_touches_event = false;
                alarm_kind = v.kind[i];
            }
            alarm_touches_event |= event_of[i].is_some();
        }
        let ends = in_alarm && (i + 1 == n || !v.flagged[i + 1]);
        if ends {
            if !alarm_touches_event {
                score.false_alarms += 1;
                let k = alarm_kind.map_or("flag", FlagKind::as_str);
                *score.false_alarm_kinds.entry(k.to_string()).or_default() += 1;
            }
            in_alarm = false;
        }
        ap_parts.0.push(v.score[i]);
        ap_parts.1.push(event_of[i].is_some());
    }
    score.days += n - WARMUP_DAYS;
    for (e_i, e) in case.events.iter().enumerate() {
        if !counted[e_i] {
            continue;
        }
        score.events += 1;
        let k = kinds.entry(e.kind.clone()).or_default();
        k.0 += 1;
        if found[e_i] {
            score.found += 1;
            k.1 += 1;
        }
    }
}

fn finish(mut s: Score, ap_parts: &Ranked) -> Score {
    s.recall = (s.events > 0).then(|| s.found as f64 / s.events as f64);
    s.false_alarms_per_100_days = 100.0 * s.false_alarms as f64 / s.days.max(1) as f64;
    s.average_precision = average_precision(&ap_parts.0, &ap_parts.1);
    s
}

/// Reads another build's `anomalies.csv` for a case.
fn external_flags(dir: &Path, case: &Case) -> anyhow::Result<Vec<AnomalyFlag>> {
    let path = dir.join(&case.id).join("anomalies.csv");
    read_csv(&path)?
        .into_iter()
        .map(|r| {
            let date = date_of(&r)?;
            Ok(AnomalyFlag {
                row_id: None,
                date,
                score: num(&r, "score"),
                threshold: num(&r, "threshold"),
                is_anomaly: r.get("is_anomaly").map(String::as_str) == Some("1"),
                kind: None,
            })
        })
        .collect()
}

fn write_case(dir: &Path, case: &Case) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{}.csv", case.id));
    let mut w = csv::Writer::from_path(&path)?;
    w.write_record([
        "date",
        "value",
        "co2e_kg",
        "grid_factor",
        "label",
        "event",
        "kind",
    ])?;
    for (d, f) in case.days.iter().zip(&case.factor) {
        let e = case
            .events
            .iter()
            .position(|e| d.date >= e.first && d.date <= e.last);
        w.write_record([
            d.date.to_string(),
            d.value.to_string(),
            d.co2e.to_string(),
            f.to_string(),
            u8::from(e.is_some()).to_string(),
            e.map(|e| e.to_string()).unwrap_or_default(),
            e.map(|e| case.events[e].kind.clone()).unwrap_or_default(),
        ])?;
    }
    w.flush()?;
    Ok(())
}

fn cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_THREAD).expect("getrusage cannot fail");
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 * 1e-6;
    t(u.user_time()) + t(u.system_time())
}

/// Builds the cases, runs the pipeline on each and scores every detector.
pub fn run(args: &AnomalyEvalArgs) -> anyhow::Result<AnomalyEvalReport> {
    let mut cases = nab_cases(&args.data)?;
    for mut c in energy_series(&args.data)? {
        inject(&mut c, args.seed);
        cases.push(c);
    }
    cases.retain(|c| args.cases.is_empty() || args.cases.contains(&c.id));
    let mut results = Vec::new();
    let mut pooled: BTreeMap<(String, String), (Score, Ranked)> = BTreeMap::new();
    let mut kinds: BTreeMap<String, BTreeMap<String, (usize, usize)>> = BTreeMap::new();
    let mut cpu_total = 0.0;
    for case in &cases {
        if let Some(dir) = &args.write_cases {
            write_case(dir, case)?;
        }
        let req = TrainRequest {
            model_type: ModelType::AnomalyDetection,
            rows: rows_of(case),
            settings: TrainSettings {
                latest_date: case.days.last().map(|d| d.date + Duration::days(1)),
                ..TrainSettings::default()
            },
            seed: args.seed,
        };
        let cpu0 = cpu_seconds();
        let outcome =
            train_model(&req, &mut |_| {}).with_context(|| format!("training on {}", case.id))?;
        let cpu = cpu_seconds() - cpu0;
        cpu_total += cpu;
        let mut detectors: Vec<(String, Verdicts)> = vec![(
            "trainyard".into(),
            verdicts_from_flags(case, &outcome.anomalies),
        )];
        for c in &outcome.candidates {
            let (_, flags) = predict(&c.artifact, &req)?;
            detectors.push((
                format!("candidate:{}", c.algorithm),
                verdicts_from_flags(case, &flags),
            ));
        }
        detectors.push(("weekday_robust_z".into(), weekday_baseline(case)));
        detectors.push(("rolling28_robust_z".into(), rolling_baseline(case)));
        detectors.push(("isolation_forest".into(), forest_baseline(case, args.seed)));
        if let Some(dir) = &args.external {
            let flags = external_flags(dir, case)?;
            detectors.push(("external".into(), verdicts_from_flags(case, &flags)));
        }
        let mut scores = BTreeMap::new();
        let mut case_kinds = BTreeMap::new();
        for (name, v) in &detectors {
            let mut s = Score::default();
            let mut k = BTreeMap::new();
            let mut ap = (Vec::new(), Vec::new());
            score_case(case, v, &mut s, &mut k, &mut ap);
            for group in [case.group.clone(), "all".to_string()] {
                let e = pooled.entry((group, name.clone())).or_default();
                let mut k2 = BTreeMap::new();
                score_case(case, v, &mut e.0, &mut k2, &mut e.1);
            }
            let kk = kinds.entry(name.clone()).or_default();
            for (kind, (n, f)) in &k {
                let e = kk.entry(kind.clone()).or_default();
                e.0 += n;
                e.1 += f;
            }
            scores.insert(name.clone(), finish(s, &ap));
            case_kinds.insert(name.clone(), k);
        }
        results.push(CaseResult {
            id: case.id.clone(),
            group: case.group.clone(),
            champion: outcome.champion().algorithm.clone(),
            cpu_seconds: cpu,
            notes: outcome.notes.clone(),
            scores,
            by_kind: case_kinds,
        });
    }
    let mut groups: BTreeMap<String, BTreeMap<String, Score>> = BTreeMap::new();
    for ((g, name), (s, ap)) in pooled {
        groups.entry(g).or_default().insert(name, finish(s, &ap));
    }
    Ok(AnomalyEvalReport {
        cpu_seconds_per_case: cpu_total / results.len().max(1) as f64,
        cases: results,
        groups,
        kinds,
    })
}

fn pct(x: Option<f64>) -> String {
    x.map(|v| format!("{:.1}", 100.0 * v))
        .unwrap_or_else(|| "—".into())
}

/// The tables.
pub fn render(r: &AnomalyEvalReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for (g, detectors) in &r.groups {
        let _ = writeln!(out, "\n{g}");
        let _ = writeln!(
            out,
            "  {:<24} {:>8} {:>9} {:>9} {:>7}",
            "detector", "events", "recall %", "FA/100d", "AP"
        );
        for (name, s) in detectors {
            let _ = writeln!(
                out,
                "  {:<24} {:>8} {:>9} {:>9.2} {:>7}",
                name,
                format!("{}/{}", s.found, s.events),
                pct(s.recall),
                s.false_alarms_per_100_days,
                s.average_precision
                    .map(|a| format!("{a:.3}"))
                    .unwrap_or_else(|| "—".into())
            );
        }
    }
    if let Some(t) = r.groups.get("all").and_then(|g| g.get("trainyard")) {
        let cells: Vec<String> = t
            .false_alarm_kinds
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "\ntrainyard false alarms by reason: {}",
            cells.join(", ")
        );
    }
    let _ = writeln!(out, "\nrecall by kind (found/events)");
    for (name, k) in &r.kinds {
        let cells: Vec<String> = k
            .iter()
            .map(|(kind, (n, f))| format!("{kind} {f}/{n}"))
            .collect();
        let _ = writeln!(out, "  {:<24} {}", name, cells.join(", "));
    }
    let _ = writeln!(out, "\ncases");
    for c in &r.cases {
        let t = &c.scores["trainyard"];
        let _ = writeln!(
            out,
            "  {:<40} champion {:<12} recall {}/{} FA/100d {:.2} cpu {:.3}s{}",
            c.id,
            c.champion,
            t.found,
            t.events,
            t.false_alarms_per_100_days,
            c.cpu_seconds,
            if c.notes.is_empty() {
                String::new()
            } else {
                format!("  ({} note)", c.notes.len())
            }
        );
    }
    let _ = writeln!(
        out,
        "\nCPU per case (train + flag, this thread): {:.3} s",
        r.cpu_seconds_per_case
    );
    out
}

/// The `eval-anomaly` subcommand.
pub fn execute(args: AnomalyEvalArgs) -> anyhow::Result<i32> {
    let report = run(&args)?;
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
    fn average_precision_matches_a_hand_computed_ranking() {
        // Ranked: pos, neg, pos → (1/1 + 2/3) / 2.
        let ap = average_precision(&[0.9, 0.8, 0.7, 0.1], &[true, false, true, false]).unwrap();
        assert!((ap - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        assert_eq!(average_precision(&[1.0], &[false]), None);
    }

    #[test]
    fn the_injector_is_seeded_and_spaces_its_events() {
        let days: Vec<Day> = context::tests::seasonal(600);
        let mk = || Case {
            id: "x".into(),
            group: "g".into(),
            factor: vec![0.4; days.len()],
            days: days.clone(),
            events: Vec::new(),
        };
        let (mut a, mut b) = (mk(), mk());
        inject(&mut a, 1);
        inject(&mut b, 1);
        assert_eq!(a.days, b.days);
        assert!(a.events.len() >= 8, "{}", a.events.len());
        assert!(a
            .events
            .windows(2)
            .all(|w| w[1].first > w[0].last + Duration::days(30)));
    }
}
