//! LSTM(50, every step) → Dropout → LSTM(25, last step) → Dropout → Dense(1).

use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, Lstm, LstmConfig as BurnLstmConfig};
use burn::prelude::*;

/// Hyperparameters, stored with the weights; inference rebuilds the model from it.
#[derive(Config, Debug, PartialEq)]
pub struct LstmConfig {
    #[config(default = 50)]
    pub hidden1: usize,
    #[config(default = 25)]
    pub hidden2: usize,
    #[config(default = 0.2)]
    pub dropout: f64,
    /// Days of history one prediction sees.
    #[config(default = 30)]
    pub window: usize,
    #[config(default = 50)]
    pub epochs: usize,
    #[config(default = 32)]
    pub batch_size: usize,
    #[config(default = 1e-3)]
    pub learning_rate: f64,
    /// Keras' Adam epsilon (burn defaults to 1e-5).
    #[config(default = 1e-7)]
    pub epsilon: f64,
    /// Share of the (chronologically last) windows kept out of training to
    /// report a validation loss per epoch.
    #[config(default = 0.1)]
    pub validation_fraction: f64,
    /// Which implementation trains the model (`None`: the default, fused);
    /// the stored weights and inference are the same burn module either way.
    /// Optional so configs stored before the field existed still load.
    pub engine: Option<LstmEngine>,
}

/// The training implementation of the forecaster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LstmEngine {
    /// Hand-written BPTT on flat buffers ([`super::fused`]); several times faster.
    Fused,
    /// Stock burn `nn::Lstm` with autodiff.
    Burn,
}

impl std::str::FromStr for LstmEngine {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fused" => Ok(Self::Fused),
            "burn" => Ok(Self::Burn),
            other => Err(format!("unknown LSTM engine `{other}` (fused or burn)")),
        }
    }
}

impl Default for LstmConfig {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Module, Debug)]
pub struct Forecaster {
    pub lstm1: Lstm,
    pub drop1: Dropout,
    pub lstm2: Lstm,
    pub drop2: Dropout,
    pub head: Linear,
}

impl LstmConfig {
    /// The engine that trains this model.
    pub fn engine(&self) -> LstmEngine {
        self.engine.unwrap_or(LstmEngine::Fused)
    }

    pub fn init(&self, device: &Device) -> Forecaster {
        Forecaster {
            lstm1: BurnLstmConfig::new(1, self.hidden1, true).init(device),
            drop1: DropoutConfig::new(self.dropout).init(),
            lstm2: BurnLstmConfig::new(self.hidden1, self.hidden2, true).init(device),
            drop2: DropoutConfig::new(self.dropout).init(),
            head: LinearConfig::new(self.hidden2, 1).init(device),
        }
    }
}

impl Forecaster {
    /// `[batch, window, 1]` → `[batch, 1]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<2> {
        let (seq, _) = self.lstm1.forward(x, None);
        let seq = self.drop1.forward(seq);
        let (_, state) = self.lstm2.forward(seq, None);
        self.head.forward(self.drop2.forward(state.hidden))
    }
}
