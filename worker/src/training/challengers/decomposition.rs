//! Seasonal decomposition + exponential smoothing, from Grafana's `augurs`
//! toolkit (MIT OR Apache-2.0):
//!
//! - `mstl`: MSTL (multiple seasonal-trend decomposition by LOESS, Bandara
//!   et al. 2021) with a weekly and, when the history holds two years, a
//!   yearly season; the seasonally adjusted series (trend + remainder) is
//!   forecast by AutoETS (the non-seasonal ETS family, chosen by AICc, as in
//!   statsforecast) and the last cycle of each season is repeated.
//! - `stl_ets`: the same with the weekly season only (R's `stlf`), for
//!   series whose yearly shape is not stable enough to repeat.
//!
//! The model has no weights: the forecast decomposes the history it is
//! given (its last `fit_days`) and fits AutoETS on it, so a forecast from a
//! longer history uses the newest data, and the stored artifact (the config)
//! reproduces every forecast exactly. Fitting is in the milliseconds.
//!
//! ETS follows a level shift by construction: its level is an exponentially
//! weighted mean of the recent adjusted series.

use augurs_core::{Fit, Predict};
use augurs_ets::trend::AutoETSTrendModel;
use augurs_ets::AutoETS;
use augurs_mstl::MSTLModel;
use serde::{Deserialize, Serialize};

use super::ChallengerError;

const WEEK: usize = 7;
const YEAR: usize = 365;

/// Hyperparameters (and the whole state).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DecompositionConfig {
    /// Add the yearly season when the history holds two years of it.
    pub yearly: bool,
    /// Decompose the logarithm (multiplicative seasonality).
    pub log: bool,
    /// Most recent days of the history used.
    pub fit_days: usize,
}

impl DecompositionConfig {
    /// `mstl`: weekly + yearly.
    pub fn mstl() -> Self {
        DecompositionConfig {
            yearly: true,
            log: true,
            fit_days: 3 * YEAR,
        }
    }

    /// `stl_ets`: weekly only.
    pub fn stl_ets() -> Self {
        DecompositionConfig {
            yearly: false,
            log: true,
            fit_days: 2 * YEAR,
        }
    }
}

/// A decomposition forecaster (`mstl` or `stl_ets`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Decomposition {
    pub config: DecompositionConfig,
}

impl Decomposition {
    pub fn new(config: DecompositionConfig) -> Self {
        Decomposition { config }
    }

    fn name(&self) -> &'static str {
        if self.config.yearly {
            "mstl"
        } else {
            "stl_ets"
        }
    }

    /// Forecasts `horizon` days after `history`.
    pub fn forecast(&self, history: &[f64], horizon: usize) -> Result<Vec<f64>, ChallengerError> {
        let err = |reason: String| ChallengerError::Fit {
            algorithm: self.name(),
            reason,
        };
        let n = history.len().min(self.config.fit_days.max(3 * WEEK));
        if n < 3 * WEEK {
            return Err(err(format!("{} days is too short", history.len())));
        }
        let y = &history[history.len() - n..];
        let mean = y.iter().sum::<f64>() / n as f64;
        let offset = 0.05 * mean.max(1e-12);
        let z: Vec<f64> = if self.config.log {
            y.iter().map(|&v| (v.max(0.0) + offset).ln()).collect()
        } else {
            y.to_vec()
        };
        // MSTL needs more than two cycles of every season.
        let periods = if self.config.yearly && n > 2 * YEAR {
            vec![WEEK, YEAR]
        } else {
            vec![WEEK]
        };
        let trend = AutoETSTrendModel::from(AutoETS::non_seasonal());
        let fitted = MSTLModel::new(periods, trend)
            .fit(&z)
            .map_err(|e| err(e.to_string()))?;
        let forecast = fitted
            .predict(horizon, None)
            .map_err(|e| err(e.to_string()))?;
        let out: Vec<f64> = forecast
            .point
            .into_iter()
            .map(|p| if self.config.log { p.exp() - offset } else { p })
            .collect();
        if out.len() != horizon || out.iter().any(|x| !x.is_finite()) {
            return Err(err("the forecast is not finite".into()));
        }
        Ok(out.into_iter().map(|x| x.max(0.0)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weekly(days: usize, level: impl Fn(usize) -> f64) -> Vec<f64> {
        (0..days)
            .map(|i| level(i) * if i % 7 >= 5 { 0.7 } else { 1.1 })
            .collect()
    }

    #[test]
    fn the_decomposition_repeats_a_clean_weekly_shape() {
        let all = weekly(430, |_| 100.0);
        let (train, test) = all.split_at(400);
        for config in [DecompositionConfig::stl_ets(), DecompositionConfig::mstl()] {
            let f = Decomposition::new(config).forecast(train, 30).unwrap();
            for (a, p) in test.iter().zip(&f) {
                assert!((a - p).abs() < 2.0, "{config:?}: {a} vs {p}");
            }
        }
    }

    #[test]
    fn the_decomposition_follows_a_level_shift() {
        // Two years at 100, then a drop to 60 for the last 45 days.
        let all = weekly(800, |i| if i >= 725 { 60.0 } else { 100.0 });
        let (train, test) = all.split_at(770);
        let f = Decomposition::new(DecompositionConfig::mstl())
            .forecast(train, 30)
            .unwrap();
        let mae = test.iter().zip(&f).map(|(a, p)| (a - p).abs()).sum::<f64>() / 30.0;
        // The old level is 40 units away (28 at weekends); the forecast must
        // recover at least three quarters of the shift.
        assert!(mae < 9.0, "mae {mae}");
    }
}
