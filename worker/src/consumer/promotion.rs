//! The promotion policy: whether a job's champion replaces the active model
//! of its organization and model type, and why. Pure functions over metrics
//! already scored on the same holdout; no SQL (`results` reads the active
//! model, calls [`promotion_decision`] and writes what it says).
//!
//! The rules, in order: a champion no better than a trivial model is never
//! promoted (accuracy 0 or NaN, or a forecaster not beating the seasonal
//! naive baseline's MAE); otherwise it must beat the active model by more
//! than [`PROMOTION_MARGIN`] accuracy points.

use trainyard_shared::Algorithm;
use uuid::Uuid;

use crate::training::{AnomalyFlag, ForecastPoint, Metrics, TrainOutcome};

/// A model must beat the active one by more than this many accuracy points,
/// on the same holdout, to replace it (defined in `shared`, which the ops
/// API's version comparison reads too).
pub use trainyard_shared::domain::PROMOTION_MARGIN;

/// How the active model did when re-scored on this job's holdout.
#[derive(Debug, Clone)]
pub enum Incumbent {
    /// No active model for this org and model type.
    None,
    Scored {
        model_id: Uuid,
        version: i32,
        algorithm: Algorithm,
        metrics: Metrics,
        /// What it predicts on this job's data, written instead of the
        /// champion's predictions when the champion is not promoted (the
        /// dashboards show the active model's forecast). `None` when it
        /// could not predict.
        predictions: Option<Box<Predictions>>,
    },
    /// It could not be used (e.g. its artifact failed the checksum).
    Unusable {
        model_id: Uuid,
        version: i32,
        reason: String,
    },
}

/// A 30-day forecast or a set of anomaly flags, as the pipeline returns them.
#[derive(Debug, Clone, Default)]
pub struct Predictions {
    pub forecast: Vec<ForecastPoint>,
    pub anomalies: Vec<AnomalyFlag>,
}

impl Incumbent {
    /// The active model this was read from, if any.
    pub fn model_id(&self) -> Option<Uuid> {
        match self {
            Incumbent::None => None,
            Incumbent::Scored { model_id, .. } | Incumbent::Unusable { model_id, .. } => {
                Some(*model_id)
            }
        }
    }

    pub fn label(&self) -> String {
        match self {
            Incumbent::None => "no active model".to_string(),
            Incumbent::Scored { version, .. } | Incumbent::Unusable { version, .. } => {
                format!("active v{version}")
            }
        }
    }
}

/// The candidate a forecaster must beat on the holdout to be promoted:
/// repeating last week, the trivial forecast every other model competes
/// with.
pub const FORECAST_BASELINE: &str = "seasonal_naive";

/// The trivial baseline's holdout metrics, when it was trained and is not
/// itself the champion.
pub fn baseline_of(outcome: &TrainOutcome) -> Option<&Metrics> {
    let champion = &outcome.candidates[outcome.champion];
    if champion.algorithm == FORECAST_BASELINE {
        return None;
    }
    outcome
        .candidates
        .iter()
        .find(|c| c.algorithm == FORECAST_BASELINE)
        .map(|c| &c.metrics)
}

/// Whether a champion replaces the active model, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub promoted: bool,
    pub reason: String,
    /// The champion is no better than a trivial model: none of its output
    /// reaches the dashboards.
    pub trivial: bool,
}

/// The promotion rule, kept apart so it can be tested on its own:
/// 1. a champion with accuracy 0 (or NaN) is never promoted: a forecaster
///    with MAPE ≥ 100 %, or an anomaly detector that explains none of the
///    holdout's variance, is no better than a trivial model;
/// 2. a forecaster whose holdout MAE is not below the seasonal naive
///    baseline's (`baseline`, scored on the same holdout) is never promoted;
/// 3. otherwise it must beat the active model, re-scored on the same
///    holdout, by more than [`PROMOTION_MARGIN`] accuracy points.
pub fn promotion_decision(
    champion: &Metrics,
    baseline: Option<&Metrics>,
    incumbent: &Incumbent,
) -> Decision {
    let accuracy = champion.accuracy;
    let trivial = |reason: String| Decision {
        promoted: false,
        reason,
        trivial: true,
    };
    // NaN compares false: it is not useful either.
    let useful = accuracy > 0.0;
    if !useful {
        return trivial(format!(
            "not promoted: accuracy {accuracy:.2} on the holdout is no better than a trivial model"
        ));
    }
    if let Some(b) = baseline {
        let beats_baseline = champion.mae < b.mae;
        if !beats_baseline {
            return trivial(format!(
                "not promoted: no better than the {FORECAST_BASELINE} baseline on the same holdout \
                 (MAE {:.2} vs {:.2})",
                champion.mae, b.mae
            ));
        }
    }
    let decided = |promoted: bool, reason: String| Decision {
        promoted,
        reason,
        trivial: false,
    };
    match incumbent {
        Incumbent::None => decided(true, "no active model".to_string()),
        Incumbent::Unusable {
            version, reason, ..
        } => decided(true, format!("active model v{version} unusable: {reason}")),
        Incumbent::Scored {
            version, metrics, ..
        } => {
            let margin = accuracy - metrics.accuracy;
            if margin > PROMOTION_MARGIN {
                decided(
                    true,
                    format!(
                        "beats active v{version} by {margin:.2} accuracy points on the same holdout ({accuracy:.2} vs {:.2})",
                        metrics.accuracy
                    ),
                )
            } else {
                decided(
                    false,
                    format!(
                        "does not beat active v{version} by more than {PROMOTION_MARGIN} points on the same holdout ({accuracy:.2} vs {:.2})",
                        metrics.accuracy
                    ),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(accuracy: f64) -> Metrics {
        Metrics {
            mae: 1.0,
            rmse: 1.0,
            r2: 0.5,
            mape: Some(100.0 - accuracy),
            accuracy,
            mase: None,
            precision: None,
            recall: None,
            f1: None,
        }
    }

    fn scored(accuracy: f64) -> Incumbent {
        Incumbent::Scored {
            model_id: Uuid::nil(),
            version: 3,
            algorithm: Algorithm::Lstm,
            metrics: metrics(accuracy),
            predictions: None,
        }
    }

    fn promoted(accuracy: f64, incumbent: &Incumbent) -> bool {
        promotion_decision(&metrics(accuracy), None, incumbent).promoted
    }

    #[test]
    fn a_champion_is_promoted_only_when_it_beats_the_active_model_by_more_than_two_points() {
        assert!(promoted(80.0, &Incumbent::None));
        assert!(!promoted(82.0, &scored(80.0)));
        assert!(promoted(82.01, &scored(80.0)));
        assert!(!promoted(70.0, &scored(80.0)));
        let unusable = Incumbent::Unusable {
            model_id: Uuid::nil(),
            version: 2,
            reason: "checksum mismatch".into(),
        };
        let d = promotion_decision(&metrics(10.0), None, &unusable);
        assert!(d.promoted && d.reason.contains("checksum mismatch"));
    }

    #[test]
    fn a_champion_with_accuracy_zero_is_never_promoted_even_without_an_active_model() {
        let unusable = Incumbent::Unusable {
            model_id: Uuid::nil(),
            version: 2,
            reason: "checksum mismatch".into(),
        };
        for incumbent in [Incumbent::None, unusable, scored(0.0)] {
            for accuracy in [0.0, f64::NAN] {
                let d = promotion_decision(&metrics(accuracy), None, &incumbent);
                assert!(!d.promoted && d.trivial, "{incumbent:?}: {d:?}");
                assert!(
                    d.reason.contains("no better than a trivial model"),
                    "{}",
                    d.reason
                );
            }
        }
        assert!(promoted(0.01, &Incumbent::None));
    }

    #[test]
    fn a_forecaster_no_better_than_the_seasonal_naive_baseline_is_never_promoted() {
        let champion = Metrics {
            mae: 12.0,
            ..metrics(90.0)
        };
        let worse_baseline = Metrics {
            mae: 15.0,
            ..metrics(85.0)
        };
        let better_baseline = Metrics {
            mae: 11.0,
            ..metrics(91.0)
        };
        assert!(promotion_decision(&champion, Some(&worse_baseline), &Incumbent::None).promoted);
        for baseline in [better_baseline, champion] {
            let d = promotion_decision(&champion, Some(&baseline), &Incumbent::None);
            assert!(!d.promoted && d.trivial, "{d:?}");
            assert!(d.reason.contains("seasonal_naive baseline"), "{}", d.reason);
        }
    }
}
