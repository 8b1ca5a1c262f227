//! Dense(n→8) ReLU → Dense(8→2) ReLU → Dense(2→8) ReLU → Dense(8→n), with
//! `n` = [`AutoencoderConfig::inputs`] (the seed's three features by
//! default).

use burn::nn::{Linear, LinearConfig, Relu};
use burn::prelude::*;

#[derive(Config, Debug, PartialEq)]
pub struct AutoencoderConfig {
    #[config(default = 8)]
    pub hidden: usize,
    #[config(default = 2)]
    pub bottleneck: usize,
    #[config(default = 30)]
    pub epochs: usize,
    #[config(default = 16)]
    pub batch_size: usize,
    #[config(default = 1e-3)]
    pub learning_rate: f64,
    #[config(default = 1e-7)]
    pub epsilon: f64,
    /// Features per row.
    #[config(default = 3)]
    pub inputs: usize,
    /// At least this many optimizer steps: a short history gets more epochs
    /// (0: exactly `epochs`).
    #[config(default = 0)]
    pub min_steps: usize,
    /// Early stopping: every fifth row is held out of the updates, and
    /// training stops after this many epochs without a better loss on them,
    /// keeping the best weights (0: no early stopping, no convergence check).
    #[config(default = 0)]
    pub patience: usize,
}

impl Default for AutoencoderConfig {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Module, Debug)]
pub struct Autoencoder {
    pub enc1: Linear,
    pub enc2: Linear,
    pub dec1: Linear,
    pub dec2: Linear,
    pub relu: Relu,
}

impl AutoencoderConfig {
    pub fn init(&self, device: &Device) -> Autoencoder {
        Autoencoder {
            enc1: LinearConfig::new(self.inputs, self.hidden).init(device),
            enc2: LinearConfig::new(self.hidden, self.bottleneck).init(device),
            dec1: LinearConfig::new(self.bottleneck, self.hidden).init(device),
            dec2: LinearConfig::new(self.hidden, self.inputs).init(device),
            relu: Relu::new(),
        }
    }
}

impl Autoencoder {
    /// `[rows, inputs]` → `[rows, inputs]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let h = self.relu.forward(self.enc1.forward(x));
        let z = self.relu.forward(self.enc2.forward(h));
        let h = self.relu.forward(self.dec1.forward(z));
        self.dec2.forward(h)
    }
}
