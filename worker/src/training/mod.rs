//! The training core: data preparation, neural models (burn) and statistical
//! challengers, evaluation, artifacts. Pure computation: no I/O to PostgreSQL
//! or Redis happens here, so the worker, the CLI and the benchmarks share it.
//!
//! The contract the job handler relies on:
//! - [`train_model`] prepares the rows, trains every candidate of the model
//!   type on the same chronological split, scores them on the same holdout
//!   and names a champion (chosen on a validation window before the
//!   holdout; see [`pipeline`]).
//! - [`rescore`] loads a stored artifact (verifying its checksum) and scores it
//!   on the holdout that the same request would use, so promotion compares
//!   numbers from one window.

pub(crate) mod anomaly;
pub(crate) mod artifact;
pub(crate) mod challengers;
pub(crate) mod combination;
pub mod data;
pub(crate) mod forecast;
pub(crate) mod hybrid;
pub(crate) mod intervals;
pub(crate) mod metrics;
pub(crate) mod neural;
pub(crate) mod pipeline;
pub(crate) mod progress;

pub(crate) use data::{DataReport, RawRow};
pub(crate) use metrics::Metrics;
pub(crate) use pipeline::{
    holdout_forecast, predict, rescore, train_model, AnomalyFlag, ForecastPoint, SkippedCandidate,
    TrainError, TrainOutcome, TrainRequest, TrainSettings,
};
pub(crate) use progress::EpochReport;

/// Sets the neural models' epochs when an operator overrides them.
pub(crate) fn apply_epoch_overrides(
    settings: &mut TrainSettings,
    lstm_epochs: Option<usize>,
    autoencoder_epochs: Option<usize>,
) {
    if let Some(e) = lstm_epochs {
        settings.lstm.epochs = e;
    }
    if let Some(e) = autoencoder_epochs {
        settings.autoencoder.epochs = e;
    }
}
