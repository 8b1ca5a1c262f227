//! Time context for anomaly scoring: what each day was expected to be.
//!
//! Rows are summed per date into a daily view (energy `value`, `co2e_kg`),
//! and every day gets four context features, all in robust standard
//! deviations so they mean the same thing on a household meter and on a
//! national grid:
//!
//! - **value residual** and **co2e residual**: the day minus the median of
//!   the same weekday over the previous [`WEEKS`] weeks (a seasonal
//!   expectation that one odd week cannot move), moved to the level of the
//!   last seven days ([`relative_to_last_week`]: a slow drift of use or of
//!   the grid factor is not a residual), divided by the robust spread
//!   (1.4826 × MAD) of those residuals over the previous [`SCALE_DAYS`] days;
//! - **day-over-day change** of the value, scaled the same way by the spread
//!   of recent changes;
//! - **recent level**: the median value residual of the last three days, which
//!   stays high through a level shift while a one-day spike moves it little.
//!
//! Every feature of a day uses that day and earlier days only, so scoring
//! the last day of the data needs no future. The spreads are recalibrated on
//! recent data at every day, so a slow drift in volume does not flood flags.

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDate};

use crate::training::data::FeatureRow;

/// Weeks of same-weekday history behind the seasonal expectation.
pub const WEEKS: i64 = 6;
/// Days of recent residuals the robust spread is measured on.
pub const SCALE_DAYS: usize = 91;
/// Context features per day.
pub const CONTEXT_FEATURES: usize = 4;
/// Context features are clipped here (robust sd): beyond it, a bigger number
/// says nothing more and would only stretch the models' standardization.
const CLIP: f64 = 25.0;
/// 1.4826 × MAD estimates the standard deviation of normal data.
const MAD_TO_SD: f64 = 1.4826;

/// One date of the daily view: the sums of its rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Day {
    pub date: NaiveDate,
    pub value: f64,
    pub co2e: f64,
}

/// The context of one day, in robust standard deviations.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DayContext {
    pub value_residual: f64,
    pub co2e_residual: f64,
    pub value_change: f64,
    pub level: f64,
}

impl DayContext {
    pub fn features(&self) -> [f64; CONTEXT_FEATURES] {
        [
            self.value_residual,
            self.co2e_residual,
            self.value_change,
            self.level,
        ]
    }
}

/// Rows (sorted by date) summed per date.
pub fn daily(rows: &[FeatureRow]) -> Vec<Day> {
    let mut by_date: BTreeMap<NaiveDate, (f64, f64)> = BTreeMap::new();
    for r in rows {
        let e = by_date.entry(r.date).or_default();
        e.0 += r.features[1];
        e.1 += r.features[0];
    }
    by_date
        .into_iter()
        .map(|(date, (value, co2e))| Day { date, value, co2e })
        .collect()
}

/// The median of the finite values (`None` when there are none).
pub fn median(xs: &mut [f64]) -> Option<f64> {
    let n = xs.len();
    if n == 0 {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    Some(if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    })
}

/// 1.4826 × the median absolute deviation from the median.
pub fn robust_sd(xs: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    let m = median(&mut v)?;
    let mut dev: Vec<f64> = v.iter().map(|x| (x - m).abs()).collect();
    median(&mut dev).map(|d| d * MAD_TO_SD)
}

/// Residuals of `xs` (one per day of `days`) from the same weekday's median
/// over the previous [`WEEKS`] weeks; NaN where fewer than two such weeks
/// exist.
pub fn weekday_residuals(days: &[Day], xs: &[f64]) -> Vec<f64> {
    let index: BTreeMap<NaiveDate, usize> =
        days.iter().enumerate().map(|(i, d)| (d.date, i)).collect();
    days.iter()
        .enumerate()
        .map(|(i, d)| {
            let mut same: Vec<f64> = (1..=WEEKS)
                .filter_map(|k| index.get(&(d.date - Duration::days(7 * k))))
                .map(|&j| xs[j])
                .collect();
            if same.len() < 2 {
                return f64::NAN;
            }
            xs[i] - median(&mut same).expect("two values")
        })
        .collect()
}

/// Each residual minus the median of the previous seven days' residuals:
/// the weekday expectation of six weeks ago, moved to the level of the last
/// week, so a seasonal drift (spring, a cold month) is not a residual. A
/// one-day spike stays whole; a level shift shows for its first days.
pub fn relative_to_last_week(raw: &[f64]) -> Vec<f64> {
    (0..raw.len())
        .map(|i| {
            let mut prev: Vec<f64> = raw[i.saturating_sub(7)..i]
                .iter()
                .copied()
                .filter(|x| x.is_finite())
                .collect();
            match median(&mut prev) {
                Some(m) if prev.len() >= 4 => raw[i] - m,
                _ => raw[i],
            }
        })
        .collect()
}

/// Each raw residual divided by the robust spread of the previous
/// [`SCALE_DAYS`] residuals (the first ones, while fewer than 28 precede
/// a day). `floor` keeps a spread of exactly zero (a constant series) from
/// turning rounding noise into huge scores.
pub fn scale_by_recent_spread(raw: &[f64], floor: f64) -> Vec<f64> {
    let finite: Vec<f64> = raw.iter().copied().filter(|x| x.is_finite()).collect();
    let warmup = robust_sd(&finite[..finite.len().min(SCALE_DAYS)]).unwrap_or(0.0);
    let mut out = Vec::with_capacity(raw.len());
    let mut recent: std::collections::VecDeque<f64> = std::collections::VecDeque::new();
    for &e in raw {
        let sd = if recent.len() >= 28 {
            robust_sd(recent.make_contiguous()).unwrap_or(warmup)
        } else {
            warmup
        }
        .max(floor);
        out.push(if e.is_finite() {
            (e / sd).clamp(-CLIP, CLIP)
        } else {
            0.0
        });
        if e.is_finite() {
            recent.push_back(e);
            if recent.len() > SCALE_DAYS {
                recent.pop_front();
            }
        }
    }
    out
}

/// The smallest spread a residual is divided by: a millionth of the typical
/// level (and never below 1e-9), so rounding noise on a flat series stays
/// near zero.
fn spread_floor(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().map(|x| x.abs()).collect();
    (median(&mut v).unwrap_or(0.0) * 1e-6).max(1e-9)
}

/// The context of every day of `days`.
pub fn context(days: &[Day]) -> Vec<DayContext> {
    let values: Vec<f64> = days.iter().map(|d| d.value).collect();
    let co2e: Vec<f64> = days.iter().map(|d| d.co2e).collect();
    let value_raw = weekday_residuals(days, &values);
    let co2e_raw = weekday_residuals(days, &co2e);
    let value_residual =
        scale_by_recent_spread(&relative_to_last_week(&value_raw), spread_floor(&values));
    let co2e_residual =
        scale_by_recent_spread(&relative_to_last_week(&co2e_raw), spread_floor(&co2e));
    let change_raw: Vec<f64> = (0..days.len())
        .map(|i| {
            if i > 0 && days[i].date - days[i - 1].date == Duration::days(1) {
                values[i] - values[i - 1]
            } else {
                f64::NAN
            }
        })
        .collect();
    let value_change = scale_by_recent_spread(&change_raw, spread_floor(&values));
    (0..days.len())
        .map(|i| {
            let mut last3: Vec<f64> = value_residual[i.saturating_sub(2)..=i].to_vec();
            DayContext {
                value_residual: value_residual[i],
                co2e_residual: co2e_residual[i],
                value_change: value_change[i],
                level: median(&mut last3).unwrap_or(0.0),
            }
        })
        .collect()
}

/// Each row's date context, in row order (rows sorted by date).
pub fn row_context(rows: &[FeatureRow]) -> Vec<DayContext> {
    let days = daily(rows);
    let ctx = context(&days);
    let at: BTreeMap<NaiveDate, DayContext> = days
        .iter()
        .map(|d| d.date)
        .zip(ctx.iter().copied())
        .collect();
    rows.iter()
        .map(|r| at.get(&r.date).copied().unwrap_or_default())
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn d0() -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 1, 1).unwrap()
    }

    /// A weekly pattern with small deterministic noise.
    pub(crate) fn seasonal(n: usize) -> Vec<Day> {
        let mut state = 17u64;
        (0..n)
            .map(|i| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let noise = ((state >> 40) as f64 / (1u64 << 24) as f64 - 0.5) * 4.0;
                let value = 100.0 + [0.0, 8.0, 12.0, 10.0, 9.0, -25.0, -30.0][i % 7] + noise;
                Day {
                    date: d0() + Duration::days(i as i64),
                    value,
                    co2e: value * 0.4,
                }
            })
            .collect()
    }

    #[test]
    fn a_weekday_residual_is_measured_against_the_same_weekday() {
        let days = seasonal(100);
        let ctx = context(&days);
        // The weekly pattern is expected: residuals stay small.
        assert!(ctx[60..].iter().all(|c| c.value_residual.abs() < 4.0));
        let mut spiked = days.clone();
        spiked[80].value += 20.0;
        let after = context(&spiked);
        assert!(after[80].value_residual > 8.0, "{:?}", after[80]);
        // The change from the day before includes the weekly swing, so it
        // moves less than the residual.
        assert!(
            after[80].value_change > ctx[80].value_change + 1.5,
            "{:?}",
            after[80]
        );
    }

    #[test]
    fn robust_sd_of_normal_like_data_is_near_its_spread() {
        assert_eq!(robust_sd(&[1.0, 2.0, 3.0]), Some(MAD_TO_SD));
        assert_eq!(robust_sd(&[]), None);
        let mut v = [3.0, 1.0, 2.0, 4.0];
        assert_eq!(median(&mut v), Some(2.5));
    }

    #[test]
    fn a_flat_series_gives_zero_context_not_noise() {
        let days: Vec<Day> = (0..60)
            .map(|i| Day {
                date: d0() + Duration::days(i),
                value: 5.0 + if i % 2 == 0 { 1e-13 } else { 0.0 },
                co2e: 2.0,
            })
            .collect();
        let ctx = context(&days);
        assert!(ctx
            .iter()
            .all(|c| c.features().iter().all(|x| x.abs() < 1e-3)));
    }
}
