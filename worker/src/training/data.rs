//! Data preparation: raw activity rows become a clean daily series (forecasts)
//! or a clean table of feature rows (anomaly detection), with a report of
//! everything that was rejected, merged or filled, and a chronological split
//! whose holdout is never seen in training.
//!
//! Rules, in order:
//! 1. A row identical to an earlier one (same date, [`RawRow::fingerprint`]
//!    and numbers) is the same record imported twice: it counts once, and the
//!    copies are reported.
//! 2. A row dated after `latest_date` (the day after today, UTC, in
//!    production) is rejected as future-dated. A row whose target is NaN (a
//!    NULL from the database arrives as NaN), ±inf, negative or absurdly large
//!    (above [`MAX_PLAUSIBLE`]) is rejected. Rejections are counted by reason.
//! 3. Rows of the same date are summed (several meters or categories per day);
//!    the number of dates that had more than one row is reported.
//! 4. Missing days are filled by linear interpolation when the gap is at most
//!    `max_gap_days` long. A longer gap means the older data describes another
//!    regime of reporting: everything before it is dropped (and counted), so
//!    the series is always the most recent contiguous stretch.
//! 5. Fewer than `min_days` days with data (interpolated days do not count)
//!    is [`DataError::Insufficient`], which says how many rows were dropped
//!    and why.
//! 6. An all-zero or constant series (or training window) is
//!    [`DataError::Invalid`]: there is nothing to learn and normalization
//!    would divide by zero.
//! 7. The last `holdout_days` days are the holdout; everything before is
//!    training. Normalization parameters come from training data only.

use std::collections::{BTreeMap, HashSet};

use chrono::{Duration, NaiveDate};
use serde::{Deserialize, Serialize};

/// One activity row as loaded from `metrics_data` (or a CSV). A NULL column
/// arrives as NaN.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawRow {
    pub id: Option<i64>,
    pub date: NaiveDate,
    pub value: f64,
    pub co2e_kg: f64,
    pub grid_factor: f64,
    /// What tells two rows of one day apart besides their numbers: a
    /// fingerprint of (category, unit) for database rows, of the whole line
    /// for CSV rows ([`fingerprint_of`]). Rows equal in date, fingerprint
    /// and every number are one record imported twice.
    pub fingerprint: u64,
}

/// The [`RawRow::fingerprint`] of the given identifying fields.
pub(crate) fn fingerprint_of<'a>(fields: impl IntoIterator<Item = Option<&'a [u8]>>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in fields {
        f.hash(&mut h);
    }
    h.finish()
}

/// Which column of [`RawRow`] a forecast learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Energy `value`.
    Value,
    /// Emissions `co2e_kg`.
    Co2eKg,
}

impl Target {
    fn of(self, row: &RawRow) -> f64 {
        match self {
            Target::Value => row.value,
            Target::Co2eKg => row.co2e_kg,
        }
    }
}

/// Data that cannot be trained on. Both variants are final: retrying the same
/// data gives the same answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DataError {
    #[error("insufficient data: {have} usable days, at least {need} required{dropped}")]
    Insufficient {
        have: usize,
        need: usize,
        dropped: Dropped,
    },
    #[error("invalid data: {0}")]
    Invalid(String),
}

/// Rows left out of the prepared data, by reason: an `insufficient data`
/// reason lists them, so a short history is explained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    pub rejected: RejectedCounts,
    /// Identical copies of another row (counted once).
    pub duplicates: usize,
    /// Rows of an older stretch cut off by a gap longer than `max_gap_days`.
    pub before_gap: usize,
    pub max_gap_days: usize,
}

impl Dropped {
    pub fn total(&self) -> usize {
        self.rejected.total() + self.duplicates + self.before_gap
    }
}

/// Nothing when no row was dropped, else ` (N rows dropped: …)`.
impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.total() == 0 {
            return Ok(());
        }
        let r = &self.rejected;
        let gap = format!(
            "in an older stretch before a gap of more than {} days",
            self.max_gap_days
        );
        let parts: Vec<String> = [
            (r.future, "future-dated"),
            (r.nan, "missing or NaN"),
            (r.infinite, "infinite"),
            (r.negative, "negative"),
            (r.absurd, "absurdly large"),
            (self.duplicates, "exact duplicates"),
            (self.before_gap, gap.as_str()),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, why)| format!("{n} {why}"))
        .collect();
        write!(f, " ({} rows dropped: {})", self.total(), parts.join(", "))
    }
}

/// Rows rejected before aggregation, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedCounts {
    pub nan: usize,
    pub infinite: usize,
    pub negative: usize,
    /// Values above [`MAX_PLAUSIBLE`]: unit mistakes or corrupt imports.
    #[serde(default)]
    pub absurd: usize,
    /// Rows dated after [`PrepSettings::latest_date`].
    #[serde(default)]
    pub future: usize,
}

/// The largest value a daily row may carry (1e12: more than the world's
/// daily electricity use in kWh). Larger values are rejected as absurd; this
/// also keeps sums of many rows and the f32 models far from overflow.
pub(crate) const MAX_PLAUSIBLE: f64 = 1e12;

impl RejectedCounts {
    pub fn total(&self) -> usize {
        self.nan + self.infinite + self.negative + self.absurd + self.future
    }

    /// Counts a row dated after `latest` and says whether its date is usable.
    fn check_date(&mut self, date: NaiveDate, latest: NaiveDate) -> bool {
        if date > latest {
            self.future += 1;
            false
        } else {
            true
        }
    }

    /// Counts `x` under its reason and says whether it is usable.
    fn check(&mut self, x: f64) -> bool {
        if x.is_nan() {
            self.nan += 1;
            false
        } else if x.is_infinite() {
            self.infinite += 1;
            false
        } else if x < 0.0 {
            self.negative += 1;
            false
        } else if x > MAX_PLAUSIBLE {
            self.absurd += 1;
            false
        } else {
            true
        }
    }
}

/// An inclusive range of dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DateRange {
    pub start: NaiveDate,
    pub end: NaiveDate,
}

impl DateRange {
    pub fn days(&self) -> usize {
        ((self.end - self.start).num_days() + 1).max(0) as usize
    }
}

/// What preparation did to the rows, for the job record and the CLI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataReport {
    /// Rows handed in.
    pub rows_in: usize,
    /// Rows that contributed to the prepared data.
    pub rows_used: usize,
    pub rejected: RejectedCounts,
    /// Dates that had more than one row (their rows were summed).
    pub duplicate_dates: usize,
    /// Rows identical to another row (same date, fingerprint and numbers): a
    /// double import, counted once.
    #[serde(default)]
    pub duplicate_rows: usize,
    /// Days in the prepared data (forecasts: length of the daily series;
    /// anomaly detection: distinct dates).
    pub days: usize,
    /// Days filled by interpolation.
    pub gaps_filled: usize,
    /// The interpolated stretches.
    pub gaps: Vec<DateRange>,
    /// Days with data dropped because a gap longer than `max_gap_days`
    /// followed them.
    pub dropped_days: usize,
    pub train: DateRange,
    pub holdout: DateRange,
}

/// Preparation settings (a subset of the training settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrepSettings {
    pub min_days: usize,
    pub holdout_days: usize,
    pub max_gap_days: usize,
    /// Rows dated after this day are rejected as future-dated.
    pub latest_date: NaiveDate,
}

/// A gap-free daily series starting at `start`.
#[derive(Debug, Clone, PartialEq)]
pub struct DailySeries {
    pub start: NaiveDate,
    pub values: Vec<f64>,
}

impl DailySeries {
    pub fn date_at(&self, index: usize) -> NaiveDate {
        self.start + Duration::days(index as i64)
    }

    pub fn end(&self) -> NaiveDate {
        self.date_at(self.values.len().saturating_sub(1))
    }
}

/// A prepared daily series with its chronological split.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedSeries {
    pub series: DailySeries,
    pub holdout_days: usize,
    pub report: DataReport,
}

impl PreparedSeries {
    /// Days before the holdout.
    pub fn train(&self) -> &[f64] {
        &self.series.values[..self.series.values.len() - self.holdout_days]
    }

    pub fn holdout(&self) -> &[f64] {
        &self.series.values[self.series.values.len() - self.holdout_days..]
    }
}

/// Aggregates, cleans, gap-fills and splits the rows into a daily series of
/// `target`.
pub fn prepare_series(
    rows: &[RawRow],
    target: Target,
    settings: &PrepSettings,
) -> Result<PreparedSeries, DataError> {
    check_settings(settings)?;
    let (distinct, duplicate_rows) = distinct_rows(rows);
    let mut rejected = RejectedCounts::default();
    let mut by_date: BTreeMap<NaiveDate, (f64, usize)> = BTreeMap::new();
    for row in distinct {
        let x = target.of(row);
        if rejected.check_date(row.date, settings.latest_date) && rejected.check(x) {
            let e = by_date.entry(row.date).or_insert((0.0, 0));
            e.0 += x;
            e.1 += 1;
        }
    }
    let duplicate_dates = by_date.values().filter(|(_, n)| *n > 1).count();

    // Walk the dates newest first, so a long gap cuts off the older part.
    let dates: Vec<(NaiveDate, f64, usize)> =
        by_date.iter().map(|(d, (v, n))| (*d, *v, *n)).collect();
    let mut first_kept = 0;
    for i in (1..dates.len()).rev() {
        let missing = (dates[i].0 - dates[i - 1].0).num_days() as usize - 1;
        if missing > settings.max_gap_days {
            first_kept = i;
            break;
        }
    }
    let dropped_days = first_kept;
    let kept = &dates[first_kept..];
    if kept.len() < settings.min_days {
        return Err(DataError::Insufficient {
            have: kept.len(),
            need: settings.min_days,
            dropped: Dropped {
                rejected,
                duplicates: duplicate_rows,
                before_gap: dates[..first_kept].iter().map(|(_, _, n)| n).sum(),
                max_gap_days: settings.max_gap_days,
            },
        });
    }
    let rows_used = kept.iter().map(|(_, _, n)| n).sum();

    let mut values = Vec::new();
    let mut gaps = Vec::new();
    for (i, &(date, v, _)) in kept.iter().enumerate() {
        if i > 0 {
            let (prev_date, prev_v, _) = kept[i - 1];
            let missing = (date - prev_date).num_days() - 1;
            if missing > 0 {
                let span = (missing + 1) as f64;
                for k in 1..=missing {
                    values.push(prev_v + (v - prev_v) * k as f64 / span);
                }
                gaps.push(DateRange {
                    start: prev_date + Duration::days(1),
                    end: date - Duration::days(1),
                });
            }
        }
        values.push(v);
    }

    let start = kept[0].0;
    let series = DailySeries { start, values };
    check_variation(&series.values, "series")?;
    let n = series.values.len();
    let train_len = n - settings.holdout_days;
    check_variation(&series.values[..train_len], "training window")?;

    let report = DataReport {
        rows_in: rows.len(),
        rows_used,
        rejected,
        duplicate_dates,
        duplicate_rows,
        days: n,
        gaps_filled: gaps.iter().map(DateRange::days).sum(),
        gaps,
        dropped_days,
        train: DateRange {
            start,
            end: series.date_at(train_len - 1),
        },
        holdout: DateRange {
            start: series.date_at(train_len),
            end: series.end(),
        },
    };
    Ok(PreparedSeries {
        series,
        holdout_days: settings.holdout_days,
        report,
    })
}

/// One usable anomaly-detection row: features in the order
/// (`co2e_kg`, `value`, `grid_factor`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureRow {
    pub id: Option<i64>,
    pub date: NaiveDate,
    pub features: [f64; 3],
}

/// Prepared anomaly-detection rows, sorted by date (then id), with the index
/// of the first holdout row.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedRows {
    pub rows: Vec<FeatureRow>,
    pub holdout_start: usize,
    pub report: DataReport,
    /// Rows rejected by rule 2, kept so anomaly detection can flag them with
    /// their reason instead of dropping them silently.
    pub rejected_rows: Vec<RejectedRow>,
}

/// Why an anomaly-detection row could not be scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// A NULL (NaN) column.
    Missing,
    Negative,
    /// Infinite or above [`MAX_PLAUSIBLE`].
    Absurd,
    FutureDated,
}

/// A row rule 2 rejected.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RejectedRow {
    pub id: Option<i64>,
    pub date: NaiveDate,
    pub reason: RejectReason,
}

impl PreparedRows {
    pub fn train(&self) -> &[FeatureRow] {
        &self.rows[..self.holdout_start]
    }

    pub fn holdout(&self) -> &[FeatureRow] {
        &self.rows[self.holdout_start..]
    }
}

/// Cleans rows for anomaly detection. Rows are not aggregated (each row is
/// scored), so duplicates are counted but kept and gaps are not filled; the
/// day count is the span of dates covered, and the holdout is the rows of the
/// last `holdout_days` calendar days.
pub fn prepare_rows(rows: &[RawRow], settings: &PrepSettings) -> Result<PreparedRows, DataError> {
    check_settings(settings)?;
    let (distinct, duplicate_rows) = distinct_rows(rows);
    let mut rejected = RejectedCounts::default();
    let mut kept: Vec<FeatureRow> = Vec::new();
    let mut rejected_rows = Vec::new();
    for row in distinct {
        let features = [row.co2e_kg, row.value, row.grid_factor];
        // One reason per row: the date, then the first failing feature.
        let before = rejected;
        let ok = rejected.check_date(row.date, settings.latest_date)
            && features.into_iter().all(|x| rejected.check(x));
        if !ok {
            let reason = if rejected.future > before.future {
                RejectReason::FutureDated
            } else if rejected.nan > before.nan {
                RejectReason::Missing
            } else if rejected.negative > before.negative {
                RejectReason::Negative
            } else {
                RejectReason::Absurd
            };
            rejected_rows.push(RejectedRow {
                id: row.id,
                date: row.date,
                reason,
            });
        }
        if ok {
            kept.push(FeatureRow {
                id: row.id,
                date: row.date,
                features,
            });
        }
    }
    kept.sort_by(|a, b| a.date.cmp(&b.date).then(a.id.cmp(&b.id)));
    let mut per_date: BTreeMap<NaiveDate, usize> = BTreeMap::new();
    for r in &kept {
        *per_date.entry(r.date).or_default() += 1;
    }
    let duplicate_dates = per_date.values().filter(|n| **n > 1).count();
    // Days with data, not the calendar span: 20 rows spread over 200 days
    // are 20 days.
    let insufficient = || DataError::Insufficient {
        have: per_date.len(),
        need: settings.min_days,
        dropped: Dropped {
            rejected,
            duplicates: duplicate_rows,
            before_gap: 0,
            max_gap_days: settings.max_gap_days,
        },
    };
    if per_date.len() < settings.min_days {
        return Err(insufficient());
    }
    let (Some(first), Some(last)) = (kept.first(), kept.last()) else {
        return Err(insufficient());
    };
    let span = DateRange {
        start: first.date,
        end: last.date,
    };
    let days = per_date.len();
    for f in 0..3 {
        let column: Vec<f64> = kept.iter().map(|r| r.features[f]).collect();
        if column.iter().all(|x| *x == 0.0) {
            return Err(DataError::Invalid(format!(
                "feature `{}` is zero on every row",
                FEATURE_NAMES[f]
            )));
        }
    }
    if kept.iter().all(|r| r.features == kept[0].features) {
        return Err(DataError::Invalid(
            "every row has the same (co2e_kg, value, grid_factor)".into(),
        ));
    }
    let holdout_first_date = span.end - Duration::days(settings.holdout_days as i64 - 1);
    let holdout_start = kept.partition_point(|r| r.date < holdout_first_date);
    let report = DataReport {
        rows_in: rows.len(),
        rows_used: kept.len(),
        rejected,
        duplicate_dates,
        duplicate_rows,
        days,
        gaps_filled: 0,
        gaps: Vec::new(),
        dropped_days: 0,
        train: DateRange {
            start: span.start,
            end: holdout_first_date - Duration::days(1),
        },
        holdout: DateRange {
            start: holdout_first_date,
            end: span.end,
        },
    };
    rejected_rows.sort_by(|a, b| a.date.cmp(&b.date).then(a.id.cmp(&b.id)));
    Ok(PreparedRows {
        rows: kept,
        holdout_start,
        report,
        rejected_rows,
    })
}

/// The rows that are not an identical copy of an earlier row, and how many
/// copies there were.
fn distinct_rows(rows: &[RawRow]) -> (Vec<&RawRow>, usize) {
    let mut seen = HashSet::with_capacity(rows.len());
    let distinct: Vec<&RawRow> = rows
        .iter()
        .filter(|r| {
            seen.insert((
                r.date,
                r.fingerprint,
                [r.value, r.co2e_kg, r.grid_factor].map(f64::to_bits),
            ))
        })
        .collect();
    let copies = rows.len() - distinct.len();
    (distinct, copies)
}

/// Names of the anomaly features, in [`FeatureRow::features`] order.
pub(crate) const FEATURE_NAMES: [&str; 3] = ["co2e_kg", "value", "grid_factor"];

fn check_settings(s: &PrepSettings) -> Result<(), DataError> {
    if s.holdout_days == 0 || s.min_days <= s.holdout_days {
        return Err(DataError::Invalid(format!(
            "min_days ({}) must exceed holdout_days ({}), which must be positive",
            s.min_days, s.holdout_days
        )));
    }
    Ok(())
}

fn check_variation(values: &[f64], what: &str) -> Result<(), DataError> {
    if values.iter().all(|x| *x == 0.0) {
        return Err(DataError::Invalid(format!("the {what} is zero every day")));
    }
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        });
    // Relative tolerance: sums of floats that "should" be equal differ in
    // the last bits.
    if hi - lo <= 1e-9 * hi.abs().max(1.0) {
        return Err(DataError::Invalid(format!(
            "the {what} is constant ({lo}); there is nothing to learn"
        )));
    }
    Ok(())
}

/// Mean and standard deviation of one variable, from training data only.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Scaler {
    #[serde(with = "crate::training::artifact::exact_f64")]
    pub mean: f64,
    #[serde(with = "crate::training::artifact::exact_f64")]
    pub std: f64,
}

impl Scaler {
    /// Fits on `values`. A zero spread becomes 1 so a constant feature maps
    /// to 0 instead of NaN.
    pub fn fit(values: impl Iterator<Item = f64> + Clone) -> Scaler {
        let n = values.clone().count().max(1) as f64;
        let mean = values.clone().sum::<f64>() / n;
        let var = values.map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        let std = var.sqrt();
        Scaler {
            mean,
            std: if std > 1e-12 * mean.abs().max(1.0) {
                std
            } else {
                1.0
            },
        }
    }

    pub fn apply(&self, x: f64) -> f64 {
        (x - self.mean) / self.std
    }

    pub fn invert(&self, z: f64) -> f64 {
        z * self.std + self.mean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: PrepSettings = PrepSettings {
        min_days: 180,
        holdout_days: 30,
        max_gap_days: 7,
        latest_date: TODAY,
    };

    /// Tests run as if today were 2026-06-30 (rows start 2025-01-01).
    const TODAY: NaiveDate = NaiveDate::from_ymd_opt(2026, 6, 30).unwrap();

    fn day(i: i64) -> NaiveDate {
        NaiveDate::from_ymd_opt(2025, 1, 1).unwrap() + Duration::days(i)
    }

    fn row(i: i64, value: f64) -> RawRow {
        RawRow {
            id: Some(i),
            date: day(i),
            value,
            co2e_kg: value * 0.3,
            grid_factor: 0.3 + (i % 7) as f64 * 0.01,
            fingerprint: 7,
        }
    }

    fn rows(days: i64) -> Vec<RawRow> {
        (0..days).map(|i| row(i, 100.0 + (i % 7) as f64)).collect()
    }

    #[test]
    fn rows_of_one_date_are_summed_and_counted_as_duplicates() {
        let mut r = rows(200);
        r.push(RawRow {
            id: Some(999),
            ..row(10, 5.0)
        });
        let p = prepare_series(&r, Target::Value, &SETTINGS).unwrap();
        assert_eq!(p.series.values[10], 100.0 + 3.0 + 5.0);
        assert_eq!(p.report.duplicate_dates, 1);
        assert_eq!(p.report.rows_used, 201);
        assert_eq!(p.series.values.len(), 200);
    }

    #[test]
    fn short_gaps_are_interpolated_and_reported() {
        let r: Vec<RawRow> = rows(200)
            .into_iter()
            .filter(|x| !(50..53).contains(&(x.date - day(0)).num_days()))
            .collect();
        let p = prepare_series(&r, Target::Value, &SETTINGS).unwrap();
        assert_eq!(p.series.values.len(), 200);
        assert_eq!(p.report.gaps_filled, 3);
        assert_eq!(
            p.report.gaps,
            vec![DateRange {
                start: day(50),
                end: day(52)
            }]
        );
        // Linear between day 49 (100 + 0) and day 53 (100 + 4).
        assert_eq!(&p.series.values[50..53], &[101.0, 102.0, 103.0]);
    }

    #[test]
    fn a_long_gap_drops_the_older_stretch() {
        let mut r: Vec<RawRow> = (0..20).map(|i| row(i, 50.0 + i as f64)).collect();
        r.extend((40..240).map(|i| row(i, 100.0 + (i % 7) as f64)));
        let p = prepare_series(&r, Target::Value, &SETTINGS).unwrap();
        assert_eq!(p.series.start, day(40));
        assert_eq!(p.report.dropped_days, 20);
        assert_eq!(p.series.values.len(), 200);
    }

    #[test]
    fn bad_values_are_rejected_and_counted_by_reason() {
        let mut r = rows(200);
        r[3].value = f64::NAN;
        r[4].value = f64::INFINITY;
        r[5].value = f64::NEG_INFINITY;
        r[6].value = -1.0;
        r[7].value = 1e300;
        let p = prepare_series(&r, Target::Value, &SETTINGS).unwrap();
        let c = p.report.rejected;
        assert_eq!((c.nan, c.infinite, c.negative, c.absurd), (1, 2, 1, 1));
        assert_eq!(c.total(), 5);
        // The rejected days are filled from their neighbours.
        assert_eq!(p.report.gaps_filled, 5);
        assert!(p.series.values.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn one_day_short_is_insufficient_with_both_numbers() {
        let err = prepare_series(&rows(179), Target::Value, &SETTINGS).unwrap_err();
        assert_eq!(
            err,
            DataError::Insufficient {
                have: 179,
                need: 180,
                dropped: Dropped {
                    max_gap_days: 7,
                    ..Dropped::default()
                },
            }
        );
        assert_eq!(
            err.to_string(),
            "insufficient data: 179 usable days, at least 180 required"
        );
        assert!(prepare_series(&rows(180), Target::Value, &SETTINGS).is_ok());
    }

    #[test]
    fn constant_and_all_zero_series_are_invalid() {
        let zero: Vec<RawRow> = (0..200).map(|i| row(i, 0.0)).collect();
        let err = prepare_series(&zero, Target::Value, &SETTINGS).unwrap_err();
        assert!(err.to_string().contains("zero every day"), "{err}");
        let flat: Vec<RawRow> = (0..200).map(|i| row(i, 42.0)).collect();
        let err = prepare_series(&flat, Target::Value, &SETTINGS).unwrap_err();
        assert!(err.to_string().contains("constant"), "{err}");
    }

    #[test]
    fn the_holdout_is_the_last_days_in_order() {
        let r: Vec<RawRow> = (0..200).rev().map(|i| row(i, i as f64)).collect();
        let p = prepare_series(&r, Target::Value, &SETTINGS).unwrap();
        assert_eq!(p.train().len(), 170);
        assert_eq!(p.holdout().len(), 30);
        assert_eq!(p.holdout()[0], 170.0);
        assert_eq!(p.report.holdout.start, day(170));
        assert_eq!(p.report.train.end, day(169));
        assert!(p.train().windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn anomaly_rows_keep_duplicates_and_split_by_calendar_day() {
        let mut r = rows(200);
        r.push(RawRow {
            id: Some(1000),
            ..row(199, 80.0)
        });
        r[0].grid_factor = f64::NAN;
        r[1].value = -3.0;
        let p = prepare_rows(&r, &SETTINGS).unwrap();
        assert_eq!(p.rows.len(), 199);
        assert_eq!(p.report.rejected.nan, 1);
        let reasons: Vec<(Option<i64>, RejectReason)> =
            p.rejected_rows.iter().map(|x| (x.id, x.reason)).collect();
        assert_eq!(
            reasons,
            [
                (Some(0), RejectReason::Missing),
                (Some(1), RejectReason::Negative)
            ]
        );
        assert_eq!(p.report.duplicate_dates, 1);
        assert_eq!(p.holdout().len(), 31);
        assert!(p.holdout().iter().all(|x| x.date >= day(170)));
    }

    #[test]
    fn a_future_dated_row_is_rejected_and_counted_not_cutting_the_history() {
        let mut r = rows(200);
        r.push(RawRow {
            id: Some(1000),
            date: NaiveDate::from_ymd_opt(2100, 1, 1).unwrap(),
            ..row(0, 120.0)
        });
        let p = prepare_series(&r, Target::Value, &SETTINGS).unwrap();
        assert_eq!(p.series.values.len(), 200);
        assert_eq!(p.report.rejected.future, 1);
        assert_eq!(p.report.rejected.total(), 1);
        assert_eq!(p.report.dropped_days, 0);
        let p = prepare_rows(&r, &SETTINGS).unwrap();
        assert_eq!(p.rows.len(), 200);
        assert_eq!(p.report.rejected.future, 1);
        assert_eq!(p.report.holdout.end, day(199));
    }

    #[test]
    fn the_latest_date_itself_is_accepted() {
        let r = rows(200);
        let on_the_day = PrepSettings {
            latest_date: day(199),
            ..SETTINGS
        };
        let p = prepare_series(&r, Target::Value, &on_the_day).unwrap();
        assert_eq!(p.report.rejected.future, 0);
        let the_day_before = PrepSettings {
            latest_date: day(198),
            ..SETTINGS
        };
        let p = prepare_series(&r, Target::Value, &the_day_before).unwrap();
        assert_eq!(p.report.rejected.future, 1);
        assert_eq!(p.series.end(), day(198));
    }

    #[test]
    fn an_insufficient_reason_says_how_many_rows_were_dropped_and_why() {
        let mut r: Vec<RawRow> = (0..20).map(|i| row(i, 50.0 + i as f64)).collect();
        r.extend((40..190).map(|i| row(i, 100.0 + (i % 7) as f64)));
        r.push(RawRow {
            date: NaiveDate::from_ymd_opt(2100, 1, 1).unwrap(),
            ..row(500, 1.0)
        });
        let err = prepare_series(&r, Target::Value, &SETTINGS).unwrap_err();
        assert_eq!(
            err.to_string(),
            "insufficient data: 150 usable days, at least 180 required (21 rows dropped: \
             1 future-dated, 20 in an older stretch before a gap of more than 7 days)"
        );
    }

    #[test]
    fn usable_days_count_days_with_data_not_the_calendar_span() {
        // 20 rows spread over 191 days.
        let sparse: Vec<RawRow> = (0..20).map(|i| row(i * 10, 100.0 + i as f64)).collect();
        let err = prepare_rows(&sparse, &SETTINGS).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::Insufficient {
                    have: 20,
                    need: 180,
                    ..
                }
            ),
            "{err}"
        );
        // Every other day for 299 days: 150 days of data, the rest interpolated.
        let alternate: Vec<RawRow> = (0..150)
            .map(|i| row(i * 2, 100.0 + (i % 7) as f64))
            .collect();
        let err = prepare_series(&alternate, Target::Value, &SETTINGS).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::Insufficient {
                    have: 150,
                    need: 180,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn identical_rows_are_counted_once_and_other_meters_are_summed() {
        let mut r = rows(200);
        // A double import of day 10 (a new id, everything else equal).
        r.push(RawRow {
            id: Some(1000),
            ..r[10]
        });
        // Another meter on day 20 that happens to read the same numbers.
        r.push(RawRow {
            id: Some(1001),
            fingerprint: 8,
            ..r[20]
        });
        let p = prepare_series(&r, Target::Value, &SETTINGS).unwrap();
        assert_eq!(p.series.values[10], 103.0);
        assert_eq!(p.series.values[20], 2.0 * 106.0);
        assert_eq!(p.report.duplicate_rows, 1);
        assert_eq!(p.report.duplicate_dates, 1);
        assert_eq!(p.report.rows_used, 201);
        let p = prepare_rows(&r, &SETTINGS).unwrap();
        assert_eq!(p.rows.len(), 201);
        assert_eq!(p.report.duplicate_rows, 1);
    }

    #[test]
    fn the_scaler_maps_a_constant_to_zero() {
        let s = Scaler::fit([5.0, 5.0, 5.0].into_iter());
        assert_eq!(s.apply(5.0), 0.0);
        let s = Scaler::fit([1.0, 3.0].into_iter());
        assert_eq!((s.mean, s.std), (2.0, 1.0));
        assert_eq!(s.invert(s.apply(7.5)), 7.5);
    }
}
