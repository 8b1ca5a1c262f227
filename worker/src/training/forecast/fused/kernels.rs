//! The fused engine's numeric kernels on plain row-major `f32` buffers: one
//! GEMM entry point (matrixmultiply's runtime-dispatched AVX2/FMA kernels,
//! reached safely through ndarray views) and vectorizable activations.
//!
//! The activations use a Cephes-style `exp` (range reduction + degree-6
//! polynomial, about 1 ulp) written as branch-free arithmetic over
//! fixed-width chunks so the compiler vectorizes it; `tanh` switches to an odd
//! polynomial near zero where `1 - 2/(e^{2x}+1)` would cancel. Both stay
//! within a few ulps of `f32::exp`/`f32::tanh`, which the tests check.

// The polynomial coefficients are written as published (Cephes); the extra
// digits round to the same f32.
#![allow(clippy::excessive_precision)]
use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};

/// `c[m×n] = op(a)·op(b) + beta·c`, where `op(a)` is `[m×k]` (stored `[k×m]`
/// when `a_t`) and `op(b)` is `[k×n]` (stored `[n×k]` when `b_t`).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    a_t: bool,
    b: &[f32],
    b_t: bool,
    beta: f32,
    c: &mut [f32],
) {
    let a = if a_t {
        ArrayView2::from_shape((k, m), &a[..m * k])
            .expect("a holds k×m values")
            .reversed_axes()
    } else {
        ArrayView2::from_shape((m, k), &a[..m * k]).expect("a holds m×k values")
    };
    let b = if b_t {
        ArrayView2::from_shape((n, k), &b[..k * n])
            .expect("b holds n×k values")
            .reversed_axes()
    } else {
        ArrayView2::from_shape((k, n), &b[..k * n]).expect("b holds k×n values")
    };
    let mut c = ArrayViewMut2::from_shape((m, n), &mut c[..m * n]).expect("c holds m×n values");
    general_mat_mul(1.0, &a, &b, beta, &mut c);
}

/// `c[m×n] += a[m×k]·b[k×n]`, all row-major and contiguous, with fused
/// multiply-adds: the per-step recurrent product, where a packing GEMM spends
/// as long packing the weights as multiplying. Tiles of 4 rows × 16 columns
/// keep their sums in registers; narrower edges fall back to 8 and 4 columns,
/// and the last few to dot products.
/// Only worth calling from code compiled with FMA (see [`super::isa`]):
/// elsewhere `mul_add` is a library call.
#[inline(always)]
pub fn gemm_acc_fma(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    let (a, b, c) = (&a[..m * k], &b[..k * n], &mut c[..m * n]);
    let mut row = 0;
    while row + 4 <= m {
        tile_columns::<4>(row, k, n, a, b, c);
        row += 4;
    }
    while row < m {
        tile_columns::<1>(row, k, n, a, b, c);
        row += 1;
    }
}

#[inline(always)]
fn tile_columns<const R: usize>(
    row: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
) {
    let mut col = 0;
    while col + 16 <= n {
        tile::<R, 16>(row, col, k, n, a, b, c);
        col += 16;
    }
    while col + 8 <= n {
        tile::<R, 8>(row, col, k, n, a, b, c);
        col += 8;
    }
    while col + 4 <= n {
        tile::<R, 4>(row, col, k, n, a, b, c);
        col += 4;
    }
    // The last few columns: a dot product of each row with the column,
    // gathered once, so the sum over `k` still runs 8 lanes wide.
    if col == n {
        return;
    }
    let mut column = [0.0f32; MAX_GATHER];
    while col < n {
        if k > MAX_GATHER {
            tile::<R, 1>(row, col, k, n, a, b, c);
        } else {
            for (v, b_row) in column.iter_mut().zip(b.chunks_exact(n)) {
                *v = b_row[col];
            }
            for r in row..row + R {
                c[r * n + col] += dot_fma(&a[r * k..(r + 1) * k], &column[..k]);
            }
        }
        col += 1;
    }
}

/// The longest column [`tile_columns`] gathers for a dot product.
const MAX_GATHER: usize = 256;

#[inline(always)]
fn dot_fma(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (xc, yc) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let tail = xc.remainder().iter().zip(yc.remainder());
    for (xs, ys) in xc.zip(yc) {
        for ((s, &xv), &yv) in acc.iter_mut().zip(xs).zip(ys) {
            *s = xv.mul_add(yv, *s);
        }
    }
    let mut sum = acc.iter().sum::<f32>();
    for (&xv, &yv) in tail {
        sum = xv.mul_add(yv, sum);
    }
    sum
}

#[inline(always)]
fn tile<const R: usize, const W: usize>(
    row: usize,
    col: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
) {
    let a_rows: [&[f32]; R] = std::array::from_fn(|r| &a[(row + r) * k..(row + r + 1) * k]);
    let mut acc = [[0.0f32; W]; R];
    for (p, b_row) in b.chunks_exact(n).enumerate() {
        let bv: &[f32; W] = b_row[col..col + W].try_into().expect("W columns");
        for (acc_r, a_r) in acc.iter_mut().zip(&a_rows) {
            let av = a_r[p];
            for (s, &bw) in acc_r.iter_mut().zip(bv) {
                *s = av.mul_add(bw, *s);
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        let c_row = &mut c[(row + r) * n + col..(row + r) * n + col + W];
        for (cv, s) in c_row.iter_mut().zip(acc_r) {
            *cv += s;
        }
    }
}

const LANES: usize = 8;

/// `e^x` for one lane; written so that a loop over lanes vectorizes.
#[inline(always)]
fn exp_lane(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // Rounds to nearest without `round()` (which needs SSE4.1 to vectorize).
    const SHIFT: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 87.0);
    let n = (x * LOG2E + SHIFT) - SHIFT;
    let r = x - n * C1 - n * C2;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let y = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    y * scale
}

#[inline(always)]
fn sigmoid_lane(x: f32) -> f32 {
    1.0 / (1.0 + exp_lane(-x))
}

#[inline(always)]
fn tanh_lane(x: f32) -> f32 {
    let a = x.abs();
    // Large |x|: 1 - 2/(e^{2|x|} + 1), no cancellation there.
    let big = 1.0 - 2.0 / (exp_lane(2.0 * a) + 1.0);
    // Small |x| (Cephes tanhf): x + x³·P(x²).
    let z = x * x;
    let mut p = -5.704_988_7e-3;
    p = p * z + 2.063_908_9e-2;
    p = p * z - 5.373_971_6e-2;
    p = p * z + 1.333_144_2e-1;
    p = p * z - 3.333_328_2e-1;
    let small = p * z * a + a;
    let t = if a < 0.625 { small } else { big };
    t.copysign(x)
}

#[inline(always)]
fn map_in_place(values: &mut [f32], f: impl Fn(f32) -> f32 + Copy) {
    let mut chunks = values.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for v in chunk.iter_mut() {
            *v = f(*v);
        }
    }
    for v in chunks.into_remainder() {
        *v = f(*v);
    }
}

/// Logistic sigmoid, in place.
#[inline(always)]
pub fn sigmoid(values: &mut [f32]) {
    map_in_place(values, sigmoid_lane);
}

/// Hyperbolic tangent, in place.
#[inline(always)]
pub fn tanh(values: &mut [f32]) {
    map_in_place(values, tanh_lane);
}

/// `out = tanh(x)`.
#[inline(always)]
pub fn tanh_into(x: &[f32], out: &mut [f32]) {
    out.copy_from_slice(x);
    tanh(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Vec<f32> {
        (-40_000..=40_000).map(|i| i as f32 * 1e-3).collect()
    }

    fn rel(a: f32, b: f32) -> f32 {
        (a - b).abs() / b.abs().max(1e-30)
    }

    #[test]
    fn sigmoid_matches_the_libm_formula_to_a_few_ulps() {
        let xs = grid();
        let mut ys = xs.clone();
        sigmoid(&mut ys);
        for (x, y) in xs.iter().zip(&ys) {
            let want = (1.0 / (1.0 + (-f64::from(*x)).exp())) as f32;
            assert!(rel(*y, want) < 1e-6, "sigmoid({x}) = {y}, want {want}");
        }
    }

    #[test]
    fn tanh_matches_libm_to_a_few_ulps_also_near_zero() {
        let mut xs = grid();
        xs.extend([1e-8, -1e-8, 1e-4, -3e-3, 0.0, 0.6249, 0.6251, 100.0, -100.0]);
        let mut ys = xs.clone();
        tanh(&mut ys);
        for (x, y) in xs.iter().zip(&ys) {
            let want = f64::from(*x).tanh() as f32;
            assert!(
                (y - want).abs() <= 1e-7 || rel(*y, want) < 1e-6,
                "tanh({x}) = {y}, want {want}"
            );
        }
    }

    struct AccFma<'a> {
        shape: (usize, usize, usize),
        a: &'a [f32],
        b: &'a [f32],
        c: &'a mut [f32],
    }

    impl super::super::isa::Vectorized for AccFma<'_> {
        type Output = ();
        #[inline(always)]
        fn run<const FMA: bool>(self) {
            let (m, k, n) = self.shape;
            gemm_acc_fma(m, k, n, self.a, self.b, self.c);
        }
    }

    #[test]
    fn the_fma_product_matches_a_naive_one_on_every_tile_shape() {
        use super::super::isa::Isa;
        // Rows 4+4+1 and columns 16+16+8+1 (and 16+4+1) reach every tile.
        for (m, k, n) in [
            (9, 7, 41),
            (6, 5, 21),
            (4, 50, 200),
            (1, 25, 100),
            (5, 200, 50),
            (3, 3, 3),
        ] {
            let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
            let mut want = vec![0.0f32; m * n];
            for i in 0..m {
                for j in 0..n {
                    let dot: f64 = (0..k)
                        .map(|p| f64::from(a[i * k + p]) * f64::from(b[p * n + j]))
                        .sum();
                    want[i * n + j] = (dot + 0.5) as f32;
                }
            }
            for isa in [Isa::portable(), Isa::detect()] {
                let mut c = vec![0.5f32; m * n];
                isa.run(AccFma {
                    shape: (m, k, n),
                    a: &a,
                    b: &b,
                    c: &mut c,
                });
                for (x, y) in c.iter().zip(&want) {
                    assert!((x - y).abs() < 1e-4, "{m}×{k}×{n}: {x} vs {y}");
                }
            }
        }
    }

    #[test]
    fn gemm_with_transposes_matches_a_naive_product() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut want = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                want[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum::<f32>() + 1.0;
            }
        }
        let transpose = |x: &[f32], r: usize, c: usize| {
            let mut t = vec![0.0; r * c];
            for i in 0..r {
                for j in 0..c {
                    t[j * r + i] = x[i * c + j];
                }
            }
            t
        };
        let at = transpose(&a, m, k);
        let bt = transpose(&b, k, n);
        for (aa, a_t) in [(&a, false), (&at, true)] {
            for (bb, b_t) in [(&b, false), (&bt, true)] {
                let mut c = vec![1.0f32; m * n];
                gemm(m, k, n, aa, a_t, bb, b_t, 1.0, &mut c);
                for (x, y) in c.iter().zip(&want) {
                    assert!((x - y).abs() < 1e-5);
                }
            }
        }
    }
}
