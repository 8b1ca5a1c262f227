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
pub fn sigmoid(values: &mut [f32]) {
    map_in_place(values, sigmoid_lane);
}

/// Hyperbolic tangent, in place.
pub fn tanh(values: &mut [f32]) {
    map_in_place(values, tanh_lane);
}

/// `out = tanh(x)`.
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
