//! One LSTM layer over a whole sequence: forward with the activations kept
//! for backward, and backpropagation through time.
//!
//! Layout: sequences are time-major, `[steps][batch][features]`, so all steps
//! together are one `[(steps·batch) × features]` matrix. The four gates are
//! fused column blocks `[input | forget | output | cell]` of width `hidden`
//! (burn's `Lstm` field order), so each step is one `[batch×hidden]·[hidden×4hidden]`
//! GEMM, the input projection of every step is one GEMM, and the weight
//! gradients of every step are one GEMM each.

use super::isa::{Isa, Vectorized};
use super::kernels::{gemm, gemm_acc_fma, sigmoid, tanh, tanh_into};

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
    /// The instruction set the passes run with.
    isa: Isa,
    /// `W_hhᵀ` `[4H × H]`, row-major, for the FMA build's backward product.
    w_hh_t: Vec<f32>,
    /// The initial cell state, zeros `[batch][H]`.
    zero_state: Vec<f32>,
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
    pub fn new(d_in: usize, hidden: usize, steps: usize, batch: usize, isa: Isa) -> Self {
        let n = steps * batch;
        Self {
            d_in,
            hidden,
            isa,
            w_hh_t: vec![0.0; hidden * 4 * hidden],
            zero_state: vec![0.0; batch * hidden],
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
        let isa = self.isa;
        isa.run(Forward {
            cache: self,
            p,
            x,
            steps,
            batch,
        });
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
        let isa = self.isa;
        isa.run(Backward {
            cache: self,
            p,
            x,
            steps,
            batch,
            dh_out,
            grads,
            dx,
        });
    }

    #[inline(always)]
    fn forward_impl<const FMA: bool>(
        &mut self,
        p: &LayerParams<'_>,
        x: &[f32],
        steps: usize,
        batch: usize,
    ) {
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
                let h_prev = &prev_h[(t - 1) * bh..];
                if FMA {
                    gemm_acc_fma(batch, h, g, h_prev, p.w_hh, zt);
                } else {
                    gemm(batch, h, g, h_prev, false, p.w_hh, false, 1.0, zt);
                }
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

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn backward_impl<const FMA: bool>(
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
        if FMA {
            for (r, row) in p.w_hh.chunks_exact(g).enumerate() {
                for (c, &w) in row.iter().enumerate() {
                    self.w_hh_t[c * h + r] = w;
                }
            }
        }
        for t in (0..steps).rev() {
            let gates = &self.gates[t * batch * g..(t + 1) * batch * g];
            let dz = &mut self.d_gates[t * batch * g..(t + 1) * batch * g];
            let tc = &self.tanh_cells[t * bh..(t + 1) * bh];
            let dho = &dh_out[t * bh..(t + 1) * bh];
            // `c_{t-1}`; the zero initial state before the first step.
            let c_prev = if t == 0 {
                &self.zero_state[..bh]
            } else {
                &self.cells[(t - 1) * bh..t * bh]
            };
            for r in 0..batch {
                let gr = &gates[r * g..(r + 1) * g];
                let (gi, rest) = gr.split_at(h);
                let (gf, rest) = rest.split_at(h);
                let (go, gc) = rest.split_at(h);
                let dzr = &mut dz[r * g..(r + 1) * g];
                let (dzi, rest) = dzr.split_at_mut(h);
                let (dzf, rest) = rest.split_at_mut(h);
                let (dzo, dzc) = rest.split_at_mut(h);
                let row = r * h..(r + 1) * h;
                gate_gradients(
                    [gi, gf, go, gc],
                    &tc[row.clone()],
                    &c_prev[row.clone()],
                    &dho[row.clone()],
                    &self.dh_next[row.clone()],
                    &mut self.dc_next[row],
                    [dzi, dzf, dzo, dzc],
                );
            }
            if t > 0 {
                let dh_next = &mut self.dh_next[..bh];
                if FMA {
                    dh_next.fill(0.0);
                    gemm_acc_fma(batch, g, h, dz, &self.w_hh_t, dh_next);
                } else {
                    gemm(batch, g, h, dz, false, p.w_hh, true, 0.0, dh_next);
                }
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

/// One step's gate pre-activation gradients for one sequence, from the gate
/// activations `[i, f, o, ĉ]`, `tanh(c_t)`, `c_{t-1}`, and the hidden-state
/// gradient (`dh_out + dh_next`); carries `dc` back through `dc_next`.
#[inline(always)]
fn gate_gradients(
    gates: [&[f32]; 4],
    tanh_c: &[f32],
    c_prev: &[f32],
    dh_out: &[f32],
    dh_next: &[f32],
    dc_next: &mut [f32],
    mut dz: [&mut [f32]; 4],
) {
    let h = dc_next.len();
    let inputs = [
        gates[0], gates[1], gates[2], gates[3], tanh_c, c_prev, dh_out, dh_next,
    ];
    let mut j = 0;
    while j + 8 <= h {
        gate_gradient_lanes::<8>(j, &inputs, dc_next, &mut dz);
        j += 8;
    }
    while j < h {
        gate_gradient_lanes::<1>(j, &inputs, dc_next, &mut dz);
        j += 1;
    }
}

/// [`gate_gradients`] for `W` hidden units from `j`: loads every input into
/// fixed-size arrays first, so the arithmetic runs `W` lanes wide whatever the
/// compiler can prove about aliasing.
#[inline(always)]
fn gate_gradient_lanes<const W: usize>(
    j: usize,
    inputs: &[&[f32]; 8],
    dc_next: &mut [f32],
    dz: &mut [&mut [f32]; 4],
) {
    #[inline(always)]
    fn load<const W: usize>(s: &[f32], j: usize) -> [f32; W] {
        s[j..j + W].try_into().expect("W values")
    }
    let (i, f, o, c_hat): ([f32; W], [f32; W], [f32; W], [f32; W]) = (
        load(inputs[0], j),
        load(inputs[1], j),
        load(inputs[2], j),
        load(inputs[3], j),
    );
    let (tc, cp, dho, dhn): ([f32; W], [f32; W], [f32; W], [f32; W]) = (
        load(inputs[4], j),
        load(inputs[5], j),
        load(inputs[6], j),
        load(inputs[7], j),
    );
    let dcn: [f32; W] = load(dc_next, j);
    let (mut new_dcn, mut di, mut df, mut d_o, mut dg) =
        ([0.0; W], [0.0; W], [0.0; W], [0.0; W], [0.0; W]);
    for l in 0..W {
        let dh = dho[l] + dhn[l];
        let dc = dcn[l] + dh * o[l] * (1.0 - tc[l] * tc[l]);
        new_dcn[l] = dc * f[l];
        di[l] = (dc * c_hat[l]) * (i[l] * (1.0 - i[l]));
        df[l] = (dc * cp[l]) * (f[l] * (1.0 - f[l]));
        d_o[l] = (dh * tc[l]) * (o[l] * (1.0 - o[l]));
        dg[l] = (dc * i[l]) * (1.0 - c_hat[l] * c_hat[l]);
    }
    dc_next[j..j + W].copy_from_slice(&new_dcn);
    dz[0][j..j + W].copy_from_slice(&di);
    dz[1][j..j + W].copy_from_slice(&df);
    dz[2][j..j + W].copy_from_slice(&d_o);
    dz[3][j..j + W].copy_from_slice(&dg);
}

struct Forward<'c, 'p, 'w> {
    cache: &'c mut LayerCache,
    p: &'p LayerParams<'w>,
    x: &'p [f32],
    steps: usize,
    batch: usize,
}

impl Vectorized for Forward<'_, '_, '_> {
    type Output = ();

    #[inline(always)]
    fn run<const FMA: bool>(self) {
        self.cache
            .forward_impl::<FMA>(self.p, self.x, self.steps, self.batch);
    }
}

struct Backward<'c, 'p, 'w, 'g, 'h, 'd> {
    cache: &'c mut LayerCache,
    p: &'p LayerParams<'w>,
    x: &'p [f32],
    steps: usize,
    batch: usize,
    dh_out: &'p [f32],
    grads: &'g mut LayerGrads<'h>,
    dx: Option<&'d mut [f32]>,
}

impl Vectorized for Backward<'_, '_, '_, '_, '_, '_> {
    type Output = ();

    #[inline(always)]
    fn run<const FMA: bool>(self) {
        self.cache.backward_impl::<FMA>(
            self.p,
            self.x,
            self.steps,
            self.batch,
            self.dh_out,
            self.grads,
            self.dx,
        );
    }
}
