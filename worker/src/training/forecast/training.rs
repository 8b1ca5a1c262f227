//! Training the forecaster: sliding windows, seeded shuffling, Adam, MSE.
//! The fused engine ([`super::fused`]) is the default; this module also
//! holds the stock burn engine it is checked against.

use std::time::Instant;

use burn::nn::loss::{MseLoss, Reduction};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;

use super::inference::TrainedForecaster;
use super::model::{Forecaster, LstmConfig, LstmEngine};
use crate::training::neural::{self, NeuralError};
use crate::training::EpochReport;

/// Windows of `window` values and the value that follows each.
pub fn windows(series: &[f32], window: usize) -> (Vec<f32>, Vec<f32>) {
    let n = series.len().saturating_sub(window);
    let mut x = Vec::with_capacity(n * window);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        x.extend_from_slice(&series[i..i + window]);
        y.push(series[i + window]);
    }
    (x, y)
}

/// The windows of `train` and how many of them (the chronologically
/// first) are fitted and how many (the last `validation_fraction`) only
/// report a validation loss: `(x, y, n_fit, n_val)`. Both engines use it.
pub(crate) fn split_windows(
    train: &[f32],
    config: &LstmConfig,
) -> (Vec<f32>, Vec<f32>, usize, usize) {
    let (x, y) = windows(train, config.window);
    let n = y.len();
    let n_val = ((n as f64) * config.validation_fraction).floor() as usize;
    let n_val = if n - n_val < 1 { 0 } else { n_val };
    (x, y, n - n_val, n_val)
}

/// Trains on a normalized series; the last `validation_fraction` of the
/// windows (chronologically) only report a validation loss.
pub fn train_forecaster(
    train: &[f32],
    config: &LstmConfig,
    seed: u64,
    on_epoch: &mut dyn FnMut(&EpochReport),
) -> Result<TrainedForecaster, NeuralError> {
    let w = config.window;
    let need = w + 2;
    if train.len() < need {
        return Err(NeuralError::TooShort {
            have: train.len(),
            need,
        });
    }
    match config.engine() {
        LstmEngine::Fused => {
            let model = super::fused::fit(train, config, seed, on_epoch)?;
            Ok(TrainedForecaster::new(config.clone(), model))
        }
        LstmEngine::Burn => fit(train, config, seed, on_epoch),
    }
}

fn fit(
    train: &[f32],
    config: &LstmConfig,
    seed: u64,
    on_epoch: &mut dyn FnMut(&EpochReport),
) -> Result<TrainedForecaster, NeuralError> {
    let w = config.window;
    let (x, y, n_fit, n_val) = split_windows(train, config);

    let mut model: Forecaster = neural::seeded_init(seed, |device| config.init(device));
    let device = valid_device(&model);
    let mut optim = AdamConfig::new().with_epsilon(config.epsilon as f32).init();
    let mse = MseLoss::new();
    let mut order: Vec<usize> = (0..n_fit).collect();
    let mut rng = seed ^ 0x5EED_F0CA_57E4;
    let batch = config.batch_size.max(1);

    for epoch in 1..=config.epochs {
        let started = Instant::now();
        neural::shuffle(&mut order, &mut rng);
        let mut loss_sum = 0.0f64;
        let mut seen = 0usize;
        for chunk in order.chunks(batch) {
            let b = chunk.len();
            let mut bx = Vec::with_capacity(b * w);
            let mut by = Vec::with_capacity(b);
            for &i in chunk {
                bx.extend_from_slice(&x[i * w..(i + 1) * w]);
                by.push(y[i]);
            }
            let input = neural::tensor3(bx, [b, w, 1], &device);
            let target = neural::tensor2(by, [b, 1], &device);
            let loss = mse.forward(model.forward(input), target, Reduction::Mean);
            let value = f64::from(loss.clone().into_scalar::<f32>());
            if !value.is_finite() {
                return Err(NeuralError::Diverged(value));
            }
            loss_sum += value * b as f64;
            seen += b;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(config.learning_rate, model, grads);
        }
        let val_loss = (n_val > 0).then(|| {
            let valid = model.valid();
            let vx = x[n_fit * w..].to_vec();
            let vy = y[n_fit..].to_vec();
            let input = neural::tensor3(vx, [n_val, w, 1], &valid_device(&valid));
            mean_squared_error(&neural::to_vec(valid.forward(input)), &vy)
        });
        on_epoch(&epoch_report(
            config, epoch, loss_sum, seen, val_loss, started,
        ));
    }
    Ok(TrainedForecaster::new(config.clone(), model.valid()))
}

/// The device a validation-mode model's tensors live on.
/// Mean squared error of `pred` against `target` (equal lengths), in f64.
pub(crate) fn mean_squared_error(pred: &[f32], target: &[f32]) -> f64 {
    let sum: f64 = pred
        .iter()
        .zip(target)
        .map(|(p, t)| f64::from((p - t) * (p - t)))
        .sum();
    sum / target.len().max(1) as f64
}

/// The report both engines log at the end of an epoch: the mean training
/// loss over the `seen` windows, the validation MSE, seconds since `started`.
pub(crate) fn epoch_report(
    config: &LstmConfig,
    epoch: usize,
    loss_sum: f64,
    seen: usize,
    val_loss: Option<f64>,
    started: Instant,
) -> EpochReport {
    EpochReport {
        algorithm: "lstm".to_string(),
        epoch,
        epochs: config.epochs,
        train_loss: loss_sum / seen.max(1) as f64,
        val_loss,
        seconds: started.elapsed().as_secs_f64(),
    }
}

fn valid_device(model: &Forecaster) -> Device {
    model.head.weight.val().device()
}
