//! One LSTM layer over a whole sequence: forward with the activations kept
//! for backward, and backpropagation through time.
//!
//! Layout: sequences are time-major, `[steps][batch][features]`, so all steps
//! together are one `[(steps·batch) × features]` matrix. The four gates are
//! fused column blocks `[input | forget | output | cell]` of width `hidden`
//! (burn's `Lstm` field order), so each step is one `[batch×hidden]·[hidden×4hidden]`
//! GEMM, the input projection of every step is one GEMM, and the weight
//! gradients of every step are one GEMM each.

use super::kernels::{gemm, sigmoid, tanh, tanh_into};

/// A layer's parameters, as slices of the engine's flat parameter vector.
pub struct LayerParams<'a> {
    /// `[d_in × 4H]`.
    pub w_ih: &'a [f32],
    /// `[H × 4H]`.
    pub w_hh: &'a [f32],
    /// `[4H]`.
    pub b_ih: &'a [f32],
    /// `[4H]`.
    pub b_hh: &'a [f32],
}

/// Gradients of one layer, same shapes as [`LayerParams`]; accumulated into.
pub struct LayerGrads<'a> {
    pub w_ih: &'a mut [f32],
    pub w_hh: &'a mut [f32],
    pub b_ih: &'a mut [f32],
    pub b_hh: &'a mut [f32],
}

/// What the forward pass keeps for backward, sized for the largest batch.
#[derive(Debug, Clone)]
pub struct LayerCache {
    pub d_in: usize,
    pub hidden: usize,
    /// Gate activations `[steps][batch][4H]`.
    gates: Vec<f32>,
    /// Cell states `[steps][batch][H]`.
    cells: Vec<f32>,
    /// `tanh(cell)` `[steps][batch][H]`.
    tanh_cells: Vec<f32>,
    /// Hidden states (the layer's output) `[steps][batch][H]`.
    pub hidden_states: Vec<f32>,
    /// Gate pre-activation gradients `[steps][batch][4H]`.
    d_gates: Vec<f32>,
    dh_next: Vec<f32>,
    dc_next: Vec<f32>,
}

impl LayerCache {
    pub fn new(d_in: usize, hidden: usize, steps: usize, batch: usize) -> Self {
        let n = steps * batch;
        Self {
            d_in,
            hidden,
            gates: vec![0.0; n * 4 * hidden],
            cells: vec![0.0; n * hidden],
            tanh_cells: vec![0.0; n * hidden],
            hidden_states: vec![0.0; n * hidden],
            d_gates: vec![0.0; n * 4 * hidden],
            dh_next: vec![0.0; batch * hidden],
            dc_next: vec![0.0; batch * hidden],
        }
    }

    /// Runs the layer over `x` (`[steps][batch][d_in]`), zero initial state.
    /// The outputs are `hidden_states[..steps·batch·H]`.
    pub fn forward(&mut self, p: &LayerParams<'_>, x: &[f32], steps: usize, batch: usize) {
        let (d, h) = (self.d_in, self.hidden);
        let g = 4 * h;
        let rows = steps * batch;
        let z = &mut self.gates[..rows * g];
        for row in z.chunks_exact_mut(g) {
            for ((v, a), b) in row.iter_mut().zip(p.b_ih).zip(p.b_hh) {
                *v = a + b;
            }
        }
        if d == 1 {
            for (row, &xv) in z.chunks_exact_mut(g).zip(&x[..rows]) {
                for (v, w) in row.iter_mut().zip(p.w_ih) {
                    *v += xv * w;
                }
            }
        } else {
            gemm(rows, d, g, x, false, p.w_ih, false, 1.0, z);
        }
        let bh = batch * h;
        for t in 0..steps {
            let (prev_h, cur_h) = self.hidden_states.split_at_mut(t * bh);
            let zt = &mut self.gates[t * batch * g..(t + 1) * batch * g];
            if t > 0 {
                gemm(
                    batch,
                    h,
                    g,
                    &prev_h[(t - 1) * bh..],
                    false,
                    p.w_hh,
                    false,
                    1.0,
                    zt,
                );
            }
            for row in zt.chunks_exact_mut(g) {
                sigmoid(&mut row[..3 * h]);
                tanh(&mut row[3 * h..]);
            }
            let (prev_c, cur_c) = self.cells.split_at_mut(t * bh);
            let ct = &mut cur_c[..bh];
            for r in 0..batch {
                let gr = &zt[r * g..(r + 1) * g];
                let (i, rest) = gr.split_at(h);
                let (f, rest) = rest.split_at(h);
                let (_, c_hat) = rest.split_at(h);
                let c = &mut ct[r * h..(r + 1) * h];
                if t == 0 {
                    for j in 0..h {
                        c[j] = i[j] * c_hat[j];
                    }
                } else {
                    let cp = &prev_c[(t - 1) * bh + r * h..(t - 1) * bh + (r + 1) * h];
                    for j in 0..h {
                        c[j] = f[j] * cp[j] + i[j] * c_hat[j];
                    }
                }
            }
            let tc = &mut self.tanh_cells[t * bh..(t + 1) * bh];
            tanh_into(ct, tc);
            let ht = &mut cur_h[..bh];
            for r in 0..batch {
                let o = &zt[r * g + 2 * h..r * g + 3 * h];
                for j in 0..h {
                    ht[r * h + j] = o[j] * tc[r * h + j];
                }
            }
        }
    }

    /// Backpropagation through time after [`forward`](Self::forward) on the
    /// same `x`. `dh_out` is the loss gradient w.r.t. every step's output
    /// (`[steps][batch][H]`). Parameter gradients are added to `grads`; when
    /// `dx` is given it receives the gradient w.r.t. `x`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        p: &LayerParams<'_>,
        x: &[f32],
        steps: usize,
        batch: usize,
        dh_out: &[f32],
        grads: &mut LayerGrads<'_>,
        dx: Option<&mut [f32]>,
    ) {
        let (d, h) = (self.d_in, self.hidden);
        let g = 4 * h;
        let bh = batch * h;
        let rows = steps * batch;
        self.dh_next[..bh].fill(0.0);
        self.dc_next[..bh].fill(0.0);
        for t in (0..steps).rev() {
            let gates = &self.gates[t * batch * g..(t + 1) * batch * g];
            let dz = &mut self.d_gates[t * batch * g..(t + 1) * batch * g];
            let tc = &self.tanh_cells[t * bh..(t + 1) * bh];
            let dho = &dh_out[t * bh..(t + 1) * bh];
            for r in 0..batch {
                let gr = &gates[r * g..(r + 1) * g];
                let dzr = &mut dz[r * g..(r + 1) * g];
                for j in 0..h {
                    let (i, f, o, c_hat) = (gr[j], gr[h + j], gr[2 * h + j], gr[3 * h + j]);
                    let k = r * h + j;
                    let c_prev = if t == 0 {
                        0.0
                    } else {
                        self.cells[(t - 1) * bh + k]
                    };
                    let dh = dho[k] + self.dh_next[k];
                    let tck = tc[k];
                    let d_o = dh * tck;
                    let dc = self.dc_next[k] + dh * o * (1.0 - tck * tck);
                    let di = dc * c_hat;
                    let dg = dc * i;
                    let df = dc * c_prev;
                    self.dc_next[k] = dc * f;
                    dzr[j] = di * (i * (1.0 - i));
                    dzr[h + j] = df * (f * (1.0 - f));
                    dzr[2 * h + j] = d_o * (o * (1.0 - o));
                    dzr[3 * h + j] = dg * (1.0 - c_hat * c_hat);
                }
            }
            if t > 0 {
                gemm(
                    batch,
                    g,
                    h,
                    dz,
                    false,
                    p.w_hh,
                    true,
                    0.0,
                    &mut self.dh_next[..bh],
                );
            }
        }
        let dz_all = &self.d_gates[..rows * g];
        if steps > 1 {
            // dW_hh = Σ_t h_{t-1}ᵀ·dz_t, all steps in one GEMM.
            let hs = &self.hidden_states[..(steps - 1) * bh];
            gemm(
                h,
                (steps - 1) * batch,
                g,
                hs,
                true,
                &dz_all[batch * g..],
                false,
                1.0,
                grads.w_hh,
            );
        }
        if d == 1 {
            for (row, &xv) in dz_all.chunks_exact(g).zip(&x[..rows]) {
                for (w, v) in grads.w_ih.iter_mut().zip(row) {
                    *w += xv * v;
                }
            }
        } else {
            gemm(d, rows, g, x, true, dz_all, false, 1.0, grads.w_ih);
        }
        for row in dz_all.chunks_exact(g) {
            for ((a, b), v) in grads.b_ih.iter_mut().zip(grads.b_hh.iter_mut()).zip(row) {
                *a += v;
                *b += v;
            }
        }
        if let Some(dx) = dx {
            gemm(
                rows,
                g,
                d,
                dz_all,
                false,
                p.w_ih,
                true,
                0.0,
                &mut dx[..rows * d],
            );
        }
    }
}
