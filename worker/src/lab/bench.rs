//! `trainyard-worker bench`: trains the neural models (or the challengers) on
//! the workload of `shared/bench/torch_reference.py`, generated here so the
//! benchmark needs nothing outside the binary, on one thread, and reports CPU
//! seconds (getrusage), wall seconds and peak RSS per trained model.
//!
//! The last line is machine-readable:
//! `cpu_s_per_model=… wall_s_per_model=… peak_rss_mb=…` (medians over runs).

use std::time::{Duration, Instant};

use chrono::NaiveDate;
use nix::sys::resource::{getrusage, UsageWho};

use crate::training::anomaly::{train_autoencoder, AutoencoderConfig};
use crate::training::challengers::pca::{PcaConfig, PcaDetector};
use crate::training::challengers::seasonal_regression::{
    SeasonalRegression, SeasonalRegressionConfig,
};
use crate::training::forecast::{train_forecaster, LstmConfig, LstmEngine};
use crate::training::neural;

/// What `bench` trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// The LSTM forecaster: 365-day series, window 30, 50 epochs, batch 32.
    Lstm,
    /// The autoencoder: 2,000 rows × 3 features, 30 epochs, batch 16.
    Autoencoder,
    /// The classical challengers: seasonal regression on the series, PCA on the rows.
    Challengers,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The model to train.
    #[arg(value_enum, default_value = "lstm")]
    pub workload: Workload,
    /// Models to train (seeds 42, 43, …).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The LSTM training engine.
    #[arg(long, default_value = "fused")]
    pub engine: LstmEngine,
}

/// Days in the benchmark series.
pub const SERIES_DAYS: usize = 365;
/// Rows in the benchmark autoencoder data.
pub const AUTOENCODER_ROWS: usize = 2000;

/// Splitmix64 with Box-Muller normals: the benchmark data's generator.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        crate::training::neural::unit_f64(&mut self.0)
    }

    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// torch_reference.py's series: trend + weekly + yearly seasonality + noise.
pub fn series(days: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng(seed);
    (0..days)
        .map(|t| {
            let t = t as f64;
            let tau = 2.0 * std::f64::consts::PI;
            100.0
                + 0.05 * t
                + 8.0 * (tau * t / 7.0).sin()
                + 15.0 * (tau * t / 365.25).sin()
                + 2.0 * rng.normal()
        })
        .collect()
}

/// The series scaled to 0..1, as the reference scales it.
pub fn scaled_series(days: usize, seed: u64) -> Vec<f32> {
    let y = series(days, seed);
    let lo = y.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = y.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    y.iter().map(|v| ((v - lo) / (hi - lo)) as f32).collect()
}

/// torch_reference.py's autoencoder rows: a sine, a noisy copy, uniform noise.
pub fn autoencoder_rows(rows: usize, seed: u64) -> Vec<[f32; 3]> {
    let mut rng = Rng(seed);
    (0..rows)
        .map(|i| {
            let a = (i as f64 * 0.1).sin();
            let b = 0.5 * a + 0.1 * rng.normal();
            [a as f32, b as f32, rng.uniform() as f32]
        })
        .collect()
}

/// Process CPU time (user + system) and peak RSS in MB, from getrusage.
pub fn usage() -> (Duration, f64) {
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage(RUSAGE_SELF) cannot fail");
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    // Linux reports ru_maxrss in kilobytes.
    (
        tv(u.user_time()) + tv(u.system_time()),
        u.max_rss() as f64 / 1024.0,
    )
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Trains one model of `workload`; returns a short description of the result.
fn train_one(workload: Workload, engine: LstmEngine, seed: u64) -> anyhow::Result<String> {
    match workload {
        Workload::Lstm => {
            let data = scaled_series(SERIES_DAYS, seed);
            // The reference trains on every window; no validation slice.
            let config = LstmConfig::new()
                .with_validation_fraction(0.0)
                .with_engine(Some(engine));
            let mut last = 0.0;
            train_forecaster(&data, &config, seed, &mut |r| last = r.train_loss)?;
            Ok(format!("final_epoch_loss={last:.5}"))
        }
        Workload::Autoencoder => {
            let rows = autoencoder_rows(AUTOENCODER_ROWS, seed);
            let mut last = 0.0;
            train_autoencoder(&rows, &AutoencoderConfig::new(), seed, &mut |r| {
                last = r.train_loss
            })?;
            Ok(format!("final_epoch_loss={last:.5}"))
        }
        Workload::Challengers => {
            let y = series(SERIES_DAYS, seed);
            let start = NaiveDate::from_ymd_opt(2025, 1, 1).expect("a valid date");
            let reg = SeasonalRegression::fit(&y, start, &SeasonalRegressionConfig::default())?;
            let rows: Vec<[f64; 3]> = autoencoder_rows(AUTOENCODER_ROWS, seed)
                .iter()
                .map(|r| r.map(f64::from))
                .collect();
            let pca = PcaDetector::fit(&rows, &PcaConfig::default())?;
            let forecast = reg.forecast(&y, start, 7);
            let score = pca.scores(&rows).iter().sum::<f64>() / rows.len() as f64;
            Ok(format!(
                "forecast_day1={:.2} mean_pca_score={score:.4}",
                forecast[0]
            ))
        }
    }
}

/// Runs the benchmark and prints one line per model plus the summary line.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    neural::limit_threads(1);
    let runs = args.runs.max(1);
    let (mut cpus, mut walls) = (Vec::new(), Vec::new());
    for r in 0..runs {
        let seed = 42 + r as u64;
        let (cpu0, _) = usage();
        let started = Instant::now();
        let result = train_one(args.workload, args.engine, seed)?;
        let wall = started.elapsed().as_secs_f64();
        let (cpu1, _) = usage();
        let cpu = (cpu1 - cpu0).as_secs_f64();
        println!(
            "model={:?} engine={:?} kernels={} run={r} cpu_s={cpu:.3} wall_s={wall:.3} {result}",
            args.workload,
            args.engine,
            crate::training::forecast::fused::kernels()
        );
        cpus.push(cpu);
        walls.push(wall);
    }
    let (_, peak) = usage();
    println!(
        "cpu_s_per_model={:.3} wall_s_per_model={:.3} peak_rss_mb={peak:.1}",
        median(&mut cpus),
        median(&mut walls)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_benchmark_series_is_scaled_to_the_unit_interval() {
        let s = scaled_series(SERIES_DAYS, 42);
        assert_eq!(s.len(), SERIES_DAYS);
        let lo = s.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!((lo, hi), (0.0, 1.0));
        assert_eq!(s, scaled_series(SERIES_DAYS, 42));
    }

    #[test]
    fn the_median_of_an_even_count_is_the_middle_mean() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0, 10.0]), 2.5);
        assert_eq!(median(&mut [3.0]), 3.0);
    }
}
