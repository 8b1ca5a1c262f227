//! The `trainyard-worker` command line: the queue consumer (`run`) and the
//! local tools of the lab (`train`, `eval`, `check`, `bench`) share one
//! binary.

use clap::{Parser, Subcommand};

use crate::lab::{anomaly_eval, bench, check, eval, train};

/// Trains trainyard's models: as a queue worker replica (`run`), or locally
/// from a CSV with no services (`train`), plus stack checks and benchmarks.
///
/// Configuration comes from the environment (DATABASE_URL, REDIS_URL, PORT,
/// TRAINYARD_*) or the flags of each subcommand; passwords are never printed.
#[derive(Debug, Parser)]
#[command(name = "trainyard-worker", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a worker replica: pull training jobs from Redis until SIGTERM.
    Run(Box<crate::consumer::WorkerSettings>),
    /// Train every candidate on a CSV, print their holdout metrics and write the champion.
    Train(Box<train::TrainArgs>),
    /// Rolling-origin evaluation on the real series of the shared data folder.
    Eval(eval::EvalArgs),
    /// Anomaly detection on NAB windows and injected events, against classical baselines.
    EvalAnomaly(anomaly_eval::AnomalyEvalArgs),
    /// Check the ML stack: print burn's version and backend, train tiny models.
    Check,
    /// Benchmark training on the reference workload (one thread).
    Bench(bench::BenchArgs),
}

pub async fn execute(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Run(settings) => {
            crate::consumer::run(*settings, crate::consumer::worker::shutdown_signal()).await?;
            Ok(0)
        }
        Command::Train(args) => tokio::task::spawn_blocking(move || train::execute(*args)).await?,
        Command::Eval(args) => tokio::task::spawn_blocking(move || eval::execute(args)).await?,
        Command::EvalAnomaly(args) => {
            tokio::task::spawn_blocking(move || anomaly_eval::execute(args)).await?
        }
        Command::Check => Ok(check::run()),
        Command::Bench(args) => bench::run(&args).map(|()| 0),
    }
}
