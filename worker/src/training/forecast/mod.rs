//! The LSTM forecaster (`emissions_forecast`, `energy_forecast`): the seed
//! architecture in burn. Inputs and outputs are normalized values; the
//! pipeline owns normalization.

pub mod fused;
pub mod inference;
pub mod model;
pub mod training;

pub use inference::TrainedForecaster;
pub use model::{LstmConfig, LstmEngine};
pub use training::train_forecaster;
