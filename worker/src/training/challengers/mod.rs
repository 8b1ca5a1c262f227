//! Classical challengers to the neural models: every model type's candidates
//! are scored on the same windows, and the neural model has to beat these.
//!
//! - [`seasonal_naive`]: repeat the last week (the yardstick MASE is measured
//!   against).
//! - [`seasonal_regression`]: a Prophet-style additive model (trend,
//!   day of week, yearly Fourier terms, Christmas) fitted by least squares
//!   with linfa, anchored to the recent level.
//! - [`decomposition`]: MSTL (weekly + yearly) or STL (weekly) with an
//!   AutoETS trend, from Grafana's `augurs`.
//! - [`pca`]: reconstruction error after projecting the standardized
//!   features on their principal components (smartcore), the classical
//!   counterpart of the autoencoder.

pub mod decomposition;
pub mod pca;
pub mod seasonal_naive;
pub mod seasonal_regression;

/// A classical model could not be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChallengerError {
    #[error("{algorithm}: {reason}")]
    Fit {
        algorithm: &'static str,
        reason: String,
    },
}
