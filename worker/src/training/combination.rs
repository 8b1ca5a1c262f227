//! Forecast combination: the champion may be a fixed combination of the
//! best single candidates instead of one of them. Choosing one model on 30
//! validation days is noisy; averaging a few good ones cancels part of
//! their independent errors, which is why combinations win forecasting
//! competitions (M4, M5).
//!
//! The rule is fixed in advance (never fitted per series beyond the
//! validation errors): take the `k` candidates with the lowest validation
//! MAE, and combine their forecasts day by day with weights proportional to
//! the inverse of their validation MAE ([`CombinationRule::InverseMae`]),
//! equal weights ([`CombinationRule::Mean`]) or the median
//! ([`CombinationRule::Median`]).
//!
//! A combination is stored like any model: its artifact holds every
//! member's own checksummed artifact ([`pack`]) and the weights in its
//! header, so it is reproducible and re-scorable on the holdout.

use serde::{Deserialize, Serialize};

/// How the members' forecasts are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CombinationRule {
    /// Weighted mean, weights ∝ 1 / validation MAE.
    InverseMae,
    /// Equal-weight mean.
    Mean,
    /// Day-by-day median.
    Median,
}

/// Hyperparameters of the combination candidate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CombinationConfig {
    /// Members: the best `k` single candidates on validation (0 = no
    /// combination candidate). The default, 5, is every forecast candidate:
    /// on the broad evaluation (340 folds) weighting all of them beat
    /// keeping the best 2, 3 or 4 on 9 of the 11 series.
    pub k: usize,
    pub rule: CombinationRule,
}

impl Default for CombinationConfig {
    fn default() -> Self {
        CombinationConfig {
            k: 5,
            rule: CombinationRule::InverseMae,
        }
    }
}

/// The members (indices into `validation_mae`) and their weights: the `k`
/// lowest finite validation MAEs, ties to the earlier index. Empty when
/// fewer than two candidates qualify (a combination of one is that one).
pub fn select(validation_mae: &[f64], config: &CombinationConfig) -> Vec<(usize, f64)> {
    let mut order: Vec<usize> = (0..validation_mae.len())
        .filter(|&i| validation_mae[i].is_finite())
        .collect();
    order.sort_by(|&a, &b| {
        validation_mae[a]
            .total_cmp(&validation_mae[b])
            .then(a.cmp(&b))
    });
    order.truncate(config.k);
    if order.len() < 2 {
        return Vec::new();
    }
    let raw: Vec<f64> = order
        .iter()
        .map(|&i| match config.rule {
            // A perfect validation score would take all the weight; a floor
            // of 1e-9 of the largest error keeps the weights finite.
            CombinationRule::InverseMae => {
                let floor = 1e-9 * validation_mae[order[order.len() - 1]].max(1e-300);
                1.0 / validation_mae[i].max(floor)
            }
            CombinationRule::Mean | CombinationRule::Median => 1.0,
        })
        .collect();
    let total: f64 = raw.iter().sum();
    order
        .into_iter()
        .zip(raw)
        .map(|(i, w)| (i, w / total))
        .collect()
}

/// Combines the members' forecasts (one vector per member, same length)
/// day by day.
pub fn combine(rule: CombinationRule, forecasts: &[Vec<f64>], weights: &[f64]) -> Vec<f64> {
    let horizon = forecasts.iter().map(Vec::len).min().unwrap_or(0);
    (0..horizon)
        .map(|h| match rule {
            CombinationRule::InverseMae | CombinationRule::Mean => {
                forecasts.iter().zip(weights).map(|(f, w)| w * f[h]).sum()
            }
            CombinationRule::Median => {
                let mut day: Vec<f64> = forecasts.iter().map(|f| f[h]).collect();
                day.sort_by(f64::total_cmp);
                let n = day.len();
                if n % 2 == 1 {
                    day[n / 2]
                } else {
                    (day[n / 2 - 1] + day[n / 2]) / 2.0
                }
            }
        })
        .collect()
}

/// Packs member artifacts into one blob: for each, its length (u64, little
/// endian) and its bytes.
pub fn pack(members: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(members.iter().map(|m| m.len() + 8).sum());
    for m in members {
        out.extend_from_slice(&(m.len() as u64).to_le_bytes());
        out.extend_from_slice(m);
    }
    out
}

/// The inverse of [`pack`].
pub fn unpack(mut bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 8 {
            return Err("truncated member length".into());
        }
        let (len, rest) = bytes.split_at(8);
        let len = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
        if rest.len() < len {
            return Err("truncated member".into());
        }
        let (member, rest) = rest.split_at(len);
        out.push(member.to_vec());
        bytes = rest;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_k_on_validation_are_weighted_by_inverse_error() {
        // Candidates with validation MAE 4, 1, NaN (failed), 2, 8.
        let mae = [4.0, 1.0, f64::NAN, 2.0, 8.0];
        let config = CombinationConfig {
            k: 3,
            rule: CombinationRule::InverseMae,
        };
        let sel = select(&mae, &config);
        let idx: Vec<usize> = sel.iter().map(|s| s.0).collect();
        assert_eq!(idx, vec![1, 3, 0]);
        // 1/1 : 1/2 : 1/4 = 4 : 2 : 1.
        let w: Vec<f64> = sel.iter().map(|s| s.1).collect();
        for (got, want) in w.iter().zip([4.0 / 7.0, 2.0 / 7.0, 1.0 / 7.0]) {
            assert!((got - want).abs() < 1e-12, "{w:?}");
        }
        let forecasts = vec![vec![10.0, 20.0], vec![17.0, 6.0], vec![3.0, 13.0]];
        let c = combine(config.rule, &forecasts, &w);
        assert!((c[0] - (40.0 + 34.0 + 3.0) / 7.0).abs() < 1e-12);
        assert!((c[1] - (80.0 + 12.0 + 13.0) / 7.0).abs() < 1e-12);
        let median = combine(CombinationRule::Median, &forecasts, &w);
        assert_eq!(median, vec![10.0, 13.0]);
        let mean = select(
            &mae,
            &CombinationConfig {
                k: 2,
                rule: CombinationRule::Mean,
            },
        );
        assert_eq!(mean, vec![(1, 0.5), (3, 0.5)]);
    }

    #[test]
    fn fewer_than_two_usable_candidates_make_no_combination() {
        let config = CombinationConfig::default();
        assert!(select(&[f64::NAN, 3.0], &config).is_empty());
        assert!(select(&[], &config).is_empty());
    }

    #[test]
    fn packed_members_unpack_unchanged() {
        let members = vec![b"abc".to_vec(), Vec::new(), vec![0u8; 300]];
        assert_eq!(unpack(&pack(&members)).unwrap(), members);
        assert!(unpack(&pack(&members)[..5]).is_err());
    }
}
