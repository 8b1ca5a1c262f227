//! Anomaly detection (`anomaly_detection`): the dense autoencoder (rows of
//! standardized features in, their reconstruction out; the per-row
//! reconstruction error is the score), the time context every row is scored
//! with ([`context`]), the built-in data-quality detectors ([`detectors`])
//! and the whole run from rows to flags with reasons ([`detection`]).

pub mod context;
pub mod detection;
pub mod detectors;
pub mod fused;
pub mod model;
pub mod training;

pub use model::AutoencoderConfig;
pub use training::{train_autoencoder, TrainedAutoencoder};
