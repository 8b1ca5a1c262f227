//! Built-in data-quality detectors. They need no training and explain
//! themselves: every row they flag carries a [`FlagKind`].
//!
//! - **ratio break**: `co2e_kg` no longer equals `value × grid_factor` up to
//!   the organization's usual constant (unit conversions make it 1, 1/1000,
//!   …). The constant and its usual spread are the robust median and spread
//!   of `ln(co2e / (value × factor))` over the previous [`RATIO_DAYS`] days;
//!   the check runs only where the relation holds (spread below
//!   [`RATIO_MAX_SPREAD`] and below a quarter of the spread of `ln co2e`
//!   itself: a constant CO2e column does not "follow" a flat value), and flags a row more than [`RATIO_TOLERANCE`]
//!   *and* eight spreads away from it.
//! - **stuck**: the same non-zero daily value (or CO2e) on at least
//!   [`STUCK_RUN`] consecutive days; every repeat after the first reading is
//!   flagged. A series that repeats itself often (more than 10 % of days, a
//!   bill spread evenly over days) is not checked.
//! - **spike / dip**: value or CO2e [`SPIKE_SD`] robust sd or more from the
//!   same weekday's median of the previous six weeks, taken relative to the
//!   last week's level (the context's residuals), so a seasonal drift of
//!   use or of the grid factor is not a dip.
//! - **level shift**: Page's two-sided CUSUM on the weekday residuals taken
//!   relative to the last week (robust sd, clipped to ±[`CUSUM_CLIP`] so one
//!   spike alone cannot raise it past the interval), with allowance
//!   [`CUSUM_K`] and decision interval [`CUSUM_H`]; the days that pushed the
//!   sum over the interval are flagged. The constants were chosen on the
//!   evaluation (`docs/anomaly-eval.md`): looser ones flag every cold spell.
//! - **negative / missing / absurd / future-dated** readings are the rows the
//!   data preparation rejects ([`crate::training::data::RejectedRow`]); the
//!   pipeline flags them instead of dropping them silently.

use chrono::Duration;
use serde::{Deserialize, Serialize};

use super::context::{robust_sd, Day, DayContext};
use crate::training::data::{FeatureRow, RejectReason};

/// Days of history a ratio is compared with.
pub const RATIO_DAYS: i64 = 91;
/// The relation holds where `ln` ratios spread less than this.
pub const RATIO_MAX_SPREAD: f64 = 0.05;
/// Smallest relative departure flagged as a ratio break (2 %).
pub const RATIO_TOLERANCE: f64 = 0.02;
/// Consecutive equal days that make a stuck run.
pub const STUCK_RUN: usize = 3;
pub const CUSUM_K: f64 = 2.0;
pub const CUSUM_H: f64 = 3.0;
pub const CUSUM_CLIP: f64 = 4.0;

/// Why a row was flagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagKind {
    /// The model's score is above its threshold and the day is above its
    /// seasonal expectation.
    Spike,
    /// The model's score is above its threshold and the day is below its
    /// seasonal expectation.
    Dip,
    /// The model's score is above its threshold; the day itself is not far
    /// from its expectation (an unusual combination of the features).
    Unusual,
    RatioBreak,
    Stuck,
    LevelShift,
    Negative,
    Missing,
    Absurd,
    FutureDated,
}

impl FlagKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FlagKind::Spike => "spike",
            FlagKind::Dip => "dip",
            FlagKind::Unusual => "unusual",
            FlagKind::RatioBreak => "ratio_break",
            FlagKind::Stuck => "stuck",
            FlagKind::LevelShift => "level_shift",
            FlagKind::Negative => "negative",
            FlagKind::Missing => "missing",
            FlagKind::Absurd => "absurd",
            FlagKind::FutureDated => "future_dated",
        }
    }

    /// The kind of a rejected row.
    pub fn of_rejection(reason: RejectReason) -> FlagKind {
        match reason {
            RejectReason::Missing => FlagKind::Missing,
            RejectReason::Negative => FlagKind::Negative,
            RejectReason::Absurd => FlagKind::Absurd,
            RejectReason::FutureDated => FlagKind::FutureDated,
        }
    }

    /// The kind of a model flag, from the direction of the day's residuals.
    pub fn of_model_flag(ctx: &DayContext) -> FlagKind {
        let r = if ctx.value_residual.abs() >= ctx.co2e_residual.abs() {
            ctx.value_residual
        } else {
            ctx.co2e_residual
        };
        if r >= 3.0 {
            FlagKind::Spike
        } else if r <= -3.0 {
            FlagKind::Dip
        } else {
            FlagKind::Unusual
        }
    }
}

impl std::fmt::Display for FlagKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `ln(co2e / (value × factor))`, or `None` when it is undefined because
/// nothing was used and nothing emitted (or the factor is not positive).
fn log_ratio(row: &FeatureRow) -> Option<f64> {
    let [co2e, value, factor] = row.features;
    if factor <= 0.0 || (value <= 0.0 && co2e <= 0.0) {
        return None;
    }
    if value <= 0.0 || co2e <= 0.0 {
        // Emissions without use, or use without emissions.
        return Some(if co2e > 0.0 {
            f64::INFINITY
        } else {
            f64::NEG_INFINITY
        });
    }
    Some((co2e / (value * factor)).ln())
}

/// Rows (sorted by date) whose CO2e departs from `value × grid_factor`.
pub fn ratio_breaks(rows: &[FeatureRow]) -> Vec<bool> {
    let ratios: Vec<Option<f64>> = rows.iter().map(log_ratio).collect();
    let mut out = vec![false; rows.len()];
    let mut lo = 0;
    for (i, row) in rows.iter().enumerate() {
        let Some(r) = ratios[i] else { continue };
        while rows[lo].date < row.date - Duration::days(RATIO_DAYS) {
            lo += 1;
        }
        // The previous days' ratios, or the first ones at the start.
        let window: Vec<f64> = if i - lo >= 28 {
            ratios[lo..i].iter().flatten().copied().collect()
        } else {
            ratios[..rows.len().min(RATIO_DAYS as usize)]
                .iter()
                .flatten()
                .copied()
                .collect()
        };
        let finite: Vec<f64> = window.into_iter().filter(|x| x.is_finite()).collect();
        if finite.len() < 14 {
            continue;
        }
        let mut sorted = finite.clone();
        let centre = super::context::median(&mut sorted).expect("non-empty");
        let spread = robust_sd(&finite).unwrap_or(f64::INFINITY);
        let (from, to) = if i - lo >= 28 {
            (lo, i)
        } else {
            (0, rows.len().min(RATIO_DAYS as usize))
        };
        let co2e_spread = robust_sd(
            &rows[from..to]
                .iter()
                .filter(|r| r.features[0] > 0.0)
                .map(|r| r.features[0].ln())
                .collect::<Vec<_>>(),
        )
        .unwrap_or(0.0);
        if spread >= RATIO_MAX_SPREAD || spread >= 0.25 * co2e_spread {
            continue;
        }
        let tolerance = (8.0 * spread).max(RATIO_TOLERANCE);
        out[i] = (r - centre).abs() > tolerance;
    }
    out
}

fn stuck_runs(xs: &[f64], consecutive: &[bool]) -> Vec<bool> {
    let same = |i: usize| {
        consecutive[i] && xs[i] != 0.0 && (xs[i] - xs[i - 1]).abs() <= 1e-12 * xs[i].abs()
    };
    let repeats = (1..xs.len()).filter(|&i| same(i)).count();
    let mut out = vec![false; xs.len()];
    if xs.len() < 2 || repeats * 10 > xs.len() - 1 {
        return out;
    }
    let mut start = 0;
    for i in 1..=xs.len() {
        if i < xs.len() && same(i) {
            continue;
        }
        if i - start >= STUCK_RUN {
            out[start + 1..i].iter_mut().for_each(|f| *f = true);
        }
        start = i;
    }
    out
}

/// Days (of the daily view) inside a stuck run of value or CO2e.
pub fn stuck_days(days: &[Day]) -> Vec<bool> {
    let consecutive: Vec<bool> = (0..days.len())
        .map(|i| i > 0 && days[i].date - days[i - 1].date == Duration::days(1))
        .collect();
    let values: Vec<f64> = days.iter().map(|d| d.value).collect();
    let co2e: Vec<f64> = days.iter().map(|d| d.co2e).collect();
    let a = stuck_runs(&values, &consecutive);
    let b = stuck_runs(&co2e, &consecutive);
    a.into_iter().zip(b).map(|(x, y)| x || y).collect()
}

/// One side of Page's CUSUM on clipped residuals: the days that raised the
/// sum while it was above the decision interval, and the days of the run
/// that led there.
fn cusum_side(z: &[f64], sign: f64) -> Vec<bool> {
    let mut out = vec![false; z.len()];
    let mut s = 0.0f64;
    let mut run_start = 0;
    for (i, &x) in z.iter().enumerate() {
        let x = (sign * x).clamp(-CUSUM_CLIP, CUSUM_CLIP);
        if s == 0.0 {
            run_start = i;
        }
        s = (s + x - CUSUM_K).max(0.0);
        if s > CUSUM_H {
            for (j, flag) in out.iter_mut().enumerate().take(i + 1).skip(run_start) {
                if sign * z[j] > CUSUM_K {
                    *flag = true;
                }
            }
            run_start = i + 1;
        }
    }
    out
}

/// Robust sd from the weekday expectation that makes a spike or a dip.
pub const SPIKE_SD: f64 = 3.3;

/// Days whose value or CO2e is [`SPIKE_SD`] robust sd or more above (spike)
/// or below (dip) the same weekday's median of recent weeks.
pub fn seasonal_outliers(ctx: &[DayContext]) -> Vec<Option<FlagKind>> {
    ctx.iter()
        .map(|c| {
            let r = if c.value_residual.abs() >= c.co2e_residual.abs() {
                c.value_residual
            } else {
                c.co2e_residual
            };
            if r >= SPIKE_SD {
                Some(FlagKind::Spike)
            } else if r <= -SPIKE_SD {
                Some(FlagKind::Dip)
            } else {
                None
            }
        })
        .collect()
}

/// Days of a level shift in value or CO2e (see the module docs).
pub fn level_shift_days(ctx: &[DayContext]) -> Vec<bool> {
    let value: Vec<f64> = ctx.iter().map(|c| c.value_residual).collect();
    let co2e: Vec<f64> = ctx.iter().map(|c| c.co2e_residual).collect();
    let sides = [
        cusum_side(&value, 1.0),
        cusum_side(&value, -1.0),
        cusum_side(&co2e, 1.0),
        cusum_side(&co2e, -1.0),
    ];
    (0..ctx.len()).map(|i| sides.iter().any(|s| s[i])).collect()
}

#[cfg(test)]
mod tests {
    use super::super::context::tests::{d0, seasonal};
    use super::super::context::{context, Day};
    use super::*;

    fn rows_of(days: &[Day]) -> Vec<FeatureRow> {
        days.iter()
            .enumerate()
            .map(|(i, d)| FeatureRow {
                id: Some(i as i64),
                date: d.date,
                features: [d.co2e, d.value, 0.4],
            })
            .collect()
    }

    #[test]
    fn a_broken_ratio_is_flagged_and_only_there() {
        let days = seasonal(200);
        let mut rows = rows_of(&days);
        rows[150].features[0] *= 1.25;
        let flags = ratio_breaks(&rows);
        let hits: Vec<usize> = (0..rows.len()).filter(|&i| flags[i]).collect();
        assert_eq!(hits, [150]);
    }

    #[test]
    fn the_ratio_check_is_off_where_co2e_does_not_follow_value() {
        let days = seasonal(200);
        let mut rows = rows_of(&days);
        // A constant CO2e column (not given): no relation to check.
        rows.iter_mut().for_each(|r| r.features[0] = 1.0);
        assert!(ratio_breaks(&rows).iter().all(|f| !f));
    }

    #[test]
    fn a_stuck_run_is_flagged_after_its_first_reading() {
        let mut days = seasonal(100);
        for i in 51..55 {
            days[i].value = days[50].value;
        }
        let flags = stuck_days(&days);
        let hits: Vec<usize> = (0..days.len()).filter(|&i| flags[i]).collect();
        assert_eq!(hits, [51, 52, 53, 54]);
        // Two equal days are not yet a run.
        let mut days = seasonal(100);
        days[51].value = days[50].value;
        assert!(stuck_days(&days).iter().all(|f| !f));
    }

    #[test]
    fn a_level_shift_is_flagged_on_its_days() {
        let mut days = seasonal(200);
        for d in &mut days[150..155] {
            d.value *= 1.15;
            d.co2e *= 1.15;
        }
        let flags = level_shift_days(&context(&days));
        assert!(
            flags[150..155].iter().filter(|f| **f).count() >= 3,
            "{flags:?}"
        );
        let outside = (0..200)
            .filter(|i| !(150..160).contains(i) && flags[*i])
            .count();
        assert_eq!(outside, 0);
    }

    #[test]
    fn spikes_and_dips_against_the_weekday_expectation_are_flagged() {
        let mut days = seasonal(200);
        days[150].value += 15.0;
        days[170].value -= 15.0;
        let kinds = seasonal_outliers(&context(&days));
        let hits: Vec<(usize, FlagKind)> = kinds
            .iter()
            .enumerate()
            .filter_map(|(i, k)| k.map(|k| (i, k)))
            .collect();
        assert_eq!(hits, [(150, FlagKind::Spike), (170, FlagKind::Dip)]);
    }

    #[test]
    fn a_single_spike_is_not_a_level_shift() {
        let mut days = seasonal(200);
        days[150].value *= 1.5;
        days[150].co2e *= 1.5;
        let flags = level_shift_days(&context(&days));
        assert!(flags.iter().all(|f| !f));
        assert_eq!(days[0].date, d0());
    }
}
