//! `lstm_hybrid`: the seasonal regression and the seed LSTM together. The
//! regression carries what is regular (trend, day of week, yearly shape,
//! Christmas); the LSTM (seed architecture, standardized inputs) learns the
//! series of what the regression leaves, day by day, and forecasts its next
//! 30 days recursively. The forecast is the regression's plus the LSTM's
//! residual forecast, in the regression's fitted scale (the logarithm by
//! default), which replaces the regression's fixed anchoring: a recent
//! departure (a cold week, a lockdown) is carried forward as far as the
//! residuals' own history says such departures last.
//!
//! The LSTM alone must learn the seasonal shape from 30-day windows of the
//! raw series; here it only has to learn how departures persist, which is
//! why the hybrid can beat both of its parts.

use std::sync::Arc;

use chrono::{Duration, NaiveDate};

use super::challengers::seasonal_regression::{SeasonalRegression, SeasonalRegressionConfig};
use super::data::Scaler;
use super::forecast::{train_forecaster, LstmConfig, TrainedForecaster};
use super::progress::EpochReport;

/// The algorithm name of the hybrid.
pub const NAME: &str = "lstm_hybrid";

/// A residual forecast beyond this many standard deviations of the fitted
/// residuals is cut back to it: a recursion that drifts cannot take the
/// forecast further from the regression than the history ever went.
const MAX_RESIDUAL_SD: f64 = 4.0;

/// A fitted hybrid.
#[derive(Debug, Clone)]
pub struct Hybrid {
    pub base: SeasonalRegression,
    pub lstm: Arc<TrainedForecaster>,
    /// Standardizes the residuals (fitted on the training residuals).
    pub scaler: Scaler,
}

impl Hybrid {
    /// Fits the regression on `history` (first day `start`), then the LSTM
    /// on the regression's residuals over the days it was fitted on.
    pub fn fit(
        history: &[f64],
        start: NaiveDate,
        base: &SeasonalRegressionConfig,
        lstm: &LstmConfig,
        seed: u64,
        on_epoch: &mut dyn FnMut(&EpochReport),
    ) -> Result<Hybrid, String> {
        let base_model =
            SeasonalRegression::fit(history, start, base).map_err(|e| e.to_string())?;
        let n = history.len().min(base.fit_days.max(14));
        let skip = history.len() - n;
        let residuals = base_model.residuals(&history[skip..], start + Duration::days(skip as i64));
        let scaler = Scaler::fit(residuals.iter().copied());
        let normed: Vec<f32> = residuals.iter().map(|&r| scaler.apply(r) as f32).collect();
        let mut relabel = |e: &EpochReport| {
            on_epoch(&EpochReport {
                algorithm: NAME.to_string(),
                ..e.clone()
            })
        };
        let model =
            train_forecaster(&normed, lstm, seed, &mut relabel).map_err(|e| e.to_string())?;
        Ok(Hybrid {
            base: base_model,
            lstm: Arc::new(model),
            scaler,
        })
    }

    /// Forecasts `horizon` days after `history` (which starts at `start`).
    pub fn forecast(&self, history: &[f64], start: NaiveDate, horizon: usize) -> Vec<f64> {
        let k = history.len().min(self.lstm.config().window);
        let tail = &history[history.len() - k..];
        let tail_start = start + Duration::days((history.len() - k) as i64);
        let normed: Vec<f32> = self
            .base
            .residuals(tail, tail_start)
            .into_iter()
            .map(|r| self.scaler.apply(r) as f32)
            .collect();
        let residuals: Vec<f64> = self
            .lstm
            .forecast(&normed, horizon)
            .into_iter()
            .map(|z| {
                let z = f64::from(z);
                let z = if z.is_finite() {
                    z.clamp(-MAX_RESIDUAL_SD, MAX_RESIDUAL_SD)
                } else {
                    0.0
                };
                self.scaler.invert(z)
            })
            .collect();
        self.base
            .forecast_with_residuals(start + Duration::days(history.len() as i64), &residuals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A weekly and yearly series with AR(1) departures that persist for
    /// weeks (a cold spell, a plant outage): what the regression alone
    /// cannot follow and the residual LSTM can.
    fn series(days: usize, start: NaiveDate) -> Vec<f64> {
        use chrono::Datelike;
        let mut state = 7u64;
        let mut ar = 0.0;
        (0..days)
            .map(|i| {
                let d = start + Duration::days(i as i64);
                let weekly = if d.weekday().number_from_monday() >= 6 {
                    0.8
                } else {
                    1.05
                };
                let yearly =
                    1.0 + 0.2 * (2.0 * std::f64::consts::PI * d.ordinal0() as f64 / 365.25).cos();
                let shock = super::super::neural::unit_f64(&mut state) - 0.5;
                ar = 0.95 * ar + 0.04 * shock;
                100.0 * weekly * yearly * (1.0 + ar)
            })
            .collect()
    }

    #[test]
    fn the_hybrid_forecasts_the_regression_plus_a_bounded_residual() {
        let start = NaiveDate::from_ymd_opt(2019, 1, 1).unwrap();
        let all = series(900, start);
        let lstm = LstmConfig::new().with_epochs(3);
        let fit = || {
            Hybrid::fit(
                &all,
                start,
                &SeasonalRegressionConfig::default(),
                &lstm,
                1,
                &mut |_| {},
            )
            .unwrap()
        };
        let h = fit();
        let f = h.forecast(&all, start, 30);
        assert_eq!(f.len(), 30);
        // Each day stays within the residual bound around the regression.
        let zero = h
            .base
            .forecast_with_residuals(start + Duration::days(900), &[0.0; 30]);
        let bound = (h.scaler.mean.abs() + MAX_RESIDUAL_SD * h.scaler.std).exp();
        for (x, b) in f.iter().zip(&zero) {
            assert!(x.is_finite() && *x >= 0.0);
            let ratio = (x + h.base.log_offset) / (b + h.base.log_offset);
            assert!(
                ratio <= bound * 1.0001 && ratio >= 1.0 / bound / 1.0001,
                "{x} vs {b}"
            );
        }
        // Deterministic for a seed.
        assert_eq!(fit().forecast(&all, start, 30), f);
    }
}
