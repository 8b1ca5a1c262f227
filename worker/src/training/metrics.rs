//! Evaluation metrics, for forecasts and for anomaly detectors.
//!
//! Forecasts are scored on the holdout (the last `holdout_days` days, never
//! used for fitting) in the original units:
//! - **MAE**, **RMSE**: the usual, in the unit of the series.
//! - **R²**: `1 − SSE/SST`, with SST around the holdout's own mean (so a
//!   forecast that only gets the level right scores near 0, and one worse
//!   than the holdout mean is negative).
//! - **MAPE**: mean of `|actual − forecast| / actual` in percent over the days
//!   whose actual value is not zero; `None` if every actual is zero.
//! - **MASE**: MAE divided by the in-sample MAE of the weekly seasonal naive
//!   forecast (`y[t] − y[t−7]`) on the training data, as statsforecast
//!   defines it. Below 1 means better than repeating last week, on average.
//! - **accuracy** (the percentage the dashboards show): `max(0, 100 − MAPE)`.
//!   When MAPE is undefined it falls back to `100 · max(0, R²)`.
//!
//! Anomaly detectors have no labels in production, so they are scored on how
//! well they reconstruct unseen (holdout) rows in standardized units. Each
//! row's anomaly score is its mean squared reconstruction error over the
//! three features:
//! - **MAE**: mean over rows of the root of the score (per-row RMS error).
//! - **RMSE**: root of the mean score.
//! - **R²**: `1 − SSE/SST` of the reconstruction over all feature values,
//!   SST around the holdout's feature means.
//! - **accuracy**: `100 · max(0, R²)`: the share of the holdout's variance
//!   the detector explains, i.e. how well it knows what normal rows look like.
//! - **precision**, **recall**, **F1**: only when labels exist (the
//!   evaluation on labelled data), see [`classification`].

use serde::{Deserialize, Serialize};

/// Scores of one model on one window. See the module docs for definitions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub mae: f64,
    pub rmse: f64,
    pub r2: f64,
    pub mape: Option<f64>,
    /// Percent, 0–100.
    pub accuracy: f64,
    pub mase: Option<f64>,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
}

/// In-sample MAE of the seasonal naive forecast with period `period`: the
/// MASE denominator. `None` when the series is too short or the naive error
/// is zero (a perfectly periodic series).
pub fn naive_scale(train: &[f64], period: usize) -> Option<f64> {
    if train.len() <= period {
        return None;
    }
    let n = train.len() - period;
    let s = (period..train.len())
        .map(|t| (train[t] - train[t - period]).abs())
        .sum::<f64>()
        / n as f64;
    (s > 0.0).then_some(s)
}

/// Scores a forecast against the actual values.
///
/// `mase_scale` is the value of [`naive_scale`] on the training data.
pub fn forecast(actual: &[f64], predicted: &[f64], mase_scale: Option<f64>) -> Metrics {
    assert_eq!(actual.len(), predicted.len(), "forecast length mismatch");
    let n = actual.len().max(1) as f64;
    let errors: Vec<f64> = actual.iter().zip(predicted).map(|(a, p)| a - p).collect();
    let mae = errors.iter().map(|e| e.abs()).sum::<f64>() / n;
    let sse = errors.iter().map(|e| e * e).sum::<f64>();
    let rmse = (sse / n).sqrt();
    let r2 = r_squared(sse, actual.iter().copied());
    let nonzero: Vec<f64> = actual
        .iter()
        .zip(&errors)
        .filter(|(a, _)| **a != 0.0)
        .map(|(a, e)| (e / a).abs())
        .collect();
    let mape =
        (!nonzero.is_empty()).then(|| 100.0 * nonzero.iter().sum::<f64>() / nonzero.len() as f64);
    Metrics {
        mae,
        rmse,
        r2,
        mape,
        accuracy: accuracy(mape, r2),
        mase: mase_scale.map(|s| mae / s),
        precision: None,
        recall: None,
        f1: None,
    }
}

/// Scores a reconstruction: `rows` are the standardized inputs and `scores`
/// the per-row mean squared reconstruction errors.
pub fn reconstruction<R: AsRef<[f64]>>(rows: &[R], scores: &[f64]) -> Metrics {
    assert_eq!(rows.len(), scores.len(), "score count mismatch");
    let n = rows.len().max(1) as f64;
    let width = rows.first().map_or(0, |r| r.as_ref().len());
    let mae = scores.iter().map(|s| s.max(0.0).sqrt()).sum::<f64>() / n;
    let rmse = (scores.iter().sum::<f64>() / n).sqrt();
    let sse = width as f64 * scores.iter().sum::<f64>();
    let mut sst = 0.0;
    for f in 0..width {
        let mean = rows.iter().map(|r| r.as_ref()[f]).sum::<f64>() / n;
        sst += rows
            .iter()
            .map(|r| (r.as_ref()[f] - mean).powi(2))
            .sum::<f64>();
    }
    let r2 = if sst > 0.0 { 1.0 - sse / sst } else { 0.0 };
    Metrics {
        mae,
        rmse,
        r2,
        mape: None,
        accuracy: accuracy(None, r2),
        mase: None,
        precision: None,
        recall: None,
        f1: None,
    }
}

/// Precision, recall and F1 of `flags` against `labels` (true = anomaly).
/// A ratio whose denominator is zero is undefined (`None`): precision when
/// nothing is flagged, recall when nothing is labelled, F1 when either is.
pub fn classification(flags: &[bool], labels: &[bool]) -> (Option<f64>, Option<f64>, Option<f64>) {
    assert_eq!(flags.len(), labels.len(), "label count mismatch");
    let tp = flags.iter().zip(labels).filter(|(f, l)| **f && **l).count() as f64;
    let flagged = flags.iter().filter(|f| **f).count() as f64;
    let positives = labels.iter().filter(|l| **l).count() as f64;
    let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
    let precision = ratio(tp, flagged);
    let recall = ratio(tp, positives);
    let f1 = match (precision, recall) {
        (Some(p), Some(r)) => Some(if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        }),
        _ => None,
    };
    (precision, recall, f1)
}

fn r_squared(sse: f64, actual: impl Iterator<Item = f64> + Clone) -> f64 {
    let n = actual.clone().count().max(1) as f64;
    let mean = actual.clone().sum::<f64>() / n;
    let sst = actual.map(|a| (a - mean).powi(2)).sum::<f64>();
    if sst > 0.0 {
        1.0 - sse / sst
    } else if sse == 0.0 {
        1.0
    } else {
        0.0
    }
}

/// The dashboard percentage; see the module docs.
pub fn accuracy(mape: Option<f64>, r2: f64) -> f64 {
    match mape {
        Some(m) => (100.0 - m).max(0.0),
        None => 100.0 * r2.max(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    #[test]
    fn forecast_metrics_match_hand_computed_values() {
        // errors: 10-12=-2, 20-18=2, 30-33=-3, 40-40=0
        let m = forecast(
            &[10.0, 20.0, 30.0, 40.0],
            &[12.0, 18.0, 33.0, 40.0],
            Some(2.0),
        );
        close(m.mae, 7.0 / 4.0);
        close(m.rmse, (17.0f64 / 4.0).sqrt());
        // mean 25, SST = 225+25+25+225 = 500
        close(m.r2, 1.0 - 17.0 / 500.0);
        // |-2|/10 + 2/20 + 3/30 + 0 = 0.2+0.1+0.1 = 0.4 → /4 = 10 %
        close(m.mape.unwrap(), 10.0);
        close(m.accuracy, 90.0);
        close(m.mase.unwrap(), 1.75 / 2.0);
        assert_eq!(m.f1, None);
    }

    #[test]
    fn mape_skips_zero_actuals_and_accuracy_falls_back_to_r2() {
        let m = forecast(&[0.0, 10.0], &[1.0, 11.0], None);
        close(m.mape.unwrap(), 10.0);
        let z = forecast(&[0.0, 0.0], &[1.0, -1.0], None);
        assert_eq!(z.mape, None);
        // SST is zero and SSE is not: R² is 0, accuracy 0.
        close(z.accuracy, 0.0);
        assert_eq!(z.mase, None);
    }

    #[test]
    fn accuracy_is_floored_at_zero() {
        let m = forecast(&[1.0, 2.0], &[5.0, 9.0], None);
        assert!(m.mape.unwrap() > 100.0);
        close(m.accuracy, 0.0);
    }

    #[test]
    fn the_naive_scale_is_the_in_sample_weekly_naive_mae() {
        let train: Vec<f64> = (0..9).map(|i| i as f64).collect();
        // y[t]-y[t-7] = 7 for t = 7, 8
        close(naive_scale(&train, 7).unwrap(), 7.0);
        assert_eq!(naive_scale(&train[..7], 7), None);
        assert_eq!(naive_scale(&[1.0; 14], 7), None);
    }

    #[test]
    fn reconstruction_metrics_match_hand_computed_values() {
        let rows = [[1.0, 0.0, -1.0], [-1.0, 0.0, 1.0]];
        // SST: feature 0: 1+1, feature 1: 0, feature 2: 1+1 → 4
        let scores = [0.25, 1.0];
        let m = reconstruction(&rows, &scores);
        close(m.mae, (0.5 + 1.0) / 2.0);
        close(m.rmse, (1.25f64 / 2.0).sqrt());
        close(m.r2, 1.0 - 3.0 * 1.25 / 4.0);
        close(m.accuracy, 100.0 * (1.0 - 3.75 / 4.0));
        assert_eq!(m.mape, None);
    }

    #[test]
    fn classification_metrics_match_hand_computed_values() {
        let flags = [true, true, false, false, true];
        let labels = [true, false, true, false, true];
        let (p, r, f1) = classification(&flags, &labels);
        close(p.unwrap(), 2.0 / 3.0);
        close(r.unwrap(), 2.0 / 3.0);
        close(f1.unwrap(), 2.0 / 3.0);
        // Nothing flagged, nothing labelled: undefined, not 0.
        assert_eq!(classification(&[false], &[false]), (None, None, None));
        // Nothing flagged among real anomalies: recall 0, precision undefined.
        assert_eq!(classification(&[false], &[true]), (None, Some(0.0), None));
    }
}
