//! Seasonal naive forecast: day `h` after the history repeats the same
//! weekday of the last observed week.

use serde::{Deserialize, Serialize};

/// Hyperparameters (and the whole state: the model has no weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeasonalNaive {
    pub period: usize,
}

impl Default for SeasonalNaive {
    fn default() -> Self {
        SeasonalNaive { period: 7 }
    }
}

impl SeasonalNaive {
    /// Forecasts `horizon` days after `history`. With less than one period of
    /// history it repeats the last value.
    pub fn forecast(&self, history: &[f64], horizon: usize) -> Vec<f64> {
        let n = history.len();
        if n == 0 {
            return vec![0.0; horizon];
        }
        let p = self.period.clamp(1, n);
        (0..horizon).map(|h| history[n - p + h % p]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seasonal_naive_repeats_the_last_week() {
        let history: Vec<f64> = (0..14).map(|i| i as f64).collect();
        let f = SeasonalNaive::default().forecast(&history, 9);
        assert_eq!(f, vec![7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 7.0, 8.0]);
        assert_eq!(SeasonalNaive::default().forecast(&[3.0], 2), vec![3.0, 3.0]);
    }
}
