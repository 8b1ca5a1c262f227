//! Which instruction set the fused engine's hot loops are compiled for, and
//! the one place in the worker with `unsafe`.
//!
//! The LSTM layer's forward and backward passes are written once, as safe
//! generic code. They are compiled twice: as portable code (the x86-64
//! baseline, SSE2) and inside a `#[target_feature(enable = "avx2,fma")]`
//! function, where the same loops vectorize 8 lanes wide and the recurrent
//! product uses fused multiply-adds. Calling a target-feature function is
//! `unsafe` because running AVX2 instructions on a CPU without them is
//! undefined behaviour; [`Isa::detect`] is the only way to obtain
//! [`Isa::avx2_fma`] and it checks the CPU first.
#![allow(unsafe_code)]

use std::sync::OnceLock;

/// The instruction set to run the fused engine's kernels with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Isa {
    avx2_fma: bool,
}

impl Isa {
    /// Baseline code that runs on every x86-64 (and every other) CPU.
    pub const fn portable() -> Self {
        Self { avx2_fma: false }
    }

    /// The best this CPU supports: AVX2 with FMA where present, else
    /// portable. Set `TRAINYARD_ISA=portable` to force the baseline (for
    /// comparisons). Detected once per process.
    pub fn detect() -> Self {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            if std::env::var("TRAINYARD_ISA").is_ok_and(|v| v == "portable") {
                return Self::portable();
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Self { avx2_fma: true };
            }
            Self::portable()
        })
    }

    /// `avx2+fma` or `portable`, for logs and benchmark output.
    pub fn name(self) -> &'static str {
        if self.avx2_fma {
            "avx2+fma"
        } else {
            "portable"
        }
    }

    /// Runs `job` with the kernels built for this instruction set.
    pub fn run<J: Vectorized>(self, job: J) -> J::Output {
        #[cfg(target_arch = "x86_64")]
        if self.avx2_fma {
            // SAFETY: `avx2_fma` is true only when `detect` found both AVX2
            // and FMA on this CPU.
            return unsafe { run_avx2_fma(job) };
        }
        job.run::<false>()
    }
}

/// Work compiled once per instruction set. `run` must be `#[inline(always)]`
/// (and so must what it calls in its hot loops) so that the AVX2 copy really
/// is compiled with AVX2; `FMA` selects fused multiply-adds where the
/// portable build has none.
pub trait Vectorized {
    type Output;
    fn run<const FMA: bool>(self) -> Self::Output;
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn run_avx2_fma<J: Vectorized>(job: J) -> J::Output {
    job.run::<true>()
}
