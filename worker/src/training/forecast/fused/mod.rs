//! The fused LSTM engine: trains the [`Forecaster`] on plain `f32` buffers
//! and hands the weights back to the burn module, so storage and inference
//! stay burn's (`TrainedForecaster::{to_bytes, from_bytes, forecast}`).
//!
//! Per batch: one GEMM projects every step's input, one `[B×H]·[H×4H]` GEMM
//! per step drives the fused gates, backpropagation through time is written
//! by hand, and each weight gradient is one GEMM over all steps. Adam follows
//! burn's `Adam` operation for operation; dropout masks come from the engine's
//! own seeded generator, so concurrent trainings never share random state.
//! The initial weights are burn's (seeded under [`neural::seeded_init`]).

mod isa;
mod kernels;

/// The instruction set the fused engines run with on this machine:
/// `avx2+fma` or `portable` (`TRAINYARD_ISA=portable` forces the latter).
pub fn kernels() -> &'static str {
    isa::Isa::detect().name()
}
mod lstm;
#[cfg(test)]
mod tests;

use std::ops::Range;
use std::time::Instant;

use burn::module::Param;
use burn::nn::{GateController, Linear, Lstm};
use burn::prelude::*;

use self::isa::Isa;
use self::lstm::{LayerCache, LayerGrads, LayerParams};
use super::model::{Forecaster, LstmConfig};
use super::training::{epoch_report, mean_squared_error, split_windows};
use crate::training::neural::{self, NeuralError};
use crate::training::EpochReport;

/// Where each parameter lives in the flat vector.
#[derive(Debug, Clone)]
struct LayerRanges {
    w_ih: Range<usize>,
    w_hh: Range<usize>,
    b_ih: Range<usize>,
    b_hh: Range<usize>,
}

impl LayerRanges {
    fn new(start: usize, d_in: usize, hidden: usize) -> Self {
        let g = 4 * hidden;
        let w_ih = start..start + d_in * g;
        let w_hh = w_ih.end..w_ih.end + hidden * g;
        let b_ih = w_hh.end..w_hh.end + g;
        let b_hh = b_ih.end..b_ih.end + g;
        Self {
            w_ih,
            w_hh,
            b_ih,
            b_hh,
        }
    }

    fn end(&self) -> usize {
        self.b_hh.end
    }

    fn params<'a>(&self, flat: &'a [f32]) -> LayerParams<'a> {
        LayerParams {
            w_ih: &flat[self.w_ih.clone()],
            w_hh: &flat[self.w_hh.clone()],
            b_ih: &flat[self.b_ih.clone()],
            b_hh: &flat[self.b_hh.clone()],
        }
    }

    /// Mutable views of this layer's gradients; `flat` starts at `w_ih.start`.
    fn grads<'a>(&self, flat: &'a mut [f32]) -> LayerGrads<'a> {
        let (w_ih, rest) = flat.split_at_mut(self.w_ih.len());
        let (w_hh, rest) = rest.split_at_mut(self.w_hh.len());
        let (b_ih, rest) = rest.split_at_mut(self.b_ih.len());
        let (b_hh, _) = rest.split_at_mut(self.b_hh.len());
        LayerGrads {
            w_ih,
            w_hh,
            b_ih,
            b_hh,
        }
    }
}

#[derive(Debug, Clone)]
struct Layout {
    hidden1: usize,
    hidden2: usize,
    l1: LayerRanges,
    l2: LayerRanges,
    head_w: Range<usize>,
    head_b: Range<usize>,
}

impl Layout {
    fn new(hidden1: usize, hidden2: usize) -> Self {
        let l1 = LayerRanges::new(0, 1, hidden1);
        let l2 = LayerRanges::new(l1.end(), hidden1, hidden2);
        let head_w = l2.end()..l2.end() + hidden2;
        let head_b = head_w.end..head_w.end + 1;
        Self {
            hidden1,
            hidden2,
            l1,
            l2,
            head_w,
            head_b,
        }
    }

    fn len(&self) -> usize {
        self.head_b.end
    }
}

/// Burn's Adam (`burn::optim::Adam`, no weight decay, no AMSGrad) on flat
/// buffers, with the same f32 operations in the same order.
#[derive(Debug, Clone)]
pub(crate) struct Adam {
    moment_1: Vec<f32>,
    moment_2: Vec<f32>,
    time: i32,
    epsilon: f32,
}

impl Adam {
    const BETA_1: f32 = 0.9;
    const BETA_2: f32 = 0.999;

    pub(crate) fn new(len: usize, epsilon: f32) -> Self {
        Self {
            moment_1: vec![0.0; len],
            moment_2: vec![0.0; len],
            time: 0,
            epsilon,
        }
    }

    pub(crate) fn step(&mut self, learning_rate: f64, params: &mut [f32], grads: &[f32]) {
        self.time += 1;
        let (b1, b2) = (Self::BETA_1, Self::BETA_2);
        let (f1, f2) = (1.0 - b1, 1.0 - b2);
        let bias_correction2_sqrt = (1.0 - b2.powi(self.time)).sqrt();
        let combined = bias_correction2_sqrt / (1.0 - b1.powi(self.time));
        let eps = self.epsilon * bias_correction2_sqrt;
        let lr = learning_rate as f32;
        for (((p, g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(&mut self.moment_1)
            .zip(&mut self.moment_2)
        {
            *m = *m * b1 + *g * f1;
            *v = *v * b2 + (*g * *g) * f2;
            let delta = (*m * combined) / (v.sqrt() + eps);
            *p -= delta * lr;
        }
    }
}

/// Splitmix64: the dropout masks' generator.
#[derive(Debug, Clone)]
struct MaskRng(u64);

impl MaskRng {
    fn next_f64(&mut self) -> f64 {
        neural::unit_f64(&mut self.0)
    }

    /// Inverted dropout: each value is 0 with probability `p`, else `1/(1-p)`.
    fn fill_mask(&mut self, mask: &mut [f32], p: f64) {
        let scale = (1.0 / (1.0 - p)) as f32;
        for m in mask {
            *m = if self.next_f64() < p { 0.0 } else { scale };
        }
    }
}

/// Scratch buffers for one batch size and window.
#[derive(Debug, Clone)]
struct Workspace {
    l1: LayerCache,
    l2: LayerCache,
    mask1: Vec<f32>,
    mask2: Vec<f32>,
    /// Layer 1's output after dropout (layer 2's input).
    s1: Vec<f32>,
    ds1: Vec<f32>,
    dh1: Vec<f32>,
    dh2: Vec<f32>,
    /// Layer 2's last hidden state after dropout.
    h2: Vec<f32>,
    pred: Vec<f32>,
}

impl Workspace {
    fn new(layout: &Layout, steps: usize, batch: usize) -> Self {
        Self::with_isa(layout, steps, batch, Isa::detect())
    }

    fn with_isa(layout: &Layout, steps: usize, batch: usize, isa: Isa) -> Self {
        let (h1, h2) = (layout.hidden1, layout.hidden2);
        let rows = steps * batch;
        Self {
            l1: LayerCache::new(1, h1, steps, batch, isa),
            l2: LayerCache::new(h1, h2, steps, batch, isa),
            mask1: vec![0.0; rows * h1],
            mask2: vec![0.0; batch * h2],
            s1: vec![0.0; rows * h1],
            ds1: vec![0.0; rows * h1],
            dh1: vec![0.0; rows * h1],
            dh2: vec![0.0; rows * h2],
            h2: vec![0.0; batch * h2],
            pred: vec![0.0; batch],
        }
    }
}

/// The forecaster's weights on flat buffers, plus what training needs.
#[derive(Debug, Clone)]
pub struct FusedForecaster {
    layout: Layout,
    params: Vec<f32>,
}

fn values<const D: usize>(param: &Param<Tensor<D>>) -> Vec<f32> {
    neural::to_vec(param.val())
}

fn bias(linear: &Linear) -> Vec<f32> {
    linear
        .bias
        .as_ref()
        .map(values)
        .expect("the forecaster's layers have biases")
}

fn gates(lstm: &Lstm) -> [&GateController; 4] {
    [
        &lstm.input_gate,
        lstm.forget_gate
            .as_ref()
            .expect("the forecaster's LSTMs have a forget gate"),
        &lstm.output_gate,
        &lstm.cell_gate,
    ]
}

fn gates_mut(lstm: &mut Lstm) -> [&mut GateController; 4] {
    [
        &mut lstm.input_gate,
        lstm.forget_gate
            .as_mut()
            .expect("the forecaster's LSTMs have a forget gate"),
        &mut lstm.output_gate,
        &mut lstm.cell_gate,
    ]
}

/// Copies `[rows × H]` into column block `k` of `[rows × 4H]`.
fn scatter_block(src: &[f32], dst: &mut [f32], hidden: usize, k: usize) {
    for (s, d) in src
        .chunks_exact(hidden)
        .zip(dst.chunks_exact_mut(4 * hidden))
    {
        d[k * hidden..(k + 1) * hidden].copy_from_slice(s);
    }
}

/// Column block `k` of `[rows × 4H]` as `[rows × H]`.
fn gather_block(src: &[f32], hidden: usize, k: usize) -> Vec<f32> {
    src.chunks_exact(4 * hidden)
        .flat_map(|row| row[k * hidden..(k + 1) * hidden].iter().copied())
        .collect()
}

pub(crate) fn replace<const D: usize>(
    param: &mut Param<Tensor<D>>,
    values: Vec<f32>,
    shape: [usize; D],
    device: &Device,
) {
    let tensor = Tensor::from_data(TensorData::new(values, shape), device);
    *param = param.clone().map(|_| tensor);
}

/// A parameter in burn's naming and layout, for comparisons.
pub type NamedValues = Vec<(String, Vec<f32>)>;

impl FusedForecaster {
    /// Copies the weights of a burn forecaster.
    pub fn from_burn(model: &Forecaster) -> Self {
        let hidden1 = model.lstm1.d_hidden;
        let hidden2 = model.lstm2.d_hidden;
        let layout = Layout::new(hidden1, hidden2);
        let mut params = vec![0.0; layout.len()];
        for (lstm, ranges, h) in [
            (&model.lstm1, &layout.l1, hidden1),
            (&model.lstm2, &layout.l2, hidden2),
        ] {
            for (k, gate) in gates(lstm).into_iter().enumerate() {
                let (inp, hid) = (&gate.input_transform, &gate.hidden_transform);
                scatter_block(&values(&inp.weight), &mut params[ranges.w_ih.clone()], h, k);
                scatter_block(&values(&hid.weight), &mut params[ranges.w_hh.clone()], h, k);
                params[ranges.b_ih.clone()][k * h..(k + 1) * h].copy_from_slice(&bias(inp));
                params[ranges.b_hh.clone()][k * h..(k + 1) * h].copy_from_slice(&bias(hid));
            }
        }
        params[layout.head_w.clone()].copy_from_slice(&values(&model.head.weight));
        params[layout.head_b.clone()].copy_from_slice(&bias(&model.head));
        Self { layout, params }
    }

    /// Writes the weights into `model` (same architecture), on `device`.
    pub fn write_into(&self, mut model: Forecaster, device: &Device) -> Forecaster {
        let named = self.named(&self.params);
        let mut it = named.into_iter().map(|(_, v)| v);
        let (h1, h2) = (self.layout.hidden1, self.layout.hidden2);
        for (lstm, d_in, h) in [(&mut model.lstm1, 1, h1), (&mut model.lstm2, h1, h2)] {
            for gate in gates_mut(lstm) {
                let mut next = || it.next().expect("one value vector per parameter");
                replace(&mut gate.input_transform.weight, next(), [d_in, h], device);
                let b = gate.input_transform.bias.as_mut().expect("biased");
                replace(b, next(), [h], device);
                replace(&mut gate.hidden_transform.weight, next(), [h, h], device);
                let b = gate.hidden_transform.bias.as_mut().expect("biased");
                replace(b, next(), [h], device);
            }
        }
        let w = it.next().expect("head weight");
        replace(&mut model.head.weight, w, [h2, 1], device);
        let b = it.next().expect("head bias");
        replace(model.head.bias.as_mut().expect("biased"), b, [1], device);
        model
    }

    /// A flat vector (parameters or gradients) in burn's parameters and
    /// layouts, in module order: per LSTM and gate (input, forget, output,
    /// cell) input weight, input bias, hidden weight, hidden bias; then the
    /// head's weight and bias.
    pub fn named(&self, flat: &[f32]) -> NamedValues {
        let mut out = Vec::new();
        let names = ["input_gate", "forget_gate", "output_gate", "cell_gate"];
        for (lname, r, h) in [
            ("lstm1", &self.layout.l1, self.layout.hidden1),
            ("lstm2", &self.layout.l2, self.layout.hidden2),
        ] {
            for (k, gname) in names.iter().enumerate() {
                let p = format!("{lname}.{gname}");
                let block = |range: &Range<usize>| gather_block(&flat[range.clone()], h, k);
                let bias = |range: &Range<usize>| flat[range.clone()][k * h..(k + 1) * h].to_vec();
                out.push((format!("{p}.input_transform.weight"), block(&r.w_ih)));
                out.push((format!("{p}.input_transform.bias"), bias(&r.b_ih)));
                out.push((format!("{p}.hidden_transform.weight"), block(&r.w_hh)));
                out.push((format!("{p}.hidden_transform.bias"), bias(&r.b_hh)));
            }
        }
        out.push((
            "head.weight".into(),
            flat[self.layout.head_w.clone()].to_vec(),
        ));
        out.push((
            "head.bias".into(),
            flat[self.layout.head_b.clone()].to_vec(),
        ));
        out
    }

    /// Forward over `batch` windows, time-major `x` (`[steps][batch]`).
    /// With masks, applies dropout (training); predictions land in `ws.pred`.
    fn forward(&self, ws: &mut Workspace, x: &[f32], steps: usize, batch: usize, dropout: bool) {
        let (h1, h2) = (self.layout.hidden1, self.layout.hidden2);
        let rows = steps * batch;
        ws.l1
            .forward(&self.layout.l1.params(&self.params), x, steps, batch);
        let s1 = &mut ws.s1[..rows * h1];
        s1.copy_from_slice(&ws.l1.hidden_states[..rows * h1]);
        if dropout {
            for (v, m) in s1.iter_mut().zip(&ws.mask1) {
                *v *= m;
            }
        }
        ws.l2
            .forward(&self.layout.l2.params(&self.params), s1, steps, batch);
        let last = &ws.l2.hidden_states[(steps - 1) * batch * h2..rows * h2];
        let h2d = &mut ws.h2[..batch * h2];
        h2d.copy_from_slice(last);
        if dropout {
            for (v, m) in h2d.iter_mut().zip(&ws.mask2) {
                *v *= m;
            }
        }
        let w = &self.params[self.layout.head_w.clone()];
        let b = self.params[self.layout.head_b.start];
        for (p, row) in ws.pred[..batch].iter_mut().zip(h2d.chunks_exact(h2)) {
            *p = row.iter().zip(w).map(|(a, b)| a * b).sum::<f32>() + b;
        }
    }

    /// Mean squared error of the batch and its gradient w.r.t. every
    /// parameter (written to `grads`, same layout as the parameters).
    #[allow(clippy::too_many_arguments)]
    fn loss_and_grads(
        &self,
        ws: &mut Workspace,
        x: &[f32],
        y: &[f32],
        steps: usize,
        dropout: bool,
        grads: &mut [f32],
    ) -> f32 {
        let batch = y.len();
        let (h1, h2) = (self.layout.hidden1, self.layout.hidden2);
        let rows = steps * batch;
        self.forward(ws, x, steps, batch, dropout);
        grads.fill(0.0);
        let n = batch as f32;
        let mut loss = 0.0f32;
        let w = &self.params[self.layout.head_w.clone()];
        let dh2 = &mut ws.dh2[..rows * h2];
        dh2.fill(0.0);
        let last = &mut dh2[(steps - 1) * batch * h2..];
        let (gw, gb) = grads[self.layout.head_w.start..].split_at_mut(h2);
        for r in 0..batch {
            let diff = ws.pred[r] - y[r];
            loss += diff * diff;
            let dy = 2.0 * diff / n;
            gb[0] += dy;
            for j in 0..h2 {
                gw[j] += ws.h2[r * h2 + j] * dy;
                let m = if dropout { ws.mask2[r * h2 + j] } else { 1.0 };
                last[r * h2 + j] = dy * w[j] * m;
            }
        }
        let (g1, g2) = grads.split_at_mut(self.layout.l2.w_ih.start);
        let p2 = self.layout.l2.params(&self.params);
        let ds1 = &mut ws.ds1[..rows * h1];
        ws.l2.backward(
            &p2,
            &ws.s1[..rows * h1],
            steps,
            batch,
            &ws.dh2[..rows * h2],
            &mut self.layout.l2.grads(g2),
            Some(&mut *ds1),
        );
        let dh1 = &mut ws.dh1[..rows * h1];
        dh1.copy_from_slice(ds1);
        if dropout {
            for (v, m) in dh1.iter_mut().zip(&ws.mask1) {
                *v *= m;
            }
        }
        let p1 = self.layout.l1.params(&self.params);
        ws.l1.backward(
            &p1,
            x,
            steps,
            batch,
            &ws.dh1[..rows * h1],
            &mut self.layout.l1.grads(g1),
            None,
        );
        loss / n
    }

    /// Loss and gradients without dropout for batch-first windows
    /// `x` (`[batch][steps]`), with the kernels built for `isa`, in
    /// [`named`](Self::named) form (the tests compare them with burn's).
    #[cfg(test)]
    fn gradients_with(&self, isa: Isa, x: &[f32], y: &[f32], steps: usize) -> (f32, NamedValues) {
        let batch = y.len();
        let mut ws = Workspace::with_isa(&self.layout, steps, batch, isa);
        let xt = time_major(x, steps, batch);
        let mut grads = vec![0.0; self.layout.len()];
        let loss = self.loss_and_grads(&mut ws, &xt, y, steps, false, &mut grads);
        (loss, self.named(&grads))
    }

    /// Predictions without dropout for batch-first windows `x` (`[batch][steps]`).
    pub fn predict(&self, x: &[f32], steps: usize) -> Vec<f32> {
        let batch = x.len() / steps;
        if batch == 0 {
            return Vec::new();
        }
        let mut ws = Workspace::new(&self.layout, steps, batch);
        let xt = time_major(x, steps, batch);
        self.forward(&mut ws, &xt, steps, batch, false);
        ws.pred[..batch].to_vec()
    }
}

/// `[batch][steps]` → `[steps][batch]`.
fn time_major(x: &[f32], steps: usize, batch: usize) -> Vec<f32> {
    let mut out = vec![0.0; steps * batch];
    for r in 0..batch {
        for t in 0..steps {
            out[t * batch + r] = x[r * steps + t];
        }
    }
    out
}

/// Trains the forecaster with the fused engine; same data split, shuffling
/// and reports as the burn engine.
pub fn fit(
    train: &[f32],
    config: &LstmConfig,
    seed: u64,
    on_epoch: &mut dyn FnMut(&EpochReport),
) -> Result<Forecaster, NeuralError> {
    let w = config.window;
    let (x, y, n_fit, n_val) = split_windows(train, config);

    let model = neural::seeded_init(seed, |device| config.init(device));
    let mut engine = FusedForecaster::from_burn(&model);
    let layout = engine.layout.clone();
    let batch = config.batch_size.max(1);
    let mut ws = Workspace::new(&layout, w, batch.min(n_fit).max(1));
    let mut grads = vec![0.0; layout.len()];
    let mut adam = Adam::new(layout.len(), config.epsilon as f32);
    let mut order: Vec<usize> = (0..n_fit).collect();
    let mut rng = seed ^ 0x5EED_F0CA_57E4;
    let mut masks = MaskRng(seed ^ 0xD809_0D7A_11CE);
    let p = config.dropout;
    let dropout = p > 0.0;
    let mut bx = vec![0.0f32; w * batch];
    let mut by = vec![0.0f32; batch];
    let (vx, vy) = (&x[n_fit * w..], &y[n_fit..]);

    for epoch in 1..=config.epochs {
        let started = Instant::now();
        neural::shuffle(&mut order, &mut rng);
        let mut loss_sum = 0.0f64;
        let mut seen = 0usize;
        for chunk in order.chunks(batch) {
            let b = chunk.len();
            for (r, &i) in chunk.iter().enumerate() {
                for t in 0..w {
                    bx[t * b + r] = x[i * w + t];
                }
                by[r] = y[i];
            }
            if dropout {
                masks.fill_mask(&mut ws.mask1[..w * b * layout.hidden1], p);
                masks.fill_mask(&mut ws.mask2[..b * layout.hidden2], p);
            }
            let loss =
                engine.loss_and_grads(&mut ws, &bx[..w * b], &by[..b], w, dropout, &mut grads);
            let value = f64::from(loss);
            if !value.is_finite() {
                return Err(NeuralError::Diverged(value));
            }
            loss_sum += value * b as f64;
            seen += b;
            adam.step(config.learning_rate, &mut engine.params, &grads);
        }
        let val_loss = (n_val > 0).then(|| mean_squared_error(&engine.predict(vx, w), vy));
        on_epoch(&epoch_report(
            config, epoch, loss_sum, seen, val_loss, started,
        ));
    }
    Ok(engine.write_into(model.valid(), &neural::infer_device()))
}
