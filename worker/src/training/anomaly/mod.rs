//! The dense autoencoder anomaly detector (`anomaly_detection`): rows of
//! three standardized features in, their reconstruction out; the per-row
//! reconstruction error is the anomaly score. The pipeline owns
//! standardization and the threshold.

pub mod fused;
pub mod model;
pub mod training;

pub use model::AutoencoderConfig;
pub use training::{train_autoencoder, TrainedAutoencoder};
