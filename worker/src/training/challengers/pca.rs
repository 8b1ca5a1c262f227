//! PCA reconstruction error: the classical baseline for the autoencoder.
//! Standardized rows are projected on their first principal components
//! (fitted with smartcore) and mapped back; the anomaly score of a row is
//! its mean squared reconstruction error over the three features, the same
//! score the autoencoder produces.

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

/// A fitted detector: the mean and the orthonormal basis of the kept
/// components, enough to reconstruct without smartcore's types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PcaDetector {
    pub config: PcaConfig,
    #[serde(with = "crate::training::artifact::exact_f64_vec")]
    pub mean: Vec<f64>,
    /// Component `k` is `basis[3k..3k+3]`.
    #[serde(with = "crate::training::artifact::exact_f64_vec")]
    pub basis: Vec<f64>,
}

impl PcaDetector {
    /// Fits on standardized rows.
    pub fn fit(rows: &[[f64; 3]], config: &PcaConfig) -> Result<PcaDetector, ChallengerError> {
        let err = |reason: String| ChallengerError::Fit {
            algorithm: "pca",
            reason,
        };
        if rows.len() < 4 {
            return Err(err(format!("{} rows is too few to fit", rows.len())));
        }
        if config.components == 0 || config.components > 3 {
            return Err(err(format!(
                "components must be 1..=3, got {}",
                config.components
            )));
        }
        let matrix = DenseMatrix::from_2d_vec(&rows.iter().map(|r| r.to_vec()).collect())
            .map_err(|e| err(e.to_string()))?;
        let pca = PCA::fit(
            &matrix,
            PCAParameters::default().with_n_components(config.components),
        )
        .map_err(|e| err(e.to_string()))?;
        // The projection is 3 × k with the eigenvectors in its columns.
        let projection = pca.components();
        let mut basis = Vec::with_capacity(3 * config.components);
        for k in 0..config.components {
            for f in 0..3 {
                basis.push(*projection.get((f, k)));
            }
        }
        let n = rows.len() as f64;
        let mean = (0..3)
            .map(|f| rows.iter().map(|r| r[f]).sum::<f64>() / n)
            .collect();
        Ok(PcaDetector {
            config: *config,
            mean,
            basis,
        })
    }

    /// Mean squared reconstruction error per row.
    pub fn scores(&self, rows: &[[f64; 3]]) -> Vec<f64> {
        rows.iter()
            .map(|r| {
                let centred: Vec<f64> = (0..3).map(|f| r[f] - self.mean[f]).collect();
                let mut recon = [0.0; 3];
                for comp in self.basis.chunks(3) {
                    let coord: f64 = (0..3).map(|f| centred[f] * comp[f]).sum();
                    for f in 0..3 {
                        recon[f] += coord * comp[f];
                    }
                }
                (0..3).map(|f| (centred[f] - recon[f]).powi(2)).sum::<f64>() / 3.0
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
        assert!(on_plane.iter().all(|s| *s < 1e-12), "{on_plane:?}");
        let off = det.scores(&[[1.0, 1.0, -2.0]]);
        assert!(off[0] > 1.0, "{off:?}");
    }
}
