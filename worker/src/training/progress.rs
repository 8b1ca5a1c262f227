//! Per-epoch progress, reported through a callback so the worker can persist
//! it and the CLI can draw a progress bar.

use serde::Serialize;

/// One finished epoch of one candidate.
#[derive(Debug, Clone, Serialize)]
pub struct EpochReport {
    /// Algorithm name of the candidate being trained (e.g. `lstm`, `autoencoder`).
    pub algorithm: String,
    /// 1-based epoch number.
    pub epoch: usize,
    pub epochs: usize,
    /// Mean training loss over the epoch (normalized units).
    pub train_loss: f64,
    /// Loss on the validation slice, when there is one.
    pub val_loss: Option<f64>,
    /// Wall seconds the epoch took.
    pub seconds: f64,
}
