//! Training the autoencoder and scoring rows with it.

use std::time::Instant;

use burn::prelude::*;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;

use super::fused::{self, FusedAutoencoder};
use super::model::{Autoencoder, AutoencoderConfig};
use crate::training::neural::{self, NeuralError};
use crate::training::EpochReport;

pub struct TrainedAutoencoder {
    config: AutoencoderConfig,
    model: Autoencoder,
}

impl std::fmt::Debug for TrainedAutoencoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainedAutoencoder")
            .field("config", &self.config)
            .finish()
    }
}

fn flatten<R: AsRef<[f32]>>(rows: &[R]) -> Vec<f32> {
    rows.iter()
        .flat_map(|r| r.as_ref().iter().copied())
        .collect()
}

/// The loss that predicting every row's column means would have: what a
/// model that learned nothing reaches.
fn mean_baseline(x: &[f32], width: usize) -> f32 {
    let rows = x.len() / width;
    if rows == 0 {
        return 0.0;
    }
    let mut total = 0.0f32;
    for f in 0..width {
        let mean = (0..rows).map(|r| x[r * width + f]).sum::<f32>() / rows as f32;
        total += (0..rows)
            .map(|r| (x[r * width + f] - mean).powi(2))
            .sum::<f32>();
    }
    total / x.len() as f32
}

/// A model whose held-out loss stays above this share of [`mean_baseline`]
/// did not converge.
pub const CONVERGENCE_RATIO: f32 = 0.9;

/// Trains on standardized rows of `config.inputs` features (shuffled each
/// epoch with a seeded order). With `config.patience > 0`, every fifth row
/// is held out for early stopping, the best weights on it are kept, and a
/// held-out loss of at least [`CONVERGENCE_RATIO`] of the mean baseline is
/// [`NeuralError::DidNotConverge`].
pub fn train_autoencoder<R: AsRef<[f32]>>(
    rows: &[R],
    config: &AutoencoderConfig,
    seed: u64,
    on_epoch: &mut dyn FnMut(&EpochReport),
) -> Result<TrainedAutoencoder, NeuralError> {
    let width = config.inputs;
    if let Some(r) = rows.iter().find(|r| r.as_ref().len() != width) {
        return Err(NeuralError::Shape(format!(
            "rows of {} features for an autoencoder of {width} inputs",
            r.as_ref().len()
        )));
    }
    let early = config.patience > 0;
    let (train_rows, held): (Vec<&R>, Vec<&R>) = if early {
        let (a, b): (Vec<_>, Vec<_>) = rows.iter().enumerate().partition(|(i, _)| i % 5 != 4);
        (
            a.into_iter().map(|(_, r)| r).collect(),
            b.into_iter().map(|(_, r)| r).collect(),
        )
    } else {
        (rows.iter().collect(), Vec::new())
    };
    if train_rows.len() < 2 || (early && held.is_empty()) {
        return Err(NeuralError::TooShort {
            have: rows.len(),
            need: if early { 5 } else { 2 },
        });
    }
    let model = neural::seeded_init(seed, |device| config.init(device));
    let mut engine = FusedAutoencoder::from_burn(&model);
    let mut optim = fused::adam(&engine, config.epsilon);
    let mut ws = fused::Workspace::default();
    let mut held_ws = fused::Workspace::default();
    let mut grads = vec![0.0f32; engine.params.len()];
    let data = flatten(&train_rows);
    let held_x = flatten(&held);
    let mut order: Vec<usize> = (0..train_rows.len()).collect();
    let mut rng = seed ^ 0xA070_E4C0_DE55;
    let batch = config.batch_size.max(1);
    let steps_per_epoch = train_rows.len().div_ceil(batch);
    let epochs = config
        .epochs
        .max(config.min_steps.div_ceil(steps_per_epoch));
    let mut best: Option<(f32, Vec<f32>)> = None;
    let mut since_best = 0;
    let mut bx = Vec::with_capacity(batch * width);
    for epoch in 1..=epochs {
        let started = Instant::now();
        neural::shuffle(&mut order, &mut rng);
        let mut loss_sum = 0.0f64;
        for chunk in order.chunks(batch) {
            let b = chunk.len();
            bx.clear();
            for &i in chunk {
                bx.extend_from_slice(&data[i * width..(i + 1) * width]);
            }
            grads.fill(0.0);
            let value = f64::from(engine.loss_and_grads(&bx, b, &mut ws, &mut grads));
            if !value.is_finite() {
                return Err(NeuralError::Diverged(value));
            }
            loss_sum += value * b as f64;
            optim.step(config.learning_rate, &mut engine.params, &grads);
        }
        let val_loss = early.then(|| fused::loss(&engine, &held_x, held.len(), &mut held_ws));
        on_epoch(&EpochReport {
            algorithm: "autoencoder".to_string(),
            epoch,
            epochs,
            train_loss: loss_sum / train_rows.len() as f64,
            val_loss: val_loss.map(f64::from),
            seconds: started.elapsed().as_secs_f64(),
        });
        if let Some(v) = val_loss {
            if best.as_ref().is_none_or(|(b, _)| v < *b) {
                best = Some((v, engine.params.clone()));
                since_best = 0;
            } else {
                since_best += 1;
                if since_best >= config.patience {
                    break;
                }
            }
        }
    }
    if let Some((loss, params)) = best {
        let baseline = mean_baseline(&held_x, width);
        // A NaN loss did not converge either.
        if loss.is_nan() || loss >= CONVERGENCE_RATIO * baseline {
            return Err(NeuralError::DidNotConverge {
                loss: f64::from(loss),
                baseline: f64::from(baseline),
            });
        }
        engine.params = params;
    }
    Ok(TrainedAutoencoder {
        config: config.clone(),
        model: engine.write_into(model).valid(),
    })
}

impl TrainedAutoencoder {
    pub fn config(&self) -> &AutoencoderConfig {
        &self.config
    }

    /// Each row's reconstruction.
    pub fn reconstruct<R: AsRef<[f32]>>(&self, rows: &[R]) -> Vec<Vec<f32>> {
        if rows.is_empty() {
            return Vec::new();
        }
        let width = self.config.inputs;
        let device = self.model.enc1.weight.val().device();
        let x = neural::tensor2(flatten(rows), [rows.len(), width], &device);
        neural::to_vec(self.model.forward(x))
            .chunks(width)
            .map(<[f32]>::to_vec)
            .collect()
    }

    /// Per-row mean squared reconstruction error.
    pub fn reconstruction_errors<R: AsRef<[f32]>>(&self, rows: &[R]) -> Vec<f32> {
        if rows.is_empty() {
            return Vec::new();
        }
        let width = self.config.inputs;
        let device = self.model.enc1.weight.val().device();
        let x = neural::tensor2(flatten(rows), [rows.len(), width], &device);
        let out = neural::to_vec(self.model.forward(x));
        rows.iter()
            .zip(out.chunks(width))
            .map(|(r, o)| {
                r.as_ref()
                    .iter()
                    .zip(o)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f32>()
                    / width as f32
            })
            .collect()
    }

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
        let config: AutoencoderConfig = serde_json::from_str(config)
            .map_err(|e| NeuralError::Decode(format!("autoencoder config: {e}")))?;
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(record.to_vec()))
            .map_err(|e| NeuralError::Decode(format!("autoencoder weights: {e}")))?;
        let model = config
            .init(&neural::infer_device())
            .try_load_record(record)
            .map_err(|e| NeuralError::Decode(format!("autoencoder weights: {e}")))?
            .valid();
        Ok(Self { config, model })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<[f32; 3]> {
        (0..120)
            .map(|i| {
                let a = (i as f32 * 0.1).sin();
                [a, 0.5 * a, (i % 5) as f32 / 5.0]
            })
            .collect()
    }

    fn weights(seed: u64) -> Vec<Vec<f32>> {
        let config = AutoencoderConfig::new().with_epochs(2);
        let model = train_autoencoder(&rows(), &config, seed, &mut |_| {}).expect("trains");
        neural::parameter_values(&model.model)
    }

    #[test]
    fn concurrent_trainings_in_one_process_reproduce_sequential_ones() {
        let seeds: Vec<u64> = (1..=4).collect();
        let want: Vec<_> = seeds.iter().map(|&s| weights(s)).collect();
        for _ in 0..2 {
            let handles: Vec<_> = seeds
                .iter()
                .map(|&s| std::thread::spawn(move || weights(s)))
                .collect();
            let got: Vec<_> = handles
                .into_iter()
                .map(|h| h.join().expect("no panic"))
                .collect();
            assert_eq!(got, want);
        }
        assert_ne!(want[0], want[1]);
    }

    /// Rows on a 2-D plane in 3-D (the third feature is the sum of the
    /// first two, as co2e = value × factor is nearly linear locally), with
    /// small noise; an outlier breaks the relation.
    #[test]
    fn the_autoencoder_flags_injected_outliers_above_the_training_threshold() {
        let mut state = 7u64;
        let mut noise = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.02
        };
        let normal: Vec<[f32; 3]> = (0..600)
            .map(|i| {
                let a = (i as f32 * 0.37).sin();
                let b = (i as f32 * 0.11).cos();
                [a + noise(), b + noise(), (a + b) * 0.5 + noise()]
            })
            .collect();
        let config = AutoencoderConfig::new().with_epochs(60);
        let model = train_autoencoder(&normal, &config, 11, &mut |_| {}).expect("trains");
        let mut errors = model.reconstruction_errors(&normal);
        errors.sort_by(f32::total_cmp);
        // The pipeline's rule: the 0.99 quantile of the training errors.
        let threshold = errors[(0.99 * (errors.len() - 1) as f64).round() as usize];
        // Three standard deviations off the plane (the features are ~unit scale).
        let outliers = [[2.0, 2.0, -2.0], [-2.0, 2.0, 3.0], [0.0, 0.0, 3.0]];
        let scores = model.reconstruction_errors(&outliers);
        for (row, score) in outliers.iter().zip(&scores) {
            assert!(
                *score > threshold,
                "outlier {row:?} scored {score}, threshold {threshold}"
            );
        }
    }

    #[test]
    fn an_autoencoder_that_learns_nothing_reports_that_it_did_not_converge() {
        let rows: Vec<[f32; 3]> = (0..200)
            .map(|i| {
                let a = (i as f32 * 0.37).sin();
                [a, 0.5 * a, (i as f32 * 0.11).cos()]
            })
            .collect();
        // No learning at all: the held-out loss stays where it started.
        let frozen = AutoencoderConfig::new()
            .with_learning_rate(0.0)
            .with_patience(5);
        let err = train_autoencoder(&rows, &frozen, 1, &mut |_| {}).unwrap_err();
        assert!(matches!(err, NeuralError::DidNotConverge { .. }), "{err}");
        // The production setting learns the same rows.
        let config = AutoencoderConfig::new()
            .with_min_steps(2000)
            .with_patience(20);
        let mut epochs = 0;
        train_autoencoder(&rows, &config, 1, &mut |_| epochs += 1).expect("converges");
        assert!(
            epochs > 30,
            "short histories get more steps: {epochs} epochs"
        );
    }

    /// The previous implementation, on burn's autodiff: the reference the
    /// fused training must reproduce.
    fn train_with_burn(rows: &[[f32; 3]], config: &AutoencoderConfig, seed: u64) -> Vec<Vec<f32>> {
        use burn::nn::loss::{MseLoss, Reduction};
        use burn::optim::{AdamConfig, GradientsParams};
        let mut model = neural::seeded_init(seed, |device| config.init(device));
        let device = model.enc1.weight.val().device();
        let mut optim = AdamConfig::new().with_epsilon(config.epsilon as f32).init();
        let data = flatten(rows);
        let mut order: Vec<usize> = (0..rows.len()).collect();
        let mut rng = seed ^ 0xA070_E4C0_DE55;
        for _ in 0..config.epochs {
            neural::shuffle(&mut order, &mut rng);
            for chunk in order.chunks(config.batch_size) {
                let mut bx = Vec::new();
                for &i in chunk {
                    bx.extend_from_slice(&data[i * 3..(i + 1) * 3]);
                }
                let x = neural::tensor2(bx, [chunk.len(), 3], &device);
                let loss = MseLoss::new().forward(model.forward(x.clone()), x, Reduction::Mean);
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optim.step(config.learning_rate, model, grads);
            }
        }
        neural::parameter_values(&model)
    }

    #[test]
    fn fused_training_reproduces_burn_autodiff_training() {
        let config = AutoencoderConfig::new().with_epochs(3);
        let want = train_with_burn(&rows(), &config, 9);
        let got = neural::parameter_values(
            &train_autoencoder(&rows(), &config, 9, &mut |_| {})
                .expect("trains")
                .model,
        );
        assert_eq!(want.len(), got.len());
        for (w, g) in want.iter().zip(&got) {
            let scale = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (a, b) in w.iter().zip(g) {
                assert!(
                    (a - b).abs() <= 1e-5 * a.abs() + 1e-5 * scale,
                    "burn {a} vs fused {b}"
                );
            }
        }
    }
}
