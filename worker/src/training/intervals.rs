//! Prediction intervals by split conformal calibration on the model's own
//! rolling forecasts.
//!
//! The model forecasts `horizon` days from each of `origins` earlier cut-offs
//! of the history it is given (the last `horizon` days, the `horizon` days
//! before them, …) and its errors there are the calibration set. Errors are
//! log ratios `ln((actual + c) / (forecast + c))` (`c` a small offset, 5 % of
//! the history's mean, so zero days stay finite): energy and emissions
//! errors grow with the level, and a ratio carries over from a calibration
//! window to the forecast window when the level has changed. The band of
//! forecast day `h` uses the errors at horizons `h − smoothing … h +
//! smoothing` of every calibration origin, so errors widen with the horizon
//! without needing hundreds of origins; its bounds are the empirical
//! `α/2` and `1 − α/2` quantiles (with the conformal finite-sample
//! correction) applied to the point forecast.
//!
//! The band is a function of the model and the history only, so a stored
//! model reproduces its intervals exactly.

use serde::{Deserialize, Serialize};

/// Hyperparameters of the intervals.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IntervalConfig {
    /// Calibration origins (each one `horizon` days before the next).
    pub origins: usize,
    /// Neighbouring horizons pooled on each side.
    pub smoothing: usize,
}

impl Default for IntervalConfig {
    fn default() -> Self {
        IntervalConfig {
            origins: 8,
            smoothing: 3,
        }
    }
}

/// The 80 % and 95 % bounds of one forecast day.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Band {
    pub lower_80: f64,
    pub upper_80: f64,
    pub lower_95: f64,
    pub upper_95: f64,
}

/// Calibration errors: `errors[o][h]` is the log ratio at horizon `h` from
/// origin `o`, and the offset they were computed with.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    pub offset: f64,
    pub errors: Vec<Vec<f64>>,
}

/// The calibration origins of a history of `len` days: cut-offs `len −
/// horizon·j` for `j = 1 ..= origins`, keeping at least `min_history` days
/// before each. Returns the history lengths at the cut-offs.
pub fn origins(
    len: usize,
    horizon: usize,
    config: &IntervalConfig,
    min_history: usize,
) -> Vec<usize> {
    (1..=config.origins)
        .filter_map(|j| len.checked_sub(horizon * j))
        .filter(|&cut| cut >= min_history)
        .collect()
}

/// The calibration of `forecast` (history → `horizon` days) on `history`.
pub fn calibrate(
    history: &[f64],
    horizon: usize,
    config: &IntervalConfig,
    min_history: usize,
    forecast: impl Fn(&[f64], usize) -> Vec<f64>,
) -> Calibration {
    let mean = history.iter().sum::<f64>() / history.len().max(1) as f64;
    let offset = 0.05 * mean.abs().max(1e-12);
    let errors = origins(history.len(), horizon, config, min_history)
        .into_iter()
        .map(|cut| {
            let pred = forecast(&history[..cut], horizon);
            history[cut..cut + horizon]
                .iter()
                .zip(&pred)
                .map(|(a, p)| ((a.max(0.0) + offset) / (p.max(0.0) + offset)).ln())
                .collect()
        })
        .collect();
    Calibration { offset, errors }
}

/// Bands around `point` (one forecast day per entry), or `None` when the
/// history was too short for any calibration origin.
pub fn bands(
    point: &[f64],
    calibration: &Calibration,
    config: &IntervalConfig,
) -> Option<Vec<Band>> {
    if calibration.errors.is_empty() {
        return None;
    }
    let c = calibration.offset;
    Some(
        point
            .iter()
            .enumerate()
            .map(|(h, &p)| {
                let lo = h.saturating_sub(config.smoothing);
                let mut pool: Vec<f64> = calibration
                    .errors
                    .iter()
                    .flat_map(|e| {
                        let hi = (h + config.smoothing + 1).min(e.len());
                        e[lo.min(hi)..hi].iter().copied()
                    })
                    .filter(|x| x.is_finite())
                    .collect();
                pool.sort_by(f64::total_cmp);
                let at = |q: f64| {
                    let r = conformal_quantile(&pool, q);
                    ((p.max(0.0) + c) * r.exp() - c).max(0.0)
                };
                Band {
                    lower_80: at(0.10),
                    upper_80: at(0.90),
                    lower_95: at(0.025),
                    upper_95: at(0.975),
                }
            })
            .collect(),
    )
}

/// The `q` quantile of sorted `xs` with the split-conformal correction:
/// the `⌈(n + 1)·q⌉`-th smallest for an upper bound, the `⌊(n + 1)·q⌋`-th
/// for a lower one, clamped to the sample.
fn conformal_quantile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let n = xs.len();
    let rank = if q >= 0.5 {
        ((n + 1) as f64 * q).ceil() as usize
    } else {
        ((n + 1) as f64 * q).floor() as usize
    };
    xs[rank.clamp(1, n) - 1]
}

/// Share of `actual` days inside their band (80 %, 95 %).
pub fn coverage(actual: &[f64], bands: &[Band]) -> (f64, f64) {
    let n = actual.len().min(bands.len()).max(1) as f64;
    let inside = |lo: fn(&Band) -> f64, hi: fn(&Band) -> f64| {
        actual
            .iter()
            .zip(bands)
            .filter(|(a, b)| **a >= lo(b) && **a <= hi(b))
            .count() as f64
            / n
    };
    (
        inside(|b| b.lower_80, |b| b.upper_80),
        inside(|b| b.lower_95, |b| b.upper_95),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic standard normal stream (Box–Muller on a 64-bit LCG).
    fn gaussian(n: usize, mut state: u64) -> Vec<f64> {
        let mut uniform = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let (u, v) = (uniform(), uniform());
                (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
            })
            .collect()
    }

    #[test]
    fn bands_cover_gaussian_noise_at_their_nominal_rates() {
        // A level of 100 with N(0, 5²) noise; the forecast is the true level,
        // so the errors are the noise alone.
        let noise = gaussian(30_000, 7);
        let series: Vec<f64> = noise.iter().map(|z| 100.0 + 5.0 * z).collect();
        let config = IntervalConfig::default();
        let horizon = 30;
        let (mut in80, mut in95, mut days, mut width80) = (0.0, 0.0, 0.0, 0.0);
        // Many independent trials: calibrate on a history, score the next 30 days.
        let trial_len = config.origins * horizon + horizon;
        for t in 0..series.len() / trial_len {
            let chunk = &series[t * trial_len..(t + 1) * trial_len];
            let (history, future) = chunk.split_at(chunk.len() - horizon);
            let cal = calibrate(history, horizon, &config, 0, |_, h| vec![100.0; h]);
            let b = bands(&vec![100.0; horizon], &cal, &config).unwrap();
            let (c80, c95) = coverage(future, &b);
            width80 += b.iter().map(|b| b.upper_80 - b.lower_80).sum::<f64>();
            in80 += c80 * horizon as f64;
            in95 += c95 * horizon as f64;
            days += horizon as f64;
        }
        let (c80, c95) = (in80 / days, in95 / days);
        assert!((c80 - 0.80).abs() < 0.05, "80 % band covers {c80}");
        assert!((c95 - 0.95).abs() < 0.05, "95 % band covers {c95}");
        // And the 80 % band is about ±1.28σ wide on average (12.8 units),
        // a little wider for the conformal correction.
        let w = width80 / days;
        assert!((12.0..15.5).contains(&w), "mean 80 % width {w}");
    }

    #[test]
    fn no_calibration_origin_means_no_band() {
        let cal = calibrate(&[1.0; 20], 30, &IntervalConfig::default(), 0, |_, h| {
            vec![1.0; h]
        });
        assert!(bands(&[1.0], &cal, &IntervalConfig::default()).is_none());
    }
}
