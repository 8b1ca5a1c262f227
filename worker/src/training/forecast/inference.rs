//! A trained forecaster: recursive multi-step forecasts and its stored form.

use burn::prelude::*;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;

use super::model::{Forecaster, LstmConfig};
use crate::training::neural::{self, NeuralError};

pub struct TrainedForecaster {
    config: LstmConfig,
    model: Forecaster,
}

impl std::fmt::Debug for TrainedForecaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainedForecaster")
            .field("config", &self.config)
            .finish()
    }
}

impl TrainedForecaster {
    pub(crate) fn new(config: LstmConfig, model: Forecaster) -> Self {
        Self { config, model }
    }

    pub fn config(&self) -> &LstmConfig {
        &self.config
    }

    #[cfg(test)]
    pub fn model(&self) -> &Forecaster {
        &self.model
    }

    /// Predicts `horizon` steps after `history` (normalized), feeding each
    /// prediction back as input. Uses the last `window` values of `history`.
    pub fn forecast(&self, history: &[f32], horizon: usize) -> Vec<f32> {
        let w = self.config.window;
        let device = self.model.head.weight.val().device();
        let mut buf: Vec<f32> = if history.len() >= w {
            history[history.len() - w..].to_vec()
        } else {
            let pad = history.first().copied().unwrap_or(0.0);
            let mut v = vec![pad; w - history.len()];
            v.extend_from_slice(history);
            v
        };
        let mut out = Vec::with_capacity(horizon);
        {
            for _ in 0..horizon {
                let input = neural::tensor3(buf[buf.len() - w..].to_vec(), [1, w, 1], &device);
                let next = neural::to_vec(self.model.forward(input))[0];
                out.push(next);
                buf.push(next);
            }
        }
        out
    }

    /// Config (JSON) + burn record bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let record = self
            .model
            .clone()
            .into_record()
            .into_bytes()
            .expect("an in-memory record always serializes");
        let config = serde_json::to_string(&self.config).expect("the config always serializes");
        neural::pack(&config, &record)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, NeuralError> {
        let (config, record) = neural::unpack(bytes)?;
        let config: LstmConfig = serde_json::from_str(config)
            .map_err(|e| NeuralError::Decode(format!("forecaster config: {e}")))?;
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(record.to_vec()))
            .map_err(|e| NeuralError::Decode(format!("forecaster weights: {e}")))?;
        let device = neural::infer_device();
        let model = config
            .init(&device)
            .try_load_record(record)
            .map_err(|e| NeuralError::Decode(format!("forecaster weights: {e}")))?
            .valid();
        Ok(Self { config, model })
    }
}
