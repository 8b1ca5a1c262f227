//! `trainyard-worker check`: proves the ML stack works on this machine by
//! training a tiny LSTM (fused engine, saved and reloaded) and a tiny
//! autoencoder, and says which burn and backend it runs on.

use crate::training::anomaly::{train_autoencoder, AutoencoderConfig};
use crate::training::forecast::{train_forecaster, LstmConfig, TrainedForecaster};
use crate::training::neural;

/// The burn release the worker is built against (pinned in the workspace).
pub const BURN_VERSION: &str = "0.22.1";
/// The backend every model trains on.
pub const BACKEND: &str = "flex (CPU), autodiff for training";

fn smoke() -> anyhow::Result<String> {
    let series: Vec<f32> = (0..60)
        .map(|i| 0.5 + 0.4 * (i as f32 * 0.3).sin())
        .collect();
    let config = LstmConfig::new()
        .with_hidden1(8)
        .with_hidden2(4)
        .with_window(10)
        .with_epochs(2);
    let lstm = train_forecaster(&series, &config, 1, &mut |_| {})?;
    let forecast = lstm.forecast(&series, 3);
    anyhow::ensure!(
        forecast.iter().all(|v| v.is_finite()),
        "the LSTM forecast is not finite: {forecast:?}"
    );
    let reloaded = TrainedForecaster::from_bytes(&lstm.to_bytes())?;
    anyhow::ensure!(
        reloaded.forecast(&series, 3) == forecast,
        "a reloaded LSTM forecasts differently"
    );
    let rows: Vec<[f32; 3]> = (0..64)
        .map(|i| {
            let a = (i as f32 * 0.1).sin();
            [a, 0.5 * a, (i % 7) as f32 / 7.0]
        })
        .collect();
    let ae = train_autoencoder(
        &rows,
        &AutoencoderConfig::new().with_epochs(2),
        1,
        &mut |_| {},
    )?;
    let errors = ae.reconstruction_errors(&rows);
    anyhow::ensure!(
        errors.iter().all(|v| v.is_finite()),
        "the autoencoder's reconstruction errors are not finite"
    );
    Ok(format!(
        "lstm ({:?} engine) forecast {forecast:?}; autoencoder mean error {:.4}",
        config.engine(),
        errors.iter().sum::<f32>() / errors.len() as f32
    ))
}

/// Prints the stack and the result of the smoke training; the exit code.
pub fn run() -> i32 {
    neural::limit_threads(1);
    println!("burn {BURN_VERSION}, backend {BACKEND}");
    match std::panic::catch_unwind(smoke) {
        Ok(Ok(summary)) => {
            println!("{summary}");
            println!("ok: the training stack works");
            0
        }
        Ok(Err(e)) => {
            println!("error: the training stack does not work: {e:#}");
            1
        }
        Err(_) => {
            println!("error: the training stack panicked (see above)");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_stack_check_passes_here() {
        assert!(super::smoke().is_ok());
    }
}
