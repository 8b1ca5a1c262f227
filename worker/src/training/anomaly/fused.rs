//! The autoencoder's training on plain `f32` buffers. The model is four
//! small dense layers; on burn's autodiff every step of a 16-row batch costs
//! far more in graph bookkeeping and allocation than in arithmetic. Here the
//! weights are copied out of the burn `Autoencoder`, trained with a
//! hand-written forward/backward and the LSTM engine's Adam (burn's exact
//! f32 operations), and written back, so the stored record and inference
//! are burn's as before.

use burn::nn::Linear;
use burn::prelude::*;

use super::model::Autoencoder;
use crate::training::forecast::fused::{replace, Adam};

/// `(d_in, d_out)` of the four layers and where each one's weight
/// (`[d_in × d_out]`, burn's layout) and bias start in the flat vector.
#[derive(Debug, Clone)]
pub struct FusedAutoencoder {
    dims: [(usize, usize); 4],
    offsets: [(usize, usize); 4],
    pub params: Vec<f32>,
}

/// Activations kept for backward, sized for the largest batch.
#[derive(Debug, Default)]
pub struct Workspace {
    /// Outputs of each layer (after ReLU for the first three).
    acts: [Vec<f32>; 4],
    /// Gradient w.r.t. the current layer's output, and the next one down.
    grad: Vec<f32>,
    grad_below: Vec<f32>,
}

fn layers(m: &Autoencoder) -> [&Linear; 4] {
    [&m.enc1, &m.enc2, &m.dec1, &m.dec2]
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    crate::training::neural::to_vec(t)
}

impl FusedAutoencoder {
    pub fn from_burn(model: &Autoencoder) -> Self {
        let mut dims = [(0, 0); 4];
        let mut offsets = [(0, 0); 4];
        let mut params = Vec::new();
        for (i, l) in layers(model).into_iter().enumerate() {
            let [d_in, d_out] = l.weight.val().dims();
            dims[i] = (d_in, d_out);
            offsets[i].0 = params.len();
            params.extend(values(l.weight.val()));
            offsets[i].1 = params.len();
            match &l.bias {
                Some(b) => params.extend(values(b.val())),
                None => params.extend(std::iter::repeat_n(0.0, d_out)),
            }
        }
        Self {
            dims,
            offsets,
            params,
        }
    }

    /// The burn model with this engine's weights.
    pub fn write_into(&self, mut model: Autoencoder) -> Autoencoder {
        let device = model.enc1.weight.val().device();
        let targets = [
            &mut model.enc1,
            &mut model.enc2,
            &mut model.dec1,
            &mut model.dec2,
        ];
        for (i, l) in targets.into_iter().enumerate() {
            let (d_in, d_out) = self.dims[i];
            let (w, b) = self.offsets[i];
            replace(
                &mut l.weight,
                self.params[w..w + d_in * d_out].to_vec(),
                [d_in, d_out],
                &device,
            );
            if let Some(bias) = &mut l.bias {
                replace(bias, self.params[b..b + d_out].to_vec(), [d_out], &device);
            }
        }
        model
    }

    /// Mean squared reconstruction error of the `rows` rows of `x`
    /// (`[rows × inputs]`), with its gradient added to `grads`.
    pub fn loss_and_grads(
        &self,
        x: &[f32],
        rows: usize,
        ws: &mut Workspace,
        grads: &mut [f32],
    ) -> f32 {
        // Forward.
        for i in 0..4 {
            let (d_in, d_out) = self.dims[i];
            let (w, b) = self.offsets[i];
            let mut out = std::mem::take(&mut ws.acts[i]);
            out.clear();
            out.resize(rows * d_out, 0.0);
            let input: &[f32] = if i == 0 { x } else { &ws.acts[i - 1] };
            dense(
                input,
                &self.params[w..w + d_in * d_out],
                &self.params[b..b + d_out],
                rows,
                d_in,
                d_out,
                &mut out,
            );
            if i < 3 {
                for v in &mut out {
                    *v = v.max(0.0);
                }
            }
            ws.acts[i] = out;
        }
        // Loss and its gradient w.r.t. the reconstruction.
        let width = self.dims[0].0;
        let n = (rows * width) as f32;
        let mut loss = 0.0f32;
        ws.grad.clear();
        for (y, t) in ws.acts[3].iter().zip(&x[..rows * width]) {
            let d = y - t;
            loss += d * d;
            ws.grad.push(2.0 * d / n);
        }
        // Backward, top layer first.
        for i in (0..4).rev() {
            let (d_in, d_out) = self.dims[i];
            let (w, b) = self.offsets[i];
            let input: &[f32] = if i == 0 { x } else { &ws.acts[i - 1] };
            let g = &ws.grad;
            {
                let (gw, gb) = grads[w..b + d_out].split_at_mut(d_in * d_out);
                for r in 0..rows {
                    let gr = &g[r * d_out..(r + 1) * d_out];
                    for (acc, v) in gb.iter_mut().zip(gr) {
                        *acc += v;
                    }
                    for k in 0..d_in {
                        let a = input[r * d_in + k];
                        for (acc, v) in gw[k * d_out..(k + 1) * d_out].iter_mut().zip(gr) {
                            *acc += a * v;
                        }
                    }
                }
            }
            if i == 0 {
                break;
            }
            // Through the weights, then the ReLU below.
            let weight = &self.params[w..w + d_in * d_out];
            ws.grad_below.clear();
            ws.grad_below.resize(rows * d_in, 0.0);
            for r in 0..rows {
                let gr = &g[r * d_out..(r + 1) * d_out];
                for k in 0..d_in {
                    if input[r * d_in + k] > 0.0 {
                        ws.grad_below[r * d_in + k] = weight[k * d_out..(k + 1) * d_out]
                            .iter()
                            .zip(gr)
                            .map(|(a, b)| a * b)
                            .sum();
                    }
                }
            }
            std::mem::swap(&mut ws.grad, &mut ws.grad_below);
        }
        loss / n
    }
}

/// `out[rows × d_out] = input[rows × d_in] · w[d_in × d_out] + bias`.
fn dense(
    input: &[f32],
    w: &[f32],
    bias: &[f32],
    rows: usize,
    d_in: usize,
    d_out: usize,
    out: &mut [f32],
) {
    for r in 0..rows {
        let o = &mut out[r * d_out..(r + 1) * d_out];
        o.copy_from_slice(bias);
        for k in 0..d_in {
            let a = input[r * d_in + k];
            for (acc, wv) in o.iter_mut().zip(&w[k * d_out..(k + 1) * d_out]) {
                *acc += a * wv;
            }
        }
    }
}

/// Mean squared reconstruction error of `rows` rows of `x`, forward only.
pub fn loss(model: &FusedAutoencoder, x: &[f32], rows: usize, ws: &mut Workspace) -> f32 {
    let mut scratch = vec![0.0f32; model.params.len()];
    model.loss_and_grads(x, rows, ws, &mut scratch)
}

/// A fresh optimizer for `model`'s parameters.
pub(crate) fn adam(model: &FusedAutoencoder, epsilon: f64) -> Adam {
    Adam::new(model.params.len(), epsilon as f32)
}
