//! PCA scores, the classical baseline for the autoencoder. Standardized
//! rows are projected on their first principal components (fitted with
//! smartcore). A row's score sees both directions:
//!
//! - **off the plane**: the squared reconstruction error `Q`, divided by its
//!   mean on the fitting rows;
//! - **along the plane**: Hotelling's `T² = Σ coord_k² / λ_k` over the kept
//!   components (`λ_k` the variance of the fitting rows along component
//!   `k`), divided by the number of components,
//!
//! and is the mean of the two, so a row that moves every feature together
//! (an all-time high of value and CO2e) scores high even though it lies on
//! the plane. Models stored before `T²` was added (no eigenvalues) keep the
//! old score, the mean squared reconstruction error.

use serde::{Deserialize, Serialize};
use smartcore::decomposition::pca::{PCAParameters, PCA};
use smartcore::linalg::basic::arrays::Array;
use smartcore::linalg::basic::matrix::DenseMatrix;

use super::ChallengerError;

/// Hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcaConfig {
    /// Components kept (the autoencoder's bottleneck is 2 wide).
    pub components: usize,
}

impl Default for PcaConfig {
    fn default() -> Self {
        PcaConfig { components: 2 }
    }
}

/// A fitted detector: the mean, the orthonormal basis of the kept
/// components and the spread along them, enough to score without
/// smartcore's types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PcaDetector {
    pub config: PcaConfig,
    #[serde(with = "crate::training::artifact::exact_f64_vec")]
    pub mean: Vec<f64>,
    /// Component `k` is `basis[d·k..d·(k+1)]`, `d` = `mean.len()`.
    #[serde(with = "crate::training::artifact::exact_f64_vec")]
    pub basis: Vec<f64>,
    /// Variance of the fitting rows along each kept component (empty in
    /// models stored before `T²`).
    #[serde(default, with = "crate::training::artifact::exact_f64_vec")]
    pub eigenvalues: Vec<f64>,
    /// Mean squared reconstruction error of the fitting rows, floored.
    #[serde(default, with = "crate::training::artifact::exact_f64")]
    pub residual_scale: f64,
}

/// Smallest variance a direction is divided by (standardized units): below
/// it, differences are rounding noise.
const VARIANCE_FLOOR: f64 = 1e-6;

impl PcaDetector {
    /// Fits on standardized rows (all of one width).
    pub fn fit<R: AsRef<[f64]>>(
        rows: &[R],
        config: &PcaConfig,
    ) -> Result<PcaDetector, ChallengerError> {
        let err = |reason: String| ChallengerError::Fit {
            algorithm: "pca",
            reason,
        };
        if rows.len() < 4 {
            return Err(err(format!("{} rows is too few to fit", rows.len())));
        }
        let d = rows[0].as_ref().len();
        if config.components == 0 || config.components > d {
            return Err(err(format!(
                "components must be 1..={d}, got {}",
                config.components
            )));
        }
        let matrix = DenseMatrix::from_2d_vec(&rows.iter().map(|r| r.as_ref().to_vec()).collect())
            .map_err(|e| err(e.to_string()))?;
        let pca = PCA::fit(
            &matrix,
            PCAParameters::default().with_n_components(config.components),
        )
        .map_err(|e| err(e.to_string()))?;
        // The projection is d × k with the eigenvectors in its columns.
        let projection = pca.components();
        let mut basis = Vec::with_capacity(d * config.components);
        for k in 0..config.components {
            for f in 0..d {
                basis.push(*projection.get((f, k)));
            }
        }
        let n = rows.len() as f64;
        let mean: Vec<f64> = (0..d)
            .map(|f| rows.iter().map(|r| r.as_ref()[f]).sum::<f64>() / n)
            .collect();
        let mut det = PcaDetector {
            config: *config,
            mean,
            basis,
            eigenvalues: Vec::new(),
            residual_scale: 0.0,
        };
        let parts: Vec<(Vec<f64>, f64)> = rows.iter().map(|r| det.parts(r.as_ref())).collect();
        det.eigenvalues = (0..config.components)
            .map(|k| (parts.iter().map(|(c, _)| c[k] * c[k]).sum::<f64>() / n).max(VARIANCE_FLOOR))
            .collect();
        det.residual_scale = (parts.iter().map(|(_, q)| q).sum::<f64>() / n).max(VARIANCE_FLOOR);
        Ok(det)
    }

    /// A row's coordinates on the kept components and its squared
    /// reconstruction error.
    fn parts(&self, r: &[f64]) -> (Vec<f64>, f64) {
        let d = self.mean.len();
        let centred: Vec<f64> = (0..d).map(|f| r[f] - self.mean[f]).collect();
        let mut recon = vec![0.0; d];
        let mut coords = Vec::with_capacity(self.basis.len() / d.max(1));
        for comp in self.basis.chunks(d) {
            let coord: f64 = (0..d).map(|f| centred[f] * comp[f]).sum();
            for f in 0..d {
                recon[f] += coord * comp[f];
            }
            coords.push(coord);
        }
        let q = (0..d).map(|f| (centred[f] - recon[f]).powi(2)).sum::<f64>();
        (coords, q)
    }

    /// A row projected on the kept components and mapped back.
    pub fn reconstruct(&self, r: &[f64]) -> Vec<f64> {
        let d = self.mean.len();
        let (coords, _) = self.parts(r);
        let mut out = self.mean.clone();
        for (comp, c) in self.basis.chunks(d).zip(&coords) {
            for f in 0..d {
                out[f] += c * comp[f];
            }
        }
        out
    }

    /// The score of each row (see the module docs).
    pub fn scores<R: AsRef<[f64]>>(&self, rows: &[R]) -> Vec<f64> {
        let d = self.mean.len() as f64;
        rows.iter()
            .map(|r| {
                let (coords, q) = self.parts(r.as_ref());
                if self.eigenvalues.is_empty() {
                    return q / d;
                }
                let t2 = coords
                    .iter()
                    .zip(&self.eigenvalues)
                    .map(|(c, l)| c * c / l)
                    .sum::<f64>()
                    / coords.len() as f64;
                (q / self.residual_scale + t2) / 2.0
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pca_reconstructs_rows_on_the_plane_and_scores_an_off_plane_row_high() {
        // Rows on the plane z = x + y (rank 2), plus one row far off it.
        let rows: Vec<[f64; 3]> = (0..50)
            .map(|i| {
                let x = (i as f64 * 0.37).sin();
                let y = (i as f64 * 0.11).cos();
                [x, y, x + y]
            })
            .collect();
        let det = PcaDetector::fit(&rows, &PcaConfig::default()).unwrap();
        let on_plane = det.scores(&rows);
        let mut sorted = on_plane.clone();
        sorted.sort_by(f64::total_cmp);
        let typical = sorted[25];
        let off = det.scores(&[[1.0, 1.0, -2.0]]);
        assert!(off[0] > 100.0 * typical, "{off:?} vs {typical}");
    }

    #[test]
    fn a_row_far_along_the_plane_scores_high_too() {
        // Two columns that move together: the all-time high of both lies on
        // the plane, with no reconstruction error, and still stands out.
        let rows: Vec<[f64; 2]> = (0..200)
            .map(|i| {
                let x = (i as f64 * 0.37).sin();
                [x, 2.0 * x]
            })
            .collect();
        let det = PcaDetector::fit(&rows, &PcaConfig { components: 1 }).unwrap();
        let max_normal = det.scores(&rows).into_iter().fold(0.0, f64::max);
        let high = det.scores(&[[5.0, 10.0]])[0];
        assert!(high > 10.0 * max_normal, "{high} vs {max_normal}");
    }
}
